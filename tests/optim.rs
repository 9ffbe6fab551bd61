//! Each optimizer's first steps against the same update computed in f64 on
//! the CPU (PyTorch's formulas), with weight decay, momentum, clipping and
//! schedules; and a short training run whose loss must fall.

mod common;

use common::*;
use wgrad::optim::{Group, Optimizer, Schedule};
use wgrad::{Params, Tensor, compile, grad, nn};

#[derive(Clone, Copy)]
enum Kind {
    Sgd { momentum: f64, nesterov: bool, wd: f64 },
    Adam { wd: f64, decoupled: bool },
    RmsProp { momentum: f64, wd: f64 },
    Adagrad { lr_decay: f64, wd: f64 },
    Lion { wd: f64 },
}

/// One reference step on flat f64 vectors. `state` holds two buffers.
fn reference_step(kind: Kind, lr: f64, t: i32, p: &mut [f64], g: &[f64], s: &mut [Vec<f64>; 2]) {
    for i in 0..p.len() {
        match kind {
            Kind::Sgd { momentum, nesterov, wd } => {
                let d = g[i] + wd * p[i];
                if momentum == 0.0 {
                    p[i] -= lr * d;
                } else {
                    s[0][i] = momentum * s[0][i] + d;
                    let step = if nesterov { d + momentum * s[0][i] } else { s[0][i] };
                    p[i] -= lr * step;
                }
            }
            Kind::Adam { wd, decoupled } => {
                let (b1, b2, eps) = (0.9, 0.999, 1e-8);
                let gi = if decoupled { g[i] } else { g[i] + wd * p[i] };
                s[0][i] = b1 * s[0][i] + (1.0 - b1) * gi;
                s[1][i] = b2 * s[1][i] + (1.0 - b2) * gi * gi;
                let mhat = s[0][i] / (1.0 - b1.powi(t));
                let vhat = s[1][i] / (1.0 - b2.powi(t));
                if decoupled {
                    p[i] *= 1.0 - lr * wd;
                }
                p[i] -= lr * mhat / (vhat.sqrt() + eps);
            }
            Kind::RmsProp { momentum, wd } => {
                let (alpha, eps) = (0.99, 1e-8);
                let gi = g[i] + wd * p[i];
                s[0][i] = alpha * s[0][i] + (1.0 - alpha) * gi * gi;
                if momentum == 0.0 {
                    p[i] -= lr * gi / (s[0][i].sqrt() + eps);
                } else {
                    s[1][i] = momentum * s[1][i] + gi / (s[0][i].sqrt() + eps);
                    p[i] -= lr * s[1][i];
                }
            }
            Kind::Adagrad { lr_decay, wd } => {
                let gi = g[i] + wd * p[i];
                s[0][i] += gi * gi;
                let clr = lr / (1.0 + (t - 1) as f64 * lr_decay);
                p[i] -= clr * gi / (s[0][i].sqrt() + 1e-10);
            }
            Kind::Lion { wd } => {
                let (b1, b2) = (0.9, 0.99);
                let c = b1 * s[0][i] + (1.0 - b1) * g[i];
                let sign = if c > 0.0 {
                    1.0
                } else if c < 0.0 {
                    -1.0
                } else {
                    0.0
                };
                p[i] = p[i] * (1.0 - lr * wd) - lr * sign;
                s[0][i] = b2 * s[0][i] + (1.0 - b2) * g[i];
            }
        }
    }
}

