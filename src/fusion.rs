//! Fusion of elementwise chains in compiled steps.
//!
//! Consecutive elementwise nodes over the same iteration space become one
//! generated kernel (`codegen::fused_elementwise`): a value one member
//! writes densely and a later member reads densely stays in a register, and
//! it is stored only if something after the group (or the step's caller)
//! reads it. A chain that reads the product of a matmul shortly before it
//! becomes that matmul's epilogue (`codegen::matmul_epilogue`): each lane
//! runs it on the elements of the tile it has just stored, so bias and
//! activation take no dispatch and no pass over memory of their own. The
//! arithmetic is the eager kernels' own: the generated code calls the
//! functions of `shaders/elementwise_ops.wgsl`.

use std::sync::Arc;

use crate::codegen::{self, FusedMember, FusedOperand};
use crate::device::DeviceInner;
use crate::graph::{EwExpr, EwInfo, Fusable, MmInfo, Node, OptInfo};
use crate::shape::contiguous_strides;

/// At most this many storage buffers per fused kernel (the browser's limit
/// is 10 per shader stage; keep margin).
const MAX_BUFFERS: usize = 8;

/// On CPU adapters, optimizer updates of tensors up to this many elements
/// share a dispatch (see `optimizers_in_place`).
const SMALL_UPDATE: usize = 1 << 14;

/// The buffers a node reads and writes.
pub(crate) fn access(dev: &DeviceInner, node: &Node) -> (Vec<wgpu::Buffer>, Vec<wgpu::Buffer>) {
    match node {
        Node::Upload { dst, .. } => (Vec::new(), vec![dst.clone()]),
        Node::Dispatch { fusable: Some(Fusable::Elementwise(info)), .. } => {
            (info.inputs.iter().map(|o| o.buffer.clone()).collect(), vec![info.out.buffer.clone()])
        }
        Node::Dispatch { pipeline, bindings, .. } => {
            let writable = dev.writable_bindings(&pipeline.source);
            let (mut r, mut w) = (Vec::new(), Vec::new());
            for (b, buf) in bindings {
                if writable.contains(b) { w.push(buf.clone()) } else { r.push(buf.clone()) }
            }
            (r, w)
        }
    }
}

/// Row-major and dense from the buffer's start (size-1 axes' strides do not matter).
fn dense(o: &crate::graph::EwOperand, shape: &[usize]) -> bool {
    let want = contiguous_strides(shape);
    o.offset == 0 && shape.iter().zip(&o.strides).zip(&want).all(|((&n, &s), &w)| n == 1 || s == w)
}

/// A group being formed: member node indices and their infos.
struct Group<'a> {
    members: Vec<(usize, &'a EwInfo)>,
}

impl Group<'_> {
    /// Can `e` join? Same iteration space, values produced in the group read
    /// with the layout they were written in, no write over a buffer the
    /// group reads or writes, and few enough buffers. `fresh_out`: as if
    /// `e` wrote a buffer of its own.
    fn admits(&self, e: &EwInfo, fresh_out: bool) -> bool {
        let first = self.members[0].1;
        if e.shape != first.shape {
            return false;
        }
        for input in &e.inputs {
            if let Some(m) = self.members.iter().rev().find(|m| m.1.out.buffer == input.buffer) {
                if !(dense(input, &e.shape) && dense(&m.1.out, &e.shape)) {
                    return false;
                }
            }
        }
        // Writing a buffer the group already reads or writes (buffers are
        // reused by liveness) is safe only element by element: every access
        // dense, so each invocation touches only its own element (all loads
        // come before all stores in the generated kernel).
        let out = &e.out.buffer;
        let touched = self.members.iter().flat_map(|m| std::iter::once(&m.1.out).chain(&m.1.inputs));
        let conflict = touched.filter(|o| o.buffer == *out).any(|o| !(dense(o, &e.shape) && dense(&e.out, &e.shape)));
        if !fresh_out && (conflict || e.inputs.iter().any(|i| i.buffer == *out)) {
            return false;
        }
        let mut buffers: Vec<&wgpu::Buffer> = Vec::new();
        for m in self.members.iter().map(|m| m.1).chain([e]) {
            let out = (!fresh_out || !std::ptr::eq(m, e)).then_some(&m.out.buffer);
            for b in out.into_iter().chain(m.inputs.iter().map(|i| &i.buffer)) {
                if !buffers.contains(&b) {
                    buffers.push(b);
                }
            }
        }
        buffers.len() + fresh_out as usize <= MAX_BUFFERS
    }
}

