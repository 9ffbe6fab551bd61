//! Sorting: a stable argsort along any axis, the primitive (a bitonic
//! network in `shaders/sort.wgsl`); sort and topk are compositions of it
//! with narrow and gather, so their values get gather's gradient.

use bytemuck::{Pod, Zeroable};

use crate::autograd::Primitive;
use crate::dtype::DType;
use crate::ops::apply;
use crate::ops::layout::contiguous_forward;
use crate::ops::reduce::split;
use crate::runtime::{Kernel, Shader, grid};
use crate::shape::{self, MAX_RANK, pack, pack_divisors};
use crate::tensor::Tensor;

/// Pairs one workgroup sorts in shared memory (`BLOCK` of `shaders/sort.wgsl`).
const BLOCK: usize = 1024;

/// The indices (u32) that sort `x` along `axis`, stably. Piecewise
/// constant: no gradient.
#[derive(Clone, Debug)]
pub(crate) struct Argsort {
    pub axis: usize,
    pub descending: bool,
}

impl Primitive for Argsort {
    fn name(&self) -> &'static str {
        "argsort"
    }

    fn forward(&self, x: &[&Tensor]) -> Tensor {
        argsort_forward(x[0], self.axis, self.descending)
    }

    fn vjp(&self, _g: &Tensor, _x: &[&Tensor], _y: &Tensor, _needs: &[bool]) -> Vec<Option<Tensor>> {
        vec![None]
    }

    fn jvp(&self, _t: &[Option<&Tensor>], _x: &[&Tensor], _y: &Tensor) -> Option<Tensor> {
        None
    }
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct SortParams {
    n_rows: u32,
    n: u32,
    p_log2: u32,
    total: u32,
    dtype: u32,
    descending: u32,
    k: u32,
    j: u32,
    stride: u32,
    rank_outer: u32,
    offset: u32,
    _pad: u32,
    shape_outer: [u32; MAX_RANK],
    str_outer: [u32; MAX_RANK],
    magic_outer: [u32; MAX_RANK],
    shift_outer: [u32; MAX_RANK],
}

/// Records the sort of the rows of `x` along `axis`: rows padded to P = 2^⌈log₂ n⌉
/// and laid end to end. Rows of up to BLOCK elements sort in one dispatch;
/// longer ones take, after that one, per stage k = 2·BLOCK, …, P, a global
/// compare-exchange per step j = k/2, …, BLOCK and a shared-memory pass for
/// the steps below BLOCK: 1 + Σ (log₂(k/BLOCK) + 1) dispatches.
fn argsort_forward(x: &Tensor, axis: usize, descending: bool) -> Tensor {
    let ((os, ost), _) = split(x.layout(), &[axis]);
    if os.len() > MAX_RANK && !x.is_contiguous() {
        // a view whose dimensions do not merge down to the kernel's: dense, they do
        return argsort_forward(&contiguous_forward(x), axis, descending);
    }
    let n = x.shape()[axis];
    let n_rows = shape::numel(&os);
    // the output, row after row: the other dimensions, then the axis
    let rank = x.rank();
    let mut out_shape = x.shape().to_vec();
    out_shape.remove(axis);
    out_shape.push(n);
    let dev = x.device();
    let out = Tensor::empty(dev, "argsort", &out_shape, DType::U32);
    let mut perm: Vec<usize> = (0..rank - 1).collect();
    perm.insert(axis, rank - 1);
    let result = out.with_layout(out.layout().permute(&perm));
    if n_rows == 0 || n == 0 {
        return result;
    }
    let p_log2 = n.next_power_of_two().trailing_zeros();
    let padded = 1usize << p_log2;
    let total = (n_rows * padded).next_multiple_of(BLOCK);
    let l = x.layout();
    let params = |k: usize, j: usize| SortParams {
        n_rows: n_rows as u32,
        n: n as u32,
        p_log2,
        total: total as u32,
        dtype: match x.dtype() {
            DType::F32 => 0,
            DType::I32 => 1,
            DType::U32 => 2,
        },
        descending: descending as u32,
        k: k as u32,
        j: j as u32,
        stride: l.strides[axis] as u32,
        rank_outer: os.len() as u32,
        offset: l.offset as u32,
        _pad: 0,
        shape_outer: pack(&os),
        str_outer: pack(&ost),
        magic_outer: pack_divisors(&os).0,
        shift_outer: pack_divisors(&os).1,
    };
    let record = |entry: &'static str, bindings: &[(&str, &Tensor)], k: usize, j: usize, groups: usize| {
        let bindings: Vec<_> = bindings.iter().map(|(name, t)| (*name, t.storage())).collect();
        let uniform = params(k, j);
        dev.inner.record(
            &Kernel::new(Shader::Sort, entry),
            &bindings,
            bytemuck::bytes_of(&uniform),
            grid(groups as u32),
        );
    };
    let blocks = total / BLOCK;
    if padded <= BLOCK {
        record("sort_rows_out", &[("x", x), ("idx_out", &out)], 0, 0, blocks);
        return result;
    }
    // (keys, indices) ping-pong between two sets of buffers
    let pair =
        || (Tensor::empty(dev, "argsort", &[total], DType::U32), Tensor::empty(dev, "argsort", &[total], DType::U32));
    let (mut cur, mut next) = (pair(), pair());
    record("sort_rows", &[("x", x), ("keys_out", &cur.0), ("idx_out", &cur.1)], 0, 0, blocks);
    let mut k = 2 * BLOCK;
    while k <= padded {
        let mut j = k / 2;
        while j >= BLOCK {
            let b = [("keys_in", &cur.0), ("idx_in", &cur.1), ("keys_out", &next.0), ("idx_out", &next.1)];
            record("sort_step", &b, k, j, (total / 2).div_ceil(256));
            std::mem::swap(&mut cur, &mut next);
            j /= 2;
        }
        if k == padded {
            record("sort_merge_out", &[("keys_in", &cur.0), ("idx_in", &cur.1), ("idx_out", &out)], k, 0, blocks);
        } else {
            let b = [("keys_in", &cur.0), ("idx_in", &cur.1), ("keys_out", &next.0), ("idx_out", &next.1)];
            record("sort_merge", &b, k, 0, blocks);
            std::mem::swap(&mut cur, &mut next);
        }
        k *= 2;
    }
    result
}

