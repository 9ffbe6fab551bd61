//! The pending graph: ops append dispatch nodes; a read-back or sync encodes
//! every pending node into one command encoder and submits it once.

use std::num::NonZeroU64;
use std::panic::Location;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::device::{DeviceInner, Pipeline};
use crate::error::{Error, Result};
use crate::pool::{BufferClass, Storage};
use crate::shaders::Kernel;

/// Pending nodes beyond this are submitted without waiting, so a long loop
/// that never reads back does not hold every intermediate buffer.
const MAX_PENDING: usize = 4096;

/// One recorded command. Nodes hold wgpu buffer handles, not [`Storage`]s,
/// so a tensor dropped while its readers are pending returns to the pool at
/// once (see `pool.rs` for why that is safe).
pub(crate) enum Node {
    Dispatch {
        pipeline: Arc<Pipeline>,
        /// Storage buffers by binding number (binding 0 is the uniform).
        bindings: Vec<(u32, wgpu::Buffer)>,
        uniform: Vec<u8>,
        groups: [u32; 3],
        /// The uniform holds a random-number position, renewed on every
        /// replay of a compiled step.
        random: bool,
        /// What the node computes, for fusion in compiled steps.
        fusable: Option<Fusable>,
    },
    /// Host data staged in `staging`, copied to `dst` in recording order.
    Upload { staging: Arc<Storage>, dst: wgpu::Buffer, size: u64 },
}

#[derive(Default)]
pub(crate) struct PendingGraph {
    pub nodes: Vec<Node>,
    /// An error met while recording (a tensor beyond the adapter's limits),
    /// reported by the next flush.
    pub error: Option<Error>,
}

/// The computation of one elementwise node, per element of its output.
#[derive(Clone, Debug)]
pub(crate) enum EwExpr {
    Unary {
        op: u32,
        dt: u32,
    },
    /// `scalar`: (bits, on the left) when one operand is a scalar.
    Binary {
        op: u32,
        dt: u32,
        scalar: Option<(u32, bool)>,
    },
    /// inputs: a, b, mask
    Where,
    Cast {
        from: u32,
        to: u32,
    },
    Copy,
    Fill {
        bits: u32,
    },
}

/// What fusion in compiled steps needs to know of a node.
#[derive(Clone, Debug)]
pub(crate) enum Fusable {
    Elementwise(Box<EwInfo>),
    /// A generated matmul writing its whole result (no split of k): an
    /// elementwise chain that follows can become its epilogue.
    Matmul(Box<MmInfo>),
    /// An optimizer update of one parameter tensor: where its parameter
    /// and state are written back, several can run in place in one dispatch.
    Optimizer(Box<OptInfo>),
    /// A reduction (`shaders/reduce.wgsl`): the chain computing its input
    /// can run in it as a prologue, one reading its result as an epilogue.
    Reduce(Box<RedInfo>),
}

/// A reduction node: it reduces `axes` of its input `x`, a view of
/// `shape`, and writes `outputs` elements of `out`, the final results if
/// `last` (else the partial results of a two-pass reduction).
#[derive(Clone, Debug)]
pub(crate) struct RedInfo {
    pub op: u32,
    pub entry: &'static str,
    pub x: EwOperand,
    pub shape: Vec<usize>,
    pub axes: Vec<usize>,
    pub out: wgpu::Buffer,
    pub outputs: usize,
    pub last: bool,
}

/// An optimizer node (`shaders/optim.wgsl`, entry point `entry`).
#[derive(Clone, Debug)]
pub(crate) struct OptInfo {
    pub entry: &'static str,
    /// (read, written) buffers of the parameter, then of the state slots
    /// the rule uses.
    pub updates: Vec<(wgpu::Buffer, wgpu::Buffer)>,
    pub grad: wgpu::Buffer,
    pub scale: wgpu::Buffer,
    pub t: wgpu::Buffer,
    pub numel: usize,
}

