//! The layers and losses beyond MNIST (normalisations, 1-d and transposed
//! convolutions, general and adaptive pooling, robust losses, KL and
//! cross-entropy options) against f64 references written here as loops:
//! forward, gradients against central differences of the reference, and
//! gradcheck with forward mode and second order.

mod common;

use common::*;
use wgrad::nn::{self, Conv1dOptions, ConvOptions, CrossEntropyOptions, PoolOptions, Reduction};
use wgrad::{GradcheckOptions, Tensor, grad, gradcheck};

fn max_abs(a: &Array) -> f64 {
    a.data.iter().fold(1.0f64, |m, v| m.max(v.abs()))
}

/// Checks `gpu` against `cpu`: the forward within `ulps` units of f32
/// roundoff of the largest magnitude (the outputs are sums of at most a few
/// hundred terms, or short compositions), the gradient of Σ w·f against
/// central differences of the reference likewise, and gradcheck with
/// forward mode and second order.
fn check(name: &str, xs: &[Array], gpu: &dyn Fn(&[Tensor]) -> Tensor, cpu: &dyn Fn(&[Array]) -> Array) {
    let ulps = 512.0;
    let mut rng = Rng::new(name.len() as u64);
    let want = cpu(xs);
    let ts: Vec<Tensor> = xs.iter().map(upload).collect();
    let got = download(&gpu(&ts));
    assert_close(&format!("{name} forward"), &got, &want, 0.0, ulps * EPS * max_abs(&want));
    let w = rng.array(&want.shape, -1.0, 1.0);
    let wt = upload(&w);
    let (g, _, ()) = grad(|p: &Vec<Tensor>, w: &Tensor| (gpu(p) * w).sum_all())(&ts, &wt);
    for (i, (gi, want)) in g.iter().zip(reference_grads(cpu, xs, &w)).enumerate() {
        assert_close(&format!("{name} ∂x{i}"), &download(gi), &want, 1e-6, ulps * EPS * max_abs(&want));
    }
    let opts = GradcheckOptions { forward: true, order: 2, ..Default::default() };
    let report = gradcheck(|p: &Vec<Tensor>, w: &Tensor| (gpu(p) * w).sum_all(), &ts, &wt, &opts).unwrap();
    assert!(report.passed, "{name}: gradcheck {:?}", report.failures);
}

fn reduce(a: Array, red: Reduction) -> Array {
    let sum = a.data.iter().sum::<f64>();
    match red {
        Reduction::Mean => Array::new(&[], vec![sum / a.numel() as f64]),
        Reduction::Sum => Array::new(&[], vec![sum]),
        Reduction::BatchMean => Array::new(&[], vec![sum / a.shape[0] as f64]),
        Reduction::None => a,
    }
}

const REDUCTIONS: [Reduction; 4] = [Reduction::Mean, Reduction::Sum, Reduction::None, Reduction::BatchMean];

/// Distinct values spaced 0.05 apart in random order: max pooling's argmax
/// stays put under gradcheck's steps.
fn distinct(rng: &mut Rng, shape: &[usize]) -> Array {
    let n: usize = shape.iter().product();
    let mut v: Vec<f64> = (0..n).map(|i| (i as f64 - n as f64 / 2.0) * 0.05).collect();
    for i in (1..n).rev() {
        v.swap(i, rng.below(i + 1));
    }
    Array::new(shape, v)
}

#[test]
fn rms_norm_matches_reference() {
    let mut rng = Rng::new(1);
    let x = rng.array(&[3, 2, 5], -2.0, 2.0);
    let w = rng.array(&[2, 5], 0.5, 1.5);
    let rms = |a: &Array, eps: f64| {
        let ms = a.zip(a, |u, v| u * v).mean(&[1, 2], true);
        a.zip(&ms, |v, m| v / (m + eps).sqrt())
    };
    check("rms_norm (weight)", &[x.clone(), w], &|t| nn::rms_norm(&t[0], 2, Some(&t[1]), 1e-5), &|a| {
        rms(&a[0], 1e-5).zip(&a[1], |v, g| v * g)
    });
    check("rms_norm", &[x], &|t| nn::rms_norm(&t[0], 2, None, 1e-5), &|a| rms(&a[0], 1e-5));
}