/// Groups of consecutive elementwise nodes that can fuse, and the nodes
/// kept out of the group before them only by the buffer they write.
fn chains(nodes: &[Node]) -> (Vec<Vec<usize>>, Vec<usize>) {
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut blocked = Vec::new();
    let mut current: Option<Group> = None;
    for (i, n) in nodes.iter().enumerate() {
        let info = match n {
            Node::Dispatch { fusable: Some(Fusable::Elementwise(info)), .. } => Some(&**info),
            _ => None,
        };
        match (info, current.as_mut()) {
            (Some(e), Some(g)) if g.admits(e, false) => g.members.push((i, e)),
            (Some(e), previous) => {
                if previous.is_some_and(|g| g.admits(e, true)) {
                    blocked.push(i);
                }
                if let Some(g) = current.take() {
                    groups.push(g.members.iter().map(|m| m.0).collect());
                }
                current = Some(Group { members: vec![(i, e)] });
            }
            (None, _) => {
                if let Some(g) = current.take() {
                    groups.push(g.members.iter().map(|m| m.0).collect());
                }
            }
        }
    }
    if let Some(g) = current.take() {
        groups.push(g.members.iter().map(|m| m.0).collect());
    }
    (groups, blocked)
}

/// One past the last element operand `o` reads over `shape`.
fn extent(o: &crate::graph::EwOperand, shape: &[usize]) -> usize {
    if shape.contains(&0) {
        return 0;
    }
    o.offset + shape.iter().zip(&o.strides).map(|(&n, &s)| (n - 1) * s).sum::<usize>() + 1
}

/// Does `node` overwrite all `numel` elements of the value in `buffer`?
/// Only a dense elementwise write of at least as many elements is known
/// to: after a partial write (a copy into the interior of a padded tensor)
/// the rest of the value is still read.
fn overwrites(node: &Node, buffer: &wgpu::Buffer, numel: usize) -> bool {
    match node {
        Node::Dispatch { fusable: Some(Fusable::Elementwise(info)), .. } => {
            info.out.buffer == *buffer && dense(&info.out, &info.shape) && info.shape.iter().product::<usize>() >= numel
        }
        _ => false,
    }
}

/// Gives the value elementwise node `i` writes the buffer `fresh` instead
/// of the one liveness chose, rewriting its readers up to the node that
/// next overwrites that buffer. `false` (nothing changed) when that cannot
/// be done safely: the buffer outlives the step (`pinned`); node `i` does
/// not write a whole value (dense from the start) or a reader reads past
/// it (the value may be pieced together by several writes, as `cat` and
/// `pad` do); a reader is not elementwise (its extent is unknown); or a
/// later node writes part of the buffer.
fn rename_output(
    dev: &DeviceInner,
    nodes: &mut [Node],
    i: usize,
    pinned: &[wgpu::Buffer],
    fresh: &mut dyn FnMut(u64) -> wgpu::Buffer,
) -> bool {
    let Node::Dispatch { fusable: Some(Fusable::Elementwise(e)), .. } = &nodes[i] else { return false };
    let (old, numel) = (e.out.buffer.clone(), e.shape.iter().product::<usize>());
    if pinned.contains(&old) || !dense(&e.out, &e.shape) {
        return false;
    }
    // the readers of this value: up to (and including) a full overwrite
    let mut end = nodes.len();
    for (j, node) in nodes.iter().enumerate().skip(i + 1) {
        let (reads, writes) = access(dev, node);
        if reads.contains(&old) {
            let Node::Dispatch { fusable: Some(Fusable::Elementwise(r)), .. } = node else { return false };
            if r.inputs.iter().any(|o| o.buffer == old && extent(o, &r.shape) > numel) {
                return false;
            }
        }
        if writes.contains(&old) {
            if !overwrites(node, &old, numel) {
                return false;
            }
            end = j + 1;
            break;
        }
    }
    let new = fresh(old.size());
    for (j, node) in nodes[i..end].iter_mut().enumerate() {
        let Node::Dispatch { pipeline, bindings, fusable, .. } = node else { continue };
        let writable = dev.writable_bindings(&pipeline.source);
        // node i: its writes; the others: their reads
        let rewrite = |binding: u32| writable.contains(&binding) == (j == 0);
        for (_, b) in bindings.iter_mut().filter(|(n, b)| *b == old && rewrite(*n)) {
            *b = new.clone();
        }
        let swap = |b: &mut wgpu::Buffer| {
            if *b == old {
                *b = new.clone()
            }
        };
        // (only elementwise nodes read the value, checked above)
        if let Some(Fusable::Elementwise(info)) = fusable {
            match j {
                0 => swap(&mut info.out.buffer),
                _ => info.inputs.iter_mut().for_each(|o| swap(&mut o.buffer)),
            }
        }
    }
    true
}

