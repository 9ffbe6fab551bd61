//! Every mistake in a call to wgrad panics at the caller's line with a
//! message naming the op: each public op here is called with bad arguments,
//! and the one panic it raises must be located in this file (for calls of a
//! function that `grad`, `vjp` and the like return — closures, whose panics
//! Rust cannot locate at their caller — the message names the line where
//! that function was made).

mod common;

use std::cell::RefCell;
use std::sync::{Arc, OnceLock};

use common::*;
use wgrad::nn::{self, ConvOptions, Reduction};
use wgrad::optim::Optimizer;
use wgrad::{CustomKernel, DType, Device, Norm, ScatterReduce, Tensor, compile, grad, hvp, value_and_grad, vjp};

thread_local! {
    /// (location, message) of every panic on this thread while capturing.
    static PANICS: RefCell<Option<Vec<(String, String)>>> = const { RefCell::new(None) };
}

/// The panics `f` raises (caught), with their locations.
fn panics(f: impl FnOnce()) -> Vec<(String, String)> {
    static HOOK: OnceLock<()> = OnceLock::new();
    HOOK.get_or_init(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let captured = PANICS.with(|p| {
                let mut p = p.borrow_mut();
                let Some(list) = p.as_mut() else { return false };
                let loc = info.location().map(|l| format!("{}:{}", l.file(), l.line())).unwrap_or_default();
                let msg = info
                    .payload()
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| info.payload().downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                list.push((loc, msg));
                true
            });
            if !captured {
                default(info);
            }
        }));
    });
    PANICS.with(|p| *p.borrow_mut() = Some(Vec::new()));
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    PANICS.with(|p| p.borrow_mut().take()).expect("capturing")
}

/// `f` panics once, at this file's line `line` (or, for calls through a
/// function wgrad returned, with a message naming that line), with a
/// message that starts with "wgrad: " and contains `needles`.
#[track_caller]
fn at_caller(line: u32, needles: &[&str], f: impl FnOnce()) {
    let here = format!("tests/mistakes.rs:{line}");
    let ps = panics(f);
    let [(loc, msg)] = ps.as_slice() else { panic!("{here}: expected one panic, got {ps:?}") };
    assert!(msg.starts_with("wgrad: "), "{here}: {msg}");
    for n in needles {
        assert!(msg.contains(n), "{here}: {msg:?} lacks {n:?}");
    }
    assert!(loc == &here || msg.contains(&format!("{here}:")), "{here}: located at {loc}: {msg}");
}

fn device() -> &'static Device {
    dev()
}

macro_rules! mistake {
    ($needles:expr, $e:expr) => {
        at_caller(line!(), $needles, || {
            let _ = $e;
        })
    };
}

#[test]
fn creation_and_reading() {
    let d = device();
    let a = Tensor::zeros(d, &[2, 3]);
    mistake!(&["from_slice", "5 values", "[2, 3]"], Tensor::from_slice(d, &[1.0f32; 5], &[2, 3]));
    mistake!(&["arange", "step"], Tensor::arange(d, 0.0, 1.0, 0.0));
    mistake!(&["item", "[2, 3]"], a.item::<f32>());
    mistake!(&["to_vec", "f32", "u32"], a.to_vec::<u32>());
}

#[test]
fn elementwise() {
    let d = device();
    let a = Tensor::zeros(d, &[2, 3]);
    let b = Tensor::zeros(d, &[4, 5]);
    let u = Tensor::zeros(d, &[2]).cast(DType::U32);
    let i = Tensor::zeros(d, &[2]).cast(DType::I32);
    mistake!(&["add", "[2, 3]", "[4, 5]", "broadcast"], &a + &b);
    mistake!(&["mul", "dtypes", "u32"], &a.narrow(1, 0, 2).narrow(0, 0, 1).reshape(&[2]) * &u);
    mistake!(&["add", "-1", "u32"], &u + (-1.0));
    mistake!(&["add", "u32"], &u + 5e9);
    mistake!(&["add", "i32"], &i + 3e9);
    mistake!(&["add", "0.5", "i32"], &i + 0.5);
    mistake!(&["exp", "u32"], u.exp());
    mistake!(&["pow", "i32"], i.pow(2));
    mistake!(&["where_", "mask"], a.where_(&a, &a));
    mistake!(&["where_", "dtype"], u.where_(&u, &Tensor::zeros(d, &[2])));
    mistake!(&["where_", "broadcast"], u.where_(&b, &b));
}

