//! When data parallelism pays (`cargo bench --bench scale`; `-- --paper`
//! prints only the calculation).
//!
//! On paper: a step of N replicas costs its compute time plus moving the
//! gradients — a read-back and an upload over the host link, and a ring
//! all-reduce, which sends and receives 2·(N−1)/N of the gradient bytes per
//! rank in 2·(N−1) messages. wgrad's all-reduce does not overlap the
//! backward pass, so the speed-up of N replicas, each with the batch one
//! replica had, is N·t_compute / (t_compute + t_host + t_all-reduce).
//!
//! Measured: the seed's CNN (global batch 64) on one replica and on two in
//! this process (one adapter opened twice), alternated, with the share of
//! the step spent in the all-reduce.

#[path = "support/models.rs"]
mod models;

use std::time::Instant;

use models::{Cnn, cnn_loss};
use wgrad::optim::Optimizer;
use wgrad::parallel::DataParallel;
use wgrad::{Device, Params, Tensor, compile, grad};

/// A model's size and the compute time of one replica's step.
struct Model {
    name: &'static str,
    params: f64,
    /// Seconds of forward + backward + update for one replica's batch.
    compute_s: f64,
    /// Where `compute_s` comes from.
    source: &'static str,
}

/// A link between ranks: bandwidth (bytes/s each way) and latency (s).
struct Link {
    name: &'static str,
    bandwidth: f64,
    latency: f64,
}

/// Bytes each rank sends (and receives) in a ring all-reduce of `bytes`.
fn ring_bytes(bytes: f64, n: usize) -> f64 {
    2.0 * (n as f64 - 1.0) / n as f64 * bytes
}

/// Seconds of a ring all-reduce of `bytes` over `n` ranks on `link`.
fn all_reduce_s(bytes: f64, n: usize, link: &Link) -> f64 {
    ring_bytes(bytes, n) / link.bandwidth + 2.0 * (n as f64 - 1.0) * link.latency
}

/// The read-back and upload of the gradients over a host link of
/// `bandwidth` bytes/s (PCIe 4.0 ×16 ≈ 25 GB/s).
fn host_s(bytes: f64, bandwidth: f64) -> f64 {
    2.0 * bytes / bandwidth
}

fn paper() {
    // Measured compute: the README's "Benchmarks" (the CNN's compiled step,
    // lavapipe and H200) and examples table (the GPT's compiled step); for
    // the GPT-2-sized model, 6·params·tokens FLOPs (8 × 1,024 tokens per
    // replica) at the 18 TFLOP/s wgrad's f32 matmul reaches there.
    let gpt2_s = 6.0 * 124e6 * 8192.0 / 18e12;
    let models = [
        Model { name: "CNN (mnist)", params: 28_938.0, compute_s: 0.132, source: "lavapipe" },
        Model { name: "CNN (mnist)", params: 28_938.0, compute_s: 0.73e-3, source: "H200" },
        Model { name: "GPT (example)", params: 108e3, compute_s: 0.241, source: "lavapipe" },
        Model { name: "GPT-2 small", params: 124e6, compute_s: gpt2_s, source: "H200, 6·P·tokens at 18 TFLOP/s" },
    ];
    let links = [
        Link { name: "10 GbE", bandwidth: 1.25e9, latency: 20e-6 },
        Link { name: "100 Gb/s InfiniBand", bandwidth: 12.5e9, latency: 2e-6 },
    ];
    let pcie = 25e9;
    println!("data parallelism on paper: speed-up of N replicas (each with one replica's batch)");
    println!(
        "exchange = read-back + upload over a 25 GB/s host link + ring all-reduce (2·(N−1)/N of the bytes per rank)\n"
    );
    print!("| model | parameters | gradient MB | compute ms/step | N |");
    for l in &links {
        print!(" {}: exchange ms | speed-up |", l.name);
    }
    println!();
    println!("|---|---|---|---|---|{}", "---|---|".repeat(links.len()));
    for m in &models {
        let bytes = 4.0 * m.params;
        for n in [2usize, 8] {
            print!(
                "| {} ({}) | {:.0} | {:.3} | {:.2} | {n} |",
                m.name,
                m.source,
                m.params,
                bytes / 1e6,
                1e3 * m.compute_s
            );
            for l in &links {
                let comm = host_s(bytes, pcie) + all_reduce_s(bytes, n, l);
                print!(" {:.3} | {:.2}× |", 1e3 * comm, n as f64 * m.compute_s / (m.compute_s + comm));
            }
            println!();
        }
    }
    println!();
}

