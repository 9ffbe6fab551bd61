//! Compiled steps update a large parameter inside the matmul that computes
//! its gradient: the same parameters as eager mode bit for bit (the same
//! rule functions on the same values), and as an f64 reference of the
//! rules; the path is taken where it applies and only there.

mod common;

use common::*;
use wgrad::nn;
use wgrad::optim::Optimizer;
use wgrad::{Device, Params, Tensor, compile, grad};

/// Small integers as f32: every product and sum of the gradient is exact,
/// so the reference's gradient is the kernel's.
fn integers(d: &Device, rng: &mut Rng, shape: &[usize], max: usize) -> Tensor {
    let n = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.below(2 * max + 1) as f32 - max as f32).collect();
    Tensor::from_slice(d, &v, shape)
}

/// L(w) = Σ (x·w) ⊙ y, or with `linear`, Σ (x·wᵀ) ⊙ y (w stored [out, in]
/// as `nn::linear` keeps it): dL/dw = xᵀ·y (or its transpose), one matmul.
fn loss(w: &Tensor, (x, y): &(Tensor, Tensor), linear: bool) -> Tensor {
    let out = if linear { nn::linear(x, w, None) } else { x.matmul(w) };
    (out * y).sum_all()
}

/// The parameter after training eagerly and compiled from `w0`, with the
/// labels of the compiled step's generated kernels.
fn train(
    w0: &Tensor,
    batches: &[(Tensor, Tensor)],
    linear: bool,
    opt: &Optimizer,
) -> (Vec<f32>, Vec<f32>, Vec<String>) {
    let d = w0.device().clone();
    let mut results = Vec::new();
    let mut labels = Vec::new();
    for compiled in [false, true] {
        let mut o = opt.clone();
        // a buffer of its own: compiled steps update their state in place
        let w = Tensor::from_slice(&d, &w0.to_vec::<f32>().unwrap(), w0.shape());
        o.init(&w);
        let mut state = (w, o);
        let mut step = compile(|(w, o): &mut (Tensor, Optimizer), b: &(Tensor, Tensor)| {
            let (g, l, ()) = grad(|w: &Tensor, b: &(Tensor, Tensor)| loss(w, b, linear))(w, b);
            *w = o.step(w, &g);
            l
        });
        let before = d.counters();
        for b in batches {
            match compiled {
                true => step.run(&mut state, b).map(|_| ()).unwrap(),
                false => drop(step.run_eager(&mut state, b)),
            }
        }
        // no dispatch binds a buffer it writes twice (browsers refuse it)
        assert_eq!((d.counters() - before).aliased_bindings, 0, "compiled: {compiled}");
        results.push(state.0.to_vec::<f32>().unwrap());
        if compiled {
            labels = step.wgsl().unwrap().iter().map(|(label, _)| label.clone()).collect();
        }
    }
    let c = results.pop().unwrap();
    (results.pop().unwrap(), c, labels)
}

/// The rules in f64 (PyTorch's formulas): SGD with momentum μ, Nesterov
/// and weight decay λ; Adam.
fn reference(w0: &[f32], grads: &[Vec<f64>], opt: &str, lr: f64) -> Vec<f64> {
    let mut w: Vec<f64> = w0.iter().map(|&x| x as f64).collect();
    let (mut s1, mut s2) = (vec![0.0; w.len()], vec![0.0; w.len()]);
    for (t, g) in grads.iter().enumerate() {
        for i in 0..w.len() {
            match opt {
                "sgd" => w[i] -= lr * g[i],
                "sgd-momentum" => {
                    // μ = 0.9, Nesterov, λ = 0.01
                    let d = g[i] + 0.01 * w[i];
                    s1[i] = 0.9 * s1[i] + d;
                    w[i] -= lr * (d + 0.9 * s1[i]);
                }
                "adam" => {
                    let (b1, b2, n) = (0.9f64, 0.999f64, (t + 1) as i32);
                    s1[i] = b1 * s1[i] + (1.0 - b1) * g[i];
                    s2[i] = b2 * s2[i] + (1.0 - b2) * g[i] * g[i];
                    let (m, v) = (s1[i] / (1.0 - b1.powi(n)), s2[i] / (1.0 - b2.powi(n)));
                    w[i] -= lr * m / (v.sqrt() + 1e-8);
                }
                _ => unreachable!("{opt}"),
            }
        }
    }
    w
}

/// xᵀ·y in f64, laid out as w ([k, n], or [n, k] with `linear`).
fn gradient(x: &Tensor, y: &Tensor, linear: bool) -> Vec<f64> {
    let (xv, yv) = (x.to_vec::<f32>().unwrap(), y.to_vec::<f32>().unwrap());
    let (b, k, n) = (x.dim(0), x.dim(1), y.dim(1));
    let mut g = vec![0.0; k * n];
    for r in 0..b {
        for i in 0..k {
            for j in 0..n {
                let at = if linear { j * k + i } else { i * n + j };
                g[at] += xv[r * k + i] as f64 * yv[r * n + j] as f64;
            }
        }
    }
    g
}

fn fused(labels: &[String]) -> bool {
    labels.iter().any(|l| l.starts_with("matmul") && l.ends_with(" in place"))
}

