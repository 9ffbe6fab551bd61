//! The GPU runtime: a device and everything it owns — the wgpu device and
//! queue, the shader table and the pipeline cache, the buffer pool, the
//! pending graph of recorded dispatches, its flush into one submission and
//! the read-backs, the capture of a compiled step, and the flags kernels
//! raise. It knows no tensors, ops, calculus or code generation: the
//! layers above hand it kernels, buffers and uniform bytes.
//!
//! - `adapter.rs`: choosing the adapter;
//! - `shaders.rs`: the WGSL sources and the pipeline keys ([`Kernel`]);
//! - `pipelines.rs`: the caches of modules, pipelines and generated shaders;
//! - `pool.rs`: buffers and the size-bucketed pool that owns them;
//! - `node.rs`: recorded commands and what each reads and writes;
//! - `graph.rs`: recording, and the flush into one submission;
//! - `encode.rs`: the one routine that encodes dispatches (flushes and
//!   compiled steps alike);
//! - `readback.rs`: waiting for the GPU and reading buffers back;
//! - `failed.rs`: values an op could not compute, and their errors;
//! - `capture.rs`: redirecting recording into a compiled step;
//! - `flags.rs`: errors the kernels flag (indices out of range, NaN/Inf).

mod adapter;
mod capture;
mod encode;
mod failed;
mod flags;
mod graph;
mod node;
mod pipelines;
mod pool;
mod readback;
mod shaders;

pub(crate) use adapter::choose_adapter;
pub(crate) use capture::{begin_capture, end_capture, refuse_in_capture};
pub(crate) use encode::{Command, Prepared, encode};
pub(crate) use flags::{Site, in_derivative_of, recording};
pub(crate) use graph::Program;
pub(crate) use node::{Access, Node, access, grid};

pub(crate) use pool::{Arena, Storage};
pub(crate) use shaders::{DynamicShader, Kernel, Shader, Source, sources};

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::error::{Error, Result};

/// A GPU device: where tensors live and kernels run. Cheap to clone; clones
/// share the device, its buffer pool and its pending graph.
///
/// ```
/// let dev = wgrad::Device::new()?;
/// println!("{} ({:?})", dev.adapter_info().name, dev.adapter_info().backend);
/// # Ok::<(), wgrad::Error>(())
/// ```
#[derive(Clone)]
pub struct Device {
    pub(crate) inner: Arc<DeviceInner>,
}

pub(crate) struct DeviceInner {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub limits: wgpu::Limits,
    pub features: wgpu::Features,
    caches: pipelines::Caches,
    graph: Mutex<graph::PendingGraph>,
    pool: Mutex<pool::BufferPool>,
    pub(crate) stats: Stats,
    rng: Mutex<(u64, u64)>,
    /// First error reported by wgpu outside any error scope.
    gpu_error: Arc<Mutex<Option<Error>>>,
    timeout: Mutex<Option<Duration>>,
    /// The latest submission, which every earlier one precedes.
    last_submission: Mutex<Option<wgpu::SubmissionIndex>>,
    /// On wgpu's GL backend, the turn to call into the driver (see
    /// [`DeviceInner::gl_turn`]).
    gl_turns: Option<parking_lot::ReentrantMutex<()>>,
    check_finite: AtomicBool,
    checks: Mutex<flags::Checks>,
    failures: failed::Failures,
    /// State the layers above keep per device (the matmul's kernel
    /// choice), one value per type.
    locals: Mutex<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>,
    /// What the layers above measured when the device opened (the
    /// matmul's autotune), for `Device::matmul_autotune`.
    pub(crate) tuning: std::sync::OnceLock<String>,
}

#[derive(Default)]
pub(crate) struct Stats {
    pub submits: AtomicU64,
    pub dispatches: AtomicU64,
    pub readbacks: AtomicU64,
    pub uploads: AtomicU64,
    pub pipelines: AtomicU64,
    pub bind_groups: AtomicU64,
    pub tensors: AtomicU64,
    pub aliased: AtomicU64,
}

/// A snapshot of a device's counters, for tests and benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Queue submissions.
    pub submits: u64,
    /// Compute dispatches encoded.
    pub dispatches: u64,
    /// Read-backs (`to_vec`, `item`).
    pub readbacks: u64,
    /// Host-to-GPU writes (tensor creation from host data).
    pub uploads: u64,
    /// Compute pipelines built (each is cached afterwards).
    pub pipelines: u64,
    /// Bind groups created.
    pub bind_groups: u64,
    /// Dispatches that bound one buffer to a writable binding and to another
    /// binding. Browsers' WebGPU rejects them (native drivers run them):
    /// wgrad never records one, and the tests hold it to 0.
    pub aliased_bindings: u64,
    /// Tensor handles created (views and results alike).
    pub tensors_created: u64,
    /// GPU buffers created by the pool.
    pub buffers_created: u64,
    /// Bytes of GPU buffers the pool holds, in use or free.
    pub bytes_held: u64,
    /// Bytes of free buffers waiting in the pool for reuse.
    pub bytes_free: u64,
}

