//! Reductions: sum, mean, max, min, argmax, argmin over any axes, with
//! keepdim. Kernels: `shaders/reduce.wgsl` (with the default hooks of
//! `shaders/reduce_hooks.wgsl`). Compositions over them: var, std, the
//! vector norms, any and all (prod is in `scan.rs`: the last element of a
//! cumprod, for its division-free gradient).

use bytemuck::Zeroable;

use crate::autograd::{Primitive, multilinear_jvp};
use crate::dtype::DType;
use crate::ir::{EwOperand, Fusable, RedInfo, ReduceKernel, ReduceOp, ReduceParams};
use crate::ops::layout::contiguous_forward;
use crate::ops::{apply, need_f32};
use crate::runtime::{Kernel, Shader, grid};
use crate::shape::{self, Layout, MAX_RANK, coalesce, pack, pack_divisors};
use crate::tensor::Tensor;

/// The reduction primitives.
#[derive(Clone, Debug)]
pub(crate) enum Reduction {
    /// sum / max / min over `axes`, times `scale` (mean is a scaled sum)
    Reduce { op: ReduceOp, axes: Vec<usize>, keepdim: bool, scale: f32 },
    /// argmax / argmin along one axis
    Arg { op: ReduceOp, axis: usize, keepdim: bool },
}

impl Primitive for Reduction {
    fn name(&self) -> &'static str {
        match self {
            Reduction::Reduce { scale, .. } if *scale != 1.0 => "mean",
            Reduction::Reduce { op, .. } | Reduction::Arg { op, .. } => op.name(),
        }
    }

    fn forward(&self, x: &[&Tensor]) -> Tensor {
        match self {
            Reduction::Reduce { op, axes, keepdim, scale } => reduce_forward(*op, x[0], axes, *keepdim, *scale),
            Reduction::Arg { op, axis, keepdim } => reduce_forward(*op, x[0], &[*axis], *keepdim, 1.0),
        }
    }

    fn vjp(&self, g: &Tensor, x: &[&Tensor], y: &Tensor, _needs: &[bool]) -> Vec<Option<Tensor>> {
        let x = x[0];
        match self {
            Reduction::Reduce { op, axes, keepdim, scale } => {
                let gk = keep(g, x, axes, *keepdim);
                vec![Some(match op {
                    // f = scale·Σx: ∂x = scale, broadcast back over the reduced axes
                    ReduceOp::Sum => if *scale == 1.0 { gk } else { gk * *scale }.expand(x.shape()),
                    // f = max x: the gradient goes to the maxima, shared equally on ties
                    _ => {
                        let at = x.eq(&keep(y, x, axes, *keepdim)).cast(DType::F32);
                        let iaxes: Vec<isize> = axes.iter().map(|&a| a as isize).collect();
                        let count = at.sum(&iaxes, true);
                        at * &(gk / count)
                    }
                })]
            }
            // piecewise constant
            Reduction::Arg { .. } => vec![None],
        }
    }

    fn jvp(&self, t: &[Option<&Tensor>], x: &[&Tensor], y: &Tensor) -> Option<Tensor> {
        let (t, x) = (t[0]?, x[0]);
        match self {
            Reduction::Reduce { op: ReduceOp::Sum, .. } => multilinear_jvp(self, &[Some(t)], &[x], &[0]),
            // the tangent at the maxima, averaged over ties (as the VJP shares them)
            Reduction::Reduce { axes, keepdim, .. } => {
                let at = x.eq(&keep(y, x, axes, *keepdim)).cast(DType::F32);
                let iaxes: Vec<isize> = axes.iter().map(|&a| a as isize).collect();
                Some((&at * t).sum(&iaxes, *keepdim) / at.sum(&iaxes, *keepdim))
            }
            Reduction::Arg { .. } => None,
        }
    }
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
pub(crate) type Dims = (Vec<usize>, Vec<usize>);

