//! Forward mode and what is built on it: `jvp`, the Jacobians (`jacfwd`,
//! `jacrev`, `jacobian`), `hessian` and the forward-over-reverse `hvp`.

use std::panic::Location;

use super::api::{grad_at, vjp_at};
use super::{Params, next_id};
use crate::dtype::DType;
use crate::tensor::Tensor;

/// Panics unless `v` (tangents or a direction) matches `params` tensor for
/// tensor in shape, and is f32.
pub(super) fn check_like<P: Params>(op: &str, at: &Location, what: &str, params: &P, v: &P) {
    let (ps, vs) = (params.tensors(), v.tensors());
    if ps.len() != vs.len() {
        panic!("wgrad: {op} (at {at}): {} {what} tensors for {} parameters", vs.len(), ps.len());
    }
    for (i, (p, d)) in ps.iter().zip(&vs).enumerate() {
        if p.shape() != d.shape() || d.dtype() != DType::F32 || p.dtype() != DType::F32 {
            panic!(
                "wgrad: {op} (at {at}): {what} {i} is {} {:?}, parameter {i} is {} {:?} (both must be f32 of one shape)",
                d.dtype(),
                d.shape(),
                p.dtype(),
                p.shape()
            );
        }
    }
}

pub(super) fn jvp_at<P: Params, O: Params>(
    at: &'static Location<'static>,
    f: impl FnOnce(&P) -> O,
    primals: &P,
    tangents: &P,
) -> (O, O) {
    check_like("jvp", at, "tangent", primals, tangents);
    let trace = next_id();
    let boxed: Vec<Tensor> =
        primals.tensors().into_iter().zip(tangents.tensors()).map(|(p, t)| p.with_tangent(trace, t.clone())).collect();
    let out = f(&primals.rebuild(&mut boxed.into_iter()));
    let value = out.map(|t| t.unbox(trace));
    let tangent = out.map(|t| t.tangent_in(trace).unwrap_or_else(|| t.unbox(trace).detach().zeros_like()));
    (value, tangent)
}

/// Forward mode: `f(primals)` and its directional derivative along
/// `tangents` (the Jacobian-vector product J·t), in one pass that carries
/// each value's tangent beside it. `tangents` has the structure and shapes
/// of `primals`; the output tangents have those of the outputs (zeros where
/// an output does not depend on the inputs, and for integer outputs).
///
/// Every primitive has a JVP rule written with ops, so `jvp` nests with
/// itself and with [`grad`](crate::grad) (forward over reverse is how
/// [`hessian`] and [`hvp`](crate::hvp) work), runs in compiled steps and in
/// the browser.
///
/// ```
/// use wgrad::{jvp, Device, Tensor};
/// # let dev = Device::new()?;
/// let x = Tensor::from_slice(&dev, &[1.0f32, 2.0], &[2]);
/// let t = Tensor::from_slice(&dev, &[1.0f32, 0.5], &[2]);
/// // d/dε sin((x + εt)²) = cos(x²)·2x·t
/// let (y, dy) = jvp(|x: &Tensor| x.square().sin(), &x, &t);
/// let want: Vec<f32> = [(1.0f32, 1.0f32), (2.0, 0.5)].iter().map(|(x, t)| (x * x).cos() * 2.0 * x * t).collect();
/// for (got, want) in dy.to_vec::<f32>()?.iter().zip(want) {
///     assert!((got - want).abs() < 1e-5);
/// }
/// assert_eq!(y.shape(), &[2]);
/// # Ok::<(), wgrad::Error>(())
/// ```
#[track_caller]
pub fn jvp<P: Params, O: Params>(f: impl FnOnce(&P) -> O, primals: &P, tangents: &P) -> (O, O) {
    jvp_at(Location::caller(), f, primals, tangents)
}

