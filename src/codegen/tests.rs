//! Every generator, as a function of its input: the module it writes
//! parses and validates with naga, and its bindings are the buffers it was
//! given, by names its WGSL declares. (A device exists only to make the
//! buffers the vocabulary refers to; nothing is recorded or run.)

use super::*;
use crate::dtype::DType;
use crate::ir::{
    ALoad, BLoad, BinaryOp, EwExpr, EwOperand, MatmulTile, MatmulVariant, MmInfo, OptInfo, RedInfo, ReduceKernel,
    ReduceOp, ReduceParams, Scalar, UnaryOp, Update, UpdateRule, WorkgroupTile,
};
use crate::runtime::DynamicShader;

fn buffers(n: usize) -> Vec<wgpu::Buffer> {
    let dev = crate::Device::new().expect("a device for the buffers");
    let (device, _) = dev.wgpu();
    (0..n)
        .map(|_| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: None,
                size: 256,
                usage: wgpu::BufferUsages::STORAGE,
                mapped_at_creation: false,
            })
        })
        .collect()
}

/// `k` validates, and binds exactly `want` (in any order) under names its
/// module declares.
fn check(what: &str, k: &GeneratedKernel, want: &[&wgpu::Buffer]) {
    let shader = DynamicShader::new(&k.label, &k.wgsl, k.subgroups).unwrap_or_else(|e| panic!("{what}: {e}"));
    let module = naga::front::wgsl::parse_str(&shader.wgsl).expect("validated");
    for (name, _) in &k.bindings {
        let declared = module.global_variables.iter().any(|(_, g)| g.name.as_deref() == Some(name.as_str()));
        assert!(declared, "{what}: binding `{name}` is not declared");
    }
    assert_eq!(
        k.bindings.len(),
        want.len(),
        "{what}: bindings {:?}",
        k.bindings.iter().map(|b| &b.0).collect::<Vec<_>>()
    );
    for b in want {
        assert!(k.bindings.iter().any(|(_, x)| x == *b), "{what}: a buffer is not bound");
    }
    assert!(module.entry_points.iter().any(|e| e.name == k.entry), "{what}: no entry point {}", k.entry);
}

fn dense(buffer: &wgpu::Buffer, shape: &[usize]) -> EwOperand {
    EwOperand { buffer: buffer.clone(), offset: 0, strides: crate::shape::contiguous_strides(shape) }
}

/// tanh(x) · y + 2.5, then where(mask, ·, x), each stored.
fn chain(b: &[wgpu::Buffer], shape: &[usize], first: FusedOperand) -> Vec<FusedMember> {
    let f32 = DType::F32;
    vec![
        FusedMember { expr: EwExpr::Unary { op: UnaryOp::Tanh, dtype: f32 }, operands: vec![first], out: None },
        FusedMember {
            expr: EwExpr::Binary { op: BinaryOp::Mul, dtype: f32, scalar: None },
            operands: vec![FusedOperand::Member(0), FusedOperand::External(dense(&b[1], shape))],
            out: Some(dense(&b[2], shape)),
        },
        FusedMember {
            expr: EwExpr::Binary {
                op: BinaryOp::Add,
                dtype: f32,
                scalar: Some(Scalar { bits: 2.5f32.to_bits(), left: true }),
            },
            operands: vec![FusedOperand::Member(1)],
            out: None,
        },
        FusedMember {
            expr: EwExpr::Where,
            operands: vec![
                FusedOperand::Member(2),
                FusedOperand::External(dense(&b[0], shape)),
                FusedOperand::External(dense(&b[3], shape)),
            ],
            out: Some(dense(&b[4], shape)),
        },
    ]
}

#[test]
fn eager_elementwise_module_calls_every_op() {
    let wgsl = eager_elementwise();
    for op in UnaryOp::ALL {
        assert!(wgsl.contains(&format!("op_{}(", op.name())), "{op:?}");
    }
    for op in BinaryOp::ALL {
        for &dt in op.dtypes() {
            assert!(wgsl.contains(&op.call(dt, "x", "y")), "{op:?} {dt}");
        }
    }
}

#[test]
fn fused_chain_validates() {
    let b = buffers(5);
    let shape = [3, 4];
    let members = chain(&b, &shape, FusedOperand::External(dense(&b[0], &shape)));
    let k = fused_elementwise(&shape, &members).expect("a chain of rank 2");
    check("fused chain", &k, &[&b[0], &b[1], &b[2], &b[3], &b[4]]);
}

