//! Optimizer updates in place: one dispatch applying one update rule of
//! `shaders/optim_rules.wgsl` to several parameter tensors and their state.

use std::fmt::Write;

use super::kernel::GeneratedKernel;
use crate::ir::OptInfo;
use crate::runtime::{grid, sources};

/// The optimizer's step count, advanced by the dispatch that updates the
/// parameters: `to` = `t + from_bits(one)` (the counter's own `t + 1`).
pub(crate) struct StepCount<'a> {
    pub to: &'a wgpu::Buffer,
    pub one: u32,
}

/// One dispatch applying the update rule of `infos` (all one rule, with
/// hyper-parameters `uniform`) to each of their parameter tensors, in
/// place: the parameter and state buffers they read are the ones written.
/// With `count`, it also advances the step count (one invocation writes the
/// new count while all read the old one).
pub(crate) fn optimizer_in_place(uniform: &[u8], infos: &[&OptInfo], count: Option<StepCount>) -> GeneratedKernel {
    let rule = infos[0].rule.function();
    let mut s = String::from(sources::COMMON);
    s += sources::OPTIM_RULES;
    let w = &mut s;
    // writeln! into a String cannot fail
    macro_rules! line { ($($arg:tt)*) => { writeln!(w, $($arg)*).expect("write to String") }; }
    line!("@group(0) @binding(0) var<uniform> o: Opt;");
    line!("@group(0) @binding(1) var<storage, read> scale: array<f32>;");
    line!("@group(0) @binding(2) var<storage, read> t: array<f32>;");
    let named = |name: String, b: &wgpu::Buffer| (name, b.clone());
    let mut bindings = vec![named("scale".into(), &infos[0].scale), named("t".into(), &infos[0].t)];
    for (k, info) in infos.iter().enumerate() {
        let first = 3 + 4 * k as u32;
        line!("@group(0) @binding({first}) var<storage, read_write> p{k}: array<vec4<f32>>;");
        line!("@group(0) @binding({}) var<storage, read> g{k}: array<vec4<f32>>;", first + 1);
        bindings.push(named(format!("p{k}"), &info.updates[0].read));
        bindings.push(named(format!("g{k}"), &info.grad));
        for (slot, update) in info.updates[1..].iter().enumerate() {
            let (b, name) = (first + 2 + slot as u32, format!("s{}_{k}", slot + 1));
            line!("@group(0) @binding({b}) var<storage, read_write> {name}: array<vec4<f32>>;");
            bindings.push(named(name, &update.read));
        }
    }
    if let Some(c) = &count {
        let b = 3 + 4 * infos.len() as u32;
        line!("@group(0) @binding({b}) var<storage, read_write> count: array<f32>;");
        bindings.push(named("count".into(), c.to));
    }
    line!("@compute @workgroup_size(256)");
    line!("fn in_place(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,");
    line!("            @builtin(local_invocation_index) lid: u32) {{");
    line!("    let group = linear_group(wg, nwg);");
    if let Some(c) = &count {
        line!("    if group == 0u && lid == 0u {{ count[0] = t[0] + bitcast<f32>({}u); }}", c.one);
    }
    line!("    let done = t[0];");
    line!("    let factor = scale[0];");
    line!("    let hyper = with_lr(o, scale[1]);");
    line!("    let z = vec4<f32>();");
    // each tensor has workgroups of its own (on a GPU, no workgroup then
    // diverges); `start`: its first workgroup
    let mut start = 0;
    for (k, info) in infos.iter().enumerate() {
        let vectors = info.numel.div_ceil(4);
        let end = start + vectors.div_ceil(256);
        line!("    let j{k} = (group - {start}u) * 256u + lid;");
        line!("    if group >= {start}u && group < {end}u && j{k} < {vectors}u {{");
        line!("        let j = j{k};");
        let state = |slot: usize| {
            if slot < info.updates.len() { format!("s{slot}_{k}[j]") } else { "z".to_string() }
        };
        line!("        let u = {rule}(hyper, done, factor, p{k}[j], g{k}[j], {}, {});", state(1), state(2));
        if info.numel % 4 == 0 {
            line!("        p{k}[j] = u.p;");
            for slot in 1..info.updates.len() {
                line!("        s{slot}_{k}[j] = u.s{slot};");
            }
        } else {
            // lanes past the tensor's end keep their values: the buffer
            // may hold another tensor there
            line!("        let live = 4u * j + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>({}u);", info.numel);
            line!("        p{k}[j] = select(p{k}[j], u.p, live);");
            for slot in 1..info.updates.len() {
                line!("        s{slot}_{k}[j] = select(s{slot}_{k}[j], u.s{slot}, live);");
            }
        }
        line!("    }}");
        start = end;
    }
    line!("}}");
    GeneratedKernel {
        label: "optimizer in place".into(),
        wgsl: s,
        entry: "in_place",
        constants: Vec::new(),
        subgroups: false,
        bindings,
        uniform: uniform.to_vec(),
        groups: grid(start as u32),
    }
}