/// Fuses elementwise chains in `nodes`. `live_out`: buffers read after the
/// step (its outputs and the new state); `pinned`: those and every other
/// buffer that outlives the step. Where the buffer liveness gave a value
/// keeps its node out of a chain, the value gets a buffer of its own from
/// `fresh`.
pub(crate) fn fuse(
    dev: &Arc<DeviceInner>,
    mut nodes: Vec<Node>,
    live_out: &[wgpu::Buffer],
    pinned: &[wgpu::Buffer],
    fresh: &mut dyn FnMut(u64) -> wgpu::Buffer,
) -> Vec<Node> {
    let mut tried = Vec::new();
    loop {
        let (_, blocked) = chains(&nodes);
        let Some(i) = blocked.into_iter().find(|i| !tried.contains(i)) else { break };
        tried.push(i);
        rename_output(dev, &mut nodes, i, pinned, fresh);
    }
    let accesses: Vec<_> = nodes.iter().map(|n| access(dev, n)).collect();
    // Is the value of `numel` elements in `buffer` read after node `after`,
    // before being overwritten?
    let needed = |buffer: &wgpu::Buffer, numel: usize, after: usize| {
        for (node, (reads, _)) in nodes[after + 1..].iter().zip(&accesses[after + 1..]) {
            if reads.contains(buffer) {
                return true;
            }
            if overwrites(node, buffer, numel) {
                return false;
            }
        }
        live_out.contains(buffer)
    };
    let (groups, _) = chains(&nodes);
    // Build the fused nodes: a chain after a matmul that reads its result
    // becomes its epilogue; other single-node groups stay as they are.
    let mut fused: Vec<Option<Node>> = (0..nodes.len()).map(|_| None).collect();
    let mut skip = vec![false; nodes.len()];
    for g in &groups {
        let last = *g.last().expect("non-empty");
        let infos: Vec<&EwInfo> = g
            .iter()
            .map(|&i| match &nodes[i] {
                Node::Dispatch { fusable: Some(Fusable::Elementwise(info)), .. } => &**info,
                _ => unreachable!("groups hold elementwise nodes"),
            })
            .collect();
        let matmul = producer(&nodes, &accesses, g).and_then(|i| match &nodes[i] {
            Node::Dispatch { fusable: Some(Fusable::Matmul(mm)), uniform, groups, .. }
                if !skip[i] && fused[i].is_none() && epilogue_fits(mm, &infos) =>
            {
                Some((i, &**mm, uniform, *groups))
            }
            _ => None,
        });
        if g.len() == 1 && matmul.is_none() {
            continue;
        }
        let members: Vec<FusedMember> = infos
            .iter()
            .enumerate()
            .map(|(k, info)| {
                let operands = info
                    .inputs
                    .iter()
                    .map(|input| match infos[..k].iter().rposition(|m| m.out.buffer == input.buffer) {
                        Some(m) => FusedOperand::Member(m),
                        None if matmul.is_some_and(|mm| mm.1.c == input.buffer) => FusedOperand::Accumulator,
                        None => FusedOperand::External(input.clone()),
                    })
                    .collect();
                // stored only if something after the group reads it (and no
                // later member overwrites it)
                let overwritten = infos[k + 1..].iter().any(|m| m.out.buffer == info.out.buffer);
                let store = !overwritten && needed(&info.out.buffer, info.shape.iter().product(), last);
                FusedMember { expr: info.expr.clone(), operands, out: store.then(|| info.out.clone()) }
            })
            .collect();
        let node = match matmul {
            Some((i, mm, uniform, groups)) => {
                codegen::matmul_epilogue(dev, mm, uniform, groups, &infos[0].shape, &members).map(|node| (i, node))
            }
            None => codegen::fused_elementwise(dev, &infos[0].shape, &members).map(|node| (g[0], node)),
        };
        if let Some((at, node)) = node {
            fused[at] = Some(node);
            for &i in g.iter().filter(|&&i| i != at) {
                skip[i] = true;
            }
        }
    }
    splice(nodes, fused, &skip)
}

/// `nodes` with `new[i]` in place of node i where there is one, and without
/// the nodes marked in `skip`.
fn splice(nodes: Vec<Node>, mut new: Vec<Option<Node>>, skip: &[bool]) -> Vec<Node> {
    nodes.into_iter().enumerate().filter(|(i, _)| !skip[*i]).map(|(i, n)| new[i].take().unwrap_or(n)).collect()
}

