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

/// x² with a backward right to first order that is not differentiable
/// (it detaches x), or with a wrong forward mode (J·t = 3x·t).
struct Flawed {
    square: Arc<dyn CustomOp>,
    detach: bool,
}

impl CustomOp for Flawed {
    fn name(&self) -> &str {
        "flawed square"
    }
    fn forward(&self, x: &[&Tensor]) -> Tensor {
        self.square.forward(x)
    }
    fn vjp(&self, g: &Tensor, x: &[&Tensor], _: &Tensor) -> Vec<Option<Tensor>> {
        if self.detach { vec![Some(g * &x[0].detach() * 2.0)] } else { vec![Some(g * x[0] * 2.0)] }
    }
    fn jvp(&self, t: &[Option<&Tensor>], x: &[&Tensor], _: &Tensor) -> Option<Tensor> {
        let factor = if self.detach { 2.0 } else { 3.0 };
        Some(t[0]? * x[0] * factor)
    }
}

#[test]
fn gradcheck_checks_the_full_jacobian_forward_mode_and_second_order() {
    let x = upload(&Array::new(&[4], vec![0.5, -1.0, 2.0, 0.3]));
    // a vector function: all 16 entries of its Jacobian
    let f = |x: &Tensor, op: &Arc<dyn CustomOp>| Tensor::custom(op.clone(), &[x]) * x.sin().sum_all();
    let all = GradcheckOptions { full: true, forward: true, order: 2, ..Default::default() };
    let right = gradcheck(f, &x, &square(None), &all).unwrap();
    assert!(right.passed && right.jacobian_entries == 16 && right.second_order.len() == 3, "{right:?}");
    // a kernel backward 5 % off fails entry by entry
    let full = GradcheckOptions { full: true, ..Default::default() };
    let wrong = gradcheck(f, &x, &square(Some(2.1)), &full).unwrap();
    assert!(!wrong.passed && wrong.failures.iter().any(|m| m.starts_with("∂y[2]/∂x[2] by reverse mode")), "{wrong:?}");
    // a wrong forward mode passes the reverse checks and fails the forward one
    let bad_jvp: Arc<dyn CustomOp> = Arc::new(Flawed { square: square(None), detach: false });
    let reverse_only = gradcheck(f, &x, &bad_jvp, &GradcheckOptions::default()).unwrap();
    assert!(reverse_only.passed, "{reverse_only:?}");
    let both = gradcheck(f, &x, &bad_jvp, &GradcheckOptions { forward: true, ..Default::default() }).unwrap();
    assert!(!both.passed && both.failures.iter().all(|m| m.contains("by jvp")), "{both:?}");
    // first derivatives right, second wrong: only order 2 sees it
    let detached: Arc<dyn CustomOp> = Arc::new(Flawed { square: square(None), detach: true });
    assert!(gradcheck(f, &x, &detached, &GradcheckOptions { forward: true, ..Default::default() }).unwrap().passed);
    let second = gradcheck(f, &x, &detached, &GradcheckOptions { order: 2, ..Default::default() }).unwrap();
    assert!(!second.passed && second.failures.iter().any(|m| m.contains("⟨H·u, v⟩")), "{second:?}");
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
