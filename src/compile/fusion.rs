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
//! chains around a reduction run in it (`codegen::reduction`). The
//! arithmetic is the eager kernels' own: the generated code calls the
//! functions of `shaders/elementwise_ops.wgsl`.

use std::sync::Arc;

use super::rewrite::{dense, extent, overwrites, rename_output, splice};
use crate::codegen::{
    Epilogue, FusedMember, FusedOperand, GeneratedKernel, Prologue, fused_elementwise, matmul_epilogue, reduction,
};
use crate::ir::{EwInfo, EwOperand, Fusable, MmInfo, RedInfo, ReduceKernel};
use crate::runtime::{Access, DeviceInner, Kernel, Node, access};
use crate::shape::contiguous_strides;

/// At most this many storage buffers per fused kernel (the browser's limit
/// is 10 per shader stage; keep margin).
const MAX_BUFFERS: usize = 8;

/// The dispatch of a generated kernel, its module validated (once per
/// source text); `None` if it fails validation (the nodes it would replace
/// then stay as they are).
pub(super) fn generated(dev: &DeviceInner, k: GeneratedKernel) -> Option<Node> {
    let shader = dev.generated_shader(&k.label, &k.wgsl, k.subgroups)?;
    let kernel = k.constants.iter().fold(Kernel::dynamic(shader, k.entry), |kernel, &(name, v)| kernel.with(name, v));
    let bindings = dev.bind(&kernel, k.bindings);
    Some(dev.dispatch(&kernel, bindings, k.uniform, k.groups))
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

/// Fuses elementwise chains in `nodes`. `live_out`: buffers read after the
/// step (its outputs and the new state); `pinned`: those and every other
/// buffer that outlives the step. Where the buffer liveness gave a value
/// keeps its node out of a chain, the value gets a buffer of its own from
/// `fresh`.
pub(super) fn fuse(
    dev: &Arc<DeviceInner>,
    mut nodes: Vec<Node>,
    live_out: &[wgpu::Buffer],
    pinned: &[wgpu::Buffer],
    fresh: &mut dyn FnMut(u64) -> wgpu::Buffer,
) -> Vec<Node> {
    // Liveness may give a chain after a reduction a buffer that the
    // reduction, or the chain before it, reads: free by then, but not while
    // they run in one kernel (as its epilogue and prologue): one of the two
    // values moves to a buffer of its own. So may the reduction's results
    // where they would overwrite what the chain before it reads, and a
    // chain's value that liveness put in the results' buffer.
    for i in 0..nodes.len() {
        let Node::Dispatch { fusable: Some(Fusable::Reduce(r)), .. } = &nodes[i] else { continue };
        let out = r.out.clone();
        let mut read = vec![r.x.buffer.clone()];
        let mut start = i;
        while let Some(Node::Dispatch { fusable: Some(Fusable::Elementwise(e)), .. }) =
            start.checked_sub(1).map(|s| &nodes[s])
        {
            read.extend(e.inputs.iter().map(|o| o.buffer.clone()));
            start -= 1;
        }
        if read.contains(&out) {
            rename_output(dev, &mut nodes, i, pinned, fresh);
        }
        let results = |nodes: &[Node]| match &nodes[i] {
            Node::Dispatch { fusable: Some(Fusable::Reduce(r)), .. } => r.out.clone(),
            _ => unreachable!("a reduction"),
        };
        for j in i + 1..nodes.len() {
            let Node::Dispatch { fusable: Some(Fusable::Elementwise(e)), .. } = &nodes[j] else { break };
            let written = e.out.buffer.clone();
            if written == results(&nodes) {
                // in the results' own buffer, the chain's store would bind it
                // twice in one kernel, once writable (WebGPU forbids that):
                // the chain's value moves, or else the results do
                if !rename_output(dev, &mut nodes, j, pinned, fresh) {
                    rename_output(dev, &mut nodes, i, pinned, fresh);
                }
                continue;
            }
            if read.contains(&written) && !rename_output(dev, &mut nodes, j, pinned, fresh) {
                // the values read move instead: those the chain before
                // writes, and the one it finds
                for w in (0..i).rev() {
                    if access(dev, &nodes[w]).writes.contains(&written) {
                        rename_output(dev, &mut nodes, w, pinned, fresh);
                        if w < start {
                            break;
                        }
                    }
                }
            }
        }
    }
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
        for (node, a) in nodes[after + 1..].iter().zip(&accesses[after + 1..]) {
            if a.reads.contains(buffer) {
                return true;
            }
            if overwrites(node, buffer, numel) {
                return false;
            }
        }
        live_out.contains(buffer)
    };
    let (groups, _) = chains(&nodes);
    let infos_of = |g: &[usize]| -> Vec<&EwInfo> {
        g.iter()
            .map(|&i| match &nodes[i] {
                Node::Dispatch { fusable: Some(Fusable::Elementwise(info)), .. } => &**info,
                _ => unreachable!("groups hold elementwise nodes"),
            })
            .collect()
    };
    // The members of a chain that runs at node `at` (its own first node, a
    // matmul or a reduction), whose element of `acc` (the product or the
    // result) is in a register. A value is stored only if something after
    // the chain reads it (and no later member overwrites it).
    let members = |infos: &[&EwInfo], acc: Option<&wgpu::Buffer>, after: usize| -> Vec<FusedMember> {
        infos
            .iter()
            .enumerate()
            .map(|(k, info)| {
                let operands = info
                    .inputs
                    .iter()
                    .map(|input| match infos[..k].iter().rposition(|m| m.out.buffer == input.buffer) {
                        Some(m) => FusedOperand::Member(m),
                        None if acc == Some(&input.buffer) => FusedOperand::Accumulator,
                        None => FusedOperand::External(input.clone()),
                    })
                    .collect();
                let overwritten = infos[k + 1..].iter().any(|m| m.out.buffer == info.out.buffer);
                let store = !overwritten && needed(&info.out.buffer, info.shape.iter().product(), after);
                FusedMember { expr: info.expr.clone(), operands, out: store.then(|| info.out.clone()) }
            })
            .collect()
    };
    let mut fused: Vec<Option<Node>> = (0..nodes.len()).map(|_| None).collect();
    let mut skip = vec![false; nodes.len()];
    let mut around: Vec<Around> = vec![Around::default(); nodes.len()];
    for (gi, g) in groups.iter().enumerate() {
        let last = *g.last().expect("non-empty");
        let infos = infos_of(g);
        // a chain whose values nothing reads (a step's unused branch) is
        // dead: it stores nothing, so it runs nowhere
        if members(&infos, None, last).iter().all(|m| m.out.is_none()) {
            g.iter().for_each(|&j| skip[j] = true);
            continue;
        }
        // a chain reading a matmul's product or a reduction's results just
        // before it runs in that node, as its epilogue
        match producer(&nodes, &accesses, g).map(|i| (i, &nodes[i])) {
            Some((i, Node::Dispatch { fusable: Some(Fusable::Matmul(mm)), uniform, groups, .. }))
                if fused[i].is_none() && epilogue_fits(mm, &infos) =>
            {
                let members = members(&infos, Some(&mm.c), last);
                let kernel = matmul_epilogue(mm, uniform, *groups, &infos[0].shape, &members);
                if let Some(node) = kernel.and_then(|k| generated(dev, k)) {
                    fused[i] = Some(node);
                    g.iter().for_each(|&j| skip[j] = true);
                }
                continue;
            }
            Some((i, Node::Dispatch { fusable: Some(Fusable::Reduce(r)), .. })) if around[i].after.is_none() => {
                let prologue = around[i].prologue.map(|p| bound(&members(&infos_of(&groups[p.group]), None, i)));
                let bound = bound(&members(&infos, Some(&r.out), last));
                if reduction_epilogue_fits(r, &infos, &bound, prologue.clone()) {
                    around[i].after = Some(After { group: gi, revisit: false });
                    continue;
                }
                // what the prologue stores at the element it computes
                let at_i = around[i].prologue.map_or(Vec::new(), |p| {
                    let infos = infos_of(&groups[p.group]);
                    let stored = members(&infos, None, i);
                    let dense_out = |(e, m): (&&EwInfo, &FusedMember)| m.out.is_some() && dense(&e.out, &e.shape);
                    infos.iter().zip(&stored).filter(|&x| dense_out(x)).map(|(e, _)| e.out.buffer.clone()).collect()
                });
                if revisit_fits(r, &infos, &bound, prologue, &at_i) {
                    around[i].after = Some(After { group: gi, revisit: true });
                    continue;
                }
            }
            _ => {}
        }
        // a chain computing the input of the reduction right after it runs
        // in it, as its prologue
        if let Some(Node::Dispatch { fusable: Some(Fusable::Reduce(r)), .. }) = nodes.get(last + 1) {
            if let Some(m) = prologue_member(r, &infos, &bound(&members(&infos, None, last + 1))) {
                around[last + 1].prologue = Some(Before { group: gi, input: m });
                continue;
            }
        }
        if g.len() > 1 {
            let kernel = fused_elementwise(&infos[0].shape, &members(&infos, None, last));
            if let Some(node) = kernel.and_then(|k| generated(dev, k)) {
                fused[g[0]] = Some(node);
                g[1..].iter().for_each(|&j| skip[j] = true);
            }
        }
    }
    for (i, &Around { prologue: pro, after: epi }) in around.iter().enumerate() {
        let Node::Dispatch { fusable: Some(Fusable::Reduce(r)), uniform, groups: wgs, .. } = &nodes[i] else {
            continue;
        };
        if pro.is_none() && epi.is_none() {
            continue;
        }
        let pro_infos = pro.map(|p| infos_of(&groups[p.group]));
        let pro_members = pro_infos.as_ref().map(|infos| members(infos, None, i));
        let epi_infos = epi.map(|e| infos_of(&groups[e.group]));
        let epi_last = epi.map_or(i, |e| *groups[e.group].last().expect("non-empty"));
        let epi_members = epi_infos.as_ref().map(|infos| members(infos, Some(&r.out), epi_last));
        let prologue = (pro_infos.as_ref().zip(pro_members.as_deref()).zip(pro))
            .map(|((infos, members), p)| Prologue { shape: &infos[0].shape, members, input: p.input });
        let epilogue = (epi_infos.as_ref().zip(epi_members.as_deref()).zip(epi))
            .map(|((infos, members), e)| Epilogue { shape: &infos[0].shape, members, revisit: e.revisit });
        if let Some(node) = reduction(r, uniform, *wgs, prologue, epilogue).and_then(|k| generated(dev, k)) {
            fused[i] = Some(node);
            for g in pro.map(|p| p.group).into_iter().chain(epi.map(|e| e.group)) {
                groups[g].iter().for_each(|&j| skip[j] = true);
            }
        }
    }
    splice(nodes, fused, &skip)
}

