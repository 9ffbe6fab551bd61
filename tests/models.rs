//! The seed's four models written with wgrad, their gradients checked against
//! the f64 reference and by gradcheck; nested parameter structures; control
//! flow; tied weights; constants; the cost of one training step.

mod common;

use std::collections::{BTreeMap, HashMap};

use common::*;
use wgrad::{GradcheckOptions, Params, Tensor, grad, gradcheck, no_grad, vjp};

// ---- the seed's models, as a user writes them ----------------------------------

/// Example 1: logistic regression with log-softmax and the multinomial loss.
#[derive(Params)]
struct Logistic {
    w: Tensor,
    b: Tensor,
}

fn logistic_loss(p: &Logistic, (x, y): &(Tensor, Tensor)) -> Tensor {
    let yhat = (x.matmul(&p.w) + &p.b).log_softmax(-1);
    -(yhat * y).sum_all()
}

/// Example 2: a two-layer tanh network with the hand-written cross-entropy
/// `-sum(logSoftMax(pred) * target)`; also returns the predictions.
#[derive(Params)]
struct Mlp {
    w: Vec<Tensor>,
    b: Vec<Tensor>,
}

fn mlp_loss(p: &Mlp, (x, y): &(Tensor, Tensor)) -> (Tensor, Tensor) {
    let h = (x.matmul(&p.w[0]) + &p.b[0]).tanh();
    let pred = h.matmul(&p.w[1]) + &p.b[1];
    let loss = -(pred.log_softmax(-1) * y).sum_all();
    (loss, pred)
}

/// Example 3: an autoencoder whose decoder reuses the encoder's transposed
/// weights, with an L2 penalty.
#[derive(Params)]
struct Autoencoder {
    w: Tensor,
    b_enc: Tensor,
    b_dec: Tensor,
}

fn autoencoder_loss(p: &Autoencoder, x: &Tensor) -> Tensor {
    let h = (x.matmul(&p.w) + &p.b_enc).sigmoid();
    let xhat = h.matmul(&p.w.t()) + &p.b_dec;
    (&xhat - x).square().sum_all() + p.w.square().sum_all() * 1e-3
}

/// Example 4: cross-entropy plus L2 on the hidden states and on the weights.
fn custom_loss(p: &Mlp, (x, y): &(Tensor, Tensor)) -> Tensor {
    let h = (x.matmul(&p.w[0]) + &p.b[0]).tanh();
    let logits = h.matmul(&p.w[1]) + &p.b[1];
    let ce = -(logits.log_softmax(-1) * y).sum(&[1], false).mean_all();
    let hidden_l2 = h.square().mean_all() * 0.01;
    let weight_l2: Tensor = p.w.iter().map(|w| w.square().sum_all()).reduce(|a, b| a + b).unwrap() * 1e-3;
    ce + hidden_l2 + weight_l2
}

// ---- the same models on the f64 reference ---------------------------------------

fn mm(a: &Array, b: &Array) -> Array {
    a.matmul_with_scale(b).0
}

fn add(a: &Array, b: &Array) -> Array {
    a.zip(b, |x, y| x + y)
}

fn dot(a: &Array, b: &Array) -> f64 {
    a.data.iter().zip(&b.data).map(|(x, y)| x * y).sum()
}

fn ref_mlp_hidden(p: &[Array], x: &Array) -> (Array, Array) {
    let h = add(&mm(x, &p[0]), &p[1]).map(f64::tanh);
    let logits = add(&mm(&h, &p[2]), &p[3]);
    (h, logits)
}

/// Central differences of a reference loss over every parameter element.
fn fd(loss: impl Fn(&[Array]) -> f64, p: &[Array]) -> Vec<Array> {
    let h = 1e-6;
    (0..p.len())
        .map(|i| {
            let mut g = p[i].clone();
            for e in 0..p[i].numel() {
                let (mut a, mut b) = (p.to_vec(), p.to_vec());
                a[i].data[e] += h;
                b[i].data[e] -= h;
                g.data[e] = (loss(&a) - loss(&b)) / (2.0 * h);
            }
            g
        })
        .collect()
}

/// Model gradients are sums over the batch of products of a few f32 terms:
/// allow 256 units of roundoff of the gradient's scale.
fn check(what: &str, got: &[&Tensor], want: &[Array]) {
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let scale = w.data.iter().fold(0.0f64, |m, v| m.max(v.abs())) + 1e-3;
        assert_close(&format!("{what} ∂p{i}"), &download(g), w, 0.0, 256.0 * (EPS / 2.0) * scale * 8.0);
    }
}