impl Counters {
    /// Bytes held by live tensors and pending work.
    pub fn bytes_in_use(&self) -> u64 {
        self.bytes_held - self.bytes_free
    }
}

impl std::ops::Sub for Counters {
    type Output = Counters;
    /// Activity between two snapshots (byte figures are taken from `self`).
    fn sub(self, before: Counters) -> Counters {
        Counters {
            submits: self.submits - before.submits,
            dispatches: self.dispatches - before.dispatches,
            readbacks: self.readbacks - before.readbacks,
            uploads: self.uploads - before.uploads,
            pipelines: self.pipelines - before.pipelines,
            bind_groups: self.bind_groups - before.bind_groups,
            aliased_bindings: self.aliased_bindings - before.aliased_bindings,
            tensors_created: self.tensors_created - before.tensors_created,
            buffers_created: self.buffers_created - before.buffers_created,
            bytes_held: self.bytes_held,
            bytes_free: self.bytes_free,
        }
    }
}

/// Opens a device on `adapter`, with all of its limits and the optional
/// features wgrad can use (the public constructors are in `device.rs`).
pub(crate) async fn open(adapter: wgpu::Adapter) -> Result<Device> {
    let info = adapter.get_info();
    let features = adapter.features() & (wgpu::Features::SUBGROUP | wgpu::Features::TIMESTAMP_QUERY);
    let limits = adapter.limits();
    let (device, queue) = adapter
        .request_device(&wgpu::DeviceDescriptor {
            label: Some("wgrad"),
            required_features: features,
            required_limits: limits.clone(),
            ..Default::default()
        })
        .await
        .map_err(|e| Error::RequestDevice { adapter: info.name.clone(), reason: e.to_string() })?;
    let gpu_error: Arc<Mutex<Option<Error>>> = Arc::default();
    let slot = gpu_error.clone();
    device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
        let err = match e {
            wgpu::Error::OutOfMemory { source } => Error::OutOfMemory(source.to_string()),
            wgpu::Error::Validation { description, .. } => Error::Gpu(description),
            wgpu::Error::Internal { description, .. } => Error::Gpu(description),
        };
        let mut slot = slot.lock().unwrap_or_else(|p| p.into_inner());
        slot.get_or_insert(err);
    }));
    let slot = gpu_error.clone();
    device.set_device_lost_callback(move |reason, message| {
        let mut slot = slot.lock().unwrap_or_else(|p| p.into_inner());
        let why = if message.is_empty() { format!("{reason:?}") } else { format!("{reason:?}: {message}") };
        *slot = Some(Error::DeviceLost(why));
    });
    let gl_turns = (info.backend == wgpu::Backend::Gl).then(Default::default);
    Ok(Device {
        inner: Arc::new(DeviceInner {
            device,
            queue,
            info,
            limits,
            features,
            caches: pipelines::Caches::default(),
            graph: Mutex::default(),
            pool: Mutex::default(),
            stats: Stats::default(),
            rng: Mutex::new((0, 0)),
            gl_turns,
            gpu_error,
            timeout: Mutex::new(None),
            last_submission: Mutex::new(None),
            check_finite: AtomicBool::default(),
            checks: Mutex::default(),
            failures: Default::default(),
            locals: Mutex::default(),
            tuning: Default::default(),
        }),
    })
}

impl Device {
    /// Name, backend, device type and driver of the adapter.
    pub fn adapter_info(&self) -> &wgpu::AdapterInfo {
        &self.inner.info
    }

    /// The adapter's limits (the device is created with all of them).
    pub fn limits(&self) -> &wgpu::Limits {
        &self.inner.limits
    }

    /// Optional features in use (subgroups, timestamp queries).
    pub fn features(&self) -> wgpu::Features {
        self.inner.features
    }

    /// The underlying wgpu device and queue, for interoperation.
    pub fn wgpu(&self) -> (&wgpu::Device, &wgpu::Queue) {
        (&self.inner.device, &self.inner.queue)
    }

    /// A snapshot of the counters (submits, dispatches, bytes held, ...).
    pub fn counters(&self) -> Counters {
        let s = &self.inner.stats;
        let pool = self.inner.pool();
        Counters {
            submits: s.submits.load(Ordering::Relaxed),
            dispatches: s.dispatches.load(Ordering::Relaxed),
            readbacks: s.readbacks.load(Ordering::Relaxed),
            uploads: s.uploads.load(Ordering::Relaxed),
            pipelines: s.pipelines.load(Ordering::Relaxed),
            bind_groups: s.bind_groups.load(Ordering::Relaxed),
            aliased_bindings: s.aliased.load(Ordering::Relaxed),
            tensors_created: s.tensors.load(Ordering::Relaxed),
            buffers_created: pool.created,
            bytes_held: pool.bytes_held,
            bytes_free: pool.bytes_free,
        }
    }

    /// Seeds the device's random generator: the `rand`/`randn` calls that
    /// follow produce the same values on every run and every adapter.
    pub fn manual_seed(&self, seed: u64) {
        *self.inner.rng.lock().unwrap_or_else(|p| p.into_inner()) = (seed, 0);
    }