/// A matmul node: its kernel variant and convolution product, if any (to
/// generate it again with an epilogue), the buffers it reads and writes, and its output's element
/// count.
#[derive(Clone, Debug)]
pub(crate) struct MmInfo {
    pub variant: crate::codegen::MatmulVariant,
    /// the convolution product it runs, if it is one
    pub conv: Option<crate::codegen::ConvGemm>,
    pub a: wgpu::Buffer,
    pub b: wgpu::Buffer,
    pub c: wgpu::Buffer,
    pub numel: usize,
}

/// A strided operand of an elementwise node over its output's shape.
#[derive(Clone, Debug)]
pub(crate) struct EwOperand {
    pub buffer: wgpu::Buffer,
    pub offset: usize,
    pub strides: Vec<usize>,
}

#[derive(Clone, Debug)]
pub(crate) struct EwInfo {
    pub expr: EwExpr,
    /// The output's shape: the iteration space.
    pub shape: Vec<usize>,
    pub inputs: Vec<EwOperand>,
    pub out: EwOperand,
}

/// A buffer-to-buffer copy encoded after the dispatches of a flush.
pub(crate) struct CopyOp {
    pub src: Arc<Storage>,
    pub src_offset: u64,
    pub dst: Arc<Storage>,
    pub size: u64,
}

/// Workgroup counts for `n` groups: a 2-D grid when `n` exceeds the 65535
/// per-dimension limit (kernels linearise the id with `linear_id`).
pub(crate) fn grid(n: u32) -> [u32; 3] {
    if n <= 65535 { [n, 1, 1] } else { [65535, n.div_ceil(65535), 1] }
}

impl DeviceInner {
    /// Appends one dispatch to the pending graph.
    pub(crate) fn record(
        self: &Arc<Self>,
        kernel: &Kernel,
        bindings: Vec<(u32, Arc<Storage>)>,
        uniform: &[u8],
        groups: [u32; 3],
    ) {
        if groups.contains(&0) {
            return;
        }
        self.record_node(kernel, bindings, uniform, groups, None);
    }

    /// [`record`](Self::record) for a node that fusion may merge with others.
    pub(crate) fn record_fusable(
        self: &Arc<Self>,
        kernel: &Kernel,
        bindings: Vec<(u32, Arc<Storage>)>,
        uniform: &[u8],
        groups: [u32; 3],
        info: Fusable,
    ) {
        self.record_node(kernel, bindings, uniform, groups, Some(info));
    }

    fn record_node(
        self: &Arc<Self>,
        kernel: &Kernel,
        bindings: Vec<(u32, Arc<Storage>)>,
        uniform: &[u8],
        groups: [u32; 3],
        fusable: Option<Fusable>,
    ) {
        if groups.contains(&0) {
            return;
        }
        let pipeline = self.pipeline(kernel);
        let random = kernel.entry == "random";
        let bindings = bindings.into_iter().map(|(b, s)| (b, s.buffer().clone())).collect();
        self.push(Node::Dispatch { pipeline, bindings, uniform: uniform.to_vec(), groups, random, fusable });
    }

    /// Records a copy of host data into `dst` (from its start).
    pub(crate) fn upload(self: &Arc<Self>, dst: &Storage, data: &[u8]) {
        let staging = self.alloc(BufferClass::Upload, data.len() as u64);
        self.queue.write_buffer(staging.buffer(), 0, data);
        self.stats.uploads.fetch_add(1, Ordering::Relaxed);
        self.push(Node::Upload { staging, dst: dst.buffer().clone(), size: data.len() as u64 });
    }

    fn push(self: &Arc<Self>, node: Node) {
        let mut node = Some(node);
        if with_capture(self, |c| c.nodes.push(node.take().expect("once"))).is_ok() {
            return;
        }
        let node = node.expect("not captured");
        let mut g = self.graph.lock().unwrap_or_else(|p| p.into_inner());
        g.nodes.push(node);
        let full = g.nodes.len() >= MAX_PENDING;
        drop(g);
        if full {
            if let Err(e) = self.flush(&[]) {
                self.poison(e);
            }
        }
    }

