//! Choosing the adapter a device opens on.

use crate::error::{Error, Result};

#[cfg(not(target_arch = "wasm32"))]
pub(crate) async fn choose_adapter(instance: &wgpu::Instance) -> Result<wgpu::Adapter> {
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
pub(crate) async fn choose_adapter(instance: &wgpu::Instance) -> Result<wgpu::Adapter> {
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

/// Mesa's Vulkan device-select layer connects to a display server to put
/// the GPU driving the display first. Without one — no `XDG_RUNTIME_DIR`: a
/// headless machine, CI — it can choose nothing and prints "error:
/// XDG_RUNTIME_DIR is invalid or not set in the environment." several times
/// at every `Device::new`, which reads as wgrad's error. wgrad chooses its
/// adapter itself, so there the layer is switched off with its documented
/// switch, `NODEVICE_SELECT=1`, unless the user set it: at program start,
/// before any thread exists, as changing the environment requires.
#[cfg(target_os = "linux")]
#[used]
#[unsafe(link_section = ".init_array")]
static QUIET_DEVICE_SELECT: extern "C" fn() = quiet_device_select;

#[cfg(target_os = "linux")]
extern "C" fn quiet_device_select() {
    let headless = std::env::var_os("XDG_RUNTIME_DIR").is_none_or(|d| !std::path::Path::new(&d).is_dir());
    if headless && std::env::var_os("NODEVICE_SELECT").is_none() {
        // SAFETY: this runs from the ELF initialisers, before `main` and
        // before any other thread could read the environment.
        unsafe { std::env::set_var("NODEVICE_SELECT", "1") };
    }
}