/// The matmul or reduction node that group `g` could run in as its
/// epilogue: the nearest one before it whose product or results the chain
/// reads, if the chain can move up to it (no node in between writes a
/// buffer the chain touches or reads one it writes), at most a few nodes
/// back.
fn producer(nodes: &[Node], accesses: &[Access], g: &[usize]) -> Option<usize> {
    let (mut reads, mut writes): (Vec<&wgpu::Buffer>, Vec<&wgpu::Buffer>) = (Vec::new(), Vec::new());
    for &i in g {
        reads.extend(&accesses[i].reads);
        writes.extend(&accesses[i].writes);
    }
    for i in (g[0].saturating_sub(8)..g[0]).rev() {
        let result = match &nodes[i] {
            Node::Dispatch { fusable: Some(Fusable::Matmul(mm)), .. } => Some(&mm.c),
            Node::Dispatch { fusable: Some(Fusable::Reduce(r)), .. } => Some(&r.out),
            _ => None,
        };
        if result.is_some_and(|c| reads.contains(&c)) {
            return Some(i);
        }
        let a = &accesses[i];
        if a.writes.iter().any(|b| reads.contains(&b) || writes.contains(&b))
            || a.reads.iter().any(|b| writes.contains(&b))
        {
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
    let reads: Vec<&EwOperand> = infos.iter().flat_map(|e| &e.inputs).collect();
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

/// The chains a reduction takes on.
#[derive(Clone, Copy, Default)]
struct Around {
    /// The group computing its input.
    prologue: Option<Before>,
    /// The group reading its results.
    after: Option<After>,
}

/// A group that runs in the reduction after it, computing its input.
#[derive(Clone, Copy)]
struct Before {
    group: usize,
    /// The member whose value is the reduction's input.
    input: usize,
}

/// A group that runs in the reduction before it, reading its results.
#[derive(Clone, Copy)]
struct After {
    group: usize,
    /// It runs over the input, revisiting the reduced elements.
    revisit: bool,
}

/// The buffers a generated chain binds: those it loads and those it
/// stores (each once).
fn bound(members: &[FusedMember]) -> Access {
    let (mut reads, mut writes) = (Vec::new(), Vec::new());
    for m in members {
        for o in &m.operands {
            if let FusedOperand::External(e) = o {
                if !reads.contains(&e.buffer) {
                    reads.push(e.buffer.clone());
                }
            }
        }
        if let Some(out) = &m.out {
            if !writes.contains(&out.buffer) {
                writes.push(out.buffer.clone());
            }
        }
    }
    Access { reads, writes }
}

/// Which member of chain `infos` (right before reduction `r`; it loads
/// and stores the buffers `bound`) computes the reduction's input, if the
/// chain can run in the reduction as its prologue: the member writes the
/// value whole (dense from the buffer's start) and the reduction reads only
/// within it; where the chain stores values, the reduction visits each
/// element exactly once; and the reduction's results go to a buffer the
/// chain does not touch (other invocations are still computing it).
fn prologue_member(r: &RedInfo, infos: &[&EwInfo], bound: &Access) -> Option<usize> {
    let m = infos.iter().rposition(|e| e.out.buffer == r.x.buffer)?;
    let (shape, numel) = (&infos[m].shape, infos[m].shape.iter().product::<usize>());
    let whole = dense(&infos[m].out, shape) && extent(&r.x, &r.shape) <= numel;
    let Access { reads, writes } = bound;
    let broadcast = r.shape.iter().zip(&r.x.strides).any(|(&n, &s)| n > 1 && s == 0);
    let once = writes.is_empty() || (r.shape.iter().product::<usize>() == numel && !broadcast);
    let apart = !reads.contains(&r.out) && !writes.contains(&r.out);
    (whole && once && apart && 1 + reads.len() + writes.len() <= MAX_BUFFERS).then_some(m)
}

/// Can chain `infos` (loading and storing the buffers `bound`) run as the
/// epilogue of reduction `r`, after a prologue that binds `prologue`, if
/// it has one? The reduction must write its final results, as many as the
/// chain's elements; the chain reads them only where they were written
/// (each invocation its own) and writes them only there; neither chain
/// writes what the other reads or writes, nor the reduction's input; and
/// the buffers fit the limit.
fn reduction_epilogue_fits(r: &RedInfo, infos: &[&EwInfo], bound: &Access, prologue: Option<Access>) -> bool {
    let shape = &infos[0].shape;
    let reads: Vec<&EwOperand> = infos.iter().flat_map(|e| &e.inputs).collect();
    if !r.last || shape.iter().product::<usize>() != r.outputs || !reads.iter().any(|o| o.buffer == r.out) {
        return false;
    }
    // (a chain storing into the results' buffer would bind it twice, once
    // writable: WebGPU forbids that)
    if reads.iter().any(|o| o.buffer == r.out && !dense(o, shape)) || infos.iter().any(|e| e.out.buffer == r.out) {
        return false;
    }
    let Access { reads: read, writes: written } = bound;
    // With one result, all reads of the input are done when the epilogue
    // runs (one invocation, or one workgroup past its barriers): it may
    // overwrite the input, which the reduction then reads through its
    // binding.
    let own_input = r.outputs == 1 && written.contains(&r.x.buffer);
    let Access { reads: pro_read, writes: pro_written } = prologue.unwrap_or_else(|| Access {
        reads: if own_input { Vec::new() } else { vec![r.x.buffer.clone()] },
        writes: Vec::new(),
    });
    let apart = written.iter().all(|b| !pro_read.contains(b) && !pro_written.contains(b))
        && read.iter().all(|b| !pro_written.contains(b));
    apart && 1 + pro_read.len() + pro_written.len() + read.len() + written.len() <= MAX_BUFFERS
}

/// Can chain `infos` (loading and storing the buffers `bound`) run over the
/// input of reduction `r`, each invocation on the elements that made its
/// result, after a prologue that binds `prologue`, if it has one? As a
/// softmax's gradient reads a sum over its rows: the chain's shape is the
/// input's, which is dense; it reads the results only broadcast over the
/// reduced axes (element i sees the result it went into); and every
/// buffer written in the dispatch that the chain touches, it touches at
/// element i only — what the same invocation wrote or read. Its stores go
/// to buffers nothing else in the dispatch reads, or that the prologue
/// writes at element i only (`pro_at_i`: it is read there before it is
/// overwritten).
fn revisit_fits(
    r: &RedInfo,
    infos: &[&EwInfo],
    bound: &Access,
    prologue: Option<Access>,
    pro_at_i: &[wgpu::Buffer],
) -> bool {
    let (shape, axes) = (&r.shape, &r.axes);
    if r.kernel != ReduceKernel::Serial || !r.last || infos[0].shape != *shape || !dense(&r.x, shape) {
        return false;
    }
    // the results as the chain must read them: kept axes dense, reduced
    // axes broadcast
    let kept: Vec<usize> = (0..shape.len()).filter(|d| !axes.contains(d)).map(|d| shape[d]).collect();
    let kept_strides = contiguous_strides(&kept);
    let mut k = 0;
    let broadcast: Vec<usize> = (0..shape.len())
        .map(|d| match axes.contains(&d) {
            true => 0,
            false => {
                k += 1;
                kept_strides[k - 1]
            }
        })
        .collect();
    let as_broadcast = |o: &EwOperand| {
        o.offset == 0 && o.strides.iter().zip(&broadcast).zip(shape.iter()).all(|((&s, &b), &n)| n == 1 || s == b)
    };
    let Access { reads: read, writes: written } = bound;
    let Access { reads: pro_read, writes: pro_written } =
        prologue.unwrap_or_else(|| Access { reads: vec![r.x.buffer.clone()], writes: Vec::new() });
    let at_i = |o: &EwOperand| dense(o, shape);
    for e in infos {
        for o in &e.inputs {
            let ok = if o.buffer == r.out {
                as_broadcast(o)
            } else {
                !(pro_written.contains(&o.buffer) || written.contains(&o.buffer)) || at_i(o)
            };
            if !ok {
                return false;
            }
        }
        if written.contains(&e.out.buffer) && !at_i(&e.out) {
            return false;
        }
    }
    let apart = written
        .iter()
        .all(|b| !pro_read.contains(b) && (!pro_written.contains(b) || pro_at_i.contains(b)) && *b != r.out);
    // (it reads what the prologue stores through the prologue's bindings)
    let own_reads = read.iter().filter(|b| !pro_written.contains(b)).count();
    apart && 1 + pro_read.len() + pro_written.len() + own_reads + written.len() <= MAX_BUFFERS
}
