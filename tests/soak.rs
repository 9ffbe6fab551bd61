//! Long runs: 10,000 training steps of the MNIST MLP hold GPU memory flat,
//! eager and compiled; the same seed gives the same bits; threads sharing a
//! device each get what they would alone.

mod common;

use common::*;
use wgrad::data::{Mnist, Split};
use wgrad::optim::Optimizer;
use wgrad::{Device, Params, Tensor, compile, grad, nn};

#[derive(Params, Clone)]
struct Mlp {
    w: Vec<Tensor>,
    b: Vec<Tensor>,
}

fn mlp(d: &Device) -> Mlp {
    Mlp {
        w: vec![nn::init::xavier_uniform(d, &[784, 64], 1.0), nn::init::xavier_uniform(d, &[64, 10], 1.0)],
        b: vec![Tensor::zeros(d, &[64]), Tensor::zeros(d, &[10])],
    }
}

/// The seed's MLP with dropout on the hidden layer: randomness in the step.
fn loss(p: &Mlp, (x, labels): &(Tensor, Tensor)) -> Tensor {
    let h = nn::dropout(&(x.matmul(&p.w[0]) + &p.b[0]).tanh(), 0.1, true);
    let pred = h.matmul(&p.w[1]) + &p.b[1];
    nn::cross_entropy(&pred, labels, nn::Reduction::Mean)
}

