//! Neural-network layers as pure, differentiable functions of tensors (the
//! seed's `d.nn` bridge, without modules or hidden state): parameters are
//! arguments, state such as batch-norm running statistics is returned.
//!
//! Activations are tensor methods: `relu`, `leaky_relu`, `elu`, `gelu`,
//! `tanh`, `sigmoid`, `softplus`, `softmax`, `log_softmax`; `x.flatten(1, -1)`
//! flattens all but the batch axis.

mod attention;
pub mod init;
mod loss;
mod rnn;

pub use attention::{AttnMask, MhaParams, multi_head_attention, scaled_dot_product_attention};
pub use loss::{Reduction, bce_loss, bce_with_logits, cross_entropy, log_multinomial_loss, mse_loss, nll_loss};
pub use rnn::{gru_cell, lstm_cell};

use crate::Params;
use crate::ops::conv::ConvGeom;
use crate::ops::pool2d::PoolGeom;
use crate::ops::{need_f32, need_indices, same_device};
use crate::tensor::Tensor;

/// `x · wᵀ + b`, with `w` of shape [out, in] and `b` of shape `[out]` (PyTorch's
/// layout, so weights load from its checkpoints). `x` is [..., in].
#[track_caller]
pub fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Tensor {
    if w.rank() != 2 || x.rank() == 0 || x.dim(-1) != w.shape()[1] {
        panic!("wgrad: linear: input {:?} does not fit a weight of shape {:?} ([out, in])", x.shape(), w.shape());
    }
    let y = x.matmul(&w.t());
    match b {
        Some(b) => y + b,
        None => y,
    }
}

/// Options of [`conv2d`]: stride, zero padding and dilation (rows, columns),
/// and the number of groups.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvOptions {
    pub stride: (usize, usize),
    pub padding: (usize, usize),
    pub dilation: (usize, usize),
    pub groups: usize,
}

impl Default for ConvOptions {
    fn default() -> Self {
        ConvOptions { stride: (1, 1), padding: (0, 0), dilation: (1, 1), groups: 1 }
    }
}

impl ConvOptions {
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
    /// Channel groups (input and output channels must divide by it).
    pub fn groups(mut self, g: usize) -> Self {
        self.groups = g;
        self
    }
}

/// 2-d convolution (cross-correlation, as PyTorch) of `x` [N, C, H, W] with
/// `w` [O, C/groups, KH, KW], plus `b` `[O]`.
///
/// ```
/// use wgrad::{nn, Device, Tensor};
/// # let dev = Device::new()?;
/// let x = Tensor::ones(&dev, &[1, 1, 4, 4]);
/// let w = Tensor::ones(&dev, &[2, 1, 3, 3]);
/// let y = nn::conv2d(&x, &w, None, nn::ConvOptions::default().padding(1));
/// assert_eq!(y.shape(), &[1, 2, 4, 4]);
/// assert_eq!(y.to_vec::<f32>()?[..4], [4.0, 6.0, 6.0, 4.0]);
/// # Ok::<(), wgrad::Error>(())
/// ```
#[track_caller]
pub fn conv2d(x: &Tensor, w: &Tensor, b: Option<&Tensor>, opts: ConvOptions) -> Tensor {
    need_f32("conv2d", x);
    need_f32("conv2d", w);
    same_device("conv2d", &[x, w]);
    // a macro, not a closure: the panic then names the caller's line
    macro_rules! bad {
        ($why:expr) => {
            panic!("wgrad: conv2d: input {:?} and weight {:?} with {opts:?}: {}", x.shape(), w.shape(), $why)
        };
    }
    if x.rank() != 4 || w.rank() != 4 {
        bad!("input must be [N, C, H, W] and weight [O, C/groups, KH, KW]");
    }
    let (n, c, h, wd) = (x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]);
    let (o, cg, kh, kw) = (w.shape()[0], w.shape()[1], w.shape()[2], w.shape()[3]);
    let g = opts.groups;
    if g == 0 || c % g != 0 || o % g != 0 || cg * g != c {
        bad!("channels do not match the weight and groups");
    }
    if g > x.device().inner.limits.max_compute_workgroups_per_dimension as usize {
        bad!("more groups than a dispatch holds (65,535 on most adapters)");
    }
    if opts.stride.0 == 0 || opts.stride.1 == 0 || opts.dilation.0 == 0 || opts.dilation.1 == 0 {
        bad!("stride and dilation must be at least 1");
    }
    let span = |k: usize, d: usize| (k - 1) * d + 1;
    let (eh, ew) = (h + 2 * opts.padding.0, wd + 2 * opts.padding.1);
    if kh == 0 || kw == 0 || span(kh, opts.dilation.0) > eh || span(kw, opts.dilation.1) > ew {
        bad!("the kernel is larger than the padded input");
    }
    let geom = ConvGeom {
        n,
        c,
        h,
        w: wd,
        o,
        oh: (eh - span(kh, opts.dilation.0)) / opts.stride.0 + 1,
        ow: (ew - span(kw, opts.dilation.1)) / opts.stride.1 + 1,
        kh,
        kw,
        stride: opts.stride,
        padding: opts.padding,
        dilation: opts.dilation,
        groups: g,
    };
    let y = crate::ops::conv::conv2d(&geom, x, w);
    match b {
        Some(b) => {
            if b.shape() != [o] {
                bad!("the bias must have shape [O]");
            }
            y + b.reshape(&[o, 1, 1])
        }
        None => y,
    }
}