fn data(rng: &mut Rng, batch: usize, inputs: usize, classes: usize) -> (Array, Array, (Tensor, Tensor)) {
    let x = rng.array(&[batch, inputs], -1.0, 1.0);
    let labels: Vec<usize> = (0..batch).map(|_| rng.below(classes)).collect();
    let y = Array::new(
        &[batch, classes],
        (0..batch * classes).map(|i| (labels[i / classes] == i % classes) as u8 as f64).collect(),
    );
    let t = (upload(&x), upload(&y));
    (x, y, t)
}

#[test]
fn logistic_regression() {
    let mut rng = Rng::new(21);
    let (x, y, batch) = data(&mut rng, 5, 6, 3);
    let p = [rng.array(&[6, 3], -0.5, 0.5), rng.array(&[3], -0.5, 0.5)];
    let params = Logistic { w: upload(&p[0]), b: upload(&p[1]) };
    let (g, loss, ()) = grad(logistic_loss)(&params, &batch);
    let reference = |p: &[Array]| -dot(&add(&mm(&x, &p[0]), &p[1]).log_softmax(1), &y);
    assert!((loss.item::<f32>().unwrap() as f64 - reference(&p)).abs() < 1e-5 * reference(&p).abs());
    check("logistic", &g.tensors(), &fd(reference, &p));
    assert!(gradcheck(logistic_loss, &params, &batch, &GradcheckOptions::default()).unwrap().passed);
}

#[test]
fn two_layer_mlp_returns_predictions_too() {
    let mut rng = Rng::new(22);
    let (x, y, batch) = data(&mut rng, 4, 6, 3);
    let p = [
        rng.array(&[6, 5], -0.5, 0.5),
        rng.array(&[5], -0.5, 0.5),
        rng.array(&[5, 3], -0.5, 0.5),
        rng.array(&[3], -0.5, 0.5),
    ];
    let params = Mlp { w: vec![upload(&p[0]), upload(&p[2])], b: vec![upload(&p[1]), upload(&p[3])] };
    let (g, loss, pred) = grad(mlp_loss)(&params, &batch);
    let reference = |p: &[Array]| -dot(&ref_mlp_hidden(p, &x).1.log_softmax(1), &y);
    let (_, logits) = ref_mlp_hidden(&p, &x);
    assert_close("predictions", &download(&pred), &logits, 1e-5, 1e-5);
    assert!((loss.item::<f32>().unwrap() as f64 - reference(&p)).abs() < 1e-5 * reference(&p).abs());
    let want = fd(reference, &p);
    // the structure of the gradients is that of the params: w[0], w[1], b[0], b[1]
    check("mlp", &[&g.w[0], &g.b[0], &g.w[1], &g.b[1]], &want);
    let loss_only = |p: &Mlp, b: &(Tensor, Tensor)| mlp_loss(p, b).0;
    assert!(gradcheck(loss_only, &params, &batch, &GradcheckOptions::default()).unwrap().passed);
}

#[test]
fn tied_weight_autoencoder() {
    let mut rng = Rng::new(23);
    let x = rng.array(&[4, 6], -1.0, 1.0);
    let p = [rng.array(&[6, 3], -0.5, 0.5), rng.array(&[3], -0.5, 0.5), rng.array(&[6], -0.5, 0.5)];
    let params = Autoencoder { w: upload(&p[0]), b_enc: upload(&p[1]), b_dec: upload(&p[2]) };
    let xt = upload(&x);
    let (g, _, ()) = grad(autoencoder_loss)(&params, &xt);
    let reference = |p: &[Array]| {
        let h = add(&mm(&x, &p[0]), &p[1]).map(|v| 1.0 / (1.0 + (-v).exp()));
        let xhat = add(&mm(&h, &p[0].t()), &p[2]);
        let r = xhat.zip(&x, |a, b| (a - b) * (a - b)).data.iter().sum::<f64>();
        r + 1e-3 * p[0].data.iter().map(|v| v * v).sum::<f64>()
    };
    check("autoencoder", &g.tensors(), &fd(reference, &p));
    assert!(gradcheck(autoencoder_loss, &params, &xt, &GradcheckOptions::default()).unwrap().passed);
}

#[test]
fn custom_loss_with_hidden_and_weight_penalties() {
    let mut rng = Rng::new(24);
    let (x, y, batch) = data(&mut rng, 4, 6, 3);
    let p = [
        rng.array(&[6, 5], -0.5, 0.5),
        rng.array(&[5], -0.5, 0.5),
        rng.array(&[5, 3], -0.5, 0.5),
        rng.array(&[3], -0.5, 0.5),
    ];
    let params = Mlp { w: vec![upload(&p[0]), upload(&p[2])], b: vec![upload(&p[1]), upload(&p[3])] };
    let (g, _, ()) = grad(custom_loss)(&params, &batch);
    let reference = |p: &[Array]| {
        let (h, logits) = ref_mlp_hidden(p, &x);
        let ce = -dot(&logits.log_softmax(1), &y) / 4.0;
        let hl2 = 0.01 * h.data.iter().map(|v| v * v).sum::<f64>() / h.numel() as f64;
        let wl2 = 1e-3 * (p[0].data.iter().chain(&p[2].data).map(|v| v * v).sum::<f64>());
        ce + hl2 + wl2
    };
    check("custom loss", &[&g.w[0], &g.b[0], &g.w[1], &g.b[1]], &fd(reference, &p));
    assert!(gradcheck(custom_loss, &params, &batch, &GradcheckOptions::default()).unwrap().passed);
}

