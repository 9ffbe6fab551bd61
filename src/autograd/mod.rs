//! Reverse-mode differentiation on a tape, with nested traces (HIPS autograd's
//! design). Recording knows no calculus: [`apply`] runs a [`Primitive`] and
//! boxes its result in a tape node; the calculus lives in each primitive's
//! VJP rule, next to its forward (the op families in `ops/` implement the
//! trait, as HIPS autograd's primitives register their rules: the tape
//! never imports them). The backward driver walks the tape, undoes
//! broadcasting once, and accumulates gradients of values used many times.
//!
//! Nesting: every `grad` call opens a trace with a fresh id, larger than the
//! ids of the traces around it. A traced tensor is a box (trace id, node,
//! inner value) whose inner value may itself be traced by an outer trace.
//! An op on boxes unboxes its arguments at the innermost trace, runs on the
//! inner values (which may record the op in the outer traces too), and boxes
//! the result. VJP rules run on inner values, so the backward pass of an
//! inner trace is recorded by the outer traces: grad of grad works.
//!
//! Forward mode (`jvp`) uses the same boxes: a trace of the other kind,
//! whose box holds the value's tangent instead of a tape node. An op on
//! such boxes runs on the inner values and its JVP rule, also written with
//! ops, gives the result's tangent from the inputs' tangents; both may be
//! traced by outer traces, so any nesting of the two modes works (forward
//! over reverse: `jvp` of a `grad`, as `hessian` and `hvp` do).

mod api;
mod forward;
mod gradcheck;
mod params;

pub use api::{Output, grad, value_and_grad, vjp};
pub use forward::{hessian, hvp, hvp_rev, jacfwd, jacobian, jacrev, jvp};
#[cfg(not(target_arch = "wasm32"))]
pub use gradcheck::gradcheck;
pub use gradcheck::{GradcheckOptions, GradcheckReport, gradcheck_async};
pub use params::{Params, join as params_path, nest_flat};

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::dtype::DType;
use crate::runtime::{Site, in_derivative_of, recording};
use crate::shape::broadcast_shapes;
use crate::tensor::{Tensor, TensorInner};

/// A primitive op: the forward records its kernels, the VJP rule gives
/// the inputs' gradients, written with ops (so the backward pass is
/// recorded like the forward and is itself differentiable). The forward-
/// mode (JVP) rule of a primitive belongs beside these two.
pub(crate) trait Primitive: std::fmt::Debug + Send + Sync + 'static {
    /// The op's name, for messages.
    fn name(&self) -> &'static str;

    /// Records the forward kernel(s) on inputs that are not traced here.
    fn forward(&self, inputs: &[&Tensor]) -> Tensor;

    /// Gradients of the inputs given the gradient `g` of the output `y`,
    /// one entry per input (`None`: no gradient, e.g. for indices), for the
    /// inputs `needs` selects. Broadcasting is undone by the driver.
    fn vjp(&self, g: &Tensor, inputs: &[&Tensor], y: &Tensor, needs: &[bool]) -> Vec<Option<Tensor>>;

    /// The tangent of the output `y` given the inputs' tangents (`None`:
    /// zero, e.g. for indices and constants; at least one is present),
    /// or `None` where it is zero. A tangent has its input's shape; the
    /// driver broadcasts the result to `y`'s shape.
    fn jvp(&self, tangents: &[Option<&Tensor>], inputs: &[&Tensor], y: &Tensor) -> Option<Tensor>;
}

/// The JVP of a primitive linear in each of the inputs `linear` names
/// (and constant in the others): the sum over those inputs with a tangent
/// of the primitive applied with that input replaced by its tangent
/// (multilinear: ∂f(a, b)[ta, tb] = f(ta, b) + f(a, tb)).
#[track_caller]
pub(crate) fn multilinear_jvp(
    prim: &(impl Primitive + Clone),
    tangents: &[Option<&Tensor>],
    inputs: &[&Tensor],
    linear: &[usize],
) -> Option<Tensor> {
    let mut terms = linear.iter().filter_map(|&i| {
        let t = tangents[i]?;
        let mut args = inputs.to_vec();
        args[i] = t;
        Some(apply(Arc::new(prim.clone()), &args))
    });
    let first = terms.next()?;
    Some(terms.fold(first, |acc, t| &acc + &t))
}

