//! Random programs, checked end to end against the f64 reference.
//!
//! A program is a list of 1–30 ops on a growing list of values, starting
//! from 1–3 inputs of rank 0–3 (dims 1..=5, data uniform in [−2, 2));
//! matmul weights and broadcasting partners add inputs on the way (at most
//! 6). The ops: tanh, sigmoid, exp (of values below 4), sin (below 3),
//! square, relu, abs; maximum, +, −, × with broadcasting, ÷ by 1.5 + sigmoid(·); × and + with
//! scalars; permute (as transpose/t when one swap), narrow, reshape, expand,
//! unsqueeze, pad, cat; sum, mean, max and logsumexp over random axes (with
//! or without keepdim, rarely none); softmax and log_softmax; matmul
//! (batched, broadcast); gather and index_select with random indices.
//! Values stay below 1000 in magnitude (tanh is inserted where an op would
//! exceed it). The output y is reduced to the loss L = Σ w·y with fixed
//! random weights w. Every case checks:
//!
//! 1. forward: y (elementwise) and L from `grad` against the f64 reference,
//!    within an error bound computed alongside the reference (see "error
//!    model" below);
//! 2. gradients: ∂L/∂(each input) from `grad`, elementwise, against central
//!    differences of the f64 loss (h = 1e-6) and against the gradient of a
//!    reverse pass over the f64 reference, which also carries the bound on
//!    the GPU's error. Skipped when a max or maximum has a near-tie or a
//!    relu or abs an operand near 0 (kinks);
//! 3. compiled: the same `grad` step under `compile`, traced and replayed:
//!    both runs against the reference within the bounds of fused kernels
//!    (one more ULP per elementwise op: a fused kernel may contract a·b + c
//!    into an fma or reassociate a chain, see `Kernels`), and the replay bit
//!    for bit equal to the first run. Compiled and eager results agree bit
//!    for bit on ~98% of the programs on lavapipe.
//!
//! The generator decodes raw random choices against the current shapes, so
//! every choice sequence is a valid program and proptest's shrinking keeps
//! it valid; a failing program is then shrunk further (`minimise`) and
//! printed as a listing and as Rust (`Program::new(..)`) to paste into a
//! regression test like the ones at the end of this file. A passing run
//! prints (with `--nocapture`) the ops covered and the largest share of an
//! error bound that any result used.
//!
//! ```text
//! cargo test --release --test fuzz                  # CI: fixed seed, 300 cases, ~30 s
//! WGRAD_FUZZ_CASES=5000 cargo test --release --test fuzz -- --nocapture      # ~5 min
//! WGRAD_FUZZ_SEED=7 WGRAD_FUZZ_CASES=5000 cargo test --release --test fuzz -- --nocapture
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
const CI_CASES: u32 = 300;
/// Seed of a default run; `WGRAD_FUZZ_SEED` overrides.
const CI_SEED: u64 = 20240601;

// ---- error model ---------------------------------------------------------------
//
// Every value carries a bound on the GPU's absolute error, computed in f64
// alongside the reference: the operands' bounds propagated through the op,
// plus the op's own rounding. Propagation is bounded exactly, not to first
// order: products keep the ea·eb term (it is all there is when both factors
// are near zero after a cancellation), maps use their largest slope within
// the error interval. Roundings are bounded to first order in u: one ULP of
// an f32 value y is at most 2⁻²³·|y|, so an op accurate to k ULP errs by at
// most k·2⁻²³·|y| (`rounding`); +, −, × are correctly rounded (½ ULP), the
// builtins have WGSL's accuracies (as in tests/ops.rs), a sum of n terms
// in any order errs by at most (n − 1)·u·Σ|x| and a k-term dot product by
// (k + 1)·u·Σ|a·b|. The reverse pass (`backward`) does the same for each
// VJP formula of wgrad (src/ops), reading the forward values with their
// bounds. No safety factor: the bounds are used as they are (long runs use
// up to 0.999 of them, for single roundings of values just above a power of
// two, where half an ULP is ½·2⁻²³·|y| almost exactly). The finite
// differences carry their own bound (`finite_differences`).

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

/// The rounding of elementwise ops: eager kernels round each op by itself;
/// fused kernels (compiled steps) may contract a·b + c into an fma or
/// reassociate a chain ((x + x) + c as x + (x + c) on lavapipe), which the
/// bounds allow as one more ULP per op.
#[derive(Clone, Copy, Debug)]
enum Kernels {
    Eager,
    Fused,
}

impl Kernels {
    /// Bound on one rounding of `y` by an elementwise op accurate to `ulps` ULP.
    fn rounding(self, y: &Array, ulps: f64) -> Array {
        rounding(y, ulps + self.extra_ulps())
    }

    fn extra_ulps(self) -> f64 {
        match self {
            Kernels::Eager => 0.0,
            Kernels::Fused => 1.0,
        }
    }
}

// ---- programs -------------------------------------------------------------------

/// Unary maps. Relu and abs have a kink at 0: programs that bring one
/// near it skip the gradient check, as near-ties of a max do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum UnaryFn {
    Tanh,
    Sigmoid,
    /// Only on values bounded by 4 (the generator applies tanh first).
    Exp,
    /// Only on values bounded by 3 < π, where WGSL bounds its error.
    Sin,
    Square,
    Relu,
    Abs,
}

