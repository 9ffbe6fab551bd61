//! Scans along one axis: cumsum, cumprod and logcumsumexp, forwards or from
//! the end (the VJP of a scan is a scan the other way), and prod, the last
//! element of a cumprod. Kernel: `shaders/scan.wgsl`, one dispatch per scan.

use bytemuck::{Pod, Zeroable};

use crate::autograd::{Primitive, multilinear_jvp};
use crate::dtype::DType;
use crate::ops::layout::contiguous_forward;
use crate::ops::reduce::{reduced_shape, serial};
use crate::ops::{apply, need_f32};
use crate::runtime::{Kernel, Shader, grid};
use crate::shape::{self, MAX_RANK, coalesce, contiguous_strides, pack, pack_divisors};
use crate::tensor::Tensor;

/// What a scan accumulates (`OP` of `shaders/scan.wgsl`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ScanOp {
    Sum,
    Prod,
    LogSumExp,
    /// h_j = a_j·h_(j−1) + b_j, of two inputs (a, b)
    LinRec,
}

impl ScanOp {
    fn name(self) -> &'static str {
        match self {
            ScanOp::Sum => "cumsum",
            ScanOp::Prod => "cumprod",
            ScanOp::LogSumExp => "logcumsumexp",
            ScanOp::LinRec => "linear_recurrence",
        }
    }

    /// The shader's constant for the op.
    fn code(self) -> u32 {
        self as u32
    }
}

/// An inclusive scan of f32 along `axis`, from the end when `reverse`;
/// the output is contiguous, of the input's shape.
#[derive(Clone, Debug)]
pub(crate) struct Scan {
    pub op: ScanOp,
    pub axis: usize,
    pub reverse: bool,
}

impl Scan {
    /// Scan `op` in this scan's direction.
    fn along(&self, op: ScanOp) -> Scan {
        Scan { op, axis: self.axis, reverse: self.reverse }
    }

    /// Scan `op` in the other direction: Σ_{k≥i} where this one sums k ≤ i.
    fn back(&self, op: ScanOp) -> Scan {
        Scan { op, axis: self.axis, reverse: !self.reverse }
    }
}

impl Scan {
    /// The element before each one in the scan's order, `pad` before the
    /// first: t shifted one place along the axis (toward the end, or toward
    /// the start when the scan runs from the end).
    fn previous(&self, t: &Tensor, pad: f64) -> Tensor {
        let n = t.shape()[self.axis];
        if n == 0 {
            return t.clone();
        }
        let mut pads = vec![(0, 0); t.rank()];
        let ax = self.axis as isize;
        if self.reverse {
            pads[self.axis] = (0, 1);
            t.narrow(ax, 1, n - 1).pad(&pads, pad)
        } else {
            pads[self.axis] = (1, 0);
            t.narrow(ax, 0, n - 1).pad(&pads, pad)
        }
    }

    /// The element after each one in the scan's order, `pad` after the last.
    fn next(&self, t: &Tensor, pad: f64) -> Tensor {
        Scan { reverse: !self.reverse, ..self.clone() }.previous(t, pad)
    }
}

impl Primitive for Scan {
    fn name(&self) -> &'static str {
        self.op.name()
    }

    fn forward(&self, x: &[&Tensor]) -> Tensor {
        scan_forward(self, x[0], x.get(1).copied())
    }

    fn vjp(&self, g: &Tensor, x: &[&Tensor], y: &Tensor, _needs: &[bool]) -> Vec<Option<Tensor>> {
        vec![Some(match self.op {
            // y_k = Σ_{i≤k} x_i: ∂x_i = Σ_{k≥i} g_k
            ScanOp::Sum => apply(self.back(ScanOp::Sum), &[g]),
            ScanOp::Prod => cumprod_vjp(self, g, x[0], y),
            ScanOp::LogSumExp => logcumsumexp_vjp(self, g, x[0], y),
            ScanOp::LinRec => return linrec_vjp(self, g, x[0], y),
        })]
    }

    fn jvp(&self, t: &[Option<&Tensor>], x: &[&Tensor], y: &Tensor) -> Option<Tensor> {
        match self.op {
            // linear
            ScanOp::Sum => multilinear_jvp(self, t, x, &[0]),
            // y_j = x_j·y_(j−1): dy_j = x_j·dy_(j−1) + dx_j·y_(j−1), a linear
            // recurrence (no division, so exact at zeros of x)
            ScanOp::Prod => Some(linrec(self, x[0], &(t[0]? * &self.previous(y, 1.0)))),
            ScanOp::LogSumExp => Some(logcumsumexp_jvp(self, t[0]?, x[0], y)),
            // dh_j = a_j·dh_(j−1) + da_j·h_(j−1) + db_j
            ScanOp::LinRec => {
                let from_a = t[0].map(|da| da * &self.previous(y, 0.0));
                let b = match (from_a, t[1]) {
                    (Some(fa), Some(db)) => fa + db,
                    (Some(fa), None) => fa,
                    (None, db) => db?.clone(),
                };
                Some(linrec(self, x[0], &b))
            }
        }
    }
}

