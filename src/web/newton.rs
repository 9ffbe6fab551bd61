//! The second-derivative panel: Newton's method on a two-parameter logistic
//! regression, the Hessian by `hessian` (forward mode over the reverse-mode
//! gradient) on the page's GPU. `tests/forward.rs` repeats the problem and
//! pins the Hessian at the start that the browser test compares with.

use js_sys::{Array, Float32Array, Object, Promise, Reflect};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

use super::js::js_err;
use crate::{Device, Tensor, grad, hessian};

/// One feature per point and its label; the labels interleave, so the classes
/// do not separate and the optimum is finite.
const XS: [f32; 8] = [-2.0, -1.2, -0.4, 0.3, 0.8, 1.5, 2.2, 3.0];
const YS: [f32; 8] = [0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 1.0];

/// Mean logistic loss of the slope and intercept w = (a, b):
/// L(w) = mean softplus(z) − z·y with z = a·x + b.
fn loss(w: &Tensor, (x, y): &(Tensor, Tensor)) -> Tensor {
    let z = x.matmul(w);
    (z.softplus() - &z * y).mean_all()
}

/// The loss at each row of `w` [G, 2] at once: the contours' grid.
fn losses(w: &Tensor, (x, y): &(Tensor, Tensor)) -> Tensor {
    let z = w.matmul(&x.t()); // [G, n]
    (z.softplus() - &z * y).mean(&[-1], false)
}

/// Newton's method on the logistic regression, on a demo's device.
#[wasm_bindgen]
pub struct Newton {
    dev: Device,
}

impl Newton {
    pub fn new(dev: Device) -> Newton {
        Newton { dev }
    }
}

#[wasm_bindgen]
impl Newton {
    /// Resolves to `{path, hessian, gradient}`: the iterates `[a, b, loss]`
    /// of `iterations` Newton steps from `(a, b)`, and the Hessian (row-major
    /// 2 × 2) and gradient at `(a, b)`.
    pub fn path(&self, a: f32, b: f32, iterations: u32) -> Promise {
        let dev = self.dev.clone();
        future_to_promise(async move {
            let features: Vec<f32> = XS.iter().flat_map(|&x| [x, 1.0]).collect();
            let data =
                (Tensor::from_slice(&dev, &features, &[XS.len(), 2]), Tensor::from_slice(&dev, &YS, &[YS.len()]));
            let (path, first_h, first_g) = (Array::new(), Array::new(), Array::new());
            let mut w = [a, b];
            for i in 0..=iterations {
                let wt = Tensor::from_slice(&dev, &w, &[2]);
                let (g, l, ()) = grad(loss)(&wt, &data);
                let h = hessian(loss, &wt, &data); // [2, 2]
                let (g, l, h): (Vec<f32>, f32, Vec<f32>) = (
                    g.to_vec_async().await.map_err(js_err)?,
                    l.item_async().await.map_err(js_err)?,
                    h.to_vec_async().await.map_err(js_err)?,
                );
                path.push(&Array::of3(&w[0].into(), &w[1].into(), &l.into()));
                if i == 0 {
                    for &v in &h {
                        first_h.push(&v.into());
                    }
                    for &v in &g {
                        first_g.push(&v.into());
                    }
                }
                if i == iterations {
                    break;
                }
                // w ← w − H⁻¹g, the 2 × 2 inverse by its adjugate
                let det = h[0] * h[3] - h[1] * h[2];
                w[0] -= (h[3] * g[0] - h[1] * g[1]) / det;
                w[1] -= (h[0] * g[1] - h[2] * g[0]) / det;
            }
            let o = Object::new();
            for (k, v) in [("path", JsValue::from(path)), ("hessian", first_h.into()), ("gradient", first_g.into())] {
                Reflect::set(&o, &k.into(), &v)?;
            }
            Ok(o.into())
        })
    }

    /// Resolves to the loss on the `n` × `n` grid over [a0, a1] × [b0, b1]
    /// (row-major, b down the rows), for the contours.
    pub fn grid(&self, a0: f32, a1: f32, b0: f32, b1: f32, n: u32) -> Promise {
        let dev = self.dev.clone();
        future_to_promise(async move {
            let n = n.max(2) as usize;
            let at = |lo: f32, hi: f32, i: usize| lo + (hi - lo) * i as f32 / (n - 1) as f32;
            let w: Vec<f32> = (0..n * n).flat_map(|k| [at(a0, a1, k % n), at(b0, b1, k / n)]).collect();
            let features: Vec<f32> = XS.iter().flat_map(|&x| [x, 1.0]).collect();
            let data =
                (Tensor::from_slice(&dev, &features, &[XS.len(), 2]), Tensor::from_slice(&dev, &YS, &[YS.len()]));
            let l: Vec<f32> =
                losses(&Tensor::from_slice(&dev, &w, &[n * n, 2]), &data).to_vec_async().await.map_err(js_err)?;
            Ok(Float32Array::from(&l[..]).into())
        })
    }
}
