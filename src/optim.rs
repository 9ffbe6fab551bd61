//! Optimizers over any [`Params`] structure. State lives on the GPU and every
//! parameter tensor is updated by one fused WGSL kernel
//! (`shaders/optim.wgsl`). The step count is a GPU tensor too, from which the
//! kernels compute bias corrections and the learning-rate schedule, the
//! base learning rate is a GPU tensor (so [`Optimizer::set_lr`] reaches
//! compiled steps), and gradient clipping by global norm computes its
//! factor on the GPU: a step never reads back, and a compiled step replays
//! correctly. Parameter groups ([`Optimizer::param_group`]) give tensors
//! their own weight decay and learning-rate factor. In a compiled
//! step the same update rules run in place, several tensors per dispatch
//! (`compile/optimizer.rs`).

use std::sync::Arc;

use bytemuck::{Pod, Zeroable};

use crate::autograd::{Params, no_grad};
use crate::ir::{Fusable, OptInfo, Update, UpdateRule};
use crate::ops::layout::dense_from_zero;
use crate::runtime::{Kernel, Shader, grid};
use crate::tensor::Tensor;

/// The update rule and its hyper-parameters.
#[derive(Clone, Debug, PartialEq)]
pub enum Rule {
    /// SGD with optional momentum (PyTorch's form, no dampening), Nesterov
    /// momentum and L2 weight decay.
    Sgd { momentum: f32, nesterov: bool, weight_decay: f32 },
    /// Adam (Kingma & Ba) with L2 weight decay in the gradient, or AdamW
    /// (Loshchilov & Hutter) when `decoupled`.
    Adam { beta1: f32, beta2: f32, eps: f32, weight_decay: f32, decoupled: bool },
    /// RMSprop with optional momentum and L2 weight decay.
    RmsProp { alpha: f32, eps: f32, momentum: f32, weight_decay: f32 },
    /// Adagrad (PyTorch's form): the rate lr/(1 + (t−1)·`lr_decay`) over
    /// √(Σ g²) + ε, with L2 weight decay.
    Adagrad { lr_decay: f32, eps: f32, weight_decay: f32 },
    /// Lion (Chen et al. 2023; `lion-pytorch`'s form): the sign of an
    /// interpolation of momentum and gradient, decoupled weight decay.
    Lion { beta1: f32, beta2: f32, weight_decay: f32 },
}

/// How the learning rate changes with the step count `t` (from 0).
#[derive(Clone, Debug, PartialEq)]
pub enum Schedule {
    /// The base rate throughout.
    Constant,
    /// lr·γ^⌊t / every⌋.
    Step { every: u64, gamma: f32 },
    /// Cosine annealing from lr to `min_lr` over `total` steps, then `min_lr`.
    Cosine { total: u64, min_lr: f32 },
    /// Linear warm-up, lr·(t + 1)/`warmup` for t < `warmup`, then cosine
    /// annealing from lr to `min_lr` by step `total`, then `min_lr`.
    WarmupCosine { warmup: u64, total: u64, min_lr: f32 },
}

impl Schedule {
    /// The learning rate after `t` steps from base rate `base` (the kernels
    /// compute the same on the GPU).
    pub fn rate(&self, base: f32, t: u64) -> f32 {
        match *self {
            Schedule::Constant => base,
            Schedule::Step { every, gamma } => base * gamma.powi((t / every.max(1)) as i32),
            Schedule::Cosine { total, min_lr } => {
                let progress = (t.min(total) as f64 / total.max(1) as f64) as f32;
                min_lr + (base - min_lr) * 0.5 * (1.0 + (std::f32::consts::PI * progress).cos())
            }
            Schedule::WarmupCosine { warmup, total, min_lr } => {
                if t < warmup {
                    return base * (t + 1) as f32 / warmup as f32;
                }
                let span = total.saturating_sub(warmup);
                let progress = ((t - warmup).min(span) as f64 / span.max(1) as f64) as f32;
                min_lr + (base - min_lr) * 0.5 * (1.0 + (std::f32::consts::PI * progress).cos())
            }
        }
    }
}

