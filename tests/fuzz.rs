//! Random programs, checked end to end against the f64 reference.
//!
//! A program is a list of 1–30 ops applied to a growing list of values,
//! starting from 1–3 random inputs of rank 0–3 (dims 1..=5); matmul weights
//! and broadcasting partners may add inputs on the way (at most 6). The
//! final value `y` is reduced to the loss `L = Σ w·y` with fixed random
//! weights `w`. Every case checks:
//!
//! 1. forward: `y` and `L` from the GPU against the f64 reference, within a
//!    first-order bound on the f32 error computed alongside the reference
//!    (see [`forward_bound`]);
//! 2. gradients: `grad` on the GPU against the f64 gradient (reverse mode on
//!    the reference, with its own error bound, see [`backward`]) and against
//!    central differences of the f64 loss (h = 1e-6);
//! 3. compiled: the same step under `compile`, run twice, gives the loss, the
//!    value and the gradients of eager mode bit for bit.
//!
//! The generator decodes raw random choices against the current shapes, so
//! every choice sequence is a valid program and shrinking (shorter
//! sequences, smaller choices) keeps it valid. On failure the minimal
//! program is printed as a listing and as Rust (`Program::new(..)`) ready to
//! paste into a regression test like the ones at the end of this file.
//!
//! ```text
//! cargo test --release --test fuzz                         # CI: fixed seed, 150 cases
//! WGRAD_FUZZ_CASES=5000 cargo test --release --test fuzz -- --nocapture
//! WGRAD_FUZZ_SEED=42 WGRAD_FUZZ_CASES=1000 cargo test --release --test fuzz -- --nocapture
//! ```

mod common;

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Mutex;

use common::*;
use proptest::prelude::{Strategy, any, prop};
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};
use wgrad::{Tensor, compile, grad};

/// Cases of a default run (CI); `WGRAD_FUZZ_CASES` overrides.
const CI_CASES: u32 = 150;
/// Seed of a default run; `WGRAD_FUZZ_SEED` overrides.
const CI_SEED: u64 = 20240601;

// ---- error model ---------------------------------------------------------------
//
// Bounds are first order in the unit roundoff u = 2⁻²⁴ (products of two
// error terms are dropped: they are below 2⁻⁴⁰ relative here). One ULP of an
// f32 value y is at most 2⁻²³·|y|, so an op accurate to k ULP errs by at most
// k·2⁻²³·|y| (`rounding`). The accuracies are WGSL's (as in tests/ops.rs).

/// 2⁻²³: one ULP of a value in [1, 2).
const ULP: f64 = EPS;
/// The unit roundoff u = 2⁻²⁴: correctly rounded +, −, × err by ≤ u·|result|.
const HALF: f64 = EPS / 2.0;
/// Results that are subnormal in f32 may flush to zero.
const TINY: f64 = f32::MIN_POSITIVE as f64;
/// WGSL sin and cos: absolute error 2⁻¹¹ on [−π, π].
const SIN_ABS: f64 = 1.0 / 2048.0;
/// WGSL log: absolute error 2⁻²¹ on [0.5, 2] (3 ULP elsewhere).
const LOG_ABS: f64 = 1.0 / (1u32 << 21) as f64;

/// Bound on one rounding of `y` by an op accurate to `ulps` ULP.
fn rounding(y: &Array, ulps: f64) -> Array {
    y.map(|v| ulps * ULP * v.abs() + TINY)
}

// ---- programs -------------------------------------------------------------------

/// Smooth unary maps (no kinks: finite differences stay meaningful).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum UnaryFn {
    Tanh,
    Sigmoid,
    /// Only on values bounded by 4 (the generator applies tanh first).
    Exp,
    /// Only on values bounded by 3 < π, where WGSL bounds its error.
    Sin,
    Square,
}

/// Broadcasting binary maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BinaryFn {
    Add,
    Sub,
    Mul,
    /// The generator divides only by `1.5 + sigmoid(·)`, in (1.5, 2.5).
    Div,
}

/// Maps with an f32 scalar.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ScalarFn {
    Times,
    Plus,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReduceFn {
    Sum,
    Mean,
    /// Programs with near-ties of a max skip the gradient check.
    Max,
    LogSumExp,
}

use BinaryFn::*;
use ReduceFn::*;
use ScalarFn::*;
use UnaryFn::*;

/// One op; operands are indices of earlier values.
#[derive(Clone, Debug, PartialEq)]
enum Op {
    /// The program's input `j` (a leaf that gradients are taken for).
    Input(usize),
    Unary(UnaryFn, usize),
    Binary(BinaryFn, usize, usize),
    /// The scalar is exact in f32.
    Scalar(ScalarFn, f64, usize),
    /// `transpose`/`t` when the permutation is one swap.
    Permute(usize, Vec<usize>),
    Narrow {
        x: usize,
        axis: usize,
        start: usize,
        len: usize,
    },
    Reshape(usize, Vec<usize>),
    Expand(usize, Vec<usize>),
    Unsqueeze(usize, usize),
    Reduce {
        x: usize,
        f: ReduceFn,
        axes: Vec<usize>,
        keepdim: bool,
    },
    Softmax {
        x: usize,
        axis: usize,
        log: bool,
    },
    /// Both operands have rank ≥ 2.
    Matmul(usize, usize),
    Gather {
        x: usize,
        axis: usize,
        idx: Array,
    },
    IndexSelect {
        x: usize,
        axis: usize,
        idx: Vec<usize>,
    },
}

/// A program: input shapes, ops (value i is the result of op i; the last
/// one is the output) and the seed of the input data and loss weights.
#[derive(Clone, PartialEq)]
struct Program {
    inputs: Vec<Vec<usize>>,
    ops: Vec<Op>,
    seed: u64,
    /// Shape of every value.
    shapes: Vec<Vec<usize>>,
}

impl Program {
    /// A program from its parts (e.g. pasted from a failure report).
    fn new(inputs: Vec<Vec<usize>>, ops: Vec<Op>, seed: u64) -> Program {
        let mut shapes: Vec<Vec<usize>> = Vec::new();
        for op in &ops {
            let s = out_shape(op, &shapes, &inputs);
            shapes.push(s);
        }
        Program { inputs, ops, seed, shapes }
    }

    fn output_shape(&self) -> &[usize] {
        self.shapes.last().expect("a program has ops")
    }

    /// The input data: uniform in [−2, 2), exact in f32.
    fn input_data(&self) -> Vec<Array> {
        self.inputs
            .iter()
            .enumerate()
            .map(|(j, s)| Rng::new(self.seed ^ ((j as u64 + 1) << 40)).array(s, -2.0, 2.0))
            .collect()
    }

    /// The loss weights: uniform in [−1, 1), exact in f32.
    fn weights(&self) -> Array {
        Rng::new(!self.seed).array(self.output_shape(), -1.0, 1.0)
    }

    /// The output, op by op, on the GPU.
    fn gpu(&self, inputs: &[Tensor]) -> Tensor {
        let mut v: Vec<Tensor> = Vec::with_capacity(self.ops.len());
        for op in &self.ops {
            let y = gpu_op(op, &v, inputs);
            v.push(y);
        }
        v.pop().expect("a program has ops")
    }

    /// Every value in f64.
    fn values(&self, inputs: &[Array]) -> Vec<Array> {
        let mut v: Vec<Array> = Vec::with_capacity(self.ops.len());
        for op in &self.ops {
            let y = eval(op, &v, inputs);
            v.push(y);
        }
        v
    }

    /// The f64 loss Σ w·y.
    fn loss(&self, inputs: &[Array], w: &Array) -> f64 {
        dot(self.values(inputs).last().expect("a program has ops"), w)
    }
}

