//! How the processes of a data-parallel run exchange values.

use crate::error::Result;

/// How processes exchange values: an all-reduce (sum) and a broadcast of
/// f32 buffers, the same on every process.
pub trait Collective {
    /// This process's rank, from 0.
    fn rank(&self) -> usize;
    /// The number of processes.
    fn size(&self) -> usize;
    /// Replaces `data` on every process by its elementwise sum over all
    /// processes (the same bits everywhere).
    fn all_reduce_sum(&mut self, data: &mut [f32]) -> Result<()>;
    /// Replaces `data` on every process by rank 0's.
    fn broadcast(&mut self, data: &mut [f32]) -> Result<()>;
}

/// The collective of a single process: nothing to exchange.
#[derive(Clone, Copy, Debug, Default)]
pub struct SingleProcess;

impl Collective for SingleProcess {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn all_reduce_sum(&mut self, _: &mut [f32]) -> Result<()> {
        Ok(())
    }
    fn broadcast(&mut self, _: &mut [f32]) -> Result<()> {
        Ok(())
    }
}
