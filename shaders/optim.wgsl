// Fused optimizer updates: one dispatch updates one parameter tensor and
// its state, reading the gradient once, with the rules of optim_rules.wgsl:
// `t[0]` counts the steps taken, `scale[0]` multiplies the gradient and
// `scale[1]` is the base learning rate.

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

// The entry points: one parameter tensor per dispatch, out of place.

@compute @workgroup_size(256)
fn sgd(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
       @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wg, nwg, lid);
    if i >= (o.n + 3u) / 4u { return; }
    let z = vec4<f32>();
    param_out[i] = sgd_rule(with_lr(o, scale[1]), t[0], scale[0], param[i], grad[i], z, z).p;
}

@compute @workgroup_size(256)
fn sgd_momentum(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wg, nwg, lid);
    if i >= (o.n + 3u) / 4u { return; }
    let u = sgd_momentum_rule(with_lr(o, scale[1]), t[0], scale[0], param[i], grad[i], s1[i], vec4<f32>());
    s1_out[i] = u.s1;
    param_out[i] = u.p;
}

@compute @workgroup_size(256)
fn adam(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wg, nwg, lid);
    if i >= (o.n + 3u) / 4u { return; }
    let u = adam_rule(with_lr(o, scale[1]), t[0], scale[0], param[i], grad[i], s1[i], s2[i]);
    s1_out[i] = u.s1;
    s2_out[i] = u.s2;
    param_out[i] = u.p;
}

@compute @workgroup_size(256)
fn rmsprop(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wg, nwg, lid);
    if i >= (o.n + 3u) / 4u { return; }
    let u = rmsprop_rule(with_lr(o, scale[1]), t[0], scale[0], param[i], grad[i], s1[i], vec4<f32>());
    s1_out[i] = u.s1;
    param_out[i] = u.p;
}

@compute @workgroup_size(256)
fn rmsprop_momentum(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wg, nwg, lid);
    if i >= (o.n + 3u) / 4u { return; }
    let u = rmsprop_momentum_rule(with_lr(o, scale[1]), t[0], scale[0], param[i], grad[i], s1[i], s2[i]);
    s1_out[i] = u.s1;
    s2_out[i] = u.s2;
    param_out[i] = u.p;
}

@compute @workgroup_size(256)
fn adagrad(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wg, nwg, lid);
    if i >= (o.n + 3u) / 4u { return; }
    let u = adagrad_rule(with_lr(o, scale[1]), t[0], scale[0], param[i], grad[i], s1[i], vec4<f32>());
    s1_out[i] = u.s1;
    param_out[i] = u.p;
}

@compute @workgroup_size(256)
fn lion(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wg, nwg, lid);
    if i >= (o.n + 3u) / 4u { return; }
    let u = lion_rule(with_lr(o, scale[1]), t[0], scale[0], param[i], grad[i], s1[i], vec4<f32>());
    s1_out[i] = u.s1;
    param_out[i] = u.p;
}
