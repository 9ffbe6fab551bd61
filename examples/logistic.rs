//! Logistic regression on MNIST: the seed's first example. A linear map to 10
//! classes, log-softmax, and the multinomial loss −Σ log p · target, trained
//! by SGD on gradients from `grad`.
//!
//! Run: `cargo run --release --example logistic` (`-- --help` for options).

mod support;

use std::process::ExitCode;

use wgrad::{Params, Tensor, checkpoint, compile, grad, optim::Optimizer};

#[derive(Params)]
struct Model {
    w: Tensor,
    b: Tensor,
}

fn predict(m: &Model, x: &Tensor) -> Tensor {
    (x.matmul(&m.w) + &m.b).log_softmax(-1)
}

/// The seed's loss: −Σ log softmax(x·W + b) ⊙ target, here per example.
fn loss(m: &Model, (x, target): &(Tensor, Tensor)) -> Tensor {
    -(predict(m, x) * target).sum_all() / x.dim(0) as f32
}

fn main() -> ExitCode {
    support::main(run)
}

fn run() -> support::Result<()> {
    let args = support::args("logistic", "Logistic regression on MNIST (the seed's example 1).", 5, 100, 0.5)?;
    let dev = support::device(args.seed)?;
    let data = support::mnist(&args)?;
    let mut model = Model { w: Tensor::zeros(&dev, &[784, 10]), b: Tensor::zeros(&dev, &[10]) };
    let mut opt = Optimizer::sgd(args.lr);
    if let Some(path) = &args.resume {
        model = checkpoint::load(path, &model, Some(&mut opt))?;
        println!("resumed from {} after {} steps", path.display(), opt.steps()?);
    }
    opt.init(&model);
    let mut state = (model, opt);
    let mut train = compile(|(m, opt): &mut (Model, Optimizer), (x, labels): &(Tensor, Tensor)| {
        let (g, l, ()) = grad(loss)(m, &(x.clone(), labels.one_hot(10)));
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
    history.plot(&args.out.join("logistic-loss.svg"), "logistic regression on MNIST")?;
    checkpoint::save(args.out.join("logistic.safetensors"), &state.0, Some(&state.1))?;
    history.final_accuracy();
    let acc = history.test_accuracy.last().copied().unwrap_or(0.0);
    support::check(args.quick, &format!("test accuracy {:.2}% above 85%", 100.0 * acc), acc > 0.85)
}
