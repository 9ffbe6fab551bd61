//! The generator: raw random choices decoded into valid programs.

use proptest::prelude::{Strategy, any, prop};

use crate::common::{Array, Rng};
use crate::program::{
    BinaryFn::*, Equation, Op, Program, ReduceFn::*, ScalarFn::*, ScanFn::*, UnaryFn::*, numel, out_shape,
    try_broadcast,
};

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
        Op::Unary(Relu | Abs | Silu | Mish, x) => m[x], // |x·σ(x)|, |x·tanh(·)| ≤ |x|
        Op::Unary(Atan, _) => std::f64::consts::FRAC_PI_2,
        Op::Unary(Asinh, x) => m[x].asinh(),
        Op::Unary(Softsign, _) => 1.0,
        Op::Unary(Logsigmoid, x) => m[x] + std::f64::consts::LN_2,
        Op::Unary(Expm1, x) => m[x].exp_m1().max(1.0),
        Op::Unary(Log1p, x) => m[x].ln_1p(),
        Op::Unary(Sinh, x) => m[x].sinh(),
        Op::Clamp { x, lo, hi } => m[x].min(lo.abs().max(hi.abs())),
        Op::Lerp { a, b, w } => (1.0 - w).abs() * m[a] + w.abs() * m[b],
        Op::Scan { x, f, axis } => {
            let n = s[x][axis] as f64;
            match f {
                Cumsum => n * m[x],
                Cumprod => m[x].powf(n),
                Logcumsumexp => m[x] + n.ln(),
            }
        }
        Op::Sort { x, .. } | Op::Topk { x, .. } => m[x],
        Op::Einsum(eq, ref xs) => match eq {
            Equation::BatchedMatmul | Equation::TransposeContract => {
                *s[xs[0]].last().expect("rank ≥ 2") as f64 * m[xs[0]] * m[xs[1]]
            }
            Equation::Diagonal => m[xs[0]],
            Equation::Outer => m[xs[0]] * m[xs[1]],
        },
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
        let done = match kind % 22 {
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
            17 => self.cat(x, r),
            18 => self.clamp_or_lerp(x, r),
            19 => self.scan(x, r),
            20 => self.sort(x, r),
            _ => self.einsum(x, r),
        };
        if !done {
            self.unary(x, r);
        }
    }

    fn unary(&mut self, x: usize, r: &mut Rng) {
        const FNS: [crate::program::UnaryFn; 16] = [
            Tanh, Sigmoid, Exp, Sin, Square, Relu, Abs, Atan, Asinh, Silu, Mish, Softsign, Logsigmoid, Expm1, Log1p,
            Sinh,
        ];
        let f = FNS[r.below(FNS.len())];
        // where tests/ops.rs bounds the error (and exp stays small)
        let limit = match f {
            Exp | Expm1 => 4.0,
            Sin | Sinh => 3.0,
            Mish => 5.0,
            Silu => 8.0,
            Square => 30.0,
            _ => f64::INFINITY,
        };
        let mut x = if self.mags[x] > limit { self.squash(x) } else { x };
        if f == Log1p && !self.non_negative(x) {
            // log1p(x²) or log1p(σ(x)): 1 + x ≥ 1
            x = if r.below(2) == 0 {
                self.push(Op::Unary(Sigmoid, x))
            } else {
                let x = if self.mags[x] > 5.0 { self.squash(x) } else { x };
                self.push(Op::Unary(Square, x))
            };
        }
        self.push(Op::Unary(f, x));
    }

    /// Whether value `x` is ≥ 0 by construction.
    fn non_negative(&self, x: usize) -> bool {
        matches!(self.ops[x], Op::Unary(Sigmoid | Exp | Square | Relu | Abs, _) | Op::Softmax { log: false, .. })
    }

    /// A value that broadcasts with x, or a fresh input whose shape is x's
    /// with leading dims dropped and some dims set to 1.
    fn partner(&mut self, x: usize, r: &mut Rng) -> usize {
        let fits = |s: &[usize], t: &[usize]| {
            try_broadcast(s, t).is_some_and(|b| b.len() <= MAX_RANK && numel(&b) <= MAX_NUMEL)
        };
        let partners: Vec<usize> = (0..self.ops.len()).filter(|&y| fits(&self.shapes[x], &self.shapes[y])).collect();
        let fresh = usize::from(self.can_add_input());
        let k = r.below(partners.len() + fresh);
        if k < partners.len() {
            partners[k]
        } else {
            let s = &self.shapes[x];
            let drop = r.below(s.len() + 1);
            let shape = s[drop..].iter().map(|&n| if r.below(3) == 0 { 1 } else { n }).collect();
            self.input(shape)
        }
    }

    /// x ⊕ y with a partner y.
    fn binary(&mut self, x: usize, r: &mut Rng) -> bool {
        let y = self.partner(x, r);
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

    /// clamp with scalar bounds, or lerp towards a partner with a scalar weight.
    fn clamp_or_lerp(&mut self, x: usize, r: &mut Rng) -> bool {
        if r.below(2) == 0 {
            let (lo, hi) = [(-0.5, 0.5), (-1.0, 2.0), (0.0, 1.0), (-2.0, 0.25)][r.below(4)];
            self.push(Op::Clamp { x, lo, hi });
        } else {
            let y = self.partner(x, r);
            let (a, b) = if r.below(2) == 0 { (x, y) } else { (y, x) };
            let w = [0.25, 0.5, 0.75, -0.5, 1.5][r.below(5)];
            self.push_bounded(vec![a, b], MAX_MAG, |o| Op::Lerp { a: o[0], b: o[1], w });
        }
        true
    }

    /// cumsum, cumprod (of values bounded by 1) or logcumsumexp along a
    /// random axis.
    fn scan(&mut self, x: usize, r: &mut Rng) -> bool {
        let rank = self.shapes[x].len();
        if rank == 0 {
            return false;
        }
        let (axis, f) = (r.below(rank), [Cumsum, Cumprod, Logcumsumexp][r.below(3)]);
        let x = if f == Cumprod { self.squash(x) } else { x };
        self.push_bounded(vec![x], MAX_MAG, |o| Op::Scan { x: o[0], f, axis });
        true
    }

    /// The sorted values, or the values of topk, along a random axis.
    fn sort(&mut self, x: usize, r: &mut Rng) -> bool {
        let s = &self.shapes[x];
        if s.is_empty() {
            return false;
        }
        let axis = r.below(s.len());
        let flag = r.below(2) == 0;
        if r.below(2) == 0 {
            self.push(Op::Sort { x, axis, descending: flag });
        } else {
            let k = 1 + r.below(s[axis]);
            self.push(Op::Topk { x, k, axis, largest: flag });
        }
        true
    }

    /// An einsum whose equation fits x: `ii->i` on x narrowed to a square,
    /// `i,j->ij`, `ij,kj->ik` or `...ij,...jk->...ik` with a value of a
    /// fitting shape or a fresh input.
    fn einsum(&mut self, x: usize, r: &mut Rng) -> bool {
        let s = self.shapes[x].clone();
        let eq = match s.len() {
            0 => return false,
            1 => Equation::Outer,
            2 if r.below(3) == 0 => {
                let n = s[0].min(s[1]);
                let x = if s[0] != s[1] {
                    self.push(Op::Narrow { x, axis: usize::from(s[1] > n), start: 0, len: n })
                } else {
                    x
                };
                self.push(Op::Einsum(Equation::Diagonal, vec![x]));
                return true;
            }
            2 if r.below(2) == 0 => Equation::TransposeContract,
            _ => Equation::BatchedMatmul,
        };
        let rank = s.len();
        let partner_shape = |t: &[usize]| match eq {
            Equation::Outer => t.len() == 1 && t[0] * s[0] <= MAX_NUMEL,
            Equation::TransposeContract => t.len() == 2 && t[1] == s[1] && s[0] * t[0] <= MAX_NUMEL,
            _ => {
                t.len() == rank
                    && t[..rank - 2] == s[..rank - 2]
                    && t[rank - 2] == s[rank - 1]
                    && numel(&s) / s[rank - 1] * t[rank - 1] <= MAX_NUMEL
            }
        };
        let partners: Vec<usize> = (0..self.ops.len()).filter(|&y| partner_shape(&self.shapes[y])).collect();
        let fresh = match eq {
            Equation::Outer => vec![1 + r.below(5)],
            Equation::TransposeContract => vec![1 + r.below(5), s[1]],
            _ => [&s[..s.len() - 2], &[s[s.len() - 1], 1 + r.below(5)]].concat(),
        };
        let fresh_fits = self.can_add_input() && numel(&fresh) <= MAX_NUMEL && partner_shape(&fresh);
        if partners.is_empty() && !fresh_fits {
            return false;
        }
        let k = r.below(partners.len() + usize::from(fresh_fits));
        let y = if k < partners.len() { partners[k] } else { self.input(fresh) };
        self.push_bounded(vec![x, y], MAX_MAG, |o| Op::Einsum(eq, o.to_vec()));
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

pub(crate) fn programs() -> impl Strategy<Value = Program> {
    let shape = prop::collection::vec(1usize..=5, 0..=3);
    let inputs = prop::collection::vec(shape, 1..=3);
    let steps = prop::collection::vec(any::<Step>(), 1..=MAX_OPS);
    (inputs, steps, any::<u64>()).prop_map(|(inputs, steps, seed)| generate(inputs, &steps, seed))
}