/// The JVP of a primitive read off its VJP rule `vjp` (cotangent ↦ the
/// inputs' gradients), for rules too intricate to differentiate by hand:
/// the VJP is linear in the cotangent u, so J·t = ∇ᵤ ⟨Jᵀu, t⟩ (the
/// transpose of the transpose), taken at u = 0 by reverse mode over the
/// rule. It costs the rule and its backward pass.
pub(crate) fn transposed_jvp(
    vjp: impl FnOnce(&Tensor) -> Vec<Option<Tensor>>,
    tangents: &[Option<&Tensor>],
    inputs: &[&Tensor],
    y: &Tensor,
) -> Option<Tensor> {
    let trace = next_id();
    let u = y.detach().zeros_like().track(trace);
    let leaf = u.traced().and_then(Traced::node).expect("just tracked").clone();
    let grads = vjp(&u);
    let mut terms = grads.iter().zip(tangents).zip(inputs).filter_map(|((g, t), x)| {
        let (g, t) = (g.as_ref()?, (*t)?);
        Some((unbroadcast(g.clone(), x.shape()) * t).sum_all())
    });
    let first = terms.next()?;
    let inner = terms.fold(first, |acc, t| &acc + &t);
    backward(trace, &[(&inner, inner.unbox(trace).detach().ones_like())], &[leaf]).pop().flatten()
}

/// The trace a tensor belongs to, and what it is there.
#[derive(Clone)]
pub(crate) struct Traced {
    pub trace: u64,
    pub role: Role,
    /// The same value as seen by the traces outside this one.
    pub inner: Tensor,
}

/// What a traced value carries: a tape node (reverse mode) or a tangent
/// (forward mode), by the kind of its trace.
#[derive(Clone)]
pub(crate) enum Role {
    Tape(Arc<Node>),
    /// Seen outside this trace, like `inner`; never zero (values with a
    /// zero tangent are not boxed).
    Tangent(Tensor),
}

impl Traced {
    pub(crate) fn node(&self) -> Option<&Arc<Node>> {
        match &self.role {
            Role::Tape(n) => Some(n),
            Role::Tangent(_) => None,
        }
    }
}

pub(crate) enum NodeKind {
    /// A tracked input of the traced function.
    Leaf,
    Op(Arc<dyn Primitive>),
}

/// One step of the tape.
pub(crate) struct Node {
    /// Creation order: a node's parents always have smaller ids.
    pub id: u64,
    pub kind: NodeKind,
    /// Inputs as seen outside this trace (what the VJP rule computes with).
    pub inputs: Vec<Tensor>,
    /// Tape nodes of the inputs in this trace (`None`: a constant here).
    pub parents: Vec<Option<Arc<Node>>>,
    /// The output as seen outside this trace.
    pub output: Tensor,
    /// The op and the caller's line, for debug reports.
    pub site: Site,
}

/// What a dropped tape node held that may hold other nodes.
type Held = (Vec<Option<Arc<Node>>>, Vec<Tensor>);

