//! A character-level transformer (GPT) trained on Shakespeare's tragedies:
//! learned token and position embeddings, pre-norm blocks of causal
//! multi-head self-attention and a GELU MLP, the output layer tied to the
//! token embedding. Prints training and validation loss in nats per
//! character beside a bigram model counted from the training split, then
//! samples text.
//!
//! Run: `cargo run --release --example gpt` (`-- --help` for options;
//! `-- --quick` for a short run that checks it beats the bigram).

mod support;

use std::process::ExitCode;
use std::time::Instant;

use support::gpt::{CONTEXT, Gpt, HEADS, LAYERS, WIDTH, logits, loss};
use support::text::{self, Rng, Text};
use wgrad::optim::Optimizer;
use wgrad::{Params, Tensor, compile, grad};

fn main() -> ExitCode {
    support::main(run)
}

fn run() -> support::Result<()> {
    let about = "A character-level transformer on Shakespeare's tragedies, against a bigram model.";
    let args = text::args("gpt", about, 600, 150, 32, 5e-3);
    let dev = support::device(args.seed)?;
    let data = Text::load(&args.data)?;
    let model = Gpt::new(&dev, data.vocab());
    println!(
        "model: {LAYERS} pre-norm blocks, {HEADS} heads, width {WIDTH}, context {CONTEXT}, {} parameters",
        model.tensors().iter().map(|t| t.numel()).sum::<usize>()
    );
    let windows = if args.quick { 64 } else { 512 };
    let val_starts = text::spaced_starts(data.val.len(), CONTEXT, windows);
    let bigram = text::bigram_loss(&data, &data.val, &val_starts, CONTEXT);
    println!("bigram (add-one smoothing) validation loss: {bigram:.3} nats/char");

    let mut opt = text::optimizer(&args);
    opt.init(&model);
    let mut state = (model, opt);
    let mut train = compile(|(m, opt): &mut (Gpt, Optimizer), batch: &(Tensor, Tensor)| {
        let (g, l, ()) = grad(loss)(m, batch);
        *m = opt.step(m, &g);
        l
    });
    let mut rng = Rng::new(args.seed);
    let validate = |m: &Gpt| text::evaluate(&dev, &data.val, &val_starts, CONTEXT, 64, |x| logits(m, x));
    // The first steps run eagerly to time them; step EAGER traces the
    // compiled program, every later step replays it.
    const EAGER: usize = 2;
    let (mut eager_s, mut eager_dispatches, mut compiled_dispatches) = (0.0, 0, 0);
    let (mut compiled_from, mut eval_s) = (None, 0.0);
    let start = Instant::now();
    let every = (args.steps / 10).max(1);
    let (mut window, mut since) = (Tensor::zeros(&dev, &[]), 0);
    let mut val = f32::NAN;
    for step in 0..args.steps {
        let starts = text::random_starts(&mut rng, data.train.len(), CONTEXT, args.batch);
        let batch = text::batch(&dev, &data.train, &starts, CONTEXT);
        if step == EAGER - 1 {
            // let the GPU finish what came before, so the timing is of one step
            window.item::<f32>()?;
        }
        let (t0, d0) = (Instant::now(), dev.counters().dispatches);
        let l = if step < EAGER { train.run_eager(&mut state, &batch) } else { train.run(&mut state, &batch)?.clone() };
        if step == EAGER - 1 {
            l.item::<f32>()?;
            (eager_s, eager_dispatches) = (t0.elapsed().as_secs_f64(), dev.counters().dispatches - d0);
        } else if step == EAGER + 1 {
            compiled_dispatches = dev.counters().dispatches - d0;
        }
        window = window + l;
        since += 1;
        if step == EAGER {
            window.item::<f32>()?;
            (compiled_from, eval_s) = (Some(Instant::now()), 0.0);
        }
        if (step + 1) % every == 0 || step + 1 == args.steps {
            let train_loss = window.item::<f32>()? / since as f32;
            (window, since) = (Tensor::zeros(&dev, &[]), 0);
            let t = Instant::now();
            val = validate(&state.0)?;
            eval_s += t.elapsed().as_secs_f64();
            println!(
                "step {:4}: train loss {train_loss:.3}, validation loss {val:.3} nats/char ({:.0} s)",
                step + 1,
                start.elapsed().as_secs_f64()
            );
        }
    }
    if let Some(from) = compiled_from {
        let replays = args.steps.saturating_sub(EAGER + 1).max(1);
        let per_step = (from.elapsed().as_secs_f64() - eval_s) / replays as f64;
        println!(
            "time per step: eager {:.0} ms ({eager_dispatches} dispatches), compiled {:.0} ms ({compiled_dispatches} dispatches)",
            eager_s * 1e3,
            per_step * 1e3
        );
    }
    println!("training took {:.0} s", start.elapsed().as_secs_f64());

    if args.sample > 0 {
        let mut ids: Vec<u32> = data.val[..CONTEXT].to_vec();
        for _ in 0..args.sample {
            let x = Tensor::from_slice(&dev, &ids[ids.len() - CONTEXT..], &[1, CONTEXT]);
            let last: Vec<f32> = logits(&state.0, &x).narrow(1, CONTEXT - 1, 1).to_vec()?;
            ids.push(text::draw(&mut rng, &last, 0.8));
        }
        println!("sample (temperature 0.8, after {CONTEXT} characters of the validation text):");
        println!("{}\n---\n{}", data.decode(&ids[..CONTEXT]), data.decode(&ids[CONTEXT..]));
    }
    println!("total time {:.0} s", start.elapsed().as_secs_f64());
    text::finish(&args, val, bigram)
}