impl fmt::Display for Program {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let real = self.ops.iter().filter(|op| !matches!(op, Op::Input(_))).count();
        writeln!(f, "program of {real} ops on {} inputs (seed {:#x}):", self.inputs.len(), self.seed)?;
        for (i, (op, shape)) in self.ops.iter().zip(&self.shapes).enumerate() {
            let text = match op {
                Op::Input(j) => format!("input {j}"),
                Op::Unary(u, x) => format!("{u:?}(v{x})").to_lowercase(),
                Op::Binary(b, x, y) => {
                    let sym = ["+", "-", "*", "/"][*b as usize];
                    format!("v{x} {sym} v{y}")
                }
                Op::Scalar(Times, c, x) => format!("v{x} * {c}"),
                Op::Scalar(Plus, c, x) => format!("v{x} + {c}"),
                Op::Permute(x, p) => format!("permute(v{x}, {p:?})"),
                Op::Narrow { x, axis, start, len } => format!("narrow(v{x}, axis {axis}, {start}..{})", start + len),
                Op::Reshape(x, s) => format!("reshape(v{x}, {s:?})"),
                Op::Expand(x, s) => format!("expand(v{x}, {s:?})"),
                Op::Unsqueeze(x, a) => format!("unsqueeze(v{x}, {a})"),
                Op::Reduce { x, f: r, axes, keepdim } => {
                    let name = format!("{r:?}").to_lowercase();
                    format!("{name}(v{x}, axes {axes:?}{})", if *keepdim { ", keepdim" } else { "" })
                }
                Op::Softmax { x, axis, log } => format!("{}softmax(v{x}, axis {axis})", if *log { "log_" } else { "" }),
                Op::Matmul(a, b) => format!("matmul(v{a}, v{b})"),
                Op::Gather { x, axis, idx } => {
                    format!("gather(v{x}, axis {axis}, {:?} of shape {:?})", idx.data, idx.shape)
                }
                Op::IndexSelect { x, axis, idx } => format!("index_select(v{x}, axis {axis}, {idx:?})"),
            };
            writeln!(f, "  v{i:<2} = {text:<48} {shape:?}")?;
        }
        writeln!(f, "as Rust:\n  Program::new(vec!{:?}, vec!{:?}, {:#x})", self.inputs, self.ops, self.seed)
    }
}

impl fmt::Debug for Program {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Numpy broadcasting of two shapes, if they broadcast.
fn try_broadcast(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let r = a.len().max(b.len());
    let dim = |s: &[usize], i: usize| if i + s.len() >= r { s[i + s.len() - r] } else { 1 };
    (0..r)
        .map(|i| match (dim(a, i), dim(b, i)) {
            (x, y) if x == y || y == 1 => Some(x),
            (1, y) => Some(y),
            _ => None,
        })
        .collect()
}

/// `shape` with `axes` reduced (kept as size 1 with `keepdim`).
fn reduced(shape: &[usize], axes: &[usize], keepdim: bool) -> Vec<usize> {
    let dims = shape.iter().enumerate().filter_map(|(d, &n)| match axes.contains(&d) {
        true if keepdim => Some(1),
        true => None,
        false => Some(n),
    });
    dims.collect()
}

fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// Shape of the result of `op`, given the shapes of the earlier values.
fn out_shape(op: &Op, s: &[Vec<usize>], inputs: &[Vec<usize>]) -> Vec<usize> {
    match op {
        Op::Input(j) => inputs[*j].clone(),
        Op::Unary(_, x) | Op::Scalar(_, _, x) | Op::Softmax { x, .. } => s[*x].clone(),
        Op::Binary(_, a, b) => try_broadcast(&s[*a], &s[*b]).expect("operands broadcast"),
        Op::Permute(x, p) => p.iter().map(|&d| s[*x][d]).collect(),
        Op::Narrow { x, axis, len, .. } => {
            let mut t = s[*x].clone();
            t[*axis] = *len;
            t
        }
        Op::Reshape(_, t) | Op::Expand(_, t) => t.clone(),
        Op::Unsqueeze(x, a) => {
            let mut t = s[*x].clone();
            t.insert(*a, 1);
            t
        }
        Op::Reduce { x, axes, keepdim, .. } => reduced(&s[*x], axes, *keepdim),
        Op::Matmul(a, b) => {
            let (sa, sb) = (&s[*a], &s[*b]);
            let (ra, rb) = (sa.len(), sb.len());
            let mut t = try_broadcast(&sa[..ra - 2], &sb[..rb - 2]).expect("batches broadcast");
            t.extend([sa[ra - 2], sb[rb - 1]]);
            t
        }
        Op::Gather { idx, .. } => idx.shape.clone(),
        Op::IndexSelect { x, axis, idx } => {
            let mut t = s[*x].clone();
            t[*axis] = idx.len();
            t
        }
    }
}

// ---- the generator ----------------------------------------------------------------

const MAX_OPS: usize = 30;
const MAX_RANK: usize = 4;
const MAX_NUMEL: usize = 256;
const MAX_INPUTS: usize = 6;
/// Values stay below this in magnitude (tanh squashes operands that would
/// exceed it), far from f32 overflow and with meaningful finite differences.
const MAX_MAG: f64 = 1e3;

/// A static bound on |value| of the result of `op`, given those of its
/// operands (`m`).
fn magnitude(op: &Op, m: &[f64], s: &[Vec<usize>]) -> f64 {
    match *op {
        Op::Input(_) => 2.0,
        Op::Unary(Tanh | Sigmoid | Sin, _) => 1.0,
        Op::Unary(Exp, x) => m[x].exp(),
        Op::Unary(Square, x) => m[x] * m[x],
        Op::Binary(Add | Sub, a, b) => m[a] + m[b],
        Op::Binary(Mul, a, b) => m[a] * m[b],
        Op::Binary(Div, a, _) => m[a] / 1.5,
        Op::Scalar(Times, c, x) => c.abs() * m[x],
        Op::Scalar(Plus, c, x) => m[x] + c.abs(),
        Op::Reduce { x, f, ref axes, .. } => {
            let n = axes.iter().map(|&d| s[x][d]).product::<usize>() as f64;
            match f {
                Sum => n * m[x],
                Mean | Max => m[x],
                LogSumExp => m[x] + n.ln(),
            }
        }
        Op::Softmax { log: false, .. } => 1.0,
        Op::Softmax { x, axis, log: true } => 2.0 * m[x] + (s[x][axis] as f64).ln(),
        Op::Matmul(a, b) => *s[a].last().expect("rank ≥ 2") as f64 * m[a] * m[b],
        Op::Permute(x, _)
        | Op::Narrow { x, .. }
        | Op::Reshape(x, _)
        | Op::Expand(x, _)
        | Op::Unsqueeze(x, _)
        | Op::Gather { x, .. }
        | Op::IndexSelect { x, .. } => m[x],
    }
}

/// Raw choices of one generator step: op kind, first operand, and the seed
/// of the step's details.
type Step = [u32; 3];

/// Builds a program from steps, keeping shapes and magnitude bounds.
struct Builder {
    inputs: Vec<Vec<usize>>,
    ops: Vec<Op>,
    shapes: Vec<Vec<usize>>,
    mags: Vec<f64>,
}

impl Builder {
    /// Appends `op`; returns its value.
    fn push(&mut self, op: Op) -> usize {
        let shape = out_shape(&op, &self.shapes, &self.inputs);
        let mag = magnitude(&op, &self.mags, &self.shapes);
        assert!(shape.len() <= MAX_RANK && numel(&shape) <= MAX_NUMEL && mag <= MAX_MAG, "generator: {op:?}");
        self.ops.push(op);
        self.shapes.push(shape);
        self.mags.push(mag);
        self.ops.len() - 1
    }

    fn input(&mut self, shape: Vec<usize>) -> usize {
        self.inputs.push(shape);
        self.push(Op::Input(self.inputs.len() - 1))
    }

    fn can_add_input(&self) -> bool {
        self.inputs.len() < MAX_INPUTS
    }

    /// tanh(v) if v may exceed 1 in magnitude, else v.
    fn squash(&mut self, v: usize) -> usize {
        if self.mags[v] <= 1.0 { v } else { self.push(Op::Unary(Tanh, v)) }
    }

    /// Squashes the larger operand of `make` until its result's magnitude
    /// bound is at most `limit`; then appends it.
    fn push_bounded(&mut self, mut ops: Vec<usize>, limit: f64, make: impl Fn(&[usize]) -> Op) -> usize {
        loop {
            let op = make(&ops);
            if magnitude(&op, &self.mags, &self.shapes) <= limit {
                return self.push(op);
            }
            let big =
                (0..ops.len()).max_by(|&i, &j| self.mags[ops[i]].total_cmp(&self.mags[ops[j]])).expect("operands");
            assert!(self.mags[ops[big]] > 1.0, "generator: cannot bound {op:?}");
            ops[big] = self.squash(ops[big]);
        }
    }

    /// A value to operate on: mostly the latest one.
    fn pick(&self, c: u32) -> usize {
        let n = self.ops.len();
        if c % 8 < 5 { n - 1 } else { n - 1 - (c / 8) as usize % n }
    }

