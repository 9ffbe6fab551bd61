//! Compiled steps around reductions: the chains before and after a
//! reduction run in its kernel (bit for bit as eager, with the dispatch
//! counts each shape of chain should take), and dead chains run nowhere.

mod common;

use common::*;
use wgrad::{Device, Tensor, compile};

fn bits(t: &Tensor) -> Vec<u32> {
    t.cast(wgrad::DType::F32).to_vec::<f32>().unwrap().iter().map(|v| v.to_bits()).collect()
}

/// A compiled run of `f` against an eager one: every output bit for bit,
/// and the compiled step's dispatch count.
fn reduction_case(d: &Device, state: &Tensor, x: &Tensor, f: impl Fn(&Tensor, &Tensor) -> Vec<Tensor> + Copy) -> usize {
    let eager: Vec<Vec<u32>> = f(state, x).iter().map(bits).collect();
    let mut step = compile(move |s: &mut Tensor, x: &Tensor| f(s, x));
    let mut s = state.clone();
    for run in 0..2 {
        let out = step.run(&mut s, x).unwrap();
        let out: Vec<Vec<u32>> = out.iter().map(bits).collect();
        assert_eq!(out, eager, "run {run}");
    }
    d.sync().unwrap();
    step.memory().unwrap().dispatches
}

#[test]
fn reductions_take_the_chains_around_them() {
    // The chain computing a reduction's input runs in the reduction (its
    // prologue: the input is never stored unless read later), and a chain
    // reading its results runs in it too (its epilogue). No chain here ends
    // in a product that a sum could contract into an fma, so the results
    // are eager's bit for bit.
    let d = own_device();
    d.manual_seed(5);
    let s = Tensor::randn(&d, &[300, 7]);
    let x = Tensor::randn(&d, &[300, 7]);
    // L1 loss: subtract, abs, then the mean, one dispatch (a tree reduction)
    assert_eq!(reduction_case(&d, &s, &x, |s, x| vec![(x - s).abs().mean_all()]), 1);
    // per row, then a chain on the results: one dispatch (one per invocation)
    let rows = |s: &Tensor, x: &Tensor| vec![((x - s).exp().sum(&[1], false) * 0.5).log()];
    assert_eq!(reduction_case(&d, &s, &x, rows), 1);
    // max and argmax results in epilogues (argmax's are u32)
    let maxima = |_: &Tensor, x: &Tensor| vec![(x.max(&[1], true) * 2.0).exp()];
    assert_eq!(reduction_case(&d, &s, &x, maxima), 1);
    let args = |_: &Tensor, x: &Tensor| vec![x.argmax(0, false).cast(wgrad::DType::F32).sqrt()];
    assert_eq!(reduction_case(&d, &s, &x, args), 1);
    // a value of the prologue read later is stored by it: over a dense
    // view and over a transposed one
    let stored = |s: &Tensor, x: &Tensor| {
        let e = (x - s).exp();
        vec![e.sum(&[1], true), &e - 1.0]
    };
    assert_eq!(reduction_case(&d, &s, &x, stored), 2);
    let transposed = |s: &Tensor, x: &Tensor| {
        let e = (x - s).tanh();
        vec![e.t().sum(&[1], false).sqrt(), &e - 1.0]
    };
    assert_eq!(reduction_case(&d, &s, &x, transposed), 2);
    // a broadcast input is computed once per visit, and stored only by a
    // kernel of its own
    let broadcast = |s: &Tensor, _: &Tensor| {
        let e = s.narrow(0, 0, 1).exp();
        vec![e.expand(&[300, 7]).sum(&[0], false), e.clone()]
    };
    reduction_case(&d, &s, &x, broadcast);
    let recomputed = |s: &Tensor, _: &Tensor| vec![s.narrow(0, 0, 1).exp().expand(&[300, 7]).sum(&[0], false)];
    assert_eq!(reduction_case(&d, &s, &x, recomputed), 1);
    // a chain over the input reading the results broadcast (a softmax's
    // gradient): each invocation runs it on the row it reduced, reading
    // what its prologue stored; over a permuted row it stays a kernel of
    // its own
    let softmax_grad = |s: &Tensor, x: &Tensor| {
        let g = (x - s).sin();
        vec![&g - &(x.exp() * g.sum(&[1], true))]
    };
    assert_eq!(reduction_case(&d, &s, &x, softmax_grad), 1);
    let columns = |s: &Tensor, x: &Tensor| {
        let g = (x - s).sin();
        vec![&g - &(x.exp() * g.sum(&[0], true))]
    };
    assert_eq!(reduction_case(&d, &s, &x, columns), 2);
    // a reduction too long for one pass: the chain before runs in the
    // first pass, the chain after in the second
    let long = Tensor::randn(&d, &[1, 20000]);
    let two_pass = |s: &Tensor, x: &Tensor| vec![(x - s).abs().sum_all().log()];
    assert_eq!(reduction_case(&d, &long.narrow(1, 0, 20000).contiguous(), &(&long * 0.5), two_pass), 2);
}

