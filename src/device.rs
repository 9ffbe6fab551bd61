//! The device: adapter choice, the wgpu device and queue, and everything a
//! device owns (pipeline cache, buffer pool, pending graph, counters).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::codegen::{ALoad, BLoad, ConvGemm, MatmulTile, MatmulVariant, WorkgroupTile};
use crate::error::{Error, Result};
use crate::graph::PendingGraph;
use crate::pool::BufferPool;
use crate::shaders::{Kernel, Source};

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
    modules: Mutex<HashMap<Source, wgpu::ShaderModule>>,
    pipelines: Mutex<HashMap<Kernel, Arc<Pipeline>>>,
    pub(crate) graph: Mutex<PendingGraph>,
    pool: Mutex<BufferPool>,
    pub(crate) stats: Stats,
    rng: Mutex<(u64, u64)>,
    /// First error reported by wgpu outside any error scope.
    pub(crate) gpu_error: Arc<Mutex<Option<Error>>>,
    pub(crate) timeout: Mutex<Option<Duration>>,
    writable: Mutex<HashMap<Source, Arc<Vec<u32>>>>,
    pub(crate) check_finite: std::sync::atomic::AtomicBool,
    pub(crate) checks: Mutex<crate::check::Checks>,
    /// Generated fused kernels by source text (`None`: failed validation).
    fused: Shaders<String>,
    /// Generated matmul kernels by variant and convolution product.
    matmul: Shaders<(MatmulVariant, Option<ConvGemm>)>,
    /// The workgroup-tiled matmul's tiles (`None`: this adapter runs the
    /// subgroup kernel), and what the autotune that chose them did.
    matmul_tiles: Mutex<Option<crate::autotune::MatmulTiles>>,
    autotune: std::sync::OnceLock<String>,
}

/// Generated modules by key (`None`: generation failed).
type Shaders<K> = Mutex<HashMap<K, Option<Arc<crate::shaders::DynamicShader>>>>;

/// A matmul pipeline key and the variant (and tile) it runs.
pub(crate) struct MatmulKernel {
    pub kernel: Kernel,
    pub variant: MatmulVariant,
}

/// A compute pipeline and the layout of its bind group 0.
pub(crate) struct Pipeline {
    pub pipeline: wgpu::ComputePipeline,
    pub layout: wgpu::BindGroupLayout,
    /// `entry (module)` with its specialisation, for profiles and graphs.
    pub label: String,
    pub source: Source,
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
            tensors_created: self.tensors_created - before.tensors_created,
            buffers_created: self.buffers_created - before.buffers_created,
            bytes_held: self.bytes_held,
            bytes_free: self.bytes_free,
        }
    }
}

impl Device {
    /// Opens the best available GPU. Honours wgpu's environment variables:
    /// `WGPU_BACKEND` (e.g. `vulkan`, `metal`, `dx12`, `gl`),
    /// `WGPU_ADAPTER_NAME` (a substring of the adapter's name) and
    /// `WGPU_POWER_PREF` (`low`, `high`).
    pub async fn new_async() -> Result<Device> {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let adapter = choose_adapter(&instance).await?;
        Self::from_adapter(adapter).await
    }

