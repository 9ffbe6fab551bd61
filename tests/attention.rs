//! Scaled dot-product and multi-head attention against an f64 reference
//! (values, and gradients against the reference's central differences),
//! against the same composition of wgrad's own matmul and softmax, gradcheck
//! (forward mode, second order), dropout's seeded mask, and dispatch counts.

mod common;

use common::*;
use wgrad::nn::{self, AttnMask, MhaParams};
use wgrad::{GradcheckOptions, Params, Tensor, compile, grad, gradcheck};

#[derive(Clone, Copy, Debug)]
enum Mask<'a> {
    None,
    Causal,
    /// [Tq, Tk], broadcast over the leading axes
    Additive(&'a Array),
}

/// softmax(q·kᵀ/√D + mask)·v in f64 over flat leading axes; a row with
/// every key masked out gives 0 (PyTorch ≥ 2.5).
fn attention_ref(q: &Array, k: &Array, v: &Array, mask: Mask) -> Array {
    let r = q.shape.len();
    let (tq, d, tk, dv) = (q.shape[r - 2], q.shape[r - 1], k.shape[r - 2], v.shape[r - 1]);
    let nb = q.numel() / (tq * d);
    let mut out_shape = q.shape.clone();
    out_shape[r - 1] = dv;
    let mut out = vec![0.0; nb * tq * dv];
    let scale = 1.0 / (d as f64).sqrt();
    for b in 0..nb {
        for i in 0..tq {
            let s: Vec<f64> = (0..tk)
                .map(|j| {
                    let dot: f64 = (0..d).map(|c| q.data[(b * tq + i) * d + c] * k.data[(b * tk + j) * d + c]).sum();
                    match mask {
                        Mask::None => dot * scale,
                        Mask::Causal if j > i => f64::NEG_INFINITY,
                        Mask::Causal => dot * scale,
                        Mask::Additive(m) => dot * scale + m.data[i * tk + j],
                    }
                })
                .collect();
            let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            if m == f64::NEG_INFINITY {
                continue;
            }
            let e: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
            let z: f64 = e.iter().sum();
            for c in 0..dv {
                out[(b * tq + i) * dv + c] = (0..tk).map(|j| e[j] / z * v.data[(b * tk + j) * dv + c]).sum();
            }
        }
    }
    Array::new(&out_shape, out)
}

/// Central differences of Σ w ⊙ f over every element of input `which`.
fn reference_grad(inputs: &[Array; 3], w: &Array, which: usize, f: impl Fn(&[Array; 3]) -> Array) -> Array {
    let h = 1e-6;
    let loss = |xs: &[Array; 3]| f(xs).data.iter().zip(&w.data).map(|(a, b)| a * b).sum::<f64>();
    let mut g = inputs[which].clone();
    for e in 0..g.data.len() {
        let mut xs = inputs.clone();
        xs[which].data[e] += h;
        let up = loss(&xs);
        xs[which].data[e] -= 2.0 * h;
        g.data[e] = (up - loss(&xs)) / (2.0 * h);
    }
    g
}

fn gpu_mask(m: &Mask) -> Option<Tensor> {
    match m {
        Mask::Additive(a) => Some(upload(a)),
        _ => None,
    }
}

fn attn_mask<'a>(m: &Mask, t: &'a Option<Tensor>) -> AttnMask<'a> {
    match m {
        Mask::None => AttnMask::None,
        Mask::Causal => AttnMask::Causal,
        Mask::Additive(_) => AttnMask::Additive(t.as_ref().expect("an uploaded mask")),
    }
}

