//! Finite-difference checks of gradients, for wgrad's tests and for users'
//! own functions and custom ops.

use super::Params;
use super::api::grad;
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
}

impl Default for GradcheckOptions {
    fn default() -> Self {
        GradcheckOptions { directions: 3, eps: 1e-3, rtol: 1e-2, atol: 1e-4, seed: 0 }
    }
}

/// What [`gradcheck`] measured along each direction.
#[derive(Clone, Debug)]
pub struct GradcheckReport {
    /// (analytic, numeric) directional derivatives.
    pub directions: Vec<(f32, f32)>,
    /// Whether every direction was within tolerance.
    pub passed: bool,
}

/// Compares the gradient of the scalar `f(params, args)` with central finite
/// differences along random directions `v`:
/// ⟨∇f, v⟩ against (f(p + εv) − f(p − εv)) / 2ε.
///
/// The difference quotient has a truncation error of ε²·f‴/6 (covered by
/// `rtol`) and a rounding error: each f32 evaluation of f is off by a few
/// dozen units of roundoff u = 2⁻²⁴ of |f|, divided by 2ε. The check allows
/// `atol + rtol·max(|analytic|, |numeric|) + 64·u·(|f(p+εv)| + |f(p−εv)|)/2ε`.
///
/// ```
/// use wgrad::{gradcheck, Device, GradcheckOptions, Tensor};
/// # let dev = Device::new()?;
/// let x = Tensor::from_slice(&dev, &[0.5f32, -1.0, 2.0], &[3]);
/// let report = gradcheck(|x: &Tensor, _: &()| x.tanh().square().sum_all(), &x, &(), &GradcheckOptions::default())?;
/// assert!(report.passed, "{report:?}");
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

/// [`gradcheck`] for async callers (the browser).
pub async fn gradcheck_async<P: Params, A>(
    f: impl Fn(&P, &A) -> Tensor,
    params: &P,
    args: &A,
    opts: &GradcheckOptions,
) -> Result<GradcheckReport> {
    let tensors = params.tensors();
    let Some(first) = tensors.first() else {
        return Ok(GradcheckReport { directions: Vec::new(), passed: true });
    };
    let dev = first.device().clone();
    let eps = opts.eps;
    let (g, _, ()) = grad(|p: &P, a: &A| f(p, a))(params, args);
    let mut results = Vec::with_capacity(opts.directions);
    let mut passed = true;
    for k in 0..opts.directions {
        dev.manual_seed(opts.seed.wrapping_add(k as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5eed);
        let v = params.map(|t| Tensor::randn(t.device(), t.shape()));
        let mut analytic = 0.0f32;
        for (gi, vi) in g.tensors().into_iter().zip(v.tensors()) {
            analytic += (gi * vi).sum_all().item_async::<f32>().await?;
        }
        let plus: f32 = f(&params.zip_map(&v, |p, v| &p.detach() + &(v * eps)), args).item_async().await?;
        let minus: f32 = f(&params.zip_map(&v, |p, v| &p.detach() - &(v * eps)), args).item_async().await?;
        let numeric = (plus - minus) / (2.0 * eps);
        let rounding = 64.0 * f32::EPSILON / 2.0 * (plus.abs() + minus.abs()) / (2.0 * eps);
        let allowed = opts.atol + opts.rtol * analytic.abs().max(numeric.abs()) + rounding;
        let ok = (analytic - numeric).abs() <= allowed;
        passed &= ok;
        results.push((analytic, numeric));
    }
    Ok(GradcheckReport { directions: results, passed })
}
