//! Normalisations over a sample's own axes (no running statistics):
//! RMS and group normalisation, compositions of reductions and
//! elementwise ops.

use crate::ops::need_f32;
use crate::tensor::Tensor;

/// Root-mean-square normalisation over the last `dims` axes, as PyTorch's
/// `rms_norm(x, x.shape[-dims:], weight, eps)`: x / √(mean(x²) + eps) · weight,
/// with `weight` (optional) shaped like those axes. PyTorch's `eps=None`
/// means f32's machine epsilon; pass `f32::EPSILON` for that.
/// Dispatches: square, mean, add, rsqrt, two products (and one for the weight).
///
/// ```
/// use wgrad::{nn, Device, Tensor};
/// # let dev = Device::new()?;
/// let x = Tensor::from_slice(&dev, &[3.0f32, 4.0], &[1, 2]);
/// let y = nn::rms_norm(&x, 1, None, 0.0);
/// // rms = √((9 + 16) / 2)
/// assert!((y.to_vec::<f32>()?[0] - 3.0 / 12.5f32.sqrt()).abs() < 1e-6);
/// # Ok::<(), wgrad::Error>(())
/// ```
#[track_caller]
pub fn rms_norm(x: &Tensor, dims: usize, weight: Option<&Tensor>, eps: f32) -> Tensor {
    need_f32("rms_norm", x);
    if dims == 0 || dims > x.rank() || weight.is_some_and(|w| w.shape() != &x.shape()[x.rank() - dims..]) {
        panic!(
            "wgrad: rms_norm: cannot normalise the last {dims} axes of shape {:?} with weight {:?} \
             (shaped like those axes)",
            x.shape(),
            weight.map(|w| w.shape())
        );
    }
    let axes: Vec<isize> = (x.rank() - dims..x.rank()).map(|d| d as isize).collect();
    let y = x * (x.square().mean(&axes, true) + eps).rsqrt();
    match weight {
        Some(w) => y * w,
        None => y,
    }
}

/// Group normalisation of `x` [N, C, ...], as PyTorch's `group_norm`: the
/// C channels are split into `groups` consecutive groups, each sample's
/// group is normalised by its own mean and (biased) variance, then
/// scaled by `weight` `[C]` and shifted by `bias` `[C]` per channel.
/// `groups` = 1 is layer norm over all but the batch axis; `groups` = C is
/// instance norm. A composition (mean, centring, variance, rsqrt, affine).
#[track_caller]
pub fn group_norm(x: &Tensor, groups: usize, weight: Option<&Tensor>, bias: Option<&Tensor>, eps: f32) -> Tensor {
    need_f32("group_norm", x);
    let c = x.shape().get(1).copied().unwrap_or(0);
    let bad_param = |p: Option<&Tensor>| p.is_some_and(|p| p.shape() != [c]);
    if x.rank() < 2 || groups == 0 || c % groups != 0 || bad_param(weight) || bad_param(bias) {
        panic!(
            "wgrad: group_norm: input {:?} ([N, C, ...]) with {groups} groups (dividing C), weight {:?} \
             and bias {:?} (shape [C])",
            x.shape(),
            weight.map(|w| w.shape()),
            bias.map(|b| b.shape())
        );
    }
    let n = x.shape()[0];
    let grouped = x.reshape(&[n, groups, x.numel() / (n * groups).max(1)]);
    let mean = grouped.mean(&[2], true);
    let centered = &grouped - &mean;
    let var = centered.square().mean(&[2], true);
    let mut y = (centered * (var + eps).rsqrt()).reshape(x.shape());
    let mut per_channel = vec![1; x.rank() - 1];
    per_channel[0] = c;
    if let Some(w) = weight {
        y = y * w.reshape(&per_channel);
    }
    if let Some(b) = bias {
        y = y + b.reshape(&per_channel);
    }
    y
}
