//! A character-level LSTM on the same text, windows and validation split as
//! `gpt`: the cell is unrolled in a plain Rust loop inside the loss
//! function, and `grad` differentiates through all of it. Prints training
//! and validation loss in nats per character beside the bigram model's and
//! the transformer's, then samples text.
//!
//! Run: `cargo run --release --example lstm` (`-- --help` for options;
//! `-- --quick` for a short run that checks it beats the bigram).

mod support;

use std::process::ExitCode;
use std::time::Instant;

use support::text::{self, Rng, Text};
use wgrad::optim::Optimizer;
use wgrad::{Params, Tensor, compile, grad, nn};

/// Characters per training window (as `gpt`'s context, so the validation
/// figures are over the same targets).
const STEPS: usize = 64;
const EMBED: usize = 32;
const HIDDEN: usize = 128;
/// `gpt`'s validation loss with its defaults on lavapipe (600 steps, 512
/// windows), for comparison.
const GPT_DEFAULT: &str = "1.864";

/// Linear weights are [out, in], the gates stacked as (input, forget, cell, output).
#[derive(Params)]
struct Lstm {
    embed: Tensor,
    w_ih: Tensor,
    w_hh: Tensor,
    bias: Tensor,
    out: Tensor,
    out_b: Tensor,
}

impl Lstm {
    fn new(dev: &wgrad::Device, vocab: usize) -> Lstm {
        // forget gates start open (bias 1), the usual choice
        let forget: Vec<f32> =
            (0..4 * HIDDEN).map(|i| if (HIDDEN..2 * HIDDEN).contains(&i) { 1.0 } else { 0.0 }).collect();
        Lstm {
            embed: Tensor::randn(dev, &[vocab, EMBED]) * 0.1,
            w_ih: nn::init::xavier_uniform(dev, &[4 * HIDDEN, EMBED], 1.0),
            w_hh: nn::init::xavier_uniform(dev, &[4 * HIDDEN, HIDDEN], 1.0),
            bias: Tensor::from_slice(dev, &forget, &[4 * HIDDEN]),
            out: nn::init::xavier_uniform(dev, &[vocab, HIDDEN], 1.0),
            out_b: Tensor::zeros(dev, &[vocab]),
        }
    }
}

/// Logits [B, T, V] of the next character after each of `ids` [B, T], the
/// state starting at zero in each window.
fn logits(m: &Lstm, ids: &Tensor) -> Tensor {
    let (batch, t) = (ids.dim(0), ids.dim(1));
    let x = nn::embedding(ids, &m.embed);
    let mut h = Tensor::zeros(ids.device(), &[batch, HIDDEN]);
    let mut c = h.clone();
    let mut hs = Vec::with_capacity(t);
    for step in 0..t {
        // i, f, g, o = σ, σ, tanh, σ of x·W_ihᵀ + h·W_hhᵀ + b; c′ = f⊙c + i⊙g; h′ = o⊙tanh(c′)
        (h, c) = nn::lstm_cell(&x.narrow(1, step, 1).squeeze(1), (&h, &c), &m.w_ih, &m.w_hh, Some(&m.bias), None);
        hs.push(h.clone());
    }
    let hs: Vec<&Tensor> = hs.iter().collect();
    nn::linear(&Tensor::stack(&hs, 1), &m.out, Some(&m.out_b))
}

/// Mean cross-entropy of the next characters `y` [B, T], in nats.
fn loss(m: &Lstm, (x, y): &(Tensor, Tensor)) -> Tensor {
    text::next_char_loss(&logits(m, x), y)
}

fn main() -> ExitCode {
    support::main(run)
}

fn run() -> support::Result<()> {
    let about = "A character-level LSTM on Shakespeare's tragedies, against a bigram model and the transformer.";
    let args = text::args("lstm", about, 600, 100, 32, 1e-2);
    let dev = support::device(args.seed)?;
    let data = Text::load(&args.data)?;
    let model = Lstm::new(&dev, data.vocab());
    println!(
        "model: LSTM, embedding {EMBED}, hidden {HIDDEN}, unrolled over {STEPS} characters, {} parameters",
        model.tensors().iter().map(|t| t.numel()).sum::<usize>()
    );
    let windows = if args.quick { 64 } else { 512 };
    let val_starts = text::spaced_starts(data.val.len(), STEPS, windows);
    let bigram = text::bigram_loss(&data, &data.val, &val_starts, STEPS);
    println!("bigram (add-one smoothing) validation loss: {bigram:.3} nats/char");

    let mut opt = text::optimizer(&args);
    opt.init(&model);
    let mut state = (model, opt);
    let mut train = compile(|(m, opt): &mut (Lstm, Optimizer), batch: &(Tensor, Tensor)| {
        let (g, l, ()) = grad(loss)(m, batch);
        *m = opt.step(m, &g);
        l
    });
    let mut rng = Rng::new(args.seed);
    let start = Instant::now();
    let every = (args.steps / 10).max(1);
    let (mut window, mut since, mut val) = (Tensor::zeros(&dev, &[]), 0, f32::NAN);
    for step in 0..args.steps {
        let starts = text::random_starts(&mut rng, data.train.len(), STEPS, args.batch);
        window = window + train.run(&mut state, &text::batch(&dev, &data.train, &starts, STEPS))?;
        since += 1;
        if (step + 1) % every == 0 || step + 1 == args.steps {
            let train_loss = window.item::<f32>()? / since as f32;
            (window, since) = (Tensor::zeros(&dev, &[]), 0);
            val = text::evaluate(&dev, &data.val, &val_starts, STEPS, 64, |x| logits(&state.0, x))?;
            println!(
                "step {:4}: train loss {train_loss:.3}, validation loss {val:.3} nats/char ({:.0} s)",
                step + 1,
                start.elapsed().as_secs_f64()
            );
        }
    }
    println!("training took {:.0} s", start.elapsed().as_secs_f64());

    if args.sample > 0 {
        // run the prompt through the cell, then feed back each drawn character
        let m = &state.0;
        let mut ids: Vec<u32> = data.val[..STEPS].to_vec();
        let mut h = Tensor::zeros(&dev, &[1, HIDDEN]);
        let mut c = h.clone();
        for i in 0..STEPS + args.sample - 1 {
            let x = nn::embedding(&Tensor::from_slice(&dev, &ids[i..=i], &[1]), &m.embed);
            (h, c) = nn::lstm_cell(&x, (&h, &c), &m.w_ih, &m.w_hh, Some(&m.bias), None);
            if i + 1 >= STEPS {
                let next: Vec<f32> = nn::linear(&h, &m.out, Some(&m.out_b)).to_vec()?;
                ids.push(text::draw(&mut rng, &next, 0.8));
            }
        }
        println!("sample (temperature 0.8, after {STEPS} characters of the validation text):");
        println!("{}\n---\n{}", data.decode(&ids[..STEPS]), data.decode(&ids[STEPS..]));
    }
    println!("total time {:.0} s", start.elapsed().as_secs_f64());
    println!("for comparison: gpt with its defaults reaches {GPT_DEFAULT} nats/char on these validation windows");
    text::finish(&args, val, bigram)
}
