//! Compiled steps: trace a step function once per input signature, then
//! replay its recorded dispatches with one submission per step.
//!
//! torch-autograd's "optimize" mode cached a generated graph per input shape;
//! wgrad records the step's GPU work instead. The first call for a signature
//! (shapes and dtypes of the state and the inputs) runs the function with
//! recording redirected: every dispatch goes into the step's program, every
//! buffer comes from the step's arena (a buffer freed within the step is
//! reused by the step's later ops: buffers are assigned by liveness). Then
//! pipelines, bind groups and all uniforms are built once (after fusion:
//! elementwise chains into generated kernels or matmul epilogues, optimizer
//! updates in place; see `fusion.rs` and `optimizer.rs`). A replay copies
//! the inputs into the step's input buffers, encodes the recorded
//! dispatches (the runtime's one encoding routine, as a flush does), and
//! copies the updated state that was not written in place back into the
//! state's own buffers — one submission, no buffer, bind group, pipeline or
//! tensor created. Reading a value back inside the step (`item`, `to_vec`,
//! `sync`) panics: a branch on it would be frozen into the trace.
//!
//! - `program.rs`: a traced program, and its replay;
//! - `fusion.rs`: elementwise chains into generated kernels, epilogues and
//!   prologues; `rewrite.rs`: the buffer moves that fusion needs;
//! - `optimizer.rs`: optimizer updates in place;
//! - `diagnostics.rs`: each kernel's time, and the graph of a program.

mod diagnostics;
mod fusion;
mod optimizer;
mod program;
mod rewrite;

pub use program::MemoryPlan;

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::marker::PhantomData;

use crate::autograd::Params;
use crate::error::Result;
use crate::runtime::{Device, Node, Shader, Source, access, begin_capture, end_capture};
use crate::tensor::Tensor;
use optimizer::WriteBack;
use program::{Program, same_place};

/// Programs kept per compiled function (least recently used dropped first).
const CACHE: usize = 8;

/// Compiles a step function `f(&mut state, &inputs) -> outputs`, typically
/// `grad` and an optimizer update. See the module documentation of
/// [`Compiled`] for what a step may do.
///
/// ```
/// use wgrad::{compile, grad, optim::Optimizer, Device, Tensor};
/// # let dev = Device::new()?;
/// let f = |w: &Tensor, x: &Tensor| (x.matmul(w) - 1.0).square().mean_all();
/// let mut w = Tensor::zeros(&dev, &[3, 1]);
/// let mut opt = Optimizer::sgd(0.1);
/// opt.init(&w);
/// let mut step = compile(move |(w, opt): &mut (Tensor, Optimizer), x: &Tensor| {
///     let (g, loss, ()) = grad(f)(w, x);
///     *w = opt.step(w, &g);
///     loss
/// });
/// let mut state = (w, opt);
/// let x = Tensor::ones(&dev, &[4, 3]);
/// for _ in 0..50 {
///     step.run(&mut state, &x)?; // one submission per step
/// }
/// assert!(step.run(&mut state, &x)?.item::<f32>()? < 1e-4);
/// # Ok::<(), wgrad::Error>(())
/// ```
pub fn compile<S: Params, I: Params, O: Params, F: FnMut(&mut S, &I) -> O>(f: F) -> Compiled<S, I, O, F> {
    Compiled { f, programs: Vec::new(), _types: PhantomData }
}

/// A compiled step function; [`Compiled::run`] traces or replays it.
///
/// What a step may do: any tensor ops, `grad`, optimizer steps, random
/// numbers (renewed on every replay), Rust control flow that depends only
/// on shapes. What it may not: read tensor values back (panics), or depend
/// on host values that change between calls (they are frozen at the trace,
/// like any host constant). State tensors are updated in place: handles to
/// them see the new values. The outputs are overwritten by the next run.
pub struct Compiled<S, I, O, F> {
    f: F,
    programs: Vec<Program<O>>,
    _types: PhantomData<fn(&mut S, &I)>,
}

/// A hash of the shapes and dtypes of the state and inputs.
fn signature<S: Params, I: Params>(state: &S, inputs: &I) -> u64 {
    let mut h = DefaultHasher::new();
    let mut count = 0usize;
    state.visit(&mut |t| {
        t.shape().hash(&mut h);
        t.dtype().hash(&mut h);
        count += 1;
    });
    count.hash(&mut h);
    inputs.visit(&mut |t| {
        t.shape().hash(&mut h);
        t.dtype().hash(&mut h);
    });
    h.finish()
}

