//! Shrinking a failing program further than proptest can.

use crate::checked;
use crate::program::{Op, Program};

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
        Op::Binary(_, a, b) | Op::Matmul(a, b) | Op::Lerp { a, b, .. } => vec![a, b],
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
        | Op::Pad { x, .. }
        | Op::Clamp { x, .. }
        | Op::Scan { x, .. }
        | Op::Sort { x, .. }
        | Op::Topk { x, .. } => vec![x],
        Op::Cat { xs, .. } | Op::Einsum(_, xs) => xs.iter_mut().collect(),
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
pub(crate) fn minimise(mut p: Program, mut error: String) -> (Program, String) {
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
