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
    /// The sum divided by the batch size (the first axis): PyTorch's
    /// `'batchmean'` of `kl_div`, where it gives the true KL divergence per
    /// sample (`Mean` divides by every element). Any loss here accepts it;
    /// for per-sample losses it equals `Mean` (without class weights).
    BatchMean,
}

impl Reduction {
    fn apply(self, per_item: Tensor) -> Tensor {
        match self {
            Reduction::Mean => per_item.mean_all(),
            Reduction::Sum => per_item.sum_all(),
            Reduction::None => per_item,
            Reduction::BatchMean => {
                let n = per_item.shape().first().copied().unwrap_or(1);
                per_item.sum_all() / n as f32
            }
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

/// Mean absolute error (per element): |pred − target|. At pred = target
/// the gradient is 0, as PyTorch's.
#[track_caller]
pub fn l1_loss(pred: &Tensor, target: &Tensor, reduction: Reduction) -> Tensor {
    check_same("l1_loss", pred, target);
    reduction.apply((pred - target).abs())
}

/// PyTorch's `smooth_l1_loss`: with d = pred − target, 0.5·d²/β where
/// |d| < β, |d| − 0.5·β elsewhere (β = 0 is [`l1_loss`]). β must be ≥ 0.
#[track_caller]
pub fn smooth_l1_loss(pred: &Tensor, target: &Tensor, beta: f32, reduction: Reduction) -> Tensor {
    check_same("smooth_l1_loss", pred, target);
    if beta.is_nan() || beta < 0.0 {
        panic!("wgrad: smooth_l1_loss: beta must be non-negative, got {beta}");
    }
    if beta == 0.0 {
        // the quadratic branch would divide by 0 (and its unused gradient 0/0 is NaN)
        return l1_loss(pred, target, reduction);
    }
    let d = pred - target;
    let a = d.abs();
    reduction.apply(a.lt(beta).where_(&(d.square() * (0.5 / beta)), &(&a - 0.5 * beta)))
}

/// PyTorch's `huber_loss`: with d = pred − target, 0.5·d² where |d| < δ,
/// δ·(|d| − 0.5·δ) elsewhere; δ · [`smooth_l1_loss`] with β = δ. δ must be > 0.
#[track_caller]
pub fn huber_loss(pred: &Tensor, target: &Tensor, delta: f32, reduction: Reduction) -> Tensor {
    check_same("huber_loss", pred, target);
    if delta.is_nan() || delta <= 0.0 {
        panic!("wgrad: huber_loss: delta must be positive, got {delta}");
    }
    let d = pred - target;
    let a = d.abs();
    reduction.apply(a.lt(delta).where_(&(d.square() * 0.5), &((&a - 0.5 * delta) * delta)))
}

/// Kullback–Leibler divergence KL(target ‖ input) per element, as PyTorch's
/// `kl_div`: `input` holds log-probabilities, `target` probabilities
/// (t·(log t − x), 0 where t = 0, NaN for t < 0 as PyTorch's `xlogy`) or,
/// with `log_target`, log-probabilities (eᵗ·(t − x)). Use
/// [`Reduction::BatchMean`] for the divergence per sample (`Mean`, as
/// PyTorch's, divides by every element).
///
/// ```
/// use wgrad::{nn, Device, Tensor};
/// # let dev = Device::new()?;
/// let p = Tensor::from_slice(&dev, &[0.5f32, 0.5], &[1, 2]);
/// let q = Tensor::from_slice(&dev, &[0.25f32, 0.75], &[1, 2]);
/// let kl = nn::kl_div(&q.log(), &p, false, nn::Reduction::BatchMean);
/// let want = 0.5 * (0.5f32 / 0.25).ln() + 0.5 * (0.5f32 / 0.75).ln();
/// assert!((kl.item::<f32>()? - want).abs() < 1e-6);
/// # Ok::<(), wgrad::Error>(())
/// ```
#[track_caller]
pub fn kl_div(input: &Tensor, target: &Tensor, log_target: bool, reduction: Reduction) -> Tensor {
    check_same("kl_div", input, target);
    let per = if log_target {
        target.exp() * (target - input)
    } else {
        // t·log t as a choice of branch, so that neither the value nor the
        // gradient sees log 0 (see `clamped_log`)
        let zero = target.eq(0.0);
        let tlogt = zero.where_(0.0, &(target * zero.where_(1.0, target).log()));
        tlogt - target * input
    };
    reduction.apply(per)
}

/// Options of [`cross_entropy_with`], PyTorch's `cross_entropy` arguments.
#[derive(Clone, Copy, Debug, Default)]
pub struct CrossEntropyOptions<'a> {
    /// A weight per class `[C]`.
    pub weight: Option<&'a Tensor>,
    /// Samples with this class index add nothing, to the loss nor to the
    /// weights of the mean (class-index targets only; PyTorch's default
    /// is −100, here none).
    pub ignore_index: Option<i64>,
    /// ε in [0, 1]: the target becomes (1 − ε)·target + ε/C (uniform).
    pub label_smoothing: f32,
}

/// Cross-entropy of `logits` [N, C] with PyTorch's `weight`, `ignore_index`
/// and `label_smoothing` (see [`CrossEntropyOptions`]), and its semantics:
///
/// - class indices y: per sample, ℓᵢ = (1 − ε)·w[yᵢ]·(−log pᵢ[yᵢ]) +
///   (ε/C)·Σ_c w[c]·(−log pᵢ[c]), 0 where yᵢ is ignored; `Mean` divides the
///   sum by Σᵢ w[yᵢ] over the samples not ignored (NaN if all are), not by N.
/// - probabilities t [N, C]: ℓᵢ = −Σ_c w[c]·t'ᵢ[c]·log pᵢ[c] with
///   t' = (1 − ε)·t + ε/C; `Mean` divides by N.
///
/// ```
/// use wgrad::{nn, Device, Tensor};
/// # let dev = Device::new()?;
/// let logits = Tensor::from_slice(&dev, &[2.0f32, 0.0, 0.0, 3.0], &[2, 2]);
/// let labels = Tensor::from_slice(&dev, &[0i32, -100], &[2]);
/// let opts = nn::CrossEntropyOptions { ignore_index: Some(-100), ..Default::default() };
/// let loss = nn::cross_entropy_with(&logits, &labels, nn::Reduction::Mean, opts);
/// let first = nn::cross_entropy(&logits.narrow(0, 0, 1), &labels.narrow(0, 0, 1), nn::Reduction::Mean);
/// assert!((loss.item::<f32>()? - first.item::<f32>()?).abs() < 1e-6);
/// # Ok::<(), wgrad::Error>(())
/// ```
#[track_caller]
pub fn cross_entropy_with(
    logits: &Tensor,
    target: &Tensor,
    reduction: Reduction,
    opts: CrossEntropyOptions<'_>,
) -> Tensor {
    let op = "cross_entropy_with";
    check_class_target(op, logits, target);
    let (n, c) = (logits.shape()[0], logits.shape()[1]);
    let eps = opts.label_smoothing;
    if !(0.0..=1.0).contains(&eps) {
        panic!("wgrad: {op}: label smoothing {eps} is not in [0, 1]");
    }
    if let Some(w) = opts.weight {
        need_f32(op, w);
        if w.shape() != [c] {
            panic!("wgrad: {op}: the class weights must have shape [C] = [{c}], got {:?}", w.shape());
        }
    }
    let log_probs = logits.log_softmax(-1);
    let weighted = match opts.weight {
        Some(w) => &log_probs * w,
        None => log_probs.clone(),
    };
    if target.dtype() == DType::F32 {
        if opts.ignore_index.is_some() {
            panic!("wgrad: {op}: ignore_index needs class-index targets, got probabilities {:?}", target.shape());
        }
        let smoothed = if eps > 0.0 { target * (1.0 - eps) + eps / c as f32 } else { target.clone() };
        return reduction.apply(-(weighted * smoothed).sum(&[1], false));
    }
    // the ignored samples: a mask, and their index replaced by 0 for the gathers
    let keep = match (opts.ignore_index, target.dtype()) {
        (Some(i), DType::U32) if (0..=u32::MAX as i64).contains(&i) => Some(target.ne(i as u32)),
        (Some(i), DType::I32) if (i32::MIN as i64..=i32::MAX as i64).contains(&i) => Some(target.ne(i as i32)),
        _ => None,
    };
    let safe = match &keep {
        Some(k) => k.where_(target, 0),
        None => target.clone(),
    };
    let keep_f = keep.map(|k| k.cast(DType::F32));
    let masked = |t: Tensor| match &keep_f {
        Some(k) => t * k,
        None => t,
    };
    // w[yᵢ] (1 without weights), 0 where ignored: the mean's denominators
    let picked_weight = masked(match opts.weight {
        Some(w) => w.index_select(0, &safe),
        None => Tensor::ones(logits.device(), &[n]),
    });
    let mut per = masked(-weighted.gather(1, &safe.unsqueeze(1)).squeeze(1));
    if eps > 0.0 {
        let smooth = masked(-weighted.sum(&[1], false));
        per = per * (1.0 - eps) + smooth * (eps / c as f32);
    }
    match reduction {
        Reduction::Mean => per.sum_all() / picked_weight.sum_all(),
        _ => reduction.apply(per),
    }
}