/// Ends the capture if the step function panics, so the thread stays usable.
struct CaptureGuard(bool);

impl Drop for CaptureGuard {
    fn drop(&mut self) {
        if self.0 {
            end_capture();
        }
    }
}

impl<S: Params, I: Params, O: Params, F: FnMut(&mut S, &I) -> O> Compiled<S, I, O, F> {
    /// Runs one step: traces `f` on the first call for these shapes, replays
    /// the recorded program afterwards. Returns the step's outputs (valid
    /// until the next run). Nothing is read back.
    #[track_caller]
    pub fn run(&mut self, state: &mut S, inputs: &I) -> Result<&O> {
        let mut first: Option<Device> = None;
        let mut apart = false;
        let mut check = |t: &Tensor| match &first {
            None => first = Some(t.device().clone()),
            Some(d) => apart |= !d.same(t.device()),
        };
        state.visit(&mut check);
        inputs.visit(&mut check);
        if apart {
            panic!(
                "wgrad: compile: the step's state and inputs live on different devices (an input from another device?)"
            );
        }
        let sig = signature(state, inputs);
        match self.programs.iter().position(|p| p.signature == sig) {
            Some(i) => self.programs[..=i].rotate_right(1),
            None => {
                let program = self.trace(state, inputs, sig)?;
                self.programs.truncate(CACHE - 1);
                self.programs.insert(0, program);
            }
        }
        let p = &self.programs[0];
        p.replay(state, inputs)?;
        Ok(&p.outputs)
    }

    /// Runs the step function eagerly — op by op, without tracing or
    /// replay — for comparison and debugging. Same results as [`run`](Self::run).
    pub fn run_eager(&mut self, state: &mut S, inputs: &I) -> O {
        (self.f)(state, inputs)
    }

    /// The memory plan of the most recently run program.
    pub fn memory(&self) -> Option<MemoryPlan> {
        self.programs.first().map(|p| p.plan)
    }

    /// Runs one step like [`run`](Self::run) (tracing first if needed), then
    /// replays its dispatches once more (inputs and state untouched) with
    /// a GPU timestamp around every dispatch, and returns each kernel's time
    /// in microseconds, in order. Needs an adapter with timestamp queries.
    pub async fn profile_async(&mut self, state: &mut S, inputs: &I) -> Result<Vec<(String, f64)>> {
        self.run(state, inputs)?;
        self.programs[0].profile().await
    }

