//! `grad`, `value_and_grad`, `vjp` and `hvp`.

use std::panic::Location;
use std::sync::Arc;

use super::{Node, Params, backward, next_id};
use crate::dtype::DType;
use crate::tensor::Tensor;

/// What a differentiated function returns: the loss alone, or the loss and
/// extra outputs (any [`Params`] structure, e.g. the predictions).
pub trait Output {
    /// The extra outputs (`()` when there are none).
    type Aux: Params;
    /// Splits into the loss and the extra outputs.
    fn into_parts(self) -> (Tensor, Self::Aux);
}

impl Output for Tensor {
    type Aux = ();
    fn into_parts(self) -> (Tensor, ()) {
        (self, ())
    }
}

impl<A: Params> Output for (Tensor, A) {
    type Aux = A;
    fn into_parts(self) -> (Tensor, A) {
        self
    }
}

/// Runs `f` on `params` with every tensor of `params` tracked in a new trace.
/// `op` and `at`: the API call and where it was made, for messages (the
/// functions `grad` and `vjp` return are closures, whose panics Rust cannot
/// locate at their caller).
fn traced<P: Params, R>(op: &str, at: &Location, params: &P, f: impl FnOnce(&P) -> R) -> (u64, Vec<Arc<Node>>, R) {
    for (i, t) in params.tensors().into_iter().enumerate() {
        if t.dtype() != DType::F32 {
            panic!(
                "wgrad: {op} (at {at}): parameter {i} is {} of shape {:?}, but gradients are taken with respect \
                 to f32 tensors only (pass integer tensors with the constant arguments)",
                t.dtype(),
                t.shape()
            );
        }
    }
    let trace = next_id();
    let tracked: Vec<Tensor> = params.tensors().into_iter().map(|t| t.track(trace)).collect();
    let leaves =
        tracked.iter().map(|t| t.traced().and_then(super::Traced::node).expect("just tracked").clone()).collect();
    let boxed = params.rebuild(&mut tracked.into_iter());
    let out = f(&boxed);
    (trace, leaves, out)
}

/// Gradients for `leaves`, shaped like `params`; zeros where the output does
/// not depend on a tensor.
fn collect<P: Params>(params: &P, grads: Vec<Option<Tensor>>) -> P {
    let grads: Vec<Tensor> =
        grads.into_iter().zip(params.tensors()).map(|(g, p)| g.unwrap_or_else(|| p.detach().zeros_like())).collect();
    params.rebuild(&mut grads.into_iter())
}

pub(super) fn grad_at<P: Params, A, O: Output>(
    at: &Location,
    f: &impl Fn(&P, &A) -> O,
    params: &P,
    args: &A,
) -> (P, Tensor, O::Aux) {
    let (trace, leaves, out) = traced("grad", at, params, |p| f(p, args));
    let (loss, aux) = out.into_parts();
    if loss.numel() != 1 || loss.dtype() != DType::F32 {
        panic!(
            "wgrad: grad (at {at}): the function must return a scalar f32 loss, got {} of shape {:?} \
             (use vjp for other outputs)",
            loss.dtype(),
            loss.shape()
        );
    }
    let value = loss.unbox(trace);
    let seed = value.detach().ones_like();
    let grads = backward(trace, &[(&loss, seed)], &leaves);
    (collect(params, grads), value, aux.map(|t| t.unbox(trace)))
}

