//! Recorded commands, and what each reads and writes.

use std::sync::Arc;

use super::DeviceInner;
use super::pool::Storage;
use super::shaders::Kernel;
use crate::ir::Fusable;

/// One recorded command. Nodes hold wgpu buffer handles, not [`Storage`]s,
/// so a tensor dropped while its readers are pending returns to the pool at
/// once (see `pool.rs` for why that is safe).
pub(crate) enum Node {
    Dispatch {
        /// The pipeline to run, built when the node is prepared (a node
        /// that fusion replaces never builds one).
        kernel: Kernel,
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

impl DeviceInner {
    /// A dispatch of `kernel`, for the graph or a compiled step.
    pub(crate) fn dispatch(
        &self,
        kernel: &Kernel,
        bindings: Vec<(u32, wgpu::Buffer)>,
        uniform: Vec<u8>,
        groups: [u32; 3],
    ) -> Node {
        Node::Dispatch { kernel: kernel.clone(), bindings, uniform, groups, random: false, fusable: None }
    }
}

/// Workgroup counts for `n` groups: a 2-D grid when `n` exceeds the 65535
/// per-dimension limit (kernels linearise the id with `linear_id`).
pub(crate) fn grid(n: u32) -> [u32; 3] {
    if n <= 65535 { [n, 1, 1] } else { [65535, n.div_ceil(65535), 1] }
}

/// The buffers a node (or a fused kernel) reads and those it writes.
#[derive(Clone, Debug, Default)]
pub(crate) struct Access {
    pub reads: Vec<wgpu::Buffer>,
    pub writes: Vec<wgpu::Buffer>,
}

/// What `node` reads and writes.
pub(crate) fn access(dev: &DeviceInner, node: &Node) -> Access {
    match node {
        Node::Upload { dst, .. } => Access { reads: Vec::new(), writes: vec![dst.clone()] },
        Node::Dispatch { fusable: Some(Fusable::Elementwise(info)), .. } => Access {
            reads: info.inputs.iter().map(|o| o.buffer.clone()).collect(),
            writes: vec![info.out.buffer.clone()],
        },
        Node::Dispatch { kernel, bindings, .. } => {
            let interface = dev.interface(&kernel.source);
            let mut a = Access::default();
            for (b, buf) in bindings {
                if interface.writes(*b) { a.writes.push(buf.clone()) } else { a.reads.push(buf.clone()) }
            }
            a
        }
    }
}
