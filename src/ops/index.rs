//! Indexing: gather, index_select, scatter_add, index_add, scatter_reduce,
//! index_put, one_hot. Kernels: `shaders/index.wgsl` (one gather kernel,
//! one scatter loop folding by sum, prod, mean, amax, amin or replace).

use bytemuck::{Pod, Zeroable};

use crate::autograd::{Primitive, multilinear_jvp, transposed_jvp};
use crate::dtype::DType;
use crate::ops::elementwise::copy_into;
use crate::ops::{apply, need_f32, need_indices, same_device};
use crate::runtime::{Kernel, Shader, grid};
use crate::shape::{self, MAX_RANK, broadcast_shapes, numel, pack, pack_divisors};
use crate::tensor::Tensor;

/// The indexing primitives.
#[derive(Clone, Debug)]
pub(crate) enum Indexing {
    /// inputs: x, indices
    Gather { axis: usize },
    /// inputs: x, 1-d indices
    IndexSelect { axis: usize },
    /// inputs: indices, src; output has `size` along `axis`, zeros elsewhere;
    /// `op` names it in messages (scatter_add, index_add, index_put)
    ScatterAdd { axis: usize, size: usize, op: &'static str },
    /// input: class indices; output: a new last axis of `n` classes
    OneHot(usize),
    /// inputs: self, indices, src (the shape of the indices)
    ScatterReduce { axis: usize, reduce: ScatterReduce, include_self: bool },
    /// inputs: self, indices, src; where indices repeat, the last source wins
    ScatterReplace { axis: usize },
}

/// How [`Tensor::scatter_reduce`] folds the sources that land on one
/// element, as PyTorch's `reduce` strings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ScatterReduce {
    /// the sum
    Sum,
    /// the product
    Prod,
    /// the mean (of the sources and, with `include_self`, self's value)
    Mean,
    /// the maximum (NaN wins)
    Amax,
    /// the minimum (NaN wins)
    Amin,
}

impl ScatterReduce {
    /// The shader's code (`SUM`, … in `shaders/index.wgsl`).
    pub(crate) fn code(self) -> u32 {
        self as u32
    }
}

/// The shader's code of the last-wins fold of `index_put`.
pub(crate) const REPLACE: u32 = 5;