/// Rows of an identity of size `n`, as `n` tensors of `shape` (one-hot).
fn basis(like: &Tensor, shape: &[usize]) -> Vec<Tensor> {
    let n = like.numel();
    let eye = Tensor::eye(like.device(), n);
    (0..n).map(|e| eye.narrow(0, e, 1).reshape(shape)).collect()
}

/// `parts` (each of shape `inner`) stacked along a new axis at `axis`,
/// reshaped to `shape`; zeros of `shape` when there are none.
fn stacked(dev: &Tensor, parts: &[Tensor], axis: usize, shape: &[usize]) -> Tensor {
    if parts.is_empty() {
        return Tensor::zeros(dev.device(), shape);
    }
    let refs: Vec<&Tensor> = parts.iter().collect();
    Tensor::stack(&refs, axis as isize).reshape(shape)
}

/// The shape of ∂o/∂p: `o`'s dimensions, then `p`'s.
fn block_shape(o: &Tensor, p: &Tensor) -> Vec<usize> {
    [o.shape(), p.shape()].concat()
}

/// The Jacobian from a pullback: one VJP per output element.
fn jacobian_rev<P: Params, O: Params>(x: &P, y: &O, pullback: impl Fn(&O) -> P) -> O::Of<P> {
    let outputs = y.tensors();
    let zeros: Vec<Tensor> = outputs.iter().map(|o| o.detach().zeros_like()).collect();
    let mut rows = Vec::with_capacity(outputs.len());
    for (k, o) in outputs.iter().enumerate() {
        // per input tensor, the gradients of each element of o
        let mut grads: Vec<Vec<Tensor>> = vec![Vec::new(); x.tensors().len()];
        if o.dtype() == DType::F32 {
            for e in basis(o, o.shape()) {
                let mut cts = zeros.clone();
                cts[k] = e;
                let g = pullback(&y.rebuild(&mut cts.into_iter()));
                for (j, gj) in g.tensors().into_iter().enumerate() {
                    grads[j].push(gj.clone());
                }
            }
        }
        let blocks: Vec<Tensor> =
            x.tensors().iter().zip(&grads).map(|(p, g)| stacked(p, g, 0, &block_shape(o, p))).collect();
        rows.push(x.rebuild(&mut blocks.into_iter()));
    }
    y.nest(&mut rows.into_iter())
}

/// The Jacobian by forward mode: one JVP per input element.
fn jacobian_fwd<P: Params, O: Params>(at: &'static Location<'static>, f: &impl Fn(&P) -> O, x: &P) -> O::Of<P> {
    let inputs = x.tensors();
    let zeros: Vec<Tensor> = inputs.iter().map(|p| p.detach().zeros_like()).collect();
    // columns[j][k]: ∂(output k)/∂(input j), one tangent per element of input j
    let mut columns: Vec<Vec<Vec<Tensor>>> = Vec::with_capacity(inputs.len());
    let mut template = None;
    for (j, p) in inputs.iter().enumerate() {
        let mut per_output: Vec<Vec<Tensor>> = Vec::new();
        for e in basis(p, p.shape()) {
            let mut ts = zeros.clone();
            ts[j] = e;
            let (y, dy) = jvp_at(at, f, x, &x.rebuild(&mut ts.into_iter()));
            per_output.resize(dy.tensors().len(), Vec::new());
            for (k, t) in dy.tensors().into_iter().enumerate() {
                per_output[k].push(t.clone());
            }
            template = Some(y);
        }
        columns.push(per_output);
    }
    let y = template.unwrap_or_else(|| f(x));
    let outputs = y.tensors();
    let rows: Vec<P> = outputs
        .iter()
        .enumerate()
        .map(|(k, o)| {
            let blocks: Vec<Tensor> = inputs
                .iter()
                .zip(&columns)
                .map(|(p, col)| {
                    let parts = col.get(k).map_or(&[][..], Vec::as_slice);
                    stacked(o, parts, o.rank(), &block_shape(o, p))
                })
                .collect();
            x.rebuild(&mut blocks.into_iter())
        })
        .collect();
    y.nest(&mut rows.into_iter())
}

