//! Data parallelism: N replicas of a model, each given its own shard of
//! every batch, whose gradients are averaged before the update so that all
//! of them hold the same parameters after every step.
//!
//! The replicas of one process are [`Device`]s — every adapter of the
//! machine, or one adapter opened several times. Processes (on one host or
//! many) join through a [`Collective`]: `Mpi` with the feature `mpi`.
//! A step is written as without data parallelism — `grad` and an optimizer,
//! eager or compiled — split where the gradients are known:
//!
//! ```
//! use wgrad::{grad, optim::Optimizer, parallel::DataParallel, Device, Tensor};
//! let mut dp = DataParallel::new(vec![Device::new()?, Device::new()?]);
//! let w = Tensor::from_slice(&Device::new()?, &[1.0f32, -1.0], &[2]);
//! let mut ws = dp.replicate(&w)?; // the same values on every device
//! let mut opts: Vec<Optimizer> = (0..2).map(|_| Optimizer::sgd(0.1)).collect();
//! let xs = [0.5f32, 1.0, 1.5, 2.0]; // the global batch: 2 examples of 2 features
//! let loss = |w: &Tensor, x: &Tensor| x.matmul(&w.reshape(&[2, 1])).square().mean_all();
//! let grads: Vec<Tensor> = (0..2)
//!     .map(|r| {
//!         let shard = dp.shard(r, 2); // examples of replica r
//!         let x = Tensor::from_slice(&dp.devices()[r], &xs[shard.start * 2..shard.end * 2], &[shard.len(), 2]);
//!         grad(loss)(&ws[r], &x).0
//!     })
//!     .collect();
//! let mean = dp.all_reduce(&grads)?; // averaged, on every device
//! for r in 0..2 {
//!     ws[r] = opts[r].step(&ws[r], &mean[r]);
//! }
//! assert_eq!(ws[0].to_vec::<f32>()?, ws[1].to_vec::<f32>()?);
//! # Ok::<(), wgrad::Error>(())
//! ```
//!
//! **The all-reduce.** The values of every replica are packed into a few
//! flat buckets ([`Packing`]), each bucket read back once, summed over the
//! process's replicas (in replica order), summed over processes by the
//! collective, divided by the number of replicas and uploaded once to every
//! device, where the replicas' tensors are views of it.
//!
//! **Determinism.** The mean over N replicas of their shards' mean
//! gradients equals the gradient of the global batch's mean loss; only the
//! order of summation changes. A sum of n f32 terms computed in any order is
//! within γₙ·Σ|terms| of the exact sum (γₙ = n·u/(1 − n·u), u = 2⁻²⁴), so the
//! N-replica gradient and the single-replica one differ by at most
//! 2·γ_{B+k}·Σᵢ|gᵢ| for a global batch of B examples with per-example
//! gradients gᵢ (k: the roundings of the per-example terms themselves).
//! For a given layout of replicas the order is fixed (wgrad's kernels sum in
//! a fixed order too): the same bits run to run, and for two replicas the
//! same bits in one process as in two, since a + b = b + a. (Several devices
//! in each of several processes sum locally first, ((r₀ + r₁) + (r₂ + r₃)),
//! another order than four devices in one process.)

use std::ops::Range;
use std::time::{Duration, Instant};

use crate::autograd::Params;
use crate::error::Result;
use crate::pack::Packing;
use crate::runtime::Device;
use crate::tensor::Tensor;

mod collective;
#[cfg(feature = "mpi")]
mod mpi;

pub use collective::{Collective, SingleProcess};
#[cfg(feature = "mpi")]
pub use mpi::Mpi;

/// Where the all-reduces' time went, summed over the steps (see
/// [`DataParallel::stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Stats {
    /// All-reduces done.
    pub steps: u64,
    /// Seconds spent packing and reading back (this includes waiting for
    /// the GPU to finish the work recorded before: the step's compute).
    pub read_s: f64,
    /// Seconds spent summing over the local replicas and in the collective.
    pub reduce_s: f64,
    /// Seconds spent uploading the means.
    pub write_s: f64,
    /// Bytes of values per replica and step (what a ring all-reduce moves
    /// 2·(N−1)/N of through each process).
    pub bytes: u64,
}

/// N replicas over this process's devices and, through a [`Collective`],
/// other processes' (see the [module documentation](self)).
pub struct DataParallel {
    devices: Vec<Device>,
    collective: Box<dyn Collective>,
    bucket_elements: usize,
    packing: Option<Packing>,
    stats: Stats,
}

impl std::fmt::Debug for DataParallel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DataParallel({} devices, rank {} of {})", self.devices.len(), self.rank(), self.collective.size())
    }
}

impl DataParallel {
    /// One replica per device, in this process only.
    #[track_caller]
    pub fn new(devices: Vec<Device>) -> DataParallel {
        DataParallel::with_collective(devices, SingleProcess)
    }

    /// One replica per device in this process, joined to the other
    /// processes' through `collective`.
    #[track_caller]
    pub fn with_collective(devices: Vec<Device>, collective: impl Collective + 'static) -> DataParallel {
        if devices.is_empty() {
            panic!("wgrad: DataParallel: needs at least one device");
        }
        // 25 MB buckets, as PyTorch's DistributedDataParallel
        DataParallel {
            devices,
            collective: Box::new(collective),
            bucket_elements: 25 << 18,
            packing: None,
            stats: Stats::default(),
        }
    }