#[test]
fn attention_matches_the_reference_with_its_gradients() {
    let mut rng = Rng::new(17);
    // an additive mask with a fully masked second row, −∞ elsewhere too
    let (tq, tk) = (3, 5);
    let mut additive = rng.array(&[tq, tk], -1.0, 1.0);
    for j in 0..tk {
        additive.data[tk + j] = f64::NEG_INFINITY;
    }
    additive.data[2 * tk + 1] = f64::NEG_INFINITY;
    // (lead, Tq, Tk, D, Dv, mask): Tq < Tk, Tq > Tk (top-left causal
    // alignment), one long row (the kernel's workgroup-per-row path)
    type Case<'a> = (&'a [usize], usize, usize, usize, usize, Mask<'a>);
    let cases: Vec<Case> = vec![
        (&[2, 2], tq, tk, 4, 3, Mask::None),
        (&[2, 2], tq, tk, 4, 3, Mask::Causal),
        (&[2, 2], 5, 3, 4, 2, Mask::Causal),
        (&[2], tq, tk, 3, 3, Mask::Additive(&additive)),
        (&[], 2, 300, 3, 2, Mask::Causal),
        (&[1], 2, 300, 3, 2, Mask::None),
    ];
    for (lead, tq, tk, d, dv, mask) in cases {
        let name = format!("lead {lead:?} Tq {tq} Tk {tk} D {d} {mask:?}");
        let shape = |a: usize, b: usize| [lead, &[a, b]].concat();
        let inputs = [
            rng.array(&shape(tq, d), -1.5, 1.5),
            rng.array(&shape(tk, d), -1.5, 1.5),
            rng.array(&shape(tk, dv), -1.0, 1.0),
        ];
        let w = rng.array(&shape(tq, dv), -1.0, 1.0);
        let reference = |xs: &[Array; 3]| attention_ref(&xs[0], &xs[1], &xs[2], mask);
        let m = gpu_mask(&mask);
        let ts: Vec<Tensor> = inputs.iter().map(upload).collect();
        let f = |p: &Vec<Tensor>, w: &Tensor| {
            (nn::scaled_dot_product_attention(&p[0], &p[1], &p[2], attn_mask(&mask, &m), 0.0, false) * w).sum_all()
        };
        let y = nn::scaled_dot_product_attention(&ts[0], &ts[1], &ts[2], attn_mask(&mask, &m), 0.0, false);
        assert_close(&format!("{name}: value"), &download(&y), &reference(&inputs), 1e-5, 2e-6);
        let (g, _, ()) = grad(f)(&ts, &upload(&w));
        for (which, gi) in g.iter().enumerate() {
            let want = reference_grad(&inputs, &w, which, reference);
            assert_close(&format!("{name}: gradient {which}"), &download(gi), &want, 1e-4, 2e-5);
        }
    }
}

#[test]
fn attention_equals_its_composition_from_matmul_and_softmax() {
    let mut rng = Rng::new(3);
    let (tq, tk, d) = (4, 6, 5);
    let mut causal = vec![0.0f32; tq * tk];
    for i in 0..tq {
        for j in i + 1..tk {
            causal[i * tk + j] = f32::NEG_INFINITY;
        }
    }
    let causal = Tensor::from_slice(dev(), &causal, &[tq, tk]);
    let bias = upload(&rng.array(&[2, 1, tq, tk], -2.0, 2.0));
    // k and v broadcast over the heads axis
    let ts = vec![
        upload(&rng.array(&[2, 3, tq, d], -1.0, 1.0)),
        upload(&rng.array(&[2, 1, tk, d], -1.0, 1.0)),
        upload(&rng.array(&[2, 1, tk, 2], -1.0, 1.0)),
    ];
    let w = upload(&rng.array(&[2, 3, tq, 2], -1.0, 1.0));
    let scale = 1.0 / (d as f32).sqrt();
    let composed = |p: &Vec<Tensor>, m: Option<&Tensor>| {
        let s = p[0].matmul(&p[1].transpose(-2, -1)) * scale;
        let s = match m {
            Some(m) => s + m,
            None => s,
        };
        s.softmax(-1).matmul(&p[2])
    };
    let masks = [(AttnMask::None, None), (AttnMask::Causal, Some(&causal)), (AttnMask::Additive(&bias), Some(&bias))];
    for (mask, m) in masks {
        let fused = |p: &Vec<Tensor>, w: &Tensor| {
            (nn::scaled_dot_product_attention(&p[0], &p[1], &p[2], mask, 0.0, false) * w).sum_all()
        };
        let plain = |p: &Vec<Tensor>, w: &Tensor| (composed(p, m) * w).sum_all();
        let (gf, lf, ()) = grad(fused)(&ts, &w);
        let (gp, lp, ()) = grad(plain)(&ts, &w);
        let name = format!("{mask:?}");
        assert_close(&format!("{name}: loss"), &download(&lf), &download(&lp), 1e-5, 1e-6);
        for (k, (a, b)) in gf.iter().zip(&gp).enumerate() {
            assert_close(&format!("{name}: gradient {k}"), &download(a), &download(b), 1e-5, 1e-6);
        }
    }
    // the mask's own gradient (a learned bias)
    let df = |b: &Tensor, p: &Vec<Tensor>| {
        (nn::scaled_dot_product_attention(&p[0], &p[1], &p[2], AttnMask::Additive(b), 0.0, false) * &w).sum_all()
    };
    let dp = |b: &Tensor, p: &Vec<Tensor>| (composed(p, Some(b)) * &w).sum_all();
    let (a, b) = (grad(df)(&bias, &ts).0, grad(dp)(&bias, &ts).0);
    assert_close("the mask's gradient", &download(&a), &download(&b), 1e-5, 1e-6);
}

