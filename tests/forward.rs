//! Forward mode and the Jacobians: jvp against the f64 reference and against
//! reverse mode, the Jacobian and Hessian of the seed's MLP loss, their
//! nesting, and jvp nested with grad, in compiled steps and on custom ops.

mod common;

use std::sync::Arc;

use common::*;
use wgrad::{CustomOp, Params, Tensor, compile, grad, hessian, hvp, hvp_rev, jacfwd, jacobian, jacrev, jvp, vjp};

/// The seed's two-layer tanh network and its hand-written cross-entropy.
#[derive(Params)]
struct Mlp {
    w0: Tensor,
    b0: Tensor,
    w1: Tensor,
    b1: Tensor,
}

fn predictions(p: &Mlp, x: &Tensor) -> Tensor {
    (x.matmul(&p.w0) + &p.b0).tanh().matmul(&p.w1) + &p.b1
}

fn mlp_loss(p: &Mlp, (x, y): &(Tensor, Tensor)) -> Tensor {
    -(predictions(p, x).log_softmax(-1) * y).sum_all()
}

// the same on the f64 reference; p = [w0, b0, w1, b1]
fn ref_predictions(p: &[Array], x: &Array) -> Array {
    let h = x.matmul_with_scale(&p[0]).0.zip(&p[1], |a, b| a + b).map(f64::tanh);
    h.matmul_with_scale(&p[2]).0.zip(&p[3], |a, b| a + b)
}

fn ref_loss(p: &[Array], x: &Array, y: &Array) -> f64 {
    -ref_predictions(p, x).log_softmax(1).data.iter().zip(&y.data).map(|(a, b)| a * b).sum::<f64>()
}

const SHAPES: [&[usize]; 4] = [&[3, 4], &[4], &[4, 2], &[2]];

struct Setup {
    p: Vec<Array>,
    x: Array,
    y: Array,
    params: Mlp,
    batch: (Tensor, Tensor),
}

fn setup(seed: u64) -> Setup {
    let mut rng = Rng::new(seed);
    let p: Vec<Array> = SHAPES.iter().map(|s| rng.array(s, -1.0, 1.0)).collect();
    let x = rng.array(&[5, 3], -1.0, 1.0);
    let y = Array::new(&[5, 2], (0..10).map(|i| ((i / 2 + i) % 2) as f64).collect());
    let params = Mlp { w0: upload(&p[0]), b0: upload(&p[1]), w1: upload(&p[2]), b1: upload(&p[3]) };
    let batch = (upload(&x), upload(&y));
    Setup { p, x, y, params, batch }
}

/// Element `e` of the flattened parameters `p`, shifted by `h`.
fn shifted(p: &[Array], moves: &[(usize, f64)]) -> Vec<Array> {
    let mut q = p.to_vec();
    for &(e, h) in moves {
        let (mut i, mut e) = (0, e);
        while e >= q[i].numel() {
            e -= q[i].numel();
            i += 1;
        }
        q[i].data[e] += h;
    }
    q
}

fn flat(t: &[&Tensor]) -> Vec<f64> {
    t.iter().flat_map(|t| download(t).data).collect()
}