/// Parameters past the size updated alone (with four-wide stores: n a
/// multiple of 4; element by element: not; w read transposed, as
/// `nn::linear` does; batch 1 and more), against eager mode bit for bit
/// and the f64 rules within rounding. Small parameters stay with the
/// shared update and give the same numbers too.
#[test]
fn large_updates_run_in_the_matmul_of_their_gradient() {
    let d = own_device();
    let mut rng = Rng::new(3);
    // (k, n, batch, read transposed, takes the path: on every adapter, on
    // none, or depending on the adapter's kernel)
    let shapes = [
        (160, 128, 8, false, Some(true)),
        (160, 128, 40, false, None),
        (161, 130, 3, false, None),
        (130, 161, 1, true, None),
        (170, 100, 5, true, None),
        (20, 30, 4, false, Some(false)),
    ];
    let rules = [
        ("sgd", Optimizer::sgd(0.01)),
        ("sgd-momentum", Optimizer::sgd(0.01).momentum(0.9).nesterov().weight_decay(0.01)),
        ("adam", Optimizer::adam(0.01)),
        ("", Optimizer::adamw(0.01, 0.1)),
        ("", Optimizer::rmsprop(0.01).momentum(0.5)),
        ("", Optimizer::lion(0.01)),
    ];
    for (k, n, b, linear, path) in shapes {
        let shape = if linear { [n, k] } else { [k, n] };
        let w0 = Tensor::from_slice(
            &d,
            &rng.array(&shape, -1.0, 1.0).data.iter().map(|&x| x as f32).collect::<Vec<_>>(),
            &shape,
        );
        let batches: Vec<(Tensor, Tensor)> =
            (0..4).map(|_| (integers(&d, &mut rng, &[b, k], 3), integers(&d, &mut rng, &[b, n], 2))).collect();
        let grads: Vec<Vec<f64>> = batches.iter().map(|(x, y)| gradient(x, y, linear)).collect();
        // (the other rules' kernels differ only in the rule they call)
        for (name, opt) in rules.iter().filter(|(name, _)| !name.is_empty() || k == 160) {
            let what = format!("{k}×{n}, batch {b}, transposed {linear}, {:?}", opt.rule());
            let (eager, compiled, labels) = train(&w0, &batches, linear, opt);
            // (CPU adapters take it for SGD only)
            if let Some(path) = path.filter(|_| name.starts_with("sgd")) {
                assert_eq!(fused(&labels), path, "{what}: {labels:?}");
            }
            assert_eq!(compiled, eager, "{what}");
            if name.is_empty() {
                continue;
            }
            // each step's rounding: a few ulps of the parameter and of the step
            let want = reference(&w0.to_vec::<f32>().unwrap(), &grads, name, 0.01);
            for (i, (&got, &want)) in compiled.iter().zip(&want).enumerate() {
                let bound = 64.0 * EPS * (1.0 + want.abs());
                assert!((got as f64 - want).abs() <= bound, "{what}: element {i}: {got} against {want}");
            }
        }
    }
}

#[derive(Params)]
struct Two {
    a: Tensor,
    b: Tensor,
}

/// Two large parameters, each updated in the product computing its
/// gradient; where something else reads the gradients first (clipping by
/// global norm, which writes the factor the updates read), the updates
/// stay dispatches of their own. The same numbers as eager either way.
#[test]
fn updates_stay_apart_where_they_cannot_move() {
    let d = own_device();
    let mut rng = Rng::new(5);
    let x = integers(&d, &mut rng, &[6, 150], 3);
    let y = integers(&d, &mut rng, &[6, 140], 2);
    let b0 = Tensor::from_slice(
        &d,
        &rng.array(&[140, 140], -0.1, 0.1).data.iter().map(|&v| v as f32).collect::<Vec<_>>(),
        &[140, 140],
    );
    let a0 = Tensor::from_slice(
        &d,
        &rng.array(&[150, 140], -0.1, 0.1).data.iter().map(|&v| v as f32).collect::<Vec<_>>(),
        &[150, 140],
    );
    // L = Σ (x·a·b) ⊙ y: h = x·a; dL/db = hᵀ·y, dL/da = xᵀ·(y·bᵀ)
    let loss = |p: &Two, (x, y): &(Tensor, Tensor)| (x.matmul(&p.a).matmul(&p.b) * y).sum_all();
    for (opt, takes) in
        [(Optimizer::sgd(0.001), [true, true]), (Optimizer::sgd(0.001).clip_grad_norm(1.0), [false, false])]
    {
        let mut results = Vec::new();
        for compiled in [false, true] {
            let copy = |t: &Tensor| Tensor::from_slice(&d, &t.to_vec::<f32>().unwrap(), t.shape());
            let p = Two { a: copy(&a0), b: copy(&b0) };
            let mut o = opt.clone();
            o.init(&p);
            let mut state = (p, o);
            let mut step = compile(|(p, o): &mut (Two, Optimizer), b: &(Tensor, Tensor)| {
                let (g, l, ()) = grad(loss)(p, b);
                *p = o.step(p, &g);
                l
            });
            let data = (x.clone(), y.clone());
            for _ in 0..3 {
                match compiled {
                    true => step.run(&mut state, &data).map(|_| ()).unwrap(),
                    false => drop(step.run_eager(&mut state, &data)),
                }
            }
            if compiled {
                let labels: Vec<String> = step.wgsl().unwrap().iter().map(|(l, _)| l.clone()).collect();
                let in_matmul = labels.iter().filter(|l| l.starts_with("matmul") && l.ends_with(" in place")).count();
                assert_eq!(in_matmul, takes.iter().filter(|&&t| t).count(), "{:?}: {labels:?}", opt.rule());
            }
            results.push(state.0.tensors().iter().map(|t| t.to_vec::<f32>().unwrap()).collect::<Vec<_>>());
        }
        assert_eq!(results[1], results[0], "{:?}", opt.rule());
    }
}