// ---- forward -------------------------------------------------------------------

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct ScanParams {
    n_rows: u32,
    n: u32,
    stride: u32,
    ostride: u32,
    rank_outer: u32,
    offset: u32,
    reverse: u32,
    coff: u32,
    shape_outer: [u32; MAX_RANK],
    str_outer: [u32; MAX_RANK],
    ostr_outer: [u32; MAX_RANK],
    magic_outer: [u32; MAX_RANK],
    shift_outer: [u32; MAX_RANK],
}

/// `x` scanned (for a linear recurrence, x holds the a and `c` the b).
fn scan_forward(s: &Scan, x: &Tensor, c: Option<&Tensor>) -> Tensor {
    let out = Tensor::empty(x.device(), s.op.name(), x.shape(), DType::F32);
    if out.numel() == 0 {
        return out;
    }
    if let Some(cv) = c.filter(|cv| cv.layout().strides != x.layout().strides) {
        // the kernel walks both with x's strides
        return scan_forward(s, &contiguous_forward(x), Some(&contiguous_forward(cv)));
    }
    let l = x.layout();
    let ostrides = contiguous_strides(x.shape());
    // the rows: every dimension but the axis, merged where both the input
    // and the output walk them contiguously
    let others: Vec<usize> = (0..x.rank()).filter(|&d| d != s.axis).collect();
    let shape: Vec<usize> = others.iter().map(|&d| l.shape[d]).collect();
    let mut strides =
        vec![others.iter().map(|&d| l.strides[d]).collect(), others.iter().map(|&d| ostrides[d]).collect()];
    let outer = coalesce(&shape, &mut strides);
    if outer.len() > MAX_RANK {
        // (a dense input merges down to two dimensions around the axis)
        return scan_forward(s, &contiguous_forward(x), c.map(contiguous_forward).as_ref());
    }
    let (n_rows, n) = (shape::numel(&outer), l.shape[s.axis]);
    let params = ScanParams {
        n_rows: n_rows as u32,
        n: n as u32,
        stride: l.strides[s.axis] as u32,
        ostride: ostrides[s.axis] as u32,
        rank_outer: outer.len() as u32,
        offset: l.offset as u32,
        reverse: s.reverse as u32,
        // (an offset difference, wrapping as the kernel's u32 sum does)
        coff: c.map_or(0, |cv| cv.layout().offset.wrapping_sub(l.offset) as u32),
        shape_outer: pack(&outer),
        str_outer: pack(&strides[0]),
        ostr_outer: pack(&strides[1]),
        magic_outer: pack_divisors(&outer).0,
        shift_outer: pack_divisors(&outer).1,
    };
    // many or short rows: one invocation per row, in order (no barriers);
    // few long ones: a workgroup per row
    let one_per_invocation = serial(n_rows, n);
    let kernel = Kernel::new(Shader::Scan, "scan").with("OP", s.op.code()).with("SERIAL", one_per_invocation as u32);
    let groups = if one_per_invocation { n_rows.div_ceil(256) } else { n_rows };
    let bindings = [("x", x.storage()), ("c", c.unwrap_or(x).storage()), ("out", out.storage())];
    x.device().inner.record(&kernel, &bindings, bytemuck::bytes_of(&params), grid(groups as u32));
    out
}

// ---- public API ----------------------------------------------------------------

impl Tensor {
    #[track_caller]
    fn scan(&self, op: ScanOp, axis: isize) -> Tensor {
        need_f32(op.name(), self);
        let axis = shape::axis(op.name(), self.shape(), axis);
        apply(Scan { op, axis, reverse: false }, &[self])
    }

