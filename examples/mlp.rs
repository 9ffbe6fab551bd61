//! The seed's two-layer network on MNIST: tanh hidden layer and the
//! cross-entropy written out as the seed writes it: log-probabilities
//! pred − log Σ exp(pred), then −Σ log p · target. `f` returns the
//! predictions too, and `grad` hands them back with the loss.
//!
//! Run: `cargo run --release --example mlp` (`-- --help` for options).

mod support;

use std::process::ExitCode;

use wgrad::{Params, Tensor, checkpoint, compile, grad, nn, optim::Optimizer};

#[derive(Params)]
struct Mlp {
    w: Vec<Tensor>,
    b: Vec<Tensor>,
}

fn predict(p: &Mlp, x: &Tensor) -> Tensor {
    let h1 = (x.matmul(&p.w[0]) + &p.b[0]).tanh();
    h1.matmul(&p.w[1]) + &p.b[1]
}

/// Returns the loss and the predictions, as in the seed.
fn loss(p: &Mlp, (x, target): &(Tensor, Tensor)) -> (Tensor, Tensor) {
    let pred = predict(p, x);
    // NOTE: `pred.log_softmax(-1)` is the same and stable for any logits
    // (it subtracts the row maximum first); this one's are small enough
    let log_probs = &pred - &pred.exp().sum(&[-1], true).log();
    let loss = -(log_probs * target).sum_all() / x.dim(0) as f32;
    (loss, pred)
}

fn main() -> ExitCode {
    support::main(run)
}

fn run() -> support::Result<()> {
    let args = support::args("mlp", "The seed's 2-layer tanh network on MNIST.", 10, 64, 0.1)?;
    let dev = support::device(args.seed)?;
    let data = support::mnist(&args)?;
    let hidden = 256;
    let mut model = Mlp {
        w: vec![
            nn::init::xavier_uniform(&dev, &[784, hidden], 1.0),
            nn::init::xavier_uniform(&dev, &[hidden, 10], 1.0),
        ],
        b: vec![Tensor::zeros(&dev, &[hidden]), Tensor::zeros(&dev, &[10])],
    };
    let mut opt = Optimizer::sgd(args.lr).momentum(0.9);
    if let Some(path) = &args.resume {
        model = checkpoint::load(path, &model, Some(&mut opt))?;
        println!("resumed from {} after {} steps", path.display(), opt.steps()?);
    }
    opt.init(&model);
    let mut state = (model, opt);
    let mut train = compile(|(m, opt): &mut (Mlp, Optimizer), (x, labels): &(Tensor, Tensor)| {
        let (g, l, _predictions) = grad(loss)(m, &(x.clone(), labels.one_hot(10)));
        *m = opt.step(m, &g);
        l
    });
    let mut history = support::History::new();
    for epoch in 0..args.epochs {
        let mean = support::train_epoch(&dev, &data.train, &args, epoch, &mut history, |x, labels| {
            support::step(&args, &mut train, &mut state, &(x, labels))
        })?;
        let acc = support::accuracy(&dev, &data.test, |x| predict(&state.0, x))?;
        history.epoch(epoch, mean, Some(acc));
    }
    history.plot(&args.out.join("mlp-loss.svg"), "2-layer tanh MLP on MNIST")?;
    checkpoint::save(args.out.join("mlp.safetensors"), &state.0, Some(&state.1))?;
    history.final_accuracy();
    let acc = history.test_accuracy.last().copied().unwrap_or(0.0);
    support::check(args.quick, &format!("test accuracy {:.2}% above 85%", 100.0 * acc), acc > 0.85)
}