#[test]
fn group_norm_matches_reference() {
    let mut rng = Rng::new(2);
    let x = rng.array(&[2, 6, 2, 3], -2.0, 2.0);
    let (w, b) = (rng.array(&[6], 0.5, 1.5), rng.array(&[6], -0.5, 0.5));
    let gn = |a: &[Array], groups: usize| {
        let (n, c) = (a[0].shape[0], a[0].shape[1]);
        let per = a[0].numel() / (n * c);
        let cg = c / groups;
        let mut out = a[0].clone();
        for s in 0..n {
            for g in 0..groups {
                let range = (s * c + g * cg) * per..(s * c + (g + 1) * cg) * per;
                let vals = &a[0].data[range.clone()];
                let mean = vals.iter().sum::<f64>() / vals.len() as f64;
                let var = vals.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / vals.len() as f64;
                for i in range {
                    let ch = (i / per) % c;
                    let (wc, bc) = (a.get(1).map_or(1.0, |w| w.data[ch]), a.get(2).map_or(0.0, |b| b.data[ch]));
                    out.data[i] = (a[0].data[i] - mean) / (var + 1e-5).sqrt() * wc + bc;
                }
            }
        }
        out
    };
    for groups in [1, 3, 6] {
        check(
            &format!("group_norm {groups} groups"),
            &[x.clone(), w.clone(), b.clone()],
            &|t| nn::group_norm(&t[0], groups, Some(&t[1]), Some(&t[2]), 1e-5),
            &|a| gn(a, groups),
        );
    }
    check(
        "group_norm [N, C]",
        &[rng.array(&[3, 8], -2.0, 2.0)],
        &|t| nn::group_norm(&t[0], 2, None, None, 1e-5),
        &|a| gn(a, 2),
    );
}

fn conv1d_ref(x: &Array, w: &Array, o: Conv1dOptions) -> Array {
    let (n, l) = (x.shape[0], x.shape[2]);
    let (oc, cg, k) = (w.shape[0], w.shape[1], w.shape[2]);
    let ol = (l + 2 * o.padding - (k - 1) * o.dilation - 1) / o.stride + 1;
    let og = oc / o.groups;
    let mut out = Array::full(&[n, oc, ol], 0.0);
    for b in 0..n {
        for oo in 0..oc {
            for i in 0..ol {
                let mut acc = 0.0;
                for ci in 0..cg {
                    for a in 0..k {
                        let at = (i * o.stride + a * o.dilation) as isize - o.padding as isize;
                        if at >= 0 && (at as usize) < l {
                            acc += x.at(&[b, oo / og * cg + ci, at as usize]) * w.at(&[oo, ci, a]);
                        }
                    }
                }
                out.data[(b * oc + oo) * ol + i] = acc;
            }
        }
    }
    out
}

#[test]
fn conv1d_matches_reference() {
    let mut rng = Rng::new(3);
    let cases = [
        (Conv1dOptions::default(), [2, 3, 9], [4, 3, 3]),
        (Conv1dOptions::default().stride(2).padding(2).dilation(2).groups(2), [2, 4, 11], [6, 2, 3]),
    ];
    for (o, xs, ws) in cases {
        let (x, w, b) = (rng.array(&xs, -1.0, 1.0), rng.array(&ws, -1.0, 1.0), rng.array(&[ws[0]], -1.0, 1.0));
        check(&format!("conv1d {o:?}"), &[x, w, b], &|t| nn::conv1d(&t[0], &t[1], Some(&t[2]), o), &|a| {
            conv1d_ref(&a[0], &a[1], o).zip(&a[2].reshape(&[ws[0], 1]), |v, b| v + b)
        });
    }
}

