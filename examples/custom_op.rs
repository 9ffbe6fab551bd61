//! A primitive of your own: softsign(x) = x / (1 + |x|) with a WGSL forward
//! kernel and a WGSL backward kernel, checked with gradcheck, then used
//! inside a model trained with `grad`.
//!
//! Run: `cargo run --release --example custom_op` (`-- --help` for options).

mod support;

use std::process::ExitCode;
use std::sync::Arc;

use wgrad::{CustomKernel, CustomOp, DType, Device, GradcheckOptions, Tensor, grad, gradcheck};

const FORWARD: &str = "
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

// softsign(x) = x / (1 + |x|)
@compute @workgroup_size(64)
fn forward(@builtin(global_invocation_id) id: vec3<u32>) {
    let i = id.x;
    if i < arrayLength(&y) { y[i] = x[i] / (1.0 + abs(x[i])); }
}";

const BACKWARD: &str = "
@group(0) @binding(1) var<storage, read> g: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> dx: array<f32>;

// d softsign / dx = 1 / (1 + |x|)²
@compute @workgroup_size(64)
fn backward(@builtin(global_invocation_id) id: vec3<u32>) {
    let i = id.x;
    if i < arrayLength(&dx) {
        let d = 1.0 + abs(x[i]);
        dx[i] = g[i] / (d * d);
    }
}";

struct Softsign {
    forward: CustomKernel,
    backward: CustomKernel,
}

impl CustomOp for Softsign {
    fn name(&self) -> &str {
        "softsign"
    }

    fn forward(&self, inputs: &[&Tensor]) -> Tensor {
        let x = inputs[0];
        let groups = (x.numel() as u32).div_ceil(64);
        self.forward.launch(&[x], x.shape(), DType::F32, &[], [groups, 1, 1])
    }

    fn vjp(&self, g: &Tensor, inputs: &[&Tensor], _output: &Tensor) -> Vec<Option<Tensor>> {
        let x = inputs[0];
        let groups = (x.numel() as u32).div_ceil(64);
        vec![Some(self.backward.launch(&[g, x], x.shape(), DType::F32, &[], [groups, 1, 1]))]
    }
}

fn main() -> ExitCode {
    support::main(run)
}

fn run() -> support::Result<()> {
    let quick = support::command_line(
        "custom_op",
        "A primitive of your own: softsign with WGSL forward and backward kernels, gradchecked, then trained.",
        &["--quick        check that training recovers the weights (it is quick already)".to_string()],
        |p| Ok(p.flag("--quick")),
    );
    let dev = Device::new()?;
    let softsign: Arc<dyn CustomOp> = Arc::new(Softsign {
        forward: CustomKernel::new(&dev, "softsign", FORWARD, "forward")?,
        backward: CustomKernel::new(&dev, "softsign backward", BACKWARD, "backward")?,
    });

    // 1. The op against finite differences.
    dev.manual_seed(1);
    let x = Tensor::randn(&dev, &[1000]) * 3.0;
    let f = |x: &Tensor, op: &Arc<dyn CustomOp>| Tensor::custom(op.clone(), &[x]).square().sum_all();
    let report = gradcheck(f, &x, &softsign, &GradcheckOptions::default())?;
    println!("gradcheck of softsign: {:?} → {}", report.directions, if report.passed { "passed" } else { "FAILED" });
    if !report.passed {
        return Err("softsign's gradients disagree with finite differences".into());
    }

    // 2. Inside a model: fit y = softsign(x·w) to a target, by gradient descent.
    let inputs = Tensor::randn(&dev, &[256, 8]);
    let true_w = Tensor::randn(&dev, &[8, 1]);
    let target = Tensor::custom(softsign.clone(), &[&inputs.matmul(&true_w)]);
    let loss_fn = |w: &Tensor, (x, y, op): &(Tensor, Tensor, Arc<dyn CustomOp>)| {
        (Tensor::custom(op.clone(), &[&x.matmul(w)]) - y).square().mean_all()
    };
    let df = grad(loss_fn);
    let data = (inputs, target, softsign);
    let mut w = Tensor::zeros(&dev, &[8, 1]);
    for step in 0..=200 {
        let (g, loss, ()) = df(&w, &data);
        w = &w - &(g * 2.0);
        if step % 50 == 0 {
            println!("step {step:3}: loss {:.6}", loss.item::<f32>()?);
        }
    }
    let err: f32 = (&w - &true_w).abs().max(&[0, 1], false).item()?;
    println!("largest weight error after training: {err:.4}");
    support::check(quick, &format!("largest weight error {err:.4} below 0.05"), err < 0.05)
}
