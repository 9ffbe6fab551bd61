#![allow(dead_code)]
//! What the data-parallel tests share (`tests/data_parallel.rs`, and
//! `tests/mpi.rs` under mpirun): a linear least-squares model trained with
//! SGD and momentum on replicas, its plain single-device run, and the bound
//! on their difference from the changed order of summation.

use wgrad::optim::Optimizer;
use wgrad::parallel::DataParallel;
use wgrad::{Device, Params, Tensor, grad};

/// Global batch, features, outputs, steps.
pub const B: usize = 16;
pub const D: usize = 8;
pub const K: usize = 3;
pub const STEPS: usize = 3;
pub const LR: f32 = 0.1;

#[derive(Params)]
pub struct Linear {
    pub w: Tensor,
    pub b: Tensor,
}

/// Seeded values in [-1, 1) (SplitMix64).
fn values(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            ((z >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// The initial (w [D, K], b [K]).
pub fn initial() -> (Vec<f32>, Vec<f32>) {
    (values(1, D * K), values(2, K))
}

/// The global batch of step `s`: (x [B, D], y [B, K]).
pub fn batch(s: usize) -> (Vec<f32>, Vec<f32>) {
    (values(10 + s as u64, B * D), values(100 + s as u64, B * K))
}

pub fn loss(m: &Linear, (x, y): &(Tensor, Tensor)) -> Tensor {
    (x.matmul(&m.w) + &m.b - y).square().mean_all()
}

fn host(m: &Linear) -> Vec<f32> {
    [m.w.to_vec::<f32>().expect("read w"), m.b.to_vec::<f32>().expect("read b")].concat()
}

/// One run's record: the mean gradient (w then b) of the first step and the
/// parameters (w then b) after every step.
pub struct Run {
    pub grad: Vec<f32>,
    pub params: Vec<Vec<f32>>,
}

/// The plain run on one device: `grad` of the global batch's loss, then the
/// optimizer.
pub fn single(dev: &Device) -> Run {
    let (w, b) = initial();
    let mut m = Linear { w: Tensor::from_slice(dev, &w, &[D, K]), b: Tensor::from_slice(dev, &b, &[K]) };
    let mut opt = Optimizer::sgd(LR).momentum(0.9);
    let mut run = Run { grad: Vec::new(), params: Vec::new() };
    for s in 0..STEPS {
        let (x, y) = batch(s);
        let xy = (Tensor::from_slice(dev, &x, &[B, D]), Tensor::from_slice(dev, &y, &[B, K]));
        let (g, _, ()) = grad(loss)(&m, &xy);
        if s == 0 {
            run.grad = host(&g);
        }
        m = opt.step(&m, &g);
        run.params.push(host(&m));
    }
    run
}

/// The same training on the replicas of `dp`, each on its shard; checks
/// that every local replica holds the same bits after every step.
pub fn data_parallel(dp: &mut DataParallel) -> wgrad::Result<Run> {
    data_parallel_with(dp, |_| {})
}

/// [`data_parallel`], calling `before(step)` before each step; each rank
/// starts from other values (plus its rank), which `replicate` replaces by
/// rank 0's.
pub fn data_parallel_with(dp: &mut DataParallel, mut before: impl FnMut(usize)) -> wgrad::Result<Run> {
    let (mut w, b) = initial();
    let rank = dp.rank() as f32;
    w.iter_mut().for_each(|v| *v += rank);
    let dev = dp.devices()[0].clone();
    let init = Linear { w: Tensor::from_slice(&dev, &w, &[D, K]), b: Tensor::from_slice(&dev, &b, &[K]) };
    let mut ms = dp.replicate(&init)?;
    let mut opts = vec![Optimizer::sgd(LR).momentum(0.9); ms.len()];
    let mut run = Run { grad: Vec::new(), params: Vec::new() };
    for s in 0..STEPS {
        before(s);
        let (x, y) = batch(s);
        let mut grads = Vec::new();
        for (r, (m, dev)) in ms.iter().zip(dp.devices()).enumerate() {
            let rows = dp.shard(r, B);
            let xy = (
                Tensor::from_slice(dev, &x[rows.start * D..rows.end * D], &[rows.len(), D]),
                Tensor::from_slice(dev, &y[rows.start * K..rows.end * K], &[rows.len(), K]),
            );
            grads.push(grad(loss)(m, &xy).0);
        }
        let mean = dp.all_reduce(&grads)?;
        if s == 0 {
            run.grad = host(&mean[0]);
        }
        for ((m, opt), g) in ms.iter_mut().zip(&mut opts).zip(&mean) {
            *m = opt.step(m, g);
        }
        let first = host(&ms[0]);
        for (r, m) in ms.iter().enumerate().skip(1) {
            assert_eq!(host(m), first, "replica {r} differs from replica 0 after step {}", s + 1);
        }
        run.params.push(first);
    }
    Ok(run)
}

/// The bound on |gradient over N replicas − gradient of one| at the first
/// step, per element (w then b): the loss is Σ rᵢₖ²/(BK) with rᵢₖ = xᵢ·w_k +
/// b_k − yᵢₖ, so ∂/∂w_jk = Σᵢ xᵢⱼ·2rᵢₖ/(BK). Computed r is within
/// γ_{D+2}·Aᵢₖ of r (Aᵢₖ = Σⱼ|xᵢⱼ wⱼₖ| + |b_k| + |yᵢₖ|: the forward matmul may
/// sum in another order for another batch size); the B-term sum, its
/// scaling, the replicas' sum and the division by N add γ_{B+5} relative to
/// the sum of the terms' magnitudes. Two computations: twice that.
pub fn gradient_bound() -> Vec<f64> {
    let gamma = |n: usize| {
        let nu = n as f64 * 2f64.powi(-24);
        nu / (1.0 - nu)
    };
    let (w, b) = initial();
    let (x, y) = batch(0);
    let scale = 2.0 / (B * K) as f64;
    let mut bound = vec![0.0f64; D * K + K];
    for i in 0..B {
        for k in 0..K {
            let mut r = b[k] as f64 - y[i * K + k] as f64;
            let mut a = (b[k] as f64).abs() + (y[i * K + k] as f64).abs();
            for j in 0..D {
                let t = x[i * D + j] as f64 * w[j * K + k] as f64;
                r += t;
                a += t.abs();
            }
            let term = scale * (gamma(D + 2) * a + gamma(B + 5) * r.abs());
            for j in 0..D {
                bound[j * K + k] += 2.0 * (x[i * D + j] as f64).abs() * term;
            }
            bound[D * K + k] += 2.0 * term;
        }
    }
    bound
}

/// Asserts the N-replica run matches the single one within the bound at the
/// first step (gradient, and the parameters after it: p − lr·m with m = g at
/// the first step, plus one rounding of p).
pub fn assert_within_bound(got: &Run, single: &Run) {
    let bound = gradient_bound();
    for (i, ((g, s), e)) in got.grad.iter().zip(&single.grad).zip(&bound).enumerate() {
        let diff = (*g as f64 - *s as f64).abs();
        assert!(diff <= *e, "gradient element {i}: {g} vs single replica {s}, |diff| {diff:e} > bound {e:e}");
    }
    for (i, ((p, s), e)) in got.params[0].iter().zip(&single.params[0]).zip(&bound).enumerate() {
        let tol = LR as f64 * e * (1.0 + 1e-6) + 2.0 * 2f64.powi(-24) * (*s as f64).abs();
        let diff = (*p as f64 - *s as f64).abs();
        assert!(diff <= tol, "parameter {i} after step 1: {p} vs single replica {s}, |diff| {diff:e} > {tol:e}");
    }
}
