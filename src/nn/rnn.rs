//! Recurrent cells as functions of one time step (PyTorch's `LSTMCell` and
//! `GRUCell`, same weight layout and gate order, so weights load from its
//! checkpoints). The recurrence over time is the caller's plain Rust loop:
//!
//! ```
//! use wgrad::{nn, Device, Tensor};
//! # let dev = Device::new()?;
//! let (n, i, h) = (2, 3, 4);
//! let (w_ih, w_hh) = (Tensor::randn(&dev, &[4 * h, i]), Tensor::randn(&dev, &[4 * h, h]));
//! let xs = Tensor::randn(&dev, &[5, n, i]); // time, batch, features
//! let mut state = (Tensor::zeros(&dev, &[n, h]), Tensor::zeros(&dev, &[n, h]));
//! for t in 0..5 {
//!     let x = xs.narrow(0, t, 1).squeeze(0);
//!     state = nn::lstm_cell(&x, (&state.0, &state.1), &w_ih, &w_hh, None, None);
//! }
//! assert_eq!(state.0.shape(), &[n, h]);
//! # Ok::<(), wgrad::Error>(())
//! ```

use crate::tensor::Tensor;

/// x·W_ihᵀ + b_ih and h·W_hhᵀ + b_hh, after checking the shapes: `gates`
/// gates of width H = h.dim(-1).
#[track_caller]
#[allow(clippy::too_many_arguments)]
fn projections(
    op: &str,
    gates: usize,
    x: &Tensor,
    h: &Tensor,
    w_ih: &Tensor,
    w_hh: &Tensor,
    b_ih: Option<&Tensor>,
    b_hh: Option<&Tensor>,
) -> (Tensor, Tensor) {
    let hs = if h.rank() == 0 { 0 } else { h.dim(-1) };
    let fits = x.rank() >= 1
        && w_ih.shape() == [gates * hs, x.dim(-1)]
        && w_hh.shape() == [gates * hs, hs]
        && b_ih.is_none_or(|b| b.shape() == [gates * hs])
        && b_hh.is_none_or(|b| b.shape() == [gates * hs]);
    if !fits {
        panic!(
            "wgrad: {op}: input {:?} and hidden state {:?} need w_ih [{gates}·H, I], w_hh [{gates}·H, H] and \
             biases [{gates}·H], got {:?}, {:?}, {:?}, {:?}",
            x.shape(),
            h.shape(),
            w_ih.shape(),
            w_hh.shape(),
            b_ih.map(|b| b.shape().to_vec()),
            b_hh.map(|b| b.shape().to_vec())
        );
    }
    let affine = |x: &Tensor, w: &Tensor, b: Option<&Tensor>| {
        let y = x.matmul(&w.t());
        b.map_or_else(|| y.clone(), |b| &y + b)
    };
    (affine(x, w_ih, b_ih), affine(h, w_hh, b_hh))
}

/// One LSTM step: `x` [..., I], state `(h, c)` [..., H]; returns `(h', c')`.
/// Gates in PyTorch's order (input, forget, cell, output) along the rows
/// of `w_ih` [4H, I] and `w_hh` [4H, H]:
///
/// ```text
/// i, f, g, o = split(x·W_ihᵀ + b_ih + h·W_hhᵀ + b_hh)
/// c' = σ(f)⊙c + σ(i)⊙tanh(g);   h' = σ(o)⊙tanh(c')
/// ```
#[track_caller]
pub fn lstm_cell(
    x: &Tensor,
    (h, c): (&Tensor, &Tensor),
    w_ih: &Tensor,
    w_hh: &Tensor,
    b_ih: Option<&Tensor>,
    b_hh: Option<&Tensor>,
) -> (Tensor, Tensor) {
    if c.shape() != h.shape() {
        panic!("wgrad: lstm_cell: h {:?} and c {:?} must have one shape", h.shape(), c.shape());
    }
    let (xi, hh) = projections("lstm_cell", 4, x, h, w_ih, w_hh, b_ih, b_hh);
    let gates = (xi + hh).chunk(4, -1);
    let (i, f, g, o) = (gates[0].sigmoid(), gates[1].sigmoid(), gates[2].tanh(), gates[3].sigmoid());
    let c_next = f * c + i * g;
    let h_next = o * c_next.tanh();
    (h_next, c_next)
}

/// One GRU step: `x` [..., I], `h` [..., H]; returns h'. Gates in PyTorch's
/// order (reset, update, new) along the rows of `w_ih` [3H, I] and `w_hh`
/// [3H, H]; the reset gate multiplies h·W_hnᵀ + b_hn, as PyTorch (and cuDNN):
///
/// ```text
/// r = σ(x·W_irᵀ + b_ir + h·W_hrᵀ + b_hr);   z = σ(x·W_izᵀ + b_iz + h·W_hzᵀ + b_hz)
/// n = tanh(x·W_inᵀ + b_in + r⊙(h·W_hnᵀ + b_hn));   h' = (1 − z)⊙n + z⊙h
/// ```
#[track_caller]
pub fn gru_cell(
    x: &Tensor,
    h: &Tensor,
    w_ih: &Tensor,
    w_hh: &Tensor,
    b_ih: Option<&Tensor>,
    b_hh: Option<&Tensor>,
) -> Tensor {
    let (xi, hh) = projections("gru_cell", 3, x, h, w_ih, w_hh, b_ih, b_hh);
    let (xs, hs) = (xi.chunk(3, -1), hh.chunk(3, -1));
    let r = (&xs[0] + &hs[0]).sigmoid();
    let z = (&xs[1] + &hs[1]).sigmoid();
    let n = (&xs[2] + r * &hs[2]).tanh();
    // (1 − z)⊙n + z⊙h = n + z⊙(h − n)
    &n + z * (h - &n)
}