    /// Blocking form of [`Device::new_async`] (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new() -> Result<Device> {
        pollster::block_on(Self::new_async())
    }

    /// Opens a device on a given adapter, with all of its limits and the
    /// optional features wgrad can use.
    pub async fn from_adapter(adapter: wgpu::Adapter) -> Result<Device> {
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
        let subgroup_matmul = info.device_type == wgpu::DeviceType::Cpu && features.contains(wgpu::Features::SUBGROUP);
        let device = Device {
            inner: Arc::new(DeviceInner {
                device,
                queue,
                info,
                limits,
                features,
                modules: Mutex::default(),
                pipelines: Mutex::default(),
                graph: Mutex::default(),
                pool: Mutex::default(),
                stats: Stats::default(),
                rng: Mutex::new((0, 0)),
                gpu_error,
                timeout: Mutex::new(None),
                matmul: Mutex::default(),
                matmul_tiles: Mutex::new(None),
                autotune: Default::default(),
                writable: Mutex::default(),
                check_finite: Default::default(),
                checks: Mutex::default(),
                fused: Mutex::default(),
            }),
        };
        if !subgroup_matmul {
            let report = crate::autotune::tune(&device).await?;
            device.inner.autotune.get_or_init(|| report);
        }
        Ok(device)
    }

    /// Name, backend, device type and driver of the adapter.
    pub fn adapter_info(&self) -> &wgpu::AdapterInfo {
        &self.inner.info
    }

    /// The adapter's limits (the device is created with all of them).
    pub fn limits(&self) -> &wgpu::Limits {
        &self.inner.limits
    }

    /// What the matmul's autotune chose for this adapter, and whether it
    /// measured (with the times) or read its cache; `None` where the
    /// matmul is not tuned (CPU adapters with subgroups, whose kernel's
    /// tile follows the product's shape).
    pub fn matmul_autotune(&self) -> Option<&str> {
        self.inner.autotune.get().map(String::as_str)
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
        self.inner.pool().trim();
    }

    /// Sets how long a read-back or sync may wait for the GPU before it
    /// returns [`Error::Timeout`] (native only; default: no limit).
    pub fn set_timeout(&self, timeout: Option<Duration>) {
        *self.inner.timeout.lock().unwrap_or_else(|p| p.into_inner()) = timeout;
    }

    /// Destroys the device now, releasing its memory without waiting for the
    /// last handle to drop. Every later call on it or its tensors returns
    /// [`Error::DeviceLost`], as after a driver reset.
    pub fn destroy(&self) {
        self.inner.device.destroy();
    }

    /// Submits all pending work and waits for the GPU to finish it.
    pub async fn sync_async(&self) -> Result<()> {
        self.inner.submit_and_wait().await
    }

    /// Blocking form of [`Device::sync_async`] (native only).
    #[cfg(not(target_arch = "wasm32"))]
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
    pub(crate) fn pool(&self) -> MutexGuard<'_, BufferPool> {
        self.pool.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The (seed, position) for the next random tensor; advances the position.
    /// The generator's (seed, position), to restore after tracing a step.
    pub(crate) fn rng_state(&self) -> (u64, u64) {
        *self.rng.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn set_rng_state(&self, state: (u64, u64)) {
        *self.rng.lock().unwrap_or_else(|p| p.into_inner()) = state;
    }

    pub(crate) fn next_rng(&self) -> (u64, u64) {
        let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        let state = *rng;
        rng.1 += 1;
        state
    }

    /// Workgroups that keep the adapter busy: CPU adapters run a couple of
    /// workgroups per core, GPUs need many more.
    pub(crate) fn busy_workgroups(&self) -> usize {
        if self.info.device_type == wgpu::DeviceType::Cpu {
            #[cfg(not(target_arch = "wasm32"))]
            let cores = std::thread::available_parallelism().map_or(4, |n| n.get());
            #[cfg(target_arch = "wasm32")]
            let cores = 4;
            2 * cores
        } else {
            128
        }
    }

    /// The matmul kernel for an [m, n] output (`outputs` elements with the
    /// batches) on this adapter. CPU adapters with subgroups (lavapipe) get
    /// generated register-blocked kernels whose tile fits the output
    /// (narrow outputs waste no lanes); other adapters the workgroup-tiled
    /// kernel (`codegen::matmul_tiled`) with the tile their autotune chose
    /// for products of this size and rows (`MatmulTiles::for_product`). `a`, `b`: the four-wide loads the
    /// operands allow (see [`crate::codegen::MatmulTile`]).
    pub(crate) fn matmul_kernel(
        &self,
        outputs: usize,
        m: usize,
        n: usize,
        a: ALoad,
        b: BLoad,
        conv: Option<ConvGemm>,
    ) -> MatmulKernel {
        let tiles = *self.matmul_tiles.lock().unwrap_or_else(|p| p.into_inner());
        let variant = match tiles {
            Some(tiles) => MatmulVariant::Workgroup(tiles.for_product(outputs, m)),
            None => {
                let rows = match m {
                    0..=8 => 8,
                    9..=16 => 16,
                    17..=32 => 32,
                    _ => 64,
                };
                let cols = if n > 32 { 8 } else { 4 };
                let a = if a == ALoad::AlongM && rows % 32 != 0 { ALoad::Scalar } else { a };
                let unroll = if a == ALoad::AlongK || b == BLoad::AlongK { 4 } else { 2 };
                MatmulVariant::Subgroup(MatmulTile { rows, cols, unroll, a, b })
            }
        };
        let mut cache = self.matmul.lock().unwrap_or_else(|p| p.into_inner());
        let mut shader = |v: MatmulVariant| {
            cache
                .entry((v, conv))
                .or_insert_with(|| {
                    crate::shaders::DynamicShader::new(&v.label(conv), &v.source(conv, None), v.subgroups())
                        .map_err(|e| eprintln!("wgrad: the generated matmul {v:?} {conv:?} failed validation:\n{e}"))
                        .ok()
                })
                .clone()
        };
        let (variant, shader) = match shader(variant) {
            Some(s) => (variant, s),
            None => {
                let default = MatmulVariant::Workgroup(WorkgroupTile::DEFAULT);
                (default, shader(default).expect("the default tile validates (a unit test checks it)"))
            }
        };
        MatmulKernel { kernel: Kernel::dynamic(shader, "matmul"), variant }
    }

    /// Sets the workgroup-tiled matmul's tiles (`None`: the subgroup kernel).
    pub(crate) fn set_matmul_tiles(&self, tiles: Option<crate::autotune::MatmulTiles>) {
        *self.matmul_tiles.lock().unwrap_or_else(|p| p.into_inner()) = tiles;
    }

    /// Zeroes the activity counters (after the device's own set-up work).
    pub(crate) fn reset_counters(&self) {
        let s = &self.stats;
        for c in [&s.submits, &s.dispatches, &s.readbacks, &s.uploads, &s.pipelines, &s.bind_groups, &s.tensors] {
            c.store(0, Ordering::Relaxed);
        }
        self.pool().created = 0;
    }

    /// Bindings a module declares writable (`var<storage, read_write>`):
    /// which buffers a node writes, for fusion. Parsed once per module.
    pub(crate) fn writable_bindings(&self, source: &Source) -> Arc<Vec<u32>> {
        let mut cache = self.writable.lock().unwrap_or_else(|p| p.into_inner());
        cache
            .entry(source.clone())
            .or_insert_with(|| {
                let Ok(module) = naga::front::wgsl::parse_str(source.wgsl()) else {
                    return Arc::new((0..16).collect()); // unknown: assume every binding is written
                };
                let writes = module
                    .global_variables
                    .iter()
                    .filter(|(_, g)| {
                        matches!(g.space, naga::AddressSpace::Storage { access } if access.contains(naga::StorageAccess::STORE))
                    })
                    .filter_map(|(_, g)| g.binding.as_ref().map(|b| b.binding))
                    .collect();
                Arc::new(writes)
            })
            .clone()
    }

    /// The module of a generated fused kernel, validated once per source.
    pub(crate) fn fused_shader(
        &self,
        label: &str,
        wgsl: &str,
        subgroups: bool,
    ) -> Option<Arc<crate::shaders::DynamicShader>> {
        let mut cache = self.fused.lock().unwrap_or_else(|p| p.into_inner());
        cache
            .entry(wgsl.to_string())
            .or_insert_with(|| crate::shaders::DynamicShader::new(label, wgsl, subgroups).ok())
            .clone()
    }

    /// The cached pipeline for `kernel`, built on first use.
    pub(crate) fn pipeline(&self, kernel: &Kernel) -> Arc<Pipeline> {
        let mut cache = self.pipelines.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = cache.get(kernel) {
            return p.clone();
        }
        let mut modules = self.modules.lock().unwrap_or_else(|p| p.into_inner());
        let module = modules.entry(kernel.source.clone()).or_insert_with(|| {
            self.device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(kernel.source.label()),
                source: wgpu::ShaderSource::Wgsl(kernel.source.wgsl().into()),
            })
        });
        let constants: Vec<(&str, f64)> = kernel.constants.iter().map(|&(k, v)| (k, v as f64)).collect();
        let pipeline = self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(&kernel.entry),
            layout: None,
            module,
            entry_point: Some(&kernel.entry),
            compilation_options: wgpu::PipelineCompilationOptions { constants: &constants, ..Default::default() },
            cache: None,
        });
        let layout = pipeline.get_bind_group_layout(0);
        self.stats.pipelines.fetch_add(1, Ordering::Relaxed);
        let mut label = format!("{} ({})", kernel.entry, kernel.source.label());
        for (k, v) in &kernel.constants {
            label.push_str(&format!(" {k}={v}"));
        }
        let p = Arc::new(Pipeline { pipeline, layout, label, source: kernel.source.clone() });
        cache.insert(kernel.clone(), p.clone());
        p
    }
}

