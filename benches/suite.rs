//! The benchmark suite (`scripts/bench` runs it with the CPU references;
//! `cargo bench --bench suite` alone prints wgrad's figures).
//!
//! - W1: matmul n×n·n×n, GFLOP/s (and the ratio to numpy's);
//! - the cost of one tiny op: dispatch + submit + read-back, and per op in a
//!   chain submitted once;
//! - W2, W3: one training step (forward, backward, SGD) of the MLP
//!   784-256-10 at batch 128 and 1; W4: the seed's CNN at batch 64 — eager
//!   and compiled, in ms/step (median; each step ends with a read-back of
//!   its loss), with dispatches and submits per step, against HIPS autograd
//!   on numpy for W2 and W3; W5: the `gpt` example's transformer (2 blocks,
//!   width 64, context 64, batch 32) with its optimizer (Adam, gradients
//!   clipped at norm 1);
//! - compiled-step overhead: wall time per step (pipelined, no read-back)
//!   over the sum of its kernels' GPU times (timestamp queries).
//!
//! Options: `--reference FILE` (JSON from benches/reference.py), `--quick`,
//! `--kernels` (every kernel of each compiled step, not only the five slowest).

#[path = "support/models.rs"]
mod models;
#[path = "../examples/support/mod.rs"]
mod support;

use std::time::Instant;

use models::{Cnn, Mlp, cnn_loss, mlp_loss};
use support::gpt;
use wgrad::optim::Optimizer;
use wgrad::{Device, Params, Tensor, compile, grad};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Median seconds of `reps` runs of `f`, after one warm-up run.
fn time(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    median(
        (0..reps)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64()
            })
            .collect(),
    )
}

struct StepRow {
    name: &'static str,
    eager_ms: f64,
    compiled_ms: f64,
    eager_dispatches: u64,
    compiled_dispatches: u64,
    compiled_submits: u64,
    /// wall ms per pipelined compiled step, Σ kernel ms
    overhead: Option<(f64, f64)>,
    /// compiled kernels by label: (label, count, Σ ms), slowest first
    kernels: Vec<(String, usize, f64)>,
}

fn step_row<P: Params>(
    dev: &Device,
    name: &'static str,
    params: P,
    data: (Tensor, Tensor),
    loss: impl Fn(&P, &(Tensor, Tensor)) -> Tensor + Copy,
    mut opt: Optimizer,
    reps: usize,
) -> StepRow {
    opt.init(&params);
    let mut state = (params, opt);
    let mut step = compile(|(p, o): &mut (P, Optimizer), d: &(Tensor, Tensor)| {
        let (g, l, ()) = grad(loss)(p, d);
        *p = o.step(p, &g);
        l
    });
    let read = |l: Tensor| l.item::<f32>().expect("read-back");
    step.run_eager(&mut state, &data);
    dev.sync().expect("sync");
    let before = dev.counters();
    read(step.run_eager(&mut state, &data));
    let eager_dispatches = (dev.counters() - before).dispatches;
    step.run(&mut state, &data).expect("step");
    dev.sync().expect("sync");
    let before = dev.counters();
    step.run(&mut state, &data).expect("step");
    let c = dev.counters() - before;
    // eager and compiled steps alternate, so that both see the same machine
    // (a shared CPU's speed drifts over seconds)
    let (mut eager, mut compiled) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        let t = Instant::now();
        read(step.run_eager(&mut state, &data));
        eager.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        read(step.run(&mut state, &data).expect("step").clone());
        compiled.push(t.elapsed().as_secs_f64());
    }
    let (eager_ms, compiled_ms) = (median(eager) * 1e3, median(compiled) * 1e3);
    let profile = step.profile(&mut state, &data).ok();
    let mut kernels: Vec<(String, usize, f64)> = Vec::new();
    for (label, us) in profile.iter().flatten() {
        match kernels.iter_mut().find(|k| &k.0 == label) {
            Some(k) => (k.1, k.2) = (k.1 + 1, k.2 + us / 1e3),
            None => kernels.push((label.clone(), 1, us / 1e3)),
        }
    }
    kernels.sort_by(|a, b| b.2.total_cmp(&a.2));
    let overhead = profile.map(|kernels| {
        let n = reps.max(5);
        dev.sync().expect("sync");
        let t = Instant::now();
        for _ in 0..n {
            step.run(&mut state, &data).expect("step");
        }
        dev.sync().expect("sync");
        (t.elapsed().as_secs_f64() * 1e3 / n as f64, kernels.iter().map(|k| k.1).sum::<f64>() / 1e3)
    });
    StepRow {
        name,
        eager_ms,
        compiled_ms,
        eager_dispatches,
        compiled_dispatches: c.dispatches,
        compiled_submits: c.submits,
        overhead,
        kernels,
    }
}