#[test]
fn layout() {
    let d = device();
    let a = Tensor::zeros(d, &[2, 3]);
    let b = Tensor::zeros(d, &[4, 5]);
    mistake!(&["reshape", "[2, 3]", "[4, 2]"], a.reshape(&[4, 2]));
    mistake!(&["reshape", "infer"], a.reshape(&[usize::MAX, usize::MAX]));
    mistake!(&["flatten", "start axis"], a.flatten(1, 0));
    mistake!(&["permute", "[0, 0]"], a.permute(&[0, 0]));
    mistake!(&["permute", "axis 5"], a.permute(&[0, 5]));
    mistake!(&["transpose", "axis 2"], a.transpose(0, 2));
    mistake!(&["t", "rank"], Tensor::zeros(d, &[3]).t());
    mistake!(&["expand", "[2, 3]", "[3, 3]"], a.expand(&[3, 3]));
    mistake!(&["narrow", "out of bounds"], a.narrow(1, 2, 2));
    mistake!(&["narrow", "out of bounds"], a.narrow(0, usize::MAX, 2));
    mistake!(&["squeeze", "size 3"], a.squeeze(1));
    mistake!(&["unsqueeze", "axis 4"], a.unsqueeze(4));
    mistake!(&["cat", "[2, 3]", "[4, 5]"], Tensor::cat(&[&a, &b], 0));
    mistake!(&["cat", "at least one"], Tensor::cat(&[], 0));
    mistake!(&["stack", "differ"], Tensor::stack(&[&a, &b], 0));
    mistake!(&["pad", "pairs"], a.pad(&[(1, 1)], 0.0));
}

#[test]
fn reductions_and_indexing() {
    let d = device();
    let a = Tensor::zeros(d, &[2, 3]);
    let idx = Tensor::from_slice(d, &[0u32, 1], &[2]);
    mistake!(&["sum", "axis 2", "[2, 3]"], a.sum(&[2], false));
    mistake!(&["max", "empty axis"], Tensor::zeros(d, &[2, 0]).max(&[1], false));
    mistake!(&["argmax", "axis"], a.argmax(3, false));
    mistake!(&["softmax", "axis -3", "[2, 3]"], a.softmax(-3));
    mistake!(&["log_softmax", "u32"], idx.log_softmax(0));
    mistake!(&["logsumexp", "axis"], a.logsumexp(&[0, 4], false));
    mistake!(&["prod", "axis 2", "[2, 3]"], a.prod(&[1, 2], false));
    mistake!(&["prod", "u32"], idx.prod_all());
    mistake!(&["var", "repeated axis"], a.var(&[1, -1], 1, false));
    mistake!(&["std", "u32"], idx.std(&[0], 0, false));
    mistake!(&["norm", "Fro", "two axes", "[2, 3]"], a.norm(Norm::Fro, &[1], false));
    mistake!(&["norm", "Inf", "empty axis"], Tensor::zeros(d, &[2, 0]).norm(Norm::Inf, &[1], false));
    mistake!(&["any", "axis -3", "[2, 3]"], a.gt(0.0).any(&[-3], false));
    mistake!(&["all", "axis 1"], idx.all(&[1], true));
    mistake!(&["matmul", "inner dimensions 3 and 2"], a.matmul(&a));
    mistake!(&["matmul", "rank"], a.matmul(&Tensor::scalar(d, 1.0f32)));
    mistake!(&["matmul", "f32"], idx.matmul(&idx));
    mistake!(&["index_select", "u32 or i32"], a.index_select(0, &a));
    mistake!(&["index_select", "1-d"], a.index_select(0, &idx.reshape(&[1, 2])));
    mistake!(&["gather", "do not fit"], a.gather(1, &idx));
    mistake!(&["scatter_add", "share a shape"], a.scatter_add(0, &idx, &a));
    mistake!(&["one_hot", "u32 or i32"], a.one_hot(3));
}

