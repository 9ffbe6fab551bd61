//! Training-step benchmarks: one step (forward + backward + SGD update) of
//! the MLP 784-256-10 at batch 128 and 1, and of the seed's CNN at batch 64,
//! in ms/step with dispatches and submits per step.
//!
//! `cargo bench --bench steps` prints a table. Each step ends with a
//! read-back of its loss (as a training loop that watches the loss does);
//! medians over repeated steps after warm-up.

use std::time::Instant;

use wgrad::nn::{self, ConvOptions};
use wgrad::optim::Optimizer;
use wgrad::{Device, Params, Tensor, compile, grad};

#[derive(Params)]
struct Mlp {
    w1: Tensor,
    b1: Tensor,
    w2: Tensor,
    b2: Tensor,
}

fn mlp_loss(p: &Mlp, (x, y): &(Tensor, Tensor)) -> Tensor {
    let h = (x.matmul(&p.w1) + &p.b1).tanh();
    -((h.matmul(&p.w2) + &p.b2).log_softmax(-1) * y).sum_all() / x.dim(0) as f32
}

#[derive(Params)]
struct Cnn {
    c1: Tensor,
    b1: Tensor,
    c2: Tensor,
    b2: Tensor,
    w: Tensor,
    b: Tensor,
}

fn cnn_loss(p: &Cnn, (x, y): &(Tensor, Tensor)) -> Tensor {
    let same = ConvOptions::default().padding(2);
    let h = nn::max_pool2d(&nn::conv2d(x, &p.c1, Some(&p.b1), same).tanh(), 2, 2, 0);
    let h = nn::max_pool2d(&nn::conv2d(&h, &p.c2, Some(&p.b2), same).tanh(), 2, 2, 0);
    nn::cross_entropy(&nn::linear(&h.flatten(1, -1), &p.w, Some(&p.b)), y, nn::Reduction::Mean)
}

struct Row {
    name: String,
    ms: f64,
    dispatches: u64,
    submits: u64,
}

fn measure<P: Params>(
    dev: &Device,
    name: &str,
    params: P,
    data: (Tensor, Tensor),
    loss: impl Fn(&P, &(Tensor, Tensor)) -> Tensor + Copy,
    reps: usize,
) -> [Row; 2] {
    let mut opt = Optimizer::sgd(0.01);
    opt.init(&params);
    let mut state = (params, opt);
    let eager = |(params, opt): &mut (P, Optimizer)| {
        let (g, l, ()) = grad(loss)(params, &data);
        *params = opt.step(params, &g);
        l.item::<f32>().expect("read-back")
    };
    let eager_row = time(dev, &format!("{name}, eager"), reps, || eager(&mut state));
    let mut step = compile(|(params, opt): &mut (P, Optimizer), data: &(Tensor, Tensor)| {
        let (g, l, ()) = grad(loss)(params, data);
        *params = opt.step(params, &g);
        l
    });
    let compiled_row = time(dev, &format!("{name}, compiled"), reps, || {
        step.run(&mut state, &data).expect("step").item::<f32>().expect("read-back")
    });
    [eager_row, compiled_row]
}

fn time(dev: &Device, name: &str, reps: usize, mut step: impl FnMut() -> f32) -> Row {
    for _ in 0..3 {
        step();
    }
    let before = dev.counters();
    let mut times: Vec<f64> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            step();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    let c = dev.counters() - before;
    times.sort_by(f64::total_cmp);
    Row {
        name: name.into(),
        ms: times[reps / 2],
        dispatches: c.dispatches / reps as u64,
        submits: c.submits / reps as u64,
    }
}

fn main() -> wgrad::Result<()> {
    let dev = Device::new()?;
    let info = dev.adapter_info();
    println!("adapter: {} ({:?})\n", info.name, info.backend);
    dev.manual_seed(0);
    let mlp = |dev: &Device| Mlp {
        w1: Tensor::randn(dev, &[784, 256]) * 0.05,
        b1: Tensor::zeros(dev, &[256]),
        w2: Tensor::randn(dev, &[256, 10]) * 0.05,
        b2: Tensor::zeros(dev, &[10]),
    };
    let batch = |n: usize| {
        let labels = Tensor::arange(&dev, 0.0, n as f32, 1.0).cast(wgrad::DType::U32);
        (Tensor::rand(&dev, &[n, 784]), (&labels - &(&labels / 10u32 * 10u32)).one_hot(10))
    };
    let mut rows: Vec<Row> = Vec::new();
    rows.extend(measure(&dev, "MLP 784-256-10, batch 128", mlp(&dev), batch(128), mlp_loss, 50));
    rows.extend(measure(&dev, "MLP 784-256-10, batch 1", mlp(&dev), batch(1), mlp_loss, 100));
    let cnn = Cnn {
        c1: nn::init::kaiming_uniform(&dev, &[16, 1, 5, 5]),
        b1: Tensor::zeros(&dev, &[16]),
        c2: nn::init::kaiming_uniform(&dev, &[32, 16, 5, 5]),
        b2: Tensor::zeros(&dev, &[32]),
        w: nn::init::xavier_uniform(&dev, &[10, 32 * 7 * 7], 1.0),
        b: Tensor::zeros(&dev, &[10]),
    };
    let labels = Tensor::arange(&dev, 0.0, 64.0, 1.0).cast(wgrad::DType::U32);
    let cnn_data = (Tensor::rand(&dev, &[64, 1, 28, 28]), &labels - &(&labels / 10u32 * 10u32));
    rows.extend(measure(&dev, "CNN (seed's), batch 64", cnn, cnn_data, cnn_loss, 10));
    println!("| training step | ms/step | dispatches/step | submits/step |");
    println!("|---|---|---|---|");
    for r in rows {
        println!("| {} | {:.2} | {} | {} |", r.name, r.ms, r.dispatches, r.submits);
    }
    Ok(())
}
