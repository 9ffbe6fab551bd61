//! Losses, all numerically stable (they work from logits or log-probabilities
//! through log_softmax / softplus, never log of a rounded probability).

use crate::dtype::DType;
use crate::ops::need_f32;
use crate::tensor::Tensor;

/// How per-sample losses are combined.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Reduction {
    /// The mean (over samples for classification losses, over elements otherwise).
    #[default]
    Mean,
    /// The sum.
    Sum,
    /// No reduction: one loss per sample (or element).
    None,
}

impl Reduction {
    fn apply(self, per_item: Tensor) -> Tensor {
        match self {
            Reduction::Mean => per_item.mean_all(),
            Reduction::Sum => per_item.sum_all(),
            Reduction::None => per_item,
        }
    }
}

#[track_caller]
fn check_class_target(op: &str, scores: &Tensor, target: &Tensor) {
    need_f32(op, scores);
    if scores.rank() != 2 {
        panic!("wgrad: {op}: scores must be [N, C], got {:?}", scores.shape());
    }
    let (n, c) = (scores.shape()[0], scores.shape()[1]);
    let ok = match target.dtype() {
        DType::F32 => target.shape() == [n, c],
        _ => target.shape() == [n],
    };
    if !ok {
        panic!(
            "wgrad: {op}: target {:?} ({}) does not fit scores {:?}: give class indices [N] (u32/i32) \
             or probabilities [N, C] (f32)",
            target.shape(),
            target.dtype(),
            scores.shape()
        );
    }
}

/// Cross-entropy of `logits` [N, C] against class indices `[N]` (u32/i32) or
/// class probabilities [N, C] (f32, e.g. one-hot): −Σ_c t_c · log_softmax(x)_c.
///
/// ```
/// use wgrad::{nn, Device, Tensor};
/// # let dev = Device::new()?;
/// let logits = Tensor::from_slice(&dev, &[2.0f32, 0.0, 0.0, 0.0, 3.0, 0.0], &[2, 3]);
/// let labels = Tensor::from_slice(&dev, &[0u32, 1], &[2]);
/// let loss = nn::cross_entropy(&logits, &labels, nn::Reduction::Mean);
/// let same = nn::cross_entropy(&logits, &labels.one_hot(3), nn::Reduction::Mean);
/// assert!((loss.item::<f32>()? - same.item::<f32>()?).abs() < 1e-6);
/// # Ok::<(), wgrad::Error>(())
/// ```
#[track_caller]
pub fn cross_entropy(logits: &Tensor, target: &Tensor, reduction: Reduction) -> Tensor {
    check_class_target("cross_entropy", logits, target);
    let log_probs = logits.log_softmax(-1);
    if target.dtype() == DType::F32 {
        log_multinomial_loss(&log_probs, target, reduction)
    } else {
        nll_loss(&log_probs, target, reduction)
    }
}

/// Negative log-likelihood of class indices `[N]` under `log_probs` [N, C].
#[track_caller]
pub fn nll_loss(log_probs: &Tensor, target: &Tensor, reduction: Reduction) -> Tensor {
    check_class_target("nll_loss", log_probs, target);
    if target.dtype() == DType::F32 {
        panic!("wgrad: nll_loss: the target must be class indices (u32/i32), got f32");
    }
    let picked = log_probs.gather(1, &target.unsqueeze(1)).squeeze(1);
    reduction.apply(-picked)
}

/// The seed's multinomial loss on log-probabilities: −Σ_c t_c · log_probs_c
/// per sample, for target distributions `t` [N, C] (one-hot or soft).
#[track_caller]
pub fn log_multinomial_loss(log_probs: &Tensor, target: &Tensor, reduction: Reduction) -> Tensor {
    check_class_target("log_multinomial_loss", log_probs, target);
    if target.dtype() != DType::F32 {
        panic!("wgrad: log_multinomial_loss: the target must be probabilities [N, C] (f32)");
    }
    reduction.apply(-(log_probs * target).sum(&[1], false))
}

#[track_caller]
fn check_same(op: &str, a: &Tensor, b: &Tensor) {
    need_f32(op, a);
    need_f32(op, b);
    if a.shape() != b.shape() {
        panic!("wgrad: {op}: prediction {:?} and target {:?} differ in shape", a.shape(), b.shape());
    }
}

/// Mean squared error (per element).
#[track_caller]
pub fn mse_loss(pred: &Tensor, target: &Tensor, reduction: Reduction) -> Tensor {
    check_same("mse_loss", pred, target);
    reduction.apply((pred - target).square())
}

/// Binary cross-entropy of probabilities `p` against targets in [0, 1]; the
/// logs are clamped at −100 as PyTorch does, so p = 0 or 1 (as `sigmoid(x)`
/// is for x ≥ 17 in f32) stays finite, and so does the gradient. Prefer
/// [`bce_with_logits`], which is stable by construction.
#[track_caller]
pub fn bce_loss(p: &Tensor, target: &Tensor, reduction: Reduction) -> Tensor {
    check_same("bce_loss", p, target);
    let (log_p, log_1mp) = (clamped_log(p), clamped_log(&(1.0 - p)));
    reduction.apply(-(target * &log_p + (1.0 - target) * &log_1mp))
}

/// log x, or −100 where x is zero or below the normal f32 range (where the
/// log is below −87 anyway). The clamp is a choice of branch, not a
/// `maximum` of log x: that would pass a zero gradient into the log's VJP,
/// which divides it by x = 0 (NaN). Here the log is taken of 1 where it is
/// not used, so its VJP never sees 0/0.
#[track_caller]
fn clamped_log(x: &Tensor) -> Tensor {
    let live = x.ge(f32::MIN_POSITIVE);
    live.where_(&live.where_(x, 1.0).log(), -100.0)
}

/// Binary cross-entropy of σ(logits): softplus(x) − x·t, stable for any x.
#[track_caller]
pub fn bce_with_logits(logits: &Tensor, target: &Tensor, reduction: Reduction) -> Tensor {
    check_same("bce_with_logits", logits, target);
    reduction.apply(logits.softplus() - logits * target)
}
