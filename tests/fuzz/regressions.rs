//! Regressions found by the fuzzer.

use wgrad::{Tensor, compile, grad};

use crate::check::check;
use crate::common::{Array, dev};
use crate::program::{BinaryFn::*, Op, Program, ScalarFn::*};

// ---- regressions found by the fuzzer ------------------------------------------------

/// Found by the fuzzer (seeds 1, 2, 3): in a compiled step, the backward
/// pass pads the gradient of `x.narrow(..)` (a zero fill, then a copy into
/// the interior). Fusion merged the fill into the preceding elementwise
/// kernel and dropped its store, because the copy that follows writes the
/// same buffer; but the copy writes only part of it, so the padding kept
/// stale data from a reused buffer: compiled runs returned [17, 35, 11, 15,
/// 24, 9]. Eager mode was right. Fixed by e1f4442.
#[test]
fn compiled_pad_keeps_its_zero_fill() {
    let x = Tensor::from_slice(dev(), &[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]);
    let f = |x: &Tensor, _: &()| (x.narrow(0, 1, 1) + x.narrow(1, 0, 2).matmul(x)).sum_all();
    // ∂/∂x: 2 on row 1 (broadcast over 2 rows), 1·xᵀ row sums padded, and
    // the column sums of x[:, :2]
    let want = vec![11.0f32, 20.0, 5.0, 15.0, 24.0, 9.0];
    assert_eq!(grad(f)(&x, &()).0.to_vec::<f32>().unwrap(), want, "eager");
    let mut step = compile(|_: &mut (), x: &Tensor| grad(f)(x, &()).0);
    for run in 1..=2 {
        assert_eq!(step.run(&mut (), &x).unwrap().to_vec::<f32>().unwrap(), want, "compiled run {run}");
    }
}

/// Found by the fuzzer (CI seed) while fusion learned to give a value a
/// buffer of its own: the second piece of a `cat` was moved to a new buffer
/// without the first, so the mean read half a tensor. A value may be moved
/// only where one node writes all of what its readers read.
#[test]
fn compiled_cat_keeps_every_piece() {
    let x = Tensor::from_slice(dev(), &[1.0f32, -3.0], &[1, 1, 2]);
    let f = |x: &Tensor| Tensor::cat(&[x, x], 1).mean(&[2], true);
    assert_eq!(f(&x).to_vec::<f32>().unwrap(), vec![-1.0, -1.0], "eager");
    let mut step = compile(|_: &mut (), x: &Tensor| f(x));
    for run in 1..=2 {
        assert_eq!(step.run(&mut (), &x).unwrap().to_vec::<f32>().unwrap(), vec![-1.0, -1.0], "compiled run {run}");
    }
}

/// Found by the fuzzer (seed 5): lavapipe compiles the fused kernel of
/// (x + x) + (−1) as x + (x + (−1)) (SPIR-V lets drivers reassociate what is
/// not marked NoContraction), one ULP away from eager mode and not correctly
/// rounded (x = −0.10847456: −1.2169492 instead of −1.2169491). Not a bug
/// of wgrad's, but more than an fma contraction: the bounds of fused
/// kernels allow one more ULP per op (`Kernels::Fused`).
#[test]
fn fused_chains_may_reassociate() {
    use Op::*;
    let idx = Array::new(&[4, 2, 5], (0..40).map(|i| [2.0, 0.0, 1.0][i % 3]).collect());
    let p = Program::new(
        vec![vec![3, 2, 5]],
        vec![Input(0), Binary(Add, 0, 0), Scalar(Plus, -1.0, 1), Gather { x: 2, axis: 0, idx }],
        0xf9cbe89532f782f2,
    );
    // on lavapipe compiled and eager differ in the last bit, each within its bounds
    if let Err(e) = check(&p) {
        panic!("{e}\n{p}");
    }
}
