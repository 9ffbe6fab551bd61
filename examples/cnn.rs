//! The seed's convolutional network, adapted to 28×28×1 digits:
//! conv 5×5 → tanh → max-pool, twice, then a linear layer and log-softmax.
//!
//! Run: `cargo run --release --example cnn` (`-- --help` for options).
//! Data-parallel: `-- --devices 2` (two replicas in one process), or
//! `mpirun -np 2 cargo run --release --features mpi --example cnn -- --data-parallel`.

mod support;

use std::process::ExitCode;

use wgrad::nn::{self, ConvOptions};
use wgrad::{Params, Tensor, checkpoint, compile, grad, optim::Optimizer};

#[derive(Params)]
struct Cnn {
    conv1: Tensor,
    b1: Tensor,
    conv2: Tensor,
    b2: Tensor,
    w: Tensor,
    b: Tensor,
}

impl Cnn {
    fn new(dev: &wgrad::Device) -> Cnn {
        Cnn {
            conv1: nn::init::kaiming_uniform(dev, &[16, 1, 5, 5]),
            b1: Tensor::zeros(dev, &[16]),
            conv2: nn::init::kaiming_uniform(dev, &[32, 16, 5, 5]),
            b2: Tensor::zeros(dev, &[32]),
            w: nn::init::xavier_uniform(dev, &[10, 32 * 7 * 7], 1.0),
            b: Tensor::zeros(dev, &[10]),
        }
    }
}

/// Log-probabilities of the classes for images [B, 784].
fn predict(m: &Cnn, x: &Tensor) -> Tensor {
    let same = ConvOptions::default().padding(2);
    let x = x.reshape(&[x.dim(0), 1, 28, 28]);
    let h = nn::max_pool2d(&nn::conv2d(&x, &m.conv1, Some(&m.b1), same).tanh(), 2, 2, 0);
    let h = nn::max_pool2d(&nn::conv2d(&h, &m.conv2, Some(&m.b2), same).tanh(), 2, 2, 0);
    nn::linear(&h.flatten(1, -1), &m.w, Some(&m.b)).log_softmax(-1)
}

fn loss(m: &Cnn, (x, labels): &(Tensor, Tensor)) -> Tensor {
    nn::nll_loss(&predict(m, x), labels, nn::Reduction::Mean)
}

#[allow(dead_code)]
fn main() -> ExitCode {
    run("cnn", "The seed's convolutional network on MNIST.")
}

/// The example `name`: trains and evaluates the network; `name` labels the
/// outputs.
pub fn run(name: &str, about: &str) -> ExitCode {
    support::main(|| train(name, about))
}

fn train(name: &str, about: &str) -> support::Result<()> {
    let args = support::parallel_args(name, about, 3, 64, 0.05)?;
    if args.devices > 1 || args.data_parallel {
        let data = wgrad::data::Mnist::load(&args.data)?;
        let opt = Optimizer::sgd(args.lr).momentum(0.9);
        let (history, root) = support::parallel::train(name, &args, &data, Cnn::new, loss, predict, opt)?;
        if !root {
            return Ok(());
        }
        history.final_accuracy();
        let acc = history.test_accuracy.last().copied().unwrap_or(0.0);
        return support::check(args.quick, &format!("test accuracy {:.2}% above 93%", 100.0 * acc), acc > 0.93);
    }
    let dev = support::device(args.seed)?;
    let data = support::mnist(&args)?;
    let mut model = Cnn::new(&dev);
    let mut opt = Optimizer::sgd(args.lr).momentum(0.9);
    if let Some(path) = &args.resume {
        model = checkpoint::load(path, &model, Some(&mut opt))?;
        println!("resumed from {} after {} steps", path.display(), opt.steps()?);
    }
    opt.init(&model);
    let mut state = (model, opt);
    let mut train = compile(|(m, opt): &mut (Cnn, Optimizer), batch: &(Tensor, Tensor)| {
        let (g, l, ()) = grad(loss)(m, batch);
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
    history.plot(&args.out.join(format!("{name}-loss.svg")), "convolutional network on MNIST")?;
    checkpoint::save(args.out.join(format!("{name}.safetensors")), &state.0, Some(&state.1))?;
    history.final_accuracy();
    let acc = history.test_accuracy.last().copied().unwrap_or(0.0);
    support::check(args.quick, &format!("test accuracy {:.2}% above 93%", 100.0 * acc), acc > 0.93)
}
