//! Scaled dot-product attention and multi-head attention, as functions of
//! tensors. The weights softmax(q·kᵀ/√D + mask) come from one row kernel
//! that applies the 1/√D scale and the causal mask itself (by comparing
//! indices: no mask tensor is made), so causal attention is two matmuls and
//! one softmax.

use crate::Params;
use crate::ops::softmax::scaled_softmax;
use crate::tensor::Tensor;

/// x·wᵀ + b (`nn::linear` without its checks: this module sits below
/// `nn/mod.rs`, which re-exports it).
fn project(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Tensor {
    let y = x.matmul(&w.t());
    match b {
        Some(b) => y + b,
        None => y,
    }
}

/// What [`scaled_dot_product_attention`] hides from each query.
#[derive(Clone, Copy, Debug)]
pub enum AttnMask<'a> {
    /// Every query sees every key.
    None,
    /// Query i sees keys j ≤ i (top-left aligned, as PyTorch's `is_causal`:
    /// with Tq ≠ Tk, query i still sees keys 0..=i). Made in the softmax
    /// kernel from the indices.
    Causal,
    /// Added to the scaled scores before the softmax: a tensor broadcasting
    /// to [..., Tq, Tk], −∞ where a key is hidden (PyTorch's float mask;
    /// for its boolean mask `m`, pass `zeros.masked_fill(!m, −∞)`). It is
    /// differentiable, so a learned bias (ALiBi, relative positions) trains.
    Additive(&'a Tensor),
}

/// softmax(q·kᵀ/√D + mask)·v, with dropout of probability `dropout_p` on
/// the weights when `train`, as PyTorch's `scaled_dot_product_attention`.
///
/// `q` is [..., Tq, D], `k` [..., Tk, D], `v` [..., Tk, Dv]; the leading
/// axes (batch, heads) broadcast. The result is [..., Tq, Dv]. A query
/// whose keys are all masked out (an additive mask of −∞ across its row)
/// gets weights 0 and output 0, with zero gradients — PyTorch ≥ 2.5's
/// behaviour; earlier versions gave NaN.
///
/// ```
/// use wgrad::{nn, nn::AttnMask, Device, Tensor};
/// # let dev = Device::new()?;
/// let q = Tensor::ones(&dev, &[2, 4, 3, 8]); // batch, heads, Tq, D
/// let kv = Tensor::randn(&dev, &[2, 4, 5, 8]);
/// let y = nn::scaled_dot_product_attention(&q, &kv, &kv, AttnMask::Causal, 0.0, false);
/// assert_eq!(y.shape(), &[2, 4, 3, 8]);
/// // the first query sees only the first key: its output is that key's value
/// let first = y.narrow(2, 0, 1).to_vec::<f32>()?;
/// let key0 = kv.narrow(2, 0, 1).to_vec::<f32>()?;
/// assert!(first.iter().zip(&key0).all(|(a, b)| (a - b).abs() < 1e-5));
/// # Ok::<(), wgrad::Error>(())
/// ```
#[track_caller]
pub fn scaled_dot_product_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: AttnMask,
    dropout_p: f32,
    train: bool,
) -> Tensor {
    let fits = q.rank() >= 2
        && k.rank() >= 2
        && v.rank() >= 2
        && q.dim(-1) == k.dim(-1)
        && k.dim(-2) == v.dim(-2)
        && q.dim(-1) > 0;
    if !fits {
        panic!(
            "wgrad: scaled_dot_product_attention: q {:?}, k {:?}, v {:?} must be [..., Tq, D], [..., Tk, D], \
             [..., Tk, Dv] with D > 0",
            q.shape(),
            k.shape(),
            v.shape()
        );
    }
    let scale = 1.0 / (q.dim(-1) as f32).sqrt();
    let scores = q.matmul(&k.transpose(-2, -1));
    let weights = match mask {
        AttnMask::None => scaled_softmax(&scores, scale, false),
        AttnMask::Causal => scaled_softmax(&scores, scale, true),
        // softmax(s·(x + m/s)) = softmax(s·x + m): the mask is scaled, not
        // the (usually larger) scores
        AttnMask::Additive(m) => scaled_softmax(&(scores + m * (1.0 / scale)), scale, false),
    };
    if !(0.0..1.0).contains(&dropout_p) {
        panic!("wgrad: scaled_dot_product_attention: dropout probability {dropout_p} is not in [0, 1)");
    }
    if train && dropout_p > 0.0 {
        // as nn::dropout: the device's seeded uniforms ≥ p keep, scaled by 1/(1 − p)
        let keep = Tensor::rand(weights.device(), weights.shape()).ge(dropout_p);
        return keep.where_(&(weights * (1.0 / (1.0 - dropout_p))), 0.0).matmul(v);
    }
    weights.matmul(v)
}

