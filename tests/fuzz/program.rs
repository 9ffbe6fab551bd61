//! The program representation: ops, programs, their shapes and listings,
//! and how the GPU runs them.

use std::fmt;

use wgrad::Tensor;

use crate::common::{Array, Rng, dev};
use crate::reference::{dot, eval};

// ---- programs -------------------------------------------------------------------

/// Unary maps. Relu and abs have a kink at 0: programs that bring one
/// near it skip the gradient check, as near-ties of a max do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum UnaryFn {
    Tanh,
    Sigmoid,
    /// Only on values bounded by 4 (the generator applies tanh first).
    Exp,
    /// Only on values bounded by 3 < π, where WGSL bounds its error.
    Sin,
    Square,
    Relu,
    Abs,
    Atan,
    Asinh,
    /// Only on values bounded by 8, where tests/ops.rs bounds its error.
    Silu,
    /// Only on values bounded by 5 (tests/ops.rs).
    Mish,
    Softsign,
    Logsigmoid,
    /// Only on values bounded by 4, as exp.
    Expm1,
    /// Only on values ≥ 0 (the generator squares or takes sigmoid first).
    Log1p,
    /// Only on values bounded by 3 (tests/ops.rs bounds it on 5).
    Sinh,
}

/// Scans along one axis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ScanFn {
    Cumsum,
    /// Only on values bounded by 1: no prefix grows or amplifies an error.
    Cumprod,
    Logcumsumexp,
}

/// einsum equations the generator fits to the current shapes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Equation {
    /// `...ij,...jk->...ik` on equal batch dims: one batched matmul.
    BatchedMatmul,
    /// `ij,kj->ik`: one matmul reading the second operand transposed.
    TransposeContract,
    /// `ii->i` on a square value: the diagonal, exactly.
    Diagonal,
    /// `i,j->ij`: one broadcast product.
    Outer,
}

impl Equation {
    pub(crate) fn spec(self) -> &'static str {
        match self {
            Equation::BatchedMatmul => "...ij,...jk->...ik",
            Equation::TransposeContract => "ij,kj->ik",
            Equation::Diagonal => "ii->i",
            Equation::Outer => "i,j->ij",
        }
    }
}

/// Broadcasting binary maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BinaryFn {
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
pub(crate) enum ScalarFn {
    Times,
    Plus,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReduceFn {
    Sum,
    Mean,
    /// Programs with near-ties of a max skip the gradient check.
    Max,
    LogSumExp,
}

use BinaryFn::*;
use ReduceFn::*;
use ScalarFn::*;
use ScanFn::*;
use UnaryFn::*;

/// One op; operands are indices of earlier values.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Op {
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
    /// Scalar bounds, lo < hi, exact in f32. Kinks at the bounds: programs
    /// with an operand near one skip the gradient check.
    Clamp {
        x: usize,
        lo: f64,
        hi: f64,
    },
    /// a + w·(b − a), a and b broadcasting, w a scalar exact in f32.
    Lerp {
        a: usize,
        b: usize,
        w: f64,
    },
    Scan {
        x: usize,
        f: ScanFn,
        axis: usize,
    },
    /// The sorted values (stable). Near-ties skip the gradient check.
    Sort {
        x: usize,
        axis: usize,
        descending: bool,
    },
    /// The values of topk (the first k of the stable sort).
    Topk {
        x: usize,
        k: usize,
        axis: usize,
        largest: bool,
    },
    Einsum(Equation, Vec<usize>),
}

/// A program: input shapes, ops (value i is the result of op i; the last
/// one is the output) and the seed of the input data and loss weights.
#[derive(Clone, PartialEq)]
pub(crate) struct Program {
    pub(crate) inputs: Vec<Vec<usize>>,
    pub(crate) ops: Vec<Op>,
    pub(crate) seed: u64,
    /// Shape of every value.
    pub(crate) shapes: Vec<Vec<usize>>,
}