#[track_caller]
fn pool_geom(op: &str, x: &Tensor, kernel: usize, stride: usize, padding: usize) -> PoolGeom {
    need_f32(op, x);
    if x.rank() < 2 {
        panic!("wgrad: {op}: needs [..., H, W], got shape {:?}", x.shape());
    }
    let (h, w) = (x.dim(-2), x.dim(-1));
    if kernel == 0 || stride == 0 || 2 * padding > kernel || kernel > h + 2 * padding || kernel > w + 2 * padding {
        panic!(
            "wgrad: {op}: kernel {kernel}, stride {stride}, padding {padding} do not fit input {:?} \
             (padding may be at most half the kernel)",
            x.shape()
        );
    }
    PoolGeom {
        lead: x.shape()[..x.rank() - 2].to_vec(),
        h,
        w,
        oh: (h + 2 * padding - kernel) / stride + 1,
        ow: (w + 2 * padding - kernel) / stride + 1,
        kernel: (kernel, kernel),
        stride: (stride, stride),
        padding: (padding, padding),
    }
}

/// Max over `kernel`×`kernel` windows of the last two axes.
#[track_caller]
pub fn max_pool2d(x: &Tensor, kernel: usize, stride: usize, padding: usize) -> Tensor {
    let g = pool_geom("max_pool2d", x, kernel, stride, padding);
    crate::ops::pool2d::max_pool2d(g, x)
}

/// Mean over `kernel`×`kernel` windows of the last two axes (padding counts as zeros).
#[track_caller]
pub fn avg_pool2d(x: &Tensor, kernel: usize, stride: usize, padding: usize) -> Tensor {
    let g = pool_geom("avg_pool2d", x, kernel, stride, padding);
    crate::ops::pool2d::avg_pool2d(g, x)
}

/// Running statistics of [`batch_norm`], per channel.
#[derive(Params, Clone, Debug)]
pub struct BatchNormStats {
    pub mean: Tensor,
    pub var: Tensor,
}

impl BatchNormStats {
    /// Mean 0, variance 1 for `channels` channels.
    pub fn new(device: &crate::Device, channels: usize) -> BatchNormStats {
        BatchNormStats { mean: Tensor::zeros(device, &[channels]), var: Tensor::ones(device, &[channels]) }
    }
}

