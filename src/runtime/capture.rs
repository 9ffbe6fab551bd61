//! Capture: while `compile` traces a step, this thread's recording on the
//! step's device goes into the step's program, and its buffers come from
//! the step's arena.

use std::sync::Arc;

use super::DeviceInner;
use super::node::Node;
use super::pool::Arena;
use crate::error::Error;

/// The nodes and buffers of a step being traced by `compile`.
pub(crate) struct Capture {
    device: usize,
    pub nodes: Vec<Node>,
    pub arena: Arc<std::sync::Mutex<Arena>>,
    pub error: Option<Error>,
}

thread_local! {
    /// Tracing is per thread: another thread using the same device records
    /// into the device's pending graph as usual.
    static CAPTURE: std::cell::RefCell<Option<Capture>> = const { std::cell::RefCell::new(None) };
}

fn device_id(dev: &DeviceInner) -> usize {
    dev as *const DeviceInner as usize
}

/// Starts tracing `dev`'s work on this thread.
#[track_caller]
pub(crate) fn begin_capture(dev: &DeviceInner) {
    if CAPTURE.with(|c| c.borrow().is_some()) {
        panic!("wgrad: compile: a compiled step cannot run inside another step being compiled");
    }
    CAPTURE.with(|c| {
        *c.borrow_mut() =
            Some(Capture { device: device_id(dev), nodes: Vec::new(), arena: Arc::default(), error: None });
    });
}

/// Stops tracing and returns what was recorded (`None`: nothing was being
/// traced, e.g. after a read-back inside the step ended the capture).
pub(crate) fn end_capture() -> Option<Capture> {
    CAPTURE.with(|c| c.borrow_mut().take())
}

/// Runs `f` on the capture if this thread is tracing `dev` (`Err` if not).
pub(super) fn with_capture<T>(dev: &DeviceInner, f: impl FnOnce(&mut Capture) -> T) -> std::result::Result<T, ()> {
    CAPTURE.with(|c| match c.borrow_mut().as_mut() {
        Some(cap) if cap.device == device_id(dev) => Ok(f(cap)),
        _ => Err(()),
    })
}

/// The arena of the step being traced on this thread for `dev`, if any.
pub(super) fn capture_arena(dev: &DeviceInner) -> Option<Arc<std::sync::Mutex<Arena>>> {
    with_capture(dev, |c| c.arena.clone()).ok()
}

#[track_caller]
pub(crate) fn refuse_in_capture(dev: &DeviceInner, what: &str) {
    if with_capture(dev, |_| ()).is_ok() {
        // end the capture so the panic leaves the thread usable
        CAPTURE.with(|c| c.borrow_mut().take());
        panic!(
            "wgrad: compile: {what} inside a compiled step. A compiled step is traced once and replayed, so \
             it cannot depend on tensor values on the host (a branch on one would be frozen into the trace): \
             read values outside the step, or branch on the GPU with `where_`"
        );
    }
}
