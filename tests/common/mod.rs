//! Shared test support: one device per test binary, an f64 reference
//! implementation of n-d arrays (numpy semantics), seeded random data, and
//! tolerance checks whose bounds come from the arithmetic of each op.
#![allow(dead_code)]

pub mod indexing;
pub mod reference;

use std::sync::OnceLock;

pub use reference::Array;
use wgrad::{Device, Tensor};

/// The device shared by a test binary. A missing adapter fails the tests.
pub fn dev() -> &'static Device {
    static DEV: OnceLock<Device> = OnceLock::new();
    DEV.get_or_init(|| Device::new().expect("a GPU adapter (install mesa-vulkan-drivers for lavapipe)"))
}

/// A fresh device, for tests that read its counters.
pub fn own_device() -> Device {
    Device::new().expect("a GPU adapter (install mesa-vulkan-drivers for lavapipe)")
}

/// Small deterministic generator (SplitMix64) for test data.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [lo, hi), rounded to f32 so GPU and reference see the same input.
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        let u = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        (lo + (hi - lo) * u) as f32 as f64
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn array(&mut self, shape: &[usize], lo: f64, hi: f64) -> Array {
        let n = shape.iter().product();
        Array::new(shape, (0..n).map(|_| self.uniform(lo, hi)).collect())
    }
}

/// Uploads an f64 reference array as an f32 tensor.
pub fn upload(a: &Array) -> Tensor {
    let data: Vec<f32> = a.data.iter().map(|&x| x as f32).collect();
    Tensor::from_slice(dev(), &data, &a.shape)
}

/// Reads an f32 tensor back as a reference array.
pub fn download(t: &Tensor) -> Array {
    let v: Vec<f32> = t.to_vec().expect("read-back");
    Array::new(t.shape(), v.into_iter().map(f64::from).collect())
}

/// f32 machine epsilon (unit roundoff is half of it).
pub const EPS: f64 = f32::EPSILON as f64;

/// Asserts |got − want| ≤ bound[i] elementwise (NaN must match NaN), with
/// equal shapes.
#[track_caller]
pub fn assert_within(what: &str, got: &Array, want: &Array, bound: &Array) {
    assert_eq!(got.shape, want.shape, "{what}: shape");
    for i in 0..want.data.len() {
        let (g, w, b) = (got.data[i], want.data[i], bound.data[i]);
        let ok = if w.is_nan() {
            g.is_nan()
        } else if w.is_infinite() {
            g == w
        } else {
            (g - w).abs() <= b
        };
        assert!(ok, "{what}: element {i} of shape {:?}: got {g}, want {w} (bound {b:e})", want.shape);
    }
}

/// Asserts |got − want| ≤ atol + rtol·|want| elementwise.
#[track_caller]
pub fn assert_close(what: &str, got: &Array, want: &Array, rtol: f64, atol: f64) {
    let bound = want.map(|w| atol + rtol * w.abs());
    assert_within(what, got, want, &bound);
}

/// Runs `f`, which must panic; returns the panic message and the file:line
/// the panic was attributed to (the caller's line, through `#[track_caller]`).
pub fn panic_of(f: std::panic::AssertUnwindSafe<impl FnOnce()>) -> (String, String) {
    use std::cell::{Cell, RefCell};
    thread_local! {
        static CAPTURING: Cell<bool> = const { Cell::new(false) };
        static LOCATION: RefCell<String> = const { RefCell::new(String::new()) };
    }
    static HOOK: OnceLock<()> = OnceLock::new();
    HOOK.get_or_init(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if CAPTURING.with(Cell::get) {
                let loc = info.location().map(|l| format!("{}:{}", l.file(), l.line())).unwrap_or_default();
                LOCATION.with(|c| *c.borrow_mut() = loc);
            } else {
                default(info);
            }
        }));
    });
    CAPTURING.with(|c| c.set(true));
    let result = std::panic::catch_unwind(f);
    CAPTURING.with(|c| c.set(false));
    let err = result.expect_err("expected a panic");
    let msg = err
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default();
    (msg, LOCATION.with(|c| c.borrow().clone()))
}

/// Views of `a` as the GPU sees them: the plain upload, a transposed view and
/// a narrowed view with an offset (the latter two are not contiguous).
pub fn views(a: &Array) -> Vec<(String, Tensor, Array)> {
    let mut out = vec![("contiguous".to_string(), upload(a), a.clone())];
    if a.shape.len() >= 2 {
        let r = a.shape.len();
        // Upload the transpose, then view it transposed back: same values, strided.
        let t = upload(&a.t()).t();
        out.push(("transposed".into(), t, a.clone()));
        // a inside a wider array, at start 1 (no row aligned to four
        // elements) and at start 4 with rows of a multiple of four where a's
        // are (aligned: the four-wide loads of matmul apply)
        for (extra, start) in [(3, 1), (8, 4)] {
            let mut wide = a.shape.clone();
            wide[r - 1] += extra;
            let mut big = Array::new(&wide, (0..wide.iter().product()).map(|i| (i % 17) as f64 - 8.0).collect());
            let n = a.shape[r - 1];
            for i in 0..a.numel() {
                let (row, col) = (i / n, i % n);
                big.data[row * wide[r - 1] + start + col] = a.data[i];
            }
            out.push((format!("narrowed at {start}"), upload(&big).narrow(-1, start, n), a.clone()));
        }
    }
    out
}

pub fn mask(x: bool) -> f64 {
    x as u8 as f64
}

/// `f` applied to each row along `axis` of a dense array.
pub fn along(x: &Array, axis: usize, f: impl Fn(&[f64]) -> Vec<f64>) -> Array {
    let n = x.shape[axis];
    let inner: usize = x.shape[axis + 1..].iter().product();
    let outer: usize = x.shape[..axis].iter().product();
    let mut out = x.clone();
    for o in 0..outer {
        for i in 0..inner {
            let at = |k: usize| (o * n + k) * inner + i;
            let row: Vec<f64> = (0..n).map(|k| x.data[at(k)]).collect();
            for (k, v) in f(&row).into_iter().enumerate() {
                out.data[at(k)] = v;
            }
        }
    }
    out
}

/// Central differences of L(x) = Σ w·f(x) in f64: h = 1e-6 gives about
/// 1e-9 relative accuracy, far below the f32 error being tested.
pub fn reference_grads(f: &dyn Fn(&[Array]) -> Array, xs: &[Array], w: &Array) -> Vec<Array> {
    let loss = |xs: &[Array]| -> f64 { f(xs).data.iter().zip(&w.data).map(|(a, b)| a * b).sum() };
    let h = 1e-6;
    (0..xs.len())
        .map(|i| {
            let mut g = xs[i].clone();
            for e in 0..xs[i].numel() {
                let mut p = xs.to_vec();
                p[i].data[e] += h;
                let mut m = xs.to_vec();
                m[i].data[e] -= h;
                g.data[e] = (loss(&p) - loss(&m)) / (2.0 * h);
            }
            g
        })
        .collect()
}
