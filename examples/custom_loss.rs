//! A loss of your own, as the seed writes it: two tanh layers h1 and h2,
//! the cross-entropy written out (log-probabilities h2 − log Σ exp(h2), then
//! −Σ log p · target), an L2 penalty on both hidden states h1 and h2
//! (keeping them small) and one on the second layer's weights W2. Nothing
//! but ordinary tensor code; `grad` does the rest.
//!
//! Run: `cargo run --release --example custom_loss` (`-- --help` for options).

mod support;

use std::process::ExitCode;

use wgrad::{Params, Tensor, checkpoint, compile, grad, nn, optim::Optimizer};

#[derive(Params)]
struct Net {
    w1: Tensor,
    b1: Tensor,
    w2: Tensor,
    b2: Tensor,
}

const HIDDEN_L2: f32 = 1e-3;
const WEIGHT_L2: f32 = 1e-5;

/// The hidden states h1 = tanh(x·W1 + b1) and h2 = tanh(h1·W2 + b2); h2
/// holds the class scores.
fn forward(p: &Net, x: &Tensor) -> (Tensor, Tensor) {
    let h1 = (x.matmul(&p.w1) + &p.b1).tanh();
    let h2 = (h1.matmul(&p.w2) + &p.b2).tanh();
    (h1, h2)
}

/// Cross-entropy + L2 on h1 and h2 + L2 on W2, per example. Returns the
/// three terms as extra outputs, to report them.
fn loss(p: &Net, (x, target): &(Tensor, Tensor)) -> (Tensor, (Tensor, Tensor, Tensor)) {
    let n = x.dim(0) as f32;
    let (h1, h2) = forward(p, x);
    let y_hat = &h2 - &h2.exp().sum(&[-1], true).log();
    let ce = -(y_hat * target).sum_all() / n;
    let on_hidden = (h1.square().sum_all() + h2.square().sum_all()) * (HIDDEN_L2 / n);
    let on_weights = p.w2.square().sum_all() * WEIGHT_L2;
    (&ce + &on_hidden + &on_weights, (ce, on_hidden, on_weights))
}

fn main() -> ExitCode {
    support::main(run)
}

fn run() -> support::Result<()> {
    let args = support::args(
        "custom_loss",
        "The seed's custom loss: cross-entropy, L2 on both hidden states and on W2.",
        10,
        64,
        0.1,
    )?;
    let dev = support::device(args.seed)?;
    let data = support::mnist(&args)?;
    let mut model = Net {
        w1: nn::init::xavier_uniform(&dev, &[784, 256], 1.0),
        b1: Tensor::zeros(&dev, &[256]),
        w2: nn::init::xavier_uniform(&dev, &[256, 10], 1.0),
        b2: Tensor::zeros(&dev, &[10]),
    };
    let mut opt = Optimizer::sgd(args.lr).momentum(0.9);
    if let Some(path) = &args.resume {
        model = checkpoint::load(path, &model, Some(&mut opt))?;
        println!("resumed from {} after {} steps", path.display(), opt.steps()?);
    }
    opt.init(&model);
    let mut state = (model, opt);
    // the step returns the loss and its three terms (to report them)
    let mut train = compile(|(m, opt): &mut (Net, Optimizer), batch: &(Tensor, Tensor)| {
        let (g, l, (ce, h, w)) = grad(loss)(m, &(batch.0.clone(), batch.1.one_hot(10)));
        *m = opt.step(m, &g);
        (l, [ce, h, w])
    });
    let mut history = support::History::new();
    let mut terms = None;
    for epoch in 0..args.epochs {
        let mean = support::train_epoch(&dev, &data.train, &args, epoch, &mut history, |x, labels| {
            let (l, parts) = if args.eager {
                train.run_eager(&mut state, &(x, labels))
            } else {
                let out = train.run(&mut state, &(x, labels))?;
                (out.0.clone(), out.1.clone())
            };
            terms = Some(parts);
            Ok(l)
        })?;
        let acc = support::accuracy(&dev, &data.test, |x| forward(&state.0, x).1)?;
        history.epoch(epoch, mean, Some(acc));
        if let Some([ce, h, w]) = &terms {
            println!(
                "         last batch: cross-entropy {:.4} + hidden L2 {:.4} + weight L2 {:.4}",
                ce.item::<f32>()?,
                h.item::<f32>()?,
                w.item::<f32>()?
            );
        }
    }
    history.plot(&args.out.join("custom_loss-loss.svg"), "cross-entropy + L2 penalties on MNIST")?;
    checkpoint::save(args.out.join("custom_loss.safetensors"), &state.0, Some(&state.1))?;
    history.final_accuracy();
    let acc = history.test_accuracy.last().copied().unwrap_or(0.0);
    support::check(args.quick, &format!("test accuracy {:.2}% above 88%", 100.0 * acc), acc > 0.88)
}
