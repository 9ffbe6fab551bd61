// The optimizers' update rules, one function each (optim.wgsl's kernels
// update one parameter tensor per dispatch; compiled steps generate kernels
// that call the same functions in place, for several tensors at once: see
// src/codegen/optimizer.rs). Everything that changes from step to step
// lives on the GPU, so a compiled (replayed) step stays correct: `done`
// counts the steps taken (the bias corrections and the learning-rate
// schedule are computed from it here), and `scale` multiplies the gradient
// (the factor of clipping by global norm), and the base learning rate, so
// `Optimizer::set_lr` reaches replays too. Formulas follow PyTorch.

struct Opt {
    n: u32,
    nesterov: u32,
    // learning-rate schedule: 0 constant, 1 step decay, 2 cosine annealing,
    // 3 linear warm-up over `warmup` steps, then cosine annealing
    schedule: u32,
    every: u32,
    // the tensor's factor of the base rate (its group's); `with_lr` makes it
    // the tensor's rate
    lr: f32,
    momentum: f32,
    weight_decay: f32,
    eps: f32,
    ln_beta1: f32,
    ln_beta2: f32,
    beta1: f32,
    beta2: f32,
    alpha: f32,
    // AdamW: weight decay applied to the parameter, not the gradient
    decoupled: u32,
    gamma: f32,
    total: f32,
    min_lr: f32,
    // Adagrad: the rate is lr / (1 + done·lr_decay)
    lr_decay: f32,
    warmup: f32,
    _pad0: f32,
}

// `o` with the tensor's base rate: its factor times `base`, the optimizer's
// current rate (read from the GPU: `scale[1]`).
fn with_lr(o: Opt, base: f32) -> Opt {
    var q = o;
    q.lr = o.lr * base;
    return q;
}

// The learning rate after `done` steps.
fn rate(o: Opt, done: f32) -> f32 {
    switch o.schedule {
        case 1u: { return o.lr * pow(o.gamma, floor(done / f32(o.every))); }
        case 2u: {
            let progress = min(done, o.total) / o.total;
            return o.min_lr + (o.lr - o.min_lr) * 0.5 * (1.0 + cos(3.14159265358979 * progress));
        }
        case 3u: {
            if done < o.warmup { return o.lr * (done + 1.0) / o.warmup; }
            let progress = min(done - o.warmup, o.total - o.warmup) / max(o.total - o.warmup, 1.0);
            return o.min_lr + (o.lr - o.min_lr) * 0.5 * (1.0 + cos(3.14159265358979 * progress));
        }
        default: { return o.lr; }
    }
}

// eˣ − 1 without cancellation for small x (the bias corrections 1 − βᵗ of
// Adam are −expm1(t·ln β), tiny in the first steps).
fn expm1(x: f32) -> f32 {
    if abs(x) < 0.1 {
        return x * (1.0 + x * (0.5 + x * (1.0 / 6.0 + x * (1.0 / 24.0 + x * (1.0 / 120.0
            + x * (1.0 / 720.0 + x * (1.0 / 5040.0)))))));
    }
    return exp(x) - 1.0;
}

// What one update produces: the new parameter and state (four elements
// each; unused state is zero).
struct Updated {
    p: vec4<f32>,
    s1: vec4<f32>,
    s2: vec4<f32>,
}

// The update rules, one function each, on values: `o` the hyper-parameters,
// `done` the steps taken (t[0]), `scale` the gradient's factor (scale[0]),
// `p` the parameter, `g` the gradient and `s1`, `s2` the state. The entry
// points below and the multi-tensor kernels generated for compiled steps
// (which update several parameters in place in one dispatch) call these.

// p ← p − lr·(g + λp)
fn sgd_rule(o: Opt, done: f32, scale: f32, p: vec4<f32>, g: vec4<f32>, s1: vec4<f32>, s2: vec4<f32>) -> Updated {
    let d = g * scale + o.weight_decay * p;
    return Updated(p - rate(o, done) * d, s1, s2);
}

