//! Neural-network layers as pure, differentiable functions of tensors (the
//! seed's `d.nn` bridge, without modules or hidden state): parameters are
//! arguments, state such as batch-norm running statistics is returned.
//!
//! Activations are tensor methods: `relu`, `leaky_relu`, `elu`, `gelu`,
//! `tanh`, `sigmoid`, `softplus`, `softmax`, `log_softmax`; `x.flatten(1, -1)`
//! flattens all but the batch axis.

mod attention;
mod conv;
pub mod init;
mod loss;
mod norm;
mod pool;
mod rnn;

pub use attention::{AttnMask, MhaParams, multi_head_attention, scaled_dot_product_attention};
pub use conv::{Conv1dOptions, ConvOptions, conv_transpose2d, conv1d, conv2d};
pub use loss::{
    CrossEntropyOptions, Reduction, bce_loss, bce_with_logits, cross_entropy, cross_entropy_with, huber_loss, kl_div,
    l1_loss, log_multinomial_loss, mse_loss, nll_loss, smooth_l1_loss,
};
pub use norm::{group_norm, rms_norm};
pub use pool::{
    PoolOptions, adaptive_avg_pool2d, avg_pool2d, avg_pool2d_with, global_avg_pool2d, max_pool2d, max_pool2d_with,
};
pub use rnn::{gru_cell, lstm_cell};

use crate::Params;
use crate::ops::need_indices;
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
