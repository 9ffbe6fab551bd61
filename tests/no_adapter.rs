//! Without a matching adapter, `Device::new` returns an error that says how
//! to get one. (Its own test binary: it changes the environment.)

#[test]
fn missing_adapter_error_explains_how_to_get_one() {
    // SAFETY: this binary runs this single test, so no other thread reads
    // the environment concurrently.
    unsafe { std::env::set_var("WGPU_ADAPTER_NAME", "no such adapter 42") };
    let err = wgrad::Device::new().unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, wgrad::Error::NoAdapter { .. }), "{msg}");
    for needle in ["no GPU adapter", "no such adapter 42", "mesa-vulkan-drivers", "WGPU_BACKEND", "adapters seen"] {
        assert!(msg.contains(needle), "{msg:?} lacks {needle:?}");
    }
}