#[test]
fn hessian_of_the_mlp_loss_matches_the_reference() {
    let s = setup(1);
    let n: usize = SHAPES.iter().map(|s| s.iter().product::<usize>()).sum();
    let loss = |q: &[Array]| ref_loss(q, &s.x, &s.y);
    // mixed second differences: O(h²) + O(ε·|L|/h²) ≈ 1e-8 with h = 1e-4
    let h = 1e-4;
    let mut want = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            let l = |a: f64, b: f64| loss(&shifted(&s.p, &[(i, a * h), (j, b * h)]));
            want[i * n + j] = (l(1.0, 1.0) - l(1.0, -1.0) - l(-1.0, 1.0) + l(-1.0, -1.0)) / (4.0 * h * h);
        }
    }
    let hess = hessian(mlp_loss, &s.params, &s.batch);
    // nested as JAX nests it: hess.w0.b1 is ∂²L/∂w0∂b1, of shape [3, 4, 2]
    assert_eq!(hess.w0.b1.shape(), &[3, 4, 2]);
    assert_eq!(hess.b1.w0.shape(), &[2, 3, 4]);
    // flatten to an n × n matrix: row block by the first parameter, then
    // within each row, the blocks of the second parameter side by side
    let outer: Vec<&Mlp> = vec![&hess.w0, &hess.b0, &hess.w1, &hess.b1];
    let mut got = vec![0.0; n * n];
    let mut row0 = 0;
    for (a, blocks) in outer.iter().enumerate() {
        let rows = SHAPES[a].iter().product::<usize>();
        let mut col0 = 0;
        for (b, block) in blocks.tensors().into_iter().enumerate() {
            let cols = SHAPES[b].iter().product::<usize>();
            let data = download(block).data;
            for r in 0..rows {
                for c in 0..cols {
                    got[(row0 + r) * n + col0 + c] = data[r * cols + c];
                }
            }
            col0 += cols;
        }
        row0 += rows;
    }
    // Each entry is a sum over 5 examples of products of a handful of f32
    // values of size ≲ 1, each within a few ulp: 256 ulp of the largest entry.
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let bound = 256.0 * EPS / 2.0 * scale + 1e-6;
    for (k, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!((g - w).abs() <= bound, "H[{}, {}] = {g}, reference {w} (bound {bound})", k / n, k % n);
    }
    // symmetric, as a Hessian is (within rounding)
    for i in 0..n {
        for j in 0..i {
            assert!((got[i * n + j] - got[j * n + i]).abs() <= bound, "H not symmetric at {i}, {j}");
        }
    }
}

#[test]
fn jacobian_of_the_mlp_predictions_matches_the_reference_both_ways() {
    let s = setup(2);
    let x = s.batch.0.clone();
    let f = |p: &Mlp| predictions(p, &x);
    let rev = jacrev(f, &s.params);
    let fwd = jacfwd(f, &s.params);
    let auto = jacobian(f, &s.params);
    // output [5, 2], so each block is [5, 2] ++ the parameter's shape
    assert_eq!(rev.w0.shape(), &[5, 2, 3, 4]);
    assert_eq!(fwd.b1.shape(), &[5, 2, 2]);
    let h = 1e-6;
    let mut offset = 0;
    for (i, ((r, f), a)) in rev.tensors().into_iter().zip(fwd.tensors()).zip(auto.tensors()).enumerate() {
        let m = SHAPES[i].iter().product::<usize>();
        // reference: central differences of the predictions per parameter element
        let mut want = vec![0.0; 10 * m];
        for e in 0..m {
            let plus = ref_predictions(&shifted(&s.p, &[(offset + e, h)]), &s.x);
            let minus = ref_predictions(&shifted(&s.p, &[(offset + e, -h)]), &s.x);
            for o in 0..10 {
                want[o * m + e] = (plus.data[o] - minus.data[o]) / (2.0 * h);
            }
        }
        offset += m;
        let want = Array::new(r.shape(), want);
        // one matmul-tanh-matmul chain: 64 ulp of the entry's scale
        let bound = want.map(|w| 64.0 * EPS / 2.0 * (1.0 + w.abs()));
        assert_within(&format!("jacrev block {i}"), &download(r), &want, &bound);
        assert_within(&format!("jacfwd block {i}"), &download(f), &want, &bound);
        assert_within(&format!("jacobian block {i}"), &download(a), &want, &bound);
    }
}

