//! Layout primitives and the ops that are one of them. Views (reshape of
//! viewable data, permute, transpose, expand, narrow, squeeze, unsqueeze,
//! and the `Strided` view that strided slices and diagonals are) change
//! metadata only; contiguous, cat, stack, pad and `Embed` (the transpose
//! of a strided view) copy with the strided `copy` kernel of
//! `shaders/elementwise.wgsl`; `Flip` and `Roll` reorder an axis with the
//! `gather` kernel of `shaders/index.wgsl`. The ops built of several of
//! them are in `arrange.rs`.

use crate::autograd::{Primitive, multilinear_jvp};
use crate::ops::elementwise::{copy_into, fill};
use crate::ops::index::reorder_along;
use crate::ops::{apply, same_device};
use crate::shape::{self, Layout, numel};
use crate::tensor::Tensor;

/// The layout primitives: views (no kernel) and copies.
#[derive(Clone, Debug)]
pub(crate) enum LayoutOp {
    Reshape(Vec<usize>),
    Permute(Vec<usize>),
    Expand(Vec<usize>),
    Narrow {
        axis: usize,
        start: usize,
        len: usize,
    },
    Contiguous,
    Pad {
        pads: Vec<(usize, usize)>,
        value: f64,
    },
    Cat {
        axis: usize,
    },
    /// Reverses the listed axes (a gather per axis: strides are unsigned).
    Flip(Vec<usize>),
    /// Rotates each axis by its shift: `out[j] = x[(j − shift) mod n]`.
    Roll {
        shifts: Vec<usize>,
        axes: Vec<usize>,
    },
    /// A view at affine positions of the input's coordinates (slices with a
    /// step, diagonals); `op` names it in messages.
    Strided {
        op: &'static str,
        view: AffineView,
    },
    /// The transpose of `Strided`: zeros of `shape` with the input written
    /// at the view's positions (a fill and a copy).
    Embed {
        op: &'static str,
        view: AffineView,
        shape: Vec<usize>,
    },
}

/// Output coordinate `c` of the view reads input coordinate
/// `base + Σₖ c[k]·dirs[k]`: a layout of any input layout, with strides
/// `dirs[k]·strides`. The views made here are injective (no input element
/// is read twice), so `Embed` is their transpose.
#[derive(Clone, Debug)]
pub(crate) struct AffineView {
    pub shape: Vec<usize>,
    pub base: Vec<usize>,
    pub dirs: Vec<Vec<usize>>,
}

impl AffineView {
    fn of(&self, l: &Layout) -> Layout {
        let dot = |v: &[usize]| v.iter().zip(&l.strides).map(|(a, s)| a * s).sum::<usize>();
        // an empty view may name a base outside the input: it reads nothing
        let offset = if numel(&self.shape) == 0 { l.offset } else { l.offset + dot(&self.base) };
        Layout { shape: self.shape.clone(), strides: self.dirs.iter().map(|d| dot(d)).collect(), offset }
    }
}