/// The matmul node that group `g` could run in as its epilogue: the
/// nearest one before it whose product the chain reads, if the chain can
/// move up to it (no node in between writes a buffer the chain touches or
/// reads one it writes), at most a few nodes back.
fn producer(nodes: &[Node], accesses: &[(Vec<wgpu::Buffer>, Vec<wgpu::Buffer>)], g: &[usize]) -> Option<usize> {
    let (mut reads, mut writes): (Vec<&wgpu::Buffer>, Vec<&wgpu::Buffer>) = (Vec::new(), Vec::new());
    for &i in g {
        reads.extend(&accesses[i].0);
        writes.extend(&accesses[i].1);
    }
    for i in (g[0].saturating_sub(8)..g[0]).rev() {
        if let Node::Dispatch { fusable: Some(Fusable::Matmul(mm)), .. } = &nodes[i] {
            if reads.contains(&&mm.c) {
                return Some(i);
            }
        }
        let (r, w) = &accesses[i];
        if w.iter().any(|b| reads.contains(&b) || writes.contains(&b)) || r.iter().any(|b| writes.contains(&b)) {
            return None;
        }
    }
    None
}

/// Can the chain `infos` run as the epilogue of matmul `mm`? It must read
/// the product, each element where it was written (so only the lane that
/// stored an element reads it), over as many elements; write neither A nor
/// B (other workgroups still read them while the epilogue runs), and the
/// product's buffer only element by element (a buffer reused by liveness);
/// and fit the buffer limit with them.
fn epilogue_fits(mm: &MmInfo, infos: &[&EwInfo]) -> bool {
    let shape = &infos[0].shape;
    let reads: Vec<&crate::graph::EwOperand> = infos.iter().flat_map(|e| &e.inputs).collect();
    if shape.iter().product::<usize>() != mm.numel || !reads.iter().any(|o| o.buffer == mm.c) {
        return false;
    }
    if reads.iter().any(|o| o.buffer == mm.c && !dense(o, shape)) {
        return false;
    }
    if infos
        .iter()
        .any(|e| e.out.buffer == mm.a || e.out.buffer == mm.b || e.out.buffer == mm.c && !dense(&e.out, shape))
    {
        return false;
    }
    // the product's buffer is bound twice when the chain writes it
    let mut buffers: Vec<&wgpu::Buffer> = vec![&mm.a, &mm.b, &mm.c];
    if infos.iter().any(|e| e.out.buffer == mm.c) {
        buffers.push(&mm.c);
    }
    for b in infos.iter().flat_map(|e| std::iter::once(&e.out.buffer).chain(e.inputs.iter().map(|i| &i.buffer))) {
        if !buffers.contains(&b) {
            buffers.push(b);
        }
    }
    buffers.len() <= MAX_BUFFERS
}

/// Optimizer updates in place: an update whose new parameter and state are
/// only copied back into the tensors it read (and nothing after it reads
/// either) writes them directly, and consecutive such updates of one rule
/// run in one generated dispatch (`codegen::optimizer_in_place`). Their
/// copies leave `write_back`. `returned`: the buffers of the step's outputs.
pub(crate) fn optimizers_in_place(
    dev: &Arc<DeviceInner>,
    nodes: Vec<Node>,
    write_back: &mut Vec<crate::compile::WriteBack>,
    returned: &[wgpu::Buffer],
) -> Vec<Node> {
    let accesses: Vec<_> = nodes.iter().map(|n| access(dev, n)).collect();
    let in_place = |j: usize, info: &OptInfo| {
        info.updates.iter().all(|(read, written)| {
            let copied_back = write_back.iter().any(|(from, from_off, to, to_off, bytes)| {
                from == written && to == read && *from_off == 0 && *to_off == 0 && *bytes == 4 * info.numel as u64
            });
            let untouched = accesses[j + 1..]
                .iter()
                .all(|(r, w)| !(r.contains(read) || w.contains(read) || r.contains(written) || w.contains(written)));
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
    let cpu = dev.info.device_type == wgpu::DeviceType::Cpu;
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
                    && prev.entry == info.entry
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
            runs.push(vec![j]);
            bindings = 2 + 1 + info.updates.len(); // step counter, scale; gradient and updates
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
        let counted = count.as_ref().map(|(_, buffer, bits)| (buffer, *bits));
        if let Some(node) = codegen::optimizer_in_place(dev, uniform, &infos, counted) {
            for info in &infos {
                write_back.retain(|(from, ..)| !info.updates.iter().any(|(_, written)| written == from));
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
    let EwExpr::Binary { op: 0, dt: 0, scalar: Some((bits, false)) } = e.expr else { return None };
    let reads_count = e.inputs.len() == 1 && e.inputs[0].buffer == update.t && e.inputs[0].offset == 0;
    let own = e.out.offset == 0 && ![&update.t, &update.scale, &update.grad].contains(&&e.out.buffer);
    (e.shape.iter().product::<usize>() == 1 && reads_count && own).then(|| (last + 1, e.out.buffer.clone(), bits))
}