fn main() -> wgrad::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let all_kernels = args.iter().any(|a| a == "--kernels");
    let reference: Option<serde_json::Value> = args
        .iter()
        .position(|a| a == "--reference")
        .and_then(|i| args.get(i + 1))
        .and_then(|path| std::fs::read_to_string(path).ok())
        .and_then(|text| serde_json::from_str(&text).ok());
    let numpy = |n: usize| reference.as_ref().and_then(|r| r["numpy_matmul_gflops"][n.to_string()].as_f64());
    let hips = |b: usize| reference.as_ref().and_then(|r| r["autograd_mlp_ms"][b.to_string()].as_f64());
    let ratio = |x: Option<f64>| x.map_or("–".to_string(), |x| format!("{x:.2}"));

    let dev = Device::new()?;
    let info = dev.adapter_info();
    println!("adapter: {} ({:?}, {})\n", info.name, info.backend, info.driver_info);
    if let Some(tuned) = dev.matmul_autotune() {
        println!("{tuned}\n");
    }

    println!("W1: matmul n×n·n×n\n");
    println!("| n | wgrad GFLOP/s | numpy GFLOP/s | wgrad / numpy |");
    println!("|---|---|---|---|");
    let sizes: &[usize] = if quick { &[256, 1024] } else { &[256, 512, 1024, 2048] };
    for &n in sizes {
        dev.manual_seed(n as u64);
        let a = Tensor::randn(&dev, &[n, n]);
        let b = Tensor::randn(&dev, &[n, n]);
        // several products per submission amortise submit + read-back
        let per = if n <= 512 { 8 } else { 2 };
        let s = time(if n >= 2048 { 3 } else { 5 }, || {
            let mut acc = a.matmul(&b).narrow(0, 0, 1).sum_all();
            for _ in 1..per {
                acc = acc + a.matmul(&b).narrow(0, 0, 1).sum_all();
            }
            acc.item::<f32>().expect("read-back");
        }) / per as f64;
        let g = 2.0 * (n as f64).powi(3) / s / 1e9;
        let np = numpy(n);
        println!("| {n} | {g:.1} | {} | {} |", np.map_or("–".into(), |x| format!("{x:.1}")), ratio(np.map(|x| g / x)));
    }

    println!("\ntiny ops\n");
    let x = Tensor::ones(&dev, &[1]);
    let tiny = time(200, || {
        (&x + 1.0).item::<f32>().expect("read-back");
    });
    let chain = time(20, || {
        let mut y = x.clone();
        for _ in 0..100 {
            y = &y + 1.0;
        }
        y.item::<f32>().expect("read-back");
    });
    println!("| | µs |");
    println!("|---|---|");
    println!("| one 1-element add: dispatch + submit + read-back | {:.0} |", tiny * 1e6);
    println!("| each add of a 100-add chain submitted once | {:.1} |", chain * 1e6 / 100.0);

    dev.manual_seed(0);
    let mlp = |dev: &Device| Mlp {
        w1: Tensor::randn(dev, &[784, 256]) * 0.05,
        b1: Tensor::zeros(dev, &[256]),
        w2: Tensor::randn(dev, &[256, 10]) * 0.05,
        b2: Tensor::zeros(dev, &[10]),
    };
    let batch = |n: usize| {
        let labels = Tensor::arange(&dev, 0.0, n as f32, 1.0).cast(wgrad::DType::U32);
        (Tensor::rand(&dev, &[n, 784]), (&labels - &(&labels / 10u32 * 10u32)).one_hot(10))
    };
    let reps = if quick { 10 } else { 50 };
    let sgd = || Optimizer::sgd(0.01);
    let mut rows = vec![
        step_row(&dev, "W2: MLP 784-256-10, batch 128", mlp(&dev), batch(128), mlp_loss, sgd(), reps),
        step_row(&dev, "W3: MLP 784-256-10, batch 1", mlp(&dev), batch(1), mlp_loss, sgd(), reps * 2),
    ];
    let cnn = Cnn::new(&dev);
    let labels = Tensor::arange(&dev, 0.0, 64.0, 1.0).cast(wgrad::DType::U32);
    let cnn_data = (Tensor::rand(&dev, &[64, 1, 28, 28]), &labels - &(&labels / 10u32 * 10u32));
    rows.push(step_row(&dev, "W4: CNN (seed's), batch 64", cnn, cnn_data, cnn_loss, sgd(), if quick { 3 } else { 10 }));
    // the gpt example's model and optimizer on random characters of a
    // 73-letter alphabet (as many letters as its data has)
    let vocab = 73;
    let ids = |dev: &Device| (Tensor::rand(dev, &[32, gpt::CONTEXT]) * vocab as f32).floor().cast(wgrad::DType::U32);
    let adam = Optimizer::adam(5e-3).clip_grad_norm(1.0);
    let gpt_data = (ids(&dev), ids(&dev));
    let model = gpt::Gpt::new(&dev, vocab);
    rows.push(step_row(
        &dev,
        "W5: GPT (gpt example), batch 32",
        model,
        gpt_data,
        gpt::loss,
        adam,
        if quick { 3 } else { 10 },
    ));

    println!("\ntraining steps (forward + backward + SGD), ms/step\n");
    println!(
        "| step | eager | compiled | HIPS autograd | compiled / HIPS | eager / compiled | dispatches eager → compiled | submits/step (compiled) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (i, r) in rows.iter().enumerate() {
        let h = match i {
            0 => hips(128),
            1 => hips(1),
            _ => None,
        };
        println!(
            "| {} | {:.2} | {:.2} | {} | {} | {:.2} | {} → {} | {} |",
            r.name,
            r.eager_ms,
            r.compiled_ms,
            h.map_or("–".into(), |x| format!("{x:.2}")),
            ratio(h.map(|h| r.compiled_ms / h)),
            r.eager_ms / r.compiled_ms,
            r.eager_dispatches,
            r.compiled_dispatches,
            r.compiled_submits
        );
    }
    println!("\ncompiled-step overhead (pipelined steps, GPU timestamps)\n");
    println!("| step | wall ms/step | Σ kernel ms | wall / kernels |");
    println!("|---|---|---|---|");
    for r in &rows {
        match r.overhead {
            Some((wall, kernels)) => println!("| {} | {wall:.2} | {kernels:.2} | {:.2} |", r.name, wall / kernels),
            None => println!("| {} | – | – | no timestamp queries |", r.name),
        }
    }
    let shown = if all_kernels { usize::MAX } else { 5 };
    println!(
        "\nwhere the compiled steps spend their time ({} kernels)\n",
        if all_kernels { "all" } else { "the five slowest" }
    );
    println!("| step | kernel | dispatches | ms | share |");
    println!("|---|---|---|---|---|");
    for r in &rows {
        let total: f64 = r.kernels.iter().map(|k| k.2).sum();
        for (label, n, ms) in r.kernels.iter().take(shown) {
            println!("| {} | {label} | {n} | {ms:.2} | {:.0} % |", r.name, 100.0 * ms / total);
        }
    }
    Ok(())
}
