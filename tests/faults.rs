//! Device faults: a lost device, a read-back that times out, requests larger
//! than the device allows. Each is an `Err`, never a panic or a hang.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use wgrad::nn::{Reduction, cross_entropy};
use wgrad::optim::Optimizer;
use wgrad::{Error, Tensor, checkpoint, compile, grad};

type Mlp = BTreeMap<String, Tensor>;

fn mlp(d: &wgrad::Device) -> Mlp {
    let mut rng = Rng::new(5);
    let mut t = |shape: &[usize]| {
        let a = rng.array(shape, -0.5, 0.5);
        Tensor::from_slice(d, &a.data.iter().map(|&x| x as f32).collect::<Vec<_>>(), shape)
    };
    BTreeMap::from([("w1".into(), t(&[16, 8])), ("b1".into(), t(&[16])), ("w2".into(), t(&[4, 16]))])
}

fn loss(p: &Mlp, (x, y): &(Tensor, Tensor)) -> Tensor {
    let h = wgrad::nn::linear(x, &p["w1"], Some(&p["b1"])).relu();
    cross_entropy(&wgrad::nn::linear(&h, &p["w2"], None), y, Reduction::Mean)
}

#[test]
fn a_lost_device_makes_every_later_call_an_error() {
    let d = own_device();
    let params = mlp(&d);
    let batch = (Tensor::ones(&d, &[3, 8]), Tensor::from_slice(&d, &[0u32, 1, 3], &[3]));
    let mut opt = Optimizer::adam(1e-2);
    let step = |p: &Mlp, opt: &mut Optimizer| {
        let (g, l, ()) = grad(loss)(p, &batch);
        (opt.step(p, &g), l)
    };
    let (params, l) = step(&params, &mut opt);
    assert!(l.item::<f32>().unwrap().is_finite());
    let mut compiled = compile(|(p, opt): &mut (Mlp, Optimizer), b: &(Tensor, Tensor)| {
        let (g, l, ()) = grad(loss)(p, b);
        *p = opt.step(p, &g);
        l
    });
    let mut state = (params.clone(), opt.clone());
    compiled.run(&mut state, &batch).unwrap().item::<f32>().unwrap();

    // what a driver reset or an unplugged GPU does, on demand
    d.destroy();

    let lost = |what: &str, r: Result<Vec<f32>, Error>| {
        let e = r.expect_err(what);
        assert!(matches!(e, Error::DeviceLost(_)), "{what}: {e}");
        e.to_string()
    };
    let msg = lost("read-back", params["w1"].to_vec());
    eprintln!("{msg}");
    lost("sync", d.sync().map(|_| vec![]));
    lost("new tensor", Tensor::from_slice(&d, &[1.0f32, 2.0], &[2]).to_vec());
    lost("random", Tensor::randn(&d, &[4]).to_vec());
    lost("op", (&params["b1"] * 2.0).exp().to_vec());
    let (params2, l) = step(&params, &mut opt);
    lost("grad + step", l.to_vec());
    lost("stepped parameters", params2["w2"].to_vec());
    let e = compiled.run(&mut state, &batch).and_then(|l| l.to_vec::<f32>()).unwrap_err();
    assert!(matches!(e, Error::DeviceLost(_)), "compiled step: {e}");
    // pipelines never built before, a fresh trace, the optimizer's counter
    let img = Tensor::ones(&d, &[1, 1, 5, 5]);
    let conv = wgrad::nn::conv2d(&img, &Tensor::ones(&d, &[2, 1, 3, 3]), None, Default::default());
    lost("new pipeline", wgrad::nn::max_pool2d(&conv, 2, 2, 0).to_vec());
    let mut fresh = compile(|w: &mut Tensor, x: &Tensor| {
        *w = &*w - x;
        w.sum_all()
    });
    let mut w = Tensor::ones(&d, &[3]);
    let e = fresh.run(&mut w, &Tensor::ones(&d, &[3])).and_then(|l| l.to_vec::<f32>()).unwrap_err();
    assert!(matches!(e, Error::DeviceLost(_)), "fresh trace: {e}");
    let e = opt.steps().unwrap_err();
    assert!(matches!(e, Error::DeviceLost(_)), "optimizer steps: {e}");
    let path = std::env::temp_dir().join(format!("wgrad-lost-{}.safetensors", std::process::id()));
    let e = checkpoint::save(&path, &params, None).unwrap_err();
    assert!(matches!(e, Error::DeviceLost(_)), "{e}");
    assert!(!path.exists(), "nothing half-written");
    lost("still lost", Tensor::zeros(&d, &[1]).to_vec());
}