/// The Jacobian of `f` at `x` by reverse mode: a VJP per output element
/// (one forward pass, then as many backward passes as the outputs have
/// elements): the cheaper way when the outputs are smaller than the inputs.
///
/// The result nests as JAX does: the output's structure with, in place of
/// each output tensor `o`, the structure of `x` holding ∂o/∂p for each of
/// its tensors `p`, of shape `o.shape ++ p.shape` (see [`Params::Of`]).
#[track_caller]
pub fn jacrev<P: Params, O: Params>(f: impl FnOnce(&P) -> O, x: &P) -> O::Of<P> {
    let (y, pullback) = vjp_at(Location::caller(), f, x);
    jacobian_rev(x, &y, pullback)
}

/// The Jacobian of `f` at `x` by forward mode: a JVP per input element
/// (each a forward pass carrying tangents): the cheaper way when the inputs
/// are smaller than the outputs. Nested as [`jacrev`]'s.
#[track_caller]
pub fn jacfwd<P: Params, O: Params>(f: impl Fn(&P) -> O, x: &P) -> O::Of<P> {
    jacobian_fwd(Location::caller(), &f, x)
}

/// The Jacobian of `f` at `x`, by reverse mode when the outputs have no more
/// elements than the inputs, else by forward mode ([`jacrev`], [`jacfwd`]).
///
/// ```
/// use wgrad::{jacobian, Device, Tensor};
/// # let dev = Device::new()?;
/// // f(x) = (x₀·x₁, sin x₀): J = [[x₁, x₀], [cos x₀, 0]]
/// let f = |x: &Tensor| Tensor::stack(&[&(x.narrow(0, 0, 1) * x.narrow(0, 1, 1)), &x.narrow(0, 0, 1).sin()], 0).reshape(&[2]);
/// let x = Tensor::from_slice(&dev, &[0.5f32, 3.0], &[2]);
/// let j = jacobian(f, &x);
/// assert_eq!(j.shape(), &[2, 2]);
/// let want = [3.0, 0.5, 0.5f32.cos(), 0.0];
/// for (got, want) in j.to_vec::<f32>()?.iter().zip(want) {
///     assert!((got - want).abs() < 1e-6);
/// }
/// # Ok::<(), wgrad::Error>(())
/// ```
#[track_caller]
pub fn jacobian<P: Params, O: Params>(f: impl Fn(&P) -> O, x: &P) -> O::Of<P> {
    let at = Location::caller();
    let (y, pullback) = vjp_at(at, &f, x);
    let m: usize = y.tensors().iter().map(|t| t.numel()).sum();
    let n: usize = x.tensors().iter().map(|t| t.numel()).sum();
    if m <= n { jacobian_rev(x, &y, pullback) } else { jacobian_fwd(at, &f, x) }
}

