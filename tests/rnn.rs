//! LSTM and GRU cells against f64 references of PyTorch's equations (gate
//! order i, f, g, o and r, z, n), over a few steps of a plain Rust loop;
//! gradients against the reference's central differences, and gradcheck
//! with forward mode and second order.

mod common;

use common::*;
use wgrad::{GradcheckOptions, Tensor, grad, gradcheck, nn};

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// x·Wᵀ + b for one row x, the gates' pre-activations.
fn affine(x: &[f64], w: &Array, b: &Array) -> Vec<f64> {
    let (rows, cols) = (w.shape[0], w.shape[1]);
    (0..rows).map(|r| b.data[r] + (0..cols).map(|c| w.data[r * cols + c] * x[c]).sum::<f64>()).collect()
}

/// The inputs of a run: xs [T, N, I], h0, (c0), w_ih, w_hh, b_ih, b_hh.
type Inputs = Vec<Array>;

/// T steps of the cell; returns the last hidden state [N, H].
fn lstm_ref(p: &Inputs) -> Array {
    let [xs, h0, c0, w_ih, w_hh, b_ih, b_hh] = &p[..] else { unreachable!() };
    let (steps, n, i_dim, hd) = (xs.shape[0], xs.shape[1], xs.shape[2], h0.shape[1]);
    let (mut h, mut c) = (h0.data.clone(), c0.data.clone());
    for t in 0..steps {
        for b in 0..n {
            let x = &xs.data[(t * n + b) * i_dim..(t * n + b + 1) * i_dim];
            let gi = affine(x, w_ih, b_ih);
            let gh = affine(&h[b * hd..(b + 1) * hd], w_hh, b_hh);
            for j in 0..hd {
                let a = |k: usize| gi[k * hd + j] + gh[k * hd + j];
                let (ig, fg, gg) = (sigmoid(a(0)), sigmoid(a(1)), a(2).tanh());
                c[b * hd + j] = fg * c[b * hd + j] + ig * gg;
            }
            for j in 0..hd {
                let og = sigmoid(gi[3 * hd + j] + gh[3 * hd + j]);
                h[b * hd + j] = og * c[b * hd + j].tanh();
            }
        }
    }
    Array::new(&[n, hd], h)
}

fn gru_ref(p: &Inputs) -> Array {
    let [xs, h0, w_ih, w_hh, b_ih, b_hh] = &p[..] else { unreachable!() };
    let (steps, n, i_dim, hd) = (xs.shape[0], xs.shape[1], xs.shape[2], h0.shape[1]);
    let mut h = h0.data.clone();
    for t in 0..steps {
        for b in 0..n {
            let x = &xs.data[(t * n + b) * i_dim..(t * n + b + 1) * i_dim];
            let gi = affine(x, w_ih, b_ih);
            let gh = affine(&h[b * hd..(b + 1) * hd], w_hh, b_hh);
            for j in 0..hd {
                let r = sigmoid(gi[j] + gh[j]);
                let z = sigmoid(gi[hd + j] + gh[hd + j]);
                let nn = (gi[2 * hd + j] + r * gh[2 * hd + j]).tanh();
                h[b * hd + j] = (1.0 - z) * nn + z * h[b * hd + j];
            }
        }
    }
    Array::new(&[n, hd], h)
}

fn lstm_gpu(p: &[Tensor]) -> Tensor {
    let (mut h, mut c) = (p[1].clone(), p[2].clone());
    for t in 0..p[0].shape()[0] {
        let x = p[0].narrow(0, t, 1).squeeze(0);
        (h, c) = nn::lstm_cell(&x, (&h, &c), &p[3], &p[4], Some(&p[5]), Some(&p[6]));
    }
    h
}

fn gru_gpu(p: &[Tensor]) -> Tensor {
    let mut h = p[1].clone();
    for t in 0..p[0].shape()[0] {
        let x = p[0].narrow(0, t, 1).squeeze(0);
        h = nn::gru_cell(&x, &h, &p[2], &p[3], Some(&p[4]), Some(&p[5]));
    }
    h
}

/// Checks values, every input's gradient against central differences of
/// the reference, and gradcheck (forward mode, second order).
fn check(name: &str, inputs: Inputs, reference: fn(&Inputs) -> Array, gpu: fn(&[Tensor]) -> Tensor) {
    let mut rng = Rng::new(77);
    let ts: Vec<Tensor> = inputs.iter().map(upload).collect();
    let want = reference(&inputs);
    assert_close(&format!("{name}: value"), &download(&gpu(&ts)), &want, 1e-5, 1e-6);
    let w = rng.array(&want.shape, -1.0, 1.0);
    let f = |p: &Vec<Tensor>, w: &Tensor| (gpu(p) * w).sum_all();
    let (g, _, ()) = grad(f)(&ts, &upload(&w));
    let h = 1e-6;
    for (k, gk) in g.iter().enumerate() {
        let mut num = inputs[k].clone();
        for e in 0..num.data.len() {
            let mut xs = inputs.clone();
            let loss = |xs: &Inputs| reference(xs).data.iter().zip(&w.data).map(|(a, b)| a * b).sum::<f64>();
            xs[k].data[e] += h;
            let up = loss(&xs);
            xs[k].data[e] -= 2.0 * h;
            num.data[e] = (up - loss(&xs)) / (2.0 * h);
        }
        assert_close(&format!("{name}: gradient {k}"), &download(gk), &num, 1e-4, 1e-5);
    }
    let opts = GradcheckOptions { forward: true, order: 2, ..Default::default() };
    let report = gradcheck(f, &ts, &upload(&w), &opts).unwrap();
    assert!(report.passed, "{name}: {report:?}");
}

#[test]
fn lstm_cell_matches_pytorchs_equations() {
    let mut rng = Rng::new(1);
    let (steps, n, i, h) = (3, 2, 3, 4);
    let mut a = |s: &[usize]| rng.array(s, -0.8, 0.8);
    let inputs =
        vec![a(&[steps, n, i]), a(&[n, h]), a(&[n, h]), a(&[4 * h, i]), a(&[4 * h, h]), a(&[4 * h]), a(&[4 * h])];
    check("lstm", inputs, lstm_ref, lstm_gpu);
}

#[test]
fn gru_cell_matches_pytorchs_equations() {
    let mut rng = Rng::new(2);
    let (steps, n, i, h) = (3, 2, 3, 5);
    let mut a = |s: &[usize]| rng.array(s, -0.8, 0.8);
    let inputs = vec![a(&[steps, n, i]), a(&[n, h]), a(&[3 * h, i]), a(&[3 * h, h]), a(&[3 * h]), a(&[3 * h])];
    check("gru", inputs, gru_ref, gru_gpu);
}

#[test]
fn cells_reject_mismatched_weights() {
    let d = dev();
    let x = Tensor::zeros(d, &[2, 3]);
    let h = Tensor::zeros(d, &[2, 4]);
    let (msg, _) = panic_of(std::panic::AssertUnwindSafe(|| {
        nn::gru_cell(&x, &h, &Tensor::zeros(d, &[15, 3]), &Tensor::zeros(d, &[15, 4]), None, None);
    }));
    assert!(msg.contains("gru_cell") && msg.contains("[3·H, I]"), "{msg}");
    let (msg, _) = panic_of(std::panic::AssertUnwindSafe(|| {
        nn::lstm_cell(&x, (&h, &h), &Tensor::zeros(d, &[16, 3]), &Tensor::zeros(d, &[16, 3]), None, None);
    }));
    assert!(msg.contains("lstm_cell"), "{msg}");
}
