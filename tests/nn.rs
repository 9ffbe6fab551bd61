//! Layers and losses against the f64 reference, their gradients against
//! central differences of the reference and gradcheck.

mod common;

use common::*;
use wgrad::nn::{self, ConvOptions, Reduction};
use wgrad::{DType, GradcheckOptions, Tensor, grad, gradcheck, hvp};

/// Reference convolution (cross-correlation, NCHW, groups).
fn conv_ref(x: &Array, w: &Array, o: ConvOptions) -> Array {
    let (n, h, wd) = (x.shape[0], x.shape[2], x.shape[3]);
    let (oc, cg, kh, kw) = (w.shape[0], w.shape[1], w.shape[2], w.shape[3]);
    let oh = (h + 2 * o.padding.0 - (kh - 1) * o.dilation.0 - 1) / o.stride.0 + 1;
    let ow = (wd + 2 * o.padding.1 - (kw - 1) * o.dilation.1 - 1) / o.stride.1 + 1;
    let og = oc / o.groups;
    let mut out = Array::full(&[n, oc, oh, ow], 0.0);
    for b in 0..n {
        for oo in 0..oc {
            let g = oo / og;
            for i in 0..oh {
                for j in 0..ow {
                    let mut acc = 0.0;
                    for ci in 0..cg {
                        for a in 0..kh {
                            for bb in 0..kw {
                                let y = (i * o.stride.0 + a * o.dilation.0) as isize - o.padding.0 as isize;
                                let xx = (j * o.stride.1 + bb * o.dilation.1) as isize - o.padding.1 as isize;
                                if y >= 0 && xx >= 0 && (y as usize) < h && (xx as usize) < wd {
                                    acc += x.at(&[b, g * cg + ci, y as usize, xx as usize]) * w.at(&[oo, ci, a, bb]);
                                }
                            }
                        }
                    }
                    out.data[((b * oc + oo) * oh + i) * ow + j] = acc;
                }
            }
        }
    }
    out
}