/// Splits a view into the kept and the reduced dimensions, each coalesced.
pub(crate) fn split(l: &Layout, axes: &[usize]) -> (Dims, Dims) {
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
        hooks: Zeroable::zeroed(),
    };
    // chunks (a first pass) are folded one per invocation on CPU adapters
    // (see `reduce_forward`)
    let serial_chunks = n_chunks > 1 && is_cpu(x);
    let (which, groups) = if serial_chunks || (n_chunks == 1 && serial(n_out, n_red)) {
        (ReduceKernel::Serial, grid((n_out * n_chunks).div_ceil(64) as u32))
    } else {
        (ReduceKernel::Tree, grid((n_out * n_chunks) as u32))
    };
    let kernel = Kernel::new(Shader::Reduce, which.entry()).with("OP", op.code());
    let info = RedInfo {
        op,
        kernel: which,
        x: EwOperand { buffer: x.storage().buffer().clone(), offset, strides: x.strides().to_vec() },
        shape: x.shape().to_vec(),
        axes: axes.to_vec(),
        out: out.storage().buffer().clone(),
        outputs: n_out * n_chunks,
        last: n_chunks == 1,
    };
    let bindings = [("x", x.storage()), ("out", out.storage())];
    x.device().inner.record_fusable(
        &kernel,
        &bindings,
        bytemuck::bytes_of(&params),
        groups,
        Fusable::Reduce(Box::new(info)),
    );
}

/// Whether `outputs` reductions of `length` elements each run one per
/// invocation (many or short reductions: no barriers, which cost a lot per
/// workgroup on CPU adapters) rather than one per workgroup as a tree.
pub(crate) fn serial(outputs: usize, length: usize) -> bool {
    outputs >= 256 || length <= 64
}

/// Few reductions longer than this are split in two passes.
const SPLIT_ABOVE: usize = 8192;

/// On CPU adapters, the first pass of a split reduction: as many
/// invocations as this (enough to keep every core busy)...
const SPLIT_INVOCATIONS: usize = 2048;

/// ... but each folding about this many elements or more.
const MIN_CHUNK: usize = 256;

/// On GPUs, chunks of this many elements, each folded by a workgroup's tree
/// (its lanes read neighbouring elements), at most `GPU_CHUNKS` of them.
const GPU_CHUNK: usize = 4096;
const GPU_CHUNKS: usize = 1024;

/// Does `x` live on a CPU adapter, where an invocation folding a run of
/// contiguous elements alone beats a workgroup's tree with its barriers?
fn is_cpu(x: &Tensor) -> bool {
    x.device().inner.cpu_adapter()
}