/// Batch normalisation over axis 1 of `x` ([N, C] or [N, C, ...]): in
/// training, normalises with the batch's statistics and returns running
/// statistics updated with `momentum` (unbiased variance, as PyTorch); in
/// evaluation, normalises with `stats` and returns them unchanged.
#[track_caller]
#[allow(clippy::too_many_arguments)]
pub fn batch_norm(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    stats: &BatchNormStats,
    train: bool,
    momentum: f32,
    eps: f32,
) -> (Tensor, BatchNormStats) {
    if x.rank() < 2 || weight.shape() != [x.shape()[1]] || bias.shape() != weight.shape() {
        panic!(
            "wgrad: batch_norm: input {:?} needs weight and bias of shape [C] = [{}], got {:?} and {:?}",
            x.shape(),
            x.shape().get(1).copied().unwrap_or(0),
            weight.shape(),
            bias.shape()
        );
    }
    let c = x.shape()[1];
    let mut bshape = vec![1; x.rank()];
    bshape[1] = c;
    let axes: Vec<isize> = (0..x.rank() as isize).filter(|&d| d != 1).collect();
    let (mean, var, new_stats) = if train {
        let mean = x.mean(&axes, true);
        let centered = x - &mean;
        let var = centered.square().mean(&axes, true);
        let n = (x.numel() / c.max(1)) as f32;
        let unbiased = var.detach().reshape(&[c]) * (n / (n - 1.0).max(1.0));
        let new_stats = BatchNormStats {
            mean: &stats.mean * (1.0 - momentum) + mean.detach().reshape(&[c]) * momentum,
            var: &stats.var * (1.0 - momentum) + unbiased * momentum,
        };
        (mean, var, new_stats)
    } else {
        (stats.mean.reshape(&bshape), stats.var.reshape(&bshape), stats.clone())
    };
    let y = (x - &mean) * (var + eps).rsqrt() * weight.reshape(&bshape) + bias.reshape(&bshape);
    (y, new_stats)
}

/// Layer normalisation over the last `dims` axes, with optional
/// elementwise affine `weight` and `bias` shaped like those axes.
#[track_caller]
pub fn layer_norm(x: &Tensor, dims: usize, weight: Option<&Tensor>, bias: Option<&Tensor>, eps: f32) -> Tensor {
    if dims == 0 || dims > x.rank() {
        panic!("wgrad: layer_norm: cannot normalise the last {dims} axes of shape {:?}", x.shape());
    }
    let axes: Vec<isize> = (x.rank() - dims..x.rank()).map(|d| d as isize).collect();
    let mean = x.mean(&axes, true);
    let centered = x - &mean;
    let var = centered.square().mean(&axes, true);
    let mut y = centered * (var + eps).rsqrt();
    if let Some(w) = weight {
        y = y * w;
    }
    if let Some(b) = bias {
        y = y + b;
    }
    y
}

/// Zeroes each element with probability `p` and scales the rest by
/// 1/(1 − p) in training; the identity in evaluation. The mask comes from the
/// device's seeded generator, so runs are reproducible.
#[track_caller]
pub fn dropout(x: &Tensor, p: f32, train: bool) -> Tensor {
    if !(0.0..1.0).contains(&p) {
        panic!("wgrad: dropout: probability {p} is not in [0, 1)");
    }
    if !train || p == 0.0 {
        return x.clone();
    }
    let keep = Tensor::rand(x.device(), x.shape()).ge(p);
    keep.where_(&(x * (1.0 / (1.0 - p))), 0.0)
}

/// Rows of `table` [V, D] picked by the indices `idx` (u32/i32, any shape):
/// the result has shape `idx.shape() + [D]`.
#[track_caller]
pub fn embedding(idx: &Tensor, table: &Tensor) -> Tensor {
    need_indices("embedding", idx);
    if table.rank() != 2 {
        panic!("wgrad: embedding: the table must be [V, D], got {:?}", table.shape());
    }
    let mut shape = idx.shape().to_vec();
    shape.push(table.shape()[1]);
    table.index_select(0, &idx.reshape(&[idx.numel()])).reshape(&shape)
}

impl Tensor {
    /// x for x > 0, `slope`·x otherwise.
    #[track_caller]
    pub fn leaky_relu(&self, slope: f32) -> Tensor {
        self.gt(0.0).where_(self, &(self * slope))
    }

    /// x for x > 0, α(eˣ − 1) otherwise.
    #[track_caller]
    pub fn elu(&self, alpha: f32) -> Tensor {
        // exp of the clamped input: the discarded branch must not overflow
        let neg = (self.minimum(0.0).exp() - 1.0) * alpha;
        self.gt(0.0).where_(self, &neg)
    }
}
