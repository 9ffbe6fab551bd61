//! Data-parallel training of an MNIST model: `--devices N` replicas in this
//! process, or (`--data-parallel`, feature `mpi`) one per process started by
//! `mpirun`. Each replica takes its shard of every batch; the gradients (and
//! the loss) are averaged; every replica applies the same update. Only rank
//! 0 prints, evaluates and writes files.

use std::time::Instant;

use wgrad::data::Mnist;
use wgrad::optim::Optimizer;
use wgrad::parallel::DataParallel;
use wgrad::{Device, Params, Tensor, checkpoint, compile, grad};

use super::{Args, History, Result};

/// The replicas this process runs: `--devices` devices, joined to the other
/// ranks with `--data-parallel`.
fn replicas(args: &Args) -> Result<DataParallel> {
    let devices = (0..args.devices)
        .map(|_| {
            let d = Device::new()?;
            d.manual_seed(args.seed);
            Ok(d)
        })
        .collect::<wgrad::Result<Vec<_>>>()?;
    if !args.data_parallel {
        return Ok(DataParallel::new(devices));
    }
    #[cfg(feature = "mpi")]
    return Ok(DataParallel::with_collective(devices, wgrad::parallel::Mpi::init()?));
    #[cfg(not(feature = "mpi"))]
    Err("--data-parallel needs MPI: build with `--features mpi` and start with mpirun (see the README)".into())
}

/// Trains `make`'s model with `opt` on `data` as [`super::train_epoch`] does,
/// data-parallel; returns rank 0's history (test accuracy after each epoch)
/// and whether this process is rank 0.
pub fn train<M: Params>(
    name: &str,
    args: &Args,
    data: &Mnist,
    make: impl Fn(&Device) -> M,
    loss: fn(&M, &(Tensor, Tensor)) -> Tensor,
    predict: fn(&M, &Tensor) -> Tensor,
    opt: Optimizer,
) -> Result<(History, bool)> {
    if args.resume.is_some() {
        return Err("--resume is not supported with data parallelism".into());
    }
    let mut dp = replicas(args)?;
    let root = dp.is_root();
    let n = dp.devices().len();
    let mut states: Vec<(M, Optimizer)> =
        dp.replicate(&make(&dp.devices()[0]))?.into_iter().map(|m| (m, opt.clone())).collect();
    for (m, opt) in &mut states {
        opt.init(m);
    }
    // per replica: the gradient step and the update, compiled apart so the
    // gradients can be averaged in between
    let mut grads: Vec<_> = (0..n)
        .map(|_| {
            compile(move |m: &mut M, batch: &(Tensor, Tensor)| {
                let (g, l, ()) = grad(loss)(m, batch);
                (g, l)
            })
        })
        .collect();
    let mut updates: Vec<_> =
        (0..n).map(|_| compile(|(m, opt): &mut (M, Optimizer), g: &M| *m = opt.step(m, g))).collect();
    if root {
        let info = dp.devices()[0].adapter_info();
        println!("device: {} ({:?}, {})", info.name, info.backend, info.driver_info);
        println!(
            "data parallel: {} replicas ({} processes × {n} devices), {} examples each per batch",
            dp.replicas(),
            dp.replicas() / n,
            args.batch / dp.replicas()
        );
    }
    let mut history = History::new();
    let (mut step_s, mut compute_s) = (0.0f64, 0.0f64);
    for epoch in 0..args.epochs {
        // batches that split evenly (the last, short one may not)
        let batches: Vec<_> = data
            .train
            .batches(args.batch, args.seed.wrapping_mul(1000) + epoch as u64)
            .into_iter()
            .filter(|b| b.len() % dp.replicas() == 0)
            .collect();
        let bar = match root {
            true => super::progress(epoch, args.epochs, batches.len()),
            false => indicatif::ProgressBar::hidden(),
        };
        let dev0 = dp.devices()[0].clone();
        let mut total = Tensor::zeros(&dev0, &[]);
        for idx in &batches {
            let start = Instant::now();
            let mut local = Vec::with_capacity(n);
            for (r, (step, (m, _))) in grads.iter_mut().zip(&mut states).enumerate() {
                let batch = data.train.batch(&dp.devices()[r], &idx[dp.shard(r, idx.len())]);
                local.push(match args.eager {
                    true => step.run_eager(m, &batch),
                    false => {
                        let (g, l) = step.run(m, &batch)?;
                        (g.map(Tensor::clone), l.clone())
                    }
                });
            }
            // wait for the gradients here, so the all-reduce's time is its own
            for d in dp.devices() {
                d.sync()?;
            }
            compute_s += start.elapsed().as_secs_f64();
            let mean = dp.all_reduce(&local)?;
            for ((update, state), (g, _)) in updates.iter_mut().zip(&mut states).zip(&mean) {
                match args.eager {
                    true => update.run_eager(state, g),
                    false => *update.run(state, g)?,
                }
            }
            total = total + &mean[0].1;
            // wait for the update, so the step's time is all of it
            dev0.sync()?;
            step_s += start.elapsed().as_secs_f64();
            bar.inc(1);
        }
        bar.finish_and_clear();
        let mean_loss = total.item::<f32>()? / batches.len() as f32;
        if root {
            let acc = super::accuracy(&dev0, &data.test, |x| predict(&states[0].0, x))?;
            history.epoch(epoch, mean_loss, Some(acc));
        }
    }
    let s = dp.stats();
    // the exchange alone, the ranks lined up by a first one: what the
    // all-reduce's "sum and exchange" costs beyond waiting for the slowest rank
    let processes = dp.replicas() / n;
    let mut alone = None;
    if processes > 1 {
        let mut buffer = vec![1.0f32; s.bytes as usize / 4];
        dp.collective().all_reduce_sum(&mut buffer)?;
        let start = Instant::now();
        for _ in 0..20 {
            dp.collective().all_reduce_sum(&mut buffer)?;
        }
        alone = Some(start.elapsed().as_secs_f64() / 20.0);
    }
    if root {
        let per = |x: f64| 1e3 * x / s.steps.max(1) as f64;
        println!(
            "step {:.2} ms: gradients {:.2} ms, all-reduce {:.2} ms (pack and read-back {:.2}, sum and exchange {:.2}, \
             upload {:.2}); {} bytes of gradients per replica and step",
            per(step_s),
            per(compute_s),
            per(s.read_s + s.reduce_s + s.write_s),
            per(s.read_s),
            per(s.reduce_s),
            per(s.write_s),
            s.bytes
        );
        if let Some(t) = alone {
            println!(
                "the exchange alone: {:.3} ms per all-reduce of {} bytes over {processes} processes",
                1e3 * t,
                s.bytes
            );
        }
        let (m, opt) = &states[0];
        checkpoint::save(args.out.join(format!("{name}.safetensors")), m, Some(opt))?;
    }
    Ok((history, root))
}