#[test]
fn first_steps_match_the_reference() {
    let kinds: Vec<(&str, Kind, Optimizer)> = vec![
        ("sgd", Kind::Sgd { momentum: 0.0, nesterov: false, wd: 0.0 }, Optimizer::sgd(0.1)),
        ("sgd wd", Kind::Sgd { momentum: 0.0, nesterov: false, wd: 0.01 }, Optimizer::sgd(0.1).weight_decay(0.01)),
        ("momentum", Kind::Sgd { momentum: 0.9, nesterov: false, wd: 0.0 }, Optimizer::sgd(0.1).momentum(0.9)),
        (
            "nesterov",
            Kind::Sgd { momentum: 0.9, nesterov: true, wd: 0.01 },
            Optimizer::sgd(0.1).momentum(0.9).nesterov().weight_decay(0.01),
        ),
        ("adam", Kind::Adam { wd: 0.0, decoupled: false }, Optimizer::adam(0.01)),
        ("adam l2", Kind::Adam { wd: 0.1, decoupled: false }, Optimizer::adam(0.01).weight_decay(0.1)),
        ("adamw", Kind::Adam { wd: 0.1, decoupled: true }, Optimizer::adamw(0.01, 0.1)),
        ("rmsprop", Kind::RmsProp { momentum: 0.0, wd: 0.0 }, Optimizer::rmsprop(0.01)),
        (
            "rmsprop momentum",
            Kind::RmsProp { momentum: 0.5, wd: 0.01 },
            Optimizer::rmsprop(0.01).momentum(0.5).weight_decay(0.01),
        ),
        ("adagrad", Kind::Adagrad { lr_decay: 0.0, wd: 0.0 }, Optimizer::adagrad(0.1)),
        (
            "adagrad decay",
            Kind::Adagrad { lr_decay: 0.5, wd: 0.01 },
            Optimizer::adagrad(0.1).lr_decay(0.5).weight_decay(0.01),
        ),
        ("lion", Kind::Lion { wd: 0.0 }, Optimizer::lion(0.01)),
        ("lion wd", Kind::Lion { wd: 0.5 }, Optimizer::lion(0.01).weight_decay(0.5)),
    ];
    let mut rng = Rng::new(51);
    for (name, kind, mut opt) in kinds {
        // sizes a multiple of four and not, and one of many workgroups
        let shapes: [&[usize]; 3] = [&[3, 4], &[5], &[151, 131]];
        let p0 = shapes.map(|s| rng.array(s, -1.0, 1.0));
        let mut params = (upload(&p0[0]), upload(&p0[1]), upload(&p0[2]));
        let mut want: Vec<Vec<f64>> = p0.iter().map(|a| a.data.clone()).collect();
        let mut state: Vec<[Vec<f64>; 2]> = want.iter().map(|w| [vec![0.0; w.len()], vec![0.0; w.len()]]).collect();
        let lr = opt.base_lr() as f64;
        for t in 1..=4 {
            let g = shapes.map(|s| rng.array(s, -1.0, 1.0));
            params = opt.step(&params, &(upload(&g[0]), upload(&g[1]), upload(&g[2])));
            for k in 0..3 {
                reference_step(kind, lr, t, &mut want[k], &g[k].data, &mut state[k]);
            }
            for (k, got) in params.tensors().into_iter().enumerate() {
                let w = Array::new(got.shape(), want[k].clone());
                // a handful of f32 operations per element: 16 units of
                // roundoff, relative to the operands of p − lr·step (|p| < 2
                // after three steps of at most 0.2), since the subtraction
                // can cancel
                assert_close(&format!("{name} step {t} tensor {k}"), &download(got), &w, 16.0 * EPS, 2.0 * 16.0 * EPS);
            }
        }
        assert_eq!(opt.steps().unwrap(), 4);
    }
}

