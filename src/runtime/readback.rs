//! Waiting for the GPU, and reading buffers back through a staging buffer.
//!
//! Without a time limit a wait blocks in the driver until the submission
//! is done. With one (`Device::set_timeout`), a read first waits for the
//! work submitted before it — a driver may block in the next submission
//! until that is done (lavapipe does), and the queue runs it first anyway
//! — then submits and waits for its own, each wait in slices against one
//! deadline; past it the read is `Err(Timeout)`, its pending work stays
//! pending, and the device stays usable. On wgpu's GL backend waits are
//! always taken in slices, so that the GL context is not held by one
//! thread for the whole wait (see `DeviceInner::gl_turn`).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::DeviceInner;
use super::capture::refuse_in_capture;
use super::graph::CopyOp;
use super::pool::{BufferClass, Storage};
use crate::error::{Error, Result};

/// The longest single wait in the driver when waits are taken in slices.
#[cfg(not(target_arch = "wasm32"))]
const SLICE: Duration = Duration::from_millis(5);

/// When a wait must end, if it must.
#[cfg(not(target_arch = "wasm32"))]
type Deadline = Option<(std::time::Instant, Duration)>;
#[cfg(target_arch = "wasm32")]
type Deadline = Option<((), Duration)>;

impl DeviceInner {
    /// The deadline of a read or sync starting now.
    fn deadline(&self) -> Deadline {
        let timeout = *self.timeout.lock().unwrap_or_else(|p| p.into_inner());
        #[cfg(not(target_arch = "wasm32"))]
        return timeout.map(|t| (std::time::Instant::now() + t, t));
        #[cfg(target_arch = "wasm32")]
        return timeout.map(|t| ((), t));
    }

    /// Waits until submission `index` (or all work) has finished, or the
    /// deadline has passed.
    #[cfg(not(target_arch = "wasm32"))]
    async fn wait(&self, index: Option<wgpu::SubmissionIndex>, deadline: Deadline) -> Result<()> {
        let sliced = deadline.is_some() || self.gl_turns.is_some();
        loop {
            let timeout = match deadline {
                Some((end, _)) => Some(end.saturating_duration_since(std::time::Instant::now()).min(SLICE)),
                None if sliced => Some(SLICE),
                None => None,
            };
            let polled = {
                let _turn = self.gl_turn();
                self.device.poll(wgpu::PollType::Wait { submission_index: index.clone(), timeout })
            };
            match polled {
                Ok(_) => return self.check_error(),
                Err(wgpu::PollError::Timeout) => match deadline {
                    Some((end, limit)) if std::time::Instant::now() >= end => {
                        self.check_error()?;
                        return Err(Error::Timeout(limit));
                    }
                    _ => std::thread::yield_now(),
                },
                Err(other) => {
                    // a failed submission: if the device was lost, say so
                    let _turn = self.gl_turn();
                    let _ = self.device.poll(wgpu::PollType::Poll);
                    drop(_turn);
                    self.check_error()?;
                    return Err(Error::Gpu(other.to_string()));
                }
            }
        }
    }

    /// In the browser the event loop runs callbacks; await the queue.
    #[cfg(target_arch = "wasm32")]
    async fn wait(&self, _index: Option<wgpu::SubmissionIndex>, _deadline: Deadline) -> Result<()> {
        let (tx, rx) = futures::channel::oneshot::channel();
        self.queue.on_submitted_work_done(move || {
            let _ = tx.send(());
        });
        rx.await.map_err(|_| Error::DeviceLost("the queue was dropped".into()))?;
        self.check_error()
    }

    /// With a time limit, waits for the work already submitted before
    /// submitting more (see the module documentation).
    async fn wait_for_earlier(&self, deadline: Deadline) -> Result<()> {
        if deadline.is_none() {
            return Ok(());
        }
        let last = self.last_submission.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match last {
            Some(index) => self.wait(Some(index), deadline).await,
            None => Ok(()),
        }
    }

    pub(crate) async fn submit_and_wait(self: &Arc<Self>) -> Result<()> {
        refuse_in_capture(self, "sync");
        let deadline = self.deadline();
        self.wait_for_earlier(deadline).await?;
        let index = self.flush(&[])?;
        self.wait(index, deadline).await?;
        self.take_check_error().await
    }

    /// Flushes pending work, then copies `size` bytes of `src` from `offset`
    /// to the host: one submit in all.
    pub(crate) async fn read(self: &Arc<Self>, src: &Arc<Storage>, offset: u64, size: u64) -> Result<Vec<u8>> {
        refuse_in_capture(self, "a read-back (to_vec, item)");
        if let Some(e) = self.failure(src.buffer()) {
            return Err(e);
        }
        let data = self.read_raw(src, offset, size).await?;
        self.take_check_error().await?;
        Ok(data)
    }

    /// [`read`](Self::read) without the debug check.
    pub(crate) async fn read_raw(self: &Arc<Self>, src: &Arc<Storage>, offset: u64, size: u64) -> Result<Vec<u8>> {
        let deadline = self.deadline();
        self.wait_for_earlier(deadline).await?;
        let staging = self.alloc(BufferClass::Staging, size);
        let index = self.flush(&[CopyOp { src: src.clone(), src_offset: offset, dst: staging.clone(), size }])?;
        self.stats.readbacks.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = futures::channel::oneshot::channel();
        {
            let _turn = self.gl_turn();
            staging.buffer().slice(..size).map_async(wgpu::MapMode::Read, move |r| {
                let _ = tx.send(r);
            });
        }
        if let Err(e) = self.wait(index, deadline).await {
            // the staging buffer may still be waiting for the GPU (after a
            // timeout): it is not reused
            staging.discard();
            return Err(e);
        }
        rx.await
            .map_err(|_| Error::DeviceLost("the read-back was cancelled".into()))?
            .map_err(|e| Error::Gpu(format!("mapping a read-back buffer failed: {e}")))?;
        let _turn = self.gl_turn();
        let data = staging
            .buffer()
            .slice(..size)
            .get_mapped_range()
            .map_err(|e| Error::Gpu(format!("reading a mapped buffer failed: {e}")))?
            .to_vec();
        staging.buffer().unmap();
        Ok(data)
    }
}
