//! Tensors made from host data or filled with a value.

use crate::dtype::{DType, Element};
use crate::ops::elementwise::fill;
use crate::runtime::Device;
use crate::shape::{Layout, numel};
use crate::tensor::Tensor;

impl Tensor {
    /// A tensor holding `data` (row-major) with the given shape.
    #[track_caller]
    pub fn from_slice<T: Element>(device: &Device, data: &[T], shape: &[usize]) -> Tensor {
        if data.len() != numel(shape) {
            panic!("wgrad: from_slice: {} values cannot fill shape {shape:?} ({} elements)", data.len(), numel(shape));
        }
        let t = Tensor::empty(device, "from_slice", shape, T::DTYPE);
        if !data.is_empty() && t.storage().size >= (data.len() * 4) as u64 {
            device.inner.upload(t.storage(), bytemuck::cast_slice(data));
        }
        t
    }

    /// A 0-d tensor holding `value`.
    #[track_caller]
    pub fn scalar<T: Element>(device: &Device, value: T) -> Tensor {
        Tensor::from_slice(device, &[value], &[])
    }

    /// A tensor of `shape` filled with `value` (its type picks the dtype).
    #[track_caller]
    pub fn full<T: Element>(device: &Device, shape: &[usize], value: T) -> Tensor {
        let t = Tensor::empty(device, "full", shape, T::DTYPE);
        fill(&t, T::DTYPE.bits_of(value.to_f64()));
        t
    }

    /// f32 zeros.
    #[track_caller]
    pub fn zeros(device: &Device, shape: &[usize]) -> Tensor {
        Tensor::full(device, shape, 0.0f32)
    }

    /// f32 ones.
    #[track_caller]
    pub fn ones(device: &Device, shape: &[usize]) -> Tensor {
        Tensor::full(device, shape, 1.0f32)
    }

    /// Zeros with the shape, dtype and device of `self`.
    #[track_caller]
    pub fn zeros_like(&self) -> Tensor {
        self.full_like(0.0)
    }

    /// Ones with the shape, dtype and device of `self`.
    #[track_caller]
    pub fn ones_like(&self) -> Tensor {
        self.full_like(1.0)
    }

    /// `value` (converted to the dtype of `self`) with the shape of `self`.
    #[track_caller]
    pub fn full_like(&self, value: f64) -> Tensor {
        let t = Tensor::empty(self.device(), "full_like", self.shape(), self.dtype());
        fill(&t, self.dtype().bits_of(value));
        t
    }

    /// `start, start + step, ...` up to (excluding) `end`, as f32; `.cast()`
    /// gives integer indices.
    #[track_caller]
    pub fn arange(device: &Device, start: f32, end: f32, step: f32) -> Tensor {
        if step == 0.0 || !step.is_finite() || ((end - start) / step).is_sign_negative() && end != start {
            panic!("wgrad: arange: cannot step from {start} to {end} by {step}");
        }
        let n = ((end - start) / step).ceil().max(0.0) as usize;
        let limits = device.limits();
        if (n as u64).saturating_mul(4) > limits.max_storage_buffer_binding_size.min(limits.max_buffer_size) {
            // beyond the adapter: a tensor holding Err(TooLarge), without the host data
            return Tensor::empty(device, "arange", &[n], DType::F32);
        }
        let data: Vec<f32> = (0..n).map(|i| start + step * i as f32).collect();
        Tensor::from_slice(device, &data, &[n])
    }

    /// The n × n identity matrix, f32.
    #[track_caller]
    pub fn eye(device: &Device, n: usize) -> Tensor {
        let t = Tensor::zeros(device, &[n, n]);
        let diagonal = t.with_layout(Layout { shape: vec![n], strides: vec![n + 1], offset: 0 });
        fill(&diagonal, DType::F32.bits_of(1.0));
        t
    }

    /// `n` values from `start` to `end` inclusive, evenly spaced (as
    /// `numpy.linspace`: the last is `end` exactly), f32.
    #[track_caller]
    pub fn linspace(device: &Device, start: f32, end: f32, n: usize) -> Tensor {
        let step = if n > 1 { (end as f64 - start as f64) / (n - 1) as f64 } else { 0.0 };
        let data: Vec<f32> =
            (0..n).map(|i| if i + 1 == n && n > 1 { end } else { (start as f64 + step * i as f64) as f32 }).collect();
        Tensor::from_slice(device, &data, &[n])
    }
}