    /// Cumulative sum along `axis` (negative counts from the end):
    /// `out[.., k, ..] = Σ_{i≤k} self[.., i, ..]`, of `self`'s shape, as
    /// `numpy.cumsum(x, axis)` and `torch.cumsum(x, dim)`. f32 only, summed
    /// in f32 (numpy would promote integers; here cast first); the order of
    /// the additions is fixed, so results are deterministic, but it is a
    /// tree over each prefix, not numpy's left-to-right loop, so the last
    /// bits may differ. The gradient is the cumulative sum of `g` taken from
    /// the end: ∂x_i = Σ_{k≥i} g_k.
    ///
    /// ```
    /// # use wgrad::{Device, Tensor};
    /// # let dev = Device::new()?;
    /// let x = Tensor::from_slice(&dev, &[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]);
    /// assert_eq!(x.cumsum(1).to_vec::<f32>()?, vec![1.0, 3.0, 6.0, 4.0, 9.0, 15.0]);
    /// assert_eq!(x.cumsum(0).to_vec::<f32>()?, vec![1.0, 2.0, 3.0, 5.0, 7.0, 9.0]);
    /// # Ok::<(), wgrad::Error>(())
    /// ```
    #[track_caller]
    pub fn cumsum(&self, axis: isize) -> Tensor {
        self.scan(ScanOp::Sum, axis)
    }

    /// Cumulative product along `axis`: `out[.., k, ..] = Π_{i≤k} self[.., i, ..]`,
    /// as `numpy.cumprod` and `torch.cumprod` (f32 only). The gradient
    /// ∂x_i = Σ_{k≥i} g_k·Π_{j≤k, j≠i} x_j is computed without dividing by x
    /// — (Π_{j<i} x_j) times the recurrence B_i = g_i + x_(i+1)·B_(i+1) run
    /// from the end — so it is exact where x has zeros, and so are its own
    /// derivatives (Hessians, forward over reverse).
    #[track_caller]
    pub fn cumprod(&self, axis: isize) -> Tensor {
        self.scan(ScanOp::Prod, axis)
    }

    /// Product over `axes` (negative counts from the end; `keepdim` keeps
    /// them as size 1), as `numpy.prod` and `torch.prod` (f32 only, no
    /// promotion); the product of nothing is 1.
    ///
    /// A composition: the last element of a cumprod along the reduced axes
    /// merged into one. So its gradient is cumprod's, which at the last
    /// element is ∂x_i = g·(Π_{j<i} x_j)·(Π_{j>i} x_j) — exclusive products
    /// from both ends, no division by x — exact where x has zeros, and so
    /// are its second derivatives and its JVP (Σ_i t_i·Π_{j≠i} x_j, a
    /// linear recurrence). A PROD op in the reduce kernel would save the
    /// scan's buffer (x's size) and, for axes that do not merge in place,
    /// a copy, but would need the same two exclusive products for its rule.
    /// Forward: 1 dispatch (the scan) for one axis or axes that merge in
    /// place (the last axes of a dense tensor), 2 otherwise (a copy first).
    /// The products are f32 (relative error ≤ (N − 1)·2⁻²⁴), in the scan's
    /// order, so the last bits may differ from numpy's.
    ///
    /// ```
    /// # use wgrad::{Device, Tensor};
    /// # let dev = Device::new()?;
    /// let x = Tensor::from_slice(&dev, &[1.0f32, 2.0, 3.0, 4.0, 0.0, 6.0], &[2, 3]);
    /// assert_eq!(x.prod(&[1], false).to_vec::<f32>()?, vec![6.0, 0.0]);
    /// assert_eq!(x.prod(&[0], true).to_vec::<f32>()?, vec![4.0, 0.0, 18.0]);
    /// # Ok::<(), wgrad::Error>(())
    /// ```
    #[track_caller]
    pub fn prod(&self, axes: &[isize], keepdim: bool) -> Tensor {
        need_f32("prod", self);
        let axes = shape::axes("prod", self.shape(), axes);
        let n: usize = axes.iter().map(|&d| self.shape()[d]).product();
        let out_shape = reduced_shape(self.shape(), &axes, keepdim);
        if n <= 1 {
            let iaxes: Vec<isize> = axes.iter().map(|&a| a as isize).collect();
            // the product of nothing is 1 (a sum keeps the result on the
            // tape); of one element, a view of it
            return if n == 0 { self.sum(&iaxes, keepdim) + 1.0 } else { self.reshape(&out_shape) };
        }
        let (rows, axis) = match axes[..] {
            [a] => (self.clone(), a),
            _ => {
                // the reduced axes last, merged into one (a view where they
                // merge in place, else a copy)
                let kept: Vec<usize> = (0..self.rank()).filter(|d| !axes.contains(d)).collect();
                let perm: Vec<isize> = kept.iter().chain(&axes).map(|&d| d as isize).collect();
                let mut merged: Vec<usize> = kept.iter().map(|&d| self.shape()[d]).collect();
                merged.push(n);
                (self.permute(&perm).reshape(&merged), kept.len())
            }
        };
        let axis = axis as isize;
        rows.cumprod(axis).narrow(axis, n - 1, 1).reshape(&out_shape)
    }