#[cfg(not(target_arch = "wasm32"))]
async fn choose_adapter(instance: &wgpu::Instance) -> Result<wgpu::Adapter> {
    let adapters = instance.enumerate_adapters(wgpu::Backends::all()).await;
    let seen = || {
        let names: Vec<String> = adapters
            .iter()
            .map(|a| {
                let i = a.get_info();
                format!("{} ({:?})", i.name, i.backend)
            })
            .collect();
        if names.is_empty() { " (none visible)".to_string() } else { format!("; adapters seen: {}", names.join(", ")) }
    };
    if let Ok(wanted) = std::env::var("WGPU_ADAPTER_NAME") {
        let lower = wanted.to_lowercase();
        return adapters
            .iter()
            .find(|a| a.get_info().name.to_lowercase().contains(&lower))
            .cloned()
            .ok_or_else(|| Error::NoAdapter { details: format!(" matching WGPU_ADAPTER_NAME={wanted:?}{}", seen()) });
    }
    let preference = wgpu::PowerPreference::from_env().unwrap_or(wgpu::PowerPreference::HighPerformance);
    match instance
        .request_adapter(&wgpu::RequestAdapterOptions { power_preference: preference, ..Default::default() })
        .await
    {
        Ok(a) => Ok(a),
        Err(_) => Err(Error::NoAdapter { details: seen() }),
    }
}

#[cfg(target_arch = "wasm32")]
async fn choose_adapter(instance: &wgpu::Instance) -> Result<wgpu::Adapter> {
    instance
        .request_adapter(&wgpu::RequestAdapterOptions {
            power_preference: wgpu::PowerPreference::HighPerformance,
            ..Default::default()
        })
        .await
        .map_err(|e| Error::NoAdapter {
            details: format!(" ({e}); this browser may not support WebGPU or may have it disabled"),
        })
}