/// An optimizer and its state.
///
/// The optimizer is itself a [`Params`] structure (its state tensors), so a
/// compiled training step can carry it.
///
/// ```
/// use wgrad::{grad, optim::Optimizer, Device, Tensor};
/// # let dev = Device::new()?;
/// let mut w = Tensor::from_slice(&dev, &[3.0f32, -2.0], &[2]);
/// let mut opt = Optimizer::adam(0.1).clip_grad_norm(1.0);
/// let f = |w: &Tensor, _: &()| w.square().sum_all();
/// for _ in 0..100 {
///     let (g, _, ()) = grad(f)(&w, &());
///     w = opt.step(&w, &g);
/// }
/// assert!(w.abs().max(&[0], false).item::<f32>()? < 0.1);
/// # Ok::<(), wgrad::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Optimizer {
    rule: Rule,
    lr: f32,
    schedule: Schedule,
    clip: Option<f32>,
    /// Parameter groups, first match wins.
    groups: Vec<(Selector, Group)>,
    /// Per parameter tensor, in `Params` order: its group's options (set by `init`).
    options: Vec<Group>,
    /// Per parameter tensor, in `Params` order: up to two state tensors.
    state: Vec<[Option<Tensor>; 2]>,
    /// Steps taken, as an f32 [1] tensor on the GPU (created by the first step).
    t: Option<Tensor>,
    /// [1, lr]: the gradients' scale when nothing clips them, and the base
    /// learning rate, read by the kernels (made by `init`, replaced by `set_lr`).
    factors: Option<Tensor>,
}

/// Options of a parameter group (see [`Optimizer::param_group`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Group {
    /// The group's learning rate as a factor of the optimizer's (and its
    /// schedule's): 1 by default.
    pub lr_scale: f32,
    /// The group's weight decay instead of the rule's (`Some(0.0)`: none).
    pub weight_decay: Option<f32>,
}

impl Default for Group {
    fn default() -> Self {
        Group { lr_scale: 1.0, weight_decay: None }
    }
}

impl Group {
    /// The group's weight decay.
    pub fn weight_decay(mut self, wd: f32) -> Group {
        self.weight_decay = Some(wd);
        self
    }
    /// The group's factor of the learning rate.
    pub fn lr_scale(mut self, f: f32) -> Group {
        self.lr_scale = f;
        self
    }
}

/// A parameter group's predicate on (name, tensor).
type Predicate = dyn Fn(&str, &Tensor) -> bool + Send + Sync;

#[derive(Clone)]
struct Selector(Arc<Predicate>);

impl std::fmt::Debug for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<predicate>")
    }
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct OptParams {
    n: u32,
    nesterov: u32,
    schedule: u32,
    every: u32,
    lr: f32,
    momentum: f32,
    weight_decay: f32,
    eps: f32,
    ln_beta1: f32,
    ln_beta2: f32,
    beta1: f32,
    beta2: f32,
    alpha: f32,
    decoupled: u32,
    gamma: f32,
    total: f32,
    min_lr: f32,
    lr_decay: f32,
    warmup: f32,
    _pad: f32,
}

impl Optimizer {
    fn with_rule(rule: Rule, lr: f32) -> Optimizer {
        Optimizer {
            rule,
            lr,
            schedule: Schedule::Constant,
            clip: None,
            groups: Vec::new(),
            options: Vec::new(),
            state: Vec::new(),
            t: None,
            factors: None,
        }
    }

    /// Plain SGD with learning rate `lr`.
    pub fn sgd(lr: f32) -> Optimizer {
        Optimizer::with_rule(Rule::Sgd { momentum: 0.0, nesterov: false, weight_decay: 0.0 }, lr)
    }

    /// Adam with β = (0.9, 0.999), ε = 1e-8.
    pub fn adam(lr: f32) -> Optimizer {
        Optimizer::with_rule(
            Rule::Adam { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0, decoupled: false },
            lr,
        )
    }

    /// AdamW: Adam with decoupled weight decay `weight_decay`.
    pub fn adamw(lr: f32, weight_decay: f32) -> Optimizer {
        Optimizer::with_rule(Rule::Adam { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay, decoupled: true }, lr)
    }

    /// RMSprop with α = 0.99, ε = 1e-8.
    pub fn rmsprop(lr: f32) -> Optimizer {
        Optimizer::with_rule(Rule::RmsProp { alpha: 0.99, eps: 1e-8, momentum: 0.0, weight_decay: 0.0 }, lr)
    }