    /// Records an error to be returned by the next flush.
    pub(crate) fn poison(&self, err: Error) {
        let mut err = Some(err);
        if with_capture(self, |c| {
            c.error.get_or_insert(err.take().expect("once"));
        })
        .is_ok()
        {
            return;
        }
        let err = err.expect("not captured");
        let mut g = self.graph.lock().unwrap_or_else(|p| p.into_inner());
        g.error.get_or_insert(err);
    }

    /// A storage buffer for `shape`, or — when it exceeds the adapter's
    /// limits — a placeholder, with the error kept for the next flush.
    #[track_caller]
    pub(crate) fn alloc_tensor(self: &Arc<Self>, op: &'static str, shape: &[usize]) -> Arc<Storage> {
        let bytes = (crate::shape::numel(shape) as u64).saturating_mul(4);
        let limit = self.limits.max_storage_buffer_binding_size.min(self.limits.max_buffer_size);
        if bytes > limit {
            self.poison(Error::TooLarge { op, shape: shape.to_vec(), bytes, limit, location: Location::caller() });
            return self.alloc(BufferClass::Storage, 4);
        }
        self.alloc(BufferClass::Storage, bytes)
    }

    /// Errors reported by wgpu since the last check. A lost device stays lost.
    pub(crate) fn check_error(&self) -> Result<()> {
        let lost = |slot: &Option<Error>| matches!(slot, Some(Error::DeviceLost(_)));
        let pending = self.gpu_error.lock().unwrap_or_else(|p| p.into_inner()).is_some();
        if pending {
            // An error may be the symptom of a device destroyed or lost since
            // the last poll: wgpu reports the loss itself (through the
            // callback) only from a poll, so run one before choosing what to
            // report.
            let slot = self.gpu_error.lock().unwrap_or_else(|p| p.into_inner());
            if !lost(&slot) {
                drop(slot);
                #[cfg(not(target_arch = "wasm32"))]
                let _ = self.device.poll(wgpu::PollType::Poll);
            }
        }
        let mut slot = self.gpu_error.lock().unwrap_or_else(|p| p.into_inner());
        match slot.as_ref() {
            None => Ok(()),
            Some(Error::DeviceLost(m)) => Err(Error::DeviceLost(m.clone())),
            Some(_) => Err(slot.take().expect("checked")),
        }
    }

    /// Encodes every pending node, then `copies`, into one command buffer and
    /// submits it. Returns `None` when there was nothing to submit.
    pub(crate) fn flush(self: &Arc<Self>, copies: &[CopyOp]) -> Result<Option<wgpu::SubmissionIndex>> {
        self.flush_with(copies, None)
    }

