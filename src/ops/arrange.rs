//! Layout ops made of the primitives of `layout.rs`: flip and roll (the
//! `Flip` and `Roll` primitives, a gather per axis), repeat and tile,
//! split and chunk, strided slices and diagonals (the `Strided` view and
//! its transpose `Embed`), diag, tril and triu.

use crate::dtype::DType;
use crate::ops::apply;
use crate::ops::layout::{AffineView, LayoutOp};
use crate::shape;
use crate::tensor::Tensor;

impl Tensor {
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
