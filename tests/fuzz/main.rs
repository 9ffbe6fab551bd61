//! Random programs, checked end to end against the f64 reference.
//!
//! A program is a list of 1–30 ops on a growing list of values, starting
//! from 1–3 inputs of rank 0–3 (dims 1..=5, data uniform in [−2, 2));
//! matmul weights and broadcasting partners add inputs on the way (at most
//! 6). The ops: tanh, sigmoid, exp (of values below 4), sin (below 3),
//! square, relu, abs, atan, asinh, silu (below 8), mish (below 5), softsign,
//! logsigmoid, expm1 (below 4), log1p (of x² or sigmoid(x)), sinh (below
//! 3); maximum, +, −, × with broadcasting, ÷ by 1.5 + sigmoid(·); × and +
//! with scalars; clamp with scalar bounds, lerp with a scalar weight;
//! permute (as transpose/t when one swap), narrow, reshape, expand,
//! unsqueeze, pad, cat; sum, mean, max and logsumexp over random axes (with
//! or without keepdim, rarely none); softmax and log_softmax; cumsum,
//! cumprod (of values below 1) and logcumsumexp along a random axis; the
//! values of sort and topk; matmul (batched, broadcast); einsum
//! (`...ij,...jk->...ik`, `ij,kj->ik`, `ii->i`, `i,j->ij`); gather and
//! index_select with random indices.
//! Values stay below 1000 in magnitude (tanh is inserted where an op would
//! exceed it). The output y is reduced to the loss L = Σ w·y with fixed
//! random weights w. Every case checks:
//!
//! 1. forward: y (elementwise) and L from `grad` against the f64 reference,
//!    within an error bound computed alongside the reference (see "error
//!    model" in `reference.rs`);
//! 2. gradients: ∂L/∂(each input) from `grad`, elementwise, against central
//!    differences of the f64 loss (h = 1e-6) and against the gradient of a
//!    reverse pass over the f64 reference, which also carries the bound on
//!    the GPU's error. Skipped when a max, maximum or sort has a near-tie
//!    or a relu, abs or clamp an operand near its kink;
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
//! regression test like the ones in `regressions.rs`. A passing run
//! prints (with `--nocapture`) the ops covered and the largest share of an
//! error bound that any result used.
//!
//! ```text
//! cargo test --release --test fuzz                  # CI: fixed seed, 300 cases, ~30 s
//! WGRAD_FUZZ_CASES=5000 cargo test --release --test fuzz -- --nocapture      # ~5 min
//! WGRAD_FUZZ_SEED=7 WGRAD_FUZZ_CASES=5000 cargo test --release --test fuzz -- --nocapture
//! ```

#[path = "../common/mod.rs"]
mod common;

mod bounds;
mod check;
mod generator;
mod gradients;
mod program;
mod reference;
mod regressions;
mod shrink;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Mutex;

use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};

use check::{Outcome, check};
use generator::programs;
use program::{Op, Program};
use shrink::minimise;

/// Cases of a default run (CI); `WGRAD_FUZZ_CASES` overrides.
const CI_CASES: u32 = 300;
/// Seed of a default run; `WGRAD_FUZZ_SEED` overrides.
const CI_SEED: u64 = 20240601;

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
                Op::Scan { f, .. } => format!("{f:?}"),
                Op::Einsum(eq, _) => format!("Einsum({})", eq.spec()),
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