// ---- structures, control flow, tied weights, constants -------------------------

#[derive(Params)]
struct Nested {
    layers: Vec<BTreeMap<String, Tensor>>,
    pair: (Tensor, [Tensor; 2]),
    maybe: Option<Tensor>,
    none: Option<Tensor>,
    table: HashMap<String, Tensor>,
    #[params(skip)]
    name: String,
}

fn t(v: &[f32]) -> Tensor {
    Tensor::from_slice(dev(), v, &[v.len()])
}

#[test]
fn nested_params_round_trip() {
    let layer = |a: f32| BTreeMap::from([("w".to_string(), t(&[a, a + 1.0])), ("b".to_string(), t(&[a * 10.0]))]);
    let p = Nested {
        layers: vec![layer(1.0), layer(2.0)],
        pair: (t(&[3.0]), [t(&[4.0]), t(&[5.0, 6.0])]),
        maybe: Some(t(&[7.0])),
        none: None,
        table: HashMap::from([("z".to_string(), t(&[8.0])), ("a".to_string(), t(&[9.0]))]),
        name: "net".into(),
    };
    // f = Σ over every tensor of (k+1)·Σx², so ∂ = 2(k+1)x: checks order and structure
    let f = |p: &Nested, _: &()| {
        let mut acc = Tensor::zeros(dev(), &[]);
        for (k, x) in p.tensors().into_iter().enumerate() {
            acc = acc + x.square().sum_all() * (k + 1) as f32;
        }
        acc
    };
    let (g, _, ()) = grad(f)(&p, &());
    assert_eq!(g.name, "net");
    assert!(g.none.is_none());
    let flat_p = p.tensors();
    let flat_g = g.tensors();
    assert_eq!(flat_g.len(), 10);
    for (k, (pi, gi)) in flat_p.iter().zip(&flat_g).enumerate() {
        assert_eq!(pi.shape(), gi.shape());
        let want: Vec<f32> = pi.to_vec::<f32>().unwrap().iter().map(|x| 2.0 * (k + 1) as f32 * x).collect();
        assert_eq!(gi.to_vec::<f32>().unwrap(), want, "tensor {k}");
    }
    // order: layers[0].b, layers[0].w, layers[1].b, layers[1].w, pair.0, pair.1[0],
    // pair.1[1], maybe, table["a"], table["z"] (maps go by key)
    assert_eq!(g.layers[1]["w"].to_vec::<f32>().unwrap(), vec![2.0 * 4.0 * 2.0, 2.0 * 4.0 * 3.0]);
    assert_eq!(g.table["a"].to_vec::<f32>().unwrap(), vec![2.0 * 9.0 * 9.0]);
    // flatten / unflatten / zip_map
    let rebuilt = p.unflatten(flat_g.iter().map(|t| (*t).clone()).collect());
    assert_eq!(rebuilt.pair.1[1].to_vec::<f32>().unwrap(), g.pair.1[1].to_vec::<f32>().unwrap());
    let stepped = p.zip_map(&g, |p, g| p - g * 0.5);
    assert_eq!(stepped.maybe.unwrap().to_vec::<f32>().unwrap(), vec![7.0 - 0.5 * 2.0 * 8.0 * 7.0]);
}

#[test]
fn control_flow_recursion_and_early_return() {
    fn power(x: &Tensor, n: u32) -> Tensor {
        if n == 1 { x.clone() } else { x * &power(x, n - 1) }
    }
    let f = |x: &Tensor, n: &u32| {
        if *n == 0 {
            return x.sum_all();
        }
        let mut y = power(x, *n);
        for _ in 0..2 {
            y = &y + x;
        }
        y.sum_all()
    };
    let x = t(&[1.5, -2.0]);
    let df = grad(f);
    let (g, _, ()) = df(&x, &3);
    // d/dx (x³ + 2x) = 3x² + 2
    assert_eq!(g.to_vec::<f32>().unwrap(), vec![3.0 * 2.25 + 2.0, 3.0 * 4.0 + 2.0]);
    let (g, _, ()) = df(&x, &0);
    assert_eq!(g.to_vec::<f32>().unwrap(), vec![1.0, 1.0]);
}