/// A time limit bounds every read-back: the one that waits for slow work,
/// and the next one too, of an unrelated tensor, although the queue runs it
/// after the slow work (before, that read blocked until the work was done);
/// the pending work stays pending and the device recovers. On wgpu's GL
/// backend, which runs the work inside the submission, setting a limit is
/// an error that says so.
#[test]
fn a_read_back_past_its_timeout_is_an_error_and_the_device_recovers() {
    let d = own_device();
    // ~12 GFLOP: a second on two CPU cores, a few milliseconds on a GPU
    let n = 1024;
    let a = Tensor::randn(&d, &[n, n]);
    let b = Tensor::randn(&d, &[n, n]) * 0.03;
    let tiny = Tensor::from_slice(&d, &[1.0f32, 2.0], &[2]);
    let slow = || a.matmul(&b).matmul(&b).matmul(&b).matmul(&b).matmul(&b).matmul(&b).sum_all();
    let started = Instant::now();
    let want = slow().item::<f32>().unwrap();
    let alone = started.elapsed();
    let limit = Duration::from_micros(1);
    if d.adapter_info().backend == wgpu::Backend::Gl {
        let e = d.set_timeout(Some(limit)).unwrap_err();
        assert!(matches!(e, Error::Unsupported(_)), "{e}");
        eprintln!("{e}");
        d.set_timeout(None).unwrap();
        return;
    }
    d.set_timeout(Some(limit)).unwrap();
    let s = slow();
    let started = Instant::now();
    let e = s.item::<f32>().unwrap_err();
    assert!(matches!(e, Error::Timeout(t) if t == limit), "{e}");
    eprintln!("{e}");
    // the next read, of another tensor: bounded too, an error or its value
    match (&tiny * 2.0).to_vec::<f32>() {
        Err(e) => assert!(matches!(e, Error::Timeout(_)), "{e}"),
        Ok(v) => assert_eq!(v, vec![2.0, 4.0]),
    }
    let both = started.elapsed();
    assert!(
        both < alone / 2 || both < Duration::from_millis(20),
        "two bounded reads took {both:?}, the work {alone:?}"
    );
    // without the limit the same tensor reads back, and the device goes on working
    d.set_timeout(None).unwrap();
    assert_eq!(s.item::<f32>().unwrap(), want, "same work, same result");
    assert_eq!((&tiny * 3.0).to_vec::<f32>().unwrap(), vec![3.0, 6.0]);
}

#[test]
fn requests_beyond_the_device_are_errors_with_the_size_and_the_limit() {
    let d = own_device();
    let limit = d.limits().max_storage_buffer_binding_size.min(d.limits().max_buffer_size);
    let huge = 1usize << 40;
    for (what, shape) in [
        ("one past the limit", vec![(limit / 4 + 1) as usize]),
        ("a product past u64", vec![huge, huge, huge]),
        ("a product that wraps to zero", vec![1 << 32, 1 << 32]),
    ] {
        let line = line!() + 1;
        let big = Tensor::zeros(&d, &shape);
        let e = (&big * 2.0).sum_all().item::<f32>().unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, Error::TooLarge { .. }), "{what}: {msg}");
        assert!(msg.contains(&format!("{shape:?}")) && msg.contains(&limit.to_string()), "{what}: {msg}");
        assert!(msg.contains(&format!("tests/faults.rs:{line}")), "{what}: {msg}");
        eprintln!("{msg}");
        // the device goes on working
        assert_eq!(Tensor::ones(&d, &[2]).sum_all().item::<f32>().unwrap(), 2.0);
    }
    // made from host data that would not fit either
    let line = line!() + 1;
    let e = Tensor::arange(&d, 0.0, 1e10, 1.0).sum_all().item::<f32>().unwrap_err();
    assert!(matches!(e, Error::TooLarge { op: "arange", .. }), "{e}");
    assert!(e.to_string().contains(&format!("tests/faults.rs:{line}")), "{e}");
    // an output too large, from inputs that are not
    let a = Tensor::ones(&d, &[1 << 16, 1]);
    let b = Tensor::ones(&d, &[1, 1 << 16]);
    let e = a.matmul(&b).sum_all().item::<f32>().unwrap_err();
    assert!(matches!(e, Error::TooLarge { op: "matmul", .. }), "{e}");
    let e = (&a * &b).sum_all().item::<f32>().unwrap_err();
    assert!(matches!(e, Error::TooLarge { .. }), "{e}");
}
