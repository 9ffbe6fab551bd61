//! Rewriting a traced node list: where liveness gave a value a buffer that
//! keeps its node out of a fused kernel, the value moves to a buffer of
//! its own (`rename_output`); and new nodes are spliced in.

use crate::ir::{EwOperand, Fusable};
use crate::runtime::{Access, DeviceInner, Node, access};
use crate::shape::contiguous_strides;

/// Row-major and dense from the buffer's start (size-1 axes' strides do not matter).
pub(super) fn dense(o: &EwOperand, shape: &[usize]) -> bool {
    let want = contiguous_strides(shape);
    o.offset == 0 && shape.iter().zip(&o.strides).zip(&want).all(|((&n, &s), &w)| n == 1 || s == w)
}

/// One past the last element operand `o` reads over `shape`.
pub(super) fn extent(o: &EwOperand, shape: &[usize]) -> usize {
    if shape.contains(&0) {
        return 0;
    }
    o.offset + shape.iter().zip(&o.strides).map(|(&n, &s)| (n - 1) * s).sum::<usize>() + 1
}

/// Does `node` overwrite all `numel` elements of the value in `buffer`?
/// Only a dense elementwise write of at least as many elements is known
/// to: after a partial write (a copy into the interior of a padded tensor)
/// the rest of the value is still read.
pub(super) fn overwrites(node: &Node, buffer: &wgpu::Buffer, numel: usize) -> bool {
    match node {
        Node::Dispatch { fusable: Some(Fusable::Elementwise(info)), .. } => {
            info.out.buffer == *buffer && dense(&info.out, &info.shape) && info.shape.iter().product::<usize>() >= numel
        }
        _ => false,
    }
}

/// Gives the value node `i` (elementwise or a reduction) writes the buffer
/// `fresh` instead of the one liveness chose, rewriting its readers up to
/// the node that next overwrites that buffer. `false` (nothing changed)
/// when that cannot be done safely: the value outlives the step (its
/// buffer is `pinned` and nothing overwrites it); node `i` does not write a whole value (dense from the start)
/// or a reader reads past it (the value may be pieced together by several
/// writes, as `cat` and `pad` do); a reader is neither elementwise nor a
/// reduction (its extent is unknown); or a later node writes part of the
/// buffer.
pub(super) fn rename_output(
    dev: &DeviceInner,
    nodes: &mut [Node],
    i: usize,
    pinned: &[wgpu::Buffer],
    fresh: &mut dyn FnMut(u64) -> wgpu::Buffer,
) -> bool {
    let (old, numel) = match &nodes[i] {
        Node::Dispatch { fusable: Some(Fusable::Elementwise(e)), .. } if dense(&e.out, &e.shape) => {
            (e.out.buffer.clone(), e.shape.iter().product::<usize>())
        }
        Node::Dispatch { fusable: Some(Fusable::Reduce(r)), .. } => (r.out.clone(), r.outputs),
        _ => return false,
    };
    // the readers of this value: up to (and including) a full overwrite
    let mut end = None;
    for (j, node) in nodes.iter().enumerate().skip(i + 1) {
        let Access { reads, writes } = access(dev, node);
        if reads.contains(&old) {
            let within = match node {
                Node::Dispatch { fusable: Some(Fusable::Elementwise(r)), .. } => {
                    r.inputs.iter().all(|o| o.buffer != old || extent(o, &r.shape) <= numel)
                }
                Node::Dispatch { fusable: Some(Fusable::Reduce(r)), .. } => extent(&r.x, &r.shape) <= numel,
                _ => false,
            };
            if !within {
                return false;
            }
        }
        if writes.contains(&old) {
            if !overwrites(node, &old, numel) {
                return false;
            }
            end = Some(j + 1);
            break;
        }
    }
    // (a value that outlives the step keeps its buffer, unless a later
    // node overwrites it, the last one included)
    let Some(end) = end.or((!pinned.contains(&old)).then_some(nodes.len())) else {
        return false;
    };
    let new = fresh(old.size());
    for (j, node) in nodes[i..end].iter_mut().enumerate() {
        let Node::Dispatch { kernel, bindings, fusable, .. } = node else { continue };
        let interface = dev.interface(&kernel.source);
        // node i: its writes; the others: their reads
        let rewrite = |binding: u32| interface.writes(binding) == (j == 0);
        for (_, b) in bindings.iter_mut().filter(|(n, b)| *b == old && rewrite(*n)) {
            *b = new.clone();
        }
        let swap = |b: &mut wgpu::Buffer| {
            if *b == old {
                *b = new.clone()
            }
        };
        // (only elementwise nodes and reductions read the value, checked above)
        match (fusable, j) {
            (Some(Fusable::Elementwise(info)), 0) => swap(&mut info.out.buffer),
            (Some(Fusable::Elementwise(info)), _) => info.inputs.iter_mut().for_each(|o| swap(&mut o.buffer)),
            (Some(Fusable::Reduce(info)), 0) => swap(&mut info.out),
            (Some(Fusable::Reduce(info)), _) => swap(&mut info.x.buffer),
            _ => {}
        }
    }
    true
}

/// `nodes` with `new[i]` in place of node i where there is one, and without
/// the nodes marked in `skip`.
pub(super) fn splice(nodes: Vec<Node>, mut new: Vec<Option<Node>>, skip: &[bool]) -> Vec<Node> {
    nodes.into_iter().enumerate().filter(|(i, _)| !skip[*i]).map(|(i, n)| new[i].take().unwrap_or(n)).collect()
}
