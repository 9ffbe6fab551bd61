//! Optimizer updates in place: an update whose new parameter and state are
//! only copied back into the tensors it read (and nothing after it reads
//! either) writes them directly, and consecutive such updates of one rule
//! run in one generated dispatch (`codegen/optimizer.rs`). The update of
//! a large parameter whose gradient is a matmul's product runs in that
//! matmul instead, as its epilogue (`codegen::matmul_update`).

use std::sync::Arc;

use super::fusion::generated;
use super::rewrite::splice;
use crate::codegen::{StepCount, matmul_update, optimizer_in_place};
use crate::dtype::DType;
use crate::ir::{BinaryOp, EwExpr, Fusable, OptInfo, Scalar, Update, UpdateRule};
use crate::runtime::{Access, DeviceInner, Node, access};

/// On CPU adapters, optimizer updates of tensors up to this many elements
/// share a dispatch (see `optimizers_in_place`); larger ones run in the
/// matmul computing their gradient where they can.
const SMALL_UPDATE: usize = 1 << 14;

/// On CPU adapters, the longest sum (k) of a matmul that takes on the
/// update of the parameter whose gradient it computes.
const SHORT_SUM: usize = 16;

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
    let mut replaced: Vec<Option<Node>> = (0..nodes.len()).map(|_| None).collect();
    let mut skip = vec![false; nodes.len()];
    // large updates into the matmuls computing their gradients
    for (j, node) in nodes.iter().enumerate() {
        let Node::Dispatch { fusable: Some(Fusable::Optimizer(info)), uniform, .. } = node else { continue };
        if info.numel <= SMALL_UPDATE || !in_place(j, info) {
            continue;
        }
        let Some(i) = gradient_product(&nodes, &accesses, j, info, write_back, returned) else { continue };
        if replaced[i].is_some() {
            continue;
        }
        let Node::Dispatch { fusable: Some(Fusable::Matmul(mm)), uniform: mm_uniform, groups, .. } = &nodes[i] else {
            unreachable!("a matmul")
        };
        if let Some(fused) = generated(dev, matmul_update(mm, mm_uniform, *groups, info, uniform)) {
            replaced[i] = Some(fused);
            skip[j] = true;
        }
    }
    // runs of in-place updates of one rule (and one step counter and
    // gradient scale), within the adapter's storage-buffer limit
    let limit = dev.limits.max_storage_buffers_per_shader_stage as usize;
    // CPU adapters run every branch of a kernel for every invocation (with
    // the lanes masked), so there one dispatch over a large tensor and
    // small ones costs more than the dispatches it saves: large tensors
    // are updated alone.
    let cpu = dev.info.device_type == wgpu::DeviceType::Cpu;
    let alone = |info: &OptInfo| cpu && info.numel > SMALL_UPDATE;
    let mut runs: Vec<Vec<usize>> = Vec::new();
    let mut bindings = 0;
    for (j, node) in nodes.iter().enumerate() {
        let Node::Dispatch { fusable: Some(Fusable::Optimizer(info)), uniform, .. } = node else { continue };
        if skip[j] || !in_place(j, info) {
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
    // (the copies of what the updates in matmuls wrote in place go)
    for (j, node) in nodes.iter().enumerate() {
        if let Node::Dispatch { fusable: Some(Fusable::Optimizer(info)), .. } = node {
            if skip[j] {
                write_back.retain(|w| !info.updates.iter().any(|u| u.written == w.from));
            }
        }
    }
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

/// The matmul node whose product is the gradient that optimizer update
/// `info` (node `j`, in place) reads, if the update can run in it: the
/// product is a dense result of the parameter's elements, in its order;
/// nothing between the two nodes reads the parameter or its state, or
/// writes what the update reads; nothing after it reads the gradient
/// (`returned`, `write_back`: what the step returns or keeps); and the
/// matmul reads neither the parameter nor its state (its other workgroups
/// would see them updated).
fn gradient_product(
    nodes: &[Node],
    accesses: &[Access],
    j: usize,
    info: &OptInfo,
    write_back: &[WriteBack],
    returned: &[wgpu::Buffer],
) -> Option<usize> {
    let i = (0..j).rev().find(|&i| accesses[i].writes.contains(&info.grad))?;
    let Node::Dispatch { fusable: Some(Fusable::Matmul(mm)), .. } = &nodes[i] else { return None };
    let own: Vec<&wgpu::Buffer> = info.updates.iter().map(|u| &u.read).collect();
    if mm.c != info.grad || mm.numel != info.numel || own.contains(&&mm.a) || own.contains(&&mm.b) {
        return None;
    }
    // On CPU adapters an update element by element, reading back the
    // gradient just stored, costs more than the dispatch it saves: there
    // only the four-wide stores take it on, and only SGD's (the rule's code
    // is repeated at every store: Adam's made llvmpipe compile the kernel
    // for tens of seconds), and only short sums (measured on lavapipe: the
    // MLP's first layer gained at batch 1, k = 1, and lost at batch 128).
    let sgd = matches!(info.rule, UpdateRule::Sgd | UpdateRule::SgdMomentum);
    if mm.variant.subgroups() && !(mm.variant.stores_four_wide() && sgd && mm.k <= SHORT_SUM) {
        return None;
    }
    let read_by_update: Vec<&wgpu::Buffer> = own.iter().copied().chain([&info.scale, &info.t, &info.grad]).collect();
    let apart = accesses[i + 1..j]
        .iter()
        .all(|a| !a.reads.iter().any(|b| own.contains(&b)) && !a.writes.iter().any(|b| read_by_update.contains(&b)));
    // the gradient itself is not stored: nothing after the update reads it
    // (its buffer is written before it is read, if at all)
    let next = accesses[j + 1..].iter().find(|a| a.reads.contains(&info.grad) || a.writes.contains(&info.grad));
    let dead = next.is_none_or(|a| !a.reads.contains(&info.grad))
        && !returned.contains(&info.grad)
        && !write_back.iter().any(|w| w.from == info.grad);
    (apart && dead).then_some(i)
}