// ---- public API ----------------------------------------------------------------

impl Tensor {
    #[track_caller]
    fn argsort_as(&self, op: &str, axis: isize, descending: bool) -> (usize, Tensor) {
        let a = shape::axis(op, self.shape(), axis);
        (a, apply(Argsort { axis: a, descending }, &[self]))
    }

    /// The indices (u32) that sort `self` along `axis` (negative counts from
    /// the end), of `self`'s shape: `self.gather(axis, &idx)` is sorted.
    /// Stable in both directions: equal elements keep their order (as
    /// `numpy.argsort(kind="stable")` and `torch.argsort(stable=True)`;
    /// descending is not the reverse of ascending, which would reverse ties).
    /// NaN counts as larger than every number, as in PyTorch: last ascending
    /// (where numpy puts it too), first descending; −0 equals +0. f32, i32
    /// and u32, each compared as its own type. Piecewise constant: no
    /// gradient.
    ///
    /// ```
    /// # use wgrad::{Device, Tensor};
    /// # let dev = Device::new()?;
    /// let x = Tensor::from_slice(&dev, &[3.0f32, 1.0, f32::NAN, 1.0, 2.0], &[5]);
    /// assert_eq!(x.argsort(0, false).to_vec::<u32>()?, vec![1, 3, 4, 0, 2]);
    /// assert_eq!(x.argsort(0, true).to_vec::<u32>()?, vec![2, 0, 4, 1, 3]);
    /// # Ok::<(), wgrad::Error>(())
    /// ```
    #[track_caller]
    pub fn argsort(&self, axis: isize, descending: bool) -> Tensor {
        self.argsort_as("argsort", axis, descending).1
    }

    /// `self` sorted along `axis` and the indices that sort it, as
    /// `torch.sort(x, dim, descending, stable=True)` (the order of
    /// [`argsort`](Tensor::argsort)). The values are `self.gather(axis, &indices)`,
    /// so the gradient of each goes to the element it came from (∂x is g
    /// scattered back through the permutation; ties included).
    #[track_caller]
    pub fn sort(&self, axis: isize, descending: bool) -> (Tensor, Tensor) {
        let (a, idx) = self.argsort_as("sort", axis, descending);
        (self.gather(a as isize, &idx), idx)
    }

    /// The `k` largest (or, with `largest = false`, smallest) elements along
    /// `axis`, in order, and their indices, as `torch.topk(x, k, dim,
    /// largest, sorted=True)`; ties in the order of the input (stable),
    /// NaN counted as the largest. The first `k` of [`sort`](Tensor::sort);
    /// the gradient of the values goes to the selected elements (gather's).
    /// Panics if `k` exceeds the size of the axis.
    #[track_caller]
    pub fn topk(&self, k: usize, axis: isize, largest: bool) -> (Tensor, Tensor) {
        let a = shape::axis("topk", self.shape(), axis);
        if k > self.shape()[a] {
            panic!(
                "wgrad: topk: k = {k} exceeds the size {} of axis {axis} of a tensor of shape {:?}",
                self.shape()[a],
                self.shape()
            );
        }
        let (_, idx) = self.argsort_as("topk", axis, largest);
        let idx = idx.narrow(a as isize, 0, k);
        (self.gather(a as isize, &idx), idx)
    }
}
