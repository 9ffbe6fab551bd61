//! Compiled steps: the same numbers as eager mode, one submission and
//! nothing created per replay, clear errors for data-dependent steps.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::{Cell, RefCell};

use common::*;
use wgrad::nn::{self, AttnMask, Reduction};
use wgrad::optim::Optimizer;
use wgrad::{Device, Params, Tensor, compile, grad};

#[derive(Params)]
struct Mlp {
    w1: Tensor,
    b1: Tensor,
    w2: Tensor,
    b2: Tensor,
}

/// Watches the heap allocations made by the current thread while it
/// measures, and which function made each: the innermost frame of its stack
/// outside the allocator and the standard library.
struct Counting;

thread_local! {
    static MEASURING: Cell<bool> = const { Cell::new(false) };
    static MADE_BY: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

fn watch() {
    // `try_with`: the allocator runs during thread teardown too
    let _ = MEASURING.try_with(|m| {
        if m.replace(false) {
            let trace = std::backtrace::Backtrace::force_capture().to_string();
            let innermost = trace
                .lines()
                .filter_map(|l| l.trim_start().split_once(": ").map(|(_, f)| f.to_string()))
                .find(|f| {
                    ![
                        "std::",
                        "core::",
                        "alloc::",
                        "<alloc::",
                        "<std::",
                        "__rust",
                        "compile::Counting",
                        "<compile::Counting",
                    ]
                    .iter()
                    .any(|p| f.starts_with(p))
                        && !f.contains("watch")
                })
                .unwrap_or_default();
            MADE_BY.with(|v| v.borrow_mut().push(innermost));
            m.set(true);
        }
    });
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        watch();
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        watch();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The functions that made each heap allocation on this thread while `f` ran.
fn allocations(f: impl FnOnce()) -> Vec<String> {
    MADE_BY.with(|v| v.borrow_mut().clear());
    MEASURING.with(|m| m.set(true));
    f();
    MEASURING.with(|m| m.set(false));
    MADE_BY.with(|v| v.take())
}

fn mlp(d: &Device) -> Mlp {
    d.manual_seed(7);
    Mlp {
        w1: nn::init::xavier_uniform(d, &[64, 20], 1.0),
        b1: Tensor::zeros(d, &[64]),
        w2: nn::init::xavier_uniform(d, &[5, 64], 1.0),
        b2: Tensor::zeros(d, &[5]),
    }
}

fn loss(p: &Mlp, (x, y): &(Tensor, Tensor)) -> Tensor {
    let h = nn::linear(x, &p.w1, Some(&p.b1)).tanh();
    let h = nn::dropout(&h, 0.1, true);
    nn::cross_entropy(&nn::linear(&h, &p.w2, Some(&p.b2)), y, Reduction::Mean)
}

fn batches(d: &Device, n: usize) -> Vec<(Tensor, Tensor)> {
    d.manual_seed(99);
    (0..n)
        .map(|i| {
            let x = Tensor::randn(d, &[16, 20]);
            let y: Vec<u32> = (0..16).map(|k| ((k * 7 + i) % 5) as u32).collect();
            (x, Tensor::from_slice(d, &y, &[16]))
        })
        .collect()
}

fn values(p: &Mlp) -> Vec<Vec<f32>> {
    p.tensors().iter().map(|t| t.to_vec::<f32>().unwrap()).collect()
}

/// Eager and compiled training agree bit for bit: the same kernels run in the
/// same order on the same data (random numbers included), only recorded once.
#[test]
fn compiled_training_matches_eager_bitwise() {
    let d = own_device();
    let data = batches(&d, 12);
    // eager
    let mut p = mlp(&d);
    let mut opt = Optimizer::adam(0.01).clip_grad_norm(5.0);
    d.manual_seed(5);
    let mut eager_losses = Vec::new();
    for b in &data {
        let (g, l, ()) = grad(loss)(&p, b);
        p = opt.step(&p, &g);
        eager_losses.push(l.item::<f32>().unwrap());
    }
    let eager = values(&p);
    // compiled
    let mut opt = Optimizer::adam(0.01).clip_grad_norm(5.0);
    let p = mlp(&d);
    opt.init(&p);
    let mut step = compile(|(p, opt): &mut (Mlp, Optimizer), b: &(Tensor, Tensor)| {
        let (g, l, ()) = grad(loss)(p, b);
        *p = opt.step(p, &g);
        l
    });
    let mut state = (p, opt);
    d.manual_seed(5);
    let mut compiled_losses = Vec::new();
    for b in &data {
        let l = step.run(&mut state, b).unwrap();
        compiled_losses.push(l.item::<f32>().unwrap());
    }
    assert_eq!(compiled_losses, eager_losses);
    assert_eq!(values(&state.0), eager);
    assert_eq!(state.1.steps().unwrap(), 12);
    assert_eq!(step.programs(), 1);
}

#[test]
fn a_replay_is_one_submit_and_creates_nothing() {
    let d = own_device();
    let data = batches(&d, 3);
    let p = mlp(&d);
    let mut opt = Optimizer::sgd(0.1).momentum(0.9);
    opt.init(&p);
    let mut step = compile(|(p, opt): &mut (Mlp, Optimizer), b: &(Tensor, Tensor)| {
        let (g, l, ()) = grad(loss)(p, b);
        *p = opt.step(p, &g);
        l
    });
    let mut state = (p, opt);
    d.sync().unwrap();
    let before = d.counters();
    step.run(&mut state, &data[0]).unwrap(); // trace
    // pipelines are built for the kernels the program runs, not for the
    // ops that fusion replaced
    let built = (d.counters() - before).pipelines as usize;
    assert!(built <= step.memory().unwrap().dispatches, "{built} pipelines for {:?}", step.memory());
    d.sync().unwrap();
    for b in &data[1..] {
        let before = d.counters();
        let made_by = allocations(|| {
            step.run(&mut state, b).unwrap();
        });
        let c = d.counters() - before;
        // wgpu allocates while it encodes and submits (command buffers,
        // barrier tracking); wgrad's replay itself allocates nothing
        let ours: Vec<&String> = made_by.iter().filter(|f| f.starts_with("wgrad::")).collect();
        assert!(ours.is_empty(), "host allocations made by wgrad in one replay: {ours:#?}");
        eprintln!("one replay: {} host allocations, all inside wgpu", made_by.len());
        assert_eq!(c.submits, 1, "{c:?}");
        assert_eq!((c.buffers_created, c.bind_groups, c.pipelines), (0, 0, 0), "{c:?}");
        assert_eq!(c.tensors_created, 0, "{c:?}");
        assert!(c.dispatches > 10, "{c:?}");
    }
    let plan = step.memory().unwrap();
    assert!(plan.peak_bytes < plan.naive_bytes, "{plan:?}");
    eprintln!("compiled MLP step: {plan:?}");
}

#[test]
fn new_shapes_trace_again() {
    let d = own_device();
    let mut step = compile(|w: &mut Tensor, x: &Tensor| {
        let y = x.matmul(w).sum_all();
        *w = &*w + 1.0;
        y
    });
    let mut w = Tensor::ones(&d, &[3, 2]);
    let small = Tensor::ones(&d, &[4, 3]);
    let big = Tensor::ones(&d, &[9, 3]);
    assert_eq!(step.run(&mut w, &small).unwrap().item::<f32>().unwrap(), 24.0);
    assert_eq!(step.run(&mut w, &big).unwrap().item::<f32>().unwrap(), 9.0 * 6.0 * 2.0);
    assert_eq!(step.run(&mut w, &small).unwrap().item::<f32>().unwrap(), 4.0 * 6.0 * 3.0);
    assert_eq!(step.programs(), 2);
    // the state is updated in place: the caller's tensor sees it
    assert_eq!(w.to_vec::<f32>().unwrap(), vec![4.0; 6]);
}

/// A step whose input shape keeps changing holds the memory of the
/// programs it keeps (8), not of every shape it has seen: an evicted
/// program gives back the buffers it held.
#[test]
fn changing_shapes_hold_the_memory_of_the_kept_programs_only() {
    let d = own_device();
    let mut step = compile(|w: &mut Tensor, x: &Tensor| (x * &*w).sum_all());
    let mut w = Tensor::ones(&d, &[1024]);
    let before = d.counters().bytes_held;
    let mut largest = 0;
    for b in 1..=200 {
        let x = Tensor::ones(&d, &[b, 1024]);
        assert_eq!(step.run(&mut w, &x).unwrap().item::<f32>().unwrap(), (b * 1024) as f32);
        largest = largest.max(b * 1024 * 4);
    }
    assert_eq!(step.programs(), 8);
    // the kept programs' input copies (each at most the largest input,
    // rounded up to its bucket: 5/4), their uniforms, and the inputs the
    // pool keeps for reuse, one per bucket (four buckets per power of two:
    // Σ_k 2^(−k/4) = 6.3 times the largest)
    let held = d.counters().bytes_held - before;
    let bound = (8 * largest * 5 / 4 + 8 * 64 * 1024 + 7 * largest * 5 / 4) as u64;
    assert!(held <= bound, "{} MiB held after 200 shapes (bound {} MiB)", held >> 20, bound >> 20);
}

#[test]
fn reading_a_value_inside_a_step_is_an_error() {
    let d = own_device();
    let mut step = compile(|w: &mut Tensor, x: &Tensor| {
        let s = (x * &*w).sum_all();
        // a branch on a tensor value would be frozen into the trace
        if s.item::<f32>().unwrap() > 0.0 { s } else { -s }
    });
    let mut w = Tensor::ones(&d, &[2]);
    let x = Tensor::ones(&d, &[2]);
    let (msg, _) = panic_of(std::panic::AssertUnwindSafe(|| drop(step.run(&mut w, &x))));
    assert!(msg.contains("compile") && msg.contains("read-back") && msg.contains("where_"), "{msg}");
    // the device (and this thread) keep working
    assert_eq!((&x + 1.0).to_vec::<f32>().unwrap(), vec![2.0, 2.0]);
}

#[test]
fn a_replaced_state_tensor_is_taken_in() {
    let d = own_device();
    let mut step = compile(|w: &mut Tensor, x: &Tensor| {
        *w = &*w * x;
        w.sum_all()
    });
    let mut w = Tensor::ones(&d, &[2]);
    let x = Tensor::full(&d, &[2], 2.0f32);
    step.run(&mut w, &x).unwrap();
    step.run(&mut w, &x).unwrap();
    assert_eq!(w.to_vec::<f32>().unwrap(), vec![4.0, 4.0]);
    w = Tensor::full(&d, &[2], 10.0f32); // e.g. loaded from a checkpoint
    assert_eq!(step.run(&mut w, &x).unwrap().item::<f32>().unwrap(), 40.0);
    assert_eq!(w.to_vec::<f32>().unwrap(), vec![20.0, 20.0]);
}

/// A chain of elementwise ops (broadcasts and scalars included) becomes one
/// generated kernel, with the same results as eager mode.
#[test]
fn elementwise_chains_fuse_into_one_kernel() {
    let d = own_device();
    d.manual_seed(3);
    let x = Tensor::randn(&d, &[300, 7]);
    let b = Tensor::randn(&d, &[7]);
    let f = |x: &Tensor, b: &Tensor| ((x * 2.0 + b).tanh() * x - 1.0).exp().sigmoid() + x.gt(0.0).where_(b, 0.5);
    let eager: Vec<f32> = f(&x, &b).to_vec().unwrap();
    let mut step = compile(move |b: &mut Tensor, x: &Tensor| f(x, b));
    let mut state = b.clone();
    let out: Vec<f32> = step.run(&mut state, &x).unwrap().to_vec().unwrap();
    // the compiler may contract a·b + c into one fma inside a fused kernel:
    // allow one rounding per op of the chain (8 ops, |values| ≤ 2)
    for (g, w) in out.iter().zip(&eager) {
        assert!((g - w).abs() <= 8.0 * f32::EPSILON * 2.0, "{g} vs {w}");
    }
    // the 8-op chain is one kernel; the scalar 0.5 (a fill of shape []) is
    // its own, then `where_` and the last add are one more
    let plan = step.memory().unwrap();
    assert_eq!(plan.dispatches, 3, "{plan:?}");
    let dot = step.dot().unwrap();
    assert!(dot.starts_with("digraph") && dot.contains("fused") && dot.contains("-> out0"), "{dot}");
    let modules = step.wgsl().unwrap();
    let fused = modules.iter().find(|(label, _)| label.contains("fused")).expect("a generated module");
    assert!(fused.1.contains("fn fused(") && fused.1.contains("op_tanh("), "tanh is called by its function");
}

#[test]
fn matmul_epilogues_fold_bias_and_activation() {
    let d = own_device();
    d.manual_seed(5);
    let r = |shape: &[usize]| Tensor::randn(&d, shape);
    // odd sizes (edge tiles, scalar loads), a transposed B, a product also
    // returned, a batched product, aligned sizes (four-wide loads), a row
    // vector and a column vector (one-row tiles where the adapter has them)
    let xs = [r(&[37, 19]), r(&[3, 8, 16]), r(&[64, 128]), r(&[1, 19])];
    let ws = [r(&[19, 45]), r(&[30, 45]), r(&[16, 32]), r(&[32]), r(&[128, 64]), r(&[64]), r(&[45]), r(&[19, 1])];
    let f = |ws: &[Tensor; 8], xs: &[Tensor; 4]| {
        let h = (xs[0].matmul(&ws[0]) + &ws[6]).tanh();
        let y = h.matmul(&ws[1].t()) + 1.0;
        let z = xs[1].matmul(&ws[2]);
        let s = (&z + &ws[3]).sigmoid() * 2.0;
        let g = (xs[2].matmul(&ws[4]) + &ws[5]).gelu();
        let v = (xs[3].matmul(&ws[0]) + &ws[6]).tanh();
        let c = (xs[0].matmul(&ws[7]) - 0.5).sigmoid();
        vec![h, y, z, s, g, v, c]
    };
    let eager: Vec<Vec<f32>> = f(&ws, &xs).iter().map(|t| t.to_vec().unwrap()).collect();
    let mut step = compile(move |ws: &mut [Tensor; 8], xs: &[Tensor; 4]| f(ws, xs));
    let mut state = ws.clone();
    let out: Vec<Vec<f32>> = step.run(&mut state, &xs).unwrap().iter().map(|t| t.to_vec().unwrap()).collect();
    // an epilogue computes what the separate kernels did, on the same
    // product; the compiler may contract a multiply and an add of its ops
    // into one fma (at most one rounding of difference per op, ≤ 3 ops)
    for (k, (o, e)) in out.iter().zip(&eager).enumerate() {
        assert_eq!(o.len(), e.len());
        for (g, w) in o.iter().zip(e) {
            assert!((g - w).abs() <= 3.0 * f32::EPSILON * w.abs().max(1.0), "output {k}: {g} vs {w}");
        }
    }
    // each product and what follows it is one dispatch: the six products,
    // each with its epilogue, nothing else
    let dot = step.dot().unwrap();
    assert_eq!(epilogue_dispatches(dot), 6, "{dot}");
    assert_eq!(step.memory().unwrap().dispatches, 6, "{dot}");
    let modules = step.wgsl().unwrap();
    let labels: Vec<&String> = modules.iter().map(|(label, _)| label).collect();
    assert!(
        modules.iter().all(|(label, wgsl)| label.ends_with(" + epilogue") && wgsl.contains("fn epilogue(")),
        "{labels:?}"
    );
}

/// How many of the dispatches in a compiled program's graph (`dot`) run a
/// generated matmul with an epilogue: their kernels are labelled like
/// "matmul 64×64, subgroups + epilogue" (the tile and kind vary by adapter).
fn epilogue_dispatches(dot: &str) -> usize {
    dot.lines().filter(|l| l.contains("[label=\"matmul (") && l.contains(" + epilogue)")).count()
}

#[test]
fn values_get_their_own_buffer_where_sharing_would_split_a_chain() {
    // In the backward pass of this loss, y·(−1/n) reads the scalar gradient
    // of the sum through a broadcast, and exp(log_softmax) comes right
    // after it; liveness gives exp's result the scalar's buffer, which
    // would keep the two in separate kernels. Fusion moves exp's result to
    // a buffer of its own, and the results stay eager's.
    let d = own_device();
    d.manual_seed(4);
    let f = |p: &Mlp, (x, y): &(Tensor, Tensor)| {
        let h = (x.matmul(&p.w1) + &p.b1).tanh();
        -((h.matmul(&p.w2) + &p.b2).log_softmax(-1) * y).sum_all() / x.dim(0) as f32
    };
    let make = || Mlp {
        w1: Tensor::full(&d, &[20, 64], 0.05),
        b1: Tensor::zeros(&d, &[64]),
        w2: Tensor::full(&d, &[64, 5], -0.03),
        b2: Tensor::zeros(&d, &[5]),
    };
    let one_hot = |i: f32| Tensor::arange(&d, 0.0, 5.0, 1.0).eq(i).cast(wgrad::DType::F32).reshape(&[1, 5]);
    let data: Vec<(Tensor, Tensor)> = (0..3).map(|i| (Tensor::randn(&d, &[1, 20]), one_hot(i as f32))).collect();
    let [eager, compiled] = both(make, f, || Optimizer::sgd(0.1), &data);
    assert_eq!(compiled, eager);
    let p = make();
    let mut o = Optimizer::sgd(0.1);
    o.init(&p);
    let mut state = (p, o);
    let mut step = compile(|(p, o): &mut (Mlp, Optimizer), b: &(Tensor, Tensor)| {
        let (g, l, ()) = grad(f)(p, b);
        *p = o.step(p, &g);
        l
    });
    step.run(&mut state, &data[0]).unwrap();
    // forward: 2 matmuls with their epilogues, log_softmax, the sum (·y its
    // prologue, the loss's scalar ops and the backward pass's first ones its
    // epilogue); backward: the sum over classes (·(−1/n) and exp its
    // prologue, the gradient of the logits, which reads it broadcast, run
    // over each row after it), 3 matmuls (one with an epilogue); the update,
    // which also advances the step count
    let dot = step.dot().unwrap();
    assert_eq!(epilogue_dispatches(dot), 3, "{dot}");
    assert_eq!(step.memory().unwrap().dispatches, 9, "{dot}");
}

#[derive(Params)]
struct Mixed {
    big: Tensor,
    a: Tensor,
    b: Tensor,
    c: Tensor,
}

#[test]
fn optimizer_updates_run_in_place_with_eager_results() {
    let d = own_device();
    d.manual_seed(9);
    // one tensor past the size CPU adapters update alone, small ones that
    // share a dispatch; sizes that are not multiples of four
    let make = || Mixed {
        big: Tensor::randn(&d, &[130, 131]),
        a: Tensor::randn(&d, &[5]),
        b: Tensor::randn(&d, &[3, 7]),
        c: Tensor::randn(&d, &[1]),
    };
    let start = make();
    let copy = |t: &Tensor| t.detach().contiguous();
    let make = || Mixed { big: copy(&start.big), a: copy(&start.a), b: copy(&start.b), c: copy(&start.c) };
    let loss = |p: &Mixed, x: &Tensor| {
        (&p.big * x).tanh().sum_all() + p.a.square().sum_all() + p.b.sin().sum_all() + p.c.exp().sum_all()
    };
    let xs: Vec<Tensor> = (0..4).map(|_| Tensor::randn(&d, &[130, 131])).collect();
    let rules = [
        Optimizer::sgd(0.1),
        Optimizer::sgd(0.1).momentum(0.9).nesterov().weight_decay(0.01),
        Optimizer::adam(0.01),
        Optimizer::adamw(0.01, 0.1),
        Optimizer::rmsprop(0.01),
        Optimizer::rmsprop(0.01).momentum(0.5),
    ];
    for rule in rules {
        // the same rule functions on the same values: the same bits
        let [eager, compiled] = both(make, loss, || rule.clone(), &xs);
        assert_eq!(compiled, eager, "{:?}", rule.rule());
    }
}

#[test]
fn an_update_in_place_keeps_the_rest_of_a_shared_buffer() {
    let d = own_device();
    d.manual_seed(2);
    // the parameter is the first 7 of 20 elements of one buffer: updating
    // it in place four at a time must leave element 7 on as it was (AdamW's
    // decay would change it even where the gradient reads zero)
    let whole = Tensor::randn(&d, &[20]);
    let before: Vec<f32> = whole.to_vec().unwrap();
    let w = whole.narrow(0, 0, 7);
    let mut opt = Optimizer::adamw(0.1, 0.5);
    opt.init(&w);
    let mut state = (w, opt);
    let mut step = compile(|(w, o): &mut (Tensor, Optimizer), x: &Tensor| {
        let (g, l, ()) = grad(|w: &Tensor, x: &Tensor| (w * x).sum_all())(w, x);
        *w = o.step(w, &g);
        l
    });
    let x = Tensor::ones(&d, &[7]);
    for _ in 0..3 {
        step.run(&mut state, &x).unwrap();
    }
    let after: Vec<f32> = whole.to_vec().unwrap();
    assert_eq!(after[7..], before[7..]);
    for (a, b) in after[..7].iter().zip(&before[..7]) {
        // AdamW's first steps: w ← w·(1 − lr·λ) − lr (the gradient is 1)
        let want = (0..3).fold(*b, |w, _| w * (1.0 - 0.1 * 0.5) - 0.1);
        assert!((a - want).abs() < 1e-5, "{b} → {a}, want {want}");
    }
    let modules = step.wgsl().unwrap();
    assert!(modules.iter().any(|(label, _)| label.contains("optimizer in place")), "updated in place");
}

/// Trains `steps` steps eagerly and compiled from the same start and
/// returns (eager, compiled) losses and final parameters.
fn both<P: Params, I: Params>(
    make: impl Fn() -> P,
    loss: impl Fn(&P, &I) -> Tensor + Copy,
    opt: impl Fn() -> Optimizer,
    batches: &[I],
) -> [(Vec<f32>, Vec<Vec<f32>>); 2] {
    let flat = |p: &P| p.tensors().iter().map(|t| t.to_vec::<f32>().unwrap()).collect::<Vec<_>>();
    let mut results = Vec::new();
    for compiled in [false, true] {
        let p = make();
        let mut o = opt();
        o.init(&p);
        let mut state = (p, o);
        let mut step = compile(|(p, o): &mut (P, Optimizer), b: &I| {
            let (g, l, ()) = grad(loss)(p, b);
            *p = o.step(p, &g);
            l
        });
        let mut losses = Vec::new();
        let dev = state.0.tensors()[0].device().clone();
        let before = dev.counters();
        for b in batches {
            let l = if compiled { step.run(&mut state, b).unwrap().clone() } else { step.run_eager(&mut state, b) };
            losses.push(l.item::<f32>().unwrap());
        }
        // no dispatch binds a buffer it writes twice (browsers refuse it)
        assert_eq!((dev.counters() - before).aliased_bindings, 0, "compiled: {compiled}");
        results.push((losses, flat(&state.0)));
    }
    let c = results.pop().unwrap();
    let e = results.pop().unwrap();
    [e, c]
}

#[derive(Params)]
struct Cnn {
    c1: Tensor,
    c2: Tensor,
    w: Tensor,
    b: Tensor,
}

/// Every example's model trains compiled with the same numbers as eager
/// (bit for bit: the fused kernels compute the same operations in the same
/// order on this adapter).
#[test]
fn every_example_model_compiles_to_the_same_numbers() {
    let d = own_device();
    d.manual_seed(11);
    let images: Vec<(Tensor, Tensor)> = (0..4)
        .map(|i| {
            let labels: Vec<u32> = (0..8).map(|k| ((k * 3 + i) % 10) as u32).collect();
            (Tensor::rand(&d, &[8, 784]), Tensor::from_slice(&d, &labels, &[8]))
        })
        .collect();
    let onehot: Vec<(Tensor, Tensor)> = images.iter().map(|(x, y)| (x.clone(), y.one_hot(10))).collect();
    let check = |name: &str, [(le, pe), (lc, pc)]: [(Vec<f32>, Vec<Vec<f32>>); 2]| {
        assert_eq!(le, lc, "{name}: losses");
        assert_eq!(pe, pc, "{name}: parameters");
    };
    // logistic regression (SGD)
    let dev = d.clone();
    check(
        "logistic",
        both(
            || (Tensor::zeros(&dev, &[784, 10]), Tensor::zeros(&dev, &[10])),
            |p: &(Tensor, Tensor), (x, y): &(Tensor, Tensor)| -((x.matmul(&p.0) + &p.1).log_softmax(-1) * y).sum_all(),
            || Optimizer::sgd(0.1),
            &onehot,
        ),
    );
    // the MLP with tanh and the hand-written cross-entropy (momentum)
    let mlp = || {
        dev.manual_seed(1);
        vec![Tensor::randn(&dev, &[784, 32]) * 0.05, Tensor::zeros(&dev, &[32]), Tensor::randn(&dev, &[32, 10]) * 0.05]
    };
    let mlp_loss = |p: &Vec<Tensor>, (x, y): &(Tensor, Tensor)| {
        let h = (x.matmul(&p[0]) + &p[1]).tanh();
        -(h.matmul(&p[2]).log_softmax(-1) * y).sum_all()
    };
    check("mlp", both(mlp, mlp_loss, || Optimizer::sgd(0.05).momentum(0.9), &onehot));
    // custom loss: cross-entropy + L2 on hidden states and weights
    let custom = |p: &Vec<Tensor>, (x, y): &(Tensor, Tensor)| {
        let h = (x.matmul(&p[0]) + &p[1]).tanh();
        let ce = nn::cross_entropy(&h.matmul(&p[2]), y, Reduction::Mean);
        ce + h.square().mean_all() * 0.01 + (p[0].square().sum_all() + p[2].square().sum_all()) * 1e-4
    };
    check("custom_loss", both(mlp, custom, || Optimizer::sgd(0.05).momentum(0.9), &images));
    // tied-weight autoencoder (Adam)
    let xs: Vec<Tensor> = images.iter().map(|b| b.0.clone()).collect();
    check(
        "autoencoder",
        both(
            || {
                dev.manual_seed(2);
                (Tensor::randn(&dev, &[784, 16]) * 0.05, Tensor::zeros(&dev, &[16]), Tensor::zeros(&dev, &[784]))
            },
            |p: &(Tensor, Tensor, Tensor), x: &Tensor| {
                let code = (x.matmul(&p.0) + &p.1).sigmoid();
                let xhat = (code.matmul(&p.0.t()) + &p.2).sigmoid();
                (xhat - x).square().sum_all() + p.0.square().sum_all() * 1e-4
            },
            || Optimizer::adam(0.01),
            &xs,
        ),
    );
    // the CNN (conv → tanh → pool, twice; linear; log-softmax)
    let cnn_loss = |p: &Cnn, (x, y): &(Tensor, Tensor)| {
        let same = nn::ConvOptions::default().padding(2);
        let x = x.reshape(&[x.dim(0), 1, 28, 28]);
        let h = nn::max_pool2d(&nn::conv2d(&x, &p.c1, None, same).tanh(), 2, 2, 0);
        let h = nn::max_pool2d(&nn::conv2d(&h, &p.c2, None, same).tanh(), 2, 2, 0);
        nn::nll_loss(&nn::linear(&h.flatten(1, -1), &p.w, Some(&p.b)).log_softmax(-1), y, Reduction::Mean)
    };
    let cnn = || {
        dev.manual_seed(3);
        Cnn {
            c1: nn::init::kaiming_uniform(&dev, &[4, 1, 5, 5]),
            c2: nn::init::kaiming_uniform(&dev, &[8, 4, 5, 5]),
            w: nn::init::xavier_uniform(&dev, &[10, 8 * 7 * 7], 1.0),
            b: Tensor::zeros(&dev, &[10]),
        }
    };
    check("cnn", both(cnn, cnn_loss, || Optimizer::sgd(0.05).momentum(0.9), &images));
}

#[derive(Params)]
struct Block {
    qkv: Tensor,
    proj: Tensor,
    up: Tensor,
    down: Tensor,
}

/// A transformer block's loss over tokens `x` [B, T, 48] (layer norms,
/// causal attention, a GELU MLP, per-row cross-entropy).
fn block_loss(m: &Block, (x, y): &(Tensor, Tensor)) -> Tensor {
    let (b, t) = (x.dim(0), x.dim(1));
    let heads = |z: &Tensor| z.reshape(&[b, t, 4, 12]).permute(&[0, 2, 1, 3]);
    let qkv = nn::linear(&nn::layer_norm(x, 1, None, None, 1e-5), &m.qkv, None).chunk(3, -1);
    let a = nn::scaled_dot_product_attention(
        &heads(&qkv[0]),
        &heads(&qkv[1]),
        &heads(&qkv[2]),
        AttnMask::Causal,
        0.0,
        false,
    );
    let h = x + &nn::linear(&a.permute(&[0, 2, 1, 3]).reshape(&[b, t, 48]), &m.proj, None);
    let h = &h + &nn::linear(&nn::linear(&nn::layer_norm(&h, 1, None, None, 1e-5), &m.up, None).gelu(), &m.down, None);
    nn::cross_entropy(&h.reshape(&[b * t, 48]), y, Reduction::Mean)
}

#[test]
fn no_kernel_binds_a_buffer_it_writes_twice() {
    // Browsers' WebGPU rejects a dispatch that binds one buffer to a
    // writable binding and to another (native drivers run it). A reduction
    // whose result only its epilogue reads leaves its buffer to the
    // epilogue's output: fused, that buffer would be bound twice.
    let d = own_device();
    let make = || {
        d.manual_seed(8);
        Block {
            qkv: Tensor::randn(&d, &[144, 48]) * 0.2,
            proj: Tensor::randn(&d, &[48, 48]) * 0.2,
            up: Tensor::randn(&d, &[192, 48]) * 0.2,
            down: Tensor::randn(&d, &[48, 192]) * 0.2,
        }
    };
    let x = Tensor::randn(&d, &[16, 32, 48]);
    let y = Tensor::from_slice(&d, &(0..512u32).map(|i| i * 7 % 48).collect::<Vec<_>>(), &[512]);
    let before = d.counters();
    let [eager, compiled] = both(make, block_loss, || Optimizer::adam(1e-2), &[(x.clone(), y.clone()), (x, y)]);
    assert_eq!((d.counters() - before).aliased_bindings, 0);
    assert_eq!(eager, compiled);
}
