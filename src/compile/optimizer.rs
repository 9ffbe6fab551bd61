//! Optimizer updates in place: an update whose new parameter and state are
//! only copied back into the tensors it read (and nothing after it reads
//! either) writes them directly, and consecutive such updates of one rule
//! run in one generated dispatch (`codegen/optimizer.rs`).

use std::sync::Arc;

use super::fusion::generated;
use super::rewrite::splice;
use crate::codegen::{StepCount, optimizer_in_place};
use crate::dtype::DType;
use crate::ir::{BinaryOp, EwExpr, Fusable, OptInfo, Scalar, Update};
use crate::runtime::{DeviceInner, Node, access};

/// On CPU adapters, optimizer updates of tensors up to this many elements
/// share a dispatch (see `optimizers_in_place`).
const SMALL_UPDATE: usize = 1 << 14;

/// A copy writing a new state tensor back into the state's own buffer.
pub(crate) struct WriteBack {
    pub from: wgpu::Buffer,
    pub from_offset: u64,
    pub to: wgpu::Buffer,
    pub to_offset: u64,
    pub bytes: u64,
}

/// Optimizer updates in place: an update whose new parameter and state are
/// only copied back into the tensors it read (and nothing after it reads
/// either) writes them directly, and consecutive such updates of one rule
/// run in one generated dispatch (`codegen/optimizer.rs`). Their
/// copies leave `write_back`. `returned`: the buffers of the step's outputs.
pub(super) fn optimizers_in_place(
    dev: &Arc<DeviceInner>,
    nodes: Vec<Node>,
    write_back: &mut Vec<WriteBack>,
    returned: &[wgpu::Buffer],
) -> Vec<Node> {
    let accesses: Vec<_> = nodes.iter().map(|n| access(dev, n)).collect();
    let in_place = |j: usize, info: &OptInfo| {
        info.updates.iter().all(|Update { read, written }| {
            let copied_back = write_back.iter().any(|w| {
                w.from == *written
                    && w.to == *read
                    && w.from_offset == 0
                    && w.to_offset == 0
                    && w.bytes == 4 * info.numel as u64
            });
            let untouched = accesses[j + 1..]
                .iter()
                .all(|a| ![read, written].iter().any(|b| a.reads.contains(b) || a.writes.contains(b)));
            copied_back && untouched && !returned.contains(written)
        })
    };
    // runs of in-place updates of one rule (and one step counter and
    // gradient scale), within the adapter's storage-buffer limit
    let limit = dev.limits.max_storage_buffers_per_shader_stage as usize;
    // CPU adapters run every branch of a kernel for every invocation (with
    // the lanes masked), so there one dispatch over a large tensor and
    // small ones costs more than the dispatches it saves: large tensors
    // are updated alone.
    let cpu = dev.cpu_adapter();
    let alone = |info: &OptInfo| cpu && info.numel > SMALL_UPDATE;
    let mut runs: Vec<Vec<usize>> = Vec::new();
    let mut bindings = 0;
    for (j, node) in nodes.iter().enumerate() {
        let Node::Dispatch { fusable: Some(Fusable::Optimizer(info)), uniform, .. } = node else { continue };
        if !in_place(j, info) {
            continue;
        }
        let joins = runs.last().and_then(|run| run.last()).is_some_and(|&last| match &nodes[last] {
            Node::Dispatch { fusable: Some(Fusable::Optimizer(prev)), uniform: u, .. } => {
                last + 1 == j
                    && !alone(prev)
                    && !alone(info)
                    && prev.rule == info.rule
                    && prev.scale == info.scale
                    && prev.t == info.t
                    && u[4..] == uniform[4..] // all but the element count
                    && bindings + 1 + info.updates.len() <= limit
            }
            _ => false,
        });
        if joins {
            runs.last_mut().expect("joined").push(j);
            bindings += 1 + info.updates.len();
        } else {
            // the step counter, its next value (if the dispatch takes its
            // increment on), the scale; the gradient and the updates
            runs.push(vec![j]);
            bindings = 3 + 1 + info.updates.len();
        }
    }
    let mut replaced: Vec<Option<Node>> = (0..nodes.len()).map(|_| None).collect();
    let mut skip = vec![false; nodes.len()];
    for run in &runs {
        let infos: Vec<&OptInfo> = run
            .iter()
            .map(|&j| match &nodes[j] {
                Node::Dispatch { fusable: Some(Fusable::Optimizer(info)), .. } => &**info,
                _ => unreachable!("runs hold optimizer nodes"),
            })
            .collect();
        let Node::Dispatch { uniform, .. } = &nodes[run[0]] else { unreachable!("a dispatch") };
        let count = step_count(&nodes, *run.last().expect("non-empty"), infos[0]);
        let counted = count.as_ref().map(|(_, to, one)| StepCount { to, one: *one });
        if let Some(node) = generated(dev, optimizer_in_place(uniform, &infos, counted)) {
            for info in &infos {
                write_back.retain(|w| !info.updates.iter().any(|u| u.written == w.from));
            }
            replaced[run[0]] = Some(node);
            for &j in run[1..].iter().chain(count.as_ref().map(|c| &c.0)) {
                skip[j] = true;
            }
        }
    }
    splice(nodes, replaced, &skip)
}

/// The optimizer's step count advancing right after the update at node
/// `last` (`t + 1`, which `Optimizer::step` records after its updates): its
/// node, where it writes, and the bits of the 1 it adds. The updates'
/// dispatch can take it on: one invocation writes the new count to that
/// buffer while all of them read the old one.
fn step_count(nodes: &[Node], last: usize, update: &OptInfo) -> Option<(usize, wgpu::Buffer, u32)> {
    let Some(Node::Dispatch { fusable: Some(Fusable::Elementwise(e)), .. }) = nodes.get(last + 1) else { return None };
    let EwExpr::Binary { op: BinaryOp::Add, dtype: DType::F32, scalar: Some(Scalar { bits, left: false }) } = e.expr
    else {
        return None;
    };
    let reads_count = e.inputs.len() == 1 && e.inputs[0].buffer == update.t && e.inputs[0].offset == 0;
    let own = e.out.offset == 0 && ![&update.t, &update.scale, &update.grad].contains(&&e.out.buffer);
    (e.shape.iter().product::<usize>() == 1 && reads_count && own).then(|| (last + 1, e.out.buffer.clone(), bits))
}