#[test]
fn clipping_and_schedules() {
    // clipping scales the whole gradient to norm 1: ‖(3, 4)‖ = 5
    let mut opt = Optimizer::sgd(1.0).clip_grad_norm(1.0);
    let p = Tensor::from_slice(dev(), &[0.0f32, 0.0], &[2]);
    let g = Tensor::from_slice(dev(), &[3.0f32, 4.0], &[2]);
    let v: Vec<f32> = opt.step(&p, &g).to_vec().unwrap();
    assert!((v[0] + 0.6).abs() < 1e-5 && (v[1] + 0.8).abs() < 1e-5, "{v:?}");
    // a gradient inside the bound is not scaled
    let small = Tensor::from_slice(dev(), &[0.3f32, 0.4], &[2]);
    assert_eq!(opt.step(&p, &small).to_vec::<f32>().unwrap(), vec![-0.3, -0.4]);
    // step decay and cosine annealing, computed by the kernels from the GPU's
    // step counter: with p = 0 and g = 1, plain SGD moves p by −lr each step
    let one = Tensor::from_slice(dev(), &[1.0f32], &[1]);
    let rates = |mut opt: Optimizer, n: usize| -> Vec<f32> {
        let mut p = Tensor::zeros(dev(), &[1]);
        let mut out = Vec::new();
        for _ in 0..n {
            let next = opt.step(&p, &one);
            out.push(p.item::<f32>().unwrap() - next.item::<f32>().unwrap());
            p = next;
        }
        out
    };
    let step = Schedule::Step { every: 2, gamma: 0.5 };
    let got = rates(Optimizer::sgd(1.0).schedule(step.clone()), 5);
    assert_eq!(got, vec![1.0, 1.0, 0.5, 0.5, 0.25]);
    assert_eq!((0..5).map(|t| step.rate(1.0, t)).collect::<Vec<_>>(), got);
    let cosine = Schedule::Cosine { total: 4, min_lr: 0.0 };
    let got = rates(Optimizer::sgd(1.0).schedule(cosine.clone()), 6);
    let want = [1.0, 0.853_553_4, 0.5, 0.146_446_6, 0.0, 0.0];
    for (t, (r, w)) in got.iter().zip(want).enumerate() {
        assert!((r - w).abs() < 1e-6, "{got:?}");
        assert!((cosine.rate(1.0, t as u64) - w).abs() < 1e-6);
    }
    // linear warm-up over 2 steps, then cosine down to 0.1 by step 6
    let warm = Schedule::WarmupCosine { warmup: 2, total: 6, min_lr: 0.1 };
    let got = rates(Optimizer::sgd(1.0).schedule(warm.clone()), 8);
    let want = [0.5, 1.0, 1.0, 0.868_198_05, 0.55, 0.231_801_95, 0.1, 0.1];
    for (t, (r, w)) in got.iter().zip(want).enumerate() {
        assert!((r - w).abs() < 1e-6, "{got:?}");
        assert!((warm.rate(1.0, t as u64) - w).abs() < 1e-6, "{t}");
    }
}

/// Plain SGD on p = 0 with g = 1 moves p by −lr: the rates of `n` steps,
/// eagerly and compiled, with `set_lr(0.25)` before step 2.
#[test]
fn a_changed_learning_rate_reaches_eager_and_compiled_steps() {
    let d = own_device();
    let one = Tensor::from_slice(&d, &[1.0f32], &[1]);
    for optimizer in [Optimizer::sgd(1.0), Optimizer::sgd(1.0).clip_grad_norm(10.0)] {
        // eager
        let mut opt = optimizer.clone();
        let mut p = Tensor::zeros(&d, &[1]);
        let mut moves = Vec::new();
        for k in 0..4 {
            if k == 2 {
                opt.set_lr(0.25);
            }
            let next = opt.step(&p, &one);
            moves.push(p.item::<f32>().unwrap() - next.item::<f32>().unwrap());
            p = next;
        }
        assert_eq!(moves, vec![1.0, 1.0, 0.25, 0.25], "eager");
        // compiled: traced with lr 1, replayed after set_lr
        let mut opt = optimizer.clone();
        let p = Tensor::zeros(&d, &[1]);
        opt.init(&p);
        // nothing returned: the update then runs in place, in a generated kernel
        let mut step = compile(|(p, opt): &mut (Tensor, Optimizer), g: &Tensor| {
            *p = opt.step(p, g);
        });
        let mut state = (p, opt);
        let mut moves = Vec::new();
        let mut before = 0.0;
        for k in 0..4 {
            if k == 2 {
                state.1.set_lr(0.25);
            }
            step.run(&mut state, &one).unwrap();
            let now = state.0.item::<f32>().unwrap();
            moves.push(before - now);
            before = now;
        }
        assert_eq!(step.programs(), 1);
        assert!(step.wgsl().unwrap().iter().any(|(_, src)| src.contains("fn in_place")));
        assert_eq!(moves, vec![1.0, 1.0, 0.25, 0.25], "compiled");
        assert_eq!(state.1.base_lr(), 0.25);
    }
}