#[test]
fn forward_over_reverse_hvp_equals_reverse_over_reverse() {
    let s = setup(3);
    let mut rng = Rng::new(33);
    let v = s.params.map(|t| upload(&rng.array(t.shape(), -1.0, 1.0)));
    let fwd = hvp(mlp_loss, &s.params, &s.batch, &v);
    let rev = hvp_rev(mlp_loss, &s.params, &s.batch, &v);
    // the reference: H·v by central differences of the f64 gradient along v,
    // itself by central differences (h = 1e-4, accurate to ~1e-7)
    let vv: Vec<Array> = v.tensors().iter().map(|t| download(t)).collect();
    let n: usize = SHAPES.iter().map(|s| s.iter().product::<usize>()).sum();
    let vflat: Vec<f64> = vv.iter().flat_map(|a| a.data.clone()).collect();
    let h = 1e-4;
    let along = |sign: f64| -> Vec<Array> {
        let moves: Vec<(usize, f64)> = (0..n).map(|e| (e, sign * h * vflat[e])).collect();
        shifted(&s.p, &moves)
    };
    let grad_at = |p: &[Array]| -> Vec<f64> {
        (0..n)
            .map(|e| {
                let l = |d: f64| ref_loss(&shifted(p, &[(e, d)]), &s.x, &s.y);
                (l(h) - l(-h)) / (2.0 * h)
            })
            .collect()
    };
    let (gp, gm) = (grad_at(&along(1.0)), grad_at(&along(-1.0)));
    let want: Vec<f64> = gp.iter().zip(&gm).map(|(a, b)| (a - b) / (2.0 * h)).collect();
    let (f, r) = (flat(&fwd.tensors()), flat(&rev.tensors()));
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    // the two f32 computations differ only in the order of their roundings
    let bound = 256.0 * EPS / 2.0 * scale;
    for e in 0..n {
        assert!(
            (f[e] - r[e]).abs() <= bound,
            "element {e}: forward over reverse {}, reverse over reverse {}",
            f[e],
            r[e]
        );
        assert!((f[e] - want[e]).abs() <= bound + 1e-6, "element {e}: H·v = {}, reference {}", f[e], want[e]);
    }
}

#[test]
fn jvp_agrees_with_vjp() {
    // ⟨w, J·t⟩ by forward mode equals ⟨Jᵀ·w, t⟩ by reverse mode
    let s = setup(4);
    let mut rng = Rng::new(44);
    let x = s.batch.0.clone();
    let t = s.params.map(|p| upload(&rng.array(p.shape(), -1.0, 1.0)));
    let w = upload(&rng.array(&[5, 2], -1.0, 1.0));
    let (y, jt) = jvp(|p: &Mlp| predictions(p, &x), &s.params, &t);
    let (y2, pullback) = vjp(|p: &Mlp| predictions(p, &x), &s.params);
    let jtw = pullback(&w);
    assert_eq!(download(&y).data, download(&y2).data);
    let lhs: f64 = download(&jt).data.iter().zip(&download(&w).data).map(|(a, b)| a * b).sum();
    let rhs: f64 = flat(&jtw.tensors()).iter().zip(flat(&t.tensors())).map(|(g, t)| g * t).sum();
    assert!((lhs - rhs).abs() <= 1e-5 * (1.0 + lhs.abs()), "⟨w, J·t⟩ = {lhs}, ⟨Jᵀ·w, t⟩ = {rhs}");
}

#[test]
fn nesting_of_forward_and_reverse_mode() {
    let d = dev();
    let x = Tensor::from_slice(d, &[0.3f32, -0.7], &[2]);
    let t = Tensor::from_slice(d, &[1.0f32, 2.0], &[2]);
    let f = |x: &Tensor| x.sin().sum_all();
    // forward over forward: d²/dε² f(x + εt) = −Σ sin(x)·t²
    let second = jvp(|x: &Tensor| jvp(f, x, &t).1, &x, &t).1.item::<f32>().unwrap();
    let want: f32 = [(0.3f32, 1.0f32), (-0.7, 2.0)].iter().map(|(x, t)| -x.sin() * t * t).sum();
    assert!((second - want).abs() < 1e-6, "{second} vs {want}");
    // reverse over forward: ∇ₓ ⟨∇f, t⟩ = −sin(x)·t
    let (g, _, ()) = grad(|x: &Tensor, _: &()| jvp(f, x, &t).1)(&x, &());
    let want = [-(0.3f32.sin()), -2.0 * (-0.7f32).sin()];
    for (g, w) in g.to_vec::<f32>().unwrap().iter().zip(want) {
        assert!((g - w).abs() < 1e-6, "{g} vs {w}");
    }
    // the tangent of an output independent of the inputs is zero, and of an
    // integer output zero of its dtype
    let (_, dy) = jvp(|x: &Tensor| (x.ones_like(), x.gt(0.0)), &x, &t);
    assert_eq!(dy.0.to_vec::<f32>().unwrap(), vec![0.0, 0.0]);
    assert_eq!(dy.1.to_vec::<u32>().unwrap(), vec![0, 0]);
}

