//! Core figures: matmul throughput and the cost of one tiny op.
//!
//! `cargo bench --bench core` prints a table. Timings are medians of
//! repeated runs, measured around a blocking read-back so the GPU work is
//! complete.

use std::time::{Duration, Instant};

use wgrad::{Device, Tensor};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time(reps: usize, mut f: impl FnMut()) -> Duration {
    f(); // warm-up: pipelines, pool
    median(
        (0..reps)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed()
            })
            .collect(),
    )
}

fn main() -> wgrad::Result<()> {
    let dev = Device::new()?;
    let info = dev.adapter_info();
    println!("adapter: {} ({:?}, {})", info.name, info.backend, info.driver_info);
    println!();
    println!("| matmul n×n·n×n | ms | GFLOP/s |");
    println!("|---|---|---|");
    for n in [256usize, 512, 1024, 2048] {
        dev.manual_seed(n as u64);
        let a = Tensor::randn(&dev, &[n, n]);
        let b = Tensor::randn(&dev, &[n, n]);
        // Several products per submit so submit + read-back overhead is amortised.
        let per = if n <= 512 { 8 } else { 2 };
        let reps = if n >= 2048 { 3 } else { 7 };
        let t = time(reps, || {
            let mut acc = a.matmul(&b).narrow(0, 0, 1).sum_all();
            for _ in 1..per {
                acc = acc + a.matmul(&b).narrow(0, 0, 1).sum_all();
            }
            acc.item::<f32>().expect("read-back");
        }) / per as u32;
        let gflops = 2.0 * (n as f64).powi(3) / t.as_secs_f64() / 1e9;
        println!("| {n} | {:.2} | {gflops:.1} |", t.as_secs_f64() * 1e3);
    }
    println!();
    let x = Tensor::ones(&dev, &[1]);
    let tiny = time(200, || {
        (&x + 1.0).item::<f32>().expect("read-back");
    });
    let x = Tensor::ones(&dev, &[1]);
    let chain = time(20, || {
        let mut y = x.clone();
        for _ in 0..100 {
            y = &y + 1.0;
        }
        y.item::<f32>().expect("read-back");
    });
    println!("| tiny op | µs |");
    println!("|---|---|");
    println!("| dispatch + submit + read-back of one 1-element add | {:.0} |", tiny.as_secs_f64() * 1e6);
    println!("| each op of a 100-op chain (one submit) | {:.1} |", chain.as_secs_f64() * 1e6 / 100.0);
    Ok(())
}