    /// Adagrad with ε = 1e-10 and no learning-rate decay.
    pub fn adagrad(lr: f32) -> Optimizer {
        Optimizer::with_rule(Rule::Adagrad { lr_decay: 0.0, eps: 1e-10, weight_decay: 0.0 }, lr)
    }

    /// Lion with β = (0.9, 0.99) (use a rate 3–10× below AdamW's).
    pub fn lion(lr: f32) -> Optimizer {
        Optimizer::with_rule(Rule::Lion { beta1: 0.9, beta2: 0.99, weight_decay: 0.0 }, lr)
    }

    /// Momentum (SGD, RMSprop).
    #[track_caller]
    pub fn momentum(mut self, m: f32) -> Optimizer {
        match &mut self.rule {
            Rule::Sgd { momentum, .. } | Rule::RmsProp { momentum, .. } => *momentum = m,
            _ => panic!("wgrad: optimizer: momentum is an SGD and RMSprop setting (Adam and Lion: use betas)"),
        }
        self
    }

    /// Adagrad's learning-rate decay: the rate at step t is lr/(1 + (t−1)·decay).
    #[track_caller]
    pub fn lr_decay(mut self, decay: f32) -> Optimizer {
        match &mut self.rule {
            Rule::Adagrad { lr_decay, .. } => *lr_decay = decay,
            _ => panic!("wgrad: optimizer: lr_decay is an Adagrad setting (others: use a schedule)"),
        }
        self
    }

    /// Options for the parameter tensors that `select(name, tensor)` picks
    /// (names as [`Params::named_tensors`]; the first group that matches a
    /// tensor wins; the rest keep the optimizer's options). Groups are
    /// resolved when the state is made (`init` or the first step).
    ///
    /// ```
    /// use wgrad::{optim::{Group, Optimizer}, Device, Tensor};
    /// # let dev = Device::new()?;
    /// // no weight decay on biases and norms' scales (vectors)
    /// let opt = Optimizer::adamw(1e-3, 0.1).param_group(|_, p| p.rank() < 2, Group::default().weight_decay(0.0));
    /// # Ok::<(), wgrad::Error>(())
    /// ```
    pub fn param_group(
        mut self,
        select: impl Fn(&str, &Tensor) -> bool + Send + Sync + 'static,
        group: Group,
    ) -> Optimizer {
        self.groups.push((Selector(Arc::new(select)), group));
        self
    }

    /// Changes the base learning rate from the next step on (the schedule
    /// scales it from there). It is a GPU tensor read by the update kernels,
    /// so compiled steps replay with it too.
    pub fn set_lr(&mut self, lr: f32) {
        self.lr = lr;
        if let Some(f) = &self.factors {
            self.factors = Some(Tensor::from_slice(f.device(), &[1.0f32, lr], &[2]));
        }
    }

    /// Nesterov momentum (SGD).
    #[track_caller]
    pub fn nesterov(mut self) -> Optimizer {
        match &mut self.rule {
            Rule::Sgd { nesterov, .. } => *nesterov = true,
            _ => panic!("wgrad: optimizer: Nesterov momentum is an SGD setting"),
        }
        self
    }

    /// L2 weight decay (decoupled for AdamW).
    pub fn weight_decay(mut self, wd: f32) -> Optimizer {
        match &mut self.rule {
            Rule::Sgd { weight_decay, .. }
            | Rule::Adam { weight_decay, .. }
            | Rule::RmsProp { weight_decay, .. }
            | Rule::Adagrad { weight_decay, .. }
            | Rule::Lion { weight_decay, .. } => *weight_decay = wd,
        }
        self
    }

    /// Adam's or Lion's (β₁, β₂).
    #[track_caller]
    pub fn betas(mut self, b1: f32, b2: f32) -> Optimizer {
        match &mut self.rule {
            Rule::Adam { beta1, beta2, .. } | Rule::Lion { beta1, beta2, .. } => (*beta1, *beta2) = (b1, b2),
            _ => panic!("wgrad: optimizer: betas are an Adam and Lion setting"),
        }
        self
    }