#[test]
fn nn_and_optim() {
    let d = device();
    let x = Tensor::zeros(d, &[2, 3]);
    let img = Tensor::zeros(d, &[1, 3, 5, 5]);
    let labels = Tensor::from_slice(d, &[0u32, 1], &[2]);
    mistake!(&["linear", "[2, 3]"], nn::linear(&x, &Tensor::zeros(d, &[4, 5]), None));
    mistake!(&["conv2d", "channels"], nn::conv2d(&img, &Tensor::zeros(d, &[2, 2, 3, 3]), None, ConvOptions::default()));
    mistake!(&["max_pool2d", "kernel 7"], nn::max_pool2d(&img, 7, 1, 0));
    mistake!(&["avg_pool2d", "[..., H, W]"], nn::avg_pool2d(&Tensor::zeros(d, &[3]), 2, 2, 0));
    mistake!(&["layer_norm"], nn::layer_norm(&x, 3, None, None, 1e-5));
    mistake!(&["dropout", "probability"], nn::dropout(&x, 1.5, true));
    mistake!(&["embedding", "u32 or i32"], nn::embedding(&x, &x));
    mistake!(&["cross_entropy"], nn::cross_entropy(&x, &Tensor::from_slice(d, &[0u32], &[1]), Reduction::Mean));
    mistake!(&["mse_loss", "[2, 3]"], nn::mse_loss(&x, &Tensor::zeros(d, &[3, 2]), Reduction::Mean));
    mistake!(&["nll_loss"], nn::nll_loss(&x, &x, Reduction::Sum));
    let mut opt = Optimizer::sgd(0.1);
    mistake!(&["optimizer step", "2 parameters but 1"], opt.step(&vec![x.clone(), x.clone()], &vec![x.clone()]));
    mistake!(&["optimizer", "momentum"], Optimizer::adam(0.1).momentum(0.9));
    let _ = labels;
}

#[test]
fn differentiation() {
    let d = device();
    let w = Tensor::zeros(d, &[2, 3]);
    let ct = |shape: &[usize]| Tensor::zeros(d, shape);
    mistake!(&["grad", "scalar f32 loss", "[2, 3]"], grad(|w: &Tensor, _: &()| w.exp())(&w, &()));
    mistake!(&["grad", "scalar f32 loss", "i32"], grad(|w: &Tensor, _: &()| w.sum_all().cast(DType::I32))(&w, &()));
    mistake!(&["grad", "i32"], grad(|w: &Tensor, _: &()| w.cast(DType::F32).sum_all())(&w.cast(DType::I32), &()));
    mistake!(&["grad", "scalar"], value_and_grad(|w: &Tensor, _: &()| w.exp())(&w, &()));
    mistake!(&["vjp", "cotangent", "[3, 2]", "[2, 3]"], vjp(|w: &Tensor| w.exp(), &w).1(&ct(&[3, 2])));
    mistake!(&["vjp", "cotangent", "u32"], vjp(|w: &Tensor| w.exp(), &w).1(&ct(&[2, 3]).cast(DType::U32)));
    let p = vec![w.clone(), w.clone()];
    let one = vec![w.clone()];
    mistake!(&["vjp", "1 cotangents for 2 outputs"], vjp(|p: &Vec<Tensor>| p.clone(), &p).1(&one));
    let f = |p: &Vec<Tensor>, _: &()| (&p[0] * &p[1]).sum_all();
    mistake!(&["hvp", "1 direction tensors", "2 parameters"], hvp(f, &p, &(), &one));
    mistake!(&["hvp", "[3, 2]", "[2, 3]"], hvp(f, &p, &(), &vec![w.clone(), ct(&[3, 2])]));
}

