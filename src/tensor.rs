//! The tensor handle: a strided view of a GPU buffer.

use std::sync::Arc;

use crate::autograd::Traced;
use crate::dtype::{DType, Element};
use crate::error::Result;
use crate::runtime::{Device, Storage};
use crate::shape::Layout;

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

    // ---- read-back -----------------------------------------------------

    /// Copies the elements (row-major) to the host. Submits all pending work.
    #[track_caller]
    pub fn to_vec_async<T: Element>(&self) -> impl std::future::Future<Output = Result<Vec<T>>> + '_ {
        self.check_read::<T>("to_vec");
        crate::runtime::refuse_in_capture(&self.device().inner, "a read-back (to_vec, item)");
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
