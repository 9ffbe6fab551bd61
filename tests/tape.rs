//! Long tapes: a tape is as long as the computation it records, and is
//! built, walked and freed without recursion, so its length is bounded by
//! memory, not by the thread's stack.

mod common;

use common::*;
use wgrad::{Tensor, grad, vjp};

/// A chain of `n` views (tape nodes without GPU work) ending in a sum.
fn chain(x: &Tensor, n: usize) -> Tensor {
    let mut y = x.clone();
    for i in 0..n {
        y = if i % 2 == 0 { y.reshape(&[3, 2]) } else { y.reshape(&[2, 3]) };
    }
    y.sum_all()
}

/// grad over a million ops, and an unused pullback of as many, in a thread
/// with the default stack (2 MiB): the tape is freed without recursion.
#[test]
fn a_million_op_tape_is_freed_in_a_thread_with_the_default_stack() {
    let x = Tensor::ones(dev(), &[2, 3]);
    std::thread::spawn(move || {
        let (g, loss, ()) = grad(|x: &Tensor, _: &()| chain(x, 1_000_000))(&x, &());
        assert_eq!(loss.item::<f32>().unwrap(), 6.0);
        assert_eq!(g.to_vec::<f32>().unwrap(), vec![1.0; 6]);
        drop(g);
        let (y, pullback) = vjp(|x: &Tensor| chain(x, 1_000_000), &x);
        assert_eq!(y.item::<f32>().unwrap(), 6.0);
        drop(pullback);
    })
    .join()
    .expect("the thread finishes");
}