#[test]
fn attention_passes_gradcheck_forward_and_second_order() {
    let mut rng = Rng::new(5);
    let opts = GradcheckOptions { forward: true, order: 2, ..Default::default() };
    let ts = vec![
        upload(&rng.array(&[2, 3, 4], -1.0, 1.0)),
        upload(&rng.array(&[2, 4, 4], -1.0, 1.0)),
        upload(&rng.array(&[2, 4, 3], -1.0, 1.0)),
        upload(&rng.array(&[3, 4], -1.0, 1.0)),
    ];
    let w = upload(&rng.array(&[2, 3, 3], -1.0, 1.0));
    for causal in [false, true] {
        let f = |p: &Vec<Tensor>, w: &Tensor| {
            let mask = if causal { AttnMask::Causal } else { AttnMask::Additive(&p[3]) };
            (nn::scaled_dot_product_attention(&p[0], &p[1], &p[2], mask, 0.0, false) * w).sum_all()
        };
        let report = gradcheck(f, &ts, &w, &opts).unwrap();
        assert!(report.passed, "causal {causal}: {report:?}");
    }
}

#[test]
fn dropout_of_the_weights_follows_the_seed() {
    let d = own_device();
    let mut rng = Rng::new(9);
    let (q, k, v) =
        (rng.array(&[2, 4, 3], -1.0, 1.0), rng.array(&[2, 5, 3], -1.0, 1.0), rng.array(&[2, 5, 2], -1.0, 1.0));
    let up = |a: &Array| Tensor::from_slice(&d, &a.data.iter().map(|&x| x as f32).collect::<Vec<_>>(), &a.shape);
    let (tq, tk, tv) = (up(&q), up(&k), up(&v));
    let p = 0.4;
    let run = |seed: u64| {
        d.manual_seed(seed);
        download(&nn::scaled_dot_product_attention(&tq, &tk, &tv, AttnMask::Causal, p, true))
    };
    let (a, b, c) = (run(11), run(11), run(12));
    assert_eq!(a.data, b.data, "one seed, one mask");
    assert_ne!(a.data, c.data, "another seed, another mask");
    // the mask is the seed's uniform numbers ≥ p over the weights [2, 4, 5]
    d.manual_seed(11);
    let keep: Vec<f64> = download(&Tensor::rand(&d, &[2, 4, 5])).data.iter().map(|&u| mask(u >= p as f64)).collect();
    let mut want = Array::full(&[2, 4, 2], 0.0);
    for bi in 0..2 {
        for i in 0..4 {
            let s: Vec<f64> = (0..5)
                .map(|j| {
                    if j > i {
                        f64::NEG_INFINITY
                    } else {
                        (0..3).map(|c| q.at(&[bi, i, c]) * k.at(&[bi, j, c])).sum::<f64>() / 3f64.sqrt()
                    }
                })
                .collect();
            let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = s.iter().map(|x| (x - m).exp()).sum();
            for c in 0..2 {
                want.data[(bi * 4 + i) * 2 + c] = (0..5)
                    .map(|j| (s[j] - m).exp() / z * keep[(bi * 4 + i) * 5 + j] / (1.0 - p as f64) * v.at(&[bi, j, c]))
                    .sum();
            }
        }
    }
    assert_close("dropout against the seed's mask", &a, &want, 1e-5, 2e-6);
    // evaluation ignores the probability
    let eval = nn::scaled_dot_product_attention(&tq, &tk, &tv, AttnMask::Causal, p, false);
    let plain = nn::scaled_dot_product_attention(&tq, &tk, &tv, AttnMask::Causal, 0.0, true);
    assert_eq!(download(&eval).data, download(&plain).data);
}

