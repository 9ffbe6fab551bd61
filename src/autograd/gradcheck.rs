//! Finite-difference checks of gradients, for wgrad's tests and for users'
//! own functions and custom ops.

use super::Params;
use super::api::{grad, vjp};
use super::forward::{dot, hvp, hvp_rev, jvp};
use crate::error::Result;
use crate::tensor::Tensor;

/// Settings of [`gradcheck`].
#[derive(Clone, Debug)]
pub struct GradcheckOptions {
    /// Random directions to test.
    pub directions: usize,
    /// Step of the central difference along a standard-normal direction.
    pub eps: f32,
    /// Allowed |analytic − numeric| relative to the larger of the two.
    pub rtol: f32,
    /// Allowed |analytic − numeric| in absolute terms.
    pub atol: f32,
    /// Seed of the directions.
    pub seed: u64,
    /// 1 checks first derivatives; 2 also checks second derivatives (the
    /// gradient of the gradient, as HIPS autograd's `check_grads(order=2)`):
    /// H·u, both forward over reverse ([`hvp`]) and reverse over reverse
    /// ([`hvp_rev`]), against central differences of the gradient.
    pub order: u32,
    /// Also check forward mode: ⟨w, J·v⟩ by [`jvp`] against ⟨Jᵀw, v⟩ by the
    /// gradient, along each direction (and the Jacobian's columns, when
    /// `full`). Off by default: a custom op whose VJP is a kernel has no
    /// forward mode unless it writes its own `jvp`.
    pub forward: bool,
    /// Check every entry of the Jacobian instead of random directions: one
    /// central difference per input element (2n evaluations of `f`), one
    /// pullback per output element (m), and n forward passes when
    /// `forward`. For small inputs.
    pub full: bool,
}

impl Default for GradcheckOptions {
    fn default() -> Self {
        GradcheckOptions {
            directions: 3,
            eps: 1e-3,
            rtol: 1e-2,
            atol: 1e-4,
            seed: 0,
            order: 1,
            forward: false,
            full: false,
        }
    }
}

/// What [`gradcheck`] measured.
#[derive(Clone, Debug, Default)]
pub struct GradcheckReport {
    /// (analytic, numeric) directional derivatives ⟨Jᵀw, v⟩ along each direction.
    pub directions: Vec<(f32, f32)>,
    /// (forward, reverse): ⟨w, J·v⟩ by [`jvp`] and ⟨Jᵀw, v⟩, along each direction.
    pub forward: Vec<(f32, f32)>,
    /// (analytic, numeric) ⟨H·u, v⟩ along each direction (order 2).
    pub second_order: Vec<(f32, f32)>,
    /// Entries of the Jacobian compared (with `full`).
    pub jacobian_entries: usize,
    /// Each comparison that failed, in words.
    pub failures: Vec<String>,
    /// Whether every comparison was within tolerance.
    pub passed: bool,
}

/// Checks the derivatives of `f(params, args)` against central finite
/// differences. `f` may return a tensor of any shape: with w a fixed random
/// cotangent (1 for a scalar), the gradient of ⟨w, f⟩ along random
/// directions v is compared with (⟨w, f(p + εv)⟩ − ⟨w, f(p − εv)⟩) / 2ε;
/// options add forward mode, second order and the full Jacobian
/// ([`GradcheckOptions`]).
///
/// The difference quotient has a truncation error of ε²·f‴/6 (covered by
/// `rtol`) and a rounding error: each f32 evaluation of f is off by a few
/// dozen units of roundoff u = 2⁻²⁴ of |f|, divided by 2ε. The check allows
/// `atol + rtol·max(|analytic|, |numeric|) + 64·u·(|f(p+εv)| + |f(p−εv)|)/2ε`;
/// forward against reverse mode, both analytic, allows `atol + rtol·max`.
///
/// ```
/// use wgrad::{gradcheck, Device, GradcheckOptions, Tensor};
/// # let dev = Device::new()?;
/// let x = Tensor::from_slice(&dev, &[0.5f32, -1.0, 2.0], &[3]);
/// let report = gradcheck(|x: &Tensor, _: &()| x.tanh().square().sum_all(), &x, &(), &GradcheckOptions::default())?;
/// assert!(report.passed, "{report:?}");
/// // second order, and every entry of the Jacobian of a vector function
/// let opts = GradcheckOptions { order: 2, full: true, forward: true, ..Default::default() };
/// let report = gradcheck(|x: &Tensor, _: &()| x.sin() * x.sum_all(), &x, &(), &opts)?;
/// assert!(report.passed && report.jacobian_entries == 9, "{report:?}");
/// # Ok::<(), wgrad::Error>(())
/// ```
#[cfg(not(target_arch = "wasm32"))]
pub fn gradcheck<P: Params, A>(
    f: impl Fn(&P, &A) -> Tensor,
    params: &P,
    args: &A,
    opts: &GradcheckOptions,
) -> Result<GradcheckReport> {
    pollster::block_on(gradcheck_async(f, params, args, opts))
}