#[test]
fn compiled_steps() {
    let d = device();
    let other = own_device();
    let x = Tensor::ones(d, &[2]);
    let mut state = Tensor::ones(d, &[2]);
    let mut step = compile(|s: &mut Tensor, x: &Tensor| s.clone() * x);
    mistake!(&["compile", "different devices"], step.run(&mut state, &Tensor::ones(&other, &[2])));
    // mistakes inside a step are located where they are made in it
    let read_line = line!() + 2;
    let mut reads = compile(|s: &mut Tensor, x: &Tensor| {
        let _ = (s.clone() * x).sum_all().item::<f32>();
        s.clone()
    });
    at_caller(read_line, &["compile", "read-back"], || drop(reads.run(&mut state, &x)));
    let nested_line = line!() + 4;
    let mut outer = compile(|s: &mut Tensor, x: &Tensor| {
        let mut inner = compile(|s: &mut Tensor, x: &Tensor| s.clone() + x);
        let mut t = s.clone();
        let _ = inner.run(&mut t, x);
        s.clone()
    });
    at_caller(nested_line, &["compile", "inside another"], || drop(outer.run(&mut state, &x)));
    // and the thread, and the compiled steps, work afterwards
    assert_eq!(step.run(&mut state, &x).unwrap().to_vec::<f32>().unwrap(), vec![1.0, 1.0]);
}

#[test]
fn custom_kernels() {
    let d = device();
    let k = CustomKernel::new(
        d,
        "twice",
        "@group(0) @binding(1) var<storage, read> x: array<f32>;
         @group(0) @binding(2) var<storage, read_write> y: array<f32>;
         @compute @workgroup_size(64) fn main(@builtin(global_invocation_id) id: vec3<u32>) {
             if id.x < arrayLength(&y) { y[id.x] = 2.0 * x[id.x]; }
         }",
        "main",
    )
    .unwrap();
    let x = Tensor::ones(d, &[4]);
    mistake!(&["twice", "1 input", "2"], k.launch(&[&x, &x], &[4], DType::F32, &[], [1, 1, 1]));
    mistake!(&["twice", "uniform"], k.launch(&[&x], &[4], DType::F32, &[0u8; 16], [1, 1, 1]));
    mistake!(&["twice", "workgroups"], k.launch(&[&x], &[4], DType::F32, &[], [70000, 1, 1]));
    let op: Arc<dyn wgrad::CustomOp> = Arc::new(Twice(k));
    mistake!(&["twice", "different devices"], Tensor::custom(op, &[&x, &Tensor::ones(&own_device(), &[4])]));
}

struct Twice(CustomKernel);

impl wgrad::CustomOp for Twice {
    fn name(&self) -> &str {
        "twice"
    }
    fn forward(&self, inputs: &[&Tensor]) -> Tensor {
        self.0.launch(inputs, inputs[0].shape(), DType::F32, &[], [1, 1, 1])
    }
    fn vjp(&self, g: &Tensor, _: &[&Tensor], _: &Tensor) -> Vec<Option<Tensor>> {
        vec![Some(g * 2.0)]
    }
}

/// The adapter's limits on a dispatch never reach the user as a panic: the
/// work is sliced (a matmul of more batches than a dispatch holds); the index
/// kernels' eight dimensions are a clear error at the caller's line.
#[test]
fn limits_of_a_dispatch() {
    let d = device();
    let batches = 70_000;
    let a = Tensor::arange(d, 0.0, batches as f32, 1.0).reshape(&[batches, 1, 1]);
    let b = Tensor::full(d, &[1, 1, 2], 2.0f32);
    let c = a.matmul(&b);
    assert_eq!(c.shape(), &[batches, 1, 2]);
    let got = c.to_vec::<f32>().unwrap();
    assert!(got.chunks(2).enumerate().all(|(i, p)| p == [2.0 * i as f32; 2]), "a batch is wrong");
    let (g, _, ()) = grad(|a: &Tensor, b: &Tensor| a.matmul(b).sum_all())(&a, &b);
    assert_eq!(g.to_vec::<f32>().unwrap(), vec![4.0; batches]);
    let deep = Tensor::zeros(d, &[1; 9]);
    let idx = Tensor::zeros(d, &[1; 9]).cast(DType::U32);
    mistake!(&["gather", "rank 9"], deep.gather(0, &idx));
    mistake!(&["one_hot", "rank 9"], Tensor::zeros(d, &[1; 8]).cast(DType::U32).one_hot(3));
}

