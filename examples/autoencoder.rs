//! The seed's autoencoder with tied weights: three sigmoid encoder layers
//! (784 → 50 → 25 → 10), three decoder layers that reuse the encoder's
//! weights transposed, six biases, a binary cross-entropy reconstruction
//! loss and an L2 penalty on the three weight matrices. Reports the test
//! reconstruction loss after every epoch beside that of predicting the mean
//! training digit, and writes a grid of digits and their reconstructions.
//! (`autoencoder_shallow` is the one-layer variant with a squared error.)
//!
//! Run: `cargo run --release --example autoencoder` (`-- --help` for options).

mod support;

use std::process::ExitCode;

use wgrad::{Params, Tensor, checkpoint, compile, grad, nn, optim::Optimizer};

#[derive(Params)]
struct Autoencoder {
    /// The encoder's [784, 50], [50, 25], [25, 10]; the decoder uses them transposed.
    w: Vec<Tensor>,
    /// Encoder biases [50], [25], [10], then decoder biases [25], [50], [784].
    b: Vec<Tensor>,
}

const SIZES: [usize; 4] = [784, 50, 25, 10];
const L2: f32 = 1e-4;

fn reconstruct(p: &Autoencoder, x: &Tensor) -> Tensor {
    let mut h = x.clone();
    for (w, b) in p.w.iter().zip(&p.b[..3]) {
        h = (h.matmul(w) + b).sigmoid();
    }
    // the decoder reuses the encoder's weights, transposed (views, no copies)
    for (w, b) in p.w.iter().rev().zip(&p.b[3..]) {
        h = (h.matmul(&w.t()) + b).sigmoid();
    }
    h
}

/// The seed's binary cross-entropy, summed over pixels and averaged over
/// digits: −Σ x log(p + ε) + (1 − x) log(1 − p + ε), ε = 1e-6 (a sigmoid
/// can round to exactly 0 or 1).
fn bce(p: &Tensor, x: &Tensor) -> Tensor {
    let eps = 1e-6;
    -(x * (p + eps).log() + (1.0 - x) * (1.0 - p + eps).log()).sum_all() / x.dim(0) as f32
}

/// Reconstruction loss plus the L2 penalty on the three weight matrices.
fn loss(p: &Autoencoder, x: &Tensor) -> Tensor {
    let mut loss = bce(&reconstruct(p, x), x);
    for w in &p.w {
        loss = loss + w.square().sum_all() * L2;
    }
    loss
}

fn main() -> ExitCode {
    support::main(run)
}

fn run() -> support::Result<()> {
    let args = support::args("autoencoder", "The seed's 3-layer tied-weight autoencoder on MNIST.", 10, 64, 0.01)?;
    let dev = support::device(args.seed)?;
    let data = support::mnist(&args)?;
    let mut model = Autoencoder {
        // gain 4: the scale Glorot and Bengio (2010) give for sigmoid layers
        w: SIZES.windows(2).map(|s| nn::init::xavier_uniform(&dev, &[s[0], s[1]], 4.0)).collect(),
        b: [50, 25, 10, 25, 50, 784].iter().map(|&n| Tensor::zeros(&dev, &[n])).collect(),
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
    // the baseline: every digit reconstructed as the mean training digit
    let (train_x, _) = data.train.batch(&dev, &all(data.train.len()));
    let mean = train_x.mean(&[0], true).clamp(1e-6, 1.0 - 1e-6);
    let baseline: f32 = bce(&mean.expand(test_x.shape()), &test_x).item()?;
    let mut recon = f32::NAN;
    for epoch in 0..args.epochs {
        let mean = support::train_epoch(&dev, &data.train, &args, epoch, &mut history, |x, _labels| {
            support::step(&args, &mut train, &mut state, &x)
        })?;
        recon = bce(&reconstruct(&state.0, &test_x), &test_x).item()?;
        history.epoch(epoch, mean, None);
        println!("         test reconstruction loss {recon:.2} (binary cross-entropy per digit, nats)");
    }
    history.plot(&args.out.join("autoencoder-loss.svg"), "3-layer tied-weight autoencoder on MNIST")?;
    let shown: Vec<usize> = (0..20).collect();
    let (x, _) = data.test.batch(&dev, &shown);
    support::save_reconstructions(&args.out.join("autoencoder-reconstructions.png"), &x, &reconstruct(&state.0, &x))?;
    checkpoint::save(args.out.join("autoencoder.safetensors"), &state.0, Some(&state.1))?;
    println!("final reconstruction loss: {recon:.2} (mean digit: {baseline:.2})");
    support::check(
        args.quick,
        &format!("reconstruction loss {recon:.2} below the mean digit's {baseline:.2}"),
        recon < baseline,
    )
}
