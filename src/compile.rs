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
//! updates in place; see `fusion.rs`). A replay copies the inputs into the
//! step's input buffers, encodes the recorded dispatches, and copies the
//! updated state that was not written in place back into the state's own
//! buffers — one submission, no buffer, bind group, pipeline or tensor
//! created. Reading a value back inside the step (`item`, `to_vec`, `sync`)
//! panics: a branch on it would be frozen into the trace.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::marker::PhantomData;
use std::num::NonZeroU64;
use std::sync::{Arc, Mutex};

use crate::autograd::Params;
use crate::device::{Device, Pipeline};
use crate::error::Result;
use crate::graph::{Node, begin_capture, end_capture};
use crate::pool::{Arena, Storage};
use crate::tensor::Tensor;

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

enum Step {
    Dispatch { pipeline: Arc<Pipeline>, bind_group: wgpu::BindGroup, groups: [u32; 3] },
    Copy { src: wgpu::Buffer, dst: wgpu::Buffer, size: u64 },
}

struct Program<O> {
    signature: u64,
    device: Device,
    steps: Vec<Step>,
    uniforms: Option<wgpu::Buffer>,
    /// Byte offsets (in `uniforms`) of random-number kernels' parameters.
    random: Vec<u64>,
    /// Where the inputs are copied before each replay.
    slots: Vec<Tensor>,
    /// The state's own tensors (updated in place).
    state: Vec<Tensor>,
    /// Buffer copies writing the new state back.
    write_back: Vec<WriteBack>,
    outputs: O,
    plan: MemoryPlan,
    /// Some kernel validates indices (its flag is checked at the next read).
    checks_indices: bool,
    /// Graphviz DOT of the dispatches and the buffers between them.
    dot: String,
    /// (label, WGSL) of every module the program runs.
    modules: Vec<(String, String)>,
    /// Keeps the step's buffers (and upload staging) alive.
    _arena: Arc<Mutex<Arena>>,
    _staging: Vec<Arc<Storage>>,
}

/// A copy writing a new state tensor back into the state's own buffer:
/// (from, its byte offset, to, its byte offset, bytes).
pub(crate) type WriteBack = (wgpu::Buffer, u64, wgpu::Buffer, u64, u64);

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

fn same_place(a: &Tensor, b: &Tensor) -> bool {
    Arc::ptr_eq(a.storage(), b.storage()) && a.layout() == b.layout()
}

/// Ends the capture if the step function panics, so the thread stays usable.
struct CaptureGuard(bool);

impl Drop for CaptureGuard {
    fn drop(&mut self) {
        if self.0 {
            let _ = std::panic::catch_unwind(end_capture);
        }
    }
}