/// Views of more than eight dimensions (that no merging of dimensions
/// brings down to eight) work.
#[test]
fn views_of_many_dimensions_work() {
    let d = &own_device();
    let n = 2usize.pow(9);
    let data: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let x = Tensor::from_slice(d, &data, &[2; 9]);
    let perm: Vec<isize> = (0..9).rev().collect();
    let xt = x.permute(&perm);
    let want: Vec<f32> = (0..n)
        .map(|i| {
            // element i of the permuted view: its index bits reversed
            let mut j = 0;
            for b in 0..9 {
                j |= ((i >> b) & 1) << (8 - b);
            }
            data[j]
        })
        .collect();
    assert_eq!(xt.contiguous().to_vec::<f32>().unwrap(), want);
    let twice: Vec<f32> = want.iter().map(|v| v * 2.0 + 1.0).collect();
    assert_eq!((&xt * 2.0 + 1.0).to_vec::<f32>().unwrap(), twice);
    assert_eq!(xt.sum(&[0, 3], false).sum_all().item::<f32>().unwrap(), data.iter().sum::<f32>());
    assert_eq!((&xt + &x).sum_all().item::<f32>().unwrap(), 2.0 * data.iter().sum::<f32>());
    d.set_check_finite(true);
    assert_eq!((&xt * 1.0).sum_all().item::<f32>().unwrap(), data.iter().sum::<f32>());
    d.set_check_finite(false);
}

#[test]
fn layout_and_indexing_ops() {
    let d = device();
    let a = Tensor::zeros(d, &[2, 3]);
    let v = Tensor::zeros(d, &[4]);
    let idx = Tensor::from_slice(d, &[0u32, 1], &[2]);
    mistake!(&["flip", "axis 2", "[2, 3]"], a.flip(&[2]));
    mistake!(&["flip", "repeated axis"], a.flip(&[1, -1]));
    mistake!(&["roll", "2 shifts", "1 axes"], a.roll(&[1, 2], &[0]));
    mistake!(&["roll", "one shift"], a.roll(&[1, 2], &[]));
    mistake!(&["repeat", "[2, 3]", "rank 2"], a.repeat(&[2]));
    mistake!(&["split", "size 0"], a.split(0, 1));
    mistake!(&["split_with_sizes", "[1, 1]", "[2, 3]"], a.split_with_sizes(&[1, 1], 1));
    mistake!(&["chunk", "0 chunks"], a.chunk(0, 0));
    mistake!(&["slice", "step 0", "[2, 3]"], a.slice(1, 0, 3, 0));
    mistake!(&["slice", "axis 5"], a.slice(5, 0, 3, 1));
    mistake!(&["diagonal", "both axis 1"], a.diagonal(0, 1, -1));
    mistake!(&["diag", "vector or a matrix", "[1, 2, 3]"], Tensor::zeros(d, &[1, 2, 3]).diag(0));
    mistake!(&["tril", "rank ≥ 2", "[4]"], v.tril(0));
    mistake!(&["triu", "rank ≥ 2"], v.triu(0));
    mistake!(&["index_add", "do not fit", "[2, 3]"], a.index_add(1, &idx, &a));
    mistake!(&["index_add", "u32 or i32"], a.index_add(1, &a, &a));
    mistake!(&["scatter_reduce", "share a shape"], a.scatter_reduce(0, &idx, &a, ScatterReduce::Amax, true));
    mistake!(&["scatter_reduce", "f32"], idx.scatter_reduce(0, &idx, &idx, ScatterReduce::Sum, true));
    mistake!(&["index_put", "3 index tensors", "[2, 3]"], a.index_put(&[&idx, &idx, &idx], &v, false));
    let three = Tensor::from_slice(d, &[0u32, 1, 2], &[3]);
    mistake!(&["index_put", "do not broadcast together"], a.index_put(&[&idx, &three], &v, false));
    mistake!(&["index_put", "[4]", "[2, 3]"], a.index_put(&[&idx], &v, true));
}