/// The Hessian of the scalar `f(params, args)` with respect to `params`,
/// by forward mode over reverse (the Jacobian of the gradient, one JVP of
/// the gradient per parameter element). Nested as JAX nests it:
/// `params`' structure holding, for each tensor `p`, `params`' structure of
/// blocks ∂²f/∂p∂q of shape `p.shape ++ q.shape`.
///
/// A Newton step for a logistic regression, with the 3 × 3 solve on the host:
///
/// ```
/// use wgrad::{grad, hessian, Device, Tensor};
/// # let dev = Device::new()?;
/// // mean logistic loss of labels y given features x (a column of ones for the
/// // bias); the one positive point lies inside the others' hull, so the
/// // classes do not separate and the optimum is finite
/// let x = Tensor::from_slice(&dev, &[1.0f32, 0.5, 1.0, 1.0, -1.0, 1.0, 2.0, 1.5, 1.0, -0.5, 2.0, 1.0], &[4, 3]);
/// let y = Tensor::from_slice(&dev, &[1.0f32, 0.0, 0.0, 0.0], &[4]);
/// let loss = |w: &Tensor, (x, y): &(Tensor, Tensor)| {
///     let z = x.matmul(w);
///     (z.softplus() - &z * y).mean_all()
/// };
/// let args = (x, y);
/// let mut w = Tensor::zeros(&dev, &[3]);
/// for _ in 0..4 {
///     let (g, _, ()) = grad(loss)(&w, &args);
///     let h = hessian(loss, &w, &args); // [3, 3]
///     let step = solve(h.to_vec::<f32>()?, g.to_vec::<f32>()?);
///     w = &w - &Tensor::from_slice(&dev, &step, &[3]);
/// }
/// // Newton converges quadratically: |g| 0.25, 0.03, 2e-3, 1e-5, then f32's floor
/// let (g, _, ()) = grad(loss)(&w, &args);
/// assert!(g.to_vec::<f32>()?.iter().all(|g| g.abs() < 1e-6), "{:?}", g.to_vec::<f32>()?);
///
/// /// Solves h·s = g by Gaussian elimination (h symmetric positive definite).
/// fn solve(mut h: Vec<f32>, mut g: Vec<f32>) -> Vec<f32> {
///     let n = g.len();
///     for i in 0..n {
///         for r in i + 1..n {
///             let f = h[r * n + i] / h[i * n + i];
///             for c in i..n {
///                 h[r * n + c] -= f * h[i * n + c];
///             }
///             g[r] -= f * g[i];
///         }
///     }
///     for i in (0..n).rev() {
///         let tail: f32 = (i + 1..n).map(|c| h[i * n + c] * g[c]).sum();
///         g[i] = (g[i] - tail) / h[i * n + i];
///     }
///     g
/// }
/// # Ok::<(), wgrad::Error>(())
/// ```
#[track_caller]
pub fn hessian<P: Params, A>(f: impl Fn(&P, &A) -> Tensor, params: &P, args: &A) -> P::Of<P> {
    let at = Location::caller();
    jacobian_fwd(at, &|p: &P| grad_at(at, &f, p, args).0, params)
}

/// Hessian-vector product `H·v` of the scalar `f(params, args)` with respect
/// to `params`, by forward mode over reverse: the JVP of the gradient along
/// `v`, one pass. [`hvp_rev`] computes the same by reverse over reverse.
#[track_caller]
pub fn hvp<P: Params, A>(f: impl Fn(&P, &A) -> Tensor, params: &P, args: &A, v: &P) -> P {
    let at = Location::caller();
    check_like("hvp", at, "direction", params, v);
    jvp_at(at, |p: &P| grad_at(at, &f, p, args).0, params, v).1
}

/// `H·v` by reverse over reverse: the gradient of ⟨∇f, v⟩ (grad of grad).
/// Equal to [`hvp`] within rounding; kept for checking one against the other.
#[track_caller]
pub fn hvp_rev<P: Params, A>(f: impl Fn(&P, &A) -> Tensor, params: &P, args: &A, v: &P) -> P {
    let at = Location::caller();
    check_like("hvp_rev", at, "direction", params, v);
    let directional = |p: &P, a: &A| dot(&grad_at(at, &f, p, a).0, v);
    grad_at(at, &directional, params, args).0
}

/// Σᵢ ⟨aᵢ, bᵢ⟩ over two structures of tensors, as a 0-d tensor.
pub(crate) fn dot<P: Params>(a: &P, b: &P) -> Tensor {
    let terms: Vec<Tensor> = a.tensors().into_iter().zip(b.tensors()).map(|(x, y)| (x * y).sum_all()).collect();
    let mut it = terms.into_iter();
    let first = it.next().expect("wgrad: dot of structures holding no tensors");
    it.fold(first, |acc, t| &acc + &t)
}
