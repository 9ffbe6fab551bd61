//! Seeded initialisers (PyTorch's conventions). For a weight of shape
//! [out, in, k...], fan_in = in·Πk and fan_out = out·Πk; a 1-d shape has
//! fan_in = fan_out = its length. Values come from the device's generator:
//! call [`Device::manual_seed`] first for reproducible weights.

use crate::runtime::Device;
use crate::tensor::Tensor;

/// (fan_in, fan_out) of a weight shape.
#[track_caller]
pub fn fans(shape: &[usize]) -> (usize, usize) {
    match shape {
        [] => panic!("wgrad: init: a scalar has no fan-in"),
        [n] => (*n, *n),
        [out, inp, rest @ ..] => {
            let k: usize = rest.iter().product();
            (inp * k, out * k)
        }
    }
}

/// U(−a, a) with a = gain·√(6 / (fan_in + fan_out)) (Glorot & Bengio, 2010).
#[track_caller]
pub fn xavier_uniform(device: &Device, shape: &[usize], gain: f32) -> Tensor {
    let (fi, fo) = fans(shape);
    let a = gain * (6.0 / (fi + fo) as f32).sqrt();
    Tensor::uniform(device, shape, -a, a)
}

/// N(0, σ²) with σ = gain·√(2 / (fan_in + fan_out)).
#[track_caller]
pub fn xavier_normal(device: &Device, shape: &[usize], gain: f32) -> Tensor {
    let (fi, fo) = fans(shape);
    Tensor::normal(device, shape, 0.0, gain * (2.0 / (fi + fo) as f32).sqrt())
}

/// U(−a, a) with a = √(6 / fan_in): He et al. (2015) for ReLU networks.
#[track_caller]
pub fn kaiming_uniform(device: &Device, shape: &[usize]) -> Tensor {
    let a = (6.0 / fans(shape).0 as f32).sqrt();
    Tensor::uniform(device, shape, -a, a)
}

/// N(0, σ²) with σ = √(2 / fan_in).
#[track_caller]
pub fn kaiming_normal(device: &Device, shape: &[usize]) -> Tensor {
    Tensor::normal(device, shape, 0.0, (2.0 / fans(shape).0 as f32).sqrt())
}