/// The projections of [`multi_head_attention`], PyTorch's layout: each
/// weight is [out, in], `w_q` and `w_k` [E, Eq] and [E, Ekv], `w_v`
/// [E, Ekv], `w_o` [Eo, E]; biases of length out.
#[derive(Params, Clone, Debug)]
pub struct MhaParams {
    pub w_q: Tensor,
    pub w_k: Tensor,
    pub w_v: Tensor,
    pub w_o: Tensor,
    pub b_q: Option<Tensor>,
    pub b_k: Option<Tensor>,
    pub b_v: Option<Tensor>,
    pub b_o: Option<Tensor>,
}

impl MhaParams {
    /// Xavier-uniform weights (as PyTorch's `MultiheadAttention`) for model
    /// width `e` (queries, keys, values and output all `e` wide), with zero
    /// biases when `bias`.
    pub fn new(device: &crate::Device, e: usize, bias: bool) -> MhaParams {
        let w = || super::init::xavier_uniform(device, &[e, e], 1.0);
        let b = || bias.then(|| Tensor::zeros(device, &[e]));
        MhaParams { w_q: w(), w_k: w(), w_v: w(), w_o: w(), b_q: b(), b_k: b(), b_v: b(), b_o: b() }
    }
}

/// Multi-head attention: projects `x_q` [..., Tq, Eq] and `x_kv` [..., Tk, Ekv]
/// to queries, keys and values of width E, splits them into `heads` heads of
/// E/heads, attends per head with [`scaled_dot_product_attention`], merges
/// the heads and projects with `w_o`. Self-attention passes the same tensor
/// twice. The result is [..., Tq, Eo].
///
/// ```
/// use wgrad::{nn, nn::{AttnMask, MhaParams}, Device, Tensor};
/// # let dev = Device::new()?;
/// let p = MhaParams::new(&dev, 16, true);
/// let x = Tensor::randn(&dev, &[2, 5, 16]);
/// let y = nn::multi_head_attention(&x, &x, &p, 4, AttnMask::Causal, 0.1, true);
/// assert_eq!(y.shape(), &[2, 5, 16]);
/// # Ok::<(), wgrad::Error>(())
/// ```
#[track_caller]
#[allow(clippy::too_many_arguments)]
pub fn multi_head_attention(
    x_q: &Tensor,
    x_kv: &Tensor,
    params: &MhaParams,
    heads: usize,
    mask: AttnMask,
    dropout_p: f32,
    train: bool,
) -> Tensor {
    let e = params.w_q.shape()[0];
    let fits = x_q.rank() >= 2
        && x_kv.rank() >= 2
        && heads > 0
        && e % heads == 0
        && params.w_k.shape()[0] == e
        && params.w_v.shape()[0] == e
        && params.w_o.rank() == 2
        && params.w_o.shape()[1] == e;
    if !fits {
        panic!(
            "wgrad: multi_head_attention: {heads} heads do not fit inputs {:?}, {:?} and weights q {:?}, k {:?}, \
             v {:?}, o {:?}",
            x_q.shape(),
            x_kv.shape(),
            params.w_q.shape(),
            params.w_k.shape(),
            params.w_v.shape(),
            params.w_o.shape()
        );
    }
    // [..., T, E] → [..., heads, T, E/heads]
    let split = |x: Tensor| {
        let mut shape = x.shape().to_vec();
        let t = shape[shape.len() - 2];
        shape.truncate(shape.len() - 2);
        shape.extend([t, heads, e / heads]);
        x.reshape(&shape).transpose(-3, -2)
    };
    let q = split(project(x_q, &params.w_q, params.b_q.as_ref()));
    let k = split(project(x_kv, &params.w_k, params.b_k.as_ref()));
    let v = split(project(x_kv, &params.w_v, params.b_v.as_ref()));
    let y = scaled_dot_product_attention(&q, &k, &v, mask, dropout_p, train);
    // [..., heads, Tq, E/heads] → [..., Tq, E]
    let y = y.transpose(-3, -2);
    let mut shape = y.shape()[..y.rank() - 2].to_vec();
    shape.push(e);
    project(&y.reshape(&shape), &params.w_o, params.b_o.as_ref())
}