pub(crate) fn reduce_forward(op: ReduceOp, x: &Tensor, axes: &[usize], keepdim: bool, scale: f32) -> Tensor {
    let out_shape = reduced_shape(x.shape(), axes, keepdim);
    let dtype = if matches!(op, ReduceOp::ArgMax | ReduceOp::ArgMin) { DType::U32 } else { DType::F32 };
    let out = Tensor::empty(x.device(), op.name(), &out_shape, dtype);
    let ((ks, kst), (rs, rst)) = split(x.layout(), axes);
    if (ks.len() > MAX_RANK || rs.len() > MAX_RANK) && !x.is_contiguous() {
        // a view whose dimensions do not merge down to the kernel's: dense, they do
        return reduce_forward(op, &contiguous_forward(x), axes, keepdim, scale);
    }
    let n_out = shape::numel(&ks);
    let n_red = shape::numel(&rs);
    if n_out == 0 {
        return out;
    }
    if n_red == 0 {
        // the sum of nothing is 0; its mean, 0/0, NaN (as numpy, JAX, PyTorch)
        let empty = if scale.is_finite() { 0.0f32 } else { f32::NAN };
        crate::ops::elementwise::fill(&out, empty.to_bits());
        return out;
    }
    // Few long reductions would leave most of the GPU idle: split each into
    // chunks, then reduce the partial results. On CPU adapters one
    // invocation folds each chunk in order (runs of contiguous elements, no
    // barriers); on GPUs a workgroup's tree does.
    let splittable = matches!(op, ReduceOp::Sum | ReduceOp::Max | ReduceOp::Min);
    let n_chunks = match splittable && n_out < 256 && n_red > SPLIT_ABOVE {
        false => 1,
        true if is_cpu(x) => n_red.div_ceil(MIN_CHUNK).min(SPLIT_INVOCATIONS.div_ceil(n_out)),
        true => n_red.div_ceil(GPU_CHUNK).min(GPU_CHUNKS),
    };
    if n_chunks == 1 {
        dispatch(op, x, axes, (&ks, &kst), (&rs, &rst), 1, scale, &out);
    } else {
        let partial = Tensor::empty(x.device(), op.name(), &[n_out, n_chunks], DType::F32);
        dispatch(op, x, axes, (&ks, &kst), (&rs, &rst), n_chunks, 1.0, &partial);
        dispatch(op, &partial, &[1], (&[n_out], &[n_chunks]), (&[n_chunks], &[1]), 1, scale, &out);
    }
    out
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
        apply(Reduction::Reduce { op, axes, keepdim, scale }, &[self])
    }

    /// `scale`·Σ over the checked `axes`: one dispatch (the kernel scales
    /// the sum as mean's does), or a view times `scale` where nothing is
    /// reduced.
    #[track_caller]
    fn scaled_sum(&self, axes: Vec<usize>, keepdim: bool, scale: f32) -> Tensor {
        if axes.iter().all(|&d| self.shape()[d] == 1) {
            let view = if keepdim { self.clone() } else { self.reshape(&reduced_shape(self.shape(), &axes, false)) };
            return if scale == 1.0 { view } else { view * scale };
        }
        apply(Reduction::Reduce { op: ReduceOp::Sum, axes, keepdim, scale }, &[self])
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
        apply(Reduction::Arg { op, axis, keepdim }, &[self])
    }
}

/// The order of a vector norm ([`Tensor::norm`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Norm {
    /// Σ|x|
    L1,
    /// √(Σx²), the Euclidean norm
    L2,
    /// max|x|
    Inf,
    /// min|x| (not a norm, but numpy's and PyTorch's `ord=-inf`)
    NegInf,
    /// √(Σx²) over exactly two axes: the Frobenius norm of the matrices
    /// they hold (the same numbers as `L2` over those axes)
    Fro,
}

impl Tensor {
    /// Variance over `axes`: Σ(x − x̄)² / (N − `correction`), N the number
    /// of elements reduced, as `torch.var(x, dims, correction=c)` and
    /// `numpy.var(x, axes, ddof=c)` (`correction` 1 is the unbiased sample
    /// variance, 0 the population's). Where N − correction ≤ 0 the divisor
    /// is 0, as in both: the result is +∞, or NaN where the deviations are
    /// all 0 (N = 1 with correction 1; an empty axis). Two passes (the mean
    /// first, then the squared deviations), so no cancellation of Σx² − N·x̄².
    /// The gradient, through the composition, is 2(x − x̄)·g/(N − correction)
    /// (x̄'s own dependence on x adds Σ(x − x̄) = 0); it is ±∞ or NaN where
    /// N − correction ≤ 0, as the value is. A composition of 4 dispatches:
    /// mean, subtract, square, and a sum whose kernel scales by
    /// 1/(N − correction).
    ///
    /// ```
    /// # use wgrad::{Device, Tensor};
    /// # let dev = Device::new()?;
    /// let x = Tensor::from_slice(&dev, &[1.0f32, 2.0, 3.0, 4.0], &[2, 2]);
    /// assert_eq!(x.var(&[1], 0, false).to_vec::<f32>()?, vec![0.25, 0.25]);
    /// assert_eq!(x.var(&[0], 1, false).to_vec::<f32>()?, vec![2.0, 2.0]);
    /// assert_eq!(x.var(&[0, 1], 0, false).item::<f32>()?, 1.25);
    /// # Ok::<(), wgrad::Error>(())
    /// ```
    #[track_caller]
    pub fn var(&self, axes: &[isize], correction: usize, keepdim: bool) -> Tensor {
        need_f32("var", self);
        let axes = shape::axes("var", self.shape(), axes);
        self.variance(axes, correction, keepdim)
    }