/// Unit roundoff of f32.
const U: f32 = f32::EPSILON / 2.0;

/// [`gradcheck`] for async callers (the browser).
pub async fn gradcheck_async<P: Params, A>(
    f: impl Fn(&P, &A) -> Tensor,
    params: &P,
    args: &A,
    opts: &GradcheckOptions,
) -> Result<GradcheckReport> {
    let mut report = GradcheckReport { passed: true, ..Default::default() };
    let tensors = params.tensors();
    let Some(first) = tensors.first() else {
        return Ok(report);
    };
    let dev = first.device().clone();
    let eps = opts.eps;
    let seed = |k: u64| opts.seed.wrapping_add(k).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5eed;
    // the cotangent: 1 for a scalar output, else standard normal
    let y = f(params, args);
    dev.manual_seed(seed(u64::MAX));
    let w = if y.numel() == 1 { y.detach().ones_like() } else { Tensor::randn(&dev, y.shape()) };
    let loss = |p: &P, a: &A| (f(p, a) * &w).sum_all();
    let at = |p: &P, v: &P, s: f32| params_step(p, v, s);
    let mut failures = Vec::new();
    let mut check = |what: String, a: f32, n: f32, rounding: f32| {
        if !within(opts, a, n, rounding) {
            failures.push(format!("{what}: {a} against {n}"));
        }
    };
    if opts.full {
        report.jacobian_entries = full_jacobian(&f, params, args, opts, &mut check).await?;
    }
    let (g, _, ()) = grad(loss)(params, args);
    let directions = if opts.full { 0 } else { opts.directions };
    for k in 0..directions {
        dev.manual_seed(seed(k as u64));
        let v = params.map(|t| Tensor::randn(t.device(), t.shape()));
        let analytic: f32 = dot(&g, &v).item_async().await?;
        let plus: f32 = loss(&at(params, &v, eps), args).item_async().await?;
        let minus: f32 = loss(&at(params, &v, -eps), args).item_async().await?;
        let numeric = (plus - minus) / (2.0 * eps);
        let rounding = 64.0 * U * (plus.abs() + minus.abs()) / (2.0 * eps);
        check(format!("direction {k}: ⟨Jᵀw, v⟩ against its central difference"), analytic, numeric, rounding);
        report.directions.push((analytic, numeric));
        if opts.forward {
            let (_, dy) = jvp(|p: &P| f(p, args), params, &v);
            let fwd: f32 = (dy * &w).sum_all().item_async().await?;
            check(format!("direction {k}: ⟨w, J·v⟩ by jvp against ⟨Jᵀw, v⟩"), fwd, analytic, 0.0);
            report.forward.push((fwd, analytic));
        }
    }
    if opts.order >= 2 {
        for k in 0..opts.directions {
            dev.manual_seed(seed(1 << 32 | k as u64));
            let u = params.map(|t| Tensor::randn(t.device(), t.shape()));
            let v = params.map(|t| Tensor::randn(t.device(), t.shape()));
            let hu = hvp(loss, params, args, &u);
            let analytic: f32 = dot(&hu, &v).item_async().await?;
            let rev: f32 = dot(&hvp_rev(loss, params, args, &u), &v).item_async().await?;
            let gu = |s: f32| dot(&grad(loss)(&at(params, &v, s), args).0, &u);
            let (plus, minus): (f32, f32) = (gu(eps).item_async().await?, gu(-eps).item_async().await?);
            let numeric = (plus - minus) / (2.0 * eps);
            let rounding = 64.0 * U * (plus.abs() + minus.abs()) / (2.0 * eps);
            check(
                format!("direction {k}: ⟨H·u, v⟩ forward over reverse against its central difference"),
                analytic,
                numeric,
                rounding,
            );
            check(
                format!("direction {k}: ⟨H·u, v⟩ reverse over reverse against its central difference"),
                rev,
                numeric,
                rounding,
            );
            report.second_order.push((analytic, numeric));
        }
    }
    report.passed = failures.is_empty();
    report.failures = failures;
    Ok(report)
}

