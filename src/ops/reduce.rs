//! Reductions (sum, mean, max, min, argmax, argmin over any axes, with
//! keepdim) and the row kernels softmax, log_softmax and logsumexp.
//! Kernels: `shaders/reduce.wgsl`, `shaders/softmax.wgsl`.

use bytemuck::{Pod, Zeroable};

use crate::dtype::DType;
use crate::ops::{Prim, apply, need_f32};
use crate::shaders::{Kernel, Shader};
use crate::shape::{self, Layout, MAX_RANK, coalesce, contiguous_strides, pack, pack_divisors};
use crate::tensor::Tensor;

/// Reduction kinds; discriminants are the shader's op codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum ReduceOp {
    Sum = 0,
    Max = 1,
    Min = 2,
    ArgMax = 3,
    ArgMin = 4,
}

impl ReduceOp {
    pub fn name(self) -> &'static str {
        match self {
            ReduceOp::Sum => "sum",
            ReduceOp::Max => "max",
            ReduceOp::Min => "min",
            ReduceOp::ArgMax => "argmax",
            ReduceOp::ArgMin => "argmin",
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct ReduceParams {
    n_out: u32,
    n_red: u32,
    rank_out: u32,
    rank_red: u32,
    offset: u32,
    chunk: u32,
    n_chunks: u32,
    scale: f32,
    shape_out: [u32; MAX_RANK],
    str_out: [u32; MAX_RANK],
    shape_red: [u32; MAX_RANK],
    str_red: [u32; MAX_RANK],
    magic_out: [u32; MAX_RANK],
    shift_out: [u32; MAX_RANK],
    magic_red: [u32; MAX_RANK],
    shift_red: [u32; MAX_RANK],
}

/// Output shape of reducing `axes` of `shape`.
pub(crate) fn reduced_shape(shape: &[usize], axes: &[usize], keepdim: bool) -> Vec<usize> {
    let mut out = Vec::with_capacity(shape.len());
    for (d, &n) in shape.iter().enumerate() {
        if !axes.contains(&d) {
            out.push(n);
        } else if keepdim {
            out.push(1);
        }
    }
    out
}

/// (shape, strides) of a set of dimensions.
type Dims = (Vec<usize>, Vec<usize>);

/// Splits a view into the kept and the reduced dimensions, each coalesced.
fn split(l: &Layout, axes: &[usize]) -> (Dims, Dims) {
    let (mut ks, mut kst, mut rs, mut rst) = (vec![], vec![], vec![], vec![]);
    for d in 0..l.shape.len() {
        if axes.contains(&d) {
            rs.push(l.shape[d]);
            rst.push(l.strides[d]);
        } else {
            ks.push(l.shape[d]);
            kst.push(l.strides[d]);
        }
    }
    let mut k = vec![kst];
    let ks = coalesce(&ks, &mut k);
    let mut r = vec![rst];
    let rs = coalesce(&rs, &mut r);
    ((ks, k.remove(0)), (rs, r.remove(0)))
}

#[allow(clippy::too_many_arguments)]
fn dispatch(
    op: ReduceOp,
    x: &Tensor,
    axes: &[usize],
    kept: (&[usize], &[usize]),
    red: (&[usize], &[usize]),
    n_chunks: usize,
    scale: f32,
    out: &Tensor,
) {
    let offset = x.layout().offset;
    let n_out = shape::numel(kept.0);
    let n_red = shape::numel(red.0);
    if kept.0.len() > MAX_RANK || red.0.len() > MAX_RANK {
        panic!("wgrad: {}: views of rank > {MAX_RANK} after merging dimensions are not supported", op.name());
    }
    let params = ReduceParams {
        n_out: n_out as u32,
        n_red: n_red as u32,
        rank_out: kept.0.len() as u32,
        rank_red: red.0.len() as u32,
        offset: offset as u32,
        chunk: n_red.div_ceil(n_chunks) as u32,
        n_chunks: n_chunks as u32,
        scale,
        shape_out: pack(kept.0),
        str_out: pack(kept.1),
        shape_red: pack(red.0),
        str_red: pack(red.1),
        magic_out: pack_divisors(kept.0).0,
        shift_out: pack_divisors(kept.0).1,
        magic_red: pack_divisors(red.0).0,
        shift_red: pack_divisors(red.0).1,
    };
    let bindings = vec![(1, x.storage().clone()), (2, out.storage().clone())];
    let (entry, groups) = if serial(n_out, n_red) && n_chunks == 1 {
        ("reduce_serial", crate::graph::grid(n_out.div_ceil(64) as u32))
    } else {
        ("reduce", crate::graph::grid((n_out * n_chunks) as u32))
    };
    let kernel = Kernel::new(Shader::Reduce, entry).with("OP", op as u32);
    let info = crate::graph::RedInfo {
        op: op as u32,
        entry,
        x: crate::graph::EwOperand { buffer: x.storage().buffer().clone(), offset, strides: x.strides().to_vec() },
        shape: x.shape().to_vec(),
        axes: axes.to_vec(),
        out: out.storage().buffer().clone(),
        outputs: n_out * n_chunks,
        last: n_chunks == 1,
    };
    x.device().inner.record_fusable(
        &kernel,
        bindings,
        bytemuck::bytes_of(&params),
        groups,
        crate::graph::Fusable::Reduce(Box::new(info)),
    );
}

/// Whether `outputs` reductions of `length` elements each run one per
/// invocation (many or short reductions: no barriers, which cost a lot per
/// workgroup on CPU adapters) rather than one per workgroup as a tree.
pub(crate) fn serial(outputs: usize, length: usize) -> bool {
    outputs >= 256 || length <= 64
}

/// Elements one workgroup folds before a reduction is split in two passes.
const CHUNK: usize = 4096;

pub(crate) fn reduce_forward(op: ReduceOp, x: &Tensor, axes: &[usize], keepdim: bool, scale: f32) -> Tensor {
    let out_shape = reduced_shape(x.shape(), axes, keepdim);
    let dtype = if matches!(op, ReduceOp::ArgMax | ReduceOp::ArgMin) { DType::U32 } else { DType::F32 };
    let out = Tensor::empty(x.device(), op.name(), &out_shape, dtype);
    let ((ks, kst), (rs, rst)) = split(x.layout(), axes);
    let n_out = shape::numel(&ks);
    let n_red = shape::numel(&rs);
    if n_out == 0 {
        return out;
    }
    if n_red == 0 {
        crate::ops::elementwise::fill(&out, 0f32.to_bits());
        return out;
    }
    // Few long reductions would leave most of the GPU idle: split each into
    // chunks, reduce the chunks, then reduce the partial results.
    let splittable = matches!(op, ReduceOp::Sum | ReduceOp::Max | ReduceOp::Min);
    let n_chunks = if splittable && n_out < 256 && n_red > 2 * CHUNK { n_red.div_ceil(CHUNK).min(1024) } else { 1 };
    if n_chunks == 1 {
        dispatch(op, x, axes, (&ks, &kst), (&rs, &rst), 1, scale, &out);
    } else {
        let partial = Tensor::empty(x.device(), op.name(), &[n_out, n_chunks], DType::F32);
        dispatch(op, x, axes, (&ks, &kst), (&rs, &rst), n_chunks, 1.0, &partial);
        dispatch(op, &partial, &[1], (&[n_out], &[n_chunks]), (&[n_chunks], &[1]), 1, scale, &out);
    }
    out
}

pub(crate) fn arg_forward(op: ReduceOp, x: &Tensor, axis: usize, keepdim: bool) -> Tensor {
    reduce_forward(op, x, &[axis], keepdim, 1.0)
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct RowParams {
    n_rows: u32,
    n: u32,
    stride: u32,
    rank_outer: u32,
    offset: u32,
    _pad: [u32; 3],
    shape_outer: [u32; MAX_RANK],
    str_outer: [u32; MAX_RANK],
    magic_outer: [u32; MAX_RANK],
    shift_outer: [u32; MAX_RANK],
}

/// Runs a row kernel along `axis`; returns the output buffer's tensor, laid
/// out row-major in (other dims..., axis) order (logsumexp: other dims only).
fn rows(entry: &'static str, x: &Tensor, axis: usize) -> Tensor {
    let l = x.layout();
    let ((os, ost), _) = split(l, &[axis]);
    let n = l.shape[axis];
    let n_rows = shape::numel(&os);
    let mut outer_shape: Vec<usize> = l.shape.clone();
    outer_shape.remove(axis);
    let out_shape = if entry == "logsumexp" {
        outer_shape.clone()
    } else {
        let mut s = outer_shape.clone();
        s.push(n);
        s
    };
    let out = Tensor::empty(x.device(), entry, &out_shape, DType::F32);
    if n_rows == 0 || n == 0 {
        if n_rows > 0 {
            // logsumexp of nothing is log(0) = -inf; softmax of nothing is empty
            crate::ops::elementwise::fill(&out, f32::NEG_INFINITY.to_bits());
        }
        return out;
    }
    if os.len() > MAX_RANK {
        panic!("wgrad: {entry}: views of rank > {MAX_RANK} after merging dimensions are not supported");
    }
    let params = RowParams {
        n_rows: n_rows as u32,
        n: n as u32,
        stride: l.strides[axis] as u32,
        rank_outer: os.len() as u32,
        offset: l.offset as u32,
        _pad: [0; 3],
        shape_outer: pack(&os),
        str_outer: pack(&ost),
        magic_outer: pack_divisors(&os).0,
        shift_outer: pack_divisors(&os).1,
    };
    let one_per_invocation = serial(n_rows, n);
    let kernel = Kernel::new(Shader::Softmax, entry).with("SERIAL", one_per_invocation as u32);
    let bindings = vec![(1, x.storage().clone()), (2, out.storage().clone())];
    let groups = if one_per_invocation { n_rows.div_ceil(64) } else { n_rows };
    x.device().inner.record(&kernel, bindings, bytemuck::bytes_of(&params), crate::graph::grid(groups as u32));
    out
}

pub(crate) fn rows_forward(entry: &'static str, x: &Tensor, axis: usize) -> Tensor {
    let out = rows(entry, x, axis);
    // Undo the move of `axis` to the end: a permuted view, no copy.
    let rank = x.rank();
    let mut perm: Vec<usize> = (0..rank).collect();
    perm.remove(rank - 1);
    perm.insert(axis, rank - 1);
    out.with_layout(out.layout().permute(&perm))
}

pub(crate) fn logsumexp_forward(x: &Tensor, axes: &[usize], keepdim: bool) -> Tensor {
    let out_shape = reduced_shape(x.shape(), axes, keepdim);
    let lse = if axes.len() == 1 {
        rows("logsumexp", x, axes[0])
    } else {
        // Move the reduced axes last, make that dense, and merge them into one.
        let kept: Vec<usize> = (0..x.rank()).filter(|d| !axes.contains(d)).collect();
        let perm: Vec<usize> = kept.iter().chain(axes).copied().collect();
        let moved = super::layout::contiguous_forward(&x.with_layout(x.layout().permute(&perm)));
        let mut merged: Vec<usize> = kept.iter().map(|&d| x.shape()[d]).collect();
        merged.push(axes.iter().map(|&d| x.shape()[d]).product());
        let l = Layout { shape: merged.clone(), strides: contiguous_strides(&merged), offset: 0 };
        rows("logsumexp", &moved.with_layout(l), kept.len())
    };
    lse.with_layout(Layout::contiguous(&out_shape))
}

// ---- public API --------------------------------------------------------------

impl Tensor {
    #[track_caller]
    fn reduce(&self, op: ReduceOp, axes: &[isize], keepdim: bool, mean: bool) -> Tensor {
        let name = if mean { "mean" } else { op.name() };
        need_f32(name, self);
        let axes = shape::axes(name, self.shape(), axes);
        if op != ReduceOp::Sum && axes.iter().any(|&d| self.shape()[d] == 0) {
            panic!("wgrad: {name}: cannot reduce an empty axis of shape {:?}", self.shape());
        }
        let n: usize = axes.iter().map(|&d| self.shape()[d]).product();
        if axes.iter().all(|&d| self.shape()[d] == 1) {
            // nothing to reduce (e.g. the bias gradient at batch 1): a view
            return if keepdim { self.clone() } else { self.reshape(&reduced_shape(self.shape(), &axes, false)) };
        }
        let scale = if mean { 1.0 / n as f32 } else { 1.0 };
        apply(Prim::Reduce { op, axes, keepdim, scale }, &[self])
    }

    /// Sum over `axes` (negative counts from the end); `keepdim` keeps them as size 1.
    #[track_caller]
    pub fn sum(&self, axes: &[isize], keepdim: bool) -> Tensor {
        self.reduce(ReduceOp::Sum, axes, keepdim, false)
    }

    /// Mean over `axes`.
    #[track_caller]
    pub fn mean(&self, axes: &[isize], keepdim: bool) -> Tensor {
        self.reduce(ReduceOp::Sum, axes, keepdim, true)
    }

    /// Maximum over `axes` (NaN propagates).
    #[track_caller]
    pub fn max(&self, axes: &[isize], keepdim: bool) -> Tensor {
        self.reduce(ReduceOp::Max, axes, keepdim, false)
    }

    /// Minimum over `axes` (NaN propagates).
    #[track_caller]
    pub fn min(&self, axes: &[isize], keepdim: bool) -> Tensor {
        self.reduce(ReduceOp::Min, axes, keepdim, false)
    }

    /// Sum of all elements, as a 0-d tensor.
    #[track_caller]
    pub fn sum_all(&self) -> Tensor {
        let all: Vec<isize> = (0..self.rank() as isize).collect();
        self.sum(&all, false)
    }

    /// Mean of all elements, as a 0-d tensor.
    #[track_caller]
    pub fn mean_all(&self) -> Tensor {
        let all: Vec<isize> = (0..self.rank() as isize).collect();
        self.mean(&all, false)
    }

    /// Index (u32) of the largest element along `axis`; the first one on ties.
    #[track_caller]
    pub fn argmax(&self, axis: isize, keepdim: bool) -> Tensor {
        self.arg_reduce(ReduceOp::ArgMax, axis, keepdim)
    }

    /// Index (u32) of the smallest element along `axis`; the first one on ties.
    #[track_caller]
    pub fn argmin(&self, axis: isize, keepdim: bool) -> Tensor {
        self.arg_reduce(ReduceOp::ArgMin, axis, keepdim)
    }

    #[track_caller]
    fn arg_reduce(&self, op: ReduceOp, axis: isize, keepdim: bool) -> Tensor {
        need_f32(op.name(), self);
        let axis = shape::axis(op.name(), self.shape(), axis);
        if self.shape()[axis] == 0 {
            panic!("wgrad: {}: cannot reduce an empty axis of shape {:?}", op.name(), self.shape());
        }
        apply(Prim::ArgReduce { op, axis, keepdim }, &[self])
    }

    /// log Σ exp over `axes`, computed stably (the max is subtracted first).
    #[track_caller]
    pub fn logsumexp(&self, axes: &[isize], keepdim: bool) -> Tensor {
        need_f32("logsumexp", self);
        let axes = shape::axes("logsumexp", self.shape(), axes);
        apply(Prim::LogSumExp { axes, keepdim }, &[self])
    }

    /// exp(x) / Σ exp(x) along `axis`.
    #[track_caller]
    pub fn softmax(&self, axis: isize) -> Tensor {
        need_f32("softmax", self);
        let axis = shape::axis("softmax", self.shape(), axis);
        apply(Prim::Softmax(axis), &[self])
    }

    /// x − logsumexp(x) along `axis`.
    #[track_caller]
    pub fn log_softmax(&self, axis: isize) -> Tensor {
        need_f32("log_softmax", self);
        let axis = shape::axis("log_softmax", self.shape(), axis);
        apply(Prim::LogSoftmax(axis), &[self])
    }
}

// ---- VJP rules -----------------------------------------------------------------

/// `g` with the reduced axes restored as size 1 (so it broadcasts against x).
fn keep(g: &Tensor, x: &Tensor, axes: &[usize], keepdim: bool) -> Tensor {
    if keepdim { g.clone() } else { g.reshape(&reduced_shape(x.shape(), axes, true)) }
}

pub(crate) fn reduce_vjp(
    op: ReduceOp,
    g: &Tensor,
    x: &Tensor,
    y: &Tensor,
    axes: &[usize],
    keepdim: bool,
    scale: f32,
) -> Option<Tensor> {
    let gk = keep(g, x, axes, keepdim);
    Some(match op {
        // f = scale·Σx: ∂x = scale, broadcast back over the reduced axes
        ReduceOp::Sum => if scale == 1.0 { gk } else { gk * scale }.expand(x.shape()),
        // f = max x: the gradient goes to the maxima, shared equally on ties
        ReduceOp::Max | ReduceOp::Min => {
            let at = x.eq(&keep(y, x, axes, keepdim)).cast(DType::F32);
            let iaxes: Vec<isize> = axes.iter().map(|&a| a as isize).collect();
            let count = at.sum(&iaxes, true);
            at * &(gk / count)
        }
        ReduceOp::ArgMax | ReduceOp::ArgMin => return None,
    })
}

/// f = log Σ eˣ: ∂x = e^(x − f) = softmax(x)
pub(crate) fn logsumexp_vjp(g: &Tensor, x: &Tensor, y: &Tensor, axes: &[usize], keepdim: bool) -> Tensor {
    keep(g, x, axes, keepdim) * (x - &keep(y, x, axes, keepdim)).exp()
}