    /// Standard deviation over `axes`: √var (see [`Tensor::var`] for
    /// `correction` and N − correction ≤ 0). Where the variance is 0 (a
    /// constant slice) the gradient is 0 — a subgradient, std being a norm
    /// of the deviations there — where PyTorch gives NaN: the square root
    /// is taken as a "double where" (of 1 in place of 0), so its infinite
    /// slope at 0 never meets the zero gradient of var. A composition of
    /// var's 4 dispatches and 4 more (a mask, two `where_`, sqrt).
    #[track_caller]
    pub fn std(&self, axes: &[isize], correction: usize, keepdim: bool) -> Tensor {
        need_f32("std", self);
        let axes = shape::axes("std", self.shape(), axes);
        sqrt_flat_at_zero(&self.variance(axes, correction, keepdim))
    }

    #[track_caller]
    fn variance(&self, axes: Vec<usize>, correction: usize, keepdim: bool) -> Tensor {
        let n: usize = axes.iter().map(|&d| self.shape()[d]).product();
        let iaxes: Vec<isize> = axes.iter().map(|&a| a as isize).collect();
        // x − x̄ keeps Σ(x − x̄) = 0 but for rounding: no cross term
        let deviations = self - &self.mean(&iaxes, true);
        let scale = (1.0 / n.saturating_sub(correction) as f64) as f32;
        deviations.square().scaled_sum(axes, keepdim, scale)
    }

    /// The vector norm of order `ord` over `axes` (all of them flattened
    /// into one vector), as `torch.linalg.vector_norm(x, ord, dims)`:
    /// Σ|x|, √(Σx²), max|x|, min|x|; [`Norm::Fro`] is √(Σx²) over exactly
    /// two axes. Unlike `numpy.linalg.norm`, orders 1, 2 and ∞ over two axes
    /// are not matrix (operator) norms. The norms of an empty slice are 0
    /// (Inf and NegInf panic, as max and min do). √(Σx²) is not rescaled:
    /// it overflows for |x| beyond ~10¹⁹ and underflows to 0 below ~10⁻²³,
    /// as PyTorch's.
    ///
    /// Gradients: sign(x) for L1 (0 at 0); x/‖x‖ for L2 and Fro, and 0 at
    /// x = 0 (a subgradient: the square root is a "double where", as in
    /// JAX, so no NaN reaches the gradient, nor the Hessian), with exact
    /// second derivatives elsewhere; for Inf and NegInf, sign(x) at the
    /// extreme |x|, shared equally among ties as max's gradient is.
    ///
    /// Compositions: L1, Inf and NegInf are 2 dispatches (abs and a sum,
    /// max or min), L2 and Fro 6 (square, sum, a mask, two `where_`, sqrt).
    ///
    /// ```
    /// # use wgrad::{Device, Norm, Tensor};
    /// # let dev = Device::new()?;
    /// let x = Tensor::from_slice(&dev, &[3.0f32, -4.0, 0.0, 1.0], &[2, 2]);
    /// assert_eq!(x.norm(Norm::L2, &[1], false).to_vec::<f32>()?, vec![5.0, 1.0]);
    /// assert_eq!(x.norm(Norm::L1, &[0, 1], false).item::<f32>()?, 8.0);
    /// assert_eq!(x.norm(Norm::Inf, &[0], false).to_vec::<f32>()?, vec![3.0, 4.0]);
    /// # Ok::<(), wgrad::Error>(())
    /// ```
    #[track_caller]
    pub fn norm(&self, ord: Norm, axes: &[isize], keepdim: bool) -> Tensor {
        need_f32("norm", self);
        let resolved = shape::axes("norm", self.shape(), axes);
        if ord == Norm::Fro && resolved.len() != 2 {
            panic!("wgrad: norm: Fro needs exactly two axes, got {axes:?} for a tensor of shape {:?}", self.shape());
        }
        if matches!(ord, Norm::Inf | Norm::NegInf) && resolved.iter().any(|&d| self.shape()[d] == 0) {
            panic!("wgrad: norm: {ord:?} cannot reduce an empty axis of shape {:?}", self.shape());
        }
        let axes: Vec<isize> = resolved.iter().map(|&a| a as isize).collect();
        match ord {
            Norm::L1 => self.abs().sum(&axes, keepdim),
            Norm::L2 | Norm::Fro => sqrt_flat_at_zero(&self.square().sum(&axes, keepdim)),
            Norm::Inf => self.abs().max(&axes, keepdim),
            Norm::NegInf => self.abs().min(&axes, keepdim),
        }
    }

