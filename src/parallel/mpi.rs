//! The [`Collective`] of processes started by `mpirun` (feature `mpi`).

use std::mem::ManuallyDrop;
use std::time::{Duration, Instant};

use mpi::collective::SystemOperation;
use mpi::environment::Universe;
use mpi::request::{Request, Scope, scope};
use mpi::topology::{Communicator, SimpleCommunicator};
use mpi::traits::*;

use super::collective::Collective;
use crate::error::{Error, Result};

/// MPI's world communicator as a [`Collective`]: every process started by
/// `mpirun -np N` is a rank.
///
/// Each exchange is a non-blocking MPI operation polled against a deadline
/// ([`Mpi::timeout`], 5 minutes by default): a rank that died or hangs makes
/// the others fail with [`Error::Collective`] instead of waiting forever.
/// After such an error MPI is left as it is (finalising would wait for the
/// missing rank) and the process should exit.
///
/// ```no_run
/// use wgrad::{parallel::{DataParallel, Mpi}, Device};
/// let mpi = Mpi::init()?;
/// let dp = DataParallel::with_collective(vec![Device::new()?], mpi);
/// if dp.is_root() {
///     println!("{} replicas", dp.replicas());
/// }
/// # Ok::<(), wgrad::Error>(())
/// ```
pub struct Mpi {
    universe: ManuallyDrop<Universe>,
    world: SimpleCommunicator,
    timeout: Duration,
    /// An exchange timed out: its buffers and MPI itself are left alone.
    broken: bool,
}

impl std::fmt::Debug for Mpi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Mpi(rank {} of {})", self.world.rank(), self.world.size())
    }
}

impl Mpi {
    /// Initialises MPI (once per process).
    pub fn init() -> Result<Mpi> {
        let universe = mpi::initialize()
            .ok_or_else(|| Error::Collective("MPI could not be initialised (was it already?)".into()))?;
        let world = universe.world();
        Ok(Mpi { universe: ManuallyDrop::new(universe), world, timeout: Duration::from_secs(300), broken: false })
    }

    /// How long an exchange may wait for the other ranks before failing.
    pub fn timeout(mut self, timeout: Duration) -> Mpi {
        self.timeout = timeout;
        self
    }

    /// The error of an exchange `what` that timed out; MPI is left alone from now on.
    fn timed_out(&mut self, what: &str) -> Error {
        self.broken = true;
        Error::Collective(format!(
            "rank {} of {}: the {what} got no answer from the other ranks within {:?}; a rank died or hangs",
            self.world.rank(),
            self.world.size(),
            self.timeout
        ))
    }

    fn refuse_if_broken(&self) -> Result<()> {
        match self.broken {
            true => Err(Error::Collective("an earlier exchange failed; the ranks are out of step".into())),
            false => Ok(()),
        }
    }
}

/// Polls `request` until it completes (true) or `deadline` passes (false:
/// the request is abandoned, and its buffers must be leaked).
fn completes<'a, D: ?Sized, S: Scope<'a>>(mut request: Request<'a, D, S>, deadline: Instant) -> bool {
    loop {
        match request.test() {
            Ok(_) => return true,
            Err(r) => request = r,
        }
        if Instant::now() >= deadline {
            // SAFETY: the caller leaks the request's buffers and MPI is never
            // finalised after this (`broken`)
            let _ = unsafe { request.into_raw() };
            return false;
        }
        std::thread::sleep(Duration::from_micros(50));
    }
}

impl Collective for Mpi {
    fn rank(&self) -> usize {
        self.world.rank() as usize
    }

    fn size(&self) -> usize {
        self.world.size() as usize
    }

    fn all_reduce_sum(&mut self, data: &mut [f32]) -> Result<()> {
        self.refuse_if_broken()?;
        let send = data.to_vec();
        let mut recv = vec![0.0f32; data.len()];
        let deadline = Instant::now() + self.timeout;
        let done = scope(|s| {
            let request = self.world.immediate_all_reduce_into(s, &send[..], &mut recv[..], SystemOperation::sum());
            completes(request, deadline)
        });
        if !done {
            // MPI may still write into them
            std::mem::forget((send, recv));
            return Err(self.timed_out("all-reduce"));
        }
        data.copy_from_slice(&recv);
        Ok(())
    }

    fn broadcast(&mut self, data: &mut [f32]) -> Result<()> {
        self.refuse_if_broken()?;
        let mut buffer = data.to_vec();
        let deadline = Instant::now() + self.timeout;
        let done = scope(|s| {
            let request = self.world.process_at_rank(0).immediate_broadcast_into(s, &mut buffer[..]);
            completes(request, deadline)
        });
        if !done {
            std::mem::forget(buffer);
            return Err(self.timed_out("broadcast"));
        }
        data.copy_from_slice(&buffer);
        Ok(())
    }
}

impl Drop for Mpi {
    fn drop(&mut self) {
        if !self.broken {
            // SAFETY: dropped once, here
            unsafe { ManuallyDrop::drop(&mut self.universe) }
        }
    }
}