#[test]
fn a_chain_whose_values_nothing_reads_runs_nowhere() {
    // An unused branch after a reduction or a matmul: a fused kernel that
    // stores nothing would be invalid WGSL (a size-0 array), and the work is
    // dead anyway. Only the reduction or product and the output run.
    let d = own_device();
    d.manual_seed(6);
    let s = Tensor::randn(&d, &[2, 3]);
    let x = Tensor::randn(&d, &[2, 3]);
    let after_sum = |_: &Tensor, x: &Tensor| {
        let _dead = (x.sum(&[1], false).tanh() + 2.0).sinh();
        vec![x * 2.0]
    };
    assert_eq!(reduction_case(&d, &s, &x, after_sum), 2);
    let after_matmul = |_: &Tensor, x: &Tensor| {
        let _dead = x.matmul(&x.t()).tanh() + 2.0;
        vec![x * 2.0]
    };
    assert_eq!(reduction_case(&d, &s, &x, after_matmul), 2);
}

#[test]
fn a_bias_gradient_folds_its_prologue_in_chunks() {
    // Σ over (0, 2, 3) of g·(1 − y²) (a tanh's backward, as a convolution's
    // bias gradient reads it), long enough to split in two passes: the
    // chain runs in the first, whose invocations fold chunks that end
    // inside the contiguous planes. Compiled bit for bit as eager, and
    // within the summation's bound of the f64 sum.
    let d = own_device();
    let mut rng = Rng::new(9);
    for shape in [[7, 3, 29, 43], [2, 5, 9, 7]] {
        let y = rng.array(&shape, -1.0, 1.0);
        let g = rng.array(&shape, -1.0, 1.0);
        let f = |y: &Tensor, g: &Tensor| vec![(g * &(y.square() * -1.0 + 1.0)).sum(&[0, 2, 3], false)];
        assert_eq!(reduction_case(&d, &upload(&y), &upload(&g), f), if shape[0] == 7 { 2 } else { 1 });
        let terms = g.zip(&y, |g, y| g * (1.0 - y * y));
        let want = terms.sum(&[0, 2, 3], false);
        // each term is off by ≤ 3u·|g| (y², 1 − y², the product), each
        // of the ≤ 285 additions in a chain by ≤ u·Σ|term| (u = 2⁻²⁴)
        let u = f32::EPSILON as f64 / 2.0;
        let bound =
            terms.abs().sum(&[0, 2, 3], false).zip(&g.abs().sum(&[0, 2, 3], false), |t, g| 285.0 * u * t + 3.0 * u * g);
        let got = download(&f(&upload(&y), &upload(&g))[0]);
        assert_within(&format!("bias gradient of {shape:?}"), &got, &want, &bound);
    }
}
