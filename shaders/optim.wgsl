// Fused optimizer updates: one dispatch updates one parameter tensor and its
// state, reading the gradient once (compiled steps generate kernels that
// call the same rule functions in place, for several tensors at once). Everything that changes from step to
// step lives on the GPU, so a compiled (replayed) step stays correct:
// `t[0]` counts the steps taken (the bias corrections and the learning-rate
// schedule are computed from it here), and `scale[0]` multiplies the
// gradient (the factor of clipping by global norm). Formulas follow PyTorch.

struct Opt {
    n: u32,
    nesterov: u32,
    // learning-rate schedule: 0 constant, 1 step decay, 2 cosine annealing
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
    // AdamW: weight decay applied to the parameter, not the gradient
    decoupled: u32,
    gamma: f32,
    total: f32,
    min_lr: f32,
    _pad0: f32,
    _pad1: f32,
    _pad2: f32,
}

@group(0) @binding(0) var<uniform> o: Opt;
// Parameters, gradients and state are read and written four at a time: on
// CPU adapters every load is issued lane by lane, so a vec4 load does the
// work of four. Their buffers are dense from offset 0 and pooled in sizes
// that are multiples of 64 bytes, so the last vec4 stays inside the buffer;
// its lanes past `n` compute garbage that nothing reads.
@group(0) @binding(1) var<storage, read> param: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> grad: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> scale: array<f32>;
@group(0) @binding(4) var<storage, read> s1: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> s2: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> param_out: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read_write> s1_out: array<vec4<f32>>;
@group(0) @binding(8) var<storage, read_write> s2_out: array<vec4<f32>>;
@group(0) @binding(9) var<storage, read> t: array<f32>;

// The learning rate after `done` steps.
fn rate(o: Opt, done: f32) -> f32 {
    switch o.schedule {
        case 1u: { return o.lr * pow(o.gamma, floor(done / f32(o.every))); }
        case 2u: {
            let progress = min(done, o.total) / o.total;
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

// The entry points: one parameter tensor per dispatch, out of place.

@compute @workgroup_size(256)
fn sgd(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
       @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wg, nwg, lid);
    if i >= (o.n + 3u) / 4u { return; }
    let z = vec4<f32>();
    param_out[i] = sgd_rule(o, t[0], scale[0], param[i], grad[i], z, z).p;
}

@compute @workgroup_size(256)
fn sgd_momentum(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wg, nwg, lid);
    if i >= (o.n + 3u) / 4u { return; }
    let u = sgd_momentum_rule(o, t[0], scale[0], param[i], grad[i], s1[i], vec4<f32>());
    s1_out[i] = u.s1;
    param_out[i] = u.p;
}

@compute @workgroup_size(256)
fn adam(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wg, nwg, lid);
    if i >= (o.n + 3u) / 4u { return; }
    let u = adam_rule(o, t[0], scale[0], param[i], grad[i], s1[i], s2[i]);
    s1_out[i] = u.s1;
    s2_out[i] = u.s2;
    param_out[i] = u.p;
}

@compute @workgroup_size(256)
fn rmsprop(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wg, nwg, lid);
    if i >= (o.n + 3u) / 4u { return; }
    let u = rmsprop_rule(o, t[0], scale[0], param[i], grad[i], s1[i], vec4<f32>());
    s1_out[i] = u.s1;
    param_out[i] = u.p;
}

@compute @workgroup_size(256)
fn rmsprop_momentum(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wg, nwg, lid);
    if i >= (o.n + 3u) / 4u { return; }
    let u = rmsprop_momentum_rule(o, t[0], scale[0], param[i], grad[i], s1[i], s2[i]);
    s1_out[i] = u.s1;
    s2_out[i] = u.s2;
    param_out[i] = u.p;
}
