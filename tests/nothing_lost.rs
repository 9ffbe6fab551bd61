//! Nothing lost: an op that cannot run (its output beyond the adapter's
//! limits, or an input that failed) gives an `Err` where its result is read,
//! and every other op recorded before or after it — on this thread or
//! another — runs and reads back its own value.

mod common;

use common::*;
use wgrad::optim::Optimizer;
use wgrad::{Error, Tensor, grad};

/// A value whose op cannot run: a copy larger than any adapter allows.
fn too_large(like: &Tensor) -> Tensor {
    like.reshape(&[1, like.numel()]).expand(&[1 << 30, like.numel()]).contiguous()
}

#[test]
fn a_failed_op_keeps_the_work_recorded_around_it() {
    let d = own_device();
    let a = Tensor::from_slice(&d, &[1.0f32, 2.0, 3.0], &[3]) * 2.0;
    let big = Tensor::zeros(&d, &[1 << 20, 1 << 13]);
    let e = big.sum_all().item::<f32>().unwrap_err();
    assert!(matches!(e, Error::TooLarge { .. }), "{e}");
    assert_eq!(a.to_vec::<f32>().unwrap(), vec![2.0, 4.0, 6.0]);
    // what depends on the failed value fails with its error, read before or after the rest
    let b = &a * 3.0;
    let bad = too_large(&a).narrow(0, 0, 1).reshape(&[3]) + &b;
    let c = &b + 1.0;
    assert!(matches!(bad.to_vec::<f32>().unwrap_err(), Error::TooLarge { .. }));
    assert_eq!(c.to_vec::<f32>().unwrap(), vec![7.0, 13.0, 19.0]);
    assert!(matches!((&bad * 2.0).sum_all().item::<f32>().unwrap_err(), Error::TooLarge { .. }));
    d.sync().unwrap();
}

#[test]
fn one_threads_failure_is_not_anothers() {
    let d = own_device();
    let x = Tensor::from_slice(&d, &[1.0f32, 2.0], &[2]);
    let y = (&x + 1.0).square();
    let other = std::thread::spawn({
        let d = d.clone();
        move || {
            let e = Tensor::zeros(&d, &[1 << 20, 1 << 13]).sum_all().item::<f32>().unwrap_err();
            assert!(matches!(e, Error::TooLarge { .. }), "{e}");
        }
    });
    other.join().unwrap();
    assert_eq!(y.to_vec::<f32>().unwrap(), vec![4.0, 9.0]);
}

/// Ten SGD steps recorded and not read, then an error caught: the
/// parameters hold what ten steps give.
#[test]
fn a_caught_error_keeps_the_training_steps_before_it() {
    let d = own_device();
    let run = |fail: bool| -> Vec<f32> {
        let mut w = Tensor::from_slice(&d, &[0.5f32, -1.0, 2.0], &[3]);
        let x = Tensor::from_slice(&d, &[1.0f32, 2.0, 3.0], &[3]);
        let mut opt = Optimizer::sgd(0.01);
        let f = |w: &Tensor, x: &Tensor| (w * x - 1.0).square().sum_all();
        for _ in 0..10 {
            let (g, _, ()) = grad(f)(&w, &x);
            w = opt.step(&w, &g);
        }
        if fail {
            assert!(too_large(&w).sum_all().item::<f32>().is_err());
        }
        w.to_vec().unwrap()
    };
    let want = run(false);
    let got = run(true);
    assert_eq!(got, want);
    assert_ne!(want, vec![0.5, -1.0, 2.0], "the steps moved the parameters");
}

/// Random programs of elementwise ops, reductions and matmuls on small
/// tensors, one op of which cannot run (an operand replaced by a value too
/// large for the adapter) and some later ops depend on it: every value that
/// does not depend on it reads back the bits it has in the same program
/// without the failure, every value that does is `Err(TooLarge)` — reads in
/// the middle of the program and at its end, in reverse order, alike.
#[test]
fn random_programs_with_one_failing_op() {
    let d = own_device();
    for seed in 0..40 {
        let mut rng = Rng::new(seed);
        let steps: Vec<(usize, usize, usize)> = (0..12).map(|_| (rng.below(6), rng.below(64), rng.below(64))).collect();
        let bad_at = rng.below(steps.len());
        let read_at = rng.below(steps.len());
        let inputs: Vec<Vec<f32>> = (0..2).map(|_| (0..12).map(|_| rng.uniform(-1.0, 1.0) as f32).collect()).collect();
        // every value is [3, 4]; a step (op, a, b) reads values a and b (mod
        // how many there are); `failing`: step `bad_at` reads a failed a
        let run = |failing: bool| -> Vec<(bool, Result<Vec<f32>, Error>)> {
            let mut vals: Vec<(Tensor, bool)> =
                inputs.iter().map(|v| (Tensor::from_slice(&d, v, &[3, 4]), false)).collect();
            let mut reads = Vec::new();
            for (i, &(op, a, b)) in steps.iter().enumerate() {
                let (mut x, mut fx) = vals[a % vals.len()].clone();
                if failing && i == bad_at {
                    (x, fx) = (too_large(&x).narrow(0, 0, 1).reshape(&[3, 4]), true);
                }
                let (y, fy) = vals[b % vals.len()].clone();
                let v = match op {
                    0 => &x + &y,
                    1 => (&x * &y).tanh(),
                    2 => x.matmul(&y.t()).matmul(&y) * 0.1,
                    3 => x.sum(&[1], true) + &y,
                    4 => x.softmax(0) - &y,
                    _ => x.t().contiguous().reshape(&[3, 4]).maximum(&y),
                };
                vals.push((v, fx || fy));
                if i == read_at {
                    let (t, f) = &vals[vals.len() - 1];
                    reads.push((*f, t.to_vec::<f32>()));
                }
            }
            reads.extend(vals.iter().rev().map(|(t, f)| (*f, t.to_vec::<f32>())));
            reads
        };
        let clean = run(false);
        let failed = run(true);
        let mut independent = 0;
        for (k, ((f, got), (_, want))) in failed.iter().zip(&clean).enumerate() {
            let want: Vec<u32> = want.as_ref().expect("no failure").iter().map(|v| v.to_bits()).collect();
            if *f {
                assert!(matches!(got, Err(Error::TooLarge { .. })), "seed {seed}, read {k}: a dependent gave {got:?}");
            } else {
                let got: Vec<u32> = got.as_ref().expect("an independent value").iter().map(|v| v.to_bits()).collect();
                assert_eq!(got, want, "seed {seed}, read {k}: an independent value changed");
                independent += 1;
            }
        }
        assert!(independent >= 2, "seed {seed}: the inputs at least");
    }
}
