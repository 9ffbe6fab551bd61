//! Layout ops. Views (reshape of viewable data, permute, transpose, expand,
//! narrow, squeeze, unsqueeze, strided slices, diagonals, split and chunk)
//! change metadata only; contiguous, cat, stack, pad and the transpose of a
//! strided view (`Embed`) copy with the strided `copy` kernel of
//! `shaders/elementwise.wgsl`; flip and roll reorder an axis with the
//! `gather` kernel of `shaders/index.wgsl`.

use crate::autograd::{Primitive, multilinear_jvp};
use crate::dtype::DType;
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
    /// Reverses the order of the elements along `axes`, as `torch.flip`.
    /// A copy, as PyTorch's (numpy's `flip` is a view with negative
    /// strides, which wgrad's layouts do not have): one `gather` dispatch
    /// per axis longer than 1. Its gradient is the flip of `g`.
    ///
    /// ```
    /// # use wgrad::{Device, Tensor};
    /// # let dev = Device::new()?;
    /// let x = Tensor::from_slice(&dev, &[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]);
    /// assert_eq!(x.flip(&[1]).to_vec::<f32>()?, vec![3.0, 2.0, 1.0, 6.0, 5.0, 4.0]);
    /// # Ok::<(), wgrad::Error>(())
    /// ```
    #[track_caller]
    pub fn flip(&self, axes: &[isize]) -> Tensor {
        let axes = shape::axes("flip", self.shape(), axes);
        let axes: Vec<usize> = axes.into_iter().filter(|&a| self.shape()[a] > 1).collect();
        if axes.is_empty() || self.numel() == 0 {
            return self.clone();
        }
        within_index_rank("flip", self);
        apply(LayoutOp::Flip(axes), &[self])
    }

    /// Rotates the elements along each of `axes` by its entry of `shifts`
    /// (negative shifts rotate backwards), as `torch.roll`:
    /// `out[(i + shift) mod n] = x[i]`. With no axes, the flattened tensor
    /// is rolled by the one shift and the shape restored. A copy: one
    /// `gather` dispatch per axis whose shift is not a multiple of its size
    /// (a flattened roll of a non-contiguous tensor copies it first).
    #[track_caller]
    pub fn roll(&self, shifts: &[isize], axes: &[isize]) -> Tensor {
        if axes.is_empty() {
            if shifts.len() != 1 {
                panic!("wgrad: roll: a flattened roll takes one shift, got {shifts:?} for shape {:?}", self.shape());
            }
            return self.reshape(&[self.numel()]).roll(shifts, &[0]).reshape(self.shape());
        }
        if shifts.len() != axes.len() {
            panic!(
                "wgrad: roll: {} shifts {shifts:?} for {} axes {axes:?} of shape {:?}",
                shifts.len(),
                axes.len(),
                self.shape()
            );
        }
        let mut resolved = Vec::with_capacity(axes.len());
        for &a in axes {
            resolved.push(shape::axis("roll", self.shape(), a)); // a loop: keeps the caller's location
        }
        let (mut ss, mut aa) = (Vec::new(), Vec::new());
        for (&s, &a) in shifts.iter().zip(&resolved) {
            let n = self.shape()[a] as isize;
            let s = if n == 0 { 0 } else { s.rem_euclid(n) as usize };
            if s == 0 {
                continue;
            }
            // a repeated axis rolls by the sum of its shifts
            match aa.iter().position(|&b| b == a) {
                Some(k) => ss[k] = (ss[k] + s) % n as usize,
                None => {
                    aa.push(a);
                    ss.push(s);
                }
            }
        }
        let keep: Vec<bool> = ss.iter().map(|&s| s != 0).collect();
        let (ss, aa): (Vec<usize>, Vec<usize>) =
            ss.into_iter().zip(aa).zip(keep).filter(|(_, k)| *k).map(|(p, _)| p).unzip();
        if aa.is_empty() {
            return self.clone();
        }
        within_index_rank("roll", self);
        apply(LayoutOp::Roll { shifts: ss, axes: aa }, &[self])
    }

    /// Repeats the tensor `reps[d]` times along each dimension d, as
    /// `torch.Tensor.repeat` (numpy's `tile` when `reps` has at least the
    /// tensor's rank): `reps` may be longer than the rank (the tensor is
    /// read as having leading size-1 dimensions), not shorter. A
    /// composition: an expand of an interleaved reshape, then one copy (no
    /// dispatch when every rep is 1); the gradient sums the copies.
    #[track_caller]
    pub fn repeat(&self, reps: &[usize]) -> Tensor {
        if reps.len() < self.rank() {
            panic!(
                "wgrad: repeat: {} repetitions {reps:?} for shape {:?} of rank {} (give at least one per dimension; tile pads them)",
                reps.len(),
                self.shape(),
                self.rank()
            );
        }
        let mut shape = vec![1; reps.len() - self.rank()];
        shape.extend_from_slice(self.shape());
        let interleaved: Vec<usize> = shape.iter().flat_map(|&n| [1, n]).collect();
        let expanded: Vec<usize> = shape.iter().zip(reps).flat_map(|(&n, &r)| [r, n]).collect();
        let out: Vec<usize> = shape.iter().zip(reps).map(|(&n, &r)| n * r).collect();
        self.reshape(&interleaved).expand(&expanded).reshape(&out)
    }

    /// numpy's and PyTorch's `tile`: as [`repeat`](Tensor::repeat), but
    /// `reps` shorter than the rank is padded with leading 1s.
    #[track_caller]
    pub fn tile(&self, reps: &[usize]) -> Tensor {
        let mut padded = vec![1; self.rank().saturating_sub(reps.len())];
        padded.extend_from_slice(reps);
        self.repeat(&padded)
    }

    /// Views of consecutive pieces of `size` elements along `axis` (the
    /// last may be shorter), as `torch.split` with an integer. No dispatch.
    #[track_caller]
    pub fn split(&self, size: usize, axis: isize) -> Vec<Tensor> {
        let a = shape::axis("split", self.shape(), axis);
        let n = self.shape()[a];
        if size == 0 && n > 0 {
            panic!("wgrad: split: pieces of size 0 cannot cover axis {axis} of shape {:?}", self.shape());
        }
        if n == 0 {
            return vec![self.clone()];
        }
        (0..n).step_by(size).map(|s| self.narrow(a as isize, s, size.min(n - s))).collect()
    }

    /// Views of consecutive pieces of the given sizes along `axis`, as
    /// `torch.split` with a list; the sizes must add up to the axis. No dispatch.
    #[track_caller]
    pub fn split_with_sizes(&self, sizes: &[usize], axis: isize) -> Vec<Tensor> {
        let a = shape::axis("split_with_sizes", self.shape(), axis);
        if sizes.iter().sum::<usize>() != self.shape()[a] {
            panic!("wgrad: split_with_sizes: sizes {sizes:?} do not add up to axis {axis} of shape {:?}", self.shape());
        }
        let mut start = 0;
        let mut out = Vec::with_capacity(sizes.len());
        for &len in sizes {
            out.push(self.narrow(a as isize, start, len));
            start += len;
        }
        out
    }

    /// At most `n` views along `axis`, as `torch.chunk`: pieces of
    /// ⌈size/n⌉ elements, the last shorter; fewer than `n` when the axis is
    /// short (7 in 4 chunks: 2, 2, 2, 1; 6 in 4: 2, 2, 2). No dispatch.
    #[track_caller]
    pub fn chunk(&self, n: usize, axis: isize) -> Vec<Tensor> {
        let a = shape::axis("chunk", self.shape(), axis);
        if n == 0 {
            panic!("wgrad: chunk: cannot cut axis {axis} of shape {:?} into 0 chunks", self.shape());
        }
        self.split(self.shape()[a].div_ceil(n).max(1), a as isize)
    }

    /// The elements `start, start + step, …` before `end` along `axis`, as
    /// Python's `x[start:end:step]`: a view (no dispatch). `start` and `end`
    /// count from the end when negative and are clamped to the axis, as in
    /// Python; `step` ≥ 1 (PyTorch forbids negative steps too: use
    /// [`flip`](Tensor::flip)). The gradient is `g` written at the strided
    /// positions of zeros (a fill and a copy), whose own gradient is this
    /// view again: differentiable to any order.
    ///
    /// ```
    /// # use wgrad::{Device, Tensor};
    /// # let dev = Device::new()?;
    /// let x = Tensor::arange(&dev, 0.0, 10.0, 1.0);
    /// assert_eq!(x.slice(0, 1, -1, 3).to_vec::<f32>()?, vec![1.0, 4.0, 7.0]);
    /// # Ok::<(), wgrad::Error>(())
    /// ```
    #[track_caller]
    pub fn slice(&self, axis: isize, start: isize, end: isize, step: usize) -> Tensor {
        let a = shape::axis("slice", self.shape(), axis);
        if step == 0 {
            panic!("wgrad: slice: step 0 along axis {axis} of shape {:?} (steps are ≥ 1)", self.shape());
        }
        let n = self.shape()[a] as isize;
        let clamp = |i: isize| (if i < 0 { i + n } else { i }).clamp(0, n) as usize;
        let (start, end) = (clamp(start), clamp(end));
        let len = end.saturating_sub(start).div_ceil(step);
        if step == 1 || len <= 1 {
            return self.narrow(a as isize, start, len);
        }
        let rank = self.rank();
        let mut base = vec![0; rank];
        base[a] = start;
        let mut dirs: Vec<Vec<usize>> = (0..rank).map(|d| unit(rank, d)).collect();
        dirs[a][a] = step;
        let mut shape = self.shape().to_vec();
        shape[a] = len;
        apply(LayoutOp::Strided { op: "slice", view: AffineView { shape, base, dirs } }, &[self])
    }

    /// The diagonal of the planes spanned by `dim1` and `dim2`, as
    /// `torch.diagonal`: those two dimensions are removed and the diagonal
    /// appended as the last; `offset` > 0 is above the main diagonal, < 0
    /// below. A view (no dispatch); its gradient writes `g` on the diagonal
    /// of zeros (a fill and a copy).
    #[track_caller]
    pub fn diagonal(&self, offset: isize, dim1: isize, dim2: isize) -> Tensor {
        let d1 = shape::axis("diagonal", self.shape(), dim1);
        let d2 = shape::axis("diagonal", self.shape(), dim2);
        if d1 == d2 {
            panic!("wgrad: diagonal: dim1 and dim2 are both axis {d1} of shape {:?}", self.shape());
        }
        apply(LayoutOp::Strided { op: "diagonal", view: diagonal_view(self.shape(), offset, d1, d2) }, &[self])
    }

    /// As `torch.diag`: a vector becomes the square matrix with it on
    /// diagonal `offset` and zeros elsewhere (a fill and a copy); a matrix
    /// gives its diagonal `offset` (a view, where PyTorch copies). Each is
    /// the other's gradient.
    #[track_caller]
    pub fn diag(&self, offset: isize) -> Tensor {
        match self.rank() {
            1 => {
                let n = self.shape()[0] + offset.unsigned_abs();
                let view = diagonal_view(&[n, n], offset, 0, 1);
                apply(LayoutOp::Embed { op: "diag", view, shape: vec![n, n] }, &[self])
            }
            2 => self.diagonal(offset, 0, 1),
            _ => panic!("wgrad: diag: needs a vector or a matrix, got shape {:?}", self.shape()),
        }
    }

    /// The lower triangle of the last two dimensions (batched over the
    /// others): elements with column − row ≤ `diagonal` kept, the rest 0,
    /// as `torch.tril`. A composition: a mask made on the host (an upload)
    /// and one `where_` dispatch; the gradient is `g` masked the same way
    /// (one dispatch).
    #[track_caller]
    pub fn tril(&self, diagonal: isize) -> Tensor {
        self.triangle("tril", |row, col| col - row <= diagonal)
    }

    /// The upper triangle of the last two dimensions: elements with
    /// column − row ≥ `diagonal` kept, as `torch.triu`. As [`tril`](Tensor::tril).
    #[track_caller]
    pub fn triu(&self, diagonal: isize) -> Tensor {
        self.triangle("triu", |row, col| col - row >= diagonal)
    }

    #[track_caller]
    fn triangle(&self, op: &str, keep: impl Fn(isize, isize) -> bool) -> Tensor {
        if self.rank() < 2 {
            panic!("wgrad: {op}: needs rank ≥ 2, got shape {:?}", self.shape());
        }
        let (n, m) = (self.shape()[self.rank() - 2], self.shape()[self.rank() - 1]);
        let mask: Vec<u32> = (0..n * m).map(|i| keep((i / m) as isize, (i % m) as isize) as u32).collect();
        let mask = Tensor::from_slice(self.device(), &mask, &[n, m]);
        // a zero of self's dtype, uploaded rather than filled: no dispatch
        let zero = match self.dtype() {
            DType::F32 => Tensor::from_slice(self.device(), &[0.0f32], &[]),
            DType::I32 => Tensor::from_slice(self.device(), &[0i32], &[]),
            DType::U32 => Tensor::from_slice(self.device(), &[0u32], &[]),
        };
        mask.where_(self, &zero)
    }
}