impl Primitive for LayoutOp {
    fn name(&self) -> &'static str {
        match self {
            LayoutOp::Reshape(_) => "reshape",
            LayoutOp::Permute(_) => "permute",
            LayoutOp::Expand(_) => "expand",
            LayoutOp::Narrow { .. } => "narrow",
            LayoutOp::Contiguous => "contiguous",
            LayoutOp::Pad { .. } => "pad",
            LayoutOp::Cat { .. } => "cat",
            LayoutOp::Flip(_) => "flip",
            LayoutOp::Roll { .. } => "roll",
            LayoutOp::Strided { op, .. } | LayoutOp::Embed { op, .. } => op,
        }
    }

    fn forward(&self, x: &[&Tensor]) -> Tensor {
        match self {
            LayoutOp::Reshape(shape) => reshape_forward(x[0], shape),
            LayoutOp::Permute(perm) => x[0].with_layout(x[0].layout().permute(perm)),
            LayoutOp::Expand(shape) => x[0].with_layout(x[0].layout().broadcast_to(shape).expect("checked")),
            LayoutOp::Narrow { axis, start, len } => x[0].with_layout(x[0].layout().narrow(*axis, *start, *len)),
            LayoutOp::Contiguous => contiguous_forward(x[0]),
            LayoutOp::Pad { pads, value } => pad_forward(x[0], pads, *value),
            LayoutOp::Cat { axis } => cat_forward(x, *axis),
            LayoutOp::Flip(axes) => axes.iter().fold(x[0].clone(), |y, &a| {
                let n = y.shape()[a] as u32;
                reorder_along(&y, a, &(0..n).rev().collect::<Vec<_>>())
            }),
            LayoutOp::Roll { shifts, axes } => shifts.iter().zip(axes).fold(x[0].clone(), |y, (&s, &a)| {
                let n = y.shape()[a];
                reorder_along(&y, a, &(0..n).map(|j| ((j + n - s) % n) as u32).collect::<Vec<_>>())
            }),
            LayoutOp::Strided { view, .. } => x[0].with_layout(view.of(x[0].layout())),
            LayoutOp::Embed { view, shape, .. } => {
                let out = Tensor::empty(x[0].device(), "embed", shape, x[0].dtype());
                fill(&out, 0);
                copy_into(&out.with_layout(view.of(out.layout())), x[0]);
                out
            }
        }
    }

    fn vjp(&self, g: &Tensor, x: &[&Tensor], _y: &Tensor, needs: &[bool]) -> Vec<Option<Tensor>> {
        match self {
            LayoutOp::Reshape(_) | LayoutOp::Contiguous => vec![Some(g.reshape(x[0].shape()))],
            LayoutOp::Permute(perm) => {
                let mut inverse = vec![0isize; perm.len()];
                for (i, &p) in perm.iter().enumerate() {
                    inverse[p] = i as isize;
                }
                vec![Some(g.permute(&inverse))]
            }
            // the driver sums the broadcast dimensions away
            LayoutOp::Expand(_) => vec![Some(g.clone())],
            LayoutOp::Narrow { axis, start, len } => {
                let mut pads = vec![(0, 0); x[0].rank()];
                pads[*axis] = (*start, x[0].shape()[*axis] - start - len);
                vec![Some(g.pad(&pads, 0.0))]
            }
            LayoutOp::Pad { pads, .. } => {
                let mut inner = g.clone();
                for (d, &(lo, _)) in pads.iter().enumerate() {
                    inner = inner.narrow(d as isize, lo, x[0].shape()[d]);
                }
                vec![Some(inner)]
            }
            LayoutOp::Cat { axis } => {
                let mut start = 0;
                x.iter()
                    .zip(needs)
                    .map(|(t, &need)| {
                        let len = t.shape()[*axis];
                        start += len;
                        need.then(|| g.narrow(*axis as isize, start - len, len))
                    })
                    .collect()
            }
            // flip is its own inverse; a roll's is the opposite roll
            LayoutOp::Flip(_) => vec![Some(apply(self.clone(), &[g]))],
            LayoutOp::Roll { shifts, axes } => {
                let back = shifts.iter().zip(axes).map(|(&s, &a)| (x[0].shape()[a] - s) % x[0].shape()[a]).collect();
                vec![Some(apply(LayoutOp::Roll { shifts: back, axes: axes.clone() }, &[g]))]
            }
            // y = x at the view's positions: ∂x = g there, 0 elsewhere
            LayoutOp::Strided { view, .. } => {
                vec![Some(apply(
                    LayoutOp::Embed { op: "embed", view: view.clone(), shape: x[0].shape().to_vec() },
                    &[g],
                ))]
            }
            // y = zeros with x at the view's positions: ∂x = g read there
            LayoutOp::Embed { view, .. } => {
                vec![Some(apply(LayoutOp::Strided { op: "strided view", view: view.clone() }, &[g]))]
            }
        }
    }

    /// Layout ops are linear: the tangent goes through the same op (a pad
    /// fills with 0, a concatenation takes zeros for the constant parts).
    fn jvp(&self, t: &[Option<&Tensor>], x: &[&Tensor], _y: &Tensor) -> Option<Tensor> {
        match self {
            LayoutOp::Pad { pads, .. } => Some(apply(LayoutOp::Pad { pads: pads.clone(), value: 0.0 }, &[t[0]?])),
            LayoutOp::Cat { .. } => t.iter().any(Option::is_some).then(|| {
                let parts: Vec<Tensor> =
                    t.iter().zip(x).map(|(t, x)| t.cloned().unwrap_or_else(|| x.detach().zeros_like())).collect();
                apply(self.clone(), &parts.iter().collect::<Vec<_>>())
            }),
            _ => multilinear_jvp(self, t, x, &[0]),
        }
    }
}

pub(crate) fn contiguous_forward(x: &Tensor) -> Tensor {
    let out = Tensor::empty(x.device(), "contiguous", x.shape(), x.dtype());
    copy_into(&out, x);
    out
}

/// `t` dense and starting at element 0 of its buffer, as kernels that index
/// without strides or offsets need (a copy only when it is not already).
pub(crate) fn dense_from_zero(t: &Tensor) -> Tensor {
    if t.is_contiguous() && t.layout().offset == 0 { t.clone() } else { contiguous_forward(t) }
}