/// Differentiates `f(params, args)` with respect to `params`.
///
/// Returns a function that, called like `f`, returns `(grads, loss, aux)`:
/// the gradients with exactly the structure of `params`, the loss, and the
/// extra outputs if `f` returns `(loss, aux)`. `args` are constants; pass
/// several as a tuple. `f` may use any Rust control flow. Nothing is read
/// back: the forward and backward passes are recorded for one submission.
///
/// ```
/// use wgrad::{grad, Device, Tensor};
/// # let dev = Device::new()?;
/// // d/dw Σ (x·w)² = 2 xᵀ(x·w)
/// let f = |w: &Tensor, x: &Tensor| x.matmul(w).square().sum_all();
/// let w = Tensor::from_slice(&dev, &[1.0f32, -1.0], &[2, 1]);
/// let x = Tensor::from_slice(&dev, &[1.0f32, 2.0, 3.0, 4.0], &[2, 2]);
/// let (dw, loss, ()) = grad(f)(&w, &x);
/// assert_eq!(loss.item::<f32>()?, 2.0);
/// assert_eq!(dw.to_vec::<f32>()?, vec![-8.0, -12.0]);
/// # Ok::<(), wgrad::Error>(())
/// ```
#[track_caller]
pub fn grad<P: Params, A, O: Output>(f: impl Fn(&P, &A) -> O) -> impl Fn(&P, &A) -> (P, Tensor, O::Aux) {
    let at = Location::caller();
    move |params, args| grad_at(at, &f, params, args)
}

/// [`grad`] with JAX's result order: `((loss, aux), grads)`.
#[track_caller]
pub fn value_and_grad<P: Params, A, O: Output>(f: impl Fn(&P, &A) -> O) -> impl Fn(&P, &A) -> ((Tensor, O::Aux), P) {
    let at = Location::caller();
    move |params, args| {
        let (g, loss, aux) = grad_at(at, &f, params, args);
        ((loss, aux), g)
    }
}

/// Vector-Jacobian products of `f` at `params`: returns `f(params)` and a
/// pullback mapping cotangents (shaped like the output) to gradients
/// (shaped like `params`). The pullback can be called many times.
///
/// ```
/// use wgrad::{vjp, Device, Tensor};
/// # let dev = Device::new()?;
/// let x = Tensor::from_slice(&dev, &[1.0f32, 2.0, 3.0], &[3]);
/// let (y, pullback) = vjp(|x: &Tensor| x.square(), &x);
/// let ct = Tensor::from_slice(&dev, &[1.0f32, 0.0, -1.0], &[3]);
/// assert_eq!(y.to_vec::<f32>()?, vec![1.0, 4.0, 9.0]);
/// assert_eq!(pullback(&ct).to_vec::<f32>()?, vec![2.0, 0.0, -6.0]);
/// # Ok::<(), wgrad::Error>(())
/// ```
#[track_caller]
pub fn vjp<P: Params, O: Params>(f: impl FnOnce(&P) -> O, params: &P) -> (O, impl Fn(&O) -> P) {
    vjp_at(Location::caller(), f, params)
}

pub(super) fn vjp_at<P: Params, O: Params>(
    at: &'static Location<'static>,
    f: impl FnOnce(&P) -> O,
    params: &P,
) -> (O, impl Fn(&O) -> P) {
    let (trace, leaves, out) = traced("vjp", at, params, f);
    let outputs: Vec<Tensor> = out.tensors().into_iter().cloned().collect();
    let value = out.map(|t| t.unbox(trace));
    let template = params.map(|t| t.detach());
    let pullback = move |cotangent: &O| {
        let cts = cotangent.tensors();
        if cts.len() != outputs.len() {
            panic!("wgrad: vjp (pullback of {at}): {} cotangents for {} outputs", cts.len(), outputs.len());
        }
        let seeds: Vec<(&Tensor, Tensor)> = outputs
            .iter()
            .zip(cts)
            .map(|(y, c)| {
                if y.shape() != c.shape() || y.dtype() != c.dtype() {
                    panic!(
                        "wgrad: vjp (pullback of {at}): a cotangent of {} {:?} for an output of {} {:?}",
                        c.dtype(),
                        c.shape(),
                        y.dtype(),
                        y.shape()
                    );
                }
                (y, c.clone())
            })
            .collect();
        collect(&template, backward(trace, &seeds, &leaves))
    };
    (value, pullback)
}
