//! The seed's autoencoder with tied weights: the decoder uses the encoder's
//! transposed weight matrix, and an L2 penalty keeps the weights small.
//! Reports the reconstruction loss on the test digits after every epoch and
//! writes a grid of digits and their reconstructions.
//!
//! Run: `cargo run --release --example autoencoder` (`-- --help` for options).

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
    let args = support::args("autoencoder", "The seed's tied-weight autoencoder on MNIST.", 10, 64, 0.01)?;
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
    let test: Vec<usize> = (0..data.test.len()).collect();
    let (test_x, _) = data.test.batch(&dev, &test);
    let mut recon = None;
    for epoch in 0..args.epochs {
        let mean = support::train_epoch(&dev, &data.train, &args, epoch, &mut history, |x, _labels| {
            support::step(&args, &mut train, &mut state, &x)
        })?;
        let loss: f32 = ((reconstruct(&state.0, &test_x) - &test_x).square().sum_all() / test.len() as f32).item()?;
        history.epoch(epoch, mean, None);
        println!("         test reconstruction loss {loss:.4} (squared error per digit)");
        recon = Some(loss);
    }
    history.plot(&args.out.join("autoencoder-loss.svg"), "tied-weight autoencoder on MNIST")?;
    // 2 rows of 10 test digits, each above its reconstruction
    let shown: Vec<usize> = (0..20).collect();
    let (x, _) = data.test.batch(&dev, &shown);
    let y = reconstruct(&state.0, &x);
    let (x, y): (Vec<f32>, Vec<f32>) = (x.to_vec()?, y.to_vec()?);
    let mut grid = Vec::with_capacity(40 * 784);
    for half in 0..2 {
        let rows = half * 10 * 784..(half + 1) * 10 * 784;
        grid.extend_from_slice(&x[rows.clone()]);
        grid.extend_from_slice(&y[rows]);
    }
    support::save_grid(&args.out.join("autoencoder-reconstructions.png"), &grid, (4, 10), 28, 28)?;
    checkpoint::save(args.out.join("autoencoder.safetensors"), &state.0, Some(&state.1))?;
    if let Some(recon) = recon {
        println!("final reconstruction loss: {recon:.4}");
    }
    Ok(())
}