    fn step(&mut self, [kind, operand, seed]: Step) {
        let x = self.pick(operand);
        let r = &mut Rng::new((u64::from(seed) << 20) | u64::from(kind));
        let done = match kind % 16 {
            0..=2 => false, // a unary map, below
            3 | 4 => self.binary(x, r),
            5 => self.scalar(x, r),
            6 => self.permute(x, r),
            7 => self.narrow(x, r),
            8 => self.reshape(x, r),
            9 => self.expand(x, r),
            10 => self.unsqueeze(x, r),
            11 | 12 => self.reduce(x, r),
            13 => self.softmax(x, r),
            14 => self.matmul(x, r),
            _ => self.index(x, r),
        };
        if !done {
            self.unary(x, r);
        }
    }

    fn unary(&mut self, x: usize, r: &mut Rng) {
        let f = [Tanh, Sigmoid, Exp, Sin, Square][r.below(5)];
        let limit = match f {
            Exp => 4.0,
            Sin => 3.0,
            Square => 30.0,
            Tanh | Sigmoid => f64::INFINITY,
        };
        let x = if self.mags[x] > limit { self.squash(x) } else { x };
        self.push(Op::Unary(f, x));
    }

    /// x ⊕ y with a value y that broadcasts with x, or a fresh input whose
    /// shape is x's with leading dims dropped and some dims set to 1.
    fn binary(&mut self, x: usize, r: &mut Rng) -> bool {
        let fits = |s: &[usize], t: &[usize]| {
            try_broadcast(s, t).is_some_and(|b| b.len() <= MAX_RANK && numel(&b) <= MAX_NUMEL)
        };
        let partners: Vec<usize> = (0..self.ops.len()).filter(|&y| fits(&self.shapes[x], &self.shapes[y])).collect();
        let fresh = usize::from(self.can_add_input());
        let k = r.below(partners.len() + fresh);
        let y = if k < partners.len() {
            partners[k]
        } else {
            let s = &self.shapes[x];
            let drop = r.below(s.len() + 1);
            let shape = s[drop..].iter().map(|&n| if r.below(3) == 0 { 1 } else { n }).collect();
            self.input(shape)
        };
        let (a, b) = if r.below(2) == 0 { (x, y) } else { (y, x) };
        match [Add, Sub, Mul, Div][r.below(4)] {
            Div => {
                let s = self.push(Op::Unary(Sigmoid, b));
                let d = self.push(Op::Scalar(Plus, 1.5, s));
                self.push(Op::Binary(Div, a, d));
            }
            f => {
                self.push_bounded(vec![a, b], MAX_MAG, |o| Op::Binary(f, o[0], o[1]));
            }
        }
        true
    }

    fn scalar(&mut self, x: usize, r: &mut Rng) -> bool {
        let (f, c) = if r.below(2) == 0 {
            (Times, [-2.0, -0.5, 0.75, 1.5, 3.0][r.below(5)])
        } else {
            (Plus, [-1.0, 0.25, 0.5, 2.0][r.below(4)])
        };
        self.push_bounded(vec![x], MAX_MAG, |o| Op::Scalar(f, c, o[0]));
        true
    }

    fn permute(&mut self, x: usize, r: &mut Rng) -> bool {
        let rank = self.shapes[x].len();
        if rank < 2 {
            return false;
        }
        let mut p: Vec<usize> = (0..rank).collect();
        for i in (1..rank).rev() {
            p.swap(i, r.below(i + 1));
        }
        if p.iter().enumerate().all(|(i, &d)| i == d) {
            p.swap(rank - 2, rank - 1);
        }
        self.push(Op::Permute(x, p));
        true
    }

    fn narrow(&mut self, x: usize, r: &mut Rng) -> bool {
        let s = &self.shapes[x];
        let axes: Vec<usize> = (0..s.len()).filter(|&d| s[d] >= 2).collect();
        if axes.is_empty() {
            return false;
        }
        let axis = axes[r.below(axes.len())];
        let len = 1 + r.below(s[axis] - 1);
        let start = r.below(s[axis] - len + 1);
        self.push(Op::Narrow { x, axis, start, len });
        true
    }

    /// A random factorisation of the element count into 0–4 dims.
    fn reshape(&mut self, x: usize, r: &mut Rng) -> bool {
        let n = numel(&self.shapes[x]);
        let rank = if n == 1 { r.below(MAX_RANK + 1) } else { 1 + r.below(MAX_RANK) };
        let mut shape = vec![1; rank];
        let (mut rest, mut p) = (n, 2);
        while rest > 1 {
            if rest % p == 0 {
                shape[r.below(rank)] *= p;
                rest /= p;
            } else {
                p += 1;
            }
        }
        if shape == self.shapes[x] {
            shape = vec![n];
        }
        if shape == self.shapes[x] {
            return false;
        }
        self.push(Op::Reshape(x, shape));
        true
    }

    /// Size-1 dims grown to 2–4, or a new leading dim.
    fn expand(&mut self, x: usize, r: &mut Rng) -> bool {
        let s = &self.shapes[x];
        let mut shape: Vec<usize> =
            s.iter().map(|&n| if n == 1 && r.below(2) == 0 { 2 + r.below(3) } else { n }).collect();
        if shape.len() < MAX_RANK && (shape == *s || r.below(2) == 0) {
            shape.insert(0, 2 + r.below(2));
        }
        if shape == *s || numel(&shape) > MAX_NUMEL {
            return false;
        }
        self.push(Op::Expand(x, shape));
        true
    }

    fn unsqueeze(&mut self, x: usize, r: &mut Rng) -> bool {
        let rank = self.shapes[x].len();
        if rank >= MAX_RANK {
            return false;
        }
        self.push(Op::Unsqueeze(x, r.below(rank + 1)));
        true
    }

    /// sum/mean/max/logsumexp over a random (rarely empty) set of axes.
    fn reduce(&mut self, x: usize, r: &mut Rng) -> bool {
        let rank = self.shapes[x].len();
        let axes: Vec<usize> = if rank == 0 || r.below(10) == 0 {
            vec![]
        } else {
            let mask = 1 + r.below((1 << rank) - 1);
            (0..rank).filter(|d| mask >> d & 1 == 1).collect()
        };
        let f = [Sum, Mean, Max, LogSumExp][r.below(4)];
        let keepdim = r.below(2) == 0;
        self.push_bounded(vec![x], MAX_MAG, |o| Op::Reduce { x: o[0], f, axes: axes.clone(), keepdim });
        true
    }

    fn softmax(&mut self, x: usize, r: &mut Rng) -> bool {
        let rank = self.shapes[x].len();
        if rank == 0 {
            return false;
        }
        let (axis, log) = (r.below(rank), r.below(2) == 0);
        self.push_bounded(vec![x], MAX_MAG, |o| Op::Softmax { x: o[0], axis, log });
        true
    }

    /// x·y with a value y of matching shape, a fresh weight [k, n], or xᵀ.
    fn matmul(&mut self, x: usize, r: &mut Rng) -> bool {
        let x = match self.shapes[x].len() {
            0 => return false,
            1 => self.push(Op::Unsqueeze(x, 0)),
            _ => x,
        };
        let sx = self.shapes[x].clone();
        let (rx, k) = (sx.len(), sx[sx.len() - 1]);
        let result = |sy: &[usize]| {
            let ry = sy.len();
            if ry < 2 || sy[ry - 2] != k {
                return None;
            }
            let mut t = try_broadcast(&sx[..rx - 2], &sy[..ry - 2])?;
            t.extend([sx[rx - 2], sy[ry - 1]]);
            (t.len() <= MAX_RANK && numel(&t) <= MAX_NUMEL).then_some(t)
        };
        let partners: Vec<usize> = (0..self.ops.len()).filter(|&y| result(&self.shapes[y]).is_some()).collect();
        let fresh = usize::from(self.can_add_input());
        if partners.len() + fresh == 0 {
            // xᵀ is the partner of last resort
            let mut p: Vec<usize> = (0..rx).collect();
            p.swap(rx - 2, rx - 1);
            let t: Vec<usize> = p.iter().map(|&d| sx[d]).collect();
            if result(&t).is_none() {
                return false;
            }
            let y = self.push(Op::Permute(x, p));
            self.push_bounded(vec![x, y], MAX_MAG, |o| Op::Matmul(o[0], o[1]));
            return true;
        }
        let j = r.below(partners.len() + fresh);
        let y = if j < partners.len() { partners[j] } else { self.input(vec![k, 1 + r.below(5)]) };
        self.push_bounded(vec![x, y], MAX_MAG, |o| Op::Matmul(o[0], o[1]));
        true
    }