/// AdamW with a group that takes no weight decay (vectors: biases) and a
/// group at half the rate, against two plain optimizers.
#[test]
fn parameter_groups_set_options_per_tensor() {
    #[derive(Params, Clone)]
    struct Net {
        w: Tensor,
        b: Tensor,
        head: Tensor,
    }
    let mut rng = Rng::new(8);
    let net = Net {
        w: upload(&rng.array(&[3, 4], -1.0, 1.0)),
        b: upload(&rng.array(&[3], -1.0, 1.0)),
        head: upload(&rng.array(&[2, 3], -1.0, 1.0)),
    };
    let grads = Net {
        w: upload(&rng.array(&[3, 4], -1.0, 1.0)),
        b: upload(&rng.array(&[3], -1.0, 1.0)),
        head: upload(&rng.array(&[2, 3], -1.0, 1.0)),
    };
    let mut opt = Optimizer::adamw(0.1, 0.5)
        .param_group(|_, p| p.rank() < 2, Group::default().weight_decay(0.0))
        .param_group(|name, _| name.starts_with("head"), Group::default().lr_scale(0.5));
    let (mut decayed, mut plain, mut slow) =
        (Optimizer::adamw(0.1, 0.5), Optimizer::adamw(0.1, 0.0), Optimizer::adamw(0.05, 0.5));
    let (mut n, mut w, mut b, mut head) = (net.clone(), net.w.clone(), net.b.clone(), net.head.clone());
    for _ in 0..3 {
        n = opt.step(&n, &grads);
        w = decayed.step(&w, &grads.w);
        b = plain.step(&b, &grads.b);
        head = slow.step(&head, &grads.head);
    }
    assert_eq!(opt.tensor_options().len(), 3);
    for (name, got, want) in [("w", &n.w, &w), ("b", &n.b, &b), ("head", &n.head, &head)] {
        assert_eq!(download(got).data, download(want).data, "{name}");
    }
}

#[test]
fn a_short_training_run_lowers_the_loss() {
    #[derive(Params)]
    struct Net {
        w1: Tensor,
        b1: Tensor,
        w2: Tensor,
        b2: Tensor,
    }
    let d = own_device();
    d.manual_seed(1);
    // two noisy blobs per class, 3 classes
    let x = Tensor::randn(&d, &[192, 2]);
    let labels: Vec<u32> = (0..192).map(|i| (i % 3) as u32).collect();
    let y = Tensor::from_slice(&d, &labels, &[192]);
    let centres = Tensor::from_slice(&d, &[2.0f32, 0.0, -1.0, 1.7, -1.0, -1.7], &[3, 2]);
    let x = &x * 0.5 + centres.index_select(0, &y);
    let mut net = Net {
        w1: nn::init::kaiming_uniform(&d, &[16, 2]),
        b1: Tensor::zeros(&d, &[16]),
        w2: nn::init::xavier_uniform(&d, &[3, 16], 1.0),
        b2: Tensor::zeros(&d, &[3]),
    };
    let loss_fn = |n: &Net, (x, y): &(Tensor, Tensor)| {
        let h = nn::linear(x, &n.w1, Some(&n.b1)).relu();
        nn::cross_entropy(&nn::linear(&h, &n.w2, Some(&n.b2)), y, nn::Reduction::Mean)
    };
    let df = grad(loss_fn);
    let mut opt = Optimizer::adam(0.05);
    let data = (x, y);
    let mut losses = Vec::new();
    for _ in 0..60 {
        let (g, loss, ()) = df(&net, &data);
        net = opt.step(&net, &g);
        losses.push(loss);
    }
    let first: f32 = losses[0].item().unwrap();
    let last: f32 = losses[59].item().unwrap();
    assert!(last < 0.3 * first && last < 0.2, "loss {first} → {last}");
}
