//! The elementwise modules: the eager kernels' module, whose switches over
//! the op codes are written from the op tables, and fused chains.

use std::fmt::Write;

use super::chain::{Chain, FusedMember};
use super::kernel::GeneratedKernel;
use crate::dtype::DType;
use crate::ir::{BinaryOp, UnaryOp};
use crate::runtime::{grid, sources};

/// The eager elementwise module (`shaders/elementwise.wgsl`): the op
/// functions, `unary_bits` and `binary_bits` — one case per op, calling
/// its function for the dtype `dt` — and the kernels, which choose the op
/// with the pipeline constants `OP` (the op's index in its table) and `DT`
/// (the dtype's code).
pub(crate) fn eager_elementwise() -> String {
    let mut s = String::from(sources::COMMON);
    s += sources::ELEMENTWISE_OPS;
    let w = &mut s;
    // writeln! into a String cannot fail
    macro_rules! line { ($($arg:tt)*) => { writeln!(w, $($arg)*).expect("write to String") }; }
    // a case per op: its function for each dtype it accepts, f32 last
    let case = |dtypes: &[DType], call: &dyn Fn(DType) -> String| {
        let mut c = String::new();
        for &dt in dtypes.iter().filter(|&&d| d != DType::F32) {
            c += &format!("if dt == {}u {{ return {}; }} ", dt.code(), call(dt));
        }
        c + &format!("return {};", call(DType::F32))
    };
    line!("\n// The op's bits from its operands' bits (generated from the op tables).");
    line!("fn unary_bits(op: u32, dt: u32, x: u32) -> u32 {{");
    line!("    switch op {{");
    for &op in UnaryOp::ALL {
        line!("        case {}u: {{ {} }}", op.code(), case(op.dtypes(), &|dt| op.call(dt, "x")));
    }
    line!("        default: {{ return 0u; }}");
    line!("    }}");
    line!("}}");
    line!("fn binary_bits(op: u32, dt: u32, x: u32, y: u32) -> u32 {{");
    line!("    switch op {{");
    for &op in BinaryOp::ALL {
        line!("        case {}u: {{ {} }}", op.code(), case(op.dtypes(), &|dt| op.call(dt, "x", "y")));
    }
    line!("        default: {{ return 0u; }}");
    line!("    }}");
    line!("}}\n");
    s + sources::ELEMENTWISE
}

/// A dispatch running `members` per element of `shape` in one kernel, built
/// from the eager kernels' op functions (`shaders/elementwise_ops.wgsl`).
/// `None` when the iteration space has too many dimensions.
pub(crate) fn fused_elementwise(shape: &[usize], members: &[FusedMember]) -> Option<GeneratedKernel> {
    let chain = Chain::new(shape, members)?;
    let mut s = String::from(sources::COMMON);
    s += sources::ELEMENTWISE_OPS;
    s += &format!("struct Fused {{\n{}}}\n", chain.fields(""));
    s += "@group(0) @binding(0) var<uniform> p: Fused;\n";
    s += &chain.declarations(1);
    s += "@compute @workgroup_size(256)
fn fused(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wg, nwg, lid);
    if i >= p.numel { return; }
";
    s += &chain.body("p.");
    s += "}\n";
    Some(GeneratedKernel {
        label: "fused elementwise".into(),
        wgsl: s,
        entry: "fused",
        constants: Vec::new(),
        subgroups: false,
        bindings: chain.bindings(),
        uniform: bytemuck::cast_slice(&chain.words()).to_vec(),
        groups: grid(chain.numel().div_ceil(256) as u32),
    })
}

#[cfg(test)]
mod tests {
    /// The eager module parses and validates, and the dtype codes the
    /// host passes agree with the shader's.
    #[test]
    fn eager_module_validates() {
        let wgsl = super::eager_elementwise();
        let module = naga::front::wgsl::parse_str(&wgsl).unwrap_or_else(|e| panic!("{}", e.emit_to_string(&wgsl)));
        naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all())
            .validate(&module)
            .unwrap_or_else(|e| panic!("{}", e.emit_to_string(&wgsl)));
        for dt in [crate::DType::F32, crate::DType::I32, crate::DType::U32] {
            let name = dt.to_string().to_uppercase();
            let (_, c) = module.constants.iter().find(|(_, c)| c.name.as_deref() == Some(&name)).expect("a dtype code");
            let code = match module.global_expressions[c.init] {
                naga::Expression::Literal(naga::Literal::U32(v)) => v,
                ref e => panic!("{name} is {e:?}"),
            };
            assert_eq!(code, dt.code(), "{dt}");
        }
    }
}
