//! What the demo's exports share: errors as JS values, the adapter as JSON.

use wasm_bindgen::prelude::*;

use crate::Device;

/// The adapter, as JSON: name, backend, device type, driver, and what the
/// matmul's autotune chose and measured.
pub(super) fn adapter_json(dev: &Device) -> String {
    let i = dev.adapter_info();
    let esc = |t: &str| t.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
    format!(
        "{{\"name\":\"{}\",\"backend\":\"{:?}\",\"deviceType\":\"{:?}\",\"driver\":\"{}\",\"matmul\":\"{}\"}}",
        esc(&i.name),
        i.backend,
        i.device_type,
        esc(&i.driver),
        esc(dev.matmul_autotune().unwrap_or("not tuned"))
    )
}

pub(super) fn js_err(e: crate::Error) -> JsValue {
    JsError::new(&e.to_string()).into()
}
