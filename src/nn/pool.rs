//! Pooling over the last two axes: max and average windows (one kernel
//! each, `shaders/pool.wgsl`), adaptive and global averages (compositions).

use crate::ops::need_f32;
use crate::ops::pool2d::PoolGeom;
use crate::tensor::Tensor;

/// Windows of [`max_pool2d_with`] and [`avg_pool2d_with`]: kernel, stride,
/// zero padding and dilation as (rows, columns), like [`ConvOptions`](super::ConvOptions).
/// The stride defaults to the kernel, as PyTorch's.
///
/// ```
/// use wgrad::{nn, Device, Tensor};
/// # let dev = Device::new()?;
/// let x = Tensor::ones(&dev, &[1, 1, 6, 8]);
/// let opts = nn::PoolOptions::new((2, 3)).stride(1).padding(1).dilation(2);
/// assert_eq!(nn::max_pool2d_with(&x, opts).shape(), &[1, 1, 6, 6]);
/// # Ok::<(), wgrad::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolOptions {
    pub kernel: (usize, usize),
    pub stride: (usize, usize),
    pub padding: (usize, usize),
    pub dilation: (usize, usize),
}

impl PoolOptions {
    /// Windows of `kernel` (rows, columns) with stride = kernel, no padding, no dilation.
    pub fn new(kernel: (usize, usize)) -> Self {
        PoolOptions { kernel, stride: kernel, padding: (0, 0), dilation: (1, 1) }
    }
    /// The same stride along both axes.
    pub fn stride(mut self, s: usize) -> Self {
        self.stride = (s, s);
        self
    }
    /// The same zero padding along both axes.
    pub fn padding(mut self, p: usize) -> Self {
        self.padding = (p, p);
        self
    }
    /// The same dilation along both axes.
    pub fn dilation(mut self, d: usize) -> Self {
        self.dilation = (d, d);
        self
    }
}

#[track_caller]
fn pool_geom(op: &str, x: &Tensor, o: PoolOptions) -> PoolGeom {
    need_f32(op, x);
    if x.rank() < 2 {
        panic!("wgrad: {op}: needs [..., H, W], got shape {:?}", x.shape());
    }
    let (h, w) = (x.dim(-2), x.dim(-1));
    let span = |k: usize, d: usize| (k.max(1) - 1) * d + 1;
    let (sh, sw) = (span(o.kernel.0, o.dilation.0), span(o.kernel.1, o.dilation.1));
    let fits = |k: usize, s: usize, p: usize, d: usize, n: usize| {
        k > 0 && s > 0 && d > 0 && 2 * p <= k && (k - 1) * d < n + 2 * p
    };
    if !fits(o.kernel.0, o.stride.0, o.padding.0, o.dilation.0, h)
        || !fits(o.kernel.1, o.stride.1, o.padding.1, o.dilation.1, w)
    {
        let pair = |(a, b): (usize, usize)| if a == b { format!("{a}") } else { format!("({a}, {b})") };
        panic!(
            "wgrad: {op}: kernel {}, stride {}, padding {}, dilation {} do not fit input {:?} \
             (all but the padding at least 1, padding at most half the kernel, the dilated \
             kernel within the padded input)",
            pair(o.kernel),
            pair(o.stride),
            pair(o.padding),
            pair(o.dilation),
            x.shape()
        );
    }
    PoolGeom {
        lead: x.shape()[..x.rank() - 2].to_vec(),
        h,
        w,
        oh: (h + 2 * o.padding.0 - sh) / o.stride.0 + 1,
        ow: (w + 2 * o.padding.1 - sw) / o.stride.1 + 1,
        kernel: o.kernel,
        stride: o.stride,
        padding: o.padding,
        dilation: o.dilation,
    }
}

fn square(kernel: usize, stride: usize, padding: usize) -> PoolOptions {
    PoolOptions { kernel: (kernel, kernel), stride: (stride, stride), padding: (padding, padding), dilation: (1, 1) }
}

/// Max over `kernel`×`kernel` windows of the last two axes.
#[track_caller]
pub fn max_pool2d(x: &Tensor, kernel: usize, stride: usize, padding: usize) -> Tensor {
    max_pool2d_with(x, square(kernel, stride, padding))
}

/// Mean over `kernel`×`kernel` windows of the last two axes (padding counts as zeros).
#[track_caller]
pub fn avg_pool2d(x: &Tensor, kernel: usize, stride: usize, padding: usize) -> Tensor {
    avg_pool2d_with(x, square(kernel, stride, padding))
}

