// Fused optimizer updates: one dispatch updates one parameter tensor and its
// state, reading the gradient once. `scale[0]` multiplies the gradient (the
// factor of gradient clipping by global norm, computed on the GPU: no
// read-back). Hyper-parameters that change per step (learning rate, bias
// corrections) come in the uniform. Formulas follow PyTorch's optimizers.

struct Opt {
    n: u32,
    nesterov: u32,
    _pad0: u32,
    _pad1: u32,
    lr: f32,
    momentum: f32,
    weight_decay: f32,
    eps: f32,
    beta1: f32,
    beta2: f32,
    bc1: f32,
    bc2: f32,
    alpha: f32,
    decay_factor: f32,
    _pad2: f32,
    _pad3: f32,
}

@group(0) @binding(0) var<uniform> o: Opt;
@group(0) @binding(1) var<storage, read> param: array<f32>;
@group(0) @binding(2) var<storage, read> grad: array<f32>;
@group(0) @binding(3) var<storage, read> scale: array<f32>;
@group(0) @binding(4) var<storage, read> s1: array<f32>;
@group(0) @binding(5) var<storage, read> s2: array<f32>;
@group(0) @binding(6) var<storage, read_write> param_out: array<f32>;
@group(0) @binding(7) var<storage, read_write> s1_out: array<f32>;
@group(0) @binding(8) var<storage, read_write> s2_out: array<f32>;

// g + λ·p (L2 weight decay folded into the gradient)
fn decayed_grad(i: u32) -> f32 {
    return grad[i] * scale[0] + o.weight_decay * param[i];
}

// p ← p − lr·(g + λp)
@compute @workgroup_size(256)
fn sgd(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
       @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wg, nwg, lid);
    if i >= o.n { return; }
    param_out[i] = param[i] - o.lr * decayed_grad(i);
}

// b ← μ·b + d;  p ← p − lr·(d + μ·b if Nesterov else b)
@compute @workgroup_size(256)
fn sgd_momentum(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wg, nwg, lid);
    if i >= o.n { return; }
    let d = decayed_grad(i);
    let buf = o.momentum * s1[i] + d;
    s1_out[i] = buf;
    let step = select(buf, d + o.momentum * buf, o.nesterov != 0u);
    param_out[i] = param[i] - o.lr * step;
}

// Adam (decay_factor = 1, weight decay in the gradient) and AdamW
// (decay_factor = 1 − lr·λ applied to p, weight_decay = 0 in the gradient):
//   m ← β₁m + (1−β₁)g;  v ← β₂v + (1−β₂)g²
//   p ← p·decay_factor − lr·(m/bc1) / (√(v/bc2) + ε),  bcₖ = 1 − βₖᵗ
@compute @workgroup_size(256)
fn adam(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wg, nwg, lid);
    if i >= o.n { return; }
    let g = decayed_grad(i);
    let m = o.beta1 * s1[i] + (1.0 - o.beta1) * g;
    let v = o.beta2 * s2[i] + (1.0 - o.beta2) * g * g;
    s1_out[i] = m;
    s2_out[i] = v;
    param_out[i] = param[i] * o.decay_factor - o.lr * (m / o.bc1) / (sqrt(v / o.bc2) + o.eps);
}

// RMSprop: v ← αv + (1−α)g²;  p ← p − lr·g/(√v + ε)
@compute @workgroup_size(256)
fn rmsprop(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wg, nwg, lid);
    if i >= o.n { return; }
    let g = decayed_grad(i);
    let v = o.alpha * s1[i] + (1.0 - o.alpha) * g * g;
    s1_out[i] = v;
    param_out[i] = param[i] - o.lr * g / (sqrt(v) + o.eps);
}

// RMSprop with momentum: b ← μb + g/(√v + ε);  p ← p − lr·b
@compute @workgroup_size(256)
fn rmsprop_momentum(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wg, nwg, lid);
    if i >= o.n { return; }
    let g = decayed_grad(i);
    let v = o.alpha * s1[i] + (1.0 - o.alpha) * g * g;
    let b = o.momentum * s2[i] + g / (sqrt(v) + o.eps);
    s1_out[i] = v;
    s2_out[i] = b;
    param_out[i] = param[i] - o.lr * b;
}