impl<S: Params, I: Params, O: Params, F: FnMut(&mut S, &I) -> O> Compiled<S, I, O, F> {
    /// Runs one step: traces `f` on the first call for these shapes, replays
    /// the recorded program afterwards. Returns the step's outputs (valid
    /// until the next run). Nothing is read back.
    #[track_caller]
    pub fn run(&mut self, state: &mut S, inputs: &I) -> Result<&O> {
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
        let capture = end_capture();
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
                (
                    a.storage().buffer().clone(),
                    (a.layout().offset * 4) as u64,
                    b.storage().buffer().clone(),
                    (b.layout().offset * 4) as u64,
                    (b.numel() * 4) as u64,
                )
            })
            .collect();
        let mut pinned = live_out.clone();
        pinned.extend(before.iter().chain(&slots).map(|t| t.storage().buffer().clone()));
        let mut fresh = |size: u64| capture.arena.lock().unwrap_or_else(|p| p.into_inner()).fresh(&device.inner, size);
        let nodes = crate::fusion::fuse(&device.inner, capture.nodes, &live_out, &pinned, &mut fresh);
        let returned = &live_out[..live_out.len() - changed.len()];
        let nodes = crate::fusion::optimizers_in_place(&device.inner, nodes, &mut write_back, returned);
        let dot = graph_dot(&device, &nodes, &slots, &before, &outputs);
        let checks_indices = nodes.iter().any(|n| {
            matches!(n, Node::Dispatch { pipeline, .. }
                if pipeline.source == crate::shaders::Source::Builtin(crate::shaders::Shader::Index))
        });
        let mut modules: Vec<(String, String)> = Vec::new();
        let mut seen: Vec<crate::shaders::Source> = Vec::new();
        for n in &nodes {
            if let Node::Dispatch { pipeline, .. } = n {
                if !seen.contains(&pipeline.source) {
                    seen.push(pipeline.source.clone());
                    modules.push((pipeline.source.label().to_string(), pipeline.source.wgsl().to_string()));
                }
            }
        }
        *state = state.rebuild(&mut before.iter().cloned());

        let inner = &device.inner;
        let align = inner.limits.min_uniform_buffer_offset_alignment as usize;
        let mut bytes: Vec<u8> = Vec::new();
        let mut offsets = Vec::with_capacity(nodes.len());
        let mut random = Vec::new();
        for n in &nodes {
            if let Node::Dispatch { uniform, random: r, .. } = n {
                bytes.resize(bytes.len().next_multiple_of(align), 0);
                offsets.push(bytes.len() as u64);
                if *r {
                    random.push(bytes.len() as u64);
                }
                bytes.extend_from_slice(uniform);
            } else {
                offsets.push(0);
            }
        }
        let uniforms = (!bytes.is_empty()).then(|| {
            let b = inner.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("compiled step uniforms"),
                size: bytes.len() as u64,
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            inner.queue.write_buffer(&b, 0, &bytes);
            b
        });
        let mut steps = Vec::with_capacity(nodes.len());
        let mut staging = Vec::new();
        let mut dispatches = 0;
        for (n, &offset) in nodes.into_iter().zip(&offsets) {
            match n {
                Node::Dispatch { pipeline, bindings, uniform, groups, .. } => {
                    let mut entries = Vec::with_capacity(bindings.len() + 1);
                    if let (Some(u), Some(size)) = (&uniforms, NonZeroU64::new(uniform.len() as u64)) {
                        entries.push(wgpu::BindGroupEntry {
                            binding: 0,
                            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                                buffer: u,
                                offset,
                                size: Some(size),
                            }),
                        });
                    }
                    for (binding, buffer) in &bindings {
                        entries.push(wgpu::BindGroupEntry { binding: *binding, resource: buffer.as_entire_binding() });
                    }
                    let bind_group = inner.device.create_bind_group(&wgpu::BindGroupDescriptor {
                        label: None,
                        layout: &pipeline.layout,
                        entries: &entries,
                    });
                    inner.stats.bind_groups.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    steps.push(Step::Dispatch { pipeline, bind_group, groups });
                    dispatches += 1;
                }
                Node::Upload { staging: s, dst, size } => {
                    // host data created inside the step: a constant, copied again on every replay
                    steps.push(Step::Copy { src: s.buffer().clone(), dst, size });
                    staging.push(s);
                }
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
            steps,
            uniforms,
            random,
            slots,
            state: before,
            write_back,
            outputs,
            plan,
            checks_indices,
            dot,
            modules,
            _arena: arena,
            _staging: staging,
        })
    }
}

impl<O> Program<O> {
    fn replay<S: Params, I: Params>(&self, state: &mut S, inputs: &I) -> Result<()> {
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
        if let Some(u) = &self.uniforms {
            for &offset in &self.random {
                let (seed, pos) = inner.next_rng();
                let words = [seed as u32, (seed >> 32) as u32, pos as u32, (pos >> 32) as u32];
                inner.queue.write_buffer(u, offset + 4, bytemuck::cast_slice(&words));
            }
        }
        let mut encode = |enc: &mut wgpu::CommandEncoder| -> u64 {
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
            let mut dispatches = 0;
            let mut i = 0;
            while i < self.steps.len() {
                if let Step::Copy { src, dst, size } = &self.steps[i] {
                    enc.copy_buffer_to_buffer(src, 0, dst, 0, *size);
                    i += 1;
                    continue;
                }
                let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor::default());
                while let Some(Step::Dispatch { pipeline, bind_group, groups }) = self.steps.get(i) {
                    pass.set_pipeline(&pipeline.pipeline);
                    pass.set_bind_group(0, bind_group, &[]);
                    pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
                    dispatches += 1;
                    i += 1;
                }
            }
            for (from, from_offset, to, to_offset, size) in &self.write_back {
                enc.copy_buffer_to_buffer(from, *from_offset, to, *to_offset, *size);
            }
            dispatches
        };
        inner.flush_with(&[], Some(&mut encode))?;
        if self.checks_indices {
            inner.indices_ran();
        }
        if !replaced.is_empty() {
            *state = state.rebuild(&mut self.state.iter().cloned());
        }
        Ok(())
    }
}

