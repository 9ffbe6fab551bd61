//! Errors from the environment and from data: everything a correct program
//! can still meet at run time. Programming mistakes (mismatched shapes, a bad
//! axis, a wrong dtype) panic when the op is recorded instead, naming the op,
//! the shapes and the caller's line.

use std::panic::Location;

/// The error type of every fallible wgrad call.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// No GPU adapter could be found.
    #[error(
        "wgrad: no GPU adapter found{details}.\n\
         Install a GPU driver with Vulkan, Metal or DX12 support, or the software \
         Vulkan driver lavapipe (Debian/Ubuntu: `apt-get install mesa-vulkan-drivers`). \
         WGPU_BACKEND (vulkan, metal, dx12, gl) and WGPU_ADAPTER_NAME choose among adapters."
    )]
    NoAdapter {
        /// What was searched for and what was seen.
        details: String,
    },
    /// The adapter refused to create a device.
    #[error("wgrad: could not create a device on adapter {adapter}: {reason}")]
    RequestDevice { adapter: String, reason: String },
    /// The device was lost (driver reset, removal, or `Device::destroy`).
    #[error("wgrad: the GPU device was lost ({0}); its tensors are gone, create a new Device")]
    DeviceLost(String),
    /// A buffer larger than the adapter allows was requested.
    #[error(
        "wgrad: {op} at {location}: a tensor of shape {shape:?} needs {} bytes, \
         more than this adapter's limit of {limit} bytes per storage binding",
        if *bytes == u64::MAX { "more than 2^64".to_string() } else { bytes.to_string() }
    )]
    TooLarge { op: &'static str, shape: Vec<usize>, bytes: u64, limit: u64, location: &'static Location<'static> },
    /// The GPU ran out of memory.
    #[error("wgrad: out of GPU memory: {0}")]
    OutOfMemory(String),
    /// A custom kernel's WGSL did not parse or validate.
    #[error("wgrad: shader {name} is invalid:\n{message}")]
    Shader { name: String, message: String },
    /// A file could not be read or written.
    #[error("wgrad: {0}")]
    Io(String),
    /// A data file or checkpoint is malformed.
    #[error("wgrad: {0}")]
    Format(String),
    /// Debug mode ([`Device::set_check_finite`](crate::Device::set_check_finite)):
    /// an op produced NaN or ±Inf.
    #[error("wgrad: {op} at {location} produced NaN or Inf{}", derivative_of.map(|(p, o, l)| format!(" (in the {p} of {o} at {l})")).unwrap_or_default())]
    NonFinite {
        op: &'static str,
        location: &'static Location<'static>,
        /// Set when a VJP or JVP rule made the op: the pass ("backward
        /// pass" or "tangent"), the op it differentiates and its line.
        derivative_of: Option<(&'static str, &'static str, &'static Location<'static>)>,
    },
    /// A kernel met an index outside its tensor (it read zero instead).
    #[error("wgrad: {op} at {location}: an index is out of range (read as zero){}", derivative_of.map(|(p, o, l)| format!(" (in the {p} of {o} at {l})")).unwrap_or_default())]
    IndexOutOfRange {
        op: &'static str,
        location: &'static Location<'static>,
        /// Set when a VJP or JVP rule made the op: the pass ("backward
        /// pass" or "tangent"), the op it differentiates and its line.
        derivative_of: Option<(&'static str, &'static str, &'static Location<'static>)>,
    },
    /// A read-back or sync did not complete in time.
    #[error(
        "wgrad: the GPU did not finish within {0:?} (the limit set with Device::set_timeout); the work goes on, and a later read-back waits for it"
    )]
    Timeout(std::time::Duration),
    /// What was asked cannot be done on this adapter or backend.
    #[error("wgrad: {0}")]
    Unsupported(String),
    /// Processes training together (data parallelism) lost touch: one died
    /// or stopped answering.
    #[error("wgrad: data parallel: {0}")]
    Collective(String),
    /// An error reported by the WebGPU implementation (a bug in wgrad if it happens).
    #[error("wgrad: GPU error: {0}")]
    Gpu(String),
}

/// `Result` with wgrad's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
