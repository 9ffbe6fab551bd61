//! The checks of one program: the GPU against the reference, eager and
//! compiled.

use wgrad::{Tensor, compile, grad};

use crate::common::{Array, download, upload};
use crate::gradients::{finite_differences, gradients};
use crate::program::Program;
use crate::reference::{HALF, Kernels, TINY, ULP, abs, analyse, dot};

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
pub(crate) struct Outcome {
    pub(crate) gradients_checked: bool,
    pub(crate) compiled_bitwise_eager: bool,
    /// the largest share of an error bound used, forward and backward
    pub(crate) used: [f64; 2],
}

/// Every check on one program.
pub(crate) fn check(p: &Program) -> Result<Outcome, String> {
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