/// Max over the windows `opts` of the last two axes of `x` [..., H, W], as
/// PyTorch's `max_pool2d` (floor mode: `ceil_mode` is not offered). The
/// first maximum in row-major window order wins (and gets the gradient);
/// padding never wins. One dispatch; twice differentiable and more (the
/// argmax is a constant of x).
#[track_caller]
pub fn max_pool2d_with(x: &Tensor, opts: PoolOptions) -> Tensor {
    let g = pool_geom("max_pool2d", x, opts);
    crate::ops::pool2d::max_pool2d(g, x)
}

/// Mean over the windows `opts` of the last two axes, as PyTorch's
/// `avg_pool2d` with `count_include_pad=True` (the divisor is always
/// kh·kw) and floor mode. PyTorch's has no dilation; here it reads every
/// `dilation`-th element, as max pooling. One dispatch.
#[track_caller]
pub fn avg_pool2d_with(x: &Tensor, opts: PoolOptions) -> Tensor {
    let g = pool_geom("avg_pool2d", x, opts);
    crate::ops::pool2d::avg_pool2d(g, x)
}

/// The averaging matrix [out, len] of adaptive pooling along one axis:
/// output i averages input [⌊i·len/out⌋, ⌈(i+1)·len/out⌉), as PyTorch.
fn adaptive_weights(len: usize, out: usize) -> Vec<f32> {
    let mut m = vec![0.0f32; out * len];
    for i in 0..out {
        let (start, end) = (i * len / out, ((i + 1) * len).div_ceil(out));
        for k in start..end {
            m[i * len + k] = 1.0 / (end - start) as f32;
        }
    }
    m
}

/// Average pooling of `x` [..., H, W] to `out` = (OH, OW) outputs, as
/// PyTorch's `adaptive_avg_pool2d`: output (i, j) averages rows
/// ⌊i·H/OH⌋ .. ⌈(i+1)·H/OH⌉ and the columns likewise, so windows may
/// differ in size and overlap. Where OH divides H and OW divides W this is
/// [`avg_pool2d_with`] (one dispatch); otherwise it is linear in x and
/// written as two products with constant averaging matrices,
/// A_h · x · A_wᵀ (2 matmuls and their uploads).
///
/// ```
/// use wgrad::{nn, Device, Tensor};
/// # let dev = Device::new()?;
/// let x = Tensor::from_slice(&dev, &[1.0f32, 2.0, 3.0, 4.0, 5.0], &[1, 5]);
/// // windows [0, 3) and [2, 5)
/// let y = nn::adaptive_avg_pool2d(&x, (1, 2));
/// assert_eq!(y.to_vec::<f32>()?, vec![2.0, 4.0]);
/// # Ok::<(), wgrad::Error>(())
/// ```
#[track_caller]
pub fn adaptive_avg_pool2d(x: &Tensor, out: (usize, usize)) -> Tensor {
    need_f32("adaptive_avg_pool2d", x);
    if x.rank() < 2 || out.0 == 0 || out.1 == 0 || x.dim(-2) == 0 || x.dim(-1) == 0 {
        panic!(
            "wgrad: adaptive_avg_pool2d: cannot pool input {:?} to {out:?} ([..., H, W] to non-empty (OH, OW))",
            x.shape()
        );
    }
    let (h, w) = (x.dim(-2), x.dim(-1));
    if h % out.0 == 0 && w % out.1 == 0 {
        return avg_pool2d_with(x, PoolOptions::new((h / out.0, w / out.1)));
    }
    let dev = x.device();
    let ah = Tensor::from_slice(dev, &adaptive_weights(h, out.0), &[out.0, h]);
    let aw = Tensor::from_slice(dev, &adaptive_weights(w, out.1), &[out.1, w]);
    ah.matmul(&x.matmul(&aw.t()))
}

/// The mean over the last two axes: [..., H, W] to [...] (PyTorch's
/// `adaptive_avg_pool2d(x, 1)` keeps two axes of 1; flatten or reshape
/// that instead). One reduction.
#[track_caller]
pub fn global_avg_pool2d(x: &Tensor) -> Tensor {
    need_f32("global_avg_pool2d", x);
    if x.rank() < 2 {
        panic!("wgrad: global_avg_pool2d: needs [..., H, W], got shape {:?}", x.shape());
    }
    x.mean(&[-2, -1], false)
}
