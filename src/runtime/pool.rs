//! GPU buffers and the size-bucketed pool that owns them.
//!
//! Every tensor's data lives in a [`Storage`]; when its last handle drops
//! (tensors and their views hold one) the buffer goes back to the pool of its
//! device at once, even if pending nodes still read it, to be reused by the
//! next allocation of the same bucket. Reuse needs no fences: all GPU work
//! runs in recording order (dispatches within a submission, submissions on
//! the queue), so the node that next writes the buffer runs after every node
//! recorded before it. Host uploads are recorded as copy nodes for the same
//! reason.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use super::DeviceInner;

/// What a buffer is for; each class is pooled separately.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum BufferClass {
    /// Tensor data: storage, copy source and destination.
    Storage,
    /// Uniform parameters of one flush.
    Uniform,
    /// Read-back staging (MAP_READ).
    Staging,
    /// Host data on its way to a storage buffer.
    Upload,
}

impl BufferClass {
    fn usage(self) -> wgpu::BufferUsages {
        use wgpu::BufferUsages as U;
        match self {
            BufferClass::Storage => U::STORAGE | U::COPY_SRC | U::COPY_DST,
            BufferClass::Uniform => U::UNIFORM | U::COPY_DST,
            BufferClass::Staging => U::MAP_READ | U::COPY_DST,
            BufferClass::Upload => U::COPY_SRC | U::COPY_DST,
        }
    }
}

/// Where a buffer goes back to when its last handle drops.
enum Home {
    /// The device's pool.
    Pool(Weak<DeviceInner>),
    /// The arena of a compiled step: its buffers belong to the step.
    Arena(Arc<Mutex<Arena>>),
}

/// A pooled GPU buffer. Returns itself to its pool on drop.
pub(crate) struct Storage {
    buffer: Option<wgpu::Buffer>,
    pub size: u64,
    class: BufferClass,
    home: Home,
    /// Released to the driver on drop instead of pooled.
    discarded: std::sync::atomic::AtomicBool,
}

impl Storage {
    /// When its last handle drops, the buffer is released to the driver
    /// rather than kept for reuse: its memory is not wanted again (the
    /// inputs of an evicted compiled step), or it must not be reused (a
    /// read-back still waiting for the GPU).
    pub fn discard(&self) {
        self.discarded.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn buffer(&self) -> &wgpu::Buffer {
        self.buffer.as_ref().expect("buffer present until drop")
    }
}

impl Drop for Storage {
    fn drop(&mut self) {
        let Some(buffer) = self.buffer.take() else { return };
        let discarded = self.discarded.load(std::sync::atomic::Ordering::Relaxed);
        match &self.home {
            Home::Pool(dev) => {
                if let Some(dev) = dev.upgrade() {
                    dev.forget_failure(&buffer);
                    if discarded {
                        dev.pool().bytes_held -= self.size;
                    } else {
                        dev.pool().put(self.class, self.size, buffer);
                    }
                }
            }
            Home::Arena(arena) => {
                arena.lock().unwrap_or_else(|p| p.into_inner()).pool.put(self.class, self.size, buffer)
            }
        }
    }
}

/// The buffers of one compiled step. While the step is traced, tensors that
/// die hand their buffers to later ops of the same step, so buffers are
/// assigned by liveness in recording order (a greedy memory plan); after
/// tracing, every buffer the step touched belongs to it for good.
#[derive(Default)]
pub(crate) struct Arena {
    pub pool: BufferPool,
    /// Every buffer the arena created (the step's memory).
    pub buffers: Vec<wgpu::Buffer>,
    /// Σ of all allocation sizes: the memory of one buffer per node.
    pub requested: u64,
}

impl Arena {
    /// One more buffer for the step, outside the liveness plan (fusion
    /// gives a value one where a shared buffer would keep a chain apart).
    pub(crate) fn fresh(&mut self, dev: &DeviceInner, size: u64) -> wgpu::Buffer {
        let b = dev.create_buffer(BufferClass::Storage, size);
        self.buffers.push(b.clone());
        self.pool.bytes_held += size;
        b
    }
}

/// Free buffers by (class, bucket size), with byte counts for the counters.
#[derive(Default)]
pub(crate) struct BufferPool {
    free: HashMap<(BufferClass, u64), Vec<wgpu::Buffer>>,
    /// Bytes of all live buffers, in use or free.
    pub bytes_held: u64,
    /// Bytes of buffers waiting in the pool.
    pub bytes_free: u64,
    /// Buffers created since the device was made.
    pub created: u64,
}

/// Rounds a request up to its bucket: four buckets per power of two (at most
/// 25 % slack), 256 bytes at least, so a loop of same-shaped steps reuses
/// the same buffers.
pub(crate) fn bucket(bytes: u64) -> u64 {
    let bytes = bytes.max(256);
    let pow = 63 - (bytes - 1).leading_zeros() as u64; // 2^pow < bytes <= 2^(pow+1)
    let quarter = (1u64 << pow) / 4;
    bytes.div_ceil(quarter) * quarter
}

impl BufferPool {
    pub fn take(&mut self, class: BufferClass, size: u64) -> Option<wgpu::Buffer> {
        let b = self.free.get_mut(&(class, size))?.pop()?;
        self.bytes_free -= size;
        Some(b)
    }