// b ← μ·b + d;  p ← p − lr·(d + μ·b if Nesterov else b)
fn sgd_momentum_rule(o: Opt, done: f32, scale: f32, p: vec4<f32>, g: vec4<f32>, s1: vec4<f32>,
                     s2: vec4<f32>) -> Updated {
    let d = g * scale + o.weight_decay * p;
    let buf = o.momentum * s1 + d;
    let step = select(buf, d + o.momentum * buf, o.nesterov != 0u);
    return Updated(p - rate(o, done) * step, buf, s2);
}

// Adam, or AdamW when `decoupled` (weight_decay then shrinks p directly):
//   m ← β₁m + (1−β₁)g;  v ← β₂v + (1−β₂)g²
//   p ← p·(1 − lr·λ if AdamW) − lr·(m/bc₁) / (√(v/bc₂) + ε),  bcₖ = 1 − βₖᵗ
fn adam_rule(o: Opt, done: f32, scale: f32, p: vec4<f32>, g0: vec4<f32>, s1: vec4<f32>, s2: vec4<f32>) -> Updated {
    let lr = rate(o, done);
    let steps = done + 1.0;
    let bc1 = -expm1(steps * o.ln_beta1);
    let bc2 = -expm1(steps * o.ln_beta2);
    var g = g0 * scale;
    var keep = 1.0;
    if o.decoupled != 0u {
        keep = 1.0 - lr * o.weight_decay;
    } else {
        g += o.weight_decay * p;
    }
    let m = o.beta1 * s1 + (1.0 - o.beta1) * g;
    let v = o.beta2 * s2 + (1.0 - o.beta2) * g * g;
    return Updated(p * keep - lr * (m / bc1) / (sqrt(v / bc2) + o.eps), m, v);
}

// RMSprop: v ← αv + (1−α)g²;  p ← p − lr·g/(√v + ε)
fn rmsprop_rule(o: Opt, done: f32, scale: f32, p: vec4<f32>, g0: vec4<f32>, s1: vec4<f32>, s2: vec4<f32>) -> Updated {
    let g = g0 * scale + o.weight_decay * p;
    let v = o.alpha * s1 + (1.0 - o.alpha) * g * g;
    return Updated(p - rate(o, done) * g / (sqrt(v) + o.eps), v, s2);
}

// RMSprop with momentum: b ← μb + g/(√v + ε);  p ← p − lr·b
fn rmsprop_momentum_rule(o: Opt, done: f32, scale: f32, p: vec4<f32>, g0: vec4<f32>, s1: vec4<f32>,
                         s2: vec4<f32>) -> Updated {
    let g = g0 * scale + o.weight_decay * p;
    let v = o.alpha * s1 + (1.0 - o.alpha) * g * g;
    let b = o.momentum * s2 + g / (sqrt(v) + o.eps);
    return Updated(p - rate(o, done) * b, v, b);
}


// Adagrad: s ← s + g²;  p ← p − lr/(1 + (t−1)·decay) · g/(√s + ε)
fn adagrad_rule(o: Opt, done: f32, scale: f32, p: vec4<f32>, g0: vec4<f32>, s1: vec4<f32>, s2: vec4<f32>) -> Updated {
    let g = g0 * scale + o.weight_decay * p;
    let s = s1 + g * g;
    let lr = rate(o, done) / (1.0 + done * o.lr_decay);
    return Updated(p - lr * g / (sqrt(s) + o.eps), s, s2);
}

// Lion (Chen et al. 2023, as lion-pytorch): c = β₁m + (1−β₁)g;
//   p ← p·(1 − lr·λ) − lr·sign(c);  m ← β₂m + (1−β₂)g
fn lion_rule(o: Opt, done: f32, scale: f32, p: vec4<f32>, g0: vec4<f32>, s1: vec4<f32>, s2: vec4<f32>) -> Updated {
    let lr = rate(o, done);
    let g = g0 * scale;
    let c = o.beta1 * s1 + (1.0 - o.beta1) * g;
    let m = o.beta2 * s1 + (1.0 - o.beta2) * g;
    return Updated(p * (1.0 - lr * o.weight_decay) - lr * sign(c), m, s2);
}
