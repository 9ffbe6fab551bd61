//! A one-layer variant of the seed's tied-weight autoencoder (`autoencoder`
//! is the seed's own, three layers deep): 784 → 64 sigmoid units and back
//! through the transposed weights, a squared reconstruction error and an L2
//! penalty on the weights. Its wider code gives sharper reconstructions.
//! Reports the test reconstruction loss after every epoch beside that of
//! predicting the mean training digit, and writes a grid of digits and their
//! reconstructions.
//!
//! Run: `cargo run --release --example autoencoder_shallow` (`-- --help` for options).

mod support;

use std::process::ExitCode;

use wgrad::{Params, Tensor, checkpoint, compile, grad, nn, optim::Optimizer};

#[derive(Params)]
struct Autoencoder {
    w: Tensor,
    b_enc: Tensor,
    b_dec: Tensor,
}

const L2: f32 = 1e-4;

fn reconstruct(p: &Autoencoder, x: &Tensor) -> Tensor {
    let code = (x.matmul(&p.w) + &p.b_enc).sigmoid();
    // the decoder reuses the encoder's weights, transposed (a view, no copy)
    (code.matmul(&p.w.t()) + &p.b_dec).sigmoid()
}

/// Mean squared reconstruction error per digit plus an L2 penalty.
fn loss(p: &Autoencoder, x: &Tensor) -> Tensor {
    let err = (reconstruct(p, x) - x).square().sum_all() / x.dim(0) as f32;
    err + p.w.square().sum_all() * L2
}

fn main() -> ExitCode {
    support::main(run)
}

fn run() -> support::Result<()> {
    let args = support::args("autoencoder_shallow", "A one-layer tied-weight autoencoder on MNIST.", 10, 64, 0.01)?;
    let dev = support::device(args.seed)?;
    let data = support::mnist(&args)?;
    let mut model = Autoencoder {
        w: nn::init::xavier_uniform(&dev, &[784, 64], 1.0),
        b_enc: Tensor::zeros(&dev, &[64]),
        b_dec: Tensor::zeros(&dev, &[784]),
    };
    let mut opt = Optimizer::adam(args.lr);
    if let Some(path) = &args.resume {
        model = checkpoint::load(path, &model, Some(&mut opt))?;
        println!("resumed from {} after {} steps", path.display(), opt.steps()?);
    }
    opt.init(&model);
    let mut state = (model, opt);
    let mut train = compile(|(m, opt): &mut (Autoencoder, Optimizer), x: &Tensor| {
        let (g, l, ()) = grad(loss)(m, x);
        *m = opt.step(m, &g);
        l
    });
    let mut history = support::History::new();
    let all = |n: usize| (0..n).collect::<Vec<usize>>();
    let (test_x, _) = data.test.batch(&dev, &all(data.test.len()));
    let squared_error = |y: &Tensor| (y - &test_x).square().sum_all() / test_x.dim(0) as f32;
    // the baseline: every digit reconstructed as the mean training digit
    let (train_x, _) = data.train.batch(&dev, &all(data.train.len()));
    let baseline: f32 = squared_error(&train_x.mean(&[0], true).expand(test_x.shape())).item()?;
    let mut recon = f32::NAN;
    for epoch in 0..args.epochs {
        let mean = support::train_epoch(&dev, &data.train, &args, epoch, &mut history, |x, _labels| {
            support::step(&args, &mut train, &mut state, &x)
        })?;
        recon = squared_error(&reconstruct(&state.0, &test_x)).item()?;
        history.epoch(epoch, mean, None);
        println!("         test reconstruction loss {recon:.4} (squared error per digit)");
    }
    history.plot(&args.out.join("autoencoder_shallow-loss.svg"), "one-layer tied-weight autoencoder on MNIST")?;
    let shown: Vec<usize> = (0..20).collect();
    let (x, _) = data.test.batch(&dev, &shown);
    let path = args.out.join("autoencoder_shallow-reconstructions.png");
    support::save_reconstructions(&path, &x, &reconstruct(&state.0, &x))?;
    checkpoint::save(args.out.join("autoencoder_shallow.safetensors"), &state.0, Some(&state.1))?;
    println!("final reconstruction loss: {recon:.4} (mean digit: {baseline:.4})");
    support::check(
        args.quick,
        &format!("reconstruction loss {recon:.4} below the mean digit's {baseline:.4}"),
        recon < baseline,
    )
}
