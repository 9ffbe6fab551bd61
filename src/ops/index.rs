//! Indexing: gather, index_select, scatter_add, one_hot.
//! Kernels: `shaders/index.wgsl`.

use bytemuck::{Pod, Zeroable};

use crate::autograd::{Primitive, multilinear_jvp};
use crate::dtype::DType;
use crate::ops::{apply, need_f32, need_indices, same_device};
use crate::runtime::{Kernel, Shader, grid};
use crate::shape::{self, MAX_RANK, pack, pack_divisors};
use crate::tensor::Tensor;

/// The indexing primitives.
#[derive(Clone, Debug)]
pub(crate) enum Indexing {
    /// inputs: x, indices
    Gather { axis: usize },
    /// inputs: x, 1-d indices
    IndexSelect { axis: usize },
    /// inputs: indices, src; output has `size` along `axis`, zeros elsewhere
    ScatterAdd { axis: usize, size: usize },
    /// input: class indices; output: a new last axis of `n` classes
    OneHot(usize),
}

impl Primitive for Indexing {
    fn name(&self) -> &'static str {
        match self {
            Indexing::Gather { .. } => "gather",
            Indexing::IndexSelect { .. } => "index_select",
            Indexing::ScatterAdd { .. } => "scatter_add",
            Indexing::OneHot(_) => "one_hot",
        }
    }

    fn forward(&self, x: &[&Tensor]) -> Tensor {
        match *self {
            Indexing::Gather { axis } => gather_forward(x[0], x[1], axis),
            Indexing::IndexSelect { axis } => index_select_forward(x[0], x[1], axis),
            Indexing::ScatterAdd { axis, size } => scatter_add_forward(x[0], x[1], axis, size),
            Indexing::OneHot(n) => one_hot_forward(x[0], n),
        }
    }

    fn vjp(&self, g: &Tensor, x: &[&Tensor], _y: &Tensor, _needs: &[bool]) -> Vec<Option<Tensor>> {
        match *self {
            Indexing::Gather { axis } => vec![Some(gather_vjp(g, x[0], x[1], axis)), None],
            Indexing::IndexSelect { axis } => vec![Some(index_select_vjp(g, x[0], x[1], axis)), None],
            // out = scatter_add(idx, src): ∂src = g gathered at idx
            Indexing::ScatterAdd { axis, .. } => vec![None, Some(g.gather(axis as isize, x[0]))],
            Indexing::OneHot(_) => vec![None],
        }
    }

    /// Linear in the values (indices are constants).
    fn jvp(&self, t: &[Option<&Tensor>], x: &[&Tensor], _y: &Tensor) -> Option<Tensor> {
        match self {
            Indexing::Gather { .. } | Indexing::IndexSelect { .. } => multilinear_jvp(self, t, x, &[0]),
            Indexing::ScatterAdd { .. } => multilinear_jvp(self, t, x, &[1]),
            Indexing::OneHot(_) => None,
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

/// Records `entry` over `out` (contiguous). `x` may be absent (one_hot).
#[allow(clippy::too_many_arguments)]
fn launch(
    entry: &'static str,
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
    let kernel = Kernel::new(Shader::Index, entry);
    out.device().inner.record(&kernel, &bindings, bytemuck::bytes_of(&params), grid(n.div_ceil(256) as u32));
}

fn gather_forward(x: &Tensor, idx: &Tensor, axis: usize) -> Tensor {
    let out = Tensor::empty(x.device(), "gather", idx.shape(), x.dtype());
    launch("gather", &out, Some(x), idx, idx.strides(), axis, x.shape()[axis], 0);
    out
}

fn index_select_forward(x: &Tensor, idx: &Tensor, axis: usize) -> Tensor {
    let mut shape = x.shape().to_vec();
    shape[axis] = idx.shape()[0];
    let out = Tensor::empty(x.device(), "index_select", &shape, x.dtype());
    // The index vector, broadcast across every other axis.
    let mut strides = vec![0; shape.len()];
    strides[axis] = idx.strides()[0];
    launch("gather", &out, Some(x), idx, &strides, axis, x.shape()[axis], 0);
    out
}

fn scatter_add_forward(idx: &Tensor, src: &Tensor, axis: usize, size: usize) -> Tensor {
    let mut shape = src.shape().to_vec();
    shape[axis] = size;
    let out = Tensor::empty(src.device(), "scatter_add", &shape, DType::F32);
    launch("scatter_add", &out, Some(src), idx, idx.strides(), axis, size, src.shape()[axis]);
    out
}

fn one_hot_forward(idx: &Tensor, n: usize) -> Tensor {
    let mut shape = idx.shape().to_vec();
    shape.push(n);
    let out = Tensor::empty(idx.device(), "one_hot", &shape, DType::F32);
    let mut strides = idx.strides().to_vec();
    strides.push(0);
    launch("one_hot", &out, None, idx, &strides, idx.rank(), n, 0);
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
        need_f32("scatter_add", self);
        need_f32("scatter_add", src);
        need_indices("scatter_add", idx);
        within_rank("scatter_add", self);
        same_device("scatter_add", &[self, idx, src]);
        let a = shape::axis("scatter_add", self.shape(), axis);
        let fits = idx.shape() == src.shape()
            && src.rank() == self.rank()
            && (0..self.rank()).all(|d| d == a || src.shape()[d] == self.shape()[d]);
        if !fits {
            panic!(
                "wgrad: scatter_add: indices {:?} and source {:?} must share a shape matching {:?} off axis {axis}",
                idx.shape(),
                src.shape(),
                self.shape()
            );
        }
        self + apply(Indexing::ScatterAdd { axis: a, size: self.shape()[a] }, &[idx, src])
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

// ---- VJP rules -----------------------------------------------------------------

/// out = gather(x, idx): ∂x = scatter_add of g at idx (zero elsewhere).
fn gather_vjp(g: &Tensor, x: &Tensor, idx: &Tensor, axis: usize) -> Tensor {
    let dx = apply(Indexing::ScatterAdd { axis, size: x.shape()[axis] }, &[idx, g]);
    // idx may be smaller than x off the axis: the rest gets no gradient
    let pads: Vec<(usize, usize)> = dx.shape().iter().zip(x.shape()).map(|(&d, &n)| (0, n - d)).collect();
    if pads.iter().any(|&(_, p)| p > 0) { dx.pad(&pads, 0.0) } else { dx }
}

/// out = index_select(x, idx): ∂x = g summed into the rows idx names.
fn index_select_vjp(g: &Tensor, x: &Tensor, idx: &Tensor, axis: usize) -> Tensor {
    let mut shape = vec![1; g.rank()];
    shape[axis] = idx.numel();
    let spread = idx.reshape(&shape).expand(g.shape());
    apply(Indexing::ScatterAdd { axis, size: x.shape()[axis] }, &[&spread, g])
}
