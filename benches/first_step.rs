//! The first training step of a fresh process: the MLP 784-256-10 at batch
//! 128 (forward, backward, SGD, the loss read back), eager and compiled,
//! with cold caches (empty shader caches: Mesa's and wgrad's) and warm ones
//! (those a previous process left). Each figure is a fresh child process,
//! timed from its start to its exit.
//!
//! `cargo bench --bench first_step` prints the table (`--reference FILE`
//! adds HIPS autograd's first step from benches/reference.py, `--quick`
//! fewer runs); `-- --child eager|compiled` runs one first step and prints
//! where its time went.

use std::time::Instant;

use wgrad::optim::Optimizer;
use wgrad::{Device, Params, Tensor, compile, grad};

#[derive(Params)]
struct Mlp {
    w1: Tensor,
    b1: Tensor,
    w2: Tensor,
    b2: Tensor,
}

fn mlp_loss(p: &Mlp, (x, y): &(Tensor, Tensor)) -> Tensor {
    let h = (x.matmul(&p.w1) + &p.b1).tanh();
    -((h.matmul(&p.w2) + &p.b2).log_softmax(-1) * y).sum_all() / x.dim(0) as f32
}

/// Values in [−scale, scale) from a fixed sequence (host data, as a user's
/// initialisation or a batch read from disk).
fn host(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9e3779b97f4a7c15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 23) as f32 - 1.0) * scale
        })
        .collect()
}

/// One first step in this process; prints `phase ms` lines.
fn child(compiled: bool) -> wgrad::Result<()> {
    let start = Instant::now();
    let mut last = Instant::now();
    let mut phase = |name: &str, dev: Option<&Device>| {
        let pipelines = dev.map_or(String::new(), |d| format!(" ({} pipelines)", d.counters().pipelines));
        println!("{name} {:.1}{pipelines}", last.elapsed().as_secs_f64() * 1e3);
        last = Instant::now();
    };
    let dev = Device::new()?;
    phase("device", None);
    let (b, d, h) = (128, 784, 256);
    let params = Mlp {
        w1: Tensor::from_slice(&dev, &host(d * h, 1, 0.05), &[d, h]),
        b1: Tensor::zeros(&dev, &[h]),
        w2: Tensor::from_slice(&dev, &host(h * 10, 2, 0.05), &[h, 10]),
        b2: Tensor::zeros(&dev, &[10]),
    };
    let x = Tensor::from_slice(&dev, &host(b * d, 3, 1.0), &[b, d]);
    let y: Vec<f32> = (0..b * 10).map(|i| (i % 10 == (i / 10) % 10) as u8 as f32).collect();
    let data = (x, Tensor::from_slice(&dev, &y, &[b, 10]));
    let mut opt = Optimizer::sgd(0.01);
    opt.init(&params);
    let mut state = (params, opt);
    let mut step = compile(|(p, o): &mut (Mlp, Optimizer), d: &(Tensor, Tensor)| {
        let (g, l, ()) = grad(mlp_loss)(p, d);
        *p = o.step(p, &g);
        l
    });
    dev.sync()?;
    phase("data", Some(&dev));
    let loss = if compiled { step.run(&mut state, &data)?.clone() } else { step.run_eager(&mut state, &data) };
    phase("record", Some(&dev));
    let loss = loss.item::<f32>()?;
    phase("run", Some(&dev));
    println!("total {:.1}", start.elapsed().as_secs_f64() * 1e3);
    println!("loss {loss}");
    Ok(())
}

fn main() -> wgrad::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        return child(args.get(i + 1).is_some_and(|m| m == "compiled"));
    }
    Ok(())
}