    /// ε of Adam, RMSprop and Adagrad.
    #[track_caller]
    pub fn eps(mut self, e: f32) -> Optimizer {
        match &mut self.rule {
            Rule::Adam { eps, .. } | Rule::RmsProp { eps, .. } | Rule::Adagrad { eps, .. } => *eps = e,
            Rule::Sgd { .. } | Rule::Lion { .. } => panic!("wgrad: optimizer: SGD and Lion have no ε"),
        }
        self
    }

    /// RMSprop's smoothing constant α.
    #[track_caller]
    pub fn alpha(mut self, a: f32) -> Optimizer {
        match &mut self.rule {
            Rule::RmsProp { alpha, .. } => *alpha = a,
            _ => panic!("wgrad: optimizer: alpha is an RMSprop setting"),
        }
        self
    }

    /// A learning-rate schedule.
    pub fn schedule(mut self, s: Schedule) -> Optimizer {
        self.schedule = s;
        self
    }

    /// Scales gradients so their global L2 norm is at most `max_norm`.
    pub fn clip_grad_norm(mut self, max_norm: f32) -> Optimizer {
        self.clip = Some(max_norm);
        self
    }

    /// The rule and hyper-parameters.
    pub fn rule(&self) -> &Rule {
        &self.rule
    }

    /// The base learning rate (as last set).
    pub fn base_lr(&self) -> f32 {
        self.lr
    }

    /// The learning-rate schedule.
    pub fn lr_schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// Steps taken so far (a read-back of the GPU's step counter).
    pub async fn steps_async(&self) -> crate::Result<u64> {
        match &self.t {
            Some(t) => Ok(t.item_async::<f32>().await? as u64),
            None => Ok(0),
        }
    }

    /// Blocking form of [`Optimizer::steps_async`] (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn steps(&self) -> crate::Result<u64> {
        pollster::block_on(self.steps_async())
    }

    /// Creates the state for `params` (zeros) now rather than at the first
    /// step; a compiled step needs it, since its state must not change shape.
    #[track_caller]
    pub fn init<P: Params>(&mut self, params: &P) {
        let ps = params.tensors();
        let Some(first) = ps.first() else { return };
        if self.options.len() != ps.len() {
            self.options = params
                .named_tensors()
                .into_iter()
                .map(|(name, p)| {
                    let group = self.groups.iter().find(|(select, _)| (select.0)(&name, p));
                    group.map_or_else(Group::default, |(_, g)| *g)
                })
                .collect();
        }
        if self.factors.is_none() {
            self.factors = Some(Tensor::from_slice(first.device(), &[1.0f32, self.lr], &[2]));
        }
        if self.state.len() == ps.len() && self.t.is_some() {
            return;
        }
        if !self.state.is_empty() {
            panic!(
                "wgrad: optimizer: the optimizer was used with {} parameter tensors, now {}",
                self.state.len(),
                ps.len()
            );
        }
        let slots = self.slots();
        self.state = ps.iter().map(|p| std::array::from_fn(|k| (k < slots).then(|| p.detach().zeros_like()))).collect();
        self.t = Some(Tensor::zeros(first.device(), &[1]));
    }

    /// Each parameter tensor's group options, in `Params` order (after `init`).
    pub fn tensor_options(&self) -> &[Group] {
        &self.options
    }

    /// State tensors by parameter index and slot, and the step counter, for checkpoints.
    pub(crate) fn state_mut(&mut self) -> (&mut Vec<[Option<Tensor>; 2]>, &mut Option<Tensor>) {
        (&mut self.state, &mut self.t)
    }

    pub(crate) fn state(&self) -> &[[Option<Tensor>; 2]] {
        &self.state
    }

    pub(crate) fn step_counter(&self) -> Option<&Tensor> {
        self.t.as_ref()
    }

    /// How many state tensors each parameter has under this rule.
    pub(crate) fn slots(&self) -> usize {
        match self.rule {
            Rule::Sgd { momentum, .. } => (momentum != 0.0) as usize,
            Rule::Adam { .. } => 2,
            Rule::RmsProp { momentum, .. } => 1 + (momentum != 0.0) as usize,
            Rule::Adagrad { .. } | Rule::Lion { .. } => 1,
        }
    }

    /// One update: returns the new parameters (same structure) and advances
    /// the state. Records one kernel per parameter tensor (plus a few for
    /// clipping); nothing is read back.
    #[track_caller]
    pub fn step<P: Params>(&mut self, params: &P, grads: &P) -> P {
        let (ps, gs) = (params.tensors(), grads.tensors());
        if ps.len() != gs.len() {
            panic!("wgrad: optimizer step: {} parameters but {} gradients", ps.len(), gs.len());
        }
        for (p, g) in ps.iter().zip(&gs) {
            if p.shape() != g.shape() || p.dtype() != crate::DType::F32 || g.dtype() != crate::DType::F32 {
                panic!(
                    "wgrad: optimizer step: parameter {:?} and gradient {:?} must be f32 of one shape",
                    p.shape(),
                    g.shape()
                );
            }
        }
        if ps.is_empty() {
            return params.map(|t| t.clone());
        }
        self.init(params);
        let t = self.t.clone().expect("initialised");
        let factors = self.factors.clone().expect("initialised");
        let updated = no_grad(|| {
            // [gradient factor, base learning rate]
            let scale = match self.clip {
                Some(max_norm) => {
                    let sq: Tensor =
                        gs.iter().map(|g| g.detach().square().sum_all()).reduce(|a, b| a + b).expect("non-empty");
                    let clip = ((sq.sqrt() + 1e-6).recip() * max_norm).minimum(1.0);
                    Tensor::cat(&[&clip.reshape(&[1]), &factors.narrow(0, 1, 1)], 0)
                }
                None => factors,
            };
            let mut params_out = Vec::with_capacity(ps.len());
            for (((p, g), state), group) in ps.iter().zip(&gs).zip(self.state.iter_mut()).zip(&self.options) {
                let rule = group.weight_decay.map_or_else(|| self.rule.clone(), |wd| self.rule.with_weight_decay(wd));
                params_out.push(update(&rule, group.lr_scale, &self.schedule, p, g, &scale, &t, state));
            }
            self.t = Some(&t + 1.0);
            params_out
        });
        params.rebuild(&mut updated.into_iter())
    }
}