/// Runs `steps` data-parallel CNN steps on `dp`'s replicas (global batch
/// 64); returns (seconds per step, seconds per step in the all-reduce).
fn cnn_steps(dp: &mut DataParallel, steps: usize) -> wgrad::Result<(f64, f64)> {
    let dev = dp.devices()[0].clone();
    dev.manual_seed(0);
    let model = Cnn::new(&dev);
    let n = dp.devices().len();
    let mut states: Vec<(Cnn, Optimizer)> =
        dp.replicate(&model)?.into_iter().map(|m| (m, Optimizer::sgd(0.05))).collect();
    for (m, opt) in &mut states {
        opt.init(m);
    }
    let mut grads: Vec<_> =
        (0..n).map(|_| compile(|m: &mut Cnn, b: &(Tensor, Tensor)| grad(cnn_loss)(m, b).0)).collect();
    let mut updates: Vec<_> =
        (0..n).map(|_| compile(|(m, opt): &mut (Cnn, Optimizer), g: &Cnn| *m = opt.step(m, g))).collect();
    let batches: Vec<(Tensor, Tensor)> = dp
        .devices()
        .iter()
        .enumerate()
        .map(|(r, d)| {
            let len = dp.shard(r, 64).len();
            let labels = Tensor::arange(d, 0.0, len as f32, 1.0).cast(wgrad::DType::U32);
            (Tensor::rand(d, &[len, 1, 28, 28]), &labels - &(&labels / 10u32 * 10u32))
        })
        .collect();
    let (mut total, mut before) = (0.0, dp.stats());
    for step in 0..=steps {
        let t = Instant::now();
        let mut local = Vec::with_capacity(n);
        for ((g, (m, _)), b) in grads.iter_mut().zip(&mut states).zip(&batches) {
            local.push(g.run(m, b)?.map(Tensor::clone));
        }
        for d in dp.devices() {
            d.sync()?;
        }
        let mean = dp.all_reduce(&local)?;
        for ((u, s), g) in updates.iter_mut().zip(&mut states).zip(&mean) {
            u.run(s, g)?;
        }
        for d in dp.devices() {
            d.sync()?;
        }
        match step {
            0 => before = dp.stats(),
            _ => total += t.elapsed().as_secs_f64(),
        }
    }
    let after = dp.stats();
    let reduce = (after.read_s + after.reduce_s + after.write_s) - (before.read_s + before.reduce_s + before.write_s);
    Ok((total / steps as f64, reduce / steps as f64))
}

/// The plain compiled step (gradient and update in one submission) on one
/// device, batch 64: seconds per step.
fn plain_steps(dev: &Device, steps: usize) -> wgrad::Result<f64> {
    dev.manual_seed(0);
    let model = Cnn::new(dev);
    let mut opt = Optimizer::sgd(0.05);
    opt.init(&model);
    let mut state = (model, opt);
    let mut step = compile(|(m, opt): &mut (Cnn, Optimizer), b: &(Tensor, Tensor)| {
        let g = grad(cnn_loss)(m, b).0;
        *m = opt.step(m, &g);
    });
    let labels = Tensor::arange(dev, 0.0, 64.0, 1.0).cast(wgrad::DType::U32);
    let batch = (Tensor::rand(dev, &[64, 1, 28, 28]), &labels - &(&labels / 10u32 * 10u32));
    step.run(&mut state, &batch)?;
    dev.sync()?;
    let t = Instant::now();
    for _ in 0..steps {
        step.run(&mut state, &batch)?;
        dev.sync()?;
    }
    Ok(t.elapsed().as_secs_f64() / steps as f64)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> wgrad::Result<()> {
    paper();
    if std::env::args().any(|a| a == "--paper") {
        return Ok(());
    }
    let mut one = DataParallel::new(vec![Device::new()?]);
    let mut two = DataParallel::new(vec![Device::new()?, Device::new()?]);
    let (mut plain, mut a, mut b) = (Vec::new(), Vec::new(), Vec::new());
    // alternated rounds: the machine's speed drifts
    for _ in 0..5 {
        plain.push((plain_steps(&one.devices()[0].clone(), 4)?, 0.0));
        a.push(cnn_steps(&mut one, 4)?);
        b.push(cnn_steps(&mut two, 4)?);
    }
    let row = |name: &str, v: &[(f64, f64)]| {
        let (step, reduce) = (median(v.iter().map(|x| x.0).collect()), median(v.iter().map(|x| x.1).collect()));
        match reduce > 0.0 {
            true => println!("| {name} | {:.1} | {:.2} | {:.1} % |", 1e3 * step, 1e3 * reduce, 100.0 * reduce / step),
            false => println!("| {name} | {:.1} | – | – |", 1e3 * step),
        }
        step
    };
    println!("measured here: the CNN, global batch 64, replicas in one process (medians of 5 alternated rounds)\n");
    println!("| replicas | ms/step | all-reduce ms/step | all-reduce share |");
    println!("|---|---|---|---|");
    let s0 = row("plain compiled step (no DataParallel)", &plain);
    let s1 = row("1", &a);
    let s2 = row("2 (one adapter opened twice)", &b);
    println!(
        "\none replica / plain step: {:.2}; two replicas / one: {:.2} (gradient bytes per replica and step: {})",
        s1 / s0,
        s2 / s1,
        one.stats().bytes
    );
    Ok(())
}
