//! The tensor handle: a strided view of a GPU buffer.

use std::sync::Arc;

use crate::autograd::Traced;
use crate::device::Device;
use crate::dtype::{DType, Element};
use crate::error::Result;
use crate::pool::Storage;
use crate::shape::{Layout, numel};

/// An n-dimensional array in GPU memory: (buffer, offset, shape, strides) and
/// a dtype. Cloning is cheap and shares the data; views (reshape, transpose,
/// expand, narrow, ...) share it too. Ops are recorded, not run: data reaches
/// the host only through [`Tensor::to_vec`] / [`Tensor::item`] (and their
/// `_async` forms), which submit all pending work at once.
///
/// ```
/// use wgrad::{Device, Tensor};
/// let dev = Device::new()?;
/// let a = Tensor::from_slice(&dev, &[1.0f32, 2.0, 3.0, 4.0], &[2, 2]);
/// let b = &a.matmul(&a.t()) * 2.0 + 1.0;
/// assert_eq!(b.to_vec::<f32>()?, vec![11.0, 23.0, 23.0, 51.0]);
/// # Ok::<(), wgrad::Error>(())
/// ```
#[derive(Clone)]
pub struct Tensor {
    pub(crate) inner: Arc<TensorInner>,
}

pub(crate) struct TensorInner {
    pub device: Device,
    pub storage: Arc<Storage>,
    pub layout: Layout,
    pub dtype: DType,
    /// Set while the tensor is being traced by `grad` (see `autograd`).
    pub trace: Option<Traced>,
}

impl Tensor {
    pub(crate) fn from_parts(device: &Device, storage: Arc<Storage>, layout: Layout, dtype: DType) -> Tensor {
        device.inner.stats.tensors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Tensor { inner: Arc::new(TensorInner { device: device.clone(), storage, layout, dtype, trace: None }) }
    }

    /// A view of the same buffer with another layout.
    pub(crate) fn with_layout(&self, layout: Layout) -> Tensor {
        Tensor::from_parts(&self.inner.device, self.inner.storage.clone(), layout, self.inner.dtype)
    }

    /// A fresh, uninitialised contiguous tensor (the caller records the kernel
    /// that fills it).
    #[track_caller]
    pub(crate) fn empty(device: &Device, op: &'static str, shape: &[usize], dtype: DType) -> Tensor {
        let storage = device.inner.alloc_tensor(op, shape);
        Tensor::from_parts(device, storage, Layout::contiguous(shape), dtype)
    }

    pub(crate) fn layout(&self) -> &Layout {
        &self.inner.layout
    }

    pub(crate) fn storage(&self) -> &Arc<Storage> {
        &self.inner.storage
    }

    /// The dimensions.
    pub fn shape(&self) -> &[usize] {
        &self.inner.layout.shape
    }

    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.inner.layout.shape.len()
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.inner.layout.numel()
    }

    /// Size of dimension `axis` (negative counts from the end).
    #[track_caller]
    pub fn dim(&self, axis: isize) -> usize {
        self.shape()[crate::shape::axis("dim", self.shape(), axis)]
    }

    /// Element strides of the view.
    pub fn strides(&self) -> &[usize] {
        &self.inner.layout.strides
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.inner.dtype
    }

    /// The device holding the data.
    pub fn device(&self) -> &Device {
        &self.inner.device
    }

    /// Whether the view is dense and row-major.
    pub fn is_contiguous(&self) -> bool {
        self.inner.layout.is_contiguous()
    }

    // ---- creation ------------------------------------------------------

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
        crate::ops::elementwise::fill(&t, T::DTYPE.bits_of(value.to_f64()));
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
        crate::ops::elementwise::fill(&t, self.dtype().bits_of(value));
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
        let data: Vec<f32> = (0..n).map(|i| start + step * i as f32).collect();
        Tensor::from_slice(device, &data, &[n])
    }

    // ---- read-back -----------------------------------------------------

    /// Copies the elements (row-major) to the host. Submits all pending work.
    #[track_caller]
    pub fn to_vec_async<T: Element>(&self) -> impl std::future::Future<Output = Result<Vec<T>>> + '_ {
        self.check_read::<T>("to_vec");
        async move {
            if self.numel() == 0 {
                return Ok(Vec::new());
            }
            let t = if self.is_contiguous() { self.clone() } else { self.contiguous() };
            let bytes = (t.numel() * 4) as u64;
            let data = t.device().inner.read(t.storage(), (t.layout().offset * 4) as u64, bytes).await?;
            Ok(bytemuck::pod_collect_to_vec(&data))
        }
    }

    /// Blocking form of [`Tensor::to_vec_async`] (native only).
    #[cfg(not(target_arch = "wasm32"))]
    #[track_caller]
    pub fn to_vec<T: Element>(&self) -> Result<Vec<T>> {
        let fut = self.to_vec_async();
        pollster::block_on(fut)
    }

    /// The single element of a one-element tensor. Submits all pending work.
    #[track_caller]
    pub fn item_async<T: Element>(&self) -> impl std::future::Future<Output = Result<T>> + '_ {
        if self.numel() != 1 {
            panic!("wgrad: item: the tensor has shape {:?}, not exactly one element", self.shape());
        }
        let fut = self.to_vec_async::<T>();
        async move { Ok(fut.await?[0]) }
    }

    /// Blocking form of [`Tensor::item_async`] (native only).
    #[cfg(not(target_arch = "wasm32"))]
    #[track_caller]
    pub fn item<T: Element>(&self) -> Result<T> {
        let fut = self.item_async();
        pollster::block_on(fut)
    }

    #[track_caller]
    fn check_read<T: Element>(&self, op: &str) {
        if T::DTYPE != self.dtype() {
            panic!("wgrad: {op}: the tensor holds {}, not {} (cast it first)", self.dtype(), T::DTYPE);
        }
    }
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor({:?}, {})", self.shape(), self.dtype())
    }
}