impl Rule {
    fn with_weight_decay(&self, wd: f32) -> Rule {
        let mut r = self.clone();
        match &mut r {
            Rule::Sgd { weight_decay, .. }
            | Rule::Adam { weight_decay, .. }
            | Rule::RmsProp { weight_decay, .. }
            | Rule::Adagrad { weight_decay, .. }
            | Rule::Lion { weight_decay, .. } => *weight_decay = wd,
        }
        r
    }
}

/// Records the fused update of one parameter tensor: `lr_scale` is its
/// factor of the base rate, `scale` the [gradient factor, base rate] tensor.
#[allow(clippy::too_many_arguments)]
fn update(
    rule: &Rule,
    lr_scale: f32,
    schedule: &Schedule,
    p: &Tensor,
    g: &Tensor,
    scale: &Tensor,
    t: &Tensor,
    state: &mut [Option<Tensor>; 2],
) -> Tensor {
    let (p, g) = (dense_from_zero(&p.detach()), dense_from_zero(&g.detach()));
    let mut u = OptParams { n: p.numel() as u32, lr: lr_scale, ..Zeroable::zeroed() };
    match *schedule {
        Schedule::Constant => {}
        Schedule::Step { every, gamma } => (u.schedule, u.every, u.gamma) = (1, every.max(1) as u32, gamma),
        Schedule::Cosine { total, min_lr } => (u.schedule, u.total, u.min_lr) = (2, total.max(1) as f32, min_lr),
        Schedule::WarmupCosine { warmup, total, min_lr } => {
            (u.schedule, u.warmup, u.total, u.min_lr) = (3, warmup.max(1) as f32, total.max(warmup) as f32, min_lr)
        }
    }
    let update_rule = match *rule {
        Rule::Sgd { momentum, nesterov, weight_decay } => {
            (u.momentum, u.nesterov, u.weight_decay) = (momentum, nesterov as u32, weight_decay);
            if momentum != 0.0 { UpdateRule::SgdMomentum } else { UpdateRule::Sgd }
        }
        Rule::Adam { beta1, beta2, eps, weight_decay, decoupled } => {
            (u.beta1, u.beta2, u.eps, u.weight_decay, u.decoupled) =
                (beta1, beta2, eps, weight_decay, decoupled as u32);
            // ln β in f64, so the kernel's 1 − βᵗ = −expm1(t·ln β) is accurate
            (u.ln_beta1, u.ln_beta2) = ((beta1 as f64).ln() as f32, (beta2 as f64).ln() as f32);
            UpdateRule::Adam
        }
        Rule::RmsProp { alpha, eps, momentum, weight_decay } => {
            (u.alpha, u.eps, u.momentum, u.weight_decay) = (alpha, eps, momentum, weight_decay);
            if momentum != 0.0 { UpdateRule::RmsPropMomentum } else { UpdateRule::RmsProp }
        }
        Rule::Adagrad { lr_decay, eps, weight_decay } => {
            (u.lr_decay, u.eps, u.weight_decay) = (lr_decay, eps, weight_decay);
            UpdateRule::Adagrad
        }
        Rule::Lion { beta1, beta2, weight_decay } => {
            (u.beta1, u.beta2, u.weight_decay) = (beta1, beta2, weight_decay);
            UpdateRule::Lion
        }
    };
    let out = Tensor::empty(p.device(), "optimizer step", p.shape(), crate::DType::F32);
    let buffer = |s: &Tensor| s.storage().buffer().clone();
    let mut updates = vec![Update { read: buffer(&p), written: buffer(&out) }];
    let mut new_state: [Option<Tensor>; 2] = [None, None];
    // (slot, state read, state written)
    let mut slots = Vec::new();
    for (k, s) in state.iter().enumerate() {
        if let Some(s) = s {
            let s = dense_from_zero(s);
            let next = Tensor::empty(p.device(), "optimizer state", p.shape(), crate::DType::F32);
            updates.push(Update { read: buffer(&s), written: buffer(&next) });
            slots.push((k, s, next.clone()));
            new_state[k] = Some(next);
        }
    }
    // the bindings of `shaders/optim.wgsl`: state slot k is read as s1 or
    // s2 and written as s1_out or s2_out
    let mut bindings =
        vec![("param", p.storage()), ("grad", g.storage()), ("scale", scale.storage()), ("t", t.storage())];
    for (k, s, next) in &slots {
        bindings.push((["s1", "s2"][*k], s.storage()));
        bindings.push((["s1_out", "s2_out"][*k], next.storage()));
    }
    bindings.push(("param_out", out.storage()));
    let info =
        OptInfo { rule: update_rule, updates, grad: buffer(&g), scale: buffer(scale), t: buffer(t), numel: p.numel() };
    let kernel = Kernel::new(Shader::Optim, update_rule.entry());
    // one invocation per four elements (the kernels read vec4s)
    let groups = grid((p.numel() as u32).div_ceil(4 * 256));
    p.device().inner.record_fusable(
        &kernel,
        &bindings,
        bytemuck::bytes_of(&u),
        groups,
        Fusable::Optimizer(Box::new(info)),
    );
    *state = new_state;
    out
}