/// The `d`-th unit vector of length `rank`.
fn unit(rank: usize, d: usize) -> Vec<usize> {
    let mut v = vec![0; rank];
    v[d] = 1;
    v
}

/// `torch.diagonal`'s view of a tensor of `shape`: the other dimensions in
/// order, then the diagonal, which starts at (0, offset) or (−offset, 0).
fn diagonal_view(shape: &[usize], offset: isize, d1: usize, d2: usize) -> AffineView {
    let rank = shape.len();
    let k = offset.unsigned_abs();
    let len = if offset >= 0 {
        shape[d1].min(shape[d2].saturating_sub(k))
    } else {
        shape[d1].saturating_sub(k).min(shape[d2])
    };
    let mut base = vec![0; rank];
    if len > 0 {
        base[if offset >= 0 { d2 } else { d1 }] = k;
    }
    let others = (0..rank).filter(|&d| d != d1 && d != d2);
    let mut out_shape: Vec<usize> = others.clone().map(|d| shape[d]).collect();
    out_shape.push(len);
    let mut dirs: Vec<Vec<usize>> = others.map(|d| unit(rank, d)).collect();
    let mut diag = unit(rank, d1);
    diag[d2] = 1;
    dirs.push(diag);
    AffineView { shape: out_shape, base, dirs }
}

/// Panics unless the gather kernel that reorders an axis takes `t`'s rank.
#[track_caller]
fn within_index_rank(op: &str, t: &Tensor) {
    if t.rank() > shape::MAX_RANK {
        panic!(
            "wgrad: {op}: a tensor of shape {:?} (rank {}); the index kernels take {} dimensions at most",
            t.shape(),
            t.rank(),
            shape::MAX_RANK
        );
    }
}
