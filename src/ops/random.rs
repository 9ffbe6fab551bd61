//! Seeded random tensors generated on the GPU. Kernel: `shaders/rng.wgsl`.

use bytemuck::{Pod, Zeroable};

use crate::dtype::DType;
use crate::runtime::{Device, Kernel, Shader, grid};
use crate::tensor::Tensor;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct RngParams {
    numel: u32,
    seed_lo: u32,
    seed_hi: u32,
    pos_lo: u32,
    pos_hi: u32,
    kind: u32,
    a: f32,
    b: f32,
}

#[track_caller]
fn random(device: &Device, op: &'static str, shape: &[usize], normal: bool, a: f32, b: f32) -> Tensor {
    let out = Tensor::empty(device, op, shape, DType::F32);
    let (seed, pos) = device.inner.next_rng();
    let n = out.numel();
    let params = RngParams {
        numel: n as u32,
        seed_lo: seed as u32,
        seed_hi: (seed >> 32) as u32,
        pos_lo: pos as u32,
        pos_hi: (pos >> 32) as u32,
        kind: normal as u32,
        a,
        b,
    };
    let kernel = Kernel::new(Shader::Rng, "random");
    let groups = grid(n.div_ceil(4).div_ceil(256) as u32);
    // (the generator's position is in the uniform: a compiled step renews it)
    device.inner.record_random(&kernel, &[("out", out.storage())], bytemuck::bytes_of(&params), groups);
    out
}

impl Tensor {
    /// Uniform samples in [0, 1) from the device's seeded generator
    /// ([`Device::manual_seed`]).
    #[track_caller]
    pub fn rand(device: &Device, shape: &[usize]) -> Tensor {
        random(device, "rand", shape, false, 1.0, 0.0)
    }

    /// Uniform samples in [low, high).
    #[track_caller]
    pub fn uniform(device: &Device, shape: &[usize], low: f32, high: f32) -> Tensor {
        random(device, "uniform", shape, false, high - low, low)
    }

    /// Standard normal samples from the device's seeded generator.
    #[track_caller]
    pub fn randn(device: &Device, shape: &[usize]) -> Tensor {
        random(device, "randn", shape, true, 1.0, 0.0)
    }

    /// Normal samples with the given mean and standard deviation.
    #[track_caller]
    pub fn normal(device: &Device, shape: &[usize], mean: f32, std: f32) -> Tensor {
        random(device, "normal", shape, true, std, mean)
    }
}