fn pool_ref(x: &Array, k: usize, s: usize, p: usize, max: bool) -> Array {
    let r = x.shape.len();
    let (h, w) = (x.shape[r - 2], x.shape[r - 1]);
    let planes: usize = x.shape[..r - 2].iter().product();
    let (oh, ow) = ((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1);
    let mut shape = x.shape[..r - 2].to_vec();
    shape.extend([oh, ow]);
    let mut out = Array::full(&shape, 0.0);
    for pl in 0..planes {
        for i in 0..oh {
            for j in 0..ow {
                let mut acc = if max { f64::NEG_INFINITY } else { 0.0 };
                for a in 0..k {
                    for b in 0..k {
                        let (y, xx) = ((i * s + a) as isize - p as isize, (j * s + b) as isize - p as isize);
                        if y >= 0 && xx >= 0 && (y as usize) < h && (xx as usize) < w {
                            let v = x.data[(pl * h + y as usize) * w + xx as usize];
                            acc = if max { acc.max(v) } else { acc + v };
                        }
                    }
                }
                out.data[(pl * oh + i) * ow + j] = if max { acc } else { acc / (k * k) as f64 };
            }
        }
    }
    out
}

/// Checks forward and gradients of `gpu` against `cpu`. Outputs are sums of
/// at most a few hundred products: 256 units of roundoff of the largest
/// magnitude involved bounds the error.
fn check_layer(name: &str, xs: &[Array], gpu: &dyn Fn(&[Tensor]) -> Tensor, cpu: &dyn Fn(&[Array]) -> Array) {
    let mut rng = Rng::new(name.len() as u64);
    let want = cpu(xs);
    let ts: Vec<Tensor> = xs.iter().map(upload).collect();
    let got = download(&gpu(&ts));
    let scale = want.data.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    assert_close(&format!("{name} forward"), &got, &want, 0.0, 256.0 * EPS * scale);
    let w = rng.array(&want.shape, -1.0, 1.0);
    let wt = upload(&w);
    let (g, _, ()) = grad(|p: &Vec<Tensor>, w: &Tensor| (gpu(p) * w).sum_all())(&ts, &wt);
    for (i, (gi, want)) in g.iter().zip(reference_grads(cpu, xs, &w)).enumerate() {
        let scale = want.data.iter().fold(1.0f64, |m, v| m.max(v.abs()));
        assert_close(&format!("{name} ∂x{i}"), &download(gi), &want, 0.0, 256.0 * EPS * scale);
    }
    let report =
        gradcheck(|p: &Vec<Tensor>, w: &Tensor| (gpu(p) * w).sum_all(), &ts, &wt, &GradcheckOptions::default())
            .unwrap();
    assert!(report.passed, "{name}: gradcheck {:?}", report.directions);
}

#[test]
fn conv2d_of_a_batch_matches_image_by_image() {
    // 8 images of 16 channels, 64×64 (their receptive fields would take 6.6
    // MB each). Each image's output and input gradient, and the sum of the
    // weight gradients, must match the same convolution of that image
    // alone. The two differ only in how the products' sums are split (k
    // slices chosen per shape; the weight gradient sums over the batch), so
    // each value may differ by its number of terms × ε × the sum of its
    // terms' magnitudes — the same computation on |x|, |w| and |v|.
    let d = dev();
    d.manual_seed(12);
    let (x, w) = (Tensor::randn(d, &[8, 16, 64, 64]), Tensor::randn(d, &[4, 16, 5, 5]) * 0.1);
    let v = Tensor::randn(d, &[8, 4, 64, 64]);
    let o = ConvOptions::default().padding(2);
    let f = |p: &Vec<Tensor>, v: &Tensor| (nn::conv2d(&p[0], &p[1], None, o) * v).sum_all();
    let run = |x: &Tensor, w: &Tensor, v: &Tensor| {
        let (g, _, ()) = grad(f)(&vec![x.clone(), w.clone()], v);
        let y = nn::conv2d(x, w, None, o);
        [y, g[0].clone(), g[1].clone()].map(|t| t.to_vec::<f32>().unwrap())
    };
    let [y, gx, gw] = run(&x, &w, &v);
    let [ya, gxa, gwa] = run(&x.abs(), &w.abs(), &v.abs());
    let eps = f32::EPSILON;
    let close = |what: &str, got: &[f32], want: &[f32], size: &[f32], terms: f32| {
        for (k, ((g, w), s)) in got.iter().zip(want).zip(size).enumerate() {
            assert!((g - w).abs() <= terms * eps * s, "{what}[{k}]: {g} vs {w} (scale {s})");
        }
    };
    let mut gw_sum = vec![0.0f32; gw.len()];
    for n in 0..8 {
        let one = |t: &Tensor| t.narrow(0, n, 1).contiguous();
        let [yn, gxn, gwn] = run(&one(&x), &w, &one(&v));
        let (ny, nx) = (yn.len(), gxn.len());
        close("y", &y[n * ny..(n + 1) * ny], &yn, &ya[n * ny..(n + 1) * ny], 2.0 * 400.0);
        close("dx", &gx[n * nx..(n + 1) * nx], &gxn, &gxa[n * nx..(n + 1) * nx], 2.0 * 100.0);
        for (s, g) in gw_sum.iter_mut().zip(gwn) {
            *s += g;
        }
    }
    close("dw", &gw, &gw_sum, &gwa, 2.0 * 8.0 * 4096.0);
}

#[test]
fn conv2d_matches_reference() {
    let mut rng = Rng::new(41);
    #[rustfmt::skip]
    let cases: &[(&[usize], &[usize], ConvOptions)] = &[
        (&[2, 3, 7, 6], &[4, 3, 3, 3], ConvOptions::default()),
        (&[1, 1, 28, 28], &[3, 1, 5, 5], ConvOptions::default().padding(2)),
        (&[2, 4, 9, 9], &[6, 2, 3, 3], ConvOptions::default().stride(2).padding(1).groups(2)),
        (&[1, 2, 10, 8], &[2, 2, 3, 2], ConvOptions { stride: (2, 1), padding: (1, 0), dilation: (2, 1), groups: 1 }),
        // one output channel (per group): the forward product is a row vector
        (&[2, 3, 7, 6], &[1, 3, 3, 3], ConvOptions::default().padding(1)),
        (&[1, 2, 6, 5], &[2, 1, 3, 3], ConvOptions::default().groups(2)),
    ];
    for (xs, ws, o) in cases {
        let x = rng.array(xs, -1.0, 1.0);
        let w = rng.array(ws, -1.0, 1.0);
        let o = *o;
        check_layer(&format!("conv2d {xs:?} {ws:?} {o:?}"), &[x, w], &|t| nn::conv2d(&t[0], &t[1], None, o), &|a| {
            conv_ref(&a[0], &a[1], o)
        });
    }
    // bias, and a strided (non-contiguous) input
    let x = rng.array(&[2, 3, 5, 5], -1.0, 1.0);
    let w = rng.array(&[2, 3, 3, 3], -1.0, 1.0);
    let b = rng.array(&[2], -1.0, 1.0);
    let xt = upload(&x.permute(&[0, 1, 3, 2])).transpose(2, 3);
    let got = download(&nn::conv2d(&xt, &upload(&w), Some(&upload(&b)), ConvOptions::default()));
    let want = conv_ref(&x, &w, ConvOptions::default()).zip(&b.reshape(&[2, 1, 1]), |a, b| a + b);
    assert_close("conv2d with bias of a view", &got, &want, 0.0, 1e-5);
}

/// A batch with more (image, group) pairs than a dispatch holds (65,535)
/// is convolved in slices; they must agree exactly with convolving each
/// image alone.
#[test]
fn conv2d_of_a_large_batch_is_sliced_exactly() {
    let d = dev();
    d.manual_seed(3);
    // 300 images × 256 groups: slices of 255 images
    let x = Tensor::randn(d, &[300, 256, 4, 4]);
    let w = Tensor::randn(d, &[256, 1, 3, 3]);
    let o = ConvOptions::default().padding(1).groups(256);
    let all = nn::conv2d(&x, &w, None, o);
    for i in [0usize, 150, 254, 255, 299] {
        let one = nn::conv2d(&x.narrow(0, i, 1), &w, None, o);
        assert_eq!(all.narrow(0, i, 1).to_vec::<f32>().unwrap(), one.to_vec::<f32>().unwrap(), "image {i}");
    }
    // the weight gradient sums the slices: compare with Σ over halves
    let f = |w: &Tensor, x: &Tensor| nn::conv2d(x, w, None, o).sum_all();
    let (g_all, _, ()) = grad(f)(&w, &x);
    let (g1, _, ()) = grad(f)(&w, &x.narrow(0, 0, 150));
    let (g2, _, ()) = grad(f)(&w, &x.narrow(0, 150, 150));
    let want = download(&(g1 + g2));
    // each is a sum of at most 300·16 terms, grouped differently: both
    // within 300·16·u of the sum of the terms' magnitudes (the same
    // gradient at |x|)
    let size = download(&grad(f)(&w, &x.abs()).0);
    let bound = size.map(|s| 2.0 * 300.0 * 16.0 * (EPS / 2.0) * s);
    assert_within("sliced weight gradient", &download(&g_all), &want, &bound);
}

#[test]
fn conv2d_second_derivative() {
    // vᵀ·H·v of L = Σ w·conv(x, k)² along (x, k): compare with the reference's
    // second difference.
    let mut rng = Rng::new(42);
    let (x, k) = (rng.array(&[1, 2, 5, 5], -1.0, 1.0), rng.array(&[2, 2, 3, 3], -1.0, 1.0));
    let o = ConvOptions::default().padding(1);
    let wgt = rng.array(&[1, 2, 5, 5], -1.0, 1.0);
    let v = [rng.array(&[1, 2, 5, 5], -1.0, 1.0), rng.array(&[2, 2, 3, 3], -1.0, 1.0)];
    let loss =
        |x: &Array, k: &Array| -> f64 { conv_ref(x, k, o).data.iter().zip(&wgt.data).map(|(a, b)| a * a * b).sum() };
    let h = 1e-4;
    let at = |s: f64| loss(&x.zip(&v[0], |a, b| a + s * h * b), &k.zip(&v[1], |a, b| a + s * h * b));
    let want = (at(1.0) - 2.0 * at(0.0) + at(-1.0)) / (h * h);
    let params = vec![upload(&x), upload(&k)];
    let vt: Vec<Tensor> = v.iter().map(upload).collect();
    let hv = hvp(
        |p: &Vec<Tensor>, w: &Tensor| (nn::conv2d(&p[0], &p[1], None, o).square() * w).sum_all(),
        &params,
        &upload(&wgt),
        &vt,
    );
    let got: f64 =
        hv.iter().zip(&v).map(|(a, b)| download(a).data.iter().zip(&b.data).map(|(x, y)| x * y).sum::<f64>()).sum();
    assert!((got - want).abs() < 1e-3 * (1.0 + want.abs()), "vᵀHv {got} vs {want}");
}

#[test]
fn pooling_matches_reference() {
    let mut rng = Rng::new(43);
    // windows that tile the input (one kernel), and ones that do not
    let cases = [(&[2, 3, 8, 8][..], 2, 2, 0), (&[1, 2, 5, 7], 2, 2, 0), (&[1, 2, 7, 9], 3, 2, 1), (&[5, 6], 2, 1, 0)];
    for &(shape, k, s, p) in &cases {
        // distinct values keep the argmax away from ties
        let n: usize = shape.iter().product();
        let mut perm: Vec<f64> = (0..n).map(|i| i as f64 / n as f64 - 0.5).collect();
        for i in (1..n).rev() {
            perm.swap(i, rng.below(i + 1));
        }
        let x = Array::new(shape, perm);
        check_layer(
            &format!("max_pool2d {shape:?} k{k} s{s} p{p}"),
            std::slice::from_ref(&x),
            &|t| nn::max_pool2d(&t[0], k, s, p),
            &|a| pool_ref(&a[0], k, s, p, true),
        );
        check_layer(
            &format!("avg_pool2d {shape:?} k{k} s{s} p{p}"),
            std::slice::from_ref(&x),
            &|t| nn::avg_pool2d(&t[0], k, s, p),
            &|a| pool_ref(&a[0], k, s, p, false),
        );
    }
    // max pooling is twice differentiable: Hessian of Σ w·maxpool(x)² is diagonal 2w at the argmaxes
    let x = upload(&Array::new(&[1, 1, 2, 2], vec![0.1, 0.4, 0.3, 0.2]));
    let v = upload(&Array::new(&[1, 1, 2, 2], vec![1.0, 1.0, 1.0, 1.0]));
    let hv = hvp(|x: &Tensor, _: &()| nn::max_pool2d(x, 2, 2, 0).square().sum_all() * 3.0, &x, &(), &v);
    assert_eq!(hv.to_vec::<f32>().unwrap(), vec![0.0, 6.0, 0.0, 0.0]);
}

#[test]
fn normalisation_layers() {
    let mut rng = Rng::new(44);
    let x = rng.array(&[4, 3, 2, 2], -2.0, 2.0);
    let (gamma, beta) = (rng.array(&[3], 0.5, 1.5), rng.array(&[3], -0.5, 0.5));
    let bn_ref = |a: &[Array]| {
        let mean = a[0].mean(&[0, 2, 3], true);
        let var = a[0].zip(&mean, |v, m| (v - m) * (v - m)).mean(&[0, 2, 3], true);
        let norm = a[0].zip(&mean, |v, m| v - m).zip(&var, |v, s| v / (s + 1e-5).sqrt());
        norm.zip(&a[1].reshape(&[3, 1, 1]), |v, g| v * g).zip(&a[2].reshape(&[3, 1, 1]), |v, b| v + b)
    };
    let stats = nn::BatchNormStats::new(dev(), 3);
    check_layer(
        "batch_norm",
        &[x.clone(), gamma.clone(), beta.clone()],
        &|t| nn::batch_norm(&t[0], &t[1], &t[2], &stats, true, 0.1, 1e-5).0,
        &bn_ref,
    );
    // running statistics: (1 − m)·old + m·batch, with the unbiased variance
    let (_, new) = nn::batch_norm(&upload(&x), &upload(&gamma), &upload(&beta), &stats, true, 0.1, 1e-5);
    let mean = x.mean(&[0, 2, 3], false);
    let var = x.zip(&x.mean(&[0, 2, 3], true), |v, m| (v - m) * (v - m)).sum(&[0, 2, 3], false).map(|s| s / 15.0);
    assert_close("running mean", &download(&new.mean), &mean.map(|m| 0.1 * m), 1e-5, 1e-6);
    assert_close("running var", &download(&new.var), &var.map(|v| 0.9 + 0.1 * v), 1e-5, 1e-6);
    // evaluation uses the running statistics
    let (y, same) = nn::batch_norm(&upload(&x), &upload(&gamma), &upload(&beta), &new, false, 0.1, 1e-5);
    let want = x
        .zip(&download(&new.mean).reshape(&[3, 1, 1]), |v, m| v - m)
        .zip(&download(&new.var).reshape(&[3, 1, 1]), |v, s| v / (s + 1e-5).sqrt())
        .zip(&gamma.reshape(&[3, 1, 1]), |v, g| v * g)
        .zip(&beta.reshape(&[3, 1, 1]), |v, b| v + b);
    assert_close("batch_norm eval", &download(&y), &want, 1e-5, 1e-5);
    assert_eq!(download(&same.mean), download(&new.mean));
    // layer norm over the last two axes, with affine parameters
    let (w, b) = (rng.array(&[2, 2], 0.5, 1.5), rng.array(&[2, 2], -0.5, 0.5));
    let ln_ref = |a: &[Array]| {
        let mean = a[0].mean(&[2, 3], true);
        let var = a[0].zip(&mean, |v, m| (v - m) * (v - m)).mean(&[2, 3], true);
        a[0].zip(&mean, |v, m| v - m)
            .zip(&var, |v, s| v / (s + 1e-5).sqrt())
            .zip(&a[1], |v, g| v * g)
            .zip(&a[2], |v, b| v + b)
    };
    check_layer("layer_norm", &[x, w, b], &|t| nn::layer_norm(&t[0], 2, Some(&t[1]), Some(&t[2]), 1e-5), &ln_ref);
}

#[test]
fn activations_embedding_dropout() {
    let mut rng = Rng::new(45);
    let x = rng.array(&[3, 7], -3.0, 3.0).map(|v| if v.abs() < 0.1 { v + 0.2 } else { v });
    check_layer("leaky_relu", std::slice::from_ref(&x), &|t| t[0].leaky_relu(0.1), &|a| {
        a[0].map(|v| if v > 0.0 { v } else { 0.1 * v })
    });
    check_layer("elu", std::slice::from_ref(&x), &|t| t[0].elu(1.5), &|a| {
        a[0].map(|v| if v > 0.0 { v } else { 1.5 * (v.exp() - 1.0) })
    });
    let table = rng.array(&[5, 3], -1.0, 1.0);
    let idx = [4u32, 0, 4, 2, 1, 1];
    let it = Tensor::from_slice(dev(), &idx, &[2, 3]);
    check_layer("embedding", std::slice::from_ref(&table), &|t| nn::embedding(&it, &t[0]), &|a| {
        a[0].index_select(0, &idx.map(|i| i as usize)).reshape(&[2, 3, 3])
    });
    // the embedding's gradient: a one-hot product for small tables, a scatter
    // past 2^24 one-hot elements; both give the sums of the rows' weights
    for (rows, n) in [(300, 4100), (4200, 4100)] {
        let idx: Vec<u32> = (0..n).map(|j| ((j * j * 31 + 7) % rows) as u32).collect();
        let w: Vec<f32> = (0..n).map(|j| ((j * 37 % 101) as f32 - 50.0) / 25.0).collect();
        let (it, wt) = (Tensor::from_slice(dev(), &idx, &[n]), Tensor::from_slice(dev(), &w, &[n, 1]));
        let table = Tensor::zeros(dev(), &[rows, 1]);
        let (g, _, ()) = grad(|t: &Tensor, (): &()| (nn::embedding(&it, t) * &wt).sum_all())(&table, &());
        let mut want = vec![0.0f64; rows];
        for (&i, &v) in idx.iter().zip(&w) {
            want[i as usize] += v as f64;
        }
        let got: Vec<f32> = g.to_vec().unwrap();
        // at most 4100 terms of |w| ≤ 2 in f32: 4100 · 2 · 2⁻²⁴ ≈ 5e-4
        let worst = got.iter().zip(&want).map(|(&a, &b)| (a as f64 - b).abs()).fold(0.0, f64::max);
        assert!(worst < 5e-4, "embedding gradient, {rows} rows, {n} indices: off by {worst}");
    }
    // dropout: zeroes about p, scales the rest, reproducible, identity in eval
    let d = own_device();
    let ones = Tensor::ones(&d, &[100_000]);
    d.manual_seed(7);
    let a: Vec<f32> = nn::dropout(&ones, 0.3, true).to_vec().unwrap();
    d.manual_seed(7);
    assert_eq!(nn::dropout(&ones, 0.3, true).to_vec::<f32>().unwrap(), a);
    let zeros = a.iter().filter(|&&v| v == 0.0).count() as f64 / a.len() as f64;
    assert!((zeros - 0.3).abs() < 5.0 * (0.3f64 * 0.7 / 1e5).sqrt(), "dropped {zeros}");
    assert!(a.iter().all(|&v| v == 0.0 || (v - 1.0 / 0.7).abs() < 1e-6));
    assert_eq!(nn::dropout(&ones, 0.3, false).to_vec::<f32>().unwrap(), vec![1.0; 100_000]);
}

#[test]
fn losses_match_reference() {
    let mut rng = Rng::new(46);
    let logits = rng.array(&[4, 5], -3.0, 3.0);
    let labels = [3usize, 0, 4, 4];
    let lt = Tensor::from_slice(dev(), &labels.map(|l| l as u32), &[4]);
    let onehot = Array::new(&[4, 5], (0..20).map(|i| (labels[i / 5] == i % 5) as u8 as f64).collect());
    let soft = rng.array(&[4, 5], 0.0, 1.0);
    let soft = soft.zip(&soft.sum(&[1], true), |a, s| a / s);
    let ce_rows = |x: &Array, t: &Array| x.log_softmax(1).zip(t, |a, b| -a * b).sum(&[1], false);
    for red in [Reduction::Mean, Reduction::Sum, Reduction::None] {
        let reduce = |a: Array| match red {
            Reduction::Mean => Array::new(&[], vec![a.data.iter().sum::<f64>() / a.numel() as f64]),
            Reduction::Sum => Array::new(&[], vec![a.data.iter().sum::<f64>()]),
            Reduction::None => a,
            Reduction::BatchMean => Array::new(&[], vec![a.data.iter().sum::<f64>() / a.shape[0] as f64]),
        };
        let name = |n: &str| format!("{n} {red:?}");
        check_layer(
            &name("cross_entropy (indices)"),
            std::slice::from_ref(&logits),
            &|t| nn::cross_entropy(&t[0], &lt, red),
            &|a| reduce(ce_rows(&a[0], &onehot)),
        );
        let st = upload(&soft);
        check_layer(
            &name("cross_entropy (probabilities)"),
            std::slice::from_ref(&logits),
            &|t| nn::cross_entropy(&t[0], &st, red),
            &|a| reduce(ce_rows(&a[0], &soft)),
        );
        check_layer(
            &name("nll_loss"),
            std::slice::from_ref(&logits),
            &|t| nn::nll_loss(&t[0].log_softmax(1), &lt, red),
            &|a| reduce(ce_rows(&a[0], &onehot)),
        );
        let oh = upload(&onehot);
        check_layer(
            &name("log_multinomial_loss"),
            std::slice::from_ref(&logits),
            &|t| nn::log_multinomial_loss(&t[0].log_softmax(1), &oh, red),
            &|a| reduce(ce_rows(&a[0], &onehot)),
        );
        let target = rng.array(&[4, 5], 0.0, 1.0);
        let tt = upload(&target);
        check_layer(&name("mse_loss"), std::slice::from_ref(&logits), &|t| nn::mse_loss(&t[0], &tt, red), &|a| {
            reduce(a[0].zip(&target, |p, t| (p - t) * (p - t)))
        });
        let sig = |v: f64| 1.0 / (1.0 + (-v).exp());
        let bce = |p: f64, t: f64| -(t * p.ln() + (1.0 - t) * (1.0 - p).ln());
        check_layer(
            &name("bce_with_logits"),
            std::slice::from_ref(&logits),
            &|t| nn::bce_with_logits(&t[0], &tt, red),
            &|a| reduce(a[0].zip(&target, |x, t| bce(sig(x), t))),
        );
        check_layer(
            &name("bce_loss"),
            std::slice::from_ref(&logits),
            &|t| nn::bce_loss(&t[0].sigmoid(), &tt, red),
            &|a| reduce(a[0].zip(&target, |x, t| bce(sig(x), t))),
        );
    }
    // stability: extreme logits stay finite
    let big = Tensor::from_slice(dev(), &[1000.0f32, -1000.0], &[1, 2]);
    let l: f32 = nn::cross_entropy(&big, &Tensor::from_slice(dev(), &[1u32], &[1]), Reduction::Mean).item().unwrap();
    assert_eq!(l, 2000.0);
    let l: f32 =
        nn::bce_with_logits(&big, &Tensor::from_slice(dev(), &[0.0f32, 1.0], &[1, 2]), Reduction::Sum).item().unwrap();
    assert_eq!(l, 2000.0);
    let p = Tensor::from_slice(dev(), &[0.0f32, 1.0], &[2]);
    let l: f32 = nn::bce_loss(&p, &Tensor::from_slice(dev(), &[1.0f32, 0.0], &[2]), Reduction::Sum).item().unwrap();
    assert_eq!(l, 200.0);
}

#[test]
fn initialisers_have_the_right_spread() {
    let d = own_device();
    d.manual_seed(5);
    let n = 400 * 500;
    let w = nn::init::xavier_uniform(&d, &[400, 500], 1.0);
    let a = (6.0f32 / 900.0).sqrt();
    let (lo, hi): (f32, f32) = (w.min(&[0, 1], false).item().unwrap(), w.max(&[0, 1], false).item().unwrap());
    assert!(lo >= -a && hi < a && hi > 0.99 * a, "{lo} {hi} {a}");
    let std = |t: &Tensor| -> f32 { t.square().mean_all().item::<f32>().unwrap().sqrt() };
    let tol = |s: f32| s * 5.0 * (0.5 / n as f32).sqrt();
    let s = (2.0f32 / 900.0).sqrt();
    assert!((std(&nn::init::xavier_normal(&d, &[400, 500], 1.0)) - s).abs() < tol(s));
    let s = (2.0f32 / 500.0).sqrt();
    assert!((std(&nn::init::kaiming_normal(&d, &[400, 500])) - s).abs() < tol(s));
    // U(−a, a) has standard deviation a/√3
    let s = (6.0f32 / 500.0).sqrt() / 3f32.sqrt();
    assert!((std(&nn::init::kaiming_uniform(&d, &[400, 500])) - s).abs() < tol(s));
    assert_eq!(nn::init::fans(&[16, 8, 5, 5]), (200, 400));
    // seeded: the same seed gives the same weights
    d.manual_seed(9);
    let a = nn::init::kaiming_uniform(&d, &[3, 3]).to_vec::<f32>().unwrap();
    d.manual_seed(9);
    assert_eq!(nn::init::kaiming_uniform(&d, &[3, 3]).to_vec::<f32>().unwrap(), a);
    let _ = DType::F32;
}

/// Gradients are finite wherever the maths is: every loss at its limits
/// (probabilities of exactly 0 and 1 — `sigmoid(20)` is 1.0 in f32 —, logits
/// of ±1000, targets at both ends), against the f64 gradient of the same
/// clamped loss where it is smooth.
#[test]
fn losses_have_finite_gradients_at_their_limits() {
    let d = dev();
    let logits = Tensor::from_slice(d, &[20.0f32, -20.0, 1000.0, -1000.0, 0.0, 3.0], &[3, 2]);
    let p = Tensor::from_slice(d, &[0.0f32, 1.0, 1e-30, 0.5, 1.0 - 1e-7, 0.25], &[3, 2]);
    let t = Tensor::from_slice(d, &[0.0f32, 1.0, 1.0, 0.0, 0.0, 1.0], &[3, 2]);
    let labels = Tensor::from_slice(d, &[1u32, 0, 1], &[3]);
    type Loss<'a> = Box<dyn Fn(&Tensor) -> Tensor + 'a>;
    let cases: Vec<(&str, &Tensor, Loss)> = vec![
        ("bce_loss of sigmoid", &logits, Box::new(|x| nn::bce_loss(&x.sigmoid(), &t, Reduction::Sum))),
        ("bce_loss", &p, Box::new(|x| nn::bce_loss(x, &t, Reduction::Sum))),
        ("bce_with_logits", &logits, Box::new(|x| nn::bce_with_logits(x, &t, Reduction::Sum))),
        ("cross_entropy", &logits, Box::new(|x| nn::cross_entropy(x, &labels, Reduction::Mean))),
        ("cross_entropy (probabilities)", &logits, Box::new(|x| nn::cross_entropy(x, &t, Reduction::Sum))),
        ("mse_loss", &logits, Box::new(|x| nn::mse_loss(x, &t, Reduction::Mean))),
    ];
    for (name, x, loss) in cases {
        let (g, l, ()) = grad(|x: &Tensor, _: &()| loss(x))(x, &());
        let g = g.to_vec::<f32>().unwrap();
        assert!(l.item::<f32>().unwrap().is_finite(), "{name}: the loss is not finite");
        assert!(g.iter().all(|v| v.is_finite()), "{name}: gradient {g:?}");
    }
    // where the clamp holds (p = 0 against t = 1, p = 1 against t = 0) the
    // loss is flat: no gradient; elsewhere −t/p + (1 − t)/(1 − p)
    let (g, _, ()) = grad(|p: &Tensor, _: &()| nn::bce_loss(p, &t, Reduction::Sum))(&p, &());
    let g = g.to_vec::<f32>().unwrap();
    let (pv, tv) = (p.to_vec::<f32>().unwrap(), t.to_vec::<f32>().unwrap());
    for ((&g, &p), &t) in g.iter().zip(&pv).zip(&tv) {
        let (p, t) = (p as f64, t as f64);
        let want = match (p, t) {
            (0.0, 1.0) | (1.0, 0.0) => 0.0,
            _ => -t / p.max(f32::MIN_POSITIVE as f64) + (1.0 - t) / (1.0 - p).max(f32::MIN_POSITIVE as f64),
        };
        assert!((g as f64 - want).abs() <= 1e-5 * want.abs().max(1.0), "p {p}, t {t}: {g} vs {want}");
    }
}

/// The mean of nothing is NaN, as in numpy, JAX and PyTorch (its sum is 0).
#[test]
fn means_of_nothing_are_nan() {
    let d = dev();
    let empty = Tensor::zeros(d, &[2, 0]);
    assert!(empty.mean(&[1], false).to_vec::<f32>().unwrap().iter().all(|v| v.is_nan()));
    assert!(empty.mean_all().item::<f32>().unwrap().is_nan());
    assert_eq!(empty.sum(&[1], false).to_vec::<f32>().unwrap(), vec![0.0, 0.0]);
    let logits = Tensor::zeros(d, &[0, 3]);
    let none = Tensor::zeros(d, &[0]).cast(DType::U32);
    assert!(nn::cross_entropy(&logits, &none, Reduction::Mean).item::<f32>().unwrap().is_nan());
    assert_eq!(nn::cross_entropy(&logits, &none, Reduction::Sum).item::<f32>().unwrap(), 0.0);
}