    pub fn put(&mut self, class: BufferClass, size: u64, buffer: wgpu::Buffer) {
        self.bytes_free += size;
        self.free.entry((class, size)).or_default().push(buffer);
    }

    /// Releases every free buffer (pending nodes that still read one keep
    /// it alive until they have run).
    pub fn trim(&mut self) {
        for (_, buffers) in self.free.drain() {
            for b in buffers {
                self.bytes_held -= b.size();
            }
        }
        self.bytes_free = 0;
    }
}

impl DeviceInner {
    /// A new buffer, never a pooled one: a pooled buffer may still be
    /// written by pending work of the tensor that gave it back, which runs
    /// after a `queue.write_buffer` into it (the flag buffer is written so).
    pub(crate) fn alloc_new(self: &Arc<Self>, class: BufferClass, bytes: u64) -> Arc<Storage> {
        let size = bucket(bytes).min(self.limits.max_buffer_size);
        let buffer = self.create_buffer(class, size);
        self.pool().bytes_held += size;
        Arc::new(Storage {
            buffer: Some(buffer),
            size,
            class,
            home: Home::Pool(Arc::downgrade(self)),
            discarded: Default::default(),
        })
    }

    /// A buffer of at least `bytes` from the pool, or a new one. The caller
    /// has checked `bytes` against the adapter's limits.
    pub(crate) fn alloc(self: &Arc<Self>, class: BufferClass, bytes: u64) -> Arc<Storage> {
        let limit = self.limits.max_buffer_size;
        let size = bucket(bytes).min(limit);
        if let Some(arena) = super::capture::capture_arena(self) {
            let mut a = arena.lock().unwrap_or_else(|p| p.into_inner());
            a.requested += size;
            let buffer = a.pool.take(class, size).unwrap_or_else(|| {
                let b = self.create_buffer(class, size);
                a.buffers.push(b.clone());
                a.pool.bytes_held += size;
                b
            });
            drop(a);
            return Arc::new(Storage {
                buffer: Some(buffer),
                size,
                class,
                home: Home::Arena(arena),
                discarded: Default::default(),
            });
        }
        let reused = self.pool().take(class, size);
        let buffer = reused.unwrap_or_else(|| {
            let b = self.create_buffer(class, size);
            let mut pool = self.pool();
            pool.bytes_held += size;
            b
        });
        Arc::new(Storage {
            buffer: Some(buffer),
            size,
            class,
            home: Home::Pool(Arc::downgrade(self)),
            discarded: Default::default(),
        })
    }

    fn create_buffer(&self, class: BufferClass, size: u64) -> wgpu::Buffer {
        let _turn = self.gl_turn();
        self.pool().created += 1;
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size,
            usage: class.usage(),
            mapped_at_creation: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::bucket;

    #[test]
    fn buckets_bound_slack() {
        assert_eq!(bucket(1), 256);
        assert_eq!(bucket(256), 256);
        assert_eq!(bucket(257), 320);
        assert_eq!(bucket(1000), 1024);
        for b in [300u64, 5000, 123_457, 10_000_000] {
            let s = bucket(b);
            assert!(s >= b && s * 4 <= b * 5 + 4 * 256, "{b} -> {s}");
        }
    }
}