    /// gather or index_select with random in-range indices.
    fn index(&mut self, x: usize, r: &mut Rng) -> bool {
        let s = self.shapes[x].clone();
        if s.is_empty() {
            return false;
        }
        let axis = r.below(s.len());
        if r.below(2) == 0 {
            let len = 1 + r.below(5);
            let idx = (0..len).map(|_| r.below(s[axis])).collect();
            self.push(Op::IndexSelect { x, axis, idx });
        } else {
            let shape: Vec<usize> = (0..s.len())
                .map(|d| match d == axis {
                    true => 1 + r.below(5),
                    false if r.below(2) == 0 => 1 + r.below(s[d]),
                    false => s[d],
                })
                .collect();
            if numel(&shape) > MAX_NUMEL {
                return false;
            }
            let data = (0..numel(&shape)).map(|_| r.below(s[axis]) as f64).collect();
            self.push(Op::Gather { x, axis, idx: Array::new(&shape, data) });
        }
        true
    }
}

/// Decodes raw choices into a program of at most `MAX_OPS` ops.
fn generate(inputs: Vec<Vec<usize>>, steps: &[Step], seed: u64) -> Program {
    let mut b = Builder { inputs: vec![], ops: vec![], shapes: vec![], mags: vec![] };
    for s in inputs {
        b.input(s);
    }
    let real = |b: &Builder| b.ops.iter().filter(|op| !matches!(op, Op::Input(_))).count();
    for &step in steps {
        if real(&b) >= MAX_OPS {
            break;
        }
        b.step(step);
    }
    // a step may add several ops: cut at MAX_OPS (a prefix is a program)
    let mut count = 0;
    let end = b.ops.iter().position(|op| {
        count += usize::from(!matches!(op, Op::Input(_)));
        count > MAX_OPS
    });
    b.ops.truncate(end.unwrap_or(b.ops.len()));
    Program::new(b.inputs, b.ops, seed)
}

fn programs() -> impl Strategy<Value = Program> {
    let shape = prop::collection::vec(1usize..=5, 0..=3);
    let inputs = prop::collection::vec(shape, 1..=3);
    let steps = prop::collection::vec(any::<Step>(), 1..=MAX_OPS);
    (inputs, steps, any::<u64>()).prop_map(|(inputs, steps, seed)| generate(inputs, &steps, seed))
}

// ---- the GPU side -------------------------------------------------------------

fn gpu_op(op: &Op, v: &[Tensor], inputs: &[Tensor]) -> Tensor {
    let ax = |a: usize| a as isize;
    match op {
        Op::Input(j) => inputs[*j].clone(),
        Op::Unary(f, x) => match f {
            Tanh => v[*x].tanh(),
            Sigmoid => v[*x].sigmoid(),
            Exp => v[*x].exp(),
            Sin => v[*x].sin(),
            Square => v[*x].square(),
        },
        Op::Binary(f, a, b) => match f {
            Add => &v[*a] + &v[*b],
            Sub => &v[*a] - &v[*b],
            Mul => &v[*a] * &v[*b],
            Div => &v[*a] / &v[*b],
        },
        Op::Scalar(Times, c, x) => &v[*x] * *c as f32,
        Op::Scalar(Plus, c, x) => &v[*x] + *c as f32,
        Op::Permute(x, p) => {
            let moved: Vec<usize> = (0..p.len()).filter(|&d| p[d] != d).collect();
            let rank = p.len();
            match moved[..] {
                [a, b] if (a, b) == (rank - 2, rank - 1) => v[*x].t(),
                [a, b] => v[*x].transpose(ax(a), ax(b) - ax(rank)), // a negative axis too
                _ => v[*x].permute(&p.iter().map(|&d| ax(d)).collect::<Vec<_>>()),
            }
        }
        Op::Narrow { x, axis, start, len } => v[*x].narrow(ax(*axis), *start, *len),
        Op::Reshape(x, s) => v[*x].reshape(s),
        Op::Expand(x, s) => v[*x].expand(s),
        Op::Unsqueeze(x, a) => v[*x].unsqueeze(ax(*a)),
        Op::Reduce { x, f, axes, keepdim } => {
            let axes: Vec<isize> = axes.iter().map(|&a| ax(a)).collect();
            match f {
                Sum => v[*x].sum(&axes, *keepdim),
                Mean => v[*x].mean(&axes, *keepdim),
                Max => v[*x].max(&axes, *keepdim),
                LogSumExp => v[*x].logsumexp(&axes, *keepdim),
            }
        }
        Op::Softmax { x, axis, log } => {
            let axis = ax(*axis) - ax(v[*x].rank()); // negative: counted from the end
            if *log { v[*x].log_softmax(axis) } else { v[*x].softmax(axis) }
        }
        Op::Matmul(a, b) => v[*a].matmul(&v[*b]),
        Op::Gather { x, axis, idx } => {
            let data: Vec<u32> = idx.data.iter().map(|&i| i as u32).collect();
            v[*x].gather(ax(*axis), &Tensor::from_slice(dev(), &data, &idx.shape))
        }
        Op::IndexSelect { x, axis, idx } => {
            let data: Vec<u32> = idx.iter().map(|&i| i as u32).collect();
            v[*x].index_select(ax(*axis), &Tensor::from_slice(dev(), &data, &[idx.len()]))
        }
    }
}

// ---- the f64 reference: values --------------------------------------------------

/// Elementwise `f(a, b)` with broadcasting (fast when the shapes agree).
fn zip(a: &Array, b: &Array, f: impl Fn(f64, f64) -> f64) -> Array {
    if a.shape == b.shape {
        Array::new(&a.shape, a.data.iter().zip(&b.data).map(|(&x, &y)| f(x, y)).collect())
    } else {
        a.zip(b, f)
    }
}

macro_rules! array_ops {
    ($($trait:ident $method:ident $op:tt),*) => {$(
        impl std::ops::$trait<&Array> for &Array {
            type Output = Array;
            fn $method(self, b: &Array) -> Array {
                zip(self, b, |x, y| x $op y)
            }
        }
        impl std::ops::$trait<&Array> for Array {
            type Output = Array;
            fn $method(self, b: &Array) -> Array {
                zip(&self, b, |x, y| x $op y)
            }
        }
        impl std::ops::$trait<Array> for Array {
            type Output = Array;
            fn $method(self, b: Array) -> Array {
                zip(&self, &b, |x, y| x $op y)
            }
        }
        impl std::ops::$trait<f64> for &Array {
            type Output = Array;
            fn $method(self, b: f64) -> Array {
                self.map(|x| x $op b)
            }
        }
        impl std::ops::$trait<f64> for Array {
            type Output = Array;
            fn $method(self, b: f64) -> Array {
                self.map(|x| x $op b)
            }
        }
    )*};
}

array_ops!(Add add +, Sub sub -, Mul mul *, Div div /);

fn abs(a: &Array) -> Array {
    a.map(f64::abs)
}

fn zeros(shape: &[usize]) -> Array {
    Array::full(shape, 0.0)
}

fn dot(a: &Array, b: &Array) -> f64 {
    a.data.iter().zip(&b.data).map(|(x, y)| x * y).sum()
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// The value of `op` given the earlier values `v` (or, for the linear data
/// movement ops, their error bounds: those move the same way).
fn eval(op: &Op, v: &[Array], inputs: &[Array]) -> Array {
    match op {
        Op::Input(j) => inputs[*j].clone(),
        Op::Unary(f, x) => {
            let f: fn(f64) -> f64 = match f {
                Tanh => f64::tanh,
                Sigmoid => sigmoid,
                Exp => f64::exp,
                Sin => f64::sin,
                Square => |x| x * x,
            };
            v[*x].map(f)
        }
        Op::Binary(f, a, b) => match f {
            Add => &v[*a] + &v[*b],
            Sub => &v[*a] - &v[*b],
            Mul => &v[*a] * &v[*b],
            Div => &v[*a] / &v[*b],
        },
        Op::Scalar(Times, c, x) => &v[*x] * *c,
        Op::Scalar(Plus, c, x) => &v[*x] + *c,
        Op::Permute(x, p) => v[*x].permute(p),
        Op::Narrow { x, axis, start, len } => v[*x].narrow(*axis, *start, *len),
        Op::Reshape(x, s) => v[*x].reshape(s),
        Op::Expand(x, s) => v[*x].expand(s),
        Op::Unsqueeze(x, a) => {
            let mut s = v[*x].shape.clone();
            s.insert(*a, 1);
            v[*x].reshape(&s)
        }
        Op::Reduce { x, f, axes, keepdim } => match f {
            Sum => v[*x].sum(axes, *keepdim),
            Mean => v[*x].mean(axes, *keepdim),
            Max => v[*x].max(axes, *keepdim),
            LogSumExp => v[*x].logsumexp(axes, *keepdim),
        },
        Op::Softmax { x, axis, log } => {
            if *log {
                v[*x].log_softmax(*axis)
            } else {
                v[*x].softmax(*axis)
            }
        }
        Op::Matmul(a, b) => v[*a].matmul_with_scale(&v[*b]).0,
        Op::Gather { x, axis, idx } => v[*x].gather(*axis, idx),
        Op::IndexSelect { x, axis, idx } => v[*x].index_select(*axis, idx),
    }
}

// ---- the f64 reference: forward error bounds ---------------------------------------

/// The GPU's log-sum-exp over `axes` is max m, s = Σ exp(x − m), m + log s
/// (softmax.wgsl, one row per output). Everything here keeps the axes.
struct Lse {
    /// softmax over the axes: each term's share of s
    p: Array,
    /// bound on the relative error of the computed s
    rel_s: Array,
    /// bound on the error of the computed log-sum-exp
    err: Array,
}

fn lse_analysis(x: &Array, ex: &Array, axes: &[usize]) -> Lse {
    let n: usize = axes.iter().map(|&d| x.shape[d]).product();
    let m = x.max(axes, true);
    let t = x - &m;
    let s = t.map(f64::exp).sum(axes, true);
    let lse = &m + &s.map(f64::ln);
    let p = (x - &lse).map(f64::exp);
    // x − m rounds by ½ ULP of t, exp adds (3 + 2|t|) ULP: each term is off
    // by (3 + 2.5|t|) ULP relative, weighted by its share; then n − 1 sums
    let rel_s = (&p * &t.map(|t| (3.0 + 2.5 * t.abs()) * ULP)).sum(axes, true) + (n.max(1) - 1) as f64 * HALF;
    let log = s.map(|s| if s <= 2.0 { LOG_ABS } else { 3.0 * ULP * s.ln() });
    // the inputs' errors move the result by Σ p·e; log(s·(1+δ)) = log s + δ
    let err = (&p * ex).sum(axes, true) + &rel_s + &log + &rounding(&lse, 0.5);
    Lse { p, rel_s, err }
}

/// Reshapes a reduced value to keep the reduced axes (size 1).
fn keep(y: &Array, x_shape: &[usize], axes: &[usize]) -> Array {
    y.reshape(&reduced(x_shape, axes, true))
}

/// A first-order bound on the GPU's error in the result `y` of `op`, given
/// the values `v` and the bounds `e` of its operands.
fn forward_bound(op: &Op, v: &[Array], e: &[Array], y: &Array) -> Array {
    match op {
        Op::Input(_) => zeros(&y.shape), // exact in f32
        Op::Unary(f, x) => {
            let (x, ex) = (&v[*x], &e[*x]);
            match f {
                // |tanh'| = 1 − y²; 16 ULP + 4·2⁻²³ absolute (tests/ops.rs)
                Tanh => ex * &y.map(|y| 1.0 - y * y) + rounding(y, 16.0) + 4.0 * ULP,
                // exp(−|x|) with (3 + 2|x|) ULP, then 1 + e and one division (2.5
                // ULP): ≤ (9 + 2|x|) ULP of y
                Sigmoid => ex * &y.map(|y| y * (1.0 - y)) + y * &x.map(|x| (9.0 + 2.0 * x.abs()) * ULP) + TINY,
                // WGSL exp: (3 + 2|x|) ULP
                Exp => ex * y + y * &x.map(|x| (3.0 + 2.0 * x.abs()) * ULP) + TINY,
                // WGSL sin: 2⁻¹¹ absolute on [−π, π]
                Sin => ex * &x.map(|x| x.cos().abs()) + SIN_ABS,
                Square => ex * &abs(x) * 2.0 + rounding(y, 0.5),
            }
        }
        Op::Binary(f, a, b) => {
            let (a, b, ea, eb) = (&v[*a], &v[*b], &e[*a], &e[*b]);
            match f {
                Add | Sub => ea + eb + rounding(y, 0.5),
                Mul => ea * &abs(b) + abs(a) * eb + rounding(y, 0.5),
                // WGSL x / y: 2.5 ULP
                Div => ea / &abs(b) + abs(a) * eb / &(b * b) + rounding(y, 2.5),
            }
        }
        Op::Scalar(Times, c, x) => &e[*x] * c.abs() + rounding(y, 0.5),
        Op::Scalar(Plus, _, x) => &e[*x] + &rounding(y, 0.5),
        Op::Permute(..)
        | Op::Narrow { .. }
        | Op::Reshape(..)
        | Op::Expand(..)
        | Op::Unsqueeze(..)
        | Op::Gather { .. }
        | Op::IndexSelect { .. } => eval(op, e, &[]),
        Op::Reduce { x, f, axes, keepdim } => {
            let (x, ex) = (&v[*x], &e[*x]);
            let n = axes.iter().map(|&d| x.shape[d]).product::<usize>() as f64;
            // a sum of n terms in any order errs by ≤ (n − 1)·u·Σ|x|
            let sum = || ex.sum(axes, *keepdim) + abs(x).sum(axes, *keepdim) * ((n - 1.0) * HALF) + TINY;
            match f {
                Sum => sum(),
                // then × f32(1/n): ½ ULP for 1/n, ½ for the product
                Mean => sum() / n + rounding(y, 1.0),
                // |max(x + δ) − max x| ≤ max |δ|
                Max => ex.max(axes, *keepdim),
                LogSumExp => {
                    let err = lse_analysis(x, ex, axes).err;
                    err.reshape(&y.shape)
                }
            }
        }
        Op::Softmax { x, axis, log } => {
            let (x, ex) = (&v[*x], &e[*x]);
            let l = lse_analysis(x, ex, &[*axis]);
            if *log {
                // x − lse, rounded
                ex + &l.err + rounding(y, 0.5)
            } else {
                // exp(x − m)·(1/s): the term's own (3 + 2.5|t|) ULP, s's relative
                // error, 2.5 ULP for 1/s and ½ for the product; inputs' errors
                // move y by y·(e + Σ p·e)
                let t = x - &x.max(&[*axis], true);
                let rel =
                    ex + &(&l.p * ex).sum(&[*axis], true) + t.map(|t| (3.0 + 2.5 * t.abs() + 3.0) * ULP) + &l.rel_s;
                y * &rel + TINY
            }
        }
        Op::Matmul(a, b) => {
            let (a, b, ea, eb) = (&v[*a], &v[*b], &e[*a], &e[*b]);
            let k = *a.shape.last().expect("rank ≥ 2") as f64;
            // k FMAs: ≤ (k + 1)·u·Σ|a||b| (tests/ops.rs)
            let scale = a.matmul_with_scale(b).1;
            ea.matmul_with_scale(&abs(b)).0 + abs(a).matmul_with_scale(eb).0 + scale * ((k + 1.0) * HALF) + TINY
        }
    }
}

/// Elements of a max within rounding (or finite-difference) reach of the
/// maximum without being exactly equal to it: the GPU may pick another
/// element than the reference, and the loss has a kink there.
fn near_tie(x: &Array, ex: &Array, axes: &[usize]) -> bool {
    let m = x.max(axes, true);
    let em = ex.max(axes, true);
    let gap = &m - x;
    let reach = (ex + &em) * 2.0 + &m.map(|m| 1e-4 * (1.0 + m.abs()));
    gap.data.iter().zip(&reach.data).any(|(&g, &r)| g > 0.0 && g <= r)
}

// ---- the f64 reference: gradients and their error bounds ---------------------------

/// `g` summed down to `shape`, undoing broadcasting (as wgrad's driver does),
/// with the bound `e` of its error: the sum of m terms adds (m − 1)·u·Σ|g|.
fn unbroadcast(g: Array, e: Array, shape: &[usize]) -> (Array, Array) {
    if g.shape == shape {
        return (g, e);
    }
    let m = (g.numel() / numel(shape)) as f64;
    let err = sum_to(&e, shape) + sum_to(&abs(&g), shape) * ((m - 1.0) * HALF) + TINY;
    (sum_to(&g, shape), err)
}

/// `g` summed down to `shape` over the axes it was broadcast along.
fn sum_to(g: &Array, shape: &[usize]) -> Array {
    let lead = g.shape.len() - shape.len();
    let axes: Vec<usize> =
        (0..g.shape.len()).filter(|&d| d < lead || (shape[d - lead] == 1 && g.shape[d] != 1)).collect();
    g.sum(&axes, true).reshape(shape)
}

/// One adjoint contribution: to value `to`, exact value `g`, error bound `e`.
struct Contribution {
    to: usize,
    g: Array,
    e: Array,
}

/// The contributions of op `i` to its operands' adjoints, given its exact
/// adjoint `g` with error bound `eg`, following wgrad's VJP rules op by op:
/// each formula's f32 roundings plus the forward errors of the values it
/// reads (`e`), to first order.
fn backward(op: &Op, v: &[Array], e: &[Array], i: usize, g: &Array, eg: &Array) -> Vec<Contribution> {
    let (y, ey) = (&v[i], &e[i]);
    let one = |to: usize, g: Array, e: Array| vec![Contribution { to, g, e }];
    // a contribution of the output's shape, summed down to operand `to`
    let to_operand = |to: usize, g: Array, err: Array| {
        let (g, e) = unbroadcast(g, err, &v[to].shape);
        Contribution { to, g, e }
    };
    match op {
        Op::Input(_) => vec![],
        Op::Unary(f, x) => {
            let (xv, ex) = (&v[*x], &e[*x]);
            // d = f'(x) as the GPU computes it, with its error
            let (d, ed) = match f {
                // 1 − y·y: y's error, two roundings
                Tanh => {
                    let d = y.map(|y| 1.0 - y * y);
                    let ed = ey * &abs(y) * 2.0 + y.map(|y| HALF * y * y) + rounding(&d, 0.5);
                    (d, ed)
                }
                // y·(1 − y)
                Sigmoid => {
                    let d = y.map(|y| y * (1.0 - y));
                    let ed = ey * &y.map(|y| (1.0 - 2.0 * y).abs())
                        + y.map(|y| HALF * (y * (1.0 - y)).abs())
                        + rounding(&d, 0.5);
                    (d, ed)
                }
                Exp => (y.clone(), ey.clone()),
                // cos x: 2⁻¹¹ absolute, and x's error
                Sin => (xv.map(f64::cos), ex * &xv.map(|x| x.sin().abs()) + SIN_ABS),
                // x·x is a product with x twice: two contributions g·x
                Square => {
                    let c = g * xv;
                    let err = eg * &abs(xv) + abs(g) * ex + rounding(&c, 0.5);
                    return vec![
                        Contribution { to: *x, g: c.clone(), e: err.clone() },
                        Contribution { to: *x, g: c, e: err },
                    ];
                }
            };
            let c = g * &d;
            let err = eg * &abs(&d) + abs(g) * &ed + rounding(&c, 0.5);
            one(*x, c, err)
        }
        Op::Binary(f, a, b) => {
            let (av, bv, ea, eb) = (&v[*a], &v[*b], &e[*a], &e[*b]);
            match f {
                Add => vec![to_operand(*a, g.clone(), eg.clone()), to_operand(*b, g.clone(), eg.clone())],
                Sub => vec![to_operand(*a, g.clone(), eg.clone()), to_operand(*b, g * -1.0, eg.clone())],
                Mul => {
                    let ca = g * bv;
                    let ea2 = eg * &abs(bv) + abs(g) * eb + rounding(&ca, 0.5);
                    let cb = g * av;
                    let eb2 = eg * &abs(av) + abs(g) * ea + rounding(&cb, 0.5);
                    vec![to_operand(*a, ca, ea2), to_operand(*b, cb, eb2)]
                }
                // ∂a = g/b; ∂b = −g·(y/b)
                Div => {
                    let ca = g / bv;
                    let ea2 = eg / &abs(bv) + abs(g) * eb / &(bv * bv) + rounding(&ca, 2.5);
                    let t = y / bv;
                    let et = ey / &abs(bv) + abs(y) * eb / &(bv * bv) + rounding(&t, 2.5);
                    let cb = g * &t * -1.0;
                    let eb2 = eg * &abs(&t) + abs(g) * &et + rounding(&cb, 0.5);
                    vec![to_operand(*a, ca, ea2), to_operand(*b, cb, eb2)]
                }
            }
        }
        Op::Scalar(Times, c, x) => {
            let gc = g * *c;
            let err = eg * c.abs() + rounding(&gc, 0.5);
            one(*x, gc, err)
        }
        Op::Scalar(Plus, _, x) => one(*x, g.clone(), eg.clone()),
        Op::Permute(x, p) => {
            let mut inverse = vec![0; p.len()];
            for (i, &d) in p.iter().enumerate() {
                inverse[d] = i;
            }
            one(*x, g.permute(&inverse), eg.permute(&inverse))
        }
        Op::Narrow { x, axis, start, len } => {
            let mut pads = vec![(0, 0); g.shape.len()];
            pads[*axis] = (*start, v[*x].shape[*axis] - start - len);
            one(*x, g.pad(&pads, 0.0), eg.pad(&pads, 0.0))
        }
        Op::Reshape(x, _) | Op::Unsqueeze(x, _) => one(*x, g.reshape(&v[*x].shape), eg.reshape(&v[*x].shape)),
        Op::Expand(x, _) => vec![to_operand(*x, g.clone(), eg.clone())],
        Op::Reduce { x, f, axes, .. } => {
            let (xv, ex) = (&v[*x], &e[*x]);
            let s = &xv.shape;
            let (gk, egk) = (keep(g, s, axes), keep(eg, s, axes));
            let n = axes.iter().map(|&d| s[d]).product::<usize>() as f64;
            match f {
                Sum => one(*x, gk.expand(s), egk.expand(s)),
                // g·f32(1/n): ½ ULP for 1/n, ½ for the product
                Mean => {
                    let c = (gk / n).expand(s);
                    let err = (egk / n).expand(s) + rounding(&c, 1.0);
                    one(*x, c, err)
                }
                // g/count to each (exactly equal) maximum, count ≥ 1
                Max => {
                    let at = zip(xv, &keep(y, s, axes), |x, m| f64::from(u8::from(x == m)));
                    let count = at.sum(axes, true);
                    let share = &gk / &count;
                    let err = &egk / &count + rounding(&share, 2.5);
                    one(*x, &at * &share, at * &err)
                }
                // g·exp(x − y): x − y rounds (½ ULP of t), exp (3 + 2|t|) ULP
                LogSumExp => {
                    let t = xv - &keep(y, s, axes);
                    let p = t.map(f64::exp);
                    let c = &gk * &p;
                    let ep = &p * &(ex + &keep(ey, s, axes) + t.map(|t| (3.0 + 2.5 * t.abs()) * ULP)) + TINY;
                    let err = egk * &p + abs(&gk) * &ep + rounding(&c, 0.5);
                    one(*x, c, err)
                }
            }
        }
        Op::Softmax { x, axis, log } => {
            let n = v[*x].shape[*axis] as f64;
            let sum = |a: &Array| a.sum(&[*axis], true);
            if *log {
                // g − exp(y)·Σg
                let p = y.map(f64::exp);
                let ep = &p * &(ey + &y.map(|y| (3.0 + 2.0 * y.abs()) * ULP)) + TINY;
                let total = sum(g);
                let et = sum(eg) + sum(&abs(g)) * ((n - 1.0) * HALF) + TINY;
                let q = &p * &total;
                let eq = &p * &et + abs(&total) * &ep + rounding(&q, 0.5);
                let c = g - &q;
                let err = eg + &eq + rounding(&c, 0.5);
                one(*x, c, err)
            } else {
                // y·(g − Σ g·y)
                let gy = g * y;
                let egy = eg * y + abs(g) * ey + rounding(&gy, 0.5);
                let total = sum(&gy);
                let et = sum(&egy) + sum(&abs(&gy)) * ((n - 1.0) * HALF) + TINY;
                let d = g - &total;
                let ed = eg + &et + rounding(&d, 0.5);
                let c = y * &d;
                let err = ed * y + abs(&d) * ey + rounding(&c, 0.5);
                one(*x, c, err)
            }
        }
        Op::Matmul(a, b) => {
            let (av, bv, ea, eb) = (&v[*a], &v[*b], &e[*a], &e[*b]);
            // dA = G·Bᵀ (dots of length n), dB = Aᵀ·G (length m), each then
            // summed over broadcast batches (r terms): ≤ (len + r)·u·Σ|terms|
            let (m, n) = (g.shape[g.shape.len() - 2] as f64, g.shape[g.shape.len() - 1] as f64);
            let (ca, sa) = g.matmul_with_scale(&bv.t());
            let ea2 = eg.matmul_with_scale(&abs(&bv.t())).0 + abs(g).matmul_with_scale(&eb.t()).0;
            let (cb, sb) = av.t().matmul_with_scale(g);
            let eb2 = abs(&av.t()).matmul_with_scale(eg).0 + ea.t().matmul_with_scale(&abs(g)).0;
            let batched = |c: Array, err: Array, scale: Array, len: f64, to: usize| {
                let reps = (c.numel() / v[to].numel()) as f64;
                let (c, err) = unbroadcast(c, err, &v[to].shape);
                let scale = sum_to(&scale, &v[to].shape);
                Contribution { to, g: c, e: err + scale * ((len + reps) * HALF) + TINY }
            };
            vec![batched(ca, ea2, sa, n, *a), batched(cb, eb2, sb, m, *b)]
        }
        Op::Gather { x, axis, idx } => one_scatter(*x, &v[*x].shape, *axis, idx, g, eg),
        Op::IndexSelect { x, axis, idx } => {
            // the indices spread over g's shape: a gather's
            let mut line = vec![1; g.shape.len()];
            line[*axis] = idx.len();
            let spread = Array::new(&line, idx.iter().map(|&i| i as f64).collect()).expand(&g.shape);
            one_scatter(*x, &v[*x].shape, *axis, &spread, g, eg)
        }
    }
}

/// The adjoint of a gather: g summed into the positions `idx` names (k
/// terms into one position add (k − 1)·u·Σ|g|).
fn one_scatter(to: usize, shape: &[usize], axis: usize, idx: &Array, g: &Array, eg: &Array) -> Vec<Contribution> {
    let scatter = |src: &Array| zeros(shape).scatter_add(axis, idx, src);
    let count = scatter(&Array::full(&g.shape, 1.0));
    let err = scatter(eg) + zip(&scatter(&abs(g)), &count, |s, k| (k - 1.0).max(0.0) * HALF * s);
    vec![Contribution { to, g: scatter(g), e: err }]
}

/// The reference analysis of a program on its data.
struct Analysis {
    /// every value, exact
    values: Vec<Array>,
    /// bounds on the GPU's error in every value
    bounds: Vec<Array>,
    /// a near-tie of a max (the gradient check is skipped)
    kink: Option<usize>,
}

fn analyse(p: &Program, xs: &[Array]) -> Analysis {
    let mut values: Vec<Array> = Vec::new();
    let mut bounds: Vec<Array> = Vec::new();
    let mut kink = None;
    for (i, op) in p.ops.iter().enumerate() {
        let y = eval(op, &values, xs);
        let e = forward_bound(op, &values, &bounds, &y);
        if let Op::Reduce { x, f: Max, axes, .. } = op {
            if near_tie(&values[*x], &bounds[*x], axes) {
                kink = kink.or(Some(i));
            }
        }
        values.push(y);
        bounds.push(e);
    }
    Analysis { values, bounds, kink }
}

/// The exact gradient of Σ w·y with respect to each input, and bounds on
/// the GPU's error in it: reverse mode over the ops (the seed w is exact on
/// the GPU too: ∂(Σ w·y)/∂y = 1·w).
fn gradients(p: &Program, a: &Analysis, w: &Array) -> (Vec<Array>, Vec<Array>) {
    let n = p.ops.len();
    let mut adj: Vec<Vec<Contribution>> = (0..n).map(|_| vec![]).collect();
    adj[n - 1].push(Contribution { to: n - 1, g: w.clone(), e: zeros(&w.shape) });
    let mut grads: Vec<Array> = p.inputs.iter().map(|s| zeros(s)).collect();
    let mut errs = grads.clone();
    for i in (0..n).rev() {
        let parts = std::mem::take(&mut adj[i]);
        if parts.is_empty() {
            continue;
        }
        // the GPU adds contributions one by one: k terms add (k − 1)·u·Σ|g|
        let k = parts.len() as f64;
        let mut g = zeros(&parts[0].g.shape);
        let mut e = zeros(&g.shape);
        let mut total = zeros(&g.shape);
        for c in &parts {
            g = g + &c.g;
            e = e + &c.e;
            total = total + &abs(&c.g);
        }
        let e = e + total * ((k - 1.0) * HALF);
        if let Op::Input(j) = p.ops[i] {
            (grads[j], errs[j]) = (g, e);
            continue;
        }
        for c in backward(&p.ops[i], &a.values, &a.bounds, i, &g, &e) {
            adj[c.to].push(c);
        }
    }
    (grads, errs)
}

/// Central differences of the f64 loss, h = 1e-6.
fn finite_differences(p: &Program, xs: &[Array], w: &Array) -> Vec<Array> {
    let h = 1e-6;
    let mut out = Vec::new();
    for j in 0..xs.len() {
        let mut g = zeros(&xs[j].shape);
        for i in 0..xs[j].numel() {
            let mut moved = xs.to_vec();
            moved[j].data[i] = xs[j].data[i] + h;
            let up = p.loss(&moved, w);
            moved[j].data[i] = xs[j].data[i] - h;
            let down = p.loss(&moved, w);
            g.data[i] = (up - down) / (2.0 * h);
        }
        out.push(g);
    }
    out
}

// ---- the checks ------------------------------------------------------------------

/// `what` elementwise: |got − want| ≤ bound.
fn within(what: &str, got: &Array, want: &Array, bound: &Array) -> Result<(), String> {
    if got.shape != want.shape {
        return Err(format!("{what}: shape {:?}, want {:?}", got.shape, want.shape));
    }
    for i in 0..want.numel() {
        let (g, w, b) = (got.data[i], want.data[i], bound.data[i]);
        let ok = (g - w).abs() <= b; // false for NaN
        if !ok {
            return Err(format!(
                "{what}: element {i} of {:?}: got {g:e}, want {w:e}: off by {:.3e} > bound {b:.3e}",
                want.shape,
                (g - w).abs()
            ));
        }
    }
    Ok(())
}

/// What the GPU must reproduce, within bounds.
struct Expected {
    output: Array,
    output_bound: Array,
    loss: f64,
    loss_bound: f64,
    /// None when a max has a near-tie: (exact, bound, finite differences,
    /// bound on their error) per input
    grads: Option<Vec<(Array, Array, Array, Array)>>,
}

/// The reference results of a program, with a check of the reference's
/// reverse mode against finite differences.
fn expected(p: &Program, xs: &[Array], w: &Array) -> Result<Expected, String> {
    let a = analyse(p, xs);
    let (y, ey) = (a.values.last().expect("ops"), a.bounds.last().expect("ops"));
    // Σ w·y on the GPU: products (½ ULP) and a sum of N terms ((N − 1)·u)
    let wy = abs(&(y * w));
    let n = y.numel() as f64;
    let loss_bound = dot(ey, &abs(w)) + wy.data.iter().sum::<f64>() * n * HALF + n * TINY;
    let grads = if a.kink.is_some() {
        None
    } else {
        let (exact, bounds) = gradients(p, &a, w);
        let fd = finite_differences(p, xs, w);
        // The f64 loss has rounding errors below loss_bound·2⁻²⁹ (the same
        // analysis with f64's u = 2⁻⁵³), so the differences are off by at
        // most that/h, plus truncation h²/6·|L'''|, taken ≤ 1e-7·(1 + |g|).
        let roundoff = loss_bound * 2f64.powi(-29) / 1e-6;
        let mut grads = Vec::new();
        for (j, ((g, e), d)) in exact.into_iter().zip(bounds).zip(fd).enumerate() {
            let fd_err = g.map(|g| roundoff + 1e-7 * (1.0 + g.abs()));
            within(&format!("reference: ∂L/∂x{j}, reverse mode vs finite differences"), &g, &d, &fd_err)?;
            grads.push((g, e, d, fd_err));
        }
        Some(grads)
    };
    Ok(Expected { output: y.clone(), output_bound: ey.clone(), loss: dot(y, w), loss_bound, grads })
}

/// The GPU's loss, output and gradients against the reference.
fn compare(what: &str, want: &Expected, loss: &Tensor, y: &Tensor, grads: &[Tensor]) -> Result<(), String> {
    within(&format!("{what}: output"), &download(y), &want.output, &want.output_bound)?;
    let scalar = |v: f64| Array::full(&[], v);
    let l = scalar(loss.item::<f32>().map_err(|e| e.to_string())?.into());
    within(&format!("{what}: loss"), &l, &scalar(want.loss), &scalar(want.loss_bound))?;
    for (j, (t, (exact, bound, fd, fd_err))) in grads.iter().zip(want.grads.iter().flatten()).enumerate() {
        let got = download(t);
        within(&format!("{what}: ∂L/∂x{j} vs the f64 gradient"), &got, exact, bound)?;
        within(&format!("{what}: ∂L/∂x{j} vs finite differences"), &got, fd, &(bound + fd_err))?;
    }
    Ok(())
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.to_vec::<f32>().expect("read-back").iter().map(|x| x.to_bits()).collect()
}

/// What one passing case did.
struct Outcome {
    gradients_checked: bool,
    compiled_bitwise_eager: bool,
}

/// Every check on one program.
fn check(p: &Program) -> Result<Outcome, String> {
    let xs = p.input_data();
    let w = p.weights();
    let want = expected(p, &xs, &w)?;
    let f = |ps: &Vec<Tensor>, w: &Tensor| {
        let y = p.gpu(ps);
        ((&y * w).sum_all(), y)
    };
    let args = (xs.iter().map(upload).collect::<Vec<_>>(), upload(&w));

    // eager, op by op
    let (g, loss, y) = grad(f)(&args.0, &args.1);
    compare("eager", &want, &loss, &y, &g)?;
    let eager: Vec<Vec<u32>> = [&loss, &y].into_iter().chain(&g).map(bits).collect();

    // compiled: a trace, then a replay. Fused elementwise kernels may
    // contract a·b + c into an fma (WGSL allows it, lavapipe does it), which
    // drops a rounding: the results obey the same bounds as eager mode, so
    // |compiled − eager| ≤ 2·bound; replays are deterministic.
    let mut step = compile(|_: &mut (), (ps, w): &(Vec<Tensor>, Tensor)| {
        let (g, l, y) = grad(f)(ps, w);
        (l, y, g)
    });
    let mut runs = Vec::new();
    for run in 1..=2 {
        let (l, y, g) = step.run(&mut (), &args).map_err(|e| format!("compiled run {run}: {e}"))?;
        compare(&format!("compiled run {run}"), &want, l, y, g)?;
        runs.push([l, y].into_iter().chain(g).map(bits).collect::<Vec<_>>());
    }
    if runs[0] != runs[1] {
        return Err("compiled: the replay differs from the first run".into());
    }
    Ok(Outcome { gradients_checked: want.grads.is_some(), compiled_bitwise_eager: runs[0] == eager })
}

/// The program without the ops the output does not depend on (the inputs
/// stay, so the data does not change).
fn prune(p: &Program) -> Program {
    let n = p.ops.len();
    let mut live = vec![false; n];
    live[n - 1] = true;
    for i in (0..n).rev() {
        if live[i] {
            for x in operands(&p.ops[i]) {
                live[x] = true;
            }
        }
    }
    let mut new_index = vec![0; n];
    let mut ops = Vec::new();
    for i in (0..n).filter(|&i| live[i]) {
        new_index[i] = ops.len();
        ops.push(renumber(&p.ops[i], &new_index));
    }
    Program::new(p.inputs.clone(), ops, p.seed)
}

/// The values an op reads.
fn operands(op: &Op) -> Vec<usize> {
    match *op {
        Op::Input(_) => vec![],
        Op::Binary(_, a, b) | Op::Matmul(a, b) => vec![a, b],
        Op::Unary(_, x)
        | Op::Scalar(_, _, x)
        | Op::Permute(x, _)
        | Op::Narrow { x, .. }
        | Op::Reshape(x, _)
        | Op::Expand(x, _)
        | Op::Unsqueeze(x, _)
        | Op::Reduce { x, .. }
        | Op::Softmax { x, .. }
        | Op::Gather { x, .. }
        | Op::IndexSelect { x, .. } => vec![x],
    }
}

/// `op` with its operands renamed by `to`.
fn renumber(op: &Op, to: &[usize]) -> Op {
    let mut op = op.clone();
    match &mut op {
        Op::Input(_) => {}
        Op::Binary(_, a, b) | Op::Matmul(a, b) => (*a, *b) = (to[*a], to[*b]),
        Op::Unary(_, x)
        | Op::Scalar(_, _, x)
        | Op::Permute(x, _)
        | Op::Narrow { x, .. }
        | Op::Reshape(x, _)
        | Op::Expand(x, _)
        | Op::Unsqueeze(x, _)
        | Op::Reduce { x, .. }
        | Op::Softmax { x, .. }
        | Op::Gather { x, .. }
        | Op::IndexSelect { x, .. } => *x = to[*x],
    }
    op
}

/// Shrinks a failing program further than proptest can (its shrinking works
/// on the raw choices): drops dead ops, then bypasses ops whose operand has
/// the same shape as their result, while the program still fails.
fn minimise(mut p: Program, mut error: String) -> (Program, String) {
    let fails = |q: &Program| match catch_unwind(AssertUnwindSafe(|| check(q))) {
        Ok(Ok(_)) => None,
        Ok(Err(e)) => Some(e),
        Err(_) => Some("panic".to_string()),
    };
    let q = prune(&p);
    if let Some(e) = fails(&q) {
        (p, error) = (q, e);
    }
    let mut i = 0;
    while i + 1 < p.ops.len() {
        let bypass = operands(&p.ops[i]).into_iter().find(|&x| p.shapes[x] == p.shapes[i]);
        if let Some(x) = bypass {
            let to: Vec<usize> = (0..p.ops.len()).map(|j| if j == i { x } else { j }).collect();
            let ops = p.ops.iter().map(|op| renumber(op, &to)).collect();
            let q = prune(&Program::new(p.inputs.clone(), ops, p.seed));
            if let Some(e) = fails(&q) {
                (p, error) = (q, e);
                continue;
            }
        }
        i += 1;
    }
    (p, error)
}

/// Counts of what passing cases covered.
#[derive(Default)]
struct Stats {
    cases: usize,
    ops: usize,
    gradients_checked: usize,
    compiled_bitwise_eager: usize,
    kinds: std::collections::BTreeMap<String, usize>,
}

impl Stats {
    fn add(&mut self, p: &Program, outcome: &Outcome) {
        self.cases += 1;
        self.gradients_checked += usize::from(outcome.gradients_checked);
        self.compiled_bitwise_eager += usize::from(outcome.compiled_bitwise_eager);
        for op in &p.ops {
            let kind = match op {
                Op::Input(_) => continue,
                Op::Unary(f, _) => format!("{f:?}"),
                Op::Binary(f, ..) => format!("{f:?}"),
                Op::Scalar(f, ..) => format!("{f:?}"),
                Op::Reduce { f, .. } => format!("{f:?}"),
                Op::Softmax { log: true, .. } => "LogSoftmax".into(),
                other => format!("{other:?}").split(['(', ' ']).next().unwrap_or_default().to_string(),
            };
            self.ops += 1;
            *self.kinds.entry(kind).or_default() += 1;
        }
    }
}

/// Runs `check` with panics turned into failures.
fn check_case(p: &Program, stats: &Mutex<Stats>) -> Result<(), TestCaseError> {
    match catch_unwind(AssertUnwindSafe(|| check(p))) {
        Ok(Ok(outcome)) => {
            stats.lock().expect("stats").add(p, &outcome);
            Ok(())
        }
        Ok(Err(msg)) => Err(TestCaseError::fail(msg)),
        Err(panic) => {
            let msg =
                panic.downcast_ref::<String>().cloned().or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()));
            Err(TestCaseError::fail(format!("panic: {}", msg.unwrap_or_default())))
        }
    }
}

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[test]
fn random_programs_match_the_reference() {
    let cases = env("WGRAD_FUZZ_CASES", CI_CASES);
    let seed = env("WGRAD_FUZZ_SEED", CI_SEED);
    let config = Config { cases, failure_persistence: None, max_shrink_iters: 1000, ..Config::default() };
    let mut bytes = [0u8; 32];
    for (i, chunk) in bytes.chunks_mut(8).enumerate() {
        chunk.copy_from_slice(&(seed ^ i as u64).to_le_bytes());
    }
    let mut runner = TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &bytes));
    let stats = Mutex::new(Stats::default());
    let start = std::time::Instant::now();
    let result = runner.run(&programs(), |p| check_case(&p, &stats));
    let s = stats.lock().expect("stats");
    eprintln!(
        "fuzz: {} programs, {} ops, gradients checked on {}, compiled bitwise equal to eager on {}; {:.1?}, seed {seed}",
        s.cases,
        s.ops,
        s.gradients_checked,
        s.compiled_bitwise_eager,
        start.elapsed()
    );
    eprintln!("fuzz: ops: {:?}", s.kinds);
    match result {
        Ok(()) => {}
        Err(TestError::Fail(reason, p)) => {
            let (p, error) = minimise(p, reason.to_string());
            panic!("fuzz: failing program (WGRAD_FUZZ_SEED={seed}):\n{p}{error}");
        }
        Err(TestError::Abort(reason)) => panic!("fuzz: aborted: {reason}"),
    }
}
