//! The pending graph: ops append dispatch nodes; a read-back or sync encodes
//! every pending node into one command encoder and submits it once.

use std::panic::Location;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::DeviceInner;
use super::capture::with_capture;
use super::node::Node;
use super::pool::{BufferClass, Storage};
use super::shaders::Kernel;
use crate::error::{Error, Result};
use crate::ir::Fusable;

/// Pending nodes beyond this are submitted without waiting, so a long loop
/// that never reads back does not hold every intermediate buffer.
const MAX_PENDING: usize = 4096;

#[derive(Default)]
pub(crate) struct PendingGraph {
    pub nodes: Vec<Node>,
}

/// A compiled step encoded after the pending nodes: `encode` records its
/// commands and returns how many dispatches it encoded; `writes` are the
/// buffers they write.
pub(crate) struct Program<'a> {
    pub encode: &'a mut dyn FnMut(&mut wgpu::CommandEncoder) -> u64,
    pub writes: &'a [wgpu::Buffer],
}

/// A buffer-to-buffer copy encoded after the dispatches of a flush.
pub(crate) struct CopyOp {
    pub src: Arc<Storage>,
    pub src_offset: u64,
    pub dst: Arc<Storage>,
    pub size: u64,
}

impl DeviceInner {
    /// Appends one dispatch of `kernel` to the pending graph, its storage
    /// buffers named as its module names them.
    #[track_caller]
    pub(crate) fn record(
        self: &Arc<Self>,
        kernel: &Kernel,
        bindings: &[(&str, &Arc<Storage>)],
        uniform: &[u8],
        groups: [u32; 3],
    ) {
        self.record_node(kernel, self.bind(kernel, buffers(bindings)), uniform, groups, false, None);
    }

    /// [`record`](Self::record) for a node that fusion may merge with others.
    #[track_caller]
    pub(crate) fn record_fusable(
        self: &Arc<Self>,
        kernel: &Kernel,
        bindings: &[(&str, &Arc<Storage>)],
        uniform: &[u8],
        groups: [u32; 3],
        info: Fusable,
    ) {
        self.record_node(kernel, self.bind(kernel, buffers(bindings)), uniform, groups, false, Some(info));
    }

    /// [`record`](Self::record) for a kernel whose uniform holds a
    /// random-number position (its words 1–4: seed and position), which a
    /// compiled step renews on every replay.
    #[track_caller]
    pub(crate) fn record_random(
        self: &Arc<Self>,
        kernel: &Kernel,
        bindings: &[(&str, &Arc<Storage>)],
        uniform: &[u8],
        groups: [u32; 3],
    ) {
        self.record_node(kernel, self.bind(kernel, buffers(bindings)), uniform, groups, true, None);
    }

    /// [`record`](Self::record) with the bindings by number (users' kernels).
    pub(crate) fn record_numbered(
        self: &Arc<Self>,
        kernel: &Kernel,
        bindings: &[(u32, &Arc<Storage>)],
        uniform: &[u8],
        groups: [u32; 3],
    ) {
        let bindings = bindings.iter().map(|(b, s)| (*b, s.buffer().clone())).collect();
        self.record_node(kernel, bindings, uniform, groups, false, None);
    }

    fn record_node(
        self: &Arc<Self>,
        kernel: &Kernel,
        bindings: Vec<(u32, wgpu::Buffer)>,
        uniform: &[u8],
        groups: [u32; 3],
        random: bool,
        fusable: Option<Fusable>,
    ) {
        let node =
            Node::Dispatch { kernel: kernel.clone(), bindings, uniform: uniform.to_vec(), groups, random, fusable };
        // (a failed input fails the output even where there is nothing to run)
        if self.runnable(&node) && !groups.contains(&0) {
            self.push(node);
        }
    }

