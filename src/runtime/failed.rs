//! Failed values. An op that cannot run — its output beyond the adapter's
//! limits, an input that itself failed — is not recorded: the buffers it
//! would have written are marked with the error instead, and reading them
//! returns it. Everything else recorded before and after runs as usual, on
//! any thread. A submission the driver still rejects marks every buffer it
//! would have written, so no read returns stale data.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::DeviceInner;
use super::node::{Node, access};
use crate::error::Error;

/// The buffers holding failed values, and the error of each.
#[derive(Default)]
pub(super) struct Failures {
    errors: Mutex<HashMap<wgpu::Buffer, Error>>,
    /// How many there are, read without the lock (usually none).
    count: AtomicUsize,
}

impl DeviceInner {
    /// Marks `buffers` as holding the failed result of an op that met `err`
    /// (a buffer already marked keeps its first error).
    pub(crate) fn fail<'a>(&self, buffers: impl IntoIterator<Item = &'a wgpu::Buffer>, err: &Error) {
        self.mark(buffers, err, false);
    }

    /// Marks `buffers` as failed because of `cause`, an input's error,
    /// replacing an error of their own (the cause is what to report).
    pub(crate) fn fail_from<'a>(&self, buffers: impl IntoIterator<Item = &'a wgpu::Buffer>, cause: &Error) {
        self.mark(buffers, cause, true);
    }

    fn mark<'a>(&self, buffers: impl IntoIterator<Item = &'a wgpu::Buffer>, err: &Error, replace: bool) {
        let mut errors = self.failures.errors.lock().unwrap_or_else(|p| p.into_inner());
        for b in buffers {
            match errors.get_mut(b) {
                Some(e) if replace => *e = err.clone(),
                Some(_) => {}
                None => {
                    errors.insert(b.clone(), err.clone());
                }
            }
        }
        self.failures.count.store(errors.len(), Ordering::Relaxed);
    }

    /// Is any value failed? (cheap: most of the time none is)
    pub(crate) fn any_failed(&self) -> bool {
        self.failures.count.load(Ordering::Relaxed) > 0
    }

    /// Whether `node` can run: if it reads a failed value, what it writes
    /// fails with that value's error (the cause, even where its own output
    /// could not be allocated either); if it writes one (a piece of a value
    /// already failed), the rest of what it writes fails alike.
    pub(crate) fn runnable(&self, node: &Node) -> bool {
        if !self.any_failed() {
            return true;
        }
        let a = access(self, node);
        if let Some(e) = self.failure_of(&a.reads) {
            self.fail_from(&a.writes, &e);
            return false;
        }
        if let Some(e) = self.failure_of(&a.writes) {
            self.mark(&a.writes, &e, false);
            return false;
        }
        true
    }

    /// The error of the op that should have written `buffer`, if it failed.
    pub(crate) fn failure(&self, buffer: &wgpu::Buffer) -> Option<Error> {
        self.failure_of([buffer])
    }

    /// The first failure among `buffers`.
    pub(crate) fn failure_of<'a>(&self, buffers: impl IntoIterator<Item = &'a wgpu::Buffer>) -> Option<Error> {
        if !self.any_failed() {
            return None;
        }
        let errors = self.failures.errors.lock().unwrap_or_else(|p| p.into_inner());
        buffers.into_iter().find_map(|b| errors.get(b).cloned())
    }

    /// `buffer` goes back to the pool: whatever it held is gone.
    pub(crate) fn forget_failure(&self, buffer: &wgpu::Buffer) {
        if self.failures.count.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut errors = self.failures.errors.lock().unwrap_or_else(|p| p.into_inner());
        errors.remove(buffer);
        self.failures.count.store(errors.len(), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::super::{DynamicShader, Kernel, pool::BufferClass};
    use crate::{Error, Tensor};

    /// A submission the driver rejects (here a binding smaller than its
    /// kernel declares, which no op of wgrad's records) marks everything it
    /// would have written: its tensors read back the error, never stale
    /// data, and the device goes on working.
    #[test]
    fn a_rejected_submission_fails_what_it_would_have_written() {
        let dev = crate::Device::new().unwrap();
        let x = Tensor::from_slice(&dev, &[1.0f32, 2.0], &[2]);
        x.to_vec::<f32>().unwrap(); // (uploaded by a submission of its own)
        let y = &x * 2.0;
        let wgsl = "@group(0) @binding(1) var<storage, read_write> out: array<f32, 1000>;
            @compute @workgroup_size(1) fn main() { out[999] = 1.0; }";
        let kernel = Kernel::dynamic(DynamicShader::new("too big a binding", wgsl, false).unwrap(), "main");
        let out = dev.inner.alloc(BufferClass::Storage, 4);
        dev.inner.record_numbered(&kernel, &[(1, &out)], &[], [1, 1, 1]);
        assert!(matches!(y.to_vec::<f32>(), Err(Error::Gpu(_))));
        assert!(matches!(y.to_vec::<f32>(), Err(Error::Gpu(_))), "y is not read stale");
        assert!(dev.inner.failure(out.buffer()).is_some());
        assert_eq!((&x * 3.0).to_vec::<f32>().unwrap(), vec![3.0, 6.0]);
    }
}