#[test]
fn tied_weights_accumulate() {
    let mut rng = Rng::new(25);
    let w = rng.array(&[3, 3], -1.0, 1.0);
    let x = rng.array(&[2, 3], -1.0, 1.0);
    // w used three times: directly, transposed, and through the same .t() view reused
    let f = |w: &Tensor, x: &Tensor| {
        let wt = w.t();
        let h = x.matmul(w).tanh().matmul(&wt);
        (h.matmul(&wt) * w.sum(&[0], false)).sum_all()
    };
    let (g, _, ()) = grad(f)(&upload(&w), &upload(&x));
    let reference = |p: &[Array]| {
        let wt = p[0].t();
        let h = mm(&mm(&x, &p[0]).map(f64::tanh), &wt);
        let s = p[0].sum(&[0], false);
        mm(&h, &wt).zip(&s, |a, b| a * b).data.iter().sum::<f64>()
    };
    check("tied", &[&g], &fd(reference, std::slice::from_ref(&w)));
}

#[test]
fn constants_detach_and_no_grad() {
    let x = t(&[2.0, 3.0]);
    let (g, _, ()) = grad(|x: &Tensor, c: &Tensor| (x * c).sum_all() + (x.detach() * x).sum_all())(&x, &t(&[5.0, 7.0]));
    // d/dx [c·x + const(x)·x] = c + x
    assert_eq!(g.to_vec::<f32>().unwrap(), vec![7.0, 10.0]);
    let (g, _, ()) = grad(|x: &Tensor, _: &()| no_grad(|| x.square()).sum_all() + x.sum_all())(&x, &());
    assert_eq!(g.to_vec::<f32>().unwrap(), vec![1.0, 1.0]);
    // a loss that ignores a parameter gives it a zero gradient of its shape
    let (g, _, ()) = grad(|p: &(Tensor, Tensor), _: &()| p.0.sum_all())(&(x.clone(), t(&[1.0; 3])), &());
    assert_eq!(g.1.to_vec::<f32>().unwrap(), vec![0.0; 3]);
}

#[test]
fn vjp_with_any_cotangent() {
    let x = t(&[1.0, 2.0, 3.0]);
    let (y, pullback) = vjp(|x: &Tensor| (x.exp(), x.square()), &x);
    assert_eq!(y.1.to_vec::<f32>().unwrap(), vec![1.0, 4.0, 9.0]);
    let g = pullback(&(t(&[0.0, 0.0, 0.0]), t(&[1.0, 1.0, 1.0])));
    assert_eq!(g.to_vec::<f32>().unwrap(), vec![2.0, 4.0, 6.0]);
    let g = pullback(&(t(&[1.0, 0.0, 0.0]), t(&[0.0, 0.0, 2.0])));
    let want = [1f32.exp(), 0.0, 12.0];
    for (a, b) in g.to_vec::<f32>().unwrap().iter().zip(want) {
        assert!((a - b).abs() < 1e-5);
    }
}

#[test]
fn non_scalar_loss_is_a_clear_error() {
    let x = t(&[1.0, 2.0]);
    let (msg, _) = panic_of(std::panic::AssertUnwindSafe(|| drop(grad(|x: &Tensor, _: &()| x * 2.0)(&x, &()))));
    assert!(msg.contains("grad") && msg.contains("scalar") && msg.contains("[2]"), "{msg}");
}

/// A whole training step (forward, backward, SGD update) is recorded into
/// one submission; the read-back of the loss is the only sync.
#[test]
fn mlp_training_step_is_one_submit() {
    let d = own_device();
    d.manual_seed(3);
    let params = Mlp {
        w: vec![Tensor::randn(&d, &[784, 256]) * 0.05, Tensor::randn(&d, &[256, 10]) * 0.05],
        b: vec![Tensor::zeros(&d, &[256]), Tensor::zeros(&d, &[10])],
    };
    let labels = Tensor::arange(&d, 0.0, 128.0, 1.0).cast(wgrad::DType::U32);
    let batch = (Tensor::rand(&d, &[128, 784]), (&labels - &(&labels / 10u32 * 10u32)).one_hot(10));
    let df = grad(mlp_loss);
    let mut params = params;
    let mut losses = Vec::new();
    for _ in 0..3 {
        d.sync().unwrap();
        let before = d.counters();
        let (g, loss, _) = df(&params, &batch);
        params = params.zip_map(&g, |p, g| p - g * 0.001);
        losses.push(loss.item::<f32>().unwrap());
        let c = d.counters() - before;
        assert_eq!(c.submits, 1, "{c:?}");
        eprintln!(
            "MLP 784-256-10, batch 128: forward + backward + SGD = {} dispatches, {} submit",
            c.dispatches, c.submits
        );
    }
    assert!(losses[2] < losses[0], "{losses:?}");
}
