//! Users' own primitives: WGSL kernels, custom VJPs, gradcheck on them.

mod common;

use std::sync::Arc;

use common::*;
use wgrad::{CustomKernel, CustomOp, DType, Error, GradcheckOptions, Tensor, gradcheck, hvp};

const SQUARE: &str = "
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    if id.x < arrayLength(&y) { y[id.x] = x[id.x] * x[id.x]; }
}";

const SCALE: &str = "
struct P { k: f32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> g: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> dx: array<f32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    if id.x < arrayLength(&dx) { dx[id.x] = p.k * g[id.x] * x[id.x]; }
}";

/// x², forward by a kernel; backward by a kernel scaling g·x by `k` (k = 2
/// is right, anything else is a bug gradcheck must catch), or by ops.
struct Square {
    forward: CustomKernel,
    backward: Option<(CustomKernel, f32)>,
}

impl CustomOp for Square {
    fn name(&self) -> &str {
        "square"
    }
    fn forward(&self, x: &[&Tensor]) -> Tensor {
        self.forward.launch(x, x[0].shape(), DType::F32, &[], [(x[0].numel() as u32).div_ceil(64), 1, 1])
    }
    fn vjp(&self, g: &Tensor, x: &[&Tensor], _: &Tensor) -> Vec<Option<Tensor>> {
        match &self.backward {
            Some((k, scale)) => {
                let groups = [(x[0].numel() as u32).div_ceil(64), 1, 1];
                vec![Some(k.launch(&[g, x[0]], x[0].shape(), DType::F32, bytemuck::bytes_of(scale), groups))]
            }
            None => vec![Some(g * x[0] * 2.0)],
        }
    }
}

fn square(backward: Option<f32>) -> Arc<dyn CustomOp> {
    let d = dev();
    Arc::new(Square {
        forward: CustomKernel::new(d, "square", SQUARE, "main").unwrap(),
        backward: backward.map(|k| (CustomKernel::new(d, "square backward", SCALE, "main").unwrap(), k)),
    })
}

fn loss(x: &Tensor, op: &Arc<dyn CustomOp>) -> Tensor {
    (Tensor::custom(op.clone(), &[x]) * x.sin()).sum_all()
}

#[test]
fn gradcheck_accepts_a_right_backward_and_rejects_a_wrong_one() {
    let x = upload(&Rng::new(31).array(&[300], -2.0, 2.0));
    let opts = GradcheckOptions::default();
    assert!(gradcheck(loss, &x, &square(Some(2.0)), &opts).unwrap().passed);
    assert!(gradcheck(loss, &x, &square(None), &opts).unwrap().passed);
    let wrong = gradcheck(loss, &x, &square(Some(2.1)), &opts).unwrap();
    assert!(!wrong.passed, "a 5 % error in a backward must fail: {wrong:?}");
}

#[test]
fn backward_written_with_ops_is_twice_differentiable() {
    let x = upload(&Array::new(&[3], vec![0.5, -1.0, 2.0]));
    let v = upload(&Array::new(&[3], vec![1.0, 1.0, 1.0]));
    // f = Σ x²·sin x: f'' = 2 sin x + 4x cos x − x² sin x (diagonal)
    let h = hvp(loss, &x, &square(None), &v);
    let want: Vec<f32> =
        [0.5f32, -1.0, 2.0].iter().map(|&x| 2.0 * x.sin() + 4.0 * x * x.cos() - x * x * x.sin()).collect();
    for (a, b) in h.to_vec::<f32>().unwrap().iter().zip(&want) {
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    }
}

#[test]
fn a_kernel_backward_is_not_twice_differentiable() {
    let x = upload(&Array::new(&[3], vec![0.5, -1.0, 2.0]));
    let op = square(Some(2.0));
    let (msg, _) = panic_of(std::panic::AssertUnwindSafe(|| drop(hvp(loss, &x, &op, &x))));
    assert!(msg.contains("square backward") && msg.contains("not twice differentiable"), "{msg}");
}

#[test]
fn invalid_wgsl_is_an_error_with_its_line() {
    let err = CustomKernel::new(dev(), "broken", "fn main() {\n  let x = ;\n}", "main").err().expect("an error");
    assert!(matches!(err, Error::Shader { .. }));
    let msg = err.to_string();
    assert!(msg.contains("broken") && msg.contains(":2:"), "{msg}");
}