#[test]
fn jvp_in_a_compiled_step() {
    let d = dev();
    let t = Tensor::from_slice(d, &[1.0f32, -1.0, 0.5], &[3]);
    let mut step = compile(move |x: &mut Tensor, _: &()| {
        let (y, dy) = jvp(|x: &Tensor| x.exp() * x, x, &t);
        *x = &*x - &(dy * 0.1);
        y.sum_all()
    });
    let mut x = Tensor::from_slice(d, &[0.1f32, 0.2, 0.3], &[3]);
    let mut eager = x.to_vec::<f32>().unwrap();
    for _ in 0..3 {
        step.run(&mut x, &()).unwrap();
        // d/dε (x+εt)·e^(x+εt) = (1 + x)·eˣ·t
        for (e, t) in eager.iter_mut().zip([1.0f32, -1.0, 0.5]) {
            *e -= 0.1 * (1.0 + *e) * e.exp() * t;
        }
    }
    for (g, w) in x.to_vec::<f32>().unwrap().iter().zip(&eager) {
        assert!((g - w).abs() < 1e-5, "{g} vs {w}");
    }
}

/// y = x³ with only a VJP: its JVP comes from the VJP by transposition.
struct Cube;

impl CustomOp for Cube {
    fn name(&self) -> &str {
        "cube"
    }
    fn forward(&self, inputs: &[&Tensor]) -> Tensor {
        inputs[0] * &inputs[0].square()
    }
    fn vjp(&self, g: &Tensor, inputs: &[&Tensor], _output: &Tensor) -> Vec<Option<Tensor>> {
        vec![Some(g * &(inputs[0].square() * 3.0))]
    }
}

#[test]
fn a_custom_op_gets_forward_mode_from_its_vjp() {
    let d = dev();
    let x = Tensor::from_slice(d, &[0.5f32, -2.0], &[2]);
    let t = Tensor::from_slice(d, &[1.0f32, 0.25], &[2]);
    let op: Arc<dyn CustomOp> = Arc::new(Cube);
    let (y, dy) = jvp(|x: &Tensor| Tensor::custom(op.clone(), &[x]), &x, &t);
    assert_eq!(y.to_vec::<f32>().unwrap(), vec![0.125, -8.0]);
    assert_eq!(dy.to_vec::<f32>().unwrap(), vec![0.75, 3.0]);
}

