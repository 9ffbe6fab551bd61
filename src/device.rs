//! The public constructors of [`Device`]: open the runtime's device on an
//! adapter, then run the matmul's autotune for it. This is the one place
//! where a layer reaches up from the runtime to an op: the autotune times
//! real matmuls (`ops/matmul/autotune.rs`), so a device is ready to run
//! them at their best speed when it is returned.

use crate::error::Result;
use crate::ops::matmul::autotune;
use crate::runtime::{self, Device, choose_adapter};

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
    /// optional features wgrad can use. Adapters that run the workgroup-
    /// tiled matmul (all but CPU adapters with subgroups) choose its tiles
    /// now: measured on the first open per adapter and kernel version,
    /// read from a cache afterwards (see [`Device::matmul_autotune`]).
    pub async fn from_adapter(adapter: wgpu::Adapter) -> Result<Device> {
        let device = runtime::open(adapter).await?;
        let info = device.adapter_info();
        let subgroup_matmul =
            info.device_type == wgpu::DeviceType::Cpu && device.features().contains(wgpu::Features::SUBGROUP);
        if !subgroup_matmul {
            let report = autotune::tune(&device).await?;
            device.inner.tuning.get_or_init(|| report);
        }
        Ok(device)
    }

    /// What the matmul's autotune chose for this adapter, and whether it
    /// measured (with the times) or read its cache; `None` where the
    /// matmul is not tuned (CPU adapters with subgroups, whose kernel's
    /// tile follows the product's shape).
    pub fn matmul_autotune(&self) -> Option<&str> {
        self.inner.tuning.get().map(String::as_str)
    }
}
