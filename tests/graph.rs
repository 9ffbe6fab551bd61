//! The recorded graph: one submit per read-back, no growth of GPU memory in
//! a loop, counters, clear errors for bad input and for oversize tensors.

mod common;

use common::*;
use wgrad::nn::{ConvOptions, conv2d};
use wgrad::{DType, Error, Tensor};

#[test]
fn one_submit_per_read_back() {
    let d = own_device();
    let mut x = Tensor::ones(&d, &[1000]);
    d.sync().unwrap();
    let before = d.counters();
    for i in 0..100 {
        x = if i % 2 == 0 { &x * 1.01 } else { &x + 0.5 };
    }
    let v: Vec<f32> = x.to_vec().unwrap();
    let c = d.counters() - before;
    assert_eq!((c.submits, c.dispatches, c.readbacks), (1, 100, 1));
    let mut want = 1.0f32;
    for i in 0..100 {
        want = if i % 2 == 0 { want * 1.01 } else { want + 0.5 };
    }
    assert!((v[999] - want).abs() <= 1e-5 * want, "{} vs {want}", v[999]);
    // a read-back with nothing pending is still one submit (the copy)
    let before = d.counters();
    let _ = x.to_vec::<f32>().unwrap();
    assert_eq!((d.counters() - before).submits, 1);
}

/// Work that needs no kernel records none: a reduction over axes of size 1
/// (the bias gradient at batch 1) is a view, and an optimizer step without
/// clipping records exactly its updates and the step count.
#[test]
fn nothing_to_compute_records_no_dispatch() {
    let d = own_device();
    let x = Tensor::from_slice(&d, &[1.0f32, -0.5, 3.0], &[1, 3, 1]);
    let b = Tensor::from_slice(&d, &[0.25f32, 0.5, 1.0], &[3]);
    d.sync().unwrap();
    let before = d.counters();
    let views = [x.sum(&[0], false), x.mean(&[0, 2], false), x.max(&[2], true), x.min(&[0], true)];
    d.sync().unwrap();
    assert_eq!((d.counters() - before).dispatches, 0);
    let shapes: Vec<&[usize]> = views.iter().map(|v| v.shape()).collect();
    assert_eq!(shapes, [&[3, 1][..], &[3], &[1, 3, 1], &[1, 3, 1]]);
    for v in &views {
        assert_eq!(v.to_vec::<f32>().unwrap(), vec![1.0, -0.5, 3.0]);
    }
    // the gradient still flows through: d/db Σ (x·b summed over the batch)
    let f = |b: &Tensor, x: &Tensor| (&x.reshape(&[1, 3]) * b).sum(&[0], false).sum_all();
    let (g, _, ()) = wgrad::grad(f)(&b, &x);
    assert_eq!(g.to_vec::<f32>().unwrap(), vec![1.0, -0.5, 3.0]);
    let mut opt = wgrad::optim::Optimizer::sgd(0.1);
    let params = vec![b.clone(), x.clone()];
    opt.init(&params);
    d.sync().unwrap();
    let before = d.counters();
    let _ = opt.step(&params, &params);
    d.sync().unwrap();
    assert_eq!((d.counters() - before).dispatches, 3, "two updates and the step count");
}

#[test]
fn pool_memory_is_flat_over_ten_thousand_steps() {
    let d = own_device();
    d.manual_seed(0);
    let w = Tensor::randn(&d, &[64, 32]) * 0.1;
    let b = Tensor::zeros(&d, &[32]);
    let step = |i: usize| {
        let x = Tensor::full(&d, &[16, 64], (i % 7) as f32 * 0.1);
        let h = (x.matmul(&w) + &b).tanh();
        h.softmax(-1).sum_all()
    };
    let mut held_after_warmup = 0;
    let mut last = 0.0;
    for i in 0..10_000 {
        let s = step(i);
        if i % 50 == 49 {
            last = s.item::<f32>().unwrap();
        }
        if i == 199 {
            held_after_warmup = d.counters().bytes_held;
        }
    }
    d.sync().unwrap();
    let c = d.counters();
    assert!((last - 16.0).abs() < 1e-3, "each softmax row sums to 1: {last}");
    assert_eq!(c.bytes_held, held_after_warmup, "the pool grew after warm-up: {c:?}");
    assert!(c.buffers_created < 64, "buffers are reused: {c:?}");
    assert_eq!(c.bytes_in_use(), d.counters().bytes_held - d.counters().bytes_free);
}

