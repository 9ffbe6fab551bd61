//! Waiting for the GPU, and reading buffers back through a staging buffer.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::DeviceInner;
use super::capture::refuse_in_capture;
use super::graph::CopyOp;
use super::pool::{BufferClass, Storage};
use crate::error::{Error, Result};

impl DeviceInner {
    /// Waits until submission `index` (or all work) has finished.
    #[cfg(not(target_arch = "wasm32"))]
    async fn wait(&self, index: Option<wgpu::SubmissionIndex>) -> Result<()> {
        let timeout = *self.timeout.lock().unwrap_or_else(|p| p.into_inner());
        let polled = self.device.poll(wgpu::PollType::Wait { submission_index: index, timeout });
        if polled.is_err() && !matches!(polled, Err(wgpu::PollError::Timeout)) {
            // a failed submission: if the device was lost, say so
            let _ = self.device.poll(wgpu::PollType::Poll);
        }
        self.check_error()?;
        polled.map_err(|e| match e {
            wgpu::PollError::Timeout => Error::Timeout(timeout.unwrap_or_default()),
            other => Error::Gpu(other.to_string()),
        })?;
        Ok(())
    }

    /// In the browser the event loop runs callbacks; await the queue.
    #[cfg(target_arch = "wasm32")]
    async fn wait(&self, _index: Option<wgpu::SubmissionIndex>) -> Result<()> {
        let (tx, rx) = futures::channel::oneshot::channel();
        self.queue.on_submitted_work_done(move || {
            let _ = tx.send(());
        });
        rx.await.map_err(|_| Error::DeviceLost("the queue was dropped".into()))?;
        self.check_error()
    }

    pub(crate) async fn submit_and_wait(self: &Arc<Self>) -> Result<()> {
        refuse_in_capture(self, "sync");
        let index = self.flush(&[])?;
        self.wait(index).await?;
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
        let staging = self.alloc(BufferClass::Staging, size);
        let index = self.flush(&[CopyOp { src: src.clone(), src_offset: offset, dst: staging.clone(), size }])?;
        self.stats.readbacks.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = futures::channel::oneshot::channel();
        staging.buffer().slice(..size).map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        if let Err(e) = self.wait(index).await {
            // the staging buffer goes back to the pool: cancel its mapping
            // (still waiting after a timeout) so that it can be used again
            if !matches!(e, Error::DeviceLost(_)) {
                staging.buffer().unmap();
            }
            return Err(e);
        }
        rx.await
            .map_err(|_| Error::DeviceLost("the read-back was cancelled".into()))?
            .map_err(|e| Error::Gpu(format!("mapping a read-back buffer failed: {e}")))?;
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