thread_local! {
    /// Set while this thread frees tape nodes; nodes freed meanwhile hand
    /// what they hold to `FREEING` instead of freeing it themselves.
    static FREEING_NOW: Cell<bool> = const { Cell::new(false) };
    static FREEING: std::cell::RefCell<Vec<Held>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A tape is a chain as long as the computation: freeing it by the usual
/// recursive drops (a node, then its parents, then theirs …) would use a
/// stack frame per op and overflow on long tapes. The first node freed on a
/// thread frees the rest iteratively, from a work list.
impl Drop for Node {
    fn drop(&mut self) {
        let held: Held = (std::mem::take(&mut self.parents), std::mem::take(&mut self.inputs));
        if FREEING_NOW.try_with(Cell::get).unwrap_or(false) {
            // (if the list is gone, the thread is exiting: `held` is freed here)
            let _ = FREEING.try_with(|q| q.borrow_mut().push(held));
            return;
        }
        if FREEING_NOW.try_with(|now| now.set(true)).is_err() {
            return;
        }
        drop(held);
        while let Some(next) = FREEING.with(|q| q.borrow_mut().pop()) {
            drop(next);
        }
        FREEING_NOW.with(|now| now.set(false));
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn next_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

thread_local! {
    static NO_GRAD: Cell<usize> = const { Cell::new(0) };
}

/// Runs `f` without recording anything for differentiation: its results are
/// constants to every enclosing `grad`.
pub fn no_grad<R>(f: impl FnOnce() -> R) -> R {
    struct Exit;
    impl Drop for Exit {
        fn drop(&mut self) {
            NO_GRAD.with(|n| n.set(n.get() - 1));
        }
    }
    NO_GRAD.with(|n| n.set(n.get() + 1));
    let _exit = Exit;
    f()
}

impl Tensor {
    pub(crate) fn traced(&self) -> Option<&Traced> {
        self.inner.trace.as_ref()
    }

    /// The same data, cut off from every trace: a constant to `grad`.
    pub fn detach(&self) -> Tensor {
        if self.traced().is_none() {
            return self.clone();
        }
        self.with_layout(self.layout().clone())
    }

    /// The value as seen outside trace `trace` (one box removed if it is ours).
    pub(crate) fn unbox(&self, trace: u64) -> Tensor {
        match self.traced() {
            Some(t) if t.trace == trace => t.inner.clone(),
            _ => self.clone(),
        }
    }

    fn node_in(&self, trace: u64) -> Option<Arc<Node>> {
        self.traced().filter(|t| t.trace == trace).and_then(|t| t.node().cloned())
    }

    /// The tangent of `self` in forward trace `trace` (`None`: zero).
    pub(crate) fn tangent_in(&self, trace: u64) -> Option<Tensor> {
        match self.traced() {
            Some(Traced { trace: id, role: Role::Tangent(t), .. }) if *id == trace => Some(t.clone()),
            _ => None,
        }
    }

    /// Boxes `self` (the inner value) in trace `trace` with `role`.
    pub(crate) fn boxed(&self, trace: u64, role: Role) -> Tensor {
        let i = &self.inner;
        i.device.inner.stats.tensors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Tensor {
            inner: Arc::new(TensorInner {
                device: i.device.clone(),
                storage: i.storage.clone(),
                layout: i.layout.clone(),
                dtype: i.dtype,
                trace: Some(Traced { trace, role, inner: self.clone() }),
            }),
        }
    }

    /// Marks `self` as an input tracked by trace `trace`.
    pub(crate) fn track(&self, trace: u64) -> Tensor {
        let node = Arc::new(Node {
            id: next_id(),
            kind: NodeKind::Leaf,
            inputs: Vec::new(),
            parents: Vec::new(),
            output: self.clone(),
            site: Site { op: "parameter", location: std::panic::Location::caller() },
        });
        self.boxed(trace, Role::Tape(node))
    }

    /// `self` with tangent `tangent` in forward trace `trace`.
    pub(crate) fn with_tangent(&self, trace: u64, tangent: Tensor) -> Tensor {
        self.boxed(trace, Role::Tangent(tangent))
    }
}

/// Runs a primitive, recording it in the innermost trace its inputs belong to.
#[track_caller]
pub(crate) fn apply(prim: Arc<dyn Primitive>, inputs: &[&Tensor]) -> Tensor {
    let site = Site { op: prim.name(), location: std::panic::Location::caller() };
    let trace = inputs.iter().filter_map(|t| t.traced().map(|t| t.trace)).max();
    let Some(trace) = trace.filter(|_| NO_GRAD.with(Cell::get) == 0) else {
        let out = recording(site, || prim.forward(inputs));
        let dev = &out.device().inner;
        // a failed input fails the output, whatever the kernels read
        if let Some(e) = dev.any_failed().then(|| dev.failure_of(inputs.iter().map(|t| t.storage().buffer()))).flatten()
        {
            dev.fail_from([out.storage().buffer()], &e);
        }
        dev.check_finite_after(out.storage(), out.layout(), out.dtype(), site);
        return out;
    };
    let unboxed: Vec<Tensor> = inputs.iter().map(|t| t.unbox(trace)).collect();
    let refs: Vec<&Tensor> = unboxed.iter().collect();
    let out = apply(prim.clone(), &refs);
    // Only float results carry gradients (masks, indices and casts to
    // integers are constants).
    if out.dtype() != DType::F32 {
        return out;
    }
    let forward = inputs.iter().any(|t| matches!(t.traced(), Some(b) if b.trace == trace && b.node().is_none()));
    if forward {
        let tangents: Vec<Option<Tensor>> = inputs.iter().map(|t| t.tangent_in(trace)).collect();
        let refs_t: Vec<Option<&Tensor>> = tangents.iter().map(Option::as_ref).collect();
        let Some(tangent) = in_derivative_of("tangent", site, || prim.jvp(&refs_t, &refs, &out)) else {
            return out;
        };
        assert!(
            tangent.dtype() == DType::F32
                && broadcast_shapes(tangent.shape(), out.shape()).as_deref() == Some(out.shape()),
            "wgrad: the JVP rule of {prim:?} gave a tangent of {} {:?} for an output of shape {:?}",
            tangent.dtype(),
            tangent.shape(),
            out.shape()
        );
        let tangent = if tangent.shape() == out.shape() { tangent } else { tangent.expand(out.shape()) };
        return out.with_tangent(trace, tangent);
    }
    let parents: Vec<Option<Arc<Node>>> = inputs.iter().map(|t| t.node_in(trace)).collect();
    let node =
        Arc::new(Node { id: next_id(), kind: NodeKind::Op(prim), inputs: unboxed, parents, output: out.clone(), site });
    out.boxed(trace, Role::Tape(node))
}

/// Sums `g` down to `shape`, undoing numpy broadcasting.
#[track_caller]
pub(crate) fn unbroadcast(g: Tensor, shape: &[usize]) -> Tensor {
    if g.shape() == shape {
        return g;
    }
    let lead = g.rank() - shape.len();
    let axes: Vec<isize> = (0..g.rank())
        .filter(|&d| d < lead || (shape[d - lead] == 1 && g.shape()[d] != 1))
        .map(|d| d as isize)
        .collect();
    g.sum(&axes, true).reshape(shape)
}

/// Reverse pass of trace `trace`: seeds `outputs[i]` with cotangent
/// `seeds[i]`, returns the gradients reaching `leaves` (`None`: unreached).
pub(crate) fn backward(trace: u64, outputs: &[(&Tensor, Tensor)], leaves: &[Arc<Node>]) -> Vec<Option<Tensor>> {
    // Collect the nodes reachable from the outputs.
    let mut nodes: BTreeMap<u64, Arc<Node>> = BTreeMap::new();
    let mut stack: Vec<Arc<Node>> = outputs.iter().filter_map(|(y, _)| y.node_in(trace)).collect();
    while let Some(n) = stack.pop() {
        if nodes.insert(n.id, n.clone()).is_none() {
            stack.extend(n.parents.iter().flatten().cloned());
        }
    }
    let mut grads: HashMap<u64, Tensor> = HashMap::new();
    fn accumulate(grads: &mut HashMap<u64, Tensor>, id: u64, g: Tensor) {
        let g = match grads.remove(&id) {
            Some(prev) => &prev + &g,
            None => g,
        };
        grads.insert(id, g);
    }
    for (y, seed) in outputs {
        if let Some(n) = y.node_in(trace) {
            accumulate(&mut grads, n.id, seed.clone());
        }
    }
    let leaf_ids: Vec<u64> = leaves.iter().map(|l| l.id).collect();
    let mut found: HashMap<u64, Tensor> = HashMap::new();
    // Parents have smaller ids than their children: descending ids are a
    // reverse topological order.
    for (&id, node) in nodes.iter().rev() {
        let Some(g) = grads.remove(&id) else { continue };
        let NodeKind::Op(prim) = &node.kind else {
            if leaf_ids.contains(&id) {
                found.insert(id, g);
            }
            continue;
        };
        let inputs: Vec<&Tensor> = node.inputs.iter().collect();
        let needs: Vec<bool> = node.parents.iter().map(Option::is_some).collect();
        let input_grads = in_derivative_of("backward pass", node.site, || prim.vjp(&g, &inputs, &node.output, &needs));
        assert_eq!(
            input_grads.len(),
            inputs.len(),
            "wgrad: the VJP rule of {prim:?} returned a wrong number of gradients"
        );
        for ((parent, ig), x) in node.parents.iter().zip(input_grads).zip(&node.inputs) {
            if let (Some(p), Some(ig)) = (parent, ig) {
                accumulate(&mut grads, p.id, unbroadcast(ig, x.shape()));
            }
        }
    }
    leaf_ids.iter().map(|id| found.remove(id)).collect()
}