#[test]
fn counters_track_pipelines_and_uploads() {
    let d = own_device();
    let a = Tensor::from_slice(&d, &[1.0f32, 2.0], &[2]);
    let _ = (&a + &a).to_vec::<f32>().unwrap();
    let before = d.counters();
    let _ = (&a + &a).exp().to_vec::<f32>().unwrap();
    let c = d.counters() - before;
    assert_eq!(c.pipelines, 1, "add is cached, exp is new");
    assert_eq!(c.uploads, 0);
}

/// Bad input panics when the op is recorded, naming the op, the shapes and
/// the caller's line.
#[test]
fn bad_input_messages() {
    let d = dev();
    let a = Tensor::zeros(d, &[2, 3]);
    let b = Tensor::zeros(d, &[4, 5]);
    let (img, k) = (Tensor::zeros(d, &[1, 3, 5, 5]), Tensor::zeros(d, &[2, 2, 3, 3]));
    let (wide, kw) = (Tensor::zeros(d, &[1, 65536, 1, 1]), Tensor::zeros(d, &[65536, 1, 1, 1]));
    let groups = ConvOptions::default().groups(65536);
    type Case<'a> = (Box<dyn Fn() + 'a>, u32, &'static [&'static str]);
    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        (Box::new(|| drop(a.matmul(&b))), line!(), &["matmul", "[2, 3]", "[4, 5]", "inner dimensions 3 and 4"]),
        (Box::new(|| drop(&a + &b)), line!(), &["add", "[2, 3]", "[4, 5]", "broadcast"]),
        (Box::new(|| drop(a.sum(&[2], false))), line!(), &["sum", "axis 2", "[2, 3]"]),
        (Box::new(|| drop(a.softmax(-3))), line!(), &["softmax", "axis -3", "[2, 3]"]),
        (Box::new(|| drop(a.reshape(&[4, 2]))), line!(), &["reshape", "[2, 3]", "[4, 2]"]),
        (Box::new(|| drop(a.item::<f32>())), line!(), &["item", "[2, 3]"]),
        (Box::new(|| drop(a.to_vec::<u32>())), line!(), &["to_vec", "f32", "u32"]),
        (Box::new(|| drop(&a + &a.cast(DType::U32))), line!(), &["add", "dtypes", "u32"]),
        (Box::new(|| drop(a.index_select(0, &a))), line!(), &["index_select", "u32 or i32"]),
        (Box::new(|| drop(a.narrow(1, 2, 2))), line!(), &["narrow", "2..4", "[2, 3]"]),
        (Box::new(|| drop(a.cast(DType::U32).exp())), line!(), &["exp", "u32"]),
        (Box::new(|| drop(Tensor::cat(&[&a, &b], 0))), line!(), &["cat", "[2, 3]", "[4, 5]"]),
        (Box::new(|| drop(a.permute(&[0, 0]))), line!(), &["permute", "[0, 0]"]),
        (Box::new(|| drop(a.expand(&[3, 3]))), line!(), &["expand", "[2, 3]", "[3, 3]"]),
        (Box::new(|| drop(Tensor::from_slice(d, &[1.0f32; 5], &[2, 3]))), line!(), &["from_slice", "5 values", "[2, 3]"]),
        (Box::new(|| drop(a.gt(0.0).cast(DType::F32).where_(&a, &a))), line!(), &["where_", "mask"]),
        (Box::new(|| drop(conv2d(&img, &k, None, ConvOptions::default()))), line!(), &["conv2d", "[1, 3, 5, 5]", "[2, 2, 3, 3]", "channels"]),
        (Box::new(|| drop(conv2d(&wide, &kw, None, groups))), line!(), &["conv2d", "[1, 65536, 1, 1]", "groups"]),
    ];
    for (f, line, needles) in cases {
        let (msg, location) = panic_of(std::panic::AssertUnwindSafe(f));
        for n in needles {
            assert!(msg.contains(n), "message {msg:?} lacks {n:?}");
        }
        assert!(msg.starts_with("wgrad: "), "{msg}");
        assert_eq!(location, format!("tests/graph.rs:{line}"), "for {msg}");
    }
}