    /// Records a copy of host data into `dst` (from its start).
    pub(crate) fn upload(self: &Arc<Self>, dst: &Storage, data: &[u8]) {
        if self.failure(dst.buffer()).is_some() {
            return;
        }
        let staging = self.alloc(BufferClass::Upload, data.len() as u64);
        let turn = self.gl_turn();
        self.queue.write_buffer(staging.buffer(), 0, data);
        drop(turn);
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
            // (a failed submission marks what it would have written; a
            // lost device stays lost: later reads report either)
            let _ = self.flush(&[]);
        }
    }

    /// A storage buffer for `shape`, or — when it exceeds the adapter's
    /// limits — a placeholder holding the error (a compiled step being
    /// traced fails instead).
    #[track_caller]
    pub(crate) fn alloc_tensor(self: &Arc<Self>, op: &'static str, shape: &[usize]) -> Arc<Storage> {
        let bytes = (crate::shape::numel(shape) as u64).saturating_mul(4);
        let limit = self.limits.max_storage_buffer_binding_size.min(self.limits.max_buffer_size);
        if bytes <= limit {
            return self.alloc(BufferClass::Storage, bytes);
        }
        // named after the public op being recorded, at the caller's line
        let site = super::flags::current_site().unwrap_or(super::Site { op, location: Location::caller() });
        let e = Error::TooLarge { op: site.op, shape: shape.to_vec(), bytes, limit, location: site.location };
        let placeholder = self.alloc(BufferClass::Storage, 4);
        let mut e = Some(e);
        if with_capture(self, |c| {
            c.error.get_or_insert(e.take().expect("once"));
        })
        .is_err()
        {
            self.fail([placeholder.buffer()], &e.expect("not captured"));
        }
        placeholder
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
                {
                    let _turn = self.gl_turn();
                    let _ = self.device.poll(wgpu::PollType::Poll);
                }
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

    /// [`flush`](Self::flush), with `program` (a compiled step) encoded
    /// after the pending nodes, in the same submission. An error wgpu
    /// reported before is returned after the submission (the pending work
    /// still runs); if the submission fails, every buffer it would have
    /// written holds the error.
    pub(crate) fn flush_with(
        self: &Arc<Self>,
        copies: &[CopyOp],
        program: Option<Program<'_>>,
    ) -> Result<Option<wgpu::SubmissionIndex>> {
        let _turn = self.gl_turn();
        // The graph lock is held until the submit so that flushes from
        // different threads reach the queue in recording order.
        let mut g = self.graph.lock().unwrap_or_else(|p| p.into_inner());
        let nodes = std::mem::take(&mut g.nodes);
        let earlier = match self.check_error() {
            Err(e @ Error::DeviceLost(_)) => return Err(e),
            r => r,
        };
        if nodes.is_empty() && copies.is_empty() && program.is_none() {
            return earlier.map(|()| None);
        }
        let prepared = self.prepare(&nodes);
        let mut encoder = self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("wgrad") });
        let mut dispatches = super::encode::encode(&mut encoder, &prepared.commands, None);
        let mut program_writes: &[wgpu::Buffer] = &[];
        if let Some(p) = program {
            dispatches += (p.encode)(&mut encoder);
            program_writes = p.writes;
        }
        for c in copies {
            encoder.copy_buffer_to_buffer(c.src.buffer(), c.src_offset, c.dst.buffer(), 0, c.size);
        }
        let index = self.queue.submit([encoder.finish()]);
        *self.last_submission.lock().unwrap_or_else(|p| p.into_inner()) = Some(index.clone());
        let s = &self.stats;
        s.submits.fetch_add(1, Ordering::Relaxed);
        s.dispatches.fetch_add(dispatches, Ordering::Relaxed);
        drop(g);
        drop(prepared);
        if let Err(e) = self.check_error() {
            // nothing of the submission ran: what it would have written fails
            let writes = nodes.iter().flat_map(|n| super::access(self, n).writes);
            let writes: Vec<wgpu::Buffer> = writes.chain(program_writes.iter().cloned()).collect();
            self.fail(&writes, &e);
            return Err(earlier.err().unwrap_or(e));
        }
        drop(nodes);
        earlier.map(|()| Some(index))
    }
}

/// Named storage bindings as the buffers a node holds.
fn buffers<'a>(bindings: &'a [(&'a str, &'a Arc<Storage>)]) -> impl Iterator<Item = (&'a str, wgpu::Buffer)> + 'a {
    bindings.iter().map(|(name, s)| (*name, s.buffer().clone()))
}