/// Each input pixel scatters its products with the kernel into the output.
fn conv_transpose_ref(x: &Array, w: &Array, o: ConvOptions, op: (usize, usize)) -> Array {
    let (n, cin, h, wd) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3]);
    let (cog, kh, kw) = (w.shape[1], w.shape[2], w.shape[3]);
    let oh = (h - 1) * o.stride.0 + o.dilation.0 * (kh - 1) + op.0 + 1 - 2 * o.padding.0;
    let ow = (wd - 1) * o.stride.1 + o.dilation.1 * (kw - 1) + op.1 + 1 - 2 * o.padding.1;
    let (cout, cig) = (cog * o.groups, cin / o.groups);
    let mut out = Array::full(&[n, cout, oh, ow], 0.0);
    for b in 0..n {
        for ci in 0..cin {
            for i in 0..h {
                for j in 0..wd {
                    for oc in 0..cog {
                        for a in 0..kh {
                            for bb in 0..kw {
                                let y = (i * o.stride.0 + a * o.dilation.0) as isize - o.padding.0 as isize;
                                let z = (j * o.stride.1 + bb * o.dilation.1) as isize - o.padding.1 as isize;
                                if y >= 0 && z >= 0 && (y as usize) < oh && (z as usize) < ow {
                                    let c = ci / cig * cog + oc;
                                    out.data[((b * cout + c) * oh + y as usize) * ow + z as usize] +=
                                        x.at(&[b, ci, i, j]) * w.at(&[ci, oc, a, bb]);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    out
}

#[test]
fn conv_transpose2d_matches_reference() {
    let mut rng = Rng::new(4);
    let rect = ConvOptions { stride: (2, 3), padding: (1, 0), dilation: (1, 2), groups: 2 };
    let cases = [
        (ConvOptions::default(), (0, 0), [2, 3, 4, 5], [3, 2, 3, 3]),
        (ConvOptions::default().stride(2).padding(1), (1, 1), [1, 2, 3, 3], [2, 3, 3, 3]),
        (rect, (1, 2), [2, 4, 3, 4], [4, 3, 2, 3]),
    ];
    for (o, op, xs, ws) in cases {
        let cout = ws[1] * o.groups;
        let (x, w, b) = (rng.array(&xs, -1.0, 1.0), rng.array(&ws, -1.0, 1.0), rng.array(&[cout], -1.0, 1.0));
        check(
            &format!("conv_transpose2d {o:?} {op:?}"),
            &[x, w, b],
            &|t| nn::conv_transpose2d(&t[0], &t[1], Some(&t[2]), o, op),
            &|a| conv_transpose_ref(&a[0], &a[1], o, op).zip(&a[2].reshape(&[cout, 1, 1]), |v, b| v + b),
        );
    }
    // the adjoint of conv2d: ⟨conv_transpose2d(y, w), x⟩ = ⟨y, conv2d(x, w)⟩
    let o = ConvOptions::default().stride(2).padding(1);
    let (x, w) = (rng.array(&[1, 2, 5, 5], -1.0, 1.0), rng.array(&[3, 2, 3, 3], -1.0, 1.0));
    let (xt, wt) = (upload(&x), upload(&w));
    let y = nn::conv2d(&xt, &wt, None, o);
    let back = nn::conv_transpose2d(&y, &wt, None, o, (0, 0));
    assert_eq!(back.shape(), &[1, 2, 5, 5]);
    let lhs: f32 = (&back * &xt).sum_all().item().unwrap();
    let rhs: f32 = y.square().sum_all().item().unwrap();
    assert!((lhs - rhs).abs() <= 1e-4 * rhs.abs(), "{lhs} vs {rhs}");
}

fn pool_ref(x: &Array, o: PoolOptions, max: bool) -> Array {
    let r = x.shape.len();
    let (h, w) = (x.shape[r - 2], x.shape[r - 1]);
    let planes: usize = x.shape[..r - 2].iter().product();
    let (oh, ow) = (
        (h + 2 * o.padding.0 - (o.kernel.0 - 1) * o.dilation.0 - 1) / o.stride.0 + 1,
        (w + 2 * o.padding.1 - (o.kernel.1 - 1) * o.dilation.1 - 1) / o.stride.1 + 1,
    );
    let mut shape = x.shape[..r - 2].to_vec();
    shape.extend([oh, ow]);
    let mut out = Array::full(&shape, 0.0);
    for pl in 0..planes {
        for i in 0..oh {
            for j in 0..ow {
                let mut acc = if max { f64::NEG_INFINITY } else { 0.0 };
                for a in 0..o.kernel.0 {
                    for b in 0..o.kernel.1 {
                        let y = (i * o.stride.0 + a * o.dilation.0) as isize - o.padding.0 as isize;
                        let z = (j * o.stride.1 + b * o.dilation.1) as isize - o.padding.1 as isize;
                        if y >= 0 && z >= 0 && (y as usize) < h && (z as usize) < w {
                            let v = x.data[(pl * h + y as usize) * w + z as usize];
                            acc = if max { acc.max(v) } else { acc + v };
                        }
                    }
                }
                out.data[(pl * oh + i) * ow + j] = if max { acc } else { acc / (o.kernel.0 * o.kernel.1) as f64 };
            }
        }
    }
    out
}

const POOLS: [(&[usize], PoolOptions); 6] = [
    // windows that tile the input two columns wide (the paired kernels),
    // one and two per invocation
    (&[2, 2, 6, 8], PoolOptions { kernel: (3, 2), stride: (3, 2), padding: (0, 0), dilation: (1, 1) }),
    (&[2, 2, 9, 6], PoolOptions { kernel: (3, 2), stride: (3, 2), padding: (0, 0), dilation: (1, 1) }),
    (&[2, 2, 7, 9], PoolOptions { kernel: (2, 3), stride: (2, 3), padding: (0, 0), dilation: (1, 1) }),
    (&[1, 3, 8, 7], PoolOptions { kernel: (3, 2), stride: (1, 2), padding: (1, 1), dilation: (1, 1) }),
    (&[2, 9, 10], PoolOptions { kernel: (3, 2), stride: (2, 1), padding: (1, 0), dilation: (2, 3) }),
    (&[6, 6], PoolOptions { kernel: (2, 2), stride: (2, 2), padding: (1, 1), dilation: (2, 2) }),
];

#[test]
fn max_pool2d_with_matches_reference() {
    let mut rng = Rng::new(5);
    for (shape, o) in POOLS {
        let x = distinct(&mut rng, shape);
        check(&format!("max_pool2d_with {shape:?} {o:?}"), &[x], &|t| nn::max_pool2d_with(&t[0], o), &|a| {
            pool_ref(&a[0], o, true)
        });
    }
}

/// Ties and NaN: the first maximum of a window in row-major order is its
/// value and gets its gradient, NaN beats any number, padding never wins
/// (f64 reference), for each kernel: windows tiling two columns wide (one
/// or two per invocation), tiling wider, and overlapping with padding.
#[test]
fn max_pool2d_ties_go_to_the_first_maximum() {
    let mut rng = Rng::new(8);
    let cases = [
        (&[2, 3, 4, 6][..], PoolOptions::new((2, 2))),
        // an even number of windows across: two per invocation
        (&[2, 3, 4, 8], PoolOptions::new((2, 2))),
        (&[2, 3, 6, 8], PoolOptions::new((3, 2))),
        (&[2, 3, 4, 6], PoolOptions::new((2, 3))),
        (&[2, 3, 4, 6], PoolOptions::new((3, 2)).stride(1).padding(1)),
    ];
    for (shape, o) in cases {
        let n: usize = shape.iter().product();
        // values from {−1, 0, 1}: most windows tie; one NaN per plane
        let mut v: Vec<f64> = (0..n).map(|_| rng.below(3) as f64 - 1.0).collect();
        let plane = shape[2] * shape[3];
        for pl in 0..n / plane {
            v[pl * plane + rng.below(plane)] = f64::NAN;
        }
        let x = Array::new(shape, v);
        let want = pool_ref(&x, o, true);
        let w = rng.array(&want.shape, -1.0, 1.0);
        // the reference's argmaxes
        let (h, wd, oh, ow) = (shape[2], shape[3], want.shape[2], want.shape[3]);
        let (mut val, mut dx) = (vec![0.0; want.numel()], vec![0.0; n]);
        for pl in 0..n / (h * wd) {
            for (i, j) in (0..oh).flat_map(|i| (0..ow).map(move |j| (i, j))) {
                let mut at: Option<usize> = None;
                for (a, b) in (0..o.kernel.0).flat_map(|a| (0..o.kernel.1).map(move |b| (a, b))) {
                    let y = (i * o.stride.0 + a) as isize - o.padding.0 as isize;
                    let z = (j * o.stride.1 + b) as isize - o.padding.1 as isize;
                    if y < 0 || z < 0 || y as usize >= h || z as usize >= wd {
                        continue;
                    }
                    let k = (pl * h + y as usize) * wd + z as usize;
                    let (c, best) = (x.data[k], at.map(|m| x.data[m]));
                    if best.is_none_or(|best| c > best || (c.is_nan() && !best.is_nan())) {
                        at = Some(k);
                    }
                }
                let (k, out) = (at.unwrap(), (pl * oh + i) * ow + j);
                val[out] = x.data[k];
                dx[k] += w.data[out];
            }
        }
        let xt = upload(&x);
        let (y, back) = wgrad::vjp(|t: &Tensor| nn::max_pool2d_with(t, o), &xt);
        let got = download(&y);
        let same = |a: f64, b: f64| (a.is_nan() && b.is_nan()) || (a - b).abs() <= 1e-6;
        for (k, (&g, &e)) in got.data.iter().zip(&val).enumerate() {
            assert!(same(g, e), "{shape:?} {o:?}: output {k} is {g}, want {e}");
        }
        let gx = download(&back(&upload(&w)));
        for (k, (&g, &e)) in gx.data.iter().zip(&dx).enumerate() {
            assert!(same(g, e), "{shape:?} {o:?}: gradient {k} is {g}, want {e}");
        }
    }
}

#[test]
fn avg_pool2d_with_matches_reference() {
    let mut rng = Rng::new(6);
    for (shape, o) in POOLS {
        let x = rng.array(shape, -1.0, 1.0);
        check(&format!("avg_pool2d_with {shape:?} {o:?}"), &[x], &|t| nn::avg_pool2d_with(&t[0], o), &|a| {
            pool_ref(&a[0], o, false)
        });
    }
    // the square forms are the options with equal sides
    let x = upload(&rng.array(&[1, 2, 7, 7], -1.0, 1.0));
    let o = PoolOptions::new((3, 3)).stride(2).padding(1);
    assert_eq!(
        nn::avg_pool2d(&x, 3, 2, 1).to_vec::<f32>().unwrap(),
        nn::avg_pool2d_with(&x, o).to_vec::<f32>().unwrap()
    );
    assert_eq!(
        nn::max_pool2d(&x, 3, 2, 1).to_vec::<f32>().unwrap(),
        nn::max_pool2d_with(&x, o).to_vec::<f32>().unwrap()
    );
}

#[test]
fn adaptive_and_global_avg_pool2d_match_reference() {
    let mut rng = Rng::new(7);
    let adaptive = |x: &Array, (oh, ow): (usize, usize)| {
        let r = x.shape.len();
        let (h, w) = (x.shape[r - 2], x.shape[r - 1]);
        let planes = x.numel() / (h * w);
        let mut shape = x.shape[..r - 2].to_vec();
        shape.extend([oh, ow]);
        let mut out = Array::full(&shape, 0.0);
        for p in 0..planes {
            for i in 0..oh {
                let (h0, h1) = (i * h / oh, ((i + 1) * h).div_ceil(oh));
                for j in 0..ow {
                    let (w0, w1) = (j * w / ow, ((j + 1) * w).div_ceil(ow));
                    let mut acc = 0.0;
                    for y in h0..h1 {
                        for z in w0..w1 {
                            acc += x.data[(p * h + y) * w + z];
                        }
                    }
                    out.data[(p * oh + i) * ow + j] = acc / ((h1 - h0) * (w1 - w0)) as f64;
                }
            }
        }
        out
    };
    // uneven windows (overlapping), even ones (the pooling kernel), more outputs than inputs
    for (shape, out) in [(&[2, 3, 5, 7][..], (3, 4)), (&[2, 6, 4], (3, 2)), (&[1, 1, 3, 2], (5, 3))] {
        let x = rng.array(shape, -1.0, 1.0);
        check(
            &format!("adaptive_avg_pool2d {shape:?} to {out:?}"),
            &[x],
            &|t| nn::adaptive_avg_pool2d(&t[0], out),
            &|a| adaptive(&a[0], out),
        );
    }
    let x = rng.array(&[2, 3, 4, 5], -1.0, 1.0);
    check("global_avg_pool2d", &[x], &|t| nn::global_avg_pool2d(&t[0]), &|a| a[0].mean(&[2, 3], false));
}

/// Differences d = pred − target kept at least 0.05 away from the kinks at
/// 0 and ±`kink`.
fn away_from(rng: &mut Rng, shape: &[usize], kink: f64) -> (Array, Array) {
    let t = rng.array(shape, -1.0, 1.0);
    let mut p = t.clone();
    for (pv, tv) in p.data.iter_mut().zip(&t.data) {
        let mut d = rng.uniform(-2.0, 2.0);
        while d.abs() < 0.05 || (d.abs() - kink).abs() < 0.05 {
            d = rng.uniform(-2.0, 2.0);
        }
        *pv = tv + d;
    }
    (p, t)
}

#[test]
fn l1_smooth_l1_and_huber_match_reference() {
    let mut rng = Rng::new(8);
    for red in REDUCTIONS {
        let (p, t) = away_from(&mut rng, &[4, 5], 0.0);
        let tt = upload(&t);
        check(&format!("l1_loss {red:?}"), &[p], &|x| nn::l1_loss(&x[0], &tt, red), &|a| {
            reduce(a[0].zip(&t, |p, t| (p - t).abs()), red)
        });
        for beta in [0.7, 0.0] {
            let (p, t) = away_from(&mut rng, &[4, 5], beta);
            let tt = upload(&t);
            let smooth = |d: f64| if d.abs() < beta { 0.5 * d * d / beta } else { d.abs() - 0.5 * beta };
            check(
                &format!("smooth_l1_loss β={beta} {red:?}"),
                &[p],
                &|x| nn::smooth_l1_loss(&x[0], &tt, beta as f32, red),
                &|a| reduce(a[0].zip(&t, |p, t| smooth(p - t)), red),
            );
        }
        let (p, t) = away_from(&mut rng, &[3, 4], 0.6);
        let tt = upload(&t);
        let huber = |d: f64| if d.abs() < 0.6 { 0.5 * d * d } else { 0.6 * (d.abs() - 0.3) };
        check(&format!("huber_loss {red:?}"), &[p], &|x| nn::huber_loss(&x[0], &tt, 0.6, red), &|a| {
            reduce(a[0].zip(&t, |p, t| huber(p - t)), red)
        });
    }
}

#[test]
fn kl_div_matches_reference() {
    let mut rng = Rng::new(9);
    let input = rng.array(&[3, 4], -3.0, 0.0);
    let mut target = rng.array(&[3, 4], 0.0, 1.0);
    target.data[5] = 0.0; // 0·log 0 = 0
    let tt = upload(&target);
    let lt = upload(&target.map(|v| (v + 0.1).ln()));
    for red in REDUCTIONS {
        check(
            &format!("kl_div {red:?}"),
            std::slice::from_ref(&input),
            &|x| nn::kl_div(&x[0], &tt, false, red),
            &|a| reduce(a[0].zip(&target, |x, t| if t == 0.0 { 0.0 } else { t * (t.ln() - x) }), red),
        );
        check(
            &format!("kl_div log_target {red:?}"),
            std::slice::from_ref(&input),
            &|x| nn::kl_div(&x[0], &lt, true, red),
            &|a| reduce(a[0].zip(&target, |x, t| (t + 0.1) * ((t + 0.1).ln() - x)), red),
        );
    }
    // the gradient with respect to the input is −t, finite where t = 0
    let x = upload(&input);
    let (g, _, ()) = grad(|x: &Tensor, t: &Tensor| nn::kl_div(x, t, false, Reduction::Sum))(&x, &tt);
    assert_close("kl_div ∂x", &download(&g), &target.map(|t| -t), 0.0, 0.0);
}

/// PyTorch's cross-entropy (class indices): weighted, ignoring `ignore`,
/// smoothed by `eps`; the mean divides by the weights of the samples kept.
fn ce_indices_ref(x: &Array, y: &[i64], w: Option<&Array>, ignore: i64, eps: f64, red: Reduction) -> Array {
    let (n, c) = (x.shape[0], x.shape[1]);
    let lp = x.log_softmax(1);
    let wc = |k: usize| w.map_or(1.0, |w| w.data[k]);
    let (mut per, mut denom) = (Array::full(&[n], 0.0), 0.0);
    for (i, &yi) in y.iter().enumerate() {
        if yi == ignore {
            continue;
        }
        let yi = yi as usize;
        let smooth: f64 = (0..c).map(|k| -wc(k) * lp.data[i * c + k]).sum();
        per.data[i] = (1.0 - eps) * -wc(yi) * lp.data[i * c + yi] + eps / c as f64 * smooth;
        denom += wc(yi);
    }
    match red {
        Reduction::Mean => Array::new(&[], vec![per.data.iter().sum::<f64>() / denom]),
        _ => reduce(per, red),
    }
}

#[test]
fn cross_entropy_with_matches_reference() {
    let mut rng = Rng::new(10);
    let x = rng.array(&[5, 4], -3.0, 3.0);
    let weight = rng.array(&[4], 0.2, 2.0);
    let labels = [2i64, -100, 0, 3, 2];
    let li = Tensor::from_slice(dev(), &labels.map(|l| l as i32), &[5]);
    let wt = upload(&weight);
    let soft = rng.array(&[5, 4], 0.0, 1.0);
    let soft = soft.zip(&soft.sum(&[1], true), |a, s| a / s);
    let st = upload(&soft);
    for red in REDUCTIONS {
        for (weighted, eps) in [(false, 0.0), (true, 0.0), (false, 0.2), (true, 0.3)] {
            let opts = CrossEntropyOptions {
                weight: weighted.then_some(&wt),
                ignore_index: Some(-100),
                label_smoothing: eps as f32,
            };
            let w = weighted.then_some(&weight);
            check(
                &format!("cross_entropy_with indices weighted={weighted} ε={eps} {red:?}"),
                std::slice::from_ref(&x),
                &|t| nn::cross_entropy_with(&t[0], &li, red, opts),
                &|a| ce_indices_ref(&a[0], &labels, w, -100, eps, red),
            );
            let opts = CrossEntropyOptions { ignore_index: None, ..opts };
            // probabilities: t' = (1 − ε)·t + ε/C, weighted per class, the mean over N
            check(
                &format!("cross_entropy_with probabilities weighted={weighted} ε={eps} {red:?}"),
                std::slice::from_ref(&x),
                &|t| nn::cross_entropy_with(&t[0], &st, red, opts),
                &|a| {
                    let lp = a[0].log_softmax(1);
                    let per = Array::new(
                        &[5],
                        (0..5)
                            .map(|i| {
                                (0..4)
                                    .map(|k| {
                                        let t = (1.0 - eps) * soft.data[i * 4 + k] + eps / 4.0;
                                        -w.map_or(1.0, |w| w.data[k]) * t * lp.data[i * 4 + k]
                                    })
                                    .sum()
                            })
                            .collect(),
                    );
                    reduce(per, red)
                },
            );
        }
    }
    // u32 labels, an ignore index that is a class, and the default options = cross_entropy
    let lu = Tensor::from_slice(dev(), &[1u32, 3, 1, 0, 2], &[5]);
    let opts = CrossEntropyOptions { ignore_index: Some(1), ..Default::default() };
    check(
        "cross_entropy_with u32 ignore 1",
        std::slice::from_ref(&x),
        &|t| nn::cross_entropy_with(&t[0], &lu, Reduction::Mean, opts),
        &|a| ce_indices_ref(&a[0], &[1, 3, 1, 0, 2], None, 1, 0.0, Reduction::Mean),
    );
    let xt = upload(&x);
    let plain = nn::cross_entropy(&xt, &lu, Reduction::Mean).to_vec::<f32>().unwrap();
    let with = nn::cross_entropy_with(&xt, &lu, Reduction::Mean, Default::default()).to_vec::<f32>().unwrap();
    assert!((plain[0] - with[0]).abs() <= 1e-6 * plain[0].abs(), "{plain:?} vs {with:?}");
    // every sample ignored: 0/0, NaN as PyTorch
    let all = Tensor::from_slice(dev(), &[-100i32; 5], &[5]);
    let opts = CrossEntropyOptions { ignore_index: Some(-100), ..Default::default() };
    assert!(nn::cross_entropy_with(&xt, &all, Reduction::Mean, opts).item::<f32>().unwrap().is_nan());
}

#[test]
fn bad_arguments_panic_with_the_shapes() {
    let d = dev();
    let expect = |needles: &[&str], f: &dyn Fn()| {
        let (msg, at) = panic_of(std::panic::AssertUnwindSafe(f));
        for n in needles {
            assert!(msg.contains(n), "{msg:?} lacks {n:?}");
        }
        assert!(at.ends_with(".rs:0") || at.contains("nn_layers.rs"), "{msg}: attributed to {at}");
    };
    let x4 = Tensor::zeros(d, &[2, 6, 5, 5]);
    let x3 = Tensor::zeros(d, &[2, 4, 9]);
    expect(&["rms_norm", "[2, 6, 5, 5]", "[3]"], &|| {
        nn::rms_norm(&x4, 1, Some(&Tensor::ones(d, &[3])), 1e-5);
    });
    expect(&["group_norm", "4 groups", "[2, 6, 5, 5]"], &|| {
        nn::group_norm(&x4, 4, None, None, 1e-5);
    });
    expect(&["conv1d", "[2, 6, 5, 5]", "[N, C, L]"], &|| {
        nn::conv1d(&x4, &Tensor::zeros(d, &[3, 6, 3]), None, Conv1dOptions::default());
    });
    expect(&["conv1d", "[2, 4, 9]", "channels"], &|| {
        nn::conv1d(&x3, &Tensor::zeros(d, &[3, 3, 3]), None, Conv1dOptions::default());
    });
    expect(&["conv_transpose2d", "output padding", "below the stride"], &|| {
        nn::conv_transpose2d(&x4, &Tensor::zeros(d, &[6, 2, 3, 3]), None, ConvOptions::default(), (1, 0));
    });
    expect(&["conv_transpose2d", "bias", "[2]", "[3]"], &|| {
        nn::conv_transpose2d(
            &x4,
            &Tensor::zeros(d, &[6, 2, 3, 3]),
            Some(&Tensor::zeros(d, &[3])),
            ConvOptions::default(),
            (0, 0),
        );
    });
    expect(&["max_pool2d", "kernel (2, 3)", "padding 2", "[2, 6, 5, 5]"], &|| {
        nn::max_pool2d_with(&x4, PoolOptions::new((2, 3)).padding(2));
    });
    expect(&["avg_pool2d", "dilation 3"], &|| {
        nn::avg_pool2d_with(&x4, PoolOptions::new((3, 3)).dilation(3));
    });
    expect(&["adaptive_avg_pool2d", "(0, 2)"], &|| {
        nn::adaptive_avg_pool2d(&x4, (0, 2));
    });
    let (p, t) = (Tensor::zeros(d, &[2, 3]), Tensor::zeros(d, &[3, 2]));
    expect(&["smooth_l1_loss", "[2, 3]", "[3, 2]"], &|| {
        nn::smooth_l1_loss(&p, &t, 1.0, Reduction::Mean);
    });
    expect(&["huber_loss", "delta"], &|| {
        nn::huber_loss(&p, &p, 0.0, Reduction::Mean);
    });
    expect(&["kl_div", "[2, 3]"], &|| {
        nn::kl_div(&p, &t, false, Reduction::BatchMean);
    });
    let labels = Tensor::from_slice(d, &[0u32, 1], &[2]);
    expect(&["cross_entropy_with", "[C] = [3]", "[2]"], &|| {
        let w = Tensor::ones(d, &[2]);
        nn::cross_entropy_with(
            &p,
            &labels,
            Reduction::Mean,
            CrossEntropyOptions { weight: Some(&w), ..Default::default() },
        );
    });
    expect(&["cross_entropy_with", "label smoothing 1.5"], &|| {
        nn::cross_entropy_with(
            &p,
            &labels,
            Reduction::Mean,
            CrossEntropyOptions { label_smoothing: 1.5, ..Default::default() },
        );
    });
    expect(&["cross_entropy_with", "ignore_index", "probabilities"], &|| {
        nn::cross_entropy_with(
            &p,
            &p,
            Reduction::Mean,
            CrossEntropyOptions { ignore_index: Some(0), ..Default::default() },
        );
    });
}