#[test]
fn two_threads_share_a_device() {
    let d = own_device();
    let handles: Vec<_> = (0..2)
        .map(|k| {
            let d = d.clone();
            std::thread::spawn(move || {
                for i in 0..50 {
                    let v = (k * 1000 + i) as f32;
                    let x = Tensor::full(&d, &[300], v);
                    let s: f32 = (&x * 2.0).sum_all().item().unwrap();
                    assert_eq!(s, 600.0 * v);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

/// Debug mode names the first op that produced NaN/Inf, with the caller's
/// line, and for gradients the forward op whose backward pass it was.
#[test]
fn debug_mode_names_the_first_non_finite_op() {
    let d = own_device();
    d.set_check_finite(true);
    let x = Tensor::from_slice(&d, &[1.0f32, 0.0], &[2]);
    let line = line!() + 1;
    let y = x.log(); // log(0) = -inf
    let z = (&y * 2.0).exp();
    let err = z.to_vec::<f32>().unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::NonFinite { .. }), "{msg}");
    assert!(msg.contains("log at tests/graph.rs:") && msg.contains(&format!(":{line}:")), "{msg}");
    // finite work afterwards is fine
    assert_eq!((&x + 1.0).to_vec::<f32>().unwrap(), vec![2.0, 1.0]);
    // a gradient: d sqrt(x)/dx at 0 is inf
    let line = line!() + 1;
    let f = |x: &Tensor, _: &()| x.sqrt().sum_all();
    let (g, _, ()) = wgrad::grad(f)(&x, &());
    let msg = g.to_vec::<f32>().unwrap_err().to_string();
    assert!(
        msg.contains("in the backward pass of sqrt at tests/graph.rs:") && msg.contains(&format!(":{line}:")),
        "{msg}"
    );
    d.set_check_finite(false);
    let g: Vec<f32> = g.to_vec().unwrap();
    assert!(g[1].is_infinite());
}

/// Out-of-range indices are caught by the kernels and reported at the next
/// read-back as an error naming the op and the caller's line; the result
/// reads zero there, never memory outside the tensor.
#[test]
fn out_of_range_indices_are_errors() {
    use wgrad::nn;
    let d = own_device();
    let x = Tensor::from_slice(&d, &[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]);
    let bad_u = Tensor::from_slice(&d, &[0u32, 3], &[2]);
    let bad_i = Tensor::from_slice(&d, &[-1i32, 0], &[2]);
    type Case<'a> = (Box<dyn Fn() -> Tensor + 'a>, u32, &'static str);
    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        (Box::new(|| x.gather(1, &bad_u.reshape(&[2, 1]))), line!(), "gather"),
        (Box::new(|| x.index_select(0, &bad_i)), line!(), "index_select"),
        (Box::new(|| nn::embedding(&bad_u, &x.t())), line!(), "index_select"),
        (Box::new(|| bad_u.one_hot(3)), line!(), "one_hot"),
        (Box::new(|| x.scatter_add(1, &bad_u.reshape(&[2, 1]), &x.narrow(1, 0, 1))), line!(), "scatter_add"),
        (Box::new(|| nn::cross_entropy(&x, &bad_u, nn::Reduction::Mean)), line!(), "gather"),
    ];
    for (f, line, op) in cases {
        let y = f();
        let err = y.to_vec::<f32>().unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::IndexOutOfRange { .. }), "{msg}");
        assert!(msg.contains(op) && msg.contains(&format!("tests/graph.rs:{line}:")), "{msg}");
        // reported once; the device goes on
        assert_eq!(x.sum_all().item::<f32>().unwrap(), 21.0);
    }
    // in range: no error, and the zero a bad index read is visible
    let ok = Tensor::from_slice(&d, &[2u32, 0], &[2]);
    assert_eq!(x.index_select(1, &ok).to_vec::<f32>().unwrap(), vec![3.0, 1.0, 6.0, 4.0]);
}