fn reshape_forward(x: &Tensor, shape: &[usize]) -> Tensor {
    match x.layout().reshape(shape) {
        Some(l) => x.with_layout(l),
        None => {
            let c = contiguous_forward(x);
            c.with_layout(Layout::contiguous(shape))
        }
    }
}

fn pad_forward(x: &Tensor, pads: &[(usize, usize)], value: f64) -> Tensor {
    let shape: Vec<usize> = x.shape().iter().zip(pads).map(|(&n, &(lo, hi))| n + lo + hi).collect();
    let out = Tensor::empty(x.device(), "pad", &shape, x.dtype());
    fill(&out, x.dtype().bits_of(value));
    let mut inner = out.layout().clone();
    for (d, &(lo, _)) in pads.iter().enumerate() {
        inner = inner.narrow(d, lo, x.shape()[d]);
    }
    copy_into(&out.with_layout(inner), x);
    out
}

fn cat_forward(xs: &[&Tensor], axis: usize) -> Tensor {
    let mut shape = xs[0].shape().to_vec();
    shape[axis] = xs.iter().map(|t| t.shape()[axis]).sum();
    let out = Tensor::empty(xs[0].device(), "cat", &shape, xs[0].dtype());
    let mut start = 0;
    for x in xs {
        let len = x.shape()[axis];
        copy_into(&out.with_layout(out.layout().narrow(axis, start, len)), x);
        start += len;
    }
    out
}

impl Tensor {
    /// The same elements with a new shape (a view when the strides allow,
    /// otherwise a copy). One dimension may be `usize::MAX`, inferred from
    /// the others.
    #[track_caller]
    pub fn reshape(&self, shape: &[usize]) -> Tensor {
        let mut shape = shape.to_vec();
        let known: usize = shape.iter().filter(|&&n| n != usize::MAX).product();
        let inferred = shape.iter().filter(|&&n| n == usize::MAX).count();
        if inferred > 1 || (inferred == 1 && (known == 0 || self.numel() % known != 0)) {
            panic!("wgrad: reshape: cannot infer a dimension of {shape:?} from shape {:?}", self.shape());
        }
        if let Some(d) = shape.iter_mut().find(|n| **n == usize::MAX) {
            *d = self.numel() / known;
        }
        if numel(&shape) != self.numel() {
            panic!(
                "wgrad: reshape: shape {:?} ({} elements) cannot become {shape:?} ({} elements)",
                self.shape(),
                self.numel(),
                numel(&shape)
            );
        }
        if shape == self.shape() {
            return self.clone();
        }
        apply(LayoutOp::Reshape(shape), &[self])
    }

    /// Flattens dimensions `start..=end` into one.
    #[track_caller]
    pub fn flatten(&self, start: isize, end: isize) -> Tensor {
        if self.rank() == 0 {
            return self.reshape(&[1]);
        }
        let s = shape::axis("flatten", self.shape(), start);
        let e = shape::axis("flatten", self.shape(), end);
        if s > e {
            panic!("wgrad: flatten: start axis {start} comes after end axis {end} (shape {:?})", self.shape());
        }
        let mut shape = self.shape()[..s].to_vec();
        shape.push(self.shape()[s..=e].iter().product());
        shape.extend_from_slice(&self.shape()[e + 1..]);
        self.reshape(&shape)
    }

    /// Reorders the dimensions: result dimension i is `self`'s `perm[i]`.
    #[track_caller]
    pub fn permute(&self, perm: &[isize]) -> Tensor {
        let mut p = Vec::with_capacity(perm.len());
        for &a in perm {
            p.push(shape::axis("permute", self.shape(), a)); // a loop, not a closure: keeps the caller's location
        }
        let mut seen = p.clone();
        seen.sort_unstable();
        if seen != (0..self.rank()).collect::<Vec<_>>() {
            panic!("wgrad: permute: {perm:?} is not a permutation of the axes of shape {:?}", self.shape());
        }
        if p.iter().enumerate().all(|(i, &a)| i == a) {
            return self.clone();
        }
        apply(LayoutOp::Permute(p), &[self])
    }

    /// Swaps two dimensions.
    #[track_caller]
    pub fn transpose(&self, a: isize, b: isize) -> Tensor {
        let a = shape::axis("transpose", self.shape(), a);
        let b = shape::axis("transpose", self.shape(), b);
        let mut perm: Vec<isize> = (0..self.rank() as isize).collect();
        perm.swap(a, b);
        self.permute(&perm)
    }

    /// Transpose of the last two dimensions (a view).
    #[track_caller]
    pub fn t(&self) -> Tensor {
        if self.rank() < 2 {
            panic!("wgrad: t: needs rank ≥ 2, got shape {:?}", self.shape());
        }
        self.transpose(-2, -1)
    }