    /// [`flush`](Self::flush), with `program` encoding more commands (a
    /// compiled step) after the pending nodes, in the same submission;
    /// `program` returns how many dispatches it encoded.
    pub(crate) fn flush_with(
        self: &Arc<Self>,
        copies: &[CopyOp],
        program: Option<&mut dyn FnMut(&mut wgpu::CommandEncoder) -> u64>,
    ) -> Result<Option<wgpu::SubmissionIndex>> {
        // The graph lock is held until the submit so that flushes from
        // different threads reach the queue in recording order.
        let mut g = self.graph.lock().unwrap_or_else(|p| p.into_inner());
        let nodes = std::mem::take(&mut g.nodes);
        if let Some(e) = g.error.take() {
            return Err(e);
        }
        self.check_error()?;
        if nodes.is_empty() && copies.is_empty() && program.is_none() {
            return Ok(None);
        }
        let align = self.limits.min_uniform_buffer_offset_alignment as usize;
        let mut uniforms: Vec<u8> = Vec::new();
        let mut offsets = Vec::with_capacity(nodes.len());
        for n in &nodes {
            if let Node::Dispatch { uniform, .. } = n {
                uniforms.resize(uniforms.len().next_multiple_of(align), 0);
                offsets.push(uniforms.len() as u64);
                uniforms.extend_from_slice(uniform);
            } else {
                offsets.push(0);
            }
        }
        let ubuf = (!uniforms.is_empty()).then(|| {
            let u = self.alloc(BufferClass::Uniform, uniforms.len() as u64);
            self.queue.write_buffer(u.buffer(), 0, &uniforms);
            u
        });
        let mut encoder = self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("wgrad") });
        let mut dispatches = 0;
        let mut i = 0;
        while i < nodes.len() {
            if let Node::Upload { staging, dst, size } = &nodes[i] {
                encoder.copy_buffer_to_buffer(staging.buffer(), 0, dst, 0, *size);
                i += 1;
                continue;
            }
            // a run of dispatches shares one compute pass
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor::default());
            while let Some(Node::Dispatch { pipeline, bindings, uniform, groups, .. }) = nodes.get(i) {
                let mut entries = Vec::with_capacity(bindings.len() + 1);
                if let (Some(u), Some(size)) = (&ubuf, NonZeroU64::new(uniform.len() as u64)) {
                    entries.push(wgpu::BindGroupEntry {
                        binding: 0,
                        resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                            buffer: u.buffer(),
                            offset: offsets[i],
                            size: Some(size),
                        }),
                    });
                }
                for (binding, buffer) in bindings {
                    entries.push(wgpu::BindGroupEntry { binding: *binding, resource: buffer.as_entire_binding() });
                }
                let bind_group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
                    label: None,
                    layout: &pipeline.layout,
                    entries: &entries,
                });
                pass.set_pipeline(&pipeline.pipeline);
                pass.set_bind_group(0, &bind_group, &[]);
                pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
                dispatches += 1;
                i += 1;
            }
        }
        let created = dispatches;
        if let Some(program) = program {
            dispatches += program(&mut encoder);
        }
        for c in copies {
            encoder.copy_buffer_to_buffer(c.src.buffer(), c.src_offset, c.dst.buffer(), 0, c.size);
        }
        let index = self.queue.submit([encoder.finish()]);
        let s = &self.stats;
        s.submits.fetch_add(1, Ordering::Relaxed);
        s.dispatches.fetch_add(dispatches, Ordering::Relaxed);
        s.bind_groups.fetch_add(created, Ordering::Relaxed);
        drop(g);
        drop(nodes);
        self.check_error()?;
        Ok(Some(index))
    }

    /// Waits until submission `index` (or all work) has finished.
    #[cfg(not(target_arch = "wasm32"))]
    async fn wait(&self, index: Option<wgpu::SubmissionIndex>) -> Result<()> {
        let timeout = *self.timeout.lock().unwrap_or_else(|p| p.into_inner());
        let polled = self.device.poll(wgpu::PollType::Wait { submission_index: index, timeout });
        if polled.is_err() && !matches!(polled, Err(wgpu::PollError::Timeout)) {
            // a failed submission: if the device was lost, say so
            let _ = self.device.poll(wgpu::PollType::Poll);
        }
        self.check_error()?;
        polled.map_err(|e| match e {
            wgpu::PollError::Timeout => Error::Timeout(timeout.unwrap_or_default()),
            other => Error::Gpu(other.to_string()),
        })?;
        Ok(())
    }

    /// In the browser the event loop runs callbacks; await the queue.
    #[cfg(target_arch = "wasm32")]
    async fn wait(&self, _index: Option<wgpu::SubmissionIndex>) -> Result<()> {
        let (tx, rx) = futures::channel::oneshot::channel();
        self.queue.on_submitted_work_done(move || {
            let _ = tx.send(());
        });
        rx.await.map_err(|_| Error::DeviceLost("the queue was dropped".into()))?;
        self.check_error()
    }

    pub(crate) async fn submit_and_wait(self: &Arc<Self>) -> Result<()> {
        refuse_in_capture(self, "sync");
        let index = self.flush(&[])?;
        self.wait(index).await?;
        self.take_check_error().await
    }

    /// Flushes pending work, then copies `size` bytes of `src` from `offset`
    /// to the host: one submit in all.
    pub(crate) async fn read(self: &Arc<Self>, src: &Arc<Storage>, offset: u64, size: u64) -> Result<Vec<u8>> {
        refuse_in_capture(self, "a read-back (to_vec, item)");
        let data = self.read_raw(src, offset, size).await?;
        self.take_check_error().await?;
        Ok(data)
    }

    /// [`read`](Self::read) without the debug check.
    pub(crate) async fn read_raw(self: &Arc<Self>, src: &Arc<Storage>, offset: u64, size: u64) -> Result<Vec<u8>> {
        let staging = self.alloc(BufferClass::Staging, size);
        let index = self.flush(&[CopyOp { src: src.clone(), src_offset: offset, dst: staging.clone(), size }])?;
        self.stats.readbacks.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = futures::channel::oneshot::channel();
        staging.buffer().slice(..size).map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        if let Err(e) = self.wait(index).await {
            // the staging buffer goes back to the pool: cancel its mapping
            // (still waiting after a timeout) so that it can be used again
            if !matches!(e, Error::DeviceLost(_)) {
                staging.buffer().unmap();
            }
            return Err(e);
        }
        rx.await
            .map_err(|_| Error::DeviceLost("the read-back was cancelled".into()))?
            .map_err(|e| Error::Gpu(format!("mapping a read-back buffer failed: {e}")))?;
        let data = staging
            .buffer()
            .slice(..size)
            .get_mapped_range()
            .map_err(|e| Error::Gpu(format!("reading a mapped buffer failed: {e}")))?
            .to_vec();
        staging.buffer().unmap();
        Ok(data)
    }
}

