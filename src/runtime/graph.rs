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
    /// An error met while recording (a tensor beyond the adapter's limits),
    /// reported by the next flush.
    pub error: Option<Error>,
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
        if groups.contains(&0) {
            return;
        }
        let pipeline = self.pipeline(kernel);
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
        let prepared = self.prepare(nodes);
        let mut encoder = self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("wgrad") });
        let mut dispatches = super::encode::encode(&mut encoder, &prepared.commands, None);
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
        drop(g);
        drop(prepared);
        self.check_error()?;
        Ok(Some(index))
    }
}

/// Named storage bindings as the buffers a node holds.
fn buffers<'a>(bindings: &'a [(&'a str, &'a Arc<Storage>)]) -> impl Iterator<Item = (&'a str, wgpu::Buffer)> + 'a {
    bindings.iter().map(|(name, s)| (*name, s.buffer().clone()))
}