impl Primitive for Indexing {
    fn name(&self) -> &'static str {
        match self {
            Indexing::Gather { .. } => "gather",
            Indexing::IndexSelect { .. } => "index_select",
            Indexing::ScatterAdd { op, .. } => op,
            Indexing::OneHot(_) => "one_hot",
            Indexing::ScatterReduce { .. } => "scatter_reduce",
            Indexing::ScatterReplace { .. } => "index_put",
        }
    }

    fn forward(&self, x: &[&Tensor]) -> Tensor {
        match *self {
            Indexing::Gather { axis } => gather_forward(x[0], x[1], axis),
            Indexing::IndexSelect { axis } => index_select_forward(x[0], x[1], axis),
            Indexing::ScatterAdd { axis, size, .. } => scatter_add_forward(x[0], x[1], axis, size),
            Indexing::OneHot(n) => one_hot_forward(x[0], n),
            Indexing::ScatterReduce { axis, reduce, include_self } => {
                scatter_reduce_forward(x, axis, reduce.code(), include_self)
            }
            Indexing::ScatterReplace { axis } => scatter_reduce_forward(x, axis, REPLACE, false),
        }
    }

    fn vjp(&self, g: &Tensor, x: &[&Tensor], y: &Tensor, _needs: &[bool]) -> Vec<Option<Tensor>> {
        match *self {
            Indexing::Gather { axis } => vec![Some(gather_vjp(g, x[0], x[1], axis)), None],
            Indexing::IndexSelect { axis } => vec![Some(index_select_vjp(g, x[0], x[1], axis)), None],
            // out = scatter_add(idx, src): ∂src = g gathered at idx
            Indexing::ScatterAdd { axis, .. } => vec![None, Some(g.gather(axis as isize, x[0]))],
            Indexing::OneHot(_) => vec![None],
            Indexing::ScatterReduce { axis, reduce, include_self } => {
                let (ds, dsrc) = scatter_reduce_vjp(g, x, y, axis, reduce, include_self);
                vec![Some(ds), None, Some(dsrc)]
            }
            Indexing::ScatterReplace { axis } => {
                let (ds, dsrc) = scatter_replace_vjp(g, x, axis);
                vec![Some(ds), None, Some(dsrc)]
            }
        }
    }

    /// Linear in the values (indices are constants).
    fn jvp(&self, t: &[Option<&Tensor>], x: &[&Tensor], y: &Tensor) -> Option<Tensor> {
        match self {
            Indexing::Gather { .. } | Indexing::IndexSelect { .. } => multilinear_jvp(self, t, x, &[0]),
            Indexing::ScatterAdd { .. } => multilinear_jvp(self, t, x, &[1]),
            Indexing::OneHot(_) => None,
            // sum, mean and replace are linear in (self, src) together
            Indexing::ScatterReduce { reduce: ScatterReduce::Sum | ScatterReduce::Mean, .. }
            | Indexing::ScatterReplace { .. } => {
                let ts = t[0].cloned().unwrap_or_else(|| x[0].detach().zeros_like());
                let tsrc = t[2].cloned().unwrap_or_else(|| x[2].detach().zeros_like());
                Some(apply(self.clone(), &[&ts, x[1], &tsrc]))
            }
            // prod, amax, amin: the transpose of the VJP rule
            Indexing::ScatterReduce { .. } => transposed_jvp(|u| self.vjp(u, x, y, &[true, false, true]), t, x, y),
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct IndexParams {
    numel: u32,
    rank: u32,
    axis: u32,
    n_axis: u32,
    off_x: u32,
    off_idx: u32,
    n_loop: u32,
    tag: u32,
    shape: [u32; MAX_RANK],
    str_x: [u32; MAX_RANK],
    str_idx: [u32; MAX_RANK],
    div_magic: [u32; MAX_RANK],
    div_shift: [u32; MAX_RANK],
}

/// Panics unless the index kernels take `t`'s rank.
#[track_caller]
fn within_rank(op: &str, t: &Tensor) {
    if t.rank() > MAX_RANK {
        panic!(
            "wgrad: {op}: a tensor of shape {:?} (rank {}); the index kernels take {MAX_RANK} dimensions at most",
            t.shape(),
            t.rank()
        );
    }
}

/// Records `kernel` over `out` (contiguous). `x` may be absent (one_hot).
#[allow(clippy::too_many_arguments)]
fn launch(
    kernel: Kernel,
    out: &Tensor,
    x: Option<&Tensor>,
    idx: &Tensor,
    idx_strides: &[usize],
    axis: usize,
    n_axis: usize,
    n_loop: usize,
) {
    let n = out.numel();
    if n == 0 {
        return;
    }
    let (flag, tag) = out.device().inner.index_check();
    let params = IndexParams {
        numel: n as u32,
        rank: out.rank() as u32,
        axis: axis as u32,
        n_axis: n_axis as u32,
        off_x: x.map_or(0, |x| x.layout().offset as u32),
        off_idx: idx.layout().offset as u32,
        n_loop: n_loop as u32,
        tag,
        shape: pack(out.shape()),
        str_x: pack(x.map_or(&[][..], |x| x.strides())),
        str_idx: pack(idx_strides),
        div_magic: pack_divisors(out.shape()).0,
        div_shift: pack_divisors(out.shape()).1,
    };
    let mut bindings = Vec::with_capacity(4);
    if let Some(x) = x {
        bindings.push(("x", x.storage()));
    }
    bindings.extend([("idx", idx.storage()), ("out", out.storage()), ("flags", &flag)]);
    out.device().inner.record(&kernel, &bindings, bytemuck::bytes_of(&params), grid(n.div_ceil(256) as u32));
}

fn gather_forward(x: &Tensor, idx: &Tensor, axis: usize) -> Tensor {
    let out = Tensor::empty(x.device(), "gather", idx.shape(), x.dtype());
    launch(Kernel::new(Shader::Index, "gather"), &out, Some(x), idx, idx.strides(), axis, x.shape()[axis], 0);
    out
}

fn index_select_forward(x: &Tensor, idx: &Tensor, axis: usize) -> Tensor {
    let mut shape = x.shape().to_vec();
    shape[axis] = idx.shape()[0];
    let out = Tensor::empty(x.device(), "index_select", &shape, x.dtype());
    // The index vector, broadcast across every other axis.
    let mut strides = vec![0; shape.len()];
    strides[axis] = idx.strides()[0];
    launch(Kernel::new(Shader::Index, "gather"), &out, Some(x), idx, &strides, axis, x.shape()[axis], 0);
    out
}

fn scatter_add_forward(idx: &Tensor, src: &Tensor, axis: usize, size: usize) -> Tensor {
    let mut shape = src.shape().to_vec();
    shape[axis] = size;
    let out = Tensor::empty(src.device(), "scatter_add", &shape, DType::F32);
    launch(
        Kernel::new(Shader::Index, "scatter_add"),
        &out,
        Some(src),
        idx,
        idx.strides(),
        axis,
        size,
        src.shape()[axis],
    );
    out
}

/// `x` with its entries along `axis` reordered, `out[.., j, ..] =
/// x[.., order[j], ..]`: the index vector is uploaded, then one `gather`
/// dispatch (flip and roll).
pub(crate) fn reorder_along(x: &Tensor, axis: usize, order: &[u32]) -> Tensor {
    let idx = Tensor::from_slice(x.device(), order, &[order.len()]);
    index_select_forward(x, &idx, axis)
}

/// inputs: self, indices, src. A copy of self, then the scatter loop
/// folding into it by `code`: two dispatches.
fn scatter_reduce_forward(x: &[&Tensor], axis: usize, code: u32, include_self: bool) -> Tensor {
    let (base, idx, src) = (x[0], x[1], x[2]);
    let out = Tensor::empty(base.device(), "scatter_reduce", base.shape(), DType::F32);
    copy_into(&out, base);
    let kernel =
        Kernel::new(Shader::Index, "scatter_reduce").with("REDUCE", code).with("INCLUDE_SELF", include_self as u32);
    launch(kernel, &out, Some(src), idx, idx.strides(), axis, base.shape()[axis], src.shape()[axis]);
    out
}

fn one_hot_forward(idx: &Tensor, n: usize) -> Tensor {
    let mut shape = idx.shape().to_vec();
    shape.push(n);
    let out = Tensor::empty(idx.device(), "one_hot", &shape, DType::F32);
    let mut strides = idx.strides().to_vec();
    strides.push(0);
    launch(Kernel::new(Shader::Index, "one_hot"), &out, None, idx, &strides, idx.rank(), n, 0);
    out
}

impl Tensor {
    /// Selects entries along `axis` by a 1-d index tensor (u32/i32):
    /// `out[.., j, ..] = self[.., idx[j], ..]`.
    #[track_caller]
    pub fn index_select(&self, axis: isize, idx: &Tensor) -> Tensor {
        need_indices("index_select", idx);
        same_device("index_select", &[self, idx]);
        within_rank("index_select", self);
        let a = shape::axis("index_select", self.shape(), axis);
        if idx.rank() != 1 {
            panic!("wgrad: index_select: indices must be 1-d, got shape {:?}", idx.shape());
        }
        apply(Indexing::IndexSelect { axis: a }, &[self, idx])
    }

    /// Gathers along `axis`: `out[i][j] = self[i][idx[i][j]]` (for axis 1),
    /// as `torch.gather`. `idx` has the rank of `self` and no larger size on
    /// the other axes; the result has the shape of `idx`.
    #[track_caller]
    pub fn gather(&self, axis: isize, idx: &Tensor) -> Tensor {
        need_indices("gather", idx);
        same_device("gather", &[self, idx]);
        within_rank("gather", self);
        let a = shape::axis("gather", self.shape(), axis);
        let fits = idx.rank() == self.rank() && (0..self.rank()).all(|d| d == a || idx.shape()[d] <= self.shape()[d]);
        if !fits {
            panic!(
                "wgrad: gather: indices of shape {:?} do not fit shape {:?} along axis {axis}",
                idx.shape(),
                self.shape()
            );
        }
        apply(Indexing::Gather { axis: a }, &[self, idx])
    }

    /// `self` plus `src` summed into the positions `idx` names along `axis`:
    /// `out[.., idx[.., j, ..], ..] += src[.., j, ..]` (as `torch.scatter_add`).
    /// `idx` and `src` share a shape that matches `self` except along `axis`.
    #[track_caller]
    pub fn scatter_add(&self, axis: isize, idx: &Tensor, src: &Tensor) -> Tensor {
        let a = scatter_checks("scatter_add", self, axis, idx, src);
        self + apply(Indexing::ScatterAdd { axis: a, size: self.shape()[a], op: "scatter_add" }, &[idx, src])
    }

    /// `self` plus the slices of `src` along `axis` summed into the
    /// positions a 1-d index vector names, as PyTorch's `index_add_` (out of
    /// place, without `alpha`: scale `src`): `out[.., idx[j], ..] +=
    /// src[.., j, ..]`. `src` matches `self` except along `axis`, where it
    /// has `idx.len()` entries. The scatter kernel over a broadcast view of
    /// the indices and an add: two dispatches. An index beyond the axis
    /// (or a negative i32) is reported at the next read.
    #[track_caller]
    pub fn index_add(&self, axis: isize, idx: &Tensor, src: &Tensor) -> Tensor {
        need_f32("index_add", self);
        need_f32("index_add", src);
        need_indices("index_add", idx);
        within_rank("index_add", self);
        same_device("index_add", &[self, idx, src]);
        let a = shape::axis("index_add", self.shape(), axis);
        let fits = idx.rank() == 1
            && src.rank() == self.rank()
            && src.shape()[a] == idx.numel()
            && (0..self.rank()).all(|d| d == a || src.shape()[d] == self.shape()[d]);
        if !fits {
            panic!(
                "wgrad: index_add: indices {:?} and source {:?} do not fit {:?} along axis {axis} (1-d indices, one per source slice)",
                idx.shape(),
                src.shape(),
                self.shape()
            );
        }
        self.index_add_as("index_add", a, idx, src)
    }

    /// index_add without the checks, its kernel named `op` in messages.
    #[track_caller]
    fn index_add_as(&self, op: &'static str, axis: usize, idx: &Tensor, src: &Tensor) -> Tensor {
        let mut shape = vec![1; self.rank()];
        shape[axis] = idx.numel();
        let spread = idx.reshape(&shape).expand(src.shape());
        self + apply(Indexing::ScatterAdd { axis, size: self.shape()[axis], op }, &[&spread, src])
    }

    /// `self` with the entries of `src` folded into the positions `idx`
    /// names along `axis`, as `torch.Tensor.scatter_reduce` (out of place):
    /// `out[.., idx[.., j, ..], ..] = reduce(…, src[.., j, ..])`. With
    /// `include_self` self's value is one of the operands; without, an
    /// element some source lands on forgets it, and one none lands on
    /// keeps it. `idx` and `src` share a shape that matches `self` except
    /// along `axis` (PyTorch also allows smaller indices). Two dispatches: a
    /// copy of self and the scatter loop (`shaders/index.wgsl`), each
    /// element folding its sources in order (deterministic).
    ///
    /// Gradients as PyTorch defines them: for `Amax`/`Amin` split evenly
    /// among the operands equal to the result (self counts when it is an
    /// operand and equal; PyTorch also counts a non-operand self that
    /// happens to be equal, and loses its share); for `Mean` divided by
    /// the count; for `Prod` the product of the other operands, exact at
    /// zeros (one zero: the product of the rest; more: 0) but with one
    /// division where the operand is not zero, as PyTorch's.
    #[track_caller]
    pub fn scatter_reduce(
        &self,
        axis: isize,
        idx: &Tensor,
        src: &Tensor,
        reduce: ScatterReduce,
        include_self: bool,
    ) -> Tensor {
        let a = scatter_checks("scatter_reduce", self, axis, idx, src);
        apply(Indexing::ScatterReduce { axis: a, reduce, include_self }, &[self, idx, src])
    }

    /// `self` with `values` written (or, with `accumulate`, added) at the
    /// positions a tuple of index tensors names in the first
    /// `indices.len()` dimensions, as PyTorch's `index_put_` (out of place)
    /// and numpy's `x[i0, i1, …] = v`: the index tensors broadcast to a
    /// shape B, element b names `self[i0[b], i1[b], …, :]`, and `values`
    /// broadcasts to B followed by the remaining dimensions of `self`.
    /// Indexing by tensors in later dimensions only, by masks, or by
    /// negative indices is not supported (a negative i32 is out of range,
    /// reported at the next read, as is any index beyond its dimension).
    /// Where an index repeats, `accumulate` sums the values; otherwise the
    /// last (in row-major order of B) wins, as in numpy, and alone gets the
    /// gradient. Dispatches: with one index tensor, the copies of
    /// reshaping `values` (none if contiguous) and two (`accumulate`: the
    /// scatter and an add; otherwise a copy of self and the scatter loop);
    /// each further index tensor adds 5 integer elementwise ops to linearise.
    #[track_caller]
    pub fn index_put(&self, indices: &[&Tensor], values: &Tensor, accumulate: bool) -> Tensor {
        need_f32("index_put", self);
        need_f32("index_put", values);
        let k = indices.len();
        if k == 0 || k > self.rank() {
            panic!(
                "wgrad: index_put: {k} index tensors for shape {:?} (between 1 and its rank {})",
                self.shape(),
                self.rank()
            );
        }
        for t in indices {
            need_indices("index_put", t);
            same_device("index_put", &[self, t, values]);
        }
        let b = indices.iter().try_fold(Vec::new(), |b, t| broadcast_shapes(&b, t.shape()));
        let Some(b) = b else {
            let shapes: Vec<_> = indices.iter().map(|t| t.shape().to_vec()).collect();
            panic!("wgrad: index_put: index shapes {shapes:?} do not broadcast together");
        };
        let rest = &self.shape()[k..];
        let target = [&b[..], rest].concat();
        if broadcast_shapes(values.shape(), &target).as_deref() != Some(&target[..]) {
            panic!(
                "wgrad: index_put: values of shape {:?} do not broadcast to {target:?} (the indices' {b:?}, then {rest:?} of {:?})",
                values.shape(),
                self.shape()
            );
        }
        let m = numel(&b);
        let nk = numel(&self.shape()[..k]);
        let flat = self.reshape(&[&[nk], rest].concat());
        within_rank("index_put", &flat);
        let lin = linear_index(indices, &self.shape()[..k], &b).reshape(&[m]);
        let v = values.expand(&target).reshape(&[&[m], rest].concat());
        let out = if accumulate {
            flat.index_add_as("index_put", 0, &lin, &v)
        } else {
            let mut shape = vec![1; v.rank()];
            shape[0] = m;
            let spread = lin.reshape(&shape).expand(v.shape());
            apply(Indexing::ScatterReplace { axis: 0 }, &[&flat, &spread, &v])
        };
        out.reshape(self.shape())
    }

    /// One-hot encoding of class indices: a new last axis of `n` classes, f32.
    #[track_caller]
    pub fn one_hot(&self, n: usize) -> Tensor {
        need_indices("one_hot", self);
        if self.rank() >= MAX_RANK {
            panic!(
                "wgrad: one_hot: indices of shape {:?} would make a result of rank {}; the index kernels take {MAX_RANK} dimensions at most",
                self.shape(),
                self.rank() + 1
            );
        }
        apply(Indexing::OneHot(n), &[self])
    }
}

/// The checks of scatter_add and scatter_reduce; the resolved axis.
#[track_caller]
fn scatter_checks(op: &str, x: &Tensor, axis: isize, idx: &Tensor, src: &Tensor) -> usize {
    need_f32(op, x);
    need_f32(op, src);
    need_indices(op, idx);
    within_rank(op, x);
    same_device(op, &[x, idx, src]);
    let a = shape::axis(op, x.shape(), axis);
    let fits = idx.shape() == src.shape()
        && src.rank() == x.rank()
        && (0..x.rank()).all(|d| d == a || src.shape()[d] == x.shape()[d]);
    if !fits {
        panic!(
            "wgrad: {op}: indices {:?} and source {:?} must share a shape matching {:?} off axis {axis}",
            idx.shape(),
            src.shape(),
            x.shape()
        );
    }
    a
}

/// The row-major index into the first `dims.len()` dimensions of the
/// elements the index tensors name (u32, of shape `b`), or the number of
/// those elements (out of range, so flagged) where one index is beyond
/// its dimension: a per-dimension check keeps an index that overflows into
/// the next row from passing.
#[track_caller]
fn linear_index(indices: &[&Tensor], dims: &[usize], b: &[usize]) -> Tensor {
    if let [only] = indices {
        return only.expand(b);
    }
    let mut lin: Option<Tensor> = None;
    let mut bad: Option<Tensor> = None;
    for (d, t) in indices.iter().enumerate() {
        let i = t.cast(DType::U32);
        let term = &i * numel(&dims[d + 1..]) as u32;
        let over = i.ge(dims[d] as u32);
        lin = Some(lin.map_or(term.clone(), |l| l + term));
        bad = Some(bad.map_or(over.clone(), |o| o + over));
    }
    let (lin, bad) = (lin.expect("k ≥ 2"), bad.expect("k ≥ 2"));
    let beyond = Tensor::from_slice(lin.device(), &[numel(dims) as u32], &[]);
    bad.where_(&beyond, &lin).expand(b)
}

// ---- VJP rules -----------------------------------------------------------------

/// out = gather(x, idx): ∂x = scatter_add of g at idx (zero elsewhere).
fn gather_vjp(g: &Tensor, x: &Tensor, idx: &Tensor, axis: usize) -> Tensor {
    let dx = apply(Indexing::ScatterAdd { axis, size: x.shape()[axis], op: "scatter_add" }, &[idx, g]);
    // idx may be smaller than x off the axis: the rest gets no gradient
    let pads: Vec<(usize, usize)> = dx.shape().iter().zip(x.shape()).map(|(&d, &n)| (0, n - d)).collect();
    if pads.iter().any(|&(_, p)| p > 0) { dx.pad(&pads, 0.0) } else { dx }
}

/// Up to this many elements (64 MiB of f32), `index_select`'s gradient is a
/// product with the one-hot matrix of its indices.
const ONE_HOT_VJP: usize = 1 << 24;

/// out = index_select(x, idx): ∂x = g summed into the rows idx names. While
/// the one-hot matrix of idx is small, that is the product onehot(idx)ᵀ·g
/// along the axis (an embedding's gradient): the generated matmul, which
/// adds the same terms in the same order as the scatter but with far fewer
/// loads of idx (the scatter loops over every index for each output).
fn index_select_vjp(g: &Tensor, x: &Tensor, idx: &Tensor, axis: usize) -> Tensor {
    let (rows, n) = (x.shape()[axis], idx.numel());
    if rows * n <= ONE_HOT_VJP {
        // g with the axis first, as [n, rest]
        let front = g.transpose(0, axis as isize);
        let mut shape = front.shape().to_vec();
        let flat = front.reshape(&[n, g.numel() / n.max(1)]);
        shape[0] = rows;
        let summed = idx.one_hot(rows).t().matmul(&flat);
        return summed.reshape(&shape).transpose(0, axis as isize);
    }
    let mut shape = vec![1; g.rank()];
    shape[axis] = idx.numel();
    let spread = idx.reshape(&shape).expand(g.shape());
    apply(Indexing::ScatterAdd { axis, size: x.shape()[axis], op: "scatter_add" }, &[&spread, g])
}

/// How many sources land on each element of `x` (f32 counts).
fn hits(x: &Tensor, idx: &Tensor, src: &Tensor, axis: usize) -> Tensor {
    let one = Tensor::ones(src.device(), &[]).expand(src.shape());
    apply(Indexing::ScatterAdd { axis, size: x.shape()[axis], op: "scatter_add" }, &[idx, &one])
}

/// out = scatter_reduce(x, idx, src): (∂x, ∂src).
fn scatter_reduce_vjp(
    g: &Tensor,
    x: &[&Tensor],
    y: &Tensor,
    axis: usize,
    reduce: ScatterReduce,
    include: bool,
) -> (Tensor, Tensor) {
    let (x, idx, src) = (x[0], x[1], x[2]);
    let a = axis as isize;
    let count = hits(x, idx, src, axis);
    let missed = count.eq(0.0);
    // without self, self's value survives (with slope 1) where no source lands
    let untouched = || missed.where_(g, 0.0);
    match reduce {
        // y = x + Σ src (or Σ src where hit): ∂x = g, ∂src = g at its destination
        ScatterReduce::Sum => (if include { g.clone() } else { untouched() }, g.gather(a, idx)),
        // y = (x + Σ src)/(n + 1) (or Σ src / n): each operand gets g / count
        ScatterReduce::Mean => {
            let n = if include { &count + 1.0 } else { count.maximum(1.0) };
            let share = g / &n;
            let dsrc = share.gather(a, idx);
            (if include { share } else { untouched() }, dsrc)
        }
        // y = max of the operands: g split evenly among those equal to y
        ScatterReduce::Amax | ScatterReduce::Amin => {
            let src_is = src.eq(&y.gather(a, idx)).cast(DType::F32);
            let self_is = if include { x.eq(y) } else { missed.clone() }.cast(DType::F32);
            let ties = self_is.scatter_add(a, idx, &src_is);
            let share = g / &ties.maximum(1.0);
            (&self_is * &share, src_is * share.gather(a, idx))
        }
        // y = Π operands: ∂ operand = g · Π of the others. Zeros are masked
        // to 1 in P (the product of the non-zero operands) and counted in Z:
        // a non-zero operand v gets g·P/v if Z = 0, else 0; a zero operand
        // gets g·P if it is the only zero, else 0.
        ScatterReduce::Prod => {
            let src_zero = src.eq(0.0);
            let src_nz = src_zero.where_(1.0, src);
            let self_zero = x.eq(0.0);
            let self_nz = if include { self_zero.where_(1.0, x) } else { x.clone() };
            let p = apply(
                Indexing::ScatterReduce { axis, reduce: ScatterReduce::Prod, include_self: include },
                &[&self_nz, idx, &src_nz],
            );
            let zeros_src = src_zero.cast(DType::F32);
            let z = if include { self_zero.cast(DType::F32) } else { x.detach().zeros_like() }
                .scatter_add(a, idx, &zeros_src);
            let gp = g * &p;
            let excluding = |zero: &Tensor, nz: &Tensor, gp: &Tensor, z: &Tensor| {
                zero.where_(&z.eq(1.0).where_(gp, 0.0), &z.eq(0.0).where_(&(gp / nz), 0.0))
            };
            let dsrc = excluding(&src_zero, &src_nz, &gp.gather(a, idx), &z.gather(a, idx));
            let dx = if include { excluding(&self_zero, &self_nz, &gp, &z) } else { untouched() };
            (dx, dsrc)
        }
    }
}

/// out = x with src written where idx says, the last source winning:
/// ∂x = g where no source lands, ∂src = g at its destination for the
/// winners (found by scattering each source's position and reading back).
fn scatter_replace_vjp(g: &Tensor, x: &[&Tensor], axis: usize) -> (Tensor, Tensor) {
    let (x, idx, src) = (x[0], x[1], x[2]);
    let a = axis as isize;
    let n = src.shape()[axis];
    let mut shape = vec![1; src.rank()];
    shape[axis] = n;
    let at: Vec<f32> = (0..n).map(|j| j as f32).collect();
    let position = Tensor::from_slice(src.device(), &at, &shape).expand(src.shape());
    let none = x.detach().full_like(-1.0);
    let winner = apply(Indexing::ScatterReplace { axis }, &[&none, idx, &position]).gather(a, idx).eq(&position);
    let missed = hits(x, idx, src, axis).eq(0.0);
    (missed.where_(g, 0.0), winner.where_(&g.gather(a, idx), 0.0))
}