/// Broadcasting binary maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BinaryFn {
    Add,
    Sub,
    Mul,
    /// The generator divides only by `1.5 + sigmoid(·)`, in (1.5, 2.5).
    Div,
    /// Kinks where the operands tie: programs with a near-tie skip the
    /// gradient check.
    Maximum,
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
    /// (before, after) per dim, filled with `value`
    Pad {
        x: usize,
        pads: Vec<(usize, usize)>,
        value: f64,
    },
    /// Shapes agree except along `axis`.
    Cat {
        xs: Vec<usize>,
        axis: usize,
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
                Op::Binary(Maximum, x, y) => format!("maximum(v{x}, v{y})"),
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
                Op::Pad { x, pads, value } => format!("pad(v{x}, {pads:?}, {value})"),
                Op::Cat { xs, axis } => {
                    let xs: Vec<String> = xs.iter().map(|x| format!("v{x}")).collect();
                    format!("cat([{}], axis {axis})", xs.join(", "))
                }
            };
            writeln!(f, "  v{i:<2} = {text:<48} {shape:?}")?;
        }
        let inputs: Vec<String> = self.inputs.iter().map(|s| format!("vec!{s:?}")).collect();
        let ops: Vec<String> = self.ops.iter().map(rust).collect();
        writeln!(f, "as Rust:\n  Program::new(vec![{}], vec![{}], {:#x})", inputs.join(", "), ops.join(", "), self.seed)
    }
}

/// `op` as Rust source.
fn rust(op: &Op) -> String {
    let v = |x: &[usize]| format!("vec!{x:?}");
    let text = match op {
        Op::Permute(x, p) => format!("Permute({x}, {})", v(p)),
        Op::Reshape(x, s) => format!("Reshape({x}, {})", v(s)),
        Op::Expand(x, s) => format!("Expand({x}, {})", v(s)),
        Op::Reduce { x, f, axes, keepdim } => {
            format!("Reduce {{ x: {x}, f: {f:?}, axes: {}, keepdim: {keepdim} }}", v(axes))
        }
        Op::Gather { x, axis, idx } => {
            format!("Gather {{ x: {x}, axis: {axis}, idx: Array::new(&{:?}, vec!{:?}) }}", idx.shape, idx.data)
        }
        Op::IndexSelect { x, axis, idx } => format!("IndexSelect {{ x: {x}, axis: {axis}, idx: {} }}", v(idx)),
        Op::Pad { x, pads, value } => format!("Pad {{ x: {x}, pads: vec!{pads:?}, value: {value:?} }}"),
        Op::Cat { xs, axis } => format!("Cat {{ xs: {}, axis: {axis} }}", v(xs)),
        other => format!("{other:?}"),
    };
    format!("Op::{text}")
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
        Op::Pad { x, pads, .. } => s[*x].iter().zip(pads).map(|(&n, &(a, b))| n + a + b).collect(),
        Op::Cat { xs, axis } => {
            let mut t = s[xs[0]].clone();
            t[*axis] = xs.iter().map(|&x| s[x][*axis]).sum();
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
        Op::Unary(Relu | Abs, x) => m[x],
        Op::Binary(Add | Sub, a, b) => m[a] + m[b],
        Op::Binary(Mul, a, b) => m[a] * m[b],
        Op::Binary(Maximum, a, b) => m[a].max(m[b]),
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
        Op::Pad { x, value, .. } => m[x].max(value.abs()),
        Op::Cat { ref xs, .. } => xs.iter().map(|&x| m[x]).fold(0.0, f64::max),
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
        let done = match kind % 18 {
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
            15 => self.index(x, r),
            16 => self.pad(x, r),
            _ => self.cat(x, r),
        };
        if !done {
            self.unary(x, r);
        }
    }

    fn unary(&mut self, x: usize, r: &mut Rng) {
        let f = [Tanh, Sigmoid, Exp, Sin, Square, Relu, Abs][r.below(7)];
        let limit = match f {
            Exp => 4.0,
            Sin => 3.0,
            Square => 30.0,
            Tanh | Sigmoid | Relu | Abs => f64::INFINITY,
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
        match [Add, Sub, Mul, Div, Maximum][r.below(5)] {
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
        let weight = vec![k, 1 + r.below(5)];
        let fresh = usize::from(self.can_add_input() && numel(&weight) <= MAX_NUMEL && result(&weight).is_some());
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
        let y = if j < partners.len() { partners[j] } else { self.input(weight) };
        self.push_bounded(vec![x, y], MAX_MAG, |o| Op::Matmul(o[0], o[1]));
        true
    }

    /// 0–2 elements of `value` before and after each dim.
    fn pad(&mut self, x: usize, r: &mut Rng) -> bool {
        let pads: Vec<(usize, usize)> = self.shapes[x].iter().map(|_| (r.below(3), r.below(3))).collect();
        let shape: Vec<usize> = self.shapes[x].iter().zip(&pads).map(|(&n, &(a, b))| n + a + b).collect();
        if numel(&shape) > MAX_NUMEL {
            return false;
        }
        let value = [0.0, 0.5, -1.0][r.below(3)];
        self.push(Op::Pad { x, pads, value });
        true
    }

    /// x with 1–2 values (x itself among them) that agree off the axis.
    fn cat(&mut self, x: usize, r: &mut Rng) -> bool {
        let s = self.shapes[x].clone();
        if s.is_empty() {
            return false;
        }
        let axis = r.below(s.len());
        let fits = |t: &[usize]| t.len() == s.len() && (0..s.len()).all(|d| d == axis || t[d] == s[d]);
        let partners: Vec<usize> = (0..self.ops.len()).filter(|&y| fits(&self.shapes[y])).collect();
        let mut xs = vec![x];
        for _ in 0..1 + r.below(2) {
            xs.insert(r.below(xs.len() + 1), partners[r.below(partners.len())]);
        }
        let len: usize = xs.iter().map(|&y| self.shapes[y][axis]).sum();
        if numel(&s) / s[axis] * len > MAX_NUMEL {
            return false;
        }
        self.push(Op::Cat { xs, axis });
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
            if numel(&s) / s[axis] * len > MAX_NUMEL {
                return false;
            }
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
            Relu => v[*x].relu(),
            Abs => v[*x].abs(),
        },
        Op::Binary(f, a, b) => match f {
            Add => &v[*a] + &v[*b],
            Sub => &v[*a] - &v[*b],
            Mul => &v[*a] * &v[*b],
            Div => &v[*a] / &v[*b],
            Maximum => v[*a].maximum(&v[*b]),
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
        Op::Pad { x, pads, value } => v[*x].pad(pads, *value),
        Op::Cat { xs, axis } => Tensor::cat(&xs.iter().map(|&x| &v[x]).collect::<Vec<_>>(), ax(*axis)),
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
                Relu => |x| x.max(0.0),
                Abs => f64::abs,
            };
            v[*x].map(f)
        }
        Op::Binary(f, a, b) => match f {
            Add => &v[*a] + &v[*b],
            Sub => &v[*a] - &v[*b],
            Mul => &v[*a] * &v[*b],
            Div => &v[*a] / &v[*b],
            Maximum => zip(&v[*a], &v[*b], f64::max),
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
        Op::Pad { x, pads, value } => v[*x].pad(pads, *value),
        Op::Cat { xs, axis } => Array::cat(&xs.iter().map(|&x| &v[x]).collect::<Vec<_>>(), *axis),
    }
}

// ---- the f64 reference: forward error bounds ---------------------------------------

/// Bound on |â·b̂ − a·b| when |â − a| ≤ ea and |b̂ − b| ≤ eb. Not first
/// order: when both factors are near zero (after a cancellation), ea·eb is
/// all there is.
fn prod(a: &Array, ea: &Array, b: &Array, eb: &Array) -> Array {
    abs(a) * eb + ea * &abs(b) + ea * eb
}

/// Bound on |â/b̂ − a/b| under the same conditions, with eb < |b|.
fn quot(a: &Array, ea: &Array, b: &Array, eb: &Array) -> Array {
    (ea * &abs(b) + abs(a) * eb) / &zip(b, eb, |b, e| b.abs() * (b.abs() - e))
}

/// Bound on |e^(x̂) − e^x| = e^x·|e^δ − 1| for |δ| ≤ ex.
fn exp_err(y: &Array, ex: &Array) -> Array {
    y * &ex.map(f64::exp_m1)
}

/// The largest slope of a map whose slope falls away from 0 (tanh,
/// sigmoid) within `e` of `x`: its slope at max(|x| − e, 0).
fn slope(x: &Array, e: &Array, f: fn(f64) -> f64) -> Array {
    zip(x, e, |x, e| f((x.abs() - e).max(0.0)))
}

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
    // inputs off by δ move it by log Σ p·e^δ ≤ Σ p·(e^|δ| − 1); and
    // log(s·(1 + ε)) = log s + ε to first order in u
    let err = (&p * &ex.map(f64::exp_m1)).sum(axes, true) + &rel_s + &log + &rounding(&lse, 0.5);
    Lse { p, rel_s, err }
}

