//! The first training step of a fresh process: the MLP 784-256-10 at batch
//! 128 (forward, backward, SGD, the loss read back), eager and compiled,
//! with cold caches (empty shader caches: Mesa's and wgrad's) and warm ones
//! (those a previous process left). Each figure is a fresh child process,
//! timed from its start to its exit.
//!
//! `cargo bench --bench first_step` prints the table (`--reference FILE`
//! adds HIPS autograd's first step from benches/reference.py, `--quick`
//! fewer runs); `-- --child eager|compiled` runs one first step and prints
//! where its time went, `-- --child matmuls` the first and second run of
//! each of its products alone (with `MESA_SHADER_CACHE_DIR` an empty
//! directory: what lavapipe's compiler takes for each).

#[path = "support/models.rs"]
mod models;

use std::time::Instant;

use models::{Mlp, mlp_loss};
use wgrad::optim::Optimizer;
use wgrad::{Device, Tensor, compile, grad};

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

/// The first and the second run of each of the step's five products, on
/// their own (where a driver compiles a kernel at its first dispatch, as
/// lavapipe does, the difference is that compilation); prints `ms` lines.
fn matmuls() -> wgrad::Result<()> {
    let dev = Device::new()?;
    let t = |name: &str, a: &Tensor, b: &Tensor| -> wgrad::Result<()> {
        let mut ms = [0.0; 2];
        for m in &mut ms {
            let start = Instant::now();
            a.matmul(b).sum_all().item::<f32>()?;
            *m = start.elapsed().as_secs_f64() * 1e3;
        }
        println!("{name}: first {:.0} ms, second {:.1} ms", ms[0], ms[1]);
        Ok(())
    };
    let (x, w1, h) =
        (Tensor::ones(&dev, &[128, 784]), Tensor::ones(&dev, &[784, 256]), Tensor::ones(&dev, &[128, 256]));
    let (w2, g) = (Tensor::ones(&dev, &[256, 10]), Tensor::ones(&dev, &[128, 10]));
    Tensor::ones(&dev, &[1]).sum_all().item::<f32>()?; // the fill and sum kernels
    t("x·w1 [128, 784]·[784, 256]", &x, &w1)?;
    t("h·w2 [128, 256]·[256, 10]", &h, &w2)?;
    t("g·w2ᵀ [128, 10]·[10, 256]", &g, &w2.t())?;
    t("xᵀ·g1 [784, 128]·[128, 256]", &x.t(), &h)?;
    t("hᵀ·g [256, 128]·[128, 10]", &h.t(), &g)?;
    Ok(())
}

/// The phases one child printed (`name ms` lines), and its wall time.
struct Run {
    wall_s: f64,
    phases: Vec<(String, f64)>,
}

/// Runs this program as a child measuring one first step, with the shader
/// caches in `dir` (Mesa's and wgrad's; NVIDIA's driver's too).
fn spawn(mode: &str, dir: &std::path::Path) -> Run {
    let exe = std::env::current_exe().expect("the bench's own path");
    let t = Instant::now();
    let out = std::process::Command::new(exe)
        .args(["--child", mode])
        .env("MESA_SHADER_CACHE_DIR", dir.join("mesa"))
        .env("__GL_SHADER_DISK_CACHE_PATH", dir.join("nvidia"))
        .env("WGRAD_CACHE_DIR", dir.join("wgrad"))
        .output()
        .expect("run the child");
    let wall_s = t.elapsed().as_secs_f64();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "the child failed: {}{text}", String::from_utf8_lossy(&out.stderr));
    let phases = text
        .lines()
        .filter_map(|l| {
            let mut w = l.split(' ');
            Some((w.next()?.to_string(), w.next()?.parse().ok()?))
        })
        .collect();
    Run { wall_s, phases }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> wgrad::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        return match args.get(i + 1).map(String::as_str) {
            Some("matmuls") => matmuls(),
            m => child(m == Some("compiled")),
        };
    }
    let runs = if args.iter().any(|a| a == "--quick") { 1 } else { 3 };
    let hips = args
        .iter()
        .position(|a| a == "--reference")
        .and_then(|i| std::fs::read_to_string(args.get(i + 1)?).ok())
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .and_then(|r| r["autograd_first_step_s"].as_f64());
    // [mode][cold, warm]: runs of each, cold and warm alternating
    let modes = ["eager", "compiled"];
    let mut results: Vec<[Vec<Run>; 2]> = vec![Default::default(), Default::default()];
    for r in 0..runs {
        for (m, mode) in modes.iter().enumerate() {
            let dir = std::env::temp_dir().join(format!("wgrad-first-step-{}-{r}-{mode}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            // (Mesa makes its cache directory, but not the one above it)
            std::fs::create_dir_all(&dir).expect("a temporary directory");
            results[m][0].push(spawn(mode, &dir));
            results[m][1].push(spawn(mode, &dir));
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    println!("first training step of a fresh process: MLP 784-256-10, batch 128 (median of {runs})\n");
    println!(
        "| step | caches | s to the loss | opening the device | recording (compiled: tracing, fusion, pipelines) | submission and run |"
    );
    println!("|---|---|---|---|---|---|");
    for (m, mode) in modes.iter().enumerate() {
        for (c, caches) in ["cold", "warm"].iter().enumerate() {
            let rs = &results[m][c];
            let phase = |name: &str| {
                median(rs.iter().map(|r| r.phases.iter().find(|p| p.0 == name).map_or(0.0, |p| p.1)).collect())
            };
            println!(
                "| {mode} | {caches} | {:.2} | {:.0} ms | {:.0} ms | {:.0} ms |",
                median(rs.iter().map(|r| r.wall_s).collect()),
                phase("device"),
                phase("record"),
                phase("run"),
            );
        }
    }
    if let Some(s) = hips {
        println!("| HIPS autograd (Python start, imports, step) | – | {s:.2} | – | – | – |");
    }
    Ok(())
}