    /// Product of all elements, as a 0-d tensor (see [`Tensor::prod`]).
    #[track_caller]
    pub fn prod_all(&self) -> Tensor {
        let all: Vec<isize> = (0..self.rank() as isize).collect();
        self.prod(&all, false)
    }

    /// log Σ_{i≤k} exp(x_i) along `axis`, computed stably (as
    /// `torch.logcumsumexp`, or numpy's `logaddexp.accumulate`; f32 only).
    /// Each step is numpy's `logaddexp`: −∞ entries add nothing (a prefix of
    /// −∞ stays −∞), +∞ wins, NaN propagates. The gradient
    /// ∂x_i = Σ_{k≥i} g_k·e^(x_i − y_k) is summed in log space, split by the
    /// sign of g, so it neither overflows nor divides; an output that is −∞
    /// (all of its prefix −∞, where e^(x − y) is 0/0) passes back nothing,
    /// where PyTorch gives NaN.
    #[track_caller]
    pub fn logcumsumexp(&self, axis: isize) -> Tensor {
        self.scan(ScanOp::LogSumExp, axis)
    }
}

// ---- VJP and JVP rules ---------------------------------------------------------

/// h = linear_recurrence(a, b) in this scan's direction.
fn linrec(s: &Scan, a: &Tensor, b: &Tensor) -> Tensor {
    apply(s.along(ScanOp::LinRec), &[a, b])
}

/// y = cumprod(x): ∂x_i = Σ_{k≥i} g_k·Π_{j≤k, j≠i} x_j
/// = (Π_{j<i} x_j)·B_i with B_i = Σ_{k≥i} g_k·Π_{i<j≤k} x_j, which is the
/// recurrence B_i = g_i + x_(i+1)·B_(i+1) run the other way. No division,
/// so it is exact at zeros of x, and written with ops its own derivatives
/// are exact there too (a quotient rule y/x masked at zeros is not).
fn cumprod_vjp(s: &Scan, g: &Tensor, x: &Tensor, y: &Tensor) -> Tensor {
    s.previous(y, 1.0) * linrec(&s.back(ScanOp::LinRec), &s.next(x, 0.0), g)
}

/// h_j = a_j·h_(j−1) + b_j: with λ_j = g_j + a_(j+1)·λ_(j+1) (the
/// recurrence the other way), ∂b = λ and ∂a_j = λ_j·h_(j−1).
fn linrec_vjp(s: &Scan, g: &Tensor, a: &Tensor, h: &Tensor) -> Vec<Option<Tensor>> {
    let lambda = linrec(&s.back(ScanOp::LinRec), &s.next(a, 0.0), g);
    vec![Some(&lambda * &s.previous(h, 0.0)), Some(lambda)]
}

/// log of the positive `w` where `on`, else −∞ (log 0), with no NaN or
/// infinity in an unused branch (whose derivatives would turn 0·∞ into NaN).
fn log_where(on: &Tensor, w: &Tensor) -> Tensor {
    on.where_(&on.where_(w, 1.0).log(), f64::NEG_INFINITY)
}

/// y = logcumsumexp(x): ∂x_i = Σ_{k≥i} g_k e^(x_i − y_k). With g split by
/// sign, each part is exp(x_i + lse_{k≥i}(log g±_k − y_k)), a scan the other
/// way; x_i ≤ y_k, so nothing overflows. Outputs at −∞ are left out (their
/// e^(x − y) is 0/0).
fn logcumsumexp_vjp(s: &Scan, g: &Tensor, x: &Tensor, y: &Tensor) -> Tensor {
    let live = y.gt(f64::NEG_INFINITY);
    let y_safe = live.where_(y, 0.0);
    let part = |w: &Tensor, on: Tensor| {
        let terms = log_where(&(&on * &live), w) - &y_safe;
        (x + &apply(s.back(ScanOp::LogSumExp), &[&terms])).exp()
    };
    part(g, g.gt(0.0)) - part(&-g, g.lt(0.0))
}

/// dy_k = Σ_{i≤k} t_i e^(x_i − y_k), split by the sign of t as the VJP:
/// exp(lse_{i≤k}(log t±_i + x_i) − y_k), at most max|t|; 0 at outputs at −∞.
fn logcumsumexp_jvp(s: &Scan, t: &Tensor, x: &Tensor, y: &Tensor) -> Tensor {
    let y_safe = y.gt(f64::NEG_INFINITY).where_(y, 0.0);
    let part = |w: &Tensor, on: Tensor| {
        let terms = log_where(&on, w) + x;
        (apply(s.clone(), &[&terms]) - &y_safe).exp()
    };
    part(t, t.gt(0.0)) - part(&-t, t.lt(0.0))
}