#[test]
fn matmul_epilogues_validate() {
    let b = buffers(8);
    let mm = |variant| MmInfo { variant, conv: None, a: b[5].clone(), b: b[6].clone(), c: b[7].clone(), numel: 12 };
    let tile = MatmulTile { rows: 8, cols: 4, unroll: 2, a: ALoad::Scalar, b: BLoad::Scalar };
    for variant in [MatmulVariant::Subgroup(tile), MatmulVariant::Workgroup(WorkgroupTile::DEFAULT)] {
        let members = chain(&b, &[3, 4], FusedOperand::Accumulator);
        let k = matmul_epilogue(&mm(variant), &[0; 16], [1, 1, 1], &[3, 4], &members).expect("rank 2");
        check(&format!("{variant:?} + epilogue"), &k, &[&b[5], &b[6], &b[7], &b[1], &b[2], &b[0], &b[3], &b[4]]);
    }
}

#[test]
fn reductions_with_chains_validate() {
    let b = buffers(8);
    let info = |kernel| RedInfo {
        op: ReduceOp::Sum,
        kernel,
        x: dense(&b[2], &[3, 4]),
        shape: vec![3, 4],
        axes: vec![1],
        out: b[7].clone(),
        outputs: 3,
        last: true,
    };
    let uniform = vec![0u8; std::mem::size_of::<ReduceParams>()];
    // the prologue computes the input (member 1 stores it in b[2])
    let pro = chain(&b, &[3, 4], FusedOperand::External(dense(&b[0], &[3, 4])));
    // x / (its row's result)
    let epi = |first| {
        vec![FusedMember {
            expr: EwExpr::Binary { op: BinaryOp::Div, dtype: DType::F32, scalar: None },
            operands: vec![first, FusedOperand::Accumulator],
            out: Some(dense(&b[6], &[3, 4])),
        }]
    };
    for kernel in [ReduceKernel::Serial, ReduceKernel::Tree] {
        let alone = reduction(&info(kernel), &uniform, [1, 1, 1], None, None).expect("no chains");
        check("reduction", &alone, &[&b[2], &b[7]]);
        let prologue = Some(Prologue { shape: &[3, 4], members: &pro, input: 1 });
        let k = reduction(&info(kernel), &uniform, [1, 1, 1], prologue, None).expect("rank 2");
        check("reduction + prologue", &k, &[&b[7], &b[0], &b[1], &b[2], &b[3], &b[4]]);
        // a softmax-like gradient: over the input, reading the results broadcast
        let members = epi(FusedOperand::External(dense(&b[2], &[3, 4])));
        let epilogue = Some(Epilogue { shape: &[3, 4], members: &members, revisit: true });
        let k = reduction(&info(kernel), &uniform, [1, 1, 1], None, epilogue).expect("rank 2");
        check("reduction + revisiting epilogue", &k, &[&b[7], &b[2], &b[2], &b[6]]);
    }
    let members = vec![FusedMember {
        expr: EwExpr::Unary { op: UnaryOp::Log, dtype: DType::F32 },
        operands: vec![FusedOperand::Accumulator],
        out: Some(dense(&b[6], &[3])),
    }];
    let epilogue = Some(Epilogue { shape: &[3], members: &members, revisit: false });
    let k = reduction(&info(ReduceKernel::Serial), &uniform, [1, 1, 1], None, epilogue).expect("rank 1");
    check("reduction + epilogue", &k, &[&b[7], &b[2], &b[6]]);
}

#[test]
fn optimizers_in_place_validate() {
    let b = buffers(11);
    let rules = [
        (UpdateRule::Sgd, 0),
        (UpdateRule::SgdMomentum, 1),
        (UpdateRule::Adam, 2),
        (UpdateRule::RmsProp, 1),
        (UpdateRule::RmsPropMomentum, 2),
        (UpdateRule::Adagrad, 1),
        (UpdateRule::Lion, 1),
    ];
    for (rule, slots) in rules {
        // tensor k: parameter and state in b[4k..], its gradient b[4k + 3]
        let info = |k: usize, numel| OptInfo {
            rule,
            updates: (0..=slots).map(|s| Update { read: b[4 * k + s].clone(), written: b[10].clone() }).collect(),
            grad: b[4 * k + 3].clone(),
            scale: b[8].clone(),
            t: b[9].clone(),
            numel,
        };
        // one tensor a multiple of 4 long, one not
        let (one, two) = (info(0, 12), info(1, 10));
        let k = optimizer_in_place(&[0; 80], &[&one, &two], Some(StepCount { to: &b[10], one: 1f32.to_bits() }));
        let mut want: Vec<&wgpu::Buffer> = vec![&b[8], &b[9], &b[10]];
        for k in 0..2 {
            want.extend((0..=slots).map(|s| &b[4 * k + s]));
            want.push(&b[4 * k + 3]);
        }
        check(&format!("{rule:?} in place"), &k, &want);
    }
}
