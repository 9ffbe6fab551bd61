// Fused optimizer updates: one dispatch updates one parameter tensor and its
// state, reading the gradient once. Everything that changes from step to
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
fn rate(done: f32) -> f32 {
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

// g + λ·p (L2 weight decay folded into the gradient)
fn decayed_grad(i: u32) -> vec4<f32> {
    return grad[i] * scale[0] + o.weight_decay * param[i];
}

// p ← p − lr·(g + λp)
@compute @workgroup_size(256)
fn sgd(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
       @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wg, nwg, lid);
    if i >= (o.n + 3u) / 4u { return; }
    param_out[i] = param[i] - rate(t[0]) * decayed_grad(i);
}

// b ← μ·b + d;  p ← p − lr·(d + μ·b if Nesterov else b)
@compute @workgroup_size(256)
fn sgd_momentum(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wg, nwg, lid);
    if i >= (o.n + 3u) / 4u { return; }
    let d = decayed_grad(i);
    let buf = o.momentum * s1[i] + d;
    s1_out[i] = buf;
    let step = select(buf, d + o.momentum * buf, o.nesterov != 0u);
    param_out[i] = param[i] - rate(t[0]) * step;
}

// Adam, or AdamW when `decoupled` (weight_decay then shrinks p directly):
//   m ← β₁m + (1−β₁)g;  v ← β₂v + (1−β₂)g²
//   p ← p·(1 − lr·λ if AdamW) − lr·(m/bc₁) / (√(v/bc₂) + ε),  bcₖ = 1 − βₖᵗ
@compute @workgroup_size(256)
fn adam(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wg, nwg, lid);
    if i >= (o.n + 3u) / 4u { return; }
    let lr = rate(t[0]);
    let steps = t[0] + 1.0;
    let bc1 = -expm1(steps * o.ln_beta1);
    let bc2 = -expm1(steps * o.ln_beta2);
    var g = grad[i] * scale[0];
    var keep = 1.0;
    if o.decoupled != 0u {
        keep = 1.0 - lr * o.weight_decay;
    } else {
        g += o.weight_decay * param[i];
    }
    let m = o.beta1 * s1[i] + (1.0 - o.beta1) * g;
    let v = o.beta2 * s2[i] + (1.0 - o.beta2) * g * g;
    s1_out[i] = m;
    s2_out[i] = v;
    param_out[i] = param[i] * keep - lr * (m / bc1) / (sqrt(v / bc2) + o.eps);
}

// RMSprop: v ← αv + (1−α)g²;  p ← p − lr·g/(√v + ε)
@compute @workgroup_size(256)
fn rmsprop(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wg, nwg, lid);
    if i >= (o.n + 3u) / 4u { return; }
    let g = decayed_grad(i);
    let v = o.alpha * s1[i] + (1.0 - o.alpha) * g * g;
    s1_out[i] = v;
    param_out[i] = param[i] - rate(t[0]) * g / (sqrt(v) + o.eps);
}

// RMSprop with momentum: b ← μb + g/(√v + ε);  p ← p − lr·b
@compute @workgroup_size(256)
fn rmsprop_momentum(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wg, nwg, lid);
    if i >= (o.n + 3u) / 4u { return; }
    let g = decayed_grad(i);
    let v = o.alpha * s1[i] + (1.0 - o.alpha) * g * g;
    let b = o.momentum * s2[i] + g / (sqrt(v) + o.eps);
    s1_out[i] = v;
    s2_out[i] = b;
    param_out[i] = param[i] - rate(t[0]) * b;
}