fn data() -> Mnist {
    Mnist::load(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist")).unwrap()
}

fn batch(d: &Device, split: &Split, i: usize) -> (Tensor, Tensor) {
    let start = (i * 32) % (split.len() - 32);
    split.batch(d, &(start..start + 32).collect::<Vec<_>>())
}

fn bits(m: &Mlp) -> Vec<u32> {
    m.named_tensors().iter().flat_map(|(_, t)| t.to_vec::<f32>().unwrap()).map(f32::to_bits).collect()
}

/// Trains `steps` steps, eager or compiled, and returns the parameters, the
/// mean loss of the first and last 100 steps, and the pool's bytes held and
/// buffers created after `warmup` steps and at the end.
fn train(d: &Device, data: &Mnist, steps: usize, compiled: bool) -> (Mlp, [f32; 2], [(u64, u64); 2]) {
    d.manual_seed(1);
    let mut opt = Optimizer::adam(1e-3);
    let p = mlp(d);
    opt.init(&p);
    let mut state = (p, opt);
    let mut step = compile(|(p, opt): &mut (Mlp, Optimizer), b: &(Tensor, Tensor)| {
        let (g, l, ()) = grad(loss)(p, b);
        *p = opt.step(p, &g);
        l
    });
    let warmup = 500.min(steps / 2);
    let mut losses = Vec::new();
    let mut pool = [(0, 0); 2];
    let mut sum = Tensor::zeros(d, &[]);
    for i in 0..steps {
        let b = batch(d, &data.train, i);
        let l = if compiled { step.run(&mut state, &b).unwrap().clone() } else { step.run_eager(&mut state, &b) };
        // losses summed on the GPU, read every 100 steps
        sum = sum + l;
        if i % 100 == 99 {
            losses.push(sum.item::<f32>().unwrap() / 100.0);
            sum = Tensor::zeros(d, &[]);
        }
        if i + 1 == warmup {
            d.sync().unwrap();
            let c = d.counters();
            pool[0] = (c.bytes_held, c.buffers_created);
        }
    }
    d.sync().unwrap();
    let c = d.counters();
    pool[1] = (c.bytes_held, c.buffers_created);
    if let Some(plan) = step.memory().filter(|_| compiled) {
        eprintln!(
            "compiled step owns {} bytes ({} one buffer per tensor would take)",
            plan.peak_bytes, plan.naive_bytes
        );
    }
    (state.0, [losses[0], *losses.last().unwrap()], pool)
}

#[test]
fn ten_thousand_steps_hold_memory_flat() {
    let data = data();
    for compiled in [false, true] {
        let d = own_device();
        let start = std::time::Instant::now();
        let (_, [first, last], [warm, end]) = train(&d, &data, 10_000, compiled);
        let mode = if compiled { "compiled" } else { "eager" };
        eprintln!(
            "{mode}: 10000 steps in {:.1} s; loss {first:.3} → {last:.3}; pool after 500 steps {} bytes in {} buffers, \
             after 10000 {} bytes in {} buffers",
            start.elapsed().as_secs_f64(),
            warm.0,
            warm.1,
            end.0,
            end.1
        );
        assert!(last < 0.5 * first, "{mode}: it learns: {first} → {last}");
        assert_eq!(warm, end, "{mode}: the pool grew after warm-up (bytes held, buffers created)");
    }
}

#[test]
fn the_same_seed_gives_the_same_bits() {
    let data = data();
    let run = |compiled| {
        let d = own_device();
        bits(&train(&d, &data, 300, compiled).0)
    };
    let eager = run(false);
    assert_eq!(eager, run(false), "two eager runs");
    assert_eq!(eager, run(true), "compiled replays the eager run");
    assert_eq!(eager, run(true), "two compiled runs");
}

/// Two threads train their own model on one device, interleaving their
/// recording and submits; each ends with the bits it gets alone.
#[test]
fn threads_sharing_a_device_get_what_they_get_alone() {
    let data = std::sync::Arc::new(data());
    let plain = |p: &Mlp, (x, labels): &(Tensor, Tensor)| {
        let h = (x.matmul(&p.w[0]) + &p.b[0]).tanh();
        nn::cross_entropy(&(h.matmul(&p.w[1]) + &p.b[1]), labels, nn::Reduction::Mean)
    };
    // initial values from the host: the device's random stream is shared
    let run = move |d: &Device, data: &Mnist, k: usize| {
        let mut rng = Rng::new(k as u64);
        let mut t = |shape: &[usize], scale: f64| {
            let a = rng.array(shape, -scale, scale);
            Tensor::from_slice(d, &a.data.iter().map(|&x| x as f32).collect::<Vec<_>>(), shape)
        };
        let mut p = Mlp { w: vec![t(&[784, 64], 0.08), t(&[64, 10], 0.3)], b: vec![t(&[64], 0.0), t(&[10], 0.0)] };
        let mut opt = Optimizer::sgd(0.1).momentum(0.9);
        for i in 0..150 {
            let (g, _, ()) = grad(plain)(&p, &batch(d, &data.train, 1000 * k + i));
            p = opt.step(&p, &g);
        }
        bits(&p)
    };
    let alone: Vec<Vec<u32>> = (0..2).map(|k| run(&own_device(), &data, k)).collect();
    let shared = own_device();
    let handles: Vec<_> = (0..2)
        .map(|k| {
            let (d, data) = (shared.clone(), data.clone());
            std::thread::spawn(move || run(&d, &data, k))
        })
        .collect();
    let together: Vec<Vec<u32>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(alone[0] != alone[1]);
    assert_eq!(together, alone);
}

/// Threads on one fresh device, each building kernels no one built before
/// (compiled steps of their own shapes: generated fusions and matmul tiles)
/// while the others flush and read back: all finish. (On GL, where a flush
/// holds the device's turn, building a pipeline under the cache's lock and
/// then asking for the turn deadlocked against a flush.)
#[test]
fn threads_building_kernels_while_others_flush_finish() {
    let shared = own_device();
    let (done, finished) = std::sync::mpsc::channel();
    for k in 0..4usize {
        let (d, done) = (shared.clone(), done.clone());
        std::thread::spawn(move || {
            for i in 0..6 {
                // a shape, and so a set of kernels, of this thread and round
                let n = 3 + 4 * i + k;
                let x = Tensor::from_slice(&d, &vec![0.5f32; n * (n + 1)], &[n, n + 1]);
                let mut step = compile(|w: &mut Tensor, x: &Tensor| {
                    let y = (x.matmul(w).tanh() * (k as f32 + 1.0)).sum_all();
                    *w = &*w - 0.01;
                    y
                });
                let mut w = Tensor::ones(&d, &[n + 1, n + 2 + k]);
                for _ in 0..3 {
                    step.run(&mut w, &x).expect("a compiled step").item::<f32>().expect("read-back");
                }
                (&x + i as f32).exp().sum_all().item::<f32>().expect("read-back");
            }
            done.send(k).expect("the test waits");
        });
    }
    for _ in 0..4 {
        let k = finished.recv_timeout(std::time::Duration::from_secs(300)).expect("a thread is stuck");
        assert!(k < 4);
    }
}