    /// Releases the pool's free buffers back to the driver.
    pub fn trim_pool(&self) {
        let _turn = self.inner.gl_turn();
        self.inner.pool().trim();
    }

    /// Sets how long a read-back or sync may wait for the GPU — for the
    /// work it submits and for the work submitted before it — before it
    /// returns [`Error::Timeout`] (native only; default: no limit). The
    /// work goes on, and the device stays usable: a later read waits for
    /// it. [`Error::Unsupported`] on wgpu's GL backend, which runs the work
    /// inside the submission, where no limit can stop it.
    pub fn set_timeout(&self, timeout: Option<Duration>) -> Result<()> {
        if timeout.is_some() && self.inner.gl_turns.is_some() {
            return Err(Error::Unsupported(
                "a timeout cannot be set on wgpu's GL backend: it runs the GPU work inside the submission, \
                 which nothing interrupts (use another backend, e.g. WGPU_BACKEND=vulkan)"
                    .into(),
            ));
        }
        *self.inner.timeout.lock().unwrap_or_else(|p| p.into_inner()) = timeout;
        Ok(())
    }

    /// Destroys the device now, releasing its memory without waiting for the
    /// last handle to drop. Every later call on it or its tensors returns
    /// [`Error::DeviceLost`], as after a driver reset.
    pub fn destroy(&self) {
        let _turn = self.inner.gl_turn();
        self.inner.device.destroy();
    }

    /// Submits all pending work and waits for the GPU to finish it.
    #[track_caller]
    pub fn sync_async(&self) -> impl std::future::Future<Output = Result<()>> + '_ {
        refuse_in_capture(&self.inner, "sync");
        self.inner.submit_and_wait()
    }

    /// Blocking form of [`Device::sync_async`] (native only).
    #[cfg(not(target_arch = "wasm32"))]
    #[track_caller]
    pub fn sync(&self) -> Result<()> {
        pollster::block_on(self.sync_async())
    }

    pub(crate) fn same(&self, other: &Device) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Device({} on {:?})", self.inner.info.name, self.inner.info.backend)
    }
}

impl DeviceInner {
    pub(crate) fn pool(&self) -> MutexGuard<'_, pool::BufferPool> {
        self.pool.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The generator's (seed, position), to restore after tracing a step.
    pub(crate) fn rng_state(&self) -> (u64, u64) {
        *self.rng.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn set_rng_state(&self, state: (u64, u64)) {
        *self.rng.lock().unwrap_or_else(|p| p.into_inner()) = state;
    }

    /// The (seed, position) for the next random tensor; advances the position.
    pub(crate) fn next_rng(&self) -> (u64, u64) {
        let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        let state = *rng;
        rng.1 += 1;
        state
    }

    /// Is the adapter a CPU (lavapipe, llvmpipe, SwiftShader)? There every
    /// storage load is issued lane by lane and a workgroup runs on one core,
    /// so kernels are chosen differently.
    pub(crate) fn cpu_adapter(&self) -> bool {
        self.info.device_type == wgpu::DeviceType::Cpu
    }

    /// Workgroups that keep the adapter busy: CPU adapters run a couple of
    /// workgroups per core, GPUs need many more.
    pub(crate) fn busy_workgroups(&self) -> usize {
        if self.cpu_adapter() {
            #[cfg(not(target_arch = "wasm32"))]
            let cores = std::thread::available_parallelism().map_or(4, |n| n.get());
            #[cfg(target_arch = "wasm32")]
            let cores = 4;
            2 * cores
        } else {
            128
        }
    }

    /// On wgpu's GL backend, this thread's turn to call into the driver:
    /// wgpu locks the GL context for each call but gives up (panics) after
    /// 6 s, which a long call — a submission, whose work the GL backend runs
    /// inside it, or compiling a large kernel — exceeds on a loaded machine.
    /// wgrad's calls therefore queue here, without a time limit, one at a
    /// time (reentrant: a call inside a turn takes none). Elsewhere `None`.
    pub(crate) fn gl_turn(&self) -> Option<parking_lot::ReentrantMutexGuard<'_, ()>> {
        self.gl_turns.as_ref().map(|m| m.lock())
    }

    /// Zeroes the activity counters (after the device's own set-up work).
    pub(crate) fn reset_counters(&self) {
        let s = &self.stats;
        for c in
            [&s.submits, &s.dispatches, &s.readbacks, &s.uploads, &s.pipelines, &s.bind_groups, &s.tensors, &s.aliased]
        {
            c.store(0, Ordering::Relaxed);
        }
        self.pool().created = 0;
    }

    /// This device's value of type `T`, made by `T::default()` on first
    /// use: state that a layer above keeps per device.
    pub(crate) fn local<T: Default + Send + Sync + 'static>(&self) -> Arc<T> {
        let mut locals = self.locals.lock().unwrap_or_else(|p| p.into_inner());
        let value = locals.entry(TypeId::of::<T>()).or_insert_with(|| Arc::new(T::default())).clone();
        value.downcast::<T>().unwrap_or_else(|_| unreachable!("stored under its own type id"))
    }
}