impl Program {
    /// A program from its parts (e.g. pasted from a failure report).
    pub(crate) fn new(inputs: Vec<Vec<usize>>, ops: Vec<Op>, seed: u64) -> Program {
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
    pub(crate) fn input_data(&self) -> Vec<Array> {
        self.inputs
            .iter()
            .enumerate()
            .map(|(j, s)| Rng::new(self.seed ^ ((j as u64 + 1) << 40)).array(s, -2.0, 2.0))
            .collect()
    }

    /// The loss weights: uniform in [−1, 1), exact in f32.
    pub(crate) fn weights(&self) -> Array {
        Rng::new(!self.seed).array(self.output_shape(), -1.0, 1.0)
    }

    /// The output, op by op, on the GPU.
    pub(crate) fn gpu(&self, inputs: &[Tensor]) -> Tensor {
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
    pub(crate) fn loss(&self, inputs: &[Array], w: &Array) -> f64 {
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
                Op::Clamp { x, lo, hi } => format!("clamp(v{x}, {lo:?}, {hi:?})"),
                Op::Lerp { a, b, w } => format!("lerp(v{a}, v{b}, {w:?})"),
                Op::Scan { x, f, axis } => format!("{}(v{x}, axis {axis})", format!("{f:?}").to_lowercase()),
                Op::Sort { x, axis, descending } => format!("sort(v{x}, axis {axis}, descending {descending})"),
                Op::Topk { x, k, axis, largest } => format!("topk(v{x}, k {k}, axis {axis}, largest {largest})"),
                Op::Einsum(eq, xs) => {
                    let xs: Vec<String> = xs.iter().map(|x| format!("v{x}")).collect();
                    format!("einsum(\"{}\", [{}])", eq.spec(), xs.join(", "))
                }
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
        Op::Clamp { x, lo, hi } => format!("Clamp {{ x: {x}, lo: {lo:?}, hi: {hi:?} }}"),
        Op::Lerp { a, b, w } => format!("Lerp {{ a: {a}, b: {b}, w: {w:?} }}"),
        Op::Einsum(eq, xs) => format!("Einsum(Equation::{eq:?}, {})", v(xs)),
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
pub(crate) fn try_broadcast(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
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
pub(crate) fn reduced(shape: &[usize], axes: &[usize], keepdim: bool) -> Vec<usize> {
    let dims = shape.iter().enumerate().filter_map(|(d, &n)| match axes.contains(&d) {
        true if keepdim => Some(1),
        true => None,
        false => Some(n),
    });
    dims.collect()
}

pub(crate) fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// Shape of the result of `op`, given the shapes of the earlier values.
pub(crate) fn out_shape(op: &Op, s: &[Vec<usize>], inputs: &[Vec<usize>]) -> Vec<usize> {
    match op {
        Op::Input(j) => inputs[*j].clone(),
        Op::Unary(_, x)
        | Op::Scalar(_, _, x)
        | Op::Softmax { x, .. }
        | Op::Clamp { x, .. }
        | Op::Scan { x, .. }
        | Op::Sort { x, .. } => s[*x].clone(),
        Op::Topk { x, k, axis, .. } => {
            let mut t = s[*x].clone();
            t[*axis] = *k;
            t
        }
        Op::Einsum(eq, xs) => match eq {
            Equation::BatchedMatmul => {
                let (sa, sb) = (&s[xs[0]], &s[xs[1]]);
                let mut t = sa[..sa.len() - 1].to_vec();
                t.push(sb[sb.len() - 1]);
                t
            }
            Equation::TransposeContract => vec![s[xs[0]][0], s[xs[1]][0]],
            Equation::Diagonal => vec![s[xs[0]][0]],
            Equation::Outer => vec![s[xs[0]][0], s[xs[1]][0]],
        },
        Op::Binary(_, a, b) | Op::Lerp { a, b, .. } => try_broadcast(&s[*a], &s[*b]).expect("operands broadcast"),
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
            Atan => v[*x].atan(),
            Asinh => v[*x].asinh(),
            Silu => v[*x].silu(),
            Mish => v[*x].mish(),
            Softsign => v[*x].softsign(),
            Logsigmoid => v[*x].logsigmoid(),
            Expm1 => v[*x].expm1(),
            Log1p => v[*x].log1p(),
            Sinh => v[*x].sinh(),
        },
        Op::Clamp { x, lo, hi } => v[*x].clamp(*lo, *hi),
        Op::Lerp { a, b, w } => v[*a].lerp(&v[*b], *w),
        Op::Scan { x, f, axis } => match f {
            Cumsum => v[*x].cumsum(ax(*axis)),
            Cumprod => v[*x].cumprod(ax(*axis)),
            Logcumsumexp => v[*x].logcumsumexp(ax(*axis) - ax(v[*x].rank())), // a negative axis too
        },
        Op::Sort { x, axis, descending } => v[*x].sort(ax(*axis), *descending).0,
        Op::Topk { x, k, axis, largest } => v[*x].topk(*k, ax(*axis), *largest).0,
        Op::Einsum(eq, xs) => Tensor::einsum(eq.spec(), &xs.iter().map(|&x| &v[x]).collect::<Vec<_>>()),
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
