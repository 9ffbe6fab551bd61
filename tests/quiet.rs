//! Opening a device prints nothing: on a headless machine (no
//! `XDG_RUNTIME_DIR`) adapter probing used to print "error: XDG_RUNTIME_DIR
//! is invalid or not set in the environment." several times. The test runs
//! itself again in a child process with that environment and reads the
//! child's stderr.

#[test]
fn opening_a_device_prints_nothing() {
    if std::env::var_os("WGRAD_QUIET_CHILD").is_some() {
        let dev = wgrad::Device::new().expect("an adapter");
        assert_eq!(wgrad::Tensor::ones(&dev, &[3]).sum_all().item::<f32>().unwrap(), 3.0);
        return;
    }
    for backend in ["vulkan", "gl"] {
        let out = std::process::Command::new(std::env::current_exe().expect("the test binary"))
            .args(["--exact", "opening_a_device_prints_nothing", "--test-threads=1"])
            .env("WGRAD_QUIET_CHILD", "1")
            .env("WGPU_BACKEND", backend)
            .env_remove("XDG_RUNTIME_DIR")
            .env_remove("NODEVICE_SELECT")
            .output()
            .expect("the child runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{backend}: {}{stderr}", String::from_utf8_lossy(&out.stdout));
        assert!(stderr.trim().is_empty(), "{backend}: the child printed {stderr:?}");
    }
}