    /// Broadcasts to `shape` (numpy rules) without copying: stride 0 on new
    /// and size-1 dimensions.
    #[track_caller]
    pub fn expand(&self, shape: &[usize]) -> Tensor {
        if self.layout().broadcast_to(shape).is_none() {
            panic!("wgrad: expand: shape {:?} cannot broadcast to {shape:?}", self.shape());
        }
        if shape == self.shape() {
            return self.clone();
        }
        apply(LayoutOp::Expand(shape.to_vec()), &[self])
    }

    /// `len` elements of `axis` from `start` (a view).
    #[track_caller]
    pub fn narrow(&self, axis: isize, start: usize, len: usize) -> Tensor {
        let a = shape::axis("narrow", self.shape(), axis);
        let end = start.checked_add(len);
        if end.is_none_or(|end| end > self.shape()[a]) {
            let range = end.map_or(format!("{start}..{start}+{len}"), |end| format!("{start}..{end}"));
            panic!("wgrad: narrow: range {range} is out of bounds for axis {axis} of shape {:?}", self.shape());
        }
        if start == 0 && len == self.shape()[a] {
            return self.clone();
        }
        apply(LayoutOp::Narrow { axis: a, start, len }, &[self])
    }

    /// Removes a size-1 dimension.
    #[track_caller]
    pub fn squeeze(&self, axis: isize) -> Tensor {
        let a = shape::axis("squeeze", self.shape(), axis);
        if self.shape()[a] != 1 {
            panic!("wgrad: squeeze: axis {axis} of shape {:?} has size {}, not 1", self.shape(), self.shape()[a]);
        }
        let mut s = self.shape().to_vec();
        s.remove(a);
        self.reshape(&s)
    }

    /// Inserts a size-1 dimension at `axis` (0..=rank; negative counts from the end).
    #[track_caller]
    pub fn unsqueeze(&self, axis: isize) -> Tensor {
        let rank = self.rank() as isize + 1;
        let a = if axis < 0 { axis + rank } else { axis };
        if a < 0 || a >= rank {
            panic!("wgrad: unsqueeze: axis {axis} is out of range for shape {:?}", self.shape());
        }
        let mut s = self.shape().to_vec();
        s.insert(a as usize, 1);
        self.reshape(&s)
    }

    /// A dense row-major copy, or `self` if it already is one.
    #[track_caller]
    pub fn contiguous(&self) -> Tensor {
        if self.is_contiguous() {
            return self.clone();
        }
        apply(LayoutOp::Contiguous, &[self])
    }

    /// Concatenates along `axis`; all other dimensions must match.
    #[track_caller]
    pub fn cat(tensors: &[&Tensor], axis: isize) -> Tensor {
        let Some(first) = tensors.first() else {
            panic!("wgrad: cat: needs at least one tensor");
        };
        same_device("cat", tensors);
        let a = shape::axis("cat", first.shape(), axis);
        for t in tensors {
            let mut ok = t.rank() == first.rank() && t.dtype() == first.dtype();
            ok &= (0..first.rank()).all(|d| d == a || t.shape()[d] == first.shape()[d]);
            if !ok {
                let shapes: Vec<_> = tensors.iter().map(|t| (t.shape().to_vec(), t.dtype())).collect();
                panic!("wgrad: cat: along axis {axis}, shapes and dtypes {shapes:?} do not agree");
            }
        }
        if tensors.len() == 1 {
            return first.contiguous();
        }
        apply(LayoutOp::Cat { axis: a }, tensors)
    }

    /// Stacks equally shaped tensors along a new axis.
    #[track_caller]
    pub fn stack(tensors: &[&Tensor], axis: isize) -> Tensor {
        let Some(first) = tensors.first() else {
            panic!("wgrad: stack: needs at least one tensor");
        };
        if let Some(t) = tensors.iter().find(|t| t.shape() != first.shape()) {
            panic!("wgrad: stack: shapes {:?} and {:?} differ", first.shape(), t.shape());
        }
        let parts: Vec<Tensor> = tensors.iter().map(|t| t.unsqueeze(axis)).collect();
        let refs: Vec<&Tensor> = parts.iter().collect();
        Tensor::cat(&refs, axis)
    }

    /// Pads each dimension with (before, after) elements of `value`.
    #[track_caller]
    pub fn pad(&self, pads: &[(usize, usize)], value: f64) -> Tensor {
        if pads.len() != self.rank() {
            panic!(
                "wgrad: pad: {} (before, after) pairs for shape {:?} of rank {}",
                pads.len(),
                self.shape(),
                self.rank()
            );
        }
        apply(LayoutOp::Pad { pads: pads.to_vec(), value }, &[self])
    }
}
