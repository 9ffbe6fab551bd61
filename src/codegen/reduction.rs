//! Reductions that run the elementwise chains around them: the chain
//! computing a reduction's input runs in it (its prologue: the input is
//! computed where it is read, never stored), and a chain reading its
//! results runs in it too (its epilogue: on each result as it is stored, or
//! over the elements that made it). `shaders/reduce.wgsl`'s kernels call
//! three hook functions and read the hooks' parameters from the last field
//! of their uniform, a struct `Hooks`: the eager module takes the defaults
//! of `shaders/reduce_hooks.wgsl`; this generator writes its own.

use super::chain::{Chain, FusedMember};
use super::kernel::GeneratedKernel;
use crate::ir::{RedInfo, ReduceParams};
use crate::runtime::sources;

/// The chain that computes a reduction's input: `members` over `shape`,
/// member `input` being the input.
pub(crate) struct Prologue<'a> {
    pub shape: &'a [usize],
    pub members: &'a [FusedMember],
    pub input: usize,
}

/// A chain that reads a reduction's results: `members` over `shape`, run
/// on each result as it is stored (`acc`), or — `revisit` — on each element
/// of the input that made the result (`acc` its result).
pub(crate) struct Epilogue<'a> {
    pub shape: &'a [usize],
    pub members: &'a [FusedMember],
    pub revisit: bool,
}

/// The reduction node `info` (its eager `uniform` and workgroup `groups`)
/// with a prologue and an epilogue. `None` when a chain's iteration space
/// has too many dimensions.
pub(crate) fn reduction(
    info: &RedInfo,
    uniform_with_hooks: &[u8],
    groups: [u32; 3],
    prologue: Option<Prologue>,
    epilogue: Option<Epilogue>,
) -> Option<GeneratedKernel> {
    let pro = match prologue {
        Some(p) => Some((Chain::new(p.shape, p.members)?.tagged("q"), p.input)),
        None => None,
    };
    let (mut epi, revisit) = match epilogue {
        Some(e) => (Some(Chain::new(e.shape, e.members)?), e.revisit),
        None => (None, false),
    };
    let mut fields = String::new();
    let mut hooks = String::new();
    let mut bindings = vec![("out".to_string(), info.out.clone())];
    // the eager uniform, its default hooks' field replaced by the chains'
    let mut uniform = uniform_with_hooks[..ReduceParams::HOOKS].to_vec();
    let mut next = 3;
    let mut declarations = String::new();
    match &pro {
        Some((c, m)) => {
            fields += &c.fields("q_");
            hooks += &format!(
                "fn element(i: u32) -> f32 {{\n{}    return bitcast<f32>(t{m} ^ p.hooks.q_zero);\n}}\n",
                c.body("p.hooks.q_")
            );
            declarations += &c.declarations(next);
            bindings.extend(c.bindings());
            uniform.extend_from_slice(bytemuck::cast_slice(&c.words()));
            next += c.strides.len() as u32;
        }
        None => match epi.as_ref().and_then(|c| c.outputs.iter().position(|(_, o)| o.buffer == info.x.buffer)) {
            // the epilogue overwrites the input (one result): read it
            // through the epilogue's binding
            Some(y) => hooks += &format!("fn element(i: u32) -> f32 {{ return bitcast<f32>(y{y}[i]); }}\n"),
            None => {
                hooks += "fn element(i: u32) -> f32 { return x[i]; }\n";
                bindings.push(("x".to_string(), info.x.buffer.clone()));
            }
        },
    }
    if let (Some(c), Some((p, _))) = (epi.as_mut(), &pro) {
        // what the prologue stores, the epilogue reads through its arrays
        for (j, input) in c.inputs.iter().enumerate() {
            if let Some(y) = p.outputs.iter().position(|(_, o)| o.buffer == input.buffer) {
                c.elsewhere[j] = Some(format!("{}y{y}", p.tag));
            }
        }
    }
    let (finished, revisited) = match &epi {
        None => (String::new(), String::new()),
        Some(c) if !revisit => (c.body("p.hooks.e_"), String::new()),
        Some(c) => {
            let body = c.body("p.hooks.e_");
            (
                String::new(),
                format!(
                    "    for (var r = 0u; r < p.n_red; r++) {{\n        let i = base + reduced_offset(r);\n{body}    }}\n"
                ),
            )
        }
    };
    hooks += &format!("fn finished(i: u32, acc: f32) {{\n{finished}}}\n");
    hooks += &format!("fn revisit(base: u32, acc: f32) {{\n{revisited}}}\n");
    if let Some(c) = &epi {
        fields += &c.fields("e_");
        declarations += &c.declarations(next);
        bindings.extend(c.bindings());
        uniform.extend_from_slice(bytemuck::cast_slice(&c.words()));
    }
    if fields.is_empty() {
        // no chain: the default hooks' unused word
        fields += "    unused: u32,\n";
        uniform = uniform_with_hooks.to_vec();
    }
    let wgsl = format!(
        "{}{}\n{}struct Hooks {{\n{fields}}}\n{hooks}{declarations}",
        sources::COMMON,
        sources::ELEMENTWISE_OPS,
        sources::REDUCE
    );
    Some(GeneratedKernel {
        label: "reduction + chain".into(),
        wgsl,
        entry: info.kernel.entry(),
        constants: vec![("OP", info.op.code())],
        subgroups: false,
        bindings,
        uniform,
        groups,
    })
}