/// The JVP rules of the layout and indexing primitives added with flip
/// (flip, roll, strided views and their embed, scatter_reduce in each mode,
/// index_put's last-wins scatter): ⟨w, J·t⟩ by forward mode equals
/// ⟨Jᵀ·w, t⟩ by reverse mode, whose rules tests/grad.rs checks against
/// central differences.
#[test]
fn layout_and_indexing_jvps_are_the_transposed_vjps() {
    use wgrad::ScatterReduce;
    type F = Box<dyn Fn(&Vec<Tensor>) -> Tensor>;
    let d = dev();
    let idx = Tensor::from_slice(d, &[0u32, 0, 1, 0, 0, 2, 1, 0], &[4, 2]);
    let scatter = |reduce, include| -> F {
        let idx = idx.clone();
        Box::new(move |p: &Vec<Tensor>| p[0].scatter_reduce(0, &idx, &p[1], reduce, include))
    };
    let cases: Vec<(&str, F)> = vec![
        ("flip", Box::new(|p: &Vec<Tensor>| p[0].flip(&[0, 1]) * &p[1].sum_all())),
        ("roll", Box::new(|p: &Vec<Tensor>| p[0].roll(&[2, -1], &[0, 1]))),
        ("slice", Box::new(|p: &Vec<Tensor>| p[0].slice(0, 0, 3, 2).square())),
        ("diagonal", Box::new(|p: &Vec<Tensor>| p[0].diagonal(-1, 0, 1))),
        ("diag", Box::new(|p: &Vec<Tensor>| p[1].sum(&[0], false).diag(1).square())),
        ("scatter sum", scatter(ScatterReduce::Sum, false)),
        ("scatter mean", scatter(ScatterReduce::Mean, true)),
        ("scatter prod", scatter(ScatterReduce::Prod, true)),
        ("scatter prod -self", scatter(ScatterReduce::Prod, false)),
        ("scatter amax", scatter(ScatterReduce::Amax, true)),
        ("scatter amin -self", scatter(ScatterReduce::Amin, false)),
        ("index_put", {
            // positions (0, 1), (1, 0), (0, 1), (1, 1): one repeated
            let (i, j) = (idx.narrow(1, 0, 1).reshape(&[4]), Tensor::from_slice(d, &[1u32, 0, 1, 1], &[4]));
            Box::new(move |p: &Vec<Tensor>| p[0].index_put(&[&i, &j], &p[1].sum(&[1], false), false))
        }),
    ];
    let mut rng = Rng::new(55);
    for (name, f) in cases {
        let params = vec![upload(&rng.array(&[3, 2], -2.0, 2.0)), upload(&rng.array(&[4, 2], -2.0, 2.0))];
        let t = vec![upload(&rng.array(&[3, 2], -1.0, 1.0)), upload(&rng.array(&[4, 2], -1.0, 1.0))];
        let (y, jt) = jvp(&f, &params, &t);
        let w = upload(&rng.array(y.shape(), -1.0, 1.0));
        let (_, pullback) = vjp(&f, &params);
        let jtw = pullback(&w);
        let lhs: f64 = download(&jt).data.iter().zip(&download(&w).data).map(|(a, b)| a * b).sum();
        let rhs: f64 = flat(&jtw.iter().collect::<Vec<_>>())
            .iter()
            .zip(flat(&t.iter().collect::<Vec<_>>()))
            .map(|(g, t)| g * t)
            .sum();
        assert!((lhs - rhs).abs() <= 1e-5 * (1.0 + lhs.abs()), "{name}: ⟨w, J·t⟩ = {lhs}, ⟨Jᵀ·w, t⟩ = {rhs}");
    }
}

/// scatter_reduce prod: the gradient of an operand is the product of the
/// others, exact where operands are zero (one zero: the rest's product;
/// two: nothing).
#[test]
fn scatter_prod_gradient_is_exact_at_zeros() {
    use wgrad::ScatterReduce;
    let d = dev();
    let x = Tensor::from_slice(d, &[2.0f32, 0.0, 5.0], &[3]);
    let src = Tensor::from_slice(d, &[0.0f32, 3.0, 4.0, 0.0, 7.0], &[5]);
    let idx = Tensor::from_slice(d, &[0u32, 0, 1, 1, 2], &[5]);
    // row 0: 2·0·3 (one zero); row 1: 0·4·0 (two zeros); row 2: 5·7
    let f = |p: &Vec<Tensor>, idx: &Tensor| p[0].scatter_reduce(0, idx, &p[1], ScatterReduce::Prod, true).sum_all();
    let (g, _, ()) = grad(f)(&vec![x, src], &idx);
    assert_eq!(g[0].to_vec::<f32>().unwrap(), vec![0.0, 0.0, 7.0]);
    assert_eq!(g[1].to_vec::<f32>().unwrap(), vec![6.0, 0.0, 0.0, 0.0, 5.0]);
}

