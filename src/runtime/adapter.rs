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