    /// Blocking form of [`Compiled::profile_async`] (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn profile(&mut self, state: &mut S, inputs: &I) -> Result<Vec<(String, f64)>> {
        pollster::block_on(self.profile_async(state, inputs))
    }

    /// Graphviz DOT of the most recently run program: its dispatches, with
    /// an edge wherever one reads a buffer another (or an input, or the
    /// state) wrote.
    pub fn dot(&self) -> Option<&str> {
        self.programs.first().map(|p| p.dot.as_str())
    }

    /// (module, WGSL source) of every shader module the most recently run
    /// program uses, including the kernels generated for it (fused
    /// elementwise chains, adapter-specific matmuls).
    pub fn wgsl(&self) -> Option<&[(String, String)]> {
        self.programs.first().map(|p| p.modules.as_slice())
    }

    /// Programs traced and cached (one per signature, at most 8).
    pub fn programs(&self) -> usize {
        self.programs.len()
    }

    #[track_caller]
    fn trace(&mut self, state: &mut S, inputs: &I, signature: u64) -> Result<Program<O>> {
        let before: Vec<Tensor> = state.tensors().into_iter().map(Tensor::detach).collect();
        let given: Vec<Tensor> = inputs.tensors().into_iter().cloned().collect();
        let Some(device) = before.iter().chain(&given).next().map(|t| t.device().clone()) else {
            panic!("wgrad: compile: the step's state and inputs hold no tensors");
        };
        for t in &before {
            if !t.is_contiguous() {
                panic!("wgrad: compile: state tensors must be contiguous, got a view of shape {:?}", t.shape());
            }
        }
        let slots: Vec<Tensor> =
            given.iter().map(|t| Tensor::empty(&device, "compiled input", t.shape(), t.dtype())).collect();
        let slot_inputs = inputs.rebuild(&mut slots.iter().cloned());

        // Random numbers drawn while tracing are drawn again by every replay
        // (including the first): tracing must not move the generator.
        let rng = device.inner.rng_state();
        begin_capture(&device.inner);
        let mut guard = CaptureGuard(true);
        let outputs = (self.f)(state, &slot_inputs);
        let after: Vec<Tensor> = state.tensors().into_iter().cloned().collect();
        if after.len() != before.len() {
            panic!(
                "wgrad: compile: the step changed its state from {} to {} tensors (create optimizer state \
                 before compiling: `opt.init(&params)`)",
                before.len(),
                after.len()
            );
        }
        let mut changed = Vec::new();
        for (i, (b, a)) in before.iter().zip(&after).enumerate() {
            if a.shape() != b.shape() || a.dtype() != b.dtype() {
                panic!(
                    "wgrad: compile: state tensor {i} changed from {} {:?} to {} {:?}",
                    b.dtype(),
                    b.shape(),
                    a.dtype(),
                    a.shape()
                );
            }
            if !same_place(a, b) {
                changed.push((i, a.detach().contiguous()));
            }
        }
        guard.0 = false;
        let capture = end_capture().expect("the capture this step began");
        device.inner.set_rng_state(rng);
        if let Some(e) = capture.error {
            return Err(e);
        }
        // Buffers read after the step: its outputs and the new state.
        let mut live_out: Vec<wgpu::Buffer> = Vec::new();
        outputs.visit(&mut |t| live_out.push(t.storage().buffer().clone()));
        live_out.extend(changed.iter().map(|(_, a)| a.storage().buffer().clone()));
        let mut write_back: Vec<WriteBack> = changed
            .iter()
            .map(|(i, a)| {
                let b = &before[*i];
                WriteBack {
                    from: a.storage().buffer().clone(),
                    from_offset: (a.layout().offset * 4) as u64,
                    to: b.storage().buffer().clone(),
                    to_offset: (b.layout().offset * 4) as u64,
                    bytes: (b.numel() * 4) as u64,
                }
            })
            .collect();
        let mut pinned = live_out.clone();
        pinned.extend(before.iter().chain(&slots).map(|t| t.storage().buffer().clone()));
        let mut fresh = |size: u64| capture.arena.lock().unwrap_or_else(|p| p.into_inner()).fresh(&device.inner, size);
        let nodes = fusion::fuse(&device.inner, capture.nodes, &live_out, &pinned, &mut fresh);
        let returned = &live_out[..live_out.len() - changed.len()];
        let nodes = optimizer::optimizers_in_place(&device.inner, nodes, &mut write_back, returned);
        let dot = diagnostics::graph_dot(&device, &nodes, &slots, &before, &outputs);
        let checks_indices = nodes
            .iter()
            .any(|n| matches!(n, Node::Dispatch { kernel, .. } if kernel.source == Source::Builtin(Shader::Index)));
        let mut modules: Vec<(String, String)> = Vec::new();
        let mut seen: Vec<Source> = Vec::new();
        for n in &nodes {
            if let Node::Dispatch { kernel, .. } = n {
                if !seen.contains(&kernel.source) {
                    seen.push(kernel.source.clone());
                    modules.push((kernel.source.label().to_string(), kernel.source.wgsl().to_string()));
                }
            }
        }
        *state = state.rebuild(&mut before.iter().cloned());

        let prepared = device.inner.prepare(&nodes);
        let dispatches = prepared.dispatches();
        // what a replay writes: if its submission fails, these hold the error
        let mut writes: Vec<wgpu::Buffer> = write_back.iter().map(|w| w.to.clone()).collect();
        for b in nodes.iter().flat_map(|n| access(&device.inner, n).writes) {
            if !writes.contains(&b) {
                writes.push(b);
            }
        }
        let arena = capture.arena;
        let plan = {
            let a = arena.lock().unwrap_or_else(|p| p.into_inner());
            MemoryPlan { peak_bytes: a.pool.bytes_held, naive_bytes: a.requested, dispatches }
        };
        Ok(Program {
            signature,
            device,
            prepared,
            writes,
            slots,
            state: before,
            write_back,
            outputs,
            plan,
            checks_indices,
            dot,
            modules,
            _arena: arena,
        })
    }
}