/// |a − b| within `atol + rtol·max(|a|, |b|) + rounding`.
fn within(opts: &GradcheckOptions, a: f32, b: f32, rounding: f32) -> bool {
    (a - b).abs() <= opts.atol + opts.rtol * a.abs().max(b.abs()) + rounding
}

/// `p + s·v`, detached from any trace of `p`.
fn params_step<P: Params>(p: &P, v: &P, s: f32) -> P {
    p.zip_map(v, |p, v| &p.detach() + &(v * s))
}

/// Compares every entry of the Jacobian, by reverse mode (one pullback per
/// output element) and, with `forward`, by forward mode (one jvp per input
/// element), against central differences (2 evaluations of `f` per input
/// element); `check` hears each comparison. Returns the entries compared.
async fn full_jacobian<P: Params, A>(
    f: &impl Fn(&P, &A) -> Tensor,
    params: &P,
    args: &A,
    opts: &GradcheckOptions,
    check: &mut impl FnMut(String, f32, f32, f32),
) -> Result<usize> {
    let (y, pullback) = vjp(|p: &P| f(p, args), params);
    let m = y.numel();
    let sizes: Vec<usize> = params.tensors().iter().map(|t| t.numel()).collect();
    let n: usize = sizes.iter().sum();
    // rows[k][i] = ∂y_k/∂x_i by reverse mode
    let mut rows = Vec::with_capacity(m);
    for k in 0..m {
        let mut e = vec![0.0f32; m];
        e[k] = 1.0;
        let row = pullback(&Tensor::from_slice(y.device(), &e, y.shape()));
        let mut flat = Vec::with_capacity(n);
        for t in row.tensors() {
            flat.extend(t.to_vec_async::<f32>().await?);
        }
        rows.push(flat);
    }
    // the unit tangent of input element i (of the whole structure)
    let unit = |i: usize| {
        let mut at = i;
        let mut ts = params.tensors().into_iter().zip(&sizes);
        params.map(|t| {
            let (_, &size) = ts.next().expect("one size per tensor");
            let mut e = vec![0.0f32; size];
            if at < size {
                e[at] = 1.0;
            }
            at = at.wrapping_sub(size);
            Tensor::from_slice(t.device(), &e, t.shape())
        })
    };
    for i in 0..n {
        let e = unit(i);
        let plus = f(&params_step(params, &e, opts.eps), args).to_vec_async::<f32>().await?;
        let minus = f(&params_step(params, &e, -opts.eps), args).to_vec_async::<f32>().await?;
        let column =
            if opts.forward { Some(jvp(|p: &P| f(p, args), params, &e).1.to_vec_async::<f32>().await?) } else { None };
        for (k, (row, (p, q))) in rows.iter().zip(plus.iter().zip(&minus)).enumerate() {
            let numeric = (p - q) / (2.0 * opts.eps);
            let rounding = 64.0 * U * (p.abs() + q.abs()) / (2.0 * opts.eps);
            let what = |mode: &str| format!("∂y[{k}]/∂x[{i}] by {mode}");
            check(what("reverse mode against its central difference"), row[i], numeric, rounding);
            if let Some(c) = &column {
                check(what("forward mode against reverse mode"), c[k], row[i], 0.0);
            }
        }
    }
    Ok(m * n)
}