    /// Whether any element over `axes` is non-zero (NaN counts as
    /// non-zero), as a u32 mask of 0/1, as `numpy.any` and `torch.any`: a
    /// mask from the comparisons (u32), or any tensor tested against 0. Over
    /// an empty axis: 0. No gradient. A composition: the count of non-zero
    /// elements, > 0 — 3 dispatches on a u32 tensor (cast, sum, compare),
    /// 4 on others (a first `ne(0)`).
    #[track_caller]
    pub fn any(&self, axes: &[isize], keepdim: bool) -> Tensor {
        let axes = shape::axes("any", self.shape(), axes);
        let set = if self.dtype() == DType::U32 { self.clone() } else { self.ne(0.0) };
        set.count(axes, keepdim).gt(0.0)
    }

    /// Whether all elements over `axes` are non-zero (NaN counts as
    /// non-zero), as a u32 mask of 0/1, as `numpy.all` and `torch.all`.
    /// Over an empty axis: 1. No gradient. A composition: no element equal
    /// to 0 — 4 dispatches (compare, cast, sum, compare).
    #[track_caller]
    pub fn all(&self, axes: &[isize], keepdim: bool) -> Tensor {
        let axes = shape::axes("all", self.shape(), axes);
        self.eq(0.0).count(axes, keepdim).eq(0.0)
    }

    /// Σ over the checked `axes` of the u32 `self`, in f32: 0 only where
    /// every element is 0 (a sum of non-negative numbers is never rounded
    /// down to 0).
    #[track_caller]
    fn count(&self, axes: Vec<usize>, keepdim: bool) -> Tensor {
        self.cast(DType::F32).scaled_sum(axes, keepdim, 1.0)
    }
}

/// √v for v ≥ 0 (or NaN), with a zero gradient where v = 0 rather than
/// ∞·0 = NaN: a "double where" (JAX's idiom), so the square root only ever
/// sees v ≠ 0 and its derivatives stay finite in both branches.
// f(v) = √v where v ≠ 0, else 0;  f'(v) = 1/(2√v) where v ≠ 0, else 0
#[track_caller]
fn sqrt_flat_at_zero(v: &Tensor) -> Tensor {
    let live = v.ne(0.0);
    live.where_(&live.where_(v, 1.0).sqrt(), 0.0)
}

/// `g` with the reduced axes restored as size 1 (so it broadcasts against x).
pub(crate) fn keep(g: &Tensor, x: &Tensor, axes: &[usize], keepdim: bool) -> Tensor {
    if keepdim { g.clone() } else { g.reshape(&reduced_shape(x.shape(), axes, true)) }
}