#[test]
fn multi_head_attention_matches_per_head_attention() {
    let mut rng = Rng::new(21);
    let (b, tq, tk, e, heads) = (2, 3, 4, 6, 3);
    let up = |s: &[usize], rng: &mut Rng| upload(&rng.array(s, -0.8, 0.8));
    let p = MhaParams {
        w_q: up(&[e, 5], &mut rng),
        w_k: up(&[e, 4], &mut rng),
        w_v: up(&[e, 4], &mut rng),
        w_o: up(&[7, e], &mut rng),
        b_q: Some(up(&[e], &mut rng)),
        b_k: None,
        b_v: Some(up(&[e], &mut rng)),
        b_o: Some(up(&[7], &mut rng)),
    };
    let (xq, xkv) = (up(&[b, tq, 5], &mut rng), up(&[b, tk, 4], &mut rng));
    let y = nn::multi_head_attention(&xq, &xkv, &p, heads, AttnMask::Causal, 0.0, false);
    assert_eq!(y.shape(), &[b, tq, 7]);
    // per head, from the same projections sliced by hand
    let dh = e / heads;
    let (q, k, v) = (
        nn::linear(&xq, &p.w_q, p.b_q.as_ref()),
        nn::linear(&xkv, &p.w_k, None),
        nn::linear(&xkv, &p.w_v, p.b_v.as_ref()),
    );
    let per_head: Vec<Tensor> = (0..heads)
        .map(|h| {
            let s = |t: &Tensor| t.narrow(-1, h * dh, dh);
            nn::scaled_dot_product_attention(&s(&q), &s(&k), &s(&v), AttnMask::Causal, 0.0, false)
        })
        .collect();
    let merged = Tensor::cat(&per_head.iter().collect::<Vec<_>>(), -1);
    let want = nn::linear(&merged, &p.w_o, p.b_o.as_ref());
    assert_close("multi-head", &download(&y), &download(&want), 1e-5, 1e-6);
    // and it trains: every parameter gets a gradient
    let f = |p: &MhaParams, x: &Tensor| {
        nn::multi_head_attention(x, x, p, heads, AttnMask::None, 0.0, false).square().mean_all()
    };
    let self_p = MhaParams::new(dev(), e, true);
    let x = up(&[b, tq, e], &mut rng);
    let (g, _, ()) = grad(f)(&self_p, &x);
    assert_eq!(g.tensors().len(), 8);
    let report = gradcheck(f, &self_p, &x, &GradcheckOptions::default()).unwrap();
    assert!(report.passed, "{report:?}");
}

/// Dispatches of one causal attention call: q·kᵀ, the scaled causal
/// softmax, ·v forward. With the loss's sum and its seed, forward and
/// backward take 14 eagerly: the attention's backward is 9 (two matmuls
/// through ·v, five elementwise and row-sum dispatches of the softmax's
/// VJP, two matmuls to q and k); compiled, fusion joins the VJP's chain.
#[test]
fn causal_attention_takes_three_dispatches_forward() {
    let d = own_device();
    let q = Tensor::randn(&d, &[2, 4, 16, 8]);
    let (k, v) = (Tensor::randn(&d, &[2, 4, 16, 8]), Tensor::randn(&d, &[2, 4, 16, 8]));
    d.sync().unwrap();
    let before = d.counters();
    let y = nn::scaled_dot_product_attention(&q, &k, &v, AttnMask::Causal, 0.0, false);
    d.sync().unwrap();
    let forward = (d.counters() - before).dispatches;
    assert_eq!(forward, 3, "eager forward");
    drop(y);
    let f = |p: &(Tensor, Tensor, Tensor), _: &()| {
        nn::scaled_dot_product_attention(&p.0, &p.1, &p.2, AttnMask::Causal, 0.0, false).sum_all()
    };
    let params = (q, k, v);
    d.sync().unwrap();
    let before = d.counters();
    let (g, _, ()) = grad(f)(&params, &());
    d.sync().unwrap();
    let both = (d.counters() - before).dispatches;
    let mut step = compile(move |p: &mut (Tensor, Tensor, Tensor), _: &()| grad(f)(p, &()).0);
    let mut state = params.clone();
    let compiled = step.run(&mut state, &()).unwrap();
    for (a, b) in compiled.tensors().into_iter().zip(g.tensors()) {
        assert_close("compiled gradient", &download(a), &download(b), 1e-6, 1e-7);
    }
    let plan = step.memory().unwrap();
    eprintln!("causal attention: forward {forward}, forward + backward {both} eager, {} compiled", plan.dispatches);
    assert!(both == 14 && plan.dispatches as u64 <= both, "forward + backward {both}, compiled {}", plan.dispatches);
}