/// scatter_reduce amax/amin: the gradient is split evenly among the
/// operands equal to the result (self included when it is an operand), as
/// PyTorch's; forward mode gives the mean of their tangents.
#[test]
fn scatter_amax_gradient_is_split_among_ties() {
    use wgrad::ScatterReduce;
    let d = dev();
    let x = Tensor::from_slice(d, &[3.0f32, 1.0, 5.0], &[3]);
    let src = Tensor::from_slice(d, &[3.0f32, 2.0, 3.0, 1.0, 4.0], &[5]);
    let idx = Tensor::from_slice(d, &[0u32, 0, 0, 1, 1], &[5]);
    let g_of = |reduce, include| {
        let f = move |p: &Vec<Tensor>, idx: &Tensor| {
            (p[0].scatter_reduce(0, idx, &p[1], reduce, include) * Tensor::arange(dev(), 1.0, 4.0, 1.0)).sum_all()
        };
        let (g, _, ()) = grad(f)(&vec![x.clone(), src.clone()], &idx);
        (g[0].to_vec::<f32>().unwrap(), g[1].to_vec::<f32>().unwrap())
    };
    // row 0: max(3 | 3, 2, 3) — three ties share weight 1; row 1: max(1 | 1, 4) = 4;
    // row 2: no source, self kept
    assert_eq!(g_of(ScatterReduce::Amax, true), (vec![1.0 / 3.0, 0.0, 3.0], vec![1.0 / 3.0, 0.0, 1.0 / 3.0, 0.0, 2.0]));
    // without self: row 0's two sources share; row 1: min(1, 4) = 1
    assert_eq!(g_of(ScatterReduce::Amin, false), (vec![0.0, 0.0, 3.0], vec![0.0, 1.0, 0.0, 2.0, 0.0]));
    let (_, t) = jvp(
        |p: &Vec<Tensor>| p[0].scatter_reduce(0, &idx, &p[1], ScatterReduce::Amax, true),
        &vec![x.clone(), src.clone()],
        &vec![
            Tensor::from_slice(d, &[3.0f32, 0.0, 1.0], &[3]),
            Tensor::from_slice(d, &[6.0f32, 100.0, 0.0, 0.0, 7.0], &[5]),
        ],
    );
    assert_eq!(t.to_vec::<f32>().unwrap(), vec![3.0, 7.0, 1.0]);
}

/// The Hessian the browser demo's Newton panel computes first (`src/web/newton.rs`,
/// the same eight points and start): the mean logistic loss of slope and
/// intercept w = (a, b) at (−0.5, 1). The pins are its closed form in f64,
/// H = mean σ(z)(1 − σ(z)) [x², x; x, 1] with z = a·x + b; `web/test/e2e.mjs`
/// compares the browser's value with the same numbers, so the two cannot drift.
const NEWTON_HESSIAN: [f32; 4] = [0.586_351_74, 0.177_492_16, 0.177_492_16, 0.198_965_34];

#[test]
fn newton_panel_hessian_matches_its_pins() {
    let dev = dev();
    let xs = [-2.0f32, -1.2, -0.4, 0.3, 0.8, 1.5, 2.2, 3.0];
    let ys = [0.0f32, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 1.0];
    let features: Vec<f32> = xs.iter().flat_map(|&x| [x, 1.0]).collect();
    let data = (Tensor::from_slice(dev, &features, &[8, 2]), Tensor::from_slice(dev, &ys, &[8]));
    let loss = |w: &Tensor, (x, y): &(Tensor, Tensor)| {
        let z = x.matmul(w);
        (z.softplus() - &z * y).mean_all()
    };
    let (a, b) = (-0.5f64, 1.0f64);
    let closed: Vec<f64> = {
        let q = |x: f64| {
            let s = 1.0 / (1.0 + (-(a * x + b)).exp());
            s * (1.0 - s) / 8.0
        };
        let m = |f: &dyn Fn(f64) -> f64| xs.iter().map(|&x| q(x as f64) * f(x as f64)).sum::<f64>();
        vec![m(&|x| x * x), m(&|x| x), m(&|x| x), m(&|_| 1.0)]
    };
    let h: Vec<f32> = hessian(loss, &Tensor::from_slice(dev, &[a as f32, b as f32], &[2]), &data).to_vec().unwrap();
    for i in 0..4 {
        // the pins are the closed form rounded to f32
        assert!((closed[i] - NEWTON_HESSIAN[i] as f64).abs() < 1e-8, "pin {i}: {} vs {}", NEWTON_HESSIAN[i], closed[i]);
        // a dozen f32 roundings per term (matmul, exp, log, the products), over
        // values ≤ 0.6: far inside 1e-6
        assert!((h[i] - NEWTON_HESSIAN[i]).abs() < 1e-6, "H[{i}] = {} vs pinned {}", h[i], NEWTON_HESSIAN[i]);
    }
    println!("newton panel hessian at (-0.5, 1): {h:?}");
}