// ---- capture (tracing a compiled step) ---------------------------------------

/// The nodes and buffers of a step being traced by `compile`.
pub(crate) struct Capture {
    device: usize,
    pub nodes: Vec<Node>,
    pub arena: Arc<std::sync::Mutex<crate::pool::Arena>>,
    pub error: Option<Error>,
}

thread_local! {
    /// Tracing is per thread: another thread using the same device records
    /// into the device's pending graph as usual.
    static CAPTURE: std::cell::RefCell<Option<Capture>> = const { std::cell::RefCell::new(None) };
}

fn device_id(dev: &DeviceInner) -> usize {
    dev as *const DeviceInner as usize
}

/// Starts tracing `dev`'s work on this thread.
pub(crate) fn begin_capture(dev: &DeviceInner) {
    CAPTURE.with(|c| {
        let mut c = c.borrow_mut();
        if c.is_some() {
            panic!("wgrad: compile: a compiled step cannot run inside another step being compiled");
        }
        *c = Some(Capture { device: device_id(dev), nodes: Vec::new(), arena: Arc::default(), error: None });
    });
}

/// Stops tracing and returns what was recorded.
pub(crate) fn end_capture() -> Capture {
    CAPTURE.with(|c| c.borrow_mut().take()).expect("a capture in progress")
}

/// Runs `f` on the capture if this thread is tracing `dev` (`Err` if not).
fn with_capture<T>(dev: &DeviceInner, f: impl FnOnce(&mut Capture) -> T) -> std::result::Result<T, ()> {
    CAPTURE.with(|c| match c.borrow_mut().as_mut() {
        Some(cap) if cap.device == device_id(dev) => Ok(f(cap)),
        _ => Err(()),
    })
}

/// The arena of the step being traced on this thread for `dev`, if any.
pub(crate) fn capture_arena(dev: &DeviceInner) -> Option<Arc<std::sync::Mutex<crate::pool::Arena>>> {
    with_capture(dev, |c| c.arena.clone()).ok()
}

#[track_caller]
fn refuse_in_capture(dev: &DeviceInner, what: &str) {
    if with_capture(dev, |_| ()).is_ok() {
        // end the capture so the panic leaves the thread usable
        CAPTURE.with(|c| c.borrow_mut().take());
        panic!(
            "wgrad: compile: {what} inside a compiled step. A compiled step is traced once and replayed, so \
             it cannot depend on tensor values on the host (a branch on one would be frozen into the trace): \
             read values outside the step, or branch on the GPU with `where_`"
        );
    }
}