/// The optimizer's tensors: per-parameter state, the step counter, then
/// the [1, lr] factors (a compiled step copies in the ones `set_lr` made).
impl Params for Optimizer {
    type Of<Q: Params> = Vec<Q>;

    fn nest<Q: Params>(&self, it: &mut dyn Iterator<Item = Q>) -> Vec<Q> {
        crate::autograd::nest_flat(self, it)
    }

    fn visit<'a>(&'a self, f: &mut dyn FnMut(&'a Tensor)) {
        for slots in &self.state {
            for s in slots.iter().flatten() {
                f(s);
            }
        }
        if let Some(t) = &self.t {
            f(t);
        }
        if let Some(l) = &self.factors {
            f(l);
        }
    }

    fn rebuild(&self, it: &mut dyn Iterator<Item = Tensor>) -> Self {
        let mut o = self.clone();
        for slots in o.state.iter_mut() {
            for s in slots.iter_mut().flatten() {
                *s = it.next().expect("wgrad: Optimizer::rebuild ran out of tensors");
            }
        }
        if let Some(t) = o.t.as_mut() {
            *t = it.next().expect("wgrad: Optimizer::rebuild ran out of tensors");
        }
        if let Some(l) = o.factors.as_mut() {
            *l = it.next().expect("wgrad: Optimizer::rebuild ran out of tensors");
        }
        o
    }
}