    /// Buckets of at most `elements` f32 values (default 25 MB).
    pub fn bucket_elements(mut self, elements: usize) -> DataParallel {
        self.bucket_elements = elements.max(1);
        self.packing = None;
        self
    }

    /// This process's devices, one per local replica.
    pub fn devices(&self) -> &[Device] {
        &self.devices
    }

    /// The number of replicas over all processes.
    pub fn replicas(&self) -> usize {
        self.devices.len() * self.collective.size()
    }

    /// This process's rank (0 in a single process).
    pub fn rank(&self) -> usize {
        self.collective.rank()
    }

    /// Whether this is the process that prints and writes checkpoints (rank 0).
    pub fn is_root(&self) -> bool {
        self.rank() == 0
    }

    /// The examples of a global batch of `batch` that local replica `r`
    /// takes: the `(rank·devices + r)`-th of [`replicas`](Self::replicas)
    /// equal consecutive shards.
    #[track_caller]
    pub fn shard(&self, r: usize, batch: usize) -> Range<usize> {
        let n = self.replicas();
        if batch % n != 0 || r >= self.devices.len() {
            panic!(
                "wgrad: DataParallel::shard: a batch of {batch} must split evenly over {n} replicas \
                 (replica {r} of {} in this process)",
                self.devices.len()
            );
        }
        let len = batch / n;
        let start = (self.rank() * self.devices.len() + r) * len;
        start..start + len
    }

    /// `params` copied onto every local device, with rank 0's values on
    /// every process (one read-back, one broadcast, one upload per device).
    pub fn replicate<P: Params>(&mut self, params: &P) -> Result<Vec<P>> {
        let tensors = params.tensors();
        if tensors.is_empty() {
            return Ok(self.devices.iter().map(|_| params.map(|t| t.clone())).collect());
        }
        let packing = Packing::of(&tensors, usize::MAX);
        let mut host: Vec<f32> = packing.pack(&tensors)[0].to_vec()?;
        self.collective.broadcast(&mut host)?;
        Ok(self
            .devices
            .iter()
            .map(|d| params.unflatten(packing.unpack(&[Tensor::from_slice(d, &host, &[host.len()])])))
            .collect())
    }

    /// The mean over all replicas of `values` (one per local replica, each
    /// on its replica's device: gradients, and the loss if wanted), on every
    /// local device. Fails if a read-back fails or the collective does (a
    /// process died or stopped answering); the replicas are then out of
    /// step.
    #[track_caller]
    pub fn all_reduce<P: Params>(&mut self, values: &[P]) -> Result<Vec<P>> {
        if values.len() != self.devices.len() {
            panic!("wgrad: DataParallel::all_reduce: {} values for {} devices", values.len(), self.devices.len());
        }
        let tensors: Vec<Vec<&Tensor>> = values.iter().map(|v| v.tensors()).collect();
        for (r, (ts, dev)) in tensors.iter().zip(&self.devices).enumerate() {
            if let Some(t) = ts.iter().find(|t| !t.device().same(dev)) {
                panic!("wgrad: DataParallel::all_reduce: a tensor {:?} of replica {r} is not on its device", t.shape());
            }
        }
        let packing = match self.packing.take() {
            Some(p) if p.shapes().iter().eq(tensors[0].iter().map(|t| t.shape())) => p,
            _ => Packing::of(&tensors[0], self.bucket_elements),
        };
        let start = Instant::now();
        let packed: Vec<Vec<Tensor>> = tensors.iter().map(|ts| packing.pack(ts)).collect();
        // every device starts on its work before the first read-back waits
        // for one of them (the replicas run side by side)
        if self.devices.len() > 1 {
            for d in &self.devices {
                d.inner.flush(&[])?;
            }
        }
        let mut reduce = Duration::ZERO;
        let mut means = Vec::with_capacity(packing.buckets());
        let replicas = self.replicas() as f32;
        for b in 0..packing.buckets() {
            let mut sum: Vec<f32> = packed[0][b].to_vec()?;
            let mut others = Vec::with_capacity(packed.len() - 1);
            for p in &packed[1..] {
                others.push(p[b].to_vec::<f32>()?);
            }
            let t = Instant::now();
            for other in &others {
                sum.iter_mut().zip(other).for_each(|(s, o)| *s += o);
            }
            self.collective.all_reduce_sum(&mut sum)?;
            sum.iter_mut().for_each(|s| *s /= replicas);
            reduce += t.elapsed();
            means.push(sum);
        }
        let t = Instant::now();
        let out = values
            .iter()
            .zip(&self.devices)
            .map(|(v, d)| {
                let buckets: Vec<Tensor> = means.iter().map(|m| Tensor::from_slice(d, m, &[m.len()])).collect();
                v.unflatten(packing.unpack(&buckets))
            })
            .collect();
        let write = t.elapsed();
        let s = &mut self.stats;
        s.steps += 1;
        s.read_s += (start.elapsed() - reduce - write).as_secs_f64();
        s.reduce_s += reduce.as_secs_f64();
        s.write_s += write.as_secs_f64();
        s.bytes = 4 * packing.numel() as u64;
        self.packing = Some(packing);
        Ok(out)
    }

    /// The collective joining this process to the others, for exchanges of
    /// one's own (metrics, a barrier).
    pub fn collective(&mut self) -> &mut dyn Collective {
        self.collective.as_mut()
    }

    /// Where the all-reduces' time went so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }
}