/// Reshapes a reduced value to keep the reduced axes (size 1).
fn keep(y: &Array, x_shape: &[usize], axes: &[usize]) -> Array {
    y.reshape(&reduced(x_shape, axes, true))
}

fn sech2(x: f64) -> f64 {
    1.0 - x.tanh().powi(2)
}

fn sigmoid_slope(x: f64) -> f64 {
    sigmoid(x) * (1.0 - sigmoid(x))
}

/// A bound on the GPU's error in the result `y` of `op`, given the values
/// `v` and the bounds `e` of its operands: the propagated errors (exactly
/// bounded, see `prod`) plus the op's own rounding (first order in u).
fn forward_bound(op: &Op, v: &[Array], e: &[Array], y: &Array, k: Kernels) -> Array {
    match op {
        Op::Input(_) => zeros(&y.shape), // exact in f32
        Op::Unary(f, x) => {
            let (x, ex) = (&v[*x], &e[*x]);
            match f {
                // 16 ULP + 4·2⁻²³ absolute (tests/ops.rs)
                Tanh => ex * &slope(x, ex, sech2) + k.rounding(y, 16.0) + 4.0 * ULP,
                // exp(−|x|) with (3 + 2|x|) ULP, then 1 + e and one division (2.5
                // ULP): ≤ (9 + 2|x|) ULP of y
                Sigmoid => {
                    ex * &slope(x, ex, sigmoid_slope) + y * &x.map(|x| (9.0 + 2.0 * x.abs()) * ULP) + k.rounding(y, 0.0)
                }
                // WGSL exp: (3 + 2|x|) ULP
                Exp => exp_err(y, ex) + y * &x.map(|x| (3.0 + 2.0 * x.abs()) * ULP) + k.rounding(y, 0.0),
                // |sin(x + δ) − sin x| ≤ |cos x|·|δ| + δ²/2; WGSL: 2⁻¹¹ absolute on [−π, π]
                Sin => zip(x, ex, |x, e| x.cos().abs() * e + e * e / 2.0) + k.rounding(y, 0.0) + SIN_ABS,
                Square => prod(x, ex, x, ex) + k.rounding(y, 0.5),
                // exact, and 1-Lipschitz: the operand's error carries over
                Relu | Abs => ex + &k.rounding(y, 0.0),
            }
        }
        Op::Binary(f, a, b) => {
            let (a, b, ea, eb) = (&v[*a], &v[*b], &e[*a], &e[*b]);
            match f {
                Add | Sub => ea + eb + k.rounding(y, 0.5),
                Mul => prod(a, ea, b, eb) + k.rounding(y, 0.5),
                // WGSL x / y: 2.5 ULP
                Div => quot(a, ea, b, eb) + k.rounding(y, 2.5),
                // exact, and 1-Lipschitz in each operand
                Maximum => zip(ea, eb, f64::max) + k.rounding(y, 0.0),
            }
        }
        Op::Scalar(Times, c, x) => &e[*x] * c.abs() + k.rounding(y, 0.5),
        Op::Scalar(Plus, _, x) => &e[*x] + &k.rounding(y, 0.5),
        Op::Permute(..)
        | Op::Narrow { .. }
        | Op::Reshape(..)
        | Op::Expand(..)
        | Op::Unsqueeze(..)
        | Op::Gather { .. }
        | Op::IndexSelect { .. }
        | Op::Cat { .. } => eval(op, e, &[]),
        // the fill is exact
        Op::Pad { x, pads, .. } => e[*x].pad(pads, 0.0),
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
                LogSumExp => lse_analysis(x, ex, axes).err.reshape(&y.shape),
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
                // error, 2.5 ULP for 1/s and ½ for the product; inputs off by δ
                // scale y by e^(δ − Σ p·δ)
                let t = x - &x.max(&[*axis], true);
                let moved = (ex + &(&l.p * &ex.map(f64::exp_m1)).sum(&[*axis], true)).map(f64::exp_m1);
                let rel = moved + t.map(|t| (3.0 + 2.5 * t.abs() + 3.0) * ULP) + &l.rel_s;
                y * &rel + TINY
            }
        }
        Op::Matmul(a, b) => {
            let (a, b, ea, eb) = (&v[*a], &v[*b], &e[*a], &e[*b]);
            let k = *a.shape.last().expect("rank ≥ 2") as f64;
            // k FMAs: ≤ (k + 1)·u·Σ|a||b| (tests/ops.rs); and the operands'
            // errors as in `prod`, summed over k
            let scale = a.matmul_with_scale(b).1;
            let mm = |p: &Array, q: &Array| p.matmul_with_scale(q).0;
            mm(ea, &abs(b)) + mm(&abs(a), eb) + mm(ea, eb) + scale * ((k + 1.0) * HALF) + TINY
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

/// Elements of a relu's or abs's operand within rounding (or finite-
/// difference) reach of their kink at 0: the GPU's value may lie on the
/// other side, and the differences straddle it.
fn near_zero(x: &Array, ex: &Array) -> bool {
    x.data.iter().zip(&ex.data).any(|(&x, &e)| x.abs() <= 2.0 * e + 1e-4)
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
/// each formula's f32 roundings plus the errors of what it reads (the
/// adjoint and the forward values, bounds `e`), propagated as forward.
fn backward(op: &Op, v: &[Array], e: &[Array], i: usize, g: &Array, eg: &Array, k: Kernels) -> Vec<Contribution> {
    let (y, ey) = (&v[i], &e[i]);
    let one = |to: usize, g: Array, e: Array| vec![Contribution { to, g, e }];
    // a contribution of the output's shape, summed down to operand `to`
    let to_operand = |to: usize, g: Array, err: Array| {
        let (g, e) = unbroadcast(g, err, &v[to].shape);
        Contribution { to, g, e }
    };
    // ĝ·d̂ rounded
    let times = |d: &Array, ed: &Array| {
        let c = g * d;
        let err = prod(g, eg, d, ed) + k.rounding(&c, 0.5);
        (c, err)
    };
    match op {
        Op::Input(_) => vec![],
        Op::Unary(f, x) => {
            let (xv, ex) = (&v[*x], &e[*x]);
            // d = f'(x) as the GPU computes it, with its error
            let (d, ed) = match f {
                // 1 − y·y: two roundings
                Tanh => {
                    let d = y.map(|y| 1.0 - y * y);
                    let ed = prod(y, ey, y, ey) + k.rounding(&(y * y), 0.5) + k.rounding(&d, 0.5);
                    (d, ed)
                }
                // y·(1 − y)
                Sigmoid => {
                    let r = y.map(|y| 1.0 - y);
                    let d = y * &r;
                    let ed = prod(y, ey, &r, &(ey + &k.rounding(&r, 0.5))) + k.rounding(&d, 0.5);
                    (d, ed)
                }
                Exp => (y.clone(), ey.clone()),
                // cos x: |cos(x + δ) − cos x| ≤ |sin x|·|δ| + δ²/2; 2⁻¹¹ absolute
                Sin => {
                    let d = xv.map(f64::cos);
                    let ed = zip(xv, ex, |x, e| x.sin().abs() * e + e * e / 2.0) + k.rounding(&d, 0.0) + SIN_ABS;
                    (d, ed)
                }
                // [x > 0] and sign(x): exact, on the same side of the kink as
                // the reference (programs near it skip this check)
                Relu => (xv.map(|x| if x > 0.0 { 1.0 } else { 0.0 }), zeros(&xv.shape)),
                Abs => (xv.map(|x| if x == 0.0 { 0.0 } else { x.signum() }), zeros(&xv.shape)),
                // x·x is a product with x twice: two contributions g·x
                Square => {
                    let (c, err) = times(xv, ex);
                    return vec![
                        Contribution { to: *x, g: c.clone(), e: err.clone() },
                        Contribution { to: *x, g: c, e: err },
                    ];
                }
            };
            let (c, err) = times(&d, &ed);
            one(*x, c, err)
        }
        Op::Binary(f, a, b) => {
            let (av, bv, ea, eb) = (&v[*a], &v[*b], &e[*a], &e[*b]);
            match f {
                Add => vec![to_operand(*a, g.clone(), eg.clone()), to_operand(*b, g.clone(), eg.clone())],
                Sub => vec![to_operand(*a, g.clone(), eg.clone()), to_operand(*b, g * -1.0, eg.clone())],
                Mul => {
                    let (ca, ea2) = times(bv, eb);
                    let (cb, eb2) = times(av, ea);
                    vec![to_operand(*a, ca, ea2), to_operand(*b, cb, eb2)]
                }
                // ∂a = g/b; ∂b = −g·(y/b)
                Div => {
                    let ca = g / bv;
                    let ea2 = quot(g, eg, bv, eb) + k.rounding(&ca, 2.5);
                    let t = y / bv;
                    let et = quot(y, ey, bv, eb) + k.rounding(&t, 2.5);
                    let (cb, eb2) = times(&t, &et);
                    vec![to_operand(*a, ca, ea2), to_operand(*b, cb * -1.0, eb2)]
                }
                // g to the larger operand (no ties: programs near one skip
                // this check)
                Maximum => {
                    let wins = zip(av, bv, |x, y| if x > y { 1.0 } else { 0.0 });
                    let ga = g * &wins;
                    let gb = g - &ga;
                    let (e_a, e_b) = (eg * &wins, eg - &(eg * &wins));
                    vec![to_operand(*a, ga, e_a), to_operand(*b, gb, e_b)]
                }
            }
        }
        Op::Scalar(Times, c, x) => {
            let gc = g * *c;
            let err = eg * c.abs() + k.rounding(&gc, 0.5);
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
                    let err = (egk / n).expand(s) + k.rounding(&c, 1.0);
                    one(*x, c, err)
                }
                // g/count to each (exactly equal) maximum, count ≥ 1
                Max => {
                    let at = zip(xv, &keep(y, s, axes), |x, m| f64::from(u8::from(x == m)));
                    let count = at.sum(axes, true);
                    let share = &gk / &count;
                    let err = &egk / &count + k.rounding(&share, 2.5);
                    one(*x, &at * &share, at * &err)
                }
                // g·exp(x − y): x − y rounds (½ ULP of t), exp (3 + 2|t|) ULP
                LogSumExp => {
                    let t = xv - &keep(y, s, axes);
                    let p = t.map(f64::exp);
                    let dt = ex + &keep(ey, s, axes) + k.rounding(&t, 0.5);
                    let ep = exp_err(&p, &dt) + &p * &t.map(|t| (3.0 + 2.0 * t.abs()) * ULP) + k.rounding(&p, 0.0);
                    let c = &gk * &p;
                    let err = prod(&gk, &egk, &p, &ep) + k.rounding(&c, 0.5);
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
                let ep = exp_err(&p, ey) + &p * &y.map(|y| (3.0 + 2.0 * y.abs()) * ULP) + k.rounding(&p, 0.0);
                let total = sum(g);
                let et = sum(eg) + sum(&abs(g)) * ((n - 1.0) * HALF) + TINY;
                let q = &p * &total;
                let eq = prod(&p, &ep, &total, &et) + k.rounding(&q, 0.5);
                let c = g - &q;
                let err = eg + &eq + k.rounding(&c, 0.5);
                one(*x, c, err)
            } else {
                // y·(g − Σ g·y)
                let (gy, egy) = times(y, ey);
                let total = sum(&gy);
                let et = sum(&egy) + sum(&abs(&gy)) * ((n - 1.0) * HALF) + TINY;
                let d = g - &total;
                let ed = eg + &et + k.rounding(&d, 0.5);
                let c = y * &d;
                let err = prod(y, ey, &d, &ed) + k.rounding(&c, 0.5);
                one(*x, c, err)
            }
        }
        Op::Matmul(a, b) => {
            let (av, bv, ea, eb) = (&v[*a], &v[*b], &e[*a], &e[*b]);
            // dA = G·Bᵀ (dots of length n), dB = Aᵀ·G (length m), each then
            // summed over broadcast batches (r terms): ≤ (len + r)·u·Σ|terms|
            let (m, n) = (g.shape[g.shape.len() - 2] as f64, g.shape[g.shape.len() - 1] as f64);
            let mm = |p: &Array, q: &Array| p.matmul_with_scale(q).0;
            let (ca, sa) = g.matmul_with_scale(&bv.t());
            let ea2 = mm(eg, &abs(&bv.t())) + mm(&abs(g), &eb.t()) + mm(eg, &eb.t());
            let (cb, sb) = av.t().matmul_with_scale(g);
            let eb2 = mm(&abs(&av.t()), eg) + mm(&ea.t(), &abs(g)) + mm(&ea.t(), eg);
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
        Op::Pad { x, pads, .. } => {
            let inner = |a: &Array| (0..pads.len()).fold(a.clone(), |a, d| a.narrow(d, pads[d].0, v[*x].shape[d]));
            one(*x, inner(g), inner(eg))
        }
        Op::Cat { xs, axis } => {
            let mut start = 0;
            let mut out = Vec::new();
            for &x in xs {
                let len = v[x].shape[*axis];
                out.push(Contribution { to: x, g: g.narrow(*axis, start, len), e: eg.narrow(*axis, start, len) });
                start += len;
            }
            out
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

fn analyse(p: &Program, xs: &[Array], k: Kernels) -> Analysis {
    let mut values: Vec<Array> = Vec::new();
    let mut bounds: Vec<Array> = Vec::new();
    let mut kink = None;
    for (i, op) in p.ops.iter().enumerate() {
        let y = eval(op, &values, xs);
        let e = forward_bound(op, &values, &bounds, &y, k);
        let near = match op {
            Op::Reduce { x, f: Max, axes, .. } => near_tie(&values[*x], &bounds[*x], axes),
            Op::Unary(Relu | Abs, x) => near_zero(&values[*x], &bounds[*x]),
            Op::Binary(Maximum, a, b) => near_zero(&(&values[*a] - &values[*b]), &(&bounds[*a] + &bounds[*b])),
            _ => false,
        };
        if near {
            kink = kink.or(Some(i));
        }
        values.push(y);
        bounds.push(e);
    }
    Analysis { values, bounds, kink }
}

/// The exact gradient of Σ w·y with respect to each input, and bounds on
/// the GPU's error in it: reverse mode over the ops (the seed w is exact on
/// the GPU too: ∂(Σ w·y)/∂y = 1·w).
fn gradients(p: &Program, a: &Analysis, w: &Array, k: Kernels) -> Vec<(Array, Array)> {
    let n = p.ops.len();
    let mut adj: Vec<Vec<Contribution>> = (0..n).map(|_| vec![]).collect();
    adj[n - 1].push(Contribution { to: n - 1, g: w.clone(), e: zeros(&w.shape) });
    let mut grads: Vec<(Array, Array)> = p.inputs.iter().map(|s| (zeros(s), zeros(s))).collect();
    for i in (0..n).rev() {
        let parts = std::mem::take(&mut adj[i]);
        if parts.is_empty() {
            continue;
        }
        // the GPU adds contributions one by one: m terms add (m − 1)·u·Σ|g|
        let m = parts.len() as f64;
        let mut g = zeros(&parts[0].g.shape);
        let mut e = zeros(&g.shape);
        let mut total = zeros(&g.shape);
        for c in &parts {
            g = g + &c.g;
            e = e + &c.e;
            total = total + &abs(&c.g);
        }
        let e = e + total * ((m - 1.0) * (HALF + k.extra_ulps() * ULP));
        if let Op::Input(j) = p.ops[i] {
            grads[j] = (g, e);
            continue;
        }
        for c in backward(&p.ops[i], &a.values, &a.bounds, i, &g, &e, k) {
            adj[c.to].push(c);
        }
    }
    grads
}

/// Central differences of the f64 loss, h = 1e-6, with bounds on their
/// error. The f64 loss has rounding errors below `loss_bound`·2⁻²⁹ (the
/// bound of the f32 loss scaled to f64's u = 2⁻⁵³), so the differences are
/// off by at most that/h, plus truncation h²/6·|L'''|, taken ≤ 1e-7·(1 + |g|).
fn finite_differences(p: &Program, xs: &[Array], w: &Array, loss_bound: f64) -> Vec<(Array, Array)> {
    let h = 1e-6;
    let roundoff = loss_bound * 2f64.powi(-29) / h;
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
        let err = g.map(|g| roundoff + 1e-7 * (1.0 + g.abs()));
        out.push((g, err));
    }
    out
}

// ---- the checks ------------------------------------------------------------------

/// `what` elementwise: |got − want| ≤ bound. Returns the largest
/// |got − want| / bound (how much of the bound was used).
fn within(what: &str, got: &Array, want: &Array, bound: &Array) -> Result<f64, String> {
    if got.shape != want.shape {
        return Err(format!("{what}: shape {:?}, want {:?}", got.shape, want.shape));
    }
    let mut used = 0.0f64;
    for i in 0..want.numel() {
        let (g, w, b) = (got.data[i], want.data[i], bound.data[i]);
        let ok = (g - w).abs() <= b; // false for NaN
        used = used.max((g - w).abs() / b);
        if !ok {
            return Err(format!(
                "{what}: element {i} of {:?}: got {g:e}, want {w:e}: off by {:.3e} > bound {b:.3e}",
                want.shape,
                (g - w).abs()
            ));
        }
    }
    Ok(used)
}

/// What the GPU must reproduce, within bounds, with one kind of kernels.
struct Expected {
    output: Array,
    output_bound: Array,
    loss: f64,
    loss_bound: f64,
    /// per input: the exact gradient and the bound (None: not checked)
    grads: Option<Vec<(Array, Array)>>,
}

/// The reference results of a program and their bounds; gradients if
/// `with_grads` and no max has a near-tie.
fn expected(p: &Program, xs: &[Array], w: &Array, k: Kernels, with_grads: bool) -> Expected {
    let a = analyse(p, xs, k);
    let (y, ey) = (a.values.last().expect("ops"), a.bounds.last().expect("ops"));
    // Σ w·y on the GPU: products (½ ULP) and a sum of N terms ((N − 1)·u)
    let n = y.numel() as f64;
    let wy: f64 = abs(&(y * w)).data.iter().sum();
    let loss_bound = dot(ey, &abs(w)) + wy * (n * HALF + k.extra_ulps() * ULP) + n * TINY;
    let grads = (with_grads && a.kink.is_none()).then(|| gradients(p, &a, w, k));
    Expected { output: y.clone(), output_bound: ey.clone(), loss: dot(y, w), loss_bound, grads }
}

/// The GPU's loss, output and gradients against the reference (and the
/// gradients against finite differences `fd`). Returns the largest share of
/// a bound used, forward and by the gradients.
fn compare(
    what: &str,
    want: &Expected,
    fd: &[(Array, Array)],
    (loss, y, grads): (&Tensor, &Tensor, &[Tensor]),
) -> Result<[f64; 2], String> {
    let mut used = [within(&format!("{what}: output"), &download(y), &want.output, &want.output_bound)?, 0.0];
    let scalar = |v: f64| Array::full(&[], v);
    let l = scalar(loss.item::<f32>().map_err(|e| e.to_string())?.into());
    used[0] = used[0].max(within(&format!("{what}: loss"), &l, &scalar(want.loss), &scalar(want.loss_bound))?);
    for (j, ((t, (exact, bound)), (d, fd_err))) in grads.iter().zip(want.grads.iter().flatten()).zip(fd).enumerate() {
        let got = download(t);
        used[1] = used[1].max(within(&format!("{what}: ∂L/∂x{j} vs the f64 gradient"), &got, exact, bound)?);
        within(&format!("{what}: ∂L/∂x{j} vs finite differences"), &got, d, &(bound + fd_err))?;
    }
    Ok(used)
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.to_vec::<f32>().expect("read-back").iter().map(|x| x.to_bits()).collect()
}

/// What one passing case did.
struct Outcome {
    gradients_checked: bool,
    compiled_bitwise_eager: bool,
    /// the largest share of an error bound used, forward and backward
    used: [f64; 2],
}

/// Every check on one program.
fn check(p: &Program) -> Result<Outcome, String> {
    let xs = p.input_data();
    let w = p.weights();
    // fused bounds are wider: their near-ties decide for both
    let fused = expected(p, &xs, &w, Kernels::Fused, true);
    let eager = expected(p, &xs, &w, Kernels::Eager, fused.grads.is_some());
    let fd = match &eager.grads {
        Some(grads) => {
            let fd = finite_differences(p, &xs, &w, eager.loss_bound);
            for (j, ((g, _), (d, err))) in grads.iter().zip(&fd).enumerate() {
                within(&format!("reference: ∂L/∂x{j}, reverse mode vs finite differences"), g, d, err)?;
            }
            fd
        }
        None => vec![],
    };
    let f = |ps: &Vec<Tensor>, w: &Tensor| {
        let y = p.gpu(ps);
        ((&y * w).sum_all(), y)
    };
    let args = (xs.iter().map(upload).collect::<Vec<_>>(), upload(&w));

    // eager, op by op
    let (g, loss, y) = grad(f)(&args.0, &args.1);
    let mut used = compare("eager", &eager, &fd, (&loss, &y, &g))?;
    let eager_bits: Vec<Vec<u32>> = [&loss, &y].into_iter().chain(&g).map(bits).collect();

    // compiled: a trace, then a replay, within the bounds of fused kernels;
    // the replay is bit for bit the first run
    let mut step = compile(|_: &mut (), (ps, w): &(Vec<Tensor>, Tensor)| {
        let (g, l, y) = grad(f)(ps, w);
        (l, y, g)
    });
    let mut runs = Vec::new();
    for run in 1..=2 {
        let (l, y, g) = step.run(&mut (), &args).map_err(|e| format!("compiled run {run}: {e}"))?;
        let u = compare(&format!("compiled run {run}"), &fused, &fd, (l, y, g))?;
        used = [used[0].max(u[0]), used[1].max(u[1])];
        runs.push([l, y].into_iter().chain(g).map(bits).collect::<Vec<_>>());
    }
    if runs[0] != runs[1] {
        return Err("compiled: the replay differs from the first run".into());
    }
    Ok(Outcome { gradients_checked: eager.grads.is_some(), compiled_bitwise_eager: runs[0] == eager_bits, used })
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

/// The values an op reads, as places to rename them.
fn operands_mut(op: &mut Op) -> Vec<&mut usize> {
    match op {
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
        | Op::IndexSelect { x, .. }
        | Op::Pad { x, .. } => vec![x],
        Op::Cat { xs, .. } => xs.iter_mut().collect(),
    }
}

/// The values an op reads.
fn operands(op: &Op) -> Vec<usize> {
    operands_mut(&mut op.clone()).into_iter().map(|x| *x).collect()
}

/// `op` with its operands renamed by `to`.
fn renumber(op: &Op, to: &[usize]) -> Op {
    let mut op = op.clone();
    for x in operands_mut(&mut op) {
        *x = to[*x];
    }
    op
}

/// Smaller variants of `p`: without dead ops, without unused inputs, with
/// an op bypassed (its operand has the result's shape) or cut (its result
/// becomes a fresh input).
fn simpler(p: &Program) -> Vec<Program> {
    let mut out = vec![prune(p)];
    let used: Vec<usize> = p.ops.iter().filter_map(|op| if let Op::Input(j) = op { Some(*j) } else { None }).collect();
    if used.len() < p.inputs.len() {
        let inputs = used.iter().map(|&j| p.inputs[j].clone()).collect();
        let renamed = |op: &Op| match op {
            Op::Input(j) => Op::Input(used.iter().position(|u| u == j).expect("used")),
            op => op.clone(),
        };
        out.push(Program::new(inputs, p.ops.iter().map(renamed).collect(), p.seed));
    }
    for i in (0..p.ops.len()).rev().filter(|&i| !matches!(p.ops[i], Op::Input(_))) {
        if let Some(x) = operands(&p.ops[i]).into_iter().find(|&x| p.shapes[x] == p.shapes[i]) {
            let to: Vec<usize> = (0..p.ops.len()).map(|j| if j == i { x } else { j }).collect();
            let mut ops: Vec<Op> = p.ops.iter().map(|op| renumber(op, &to)).collect();
            if i + 1 == ops.len() {
                ops.pop();
            }
            out.push(prune(&Program::new(p.inputs.clone(), ops, p.seed)));
        }
        let mut inputs = p.inputs.clone();
        inputs.push(p.shapes[i].clone());
        let mut ops = p.ops.clone();
        ops[i] = Op::Input(inputs.len() - 1);
        if ops.iter().any(|op| !matches!(op, Op::Input(_))) {
            out.push(prune(&Program::new(inputs, ops, p.seed)));
        }
    }
    out
}

/// Shrinks a failing program further than proptest can (its shrinking works
/// on the raw choices), greedily, while it still fails (for 2 minutes at
/// most).
fn minimise(mut p: Program, mut error: String) -> (Program, String) {
    let start = std::time::Instant::now();
    // the same kind of failure: eager, compiled, reference or panic
    let kind = |e: &str| e.split([' ', ':']).next().unwrap_or_default().to_string();
    let first = kind(&error);
    let fails = |q: &Program| checked(q).err().filter(|e| kind(e) == first);
    let size = |q: &Program| (q.ops.iter().filter(|op| !matches!(op, Op::Input(_))).count(), q.inputs.len());
    'shrink: while start.elapsed().as_secs() < 120 {
        for q in simpler(&p) {
            if size(&q) < size(&p) {
                if let Some(e) = fails(&q) {
                    (p, error) = (q, e);
                    continue 'shrink;
                }
            }
        }
        break;
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
    used: [f64; 2],
    kinds: std::collections::BTreeMap<String, usize>,
}

impl Stats {
    fn add(&mut self, p: &Program, outcome: &Outcome) {
        self.cases += 1;
        self.gradients_checked += usize::from(outcome.gradients_checked);
        self.compiled_bitwise_eager += usize::from(outcome.compiled_bitwise_eager);
        self.used = [self.used[0].max(outcome.used[0]), self.used[1].max(outcome.used[1])];
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

/// `check` with panics turned into failures.
fn checked(p: &Program) -> Result<Outcome, String> {
    catch_unwind(AssertUnwindSafe(|| check(p))).unwrap_or_else(|panic| {
        let msg =
            panic.downcast_ref::<String>().cloned().or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()));
        Err(format!("panic: {}", msg.unwrap_or_default()))
    })
}

fn check_case(p: &Program, stats: &Mutex<Stats>) -> Result<(), TestCaseError> {
    let outcome = checked(p).map_err(TestCaseError::fail)?;
    stats.lock().expect("stats").add(p, &outcome);
    Ok(())
}

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[test]
fn random_programs_match_the_reference() {
    let cases = env("WGRAD_FUZZ_CASES", CI_CASES);
    let seed = env("WGRAD_FUZZ_SEED", CI_SEED);
    // shrinking and `minimise` stop after 2 minutes each
    let config = Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 1000,
        max_shrink_time: 120_000,
        ..Config::default()
    };
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
    eprintln!("fuzz: largest error / bound: forward {:.3}, gradients {:.3}", s.used[0], s.used[1]);
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

// ---- regressions found by the fuzzer ------------------------------------------------

/// Found by the fuzzer (seeds 1, 2, 3): in a compiled step, the backward
/// pass pads the gradient of `x.narrow(..)` (a zero fill, then a copy into
/// the interior). Fusion merged the fill into the preceding elementwise
/// kernel and dropped its store, because the copy that follows writes the
/// same buffer; but the copy writes only part of it, so the padding kept
/// stale data from a reused buffer: compiled runs returned [17, 35, 11, 15,
/// 24, 9]. Eager mode was right. Fixed by e1f4442.
#[test]
fn compiled_pad_keeps_its_zero_fill() {
    let x = Tensor::from_slice(dev(), &[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]);
    let f = |x: &Tensor, _: &()| (x.narrow(0, 1, 1) + x.narrow(1, 0, 2).matmul(x)).sum_all();
    // ∂/∂x: 2 on row 1 (broadcast over 2 rows), 1·xᵀ row sums padded, and
    // the column sums of x[:, :2]
    let want = vec![11.0f32, 20.0, 5.0, 15.0, 24.0, 9.0];
    assert_eq!(grad(f)(&x, &()).0.to_vec::<f32>().unwrap(), want, "eager");
    let mut step = compile(|_: &mut (), x: &Tensor| grad(f)(x, &()).0);
    for run in 1..=2 {
        assert_eq!(step.run(&mut (), &x).unwrap().to_vec::<f32>().unwrap(), want, "compiled run {run}");
    }
}

/// Found by the fuzzer (CI seed) while fusion learned to give a value a
/// buffer of its own: the second piece of a `cat` was moved to a new buffer
/// without the first, so the mean read half a tensor. A value may be moved
/// only where one node writes all of what its readers read.
#[test]
fn compiled_cat_keeps_every_piece() {
    let x = Tensor::from_slice(dev(), &[1.0f32, -3.0], &[1, 1, 2]);
    let f = |x: &Tensor| Tensor::cat(&[x, x], 1).mean(&[2], true);
    assert_eq!(f(&x).to_vec::<f32>().unwrap(), vec![-1.0, -1.0], "eager");
    let mut step = compile(|_: &mut (), x: &Tensor| f(x));
    for run in 1..=2 {
        assert_eq!(step.run(&mut (), &x).unwrap().to_vec::<f32>().unwrap(), vec![-1.0, -1.0], "compiled run {run}");
    }
}

/// Found by the fuzzer (seed 5): lavapipe compiles the fused kernel of
/// (x + x) + (−1) as x + (x + (−1)) (SPIR-V lets drivers reassociate what is
/// not marked NoContraction), one ULP away from eager mode and not correctly
/// rounded (x = −0.10847456: −1.2169492 instead of −1.2169491). Not a bug
/// of wgrad's, but more than an fma contraction: the bounds of fused
/// kernels allow one more ULP per op (`Kernels::Fused`).
#[test]
fn fused_chains_may_reassociate() {
    use Op::*;
    let idx = Array::new(&[4, 2, 5], (0..40).map(|i| [2.0, 0.0, 1.0][i % 3]).collect());
    let p = Program::new(
        vec![vec![3, 2, 5]],
        vec![Input(0), Binary(Add, 0, 0), Scalar(Plus, -1.0, 1), Gather { x: 2, axis: 0, idx }],
        0xf9cbe89532f782f2,
    );
    // on lavapipe compiled and eager differ in the last bit, each within its bounds
    if let Err(e) = check(&p) {
        panic!("{e}\n{p}");
    }
}