impl<O> Program<O> {
    /// Replays the dispatches (state untouched: no inputs, no write-back)
    /// with timestamps, one compute pass per dispatch.
    async fn profile(&self) -> Result<Vec<(String, f64)>> {
        let inner = &self.device.inner;
        if !inner.features.contains(wgpu::Features::TIMESTAMP_QUERY) {
            return Err(crate::Error::Gpu("this adapter offers no timestamp queries".into()));
        }
        let labels: Vec<String> = self
            .steps
            .iter()
            .filter_map(|s| match s {
                Step::Dispatch { pipeline, .. } => Some(pipeline.label.clone()),
                Step::Copy { .. } => None,
            })
            .collect();
        if labels.is_empty() {
            return Ok(Vec::new());
        }
        let n = labels.len() as u32 * 2;
        let queries = inner.device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("profile"),
            ty: wgpu::QueryType::Timestamp,
            count: n,
        });
        let resolve = inner.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("profile resolve"),
            size: n as u64 * 8,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let read = inner.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("profile read"),
            size: n as u64 * 8,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = inner.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("profile") });
        let mut k = 0;
        for s in &self.steps {
            match s {
                Step::Copy { src, dst, size } => enc.copy_buffer_to_buffer(src, 0, dst, 0, *size),
                Step::Dispatch { pipeline, bind_group, groups } => {
                    let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                        label: None,
                        timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                            query_set: &queries,
                            beginning_of_pass_write_index: Some(2 * k),
                            end_of_pass_write_index: Some(2 * k + 1),
                        }),
                    });
                    pass.set_pipeline(&pipeline.pipeline);
                    pass.set_bind_group(0, bind_group, &[]);
                    pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
                    k += 1;
                }
            }
        }
        enc.resolve_query_set(&queries, 0..n, &resolve, 0);
        enc.copy_buffer_to_buffer(&resolve, 0, &read, 0, n as u64 * 8);
        inner.queue.submit([enc.finish()]);
        let (tx, rx) = futures::channel::oneshot::channel();
        read.slice(..).map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        inner.device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| crate::Error::Gpu(e.to_string()))?;
        rx.await
            .map_err(|_| crate::Error::Gpu("profile read-back cancelled".into()))?
            .map_err(|e| crate::Error::Gpu(e.to_string()))?;
        let ticks: Vec<u64> = bytemuck::pod_collect_to_vec(
            &read.slice(..).get_mapped_range().map_err(|e| crate::Error::Gpu(e.to_string()))?,
        );
        let period = inner.queue.get_timestamp_period() as f64;
        Ok(labels
            .into_iter()
            .enumerate()
            .map(|(i, l)| (l, ticks[2 * i + 1].saturating_sub(ticks[2 * i]) as f64 * period / 1000.0))
            .collect())
    }
}

/// Graphviz DOT of a program: inputs, state and outputs as ellipses,
/// dispatches as boxes, edges from the last writer of each buffer read.
fn graph_dot<O: Params>(device: &Device, nodes: &[Node], slots: &[Tensor], state: &[Tensor], outputs: &O) -> String {
    use std::fmt::Write;
    let mut s = String::from("digraph step {\n  node [shape=box, fontname=\"monospace\", fontsize=10];\n");
    let mut writer: Vec<(wgpu::Buffer, String)> = Vec::new();
    let set =
        |w: &mut Vec<(wgpu::Buffer, String)>, b: &wgpu::Buffer, name: String| match w.iter_mut().find(|e| e.0 == *b) {
            Some(e) => e.1 = name,
            None => w.push((b.clone(), name)),
        };
    for (i, t) in slots.iter().enumerate() {
        let _ = writeln!(s, "  in{i} [shape=ellipse, label=\"input {i}\\n{:?}\"];", t.shape());
        set(&mut writer, t.storage().buffer(), format!("in{i}"));
    }
    for (i, t) in state.iter().enumerate() {
        let _ = writeln!(s, "  st{i} [shape=ellipse, label=\"state {i}\\n{:?}\"];", t.shape());
        set(&mut writer, t.storage().buffer(), format!("st{i}"));
    }
    for (k, n) in nodes.iter().enumerate() {
        let label = match n {
            Node::Dispatch { pipeline, .. } => pipeline.label.replace('"', "'"),
            Node::Upload { .. } => "constant upload".to_string(),
        };
        let _ = writeln!(s, "  n{k} [label=\"{label}\"];");
        let (reads, writes) = crate::fusion::access(&device.inner, n);
        let mut from: Vec<&str> = Vec::new();
        for b in &reads {
            if let Some(e) = writer.iter().find(|e| e.0 == *b) {
                if !from.contains(&e.1.as_str()) {
                    let _ = writeln!(s, "  {} -> n{k};", e.1);
                    from.push(&e.1);
                }
            }
        }
        for b in &writes {
            set(&mut writer, b, format!("n{k}"));
        }
    }
    let mut i = 0;
    outputs.visit(&mut |t| {
        let _ = writeln!(s, "  out{i} [shape=ellipse, label=\"output {i}\\n{:?}\"];", t.shape());
        if let Some(e) = writer.iter().find(|e| e.0 == *t.storage().buffer()) {
            let _ = writeln!(s, "  {} -> out{i};", e.1);
        }
        i += 1;
    });
    s.push_str("}\n");
    s
}
