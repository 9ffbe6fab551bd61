//! A traced program, and its replay: the inputs copied into its slots, its
//! commands encoded after any pending work, the new state written back —
//! one submission.

use std::sync::{Arc, Mutex};

use super::optimizer::WriteBack;
use crate::autograd::Params;
use crate::error::Result;
use crate::runtime::{Arena, Device, Prepared, Program as RecordedProgram, encode};
use crate::tensor::Tensor;

/// Memory of a compiled step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryPlan {
    /// Bytes of the buffers the step owns (buffers reused by liveness).
    pub peak_bytes: u64,
    /// Bytes one buffer per allocation would take.
    pub naive_bytes: u64,
    /// Dispatches per replay.
    pub dispatches: usize,
}

pub(super) struct Program<O> {
    pub(super) signature: u64,
    pub(super) device: Device,
    /// The dispatches, their bind groups built, uniforms written.
    pub(super) prepared: Prepared,
    /// The buffers a replay writes (outputs, state, intermediates).
    pub(super) writes: Vec<wgpu::Buffer>,
    /// Where the inputs are copied before each replay.
    pub(super) slots: Vec<Tensor>,
    /// The state's own tensors (updated in place).
    pub(super) state: Vec<Tensor>,
    /// Buffer copies writing the new state back.
    pub(super) write_back: Vec<WriteBack>,
    pub(super) outputs: O,
    pub(super) plan: MemoryPlan,
    /// Some kernel validates indices (its flag is checked at the next read).
    pub(super) checks_indices: bool,
    /// Graphviz DOT of the dispatches and the buffers between them.
    pub(super) dot: String,
    /// (label, WGSL) of every module the program runs.
    pub(super) modules: Vec<(String, String)>,
    /// Keeps the step's buffers alive.
    pub(super) _arena: Arc<Mutex<Arena>>,
}

/// An evicted program gives back the buffers it took from the device's
/// pool (its input copies, its uniforms) rather than leaving them there for
/// shapes that may not come again; its own buffers (the arena) go with it.
impl<O> Drop for Program<O> {
    fn drop(&mut self) {
        for t in &self.slots {
            t.storage().discard();
        }
        if let Some(u) = &self.prepared.uniforms {
            u.discard();
        }
    }
}

/// Do `a` and `b` view the same elements of the same buffer?
pub(super) fn same_place(a: &Tensor, b: &Tensor) -> bool {
    Arc::ptr_eq(a.storage(), b.storage()) && a.layout() == b.layout()
}

impl<O: Params> Program<O> {
    pub(super) fn replay<S: Params, I: Params>(&self, state: &mut S, inputs: &I) -> Result<()> {
        let inner = &self.device.inner;
        // The state must still be the program's own tensors; one the caller
        // replaced (e.g. by loading a checkpoint) is copied in.
        let mut replaced: Vec<(Tensor, usize)> = Vec::new();
        let mut k = 0;
        state.visit(&mut |t| {
            if !same_place(t, &self.state[k]) {
                replaced.push((t.detach().contiguous(), k));
            }
            k += 1;
        });
        let mut given: Vec<Tensor> = Vec::new();
        let mut dense = true;
        inputs.visit(&mut |t| dense &= t.is_contiguous());
        if !dense {
            inputs.visit(&mut |t| given.push(t.contiguous()));
        }
        // an input (or a new state) that failed: the step cannot run, its
        // outputs hold the error and the state keeps its values
        let failed = || {
            let mut read: Vec<wgpu::Buffer> = replaced.iter().map(|(t, _)| t.storage().buffer().clone()).collect();
            inputs.visit(&mut |t| read.push(t.storage().buffer().clone()));
            inner.failure_of(&read)
        };
        if let Some(e) = inner.any_failed().then(failed).flatten() {
            let mut outputs = Vec::new();
            self.outputs.visit(&mut |t| outputs.push(t.storage().buffer().clone()));
            inner.fail(&outputs, &e);
            return Err(e);
        }
        let _turn = inner.gl_turn();
        if let Some(u) = &self.prepared.uniforms {
            for &offset in &self.prepared.random {
                let (seed, pos) = inner.next_rng();
                let words = [seed as u32, (seed >> 32) as u32, pos as u32, (pos >> 32) as u32];
                inner.queue.write_buffer(u.buffer(), offset + 4, bytemuck::cast_slice(&words));
            }
        }
        let mut program = |enc: &mut wgpu::CommandEncoder| -> u64 {
            for (t, k) in &replaced {
                let s = &self.state[*k];
                let size = (s.numel() * 4) as u64;
                enc.copy_buffer_to_buffer(
                    t.storage().buffer(),
                    (t.layout().offset * 4) as u64,
                    s.storage().buffer(),
                    0,
                    size,
                );
            }
            let mut copy_input = |i: usize, t: &Tensor| {
                let size = (t.numel() * 4) as u64;
                if size > 0 {
                    let src = (t.layout().offset * 4) as u64;
                    enc.copy_buffer_to_buffer(t.storage().buffer(), src, self.slots[i].storage().buffer(), 0, size);
                }
            };
            if dense {
                let mut i = 0;
                inputs.visit(&mut |t| {
                    copy_input(i, t);
                    i += 1;
                });
            } else {
                for (i, t) in given.iter().enumerate() {
                    copy_input(i, t);
                }
            }
            let dispatches = encode(enc, &self.prepared.commands, None);
            for w in &self.write_back {
                enc.copy_buffer_to_buffer(&w.from, w.from_offset, &w.to, w.to_offset, w.bytes);
            }
            dispatches
        };
        inner.flush_with(&[], Some(RecordedProgram { encode: &mut program, writes: &self.writes }))?;
        if self.checks_indices {
            inner.indices_ran();
        }
        if !replaced.is_empty() {
            *state = state.rebuild(&mut self.state.iter().cloned());
        }
        Ok(())
    }
}
