//! Data parallelism across processes (feature `mpi`; `cargo test --release
//! --features mpi --test mpi`). This binary launches itself under
//! `mpirun -np 2`, bounded by `timeout`, and checks:
//!   - two ranks train to the same bits as two replicas in one process, and
//!     within the summation-order bound of the plain single-device run;
//!   - a rank that hangs makes the other fail with a clear error within its
//!     timeout, and a rank that is killed ends the job, instead of a hang.
//!
//! Needs Open MPI's `mpirun` (`scripts/setup` installs it).

#[path = "parallel/fixture.rs"]
mod fixture;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use wgrad::Device;
use wgrad::parallel::{DataParallel, Mpi};

/// The variable that makes this binary a rank, and what the rank does.
const ROLE: &str = "WGRAD_TEST_MPI_ROLE";
const OUT: &str = "WGRAD_TEST_MPI_OUT";
/// The deadline of an exchange: generous for training (the ranks compile
/// their kernels at the first step), short where a rank is known to hang
/// after the first step.
fn timeout(role: &str) -> Duration {
    Duration::from_secs(if role == "train" { 120 } else { 4 })
}
/// The bound on a whole mpirun.
const LIMIT_S: u64 = 120;

fn main() {
    match std::env::var(ROLE).ok().as_deref() {
        Some(role) => rank(role),
        None => {
            two_ranks_match_one_process();
            a_hung_rank_fails_the_survivor_with_a_clear_error();
            a_killed_rank_ends_the_job();
            println!("mpi: all checks passed");
        }
    }
}

/// One rank: `train` writes rank 0's parameters (as bits) to OUT; with
/// `hang` or `kill`, rank 1 stops answering before the second step (it
/// sleeps, or it sends itself SIGKILL).
fn rank(role: &str) {
    let mpi = Mpi::init().expect("MPI").timeout(timeout(role));
    let mut dp = DataParallel::with_collective(vec![Device::new().expect("a GPU adapter")], mpi);
    let r = dp.rank();
    let stop = |step: usize| {
        if r == 1 && step == 1 {
            match role {
                "kill" => drop(Command::new("kill").args(["-9", &std::process::id().to_string()]).status()),
                "hang" => std::thread::sleep(Duration::from_secs(1000)),
                _ => {}
            }
        }
    };
    match fixture::data_parallel_with(&mut dp, stop) {
        Ok(run) => {
            if dp.is_root() {
                let bits: Vec<String> = run.params.concat().iter().map(|v| v.to_bits().to_string()).collect();
                std::fs::write(std::env::var(OUT).expect("OUT"), bits.join(" ")).expect("write the result");
            }
        }
        Err(e) => {
            eprintln!("rank {r}: error: {e}");
            std::process::exit(3);
        }
    }
}

fn mpirun(role: &str, out: &std::path::Path) -> (Output, Duration) {
    let exe = std::env::current_exe().expect("this binary");
    let start = Instant::now();
    let output = Command::new("timeout")
        .args([&LIMIT_S.to_string(), "mpirun", "--oversubscribe", "-np", "2"])
        .args(["-x", ROLE, "-x", OUT])
        .arg(exe)
        .env(ROLE, role)
        .env(OUT, out)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .output()
        .expect("mpirun (install Open MPI: scripts/setup)");
    (output, start.elapsed())
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn two_ranks_match_one_process() {
    let out = std::env::temp_dir().join(format!("wgrad-mpi-{}.txt", std::process::id()));
    let (o, took) = mpirun("train", &out);
    assert!(o.status.success(), "mpirun -np 2 failed ({:?} after {took:?}):\n{}", o.status, text(&o));
    let bits = std::fs::read_to_string(&out).expect("rank 0's result");
    let _ = std::fs::remove_file(&out);
    let params: Vec<f32> = bits.split(' ').map(|b| f32::from_bits(b.parse().expect("bits"))).collect();
    let dev = Device::new().expect("a GPU adapter");
    let in_process = fixture::data_parallel(&mut DataParallel::new(vec![dev.clone(), Device::new().expect("a GPU")]))
        .expect("two replicas in one process");
    assert_eq!(params, in_process.params.concat(), "two ranks differ from two replicas in one process");
    fixture::assert_within_bound(&in_process, &fixture::single(&dev));
    println!("mpi: two ranks give the bits of two replicas in one process ({took:.1?})");
}

fn a_hung_rank_fails_the_survivor_with_a_clear_error() {
    let out = std::env::temp_dir().join(format!("wgrad-mpi-hang-{}.txt", std::process::id()));
    let (o, took) = mpirun("hang", &out);
    let log = text(&o);
    assert!(!o.status.success(), "a hung rank must fail the job:\n{log}");
    assert_ne!(o.status.code(), Some(124), "the job hung until timeout killed it:\n{log}");
    assert!(
        log.contains(
            "rank 0: error: wgrad: data parallel: rank 0 of 2: the all-reduce got no answer from the other ranks"
        ),
        "{log}"
    );
    println!("mpi: a hung rank fails the survivor with a clear error ({took:.1?})");
}

fn a_killed_rank_ends_the_job() {
    let out = std::env::temp_dir().join(format!("wgrad-mpi-kill-{}.txt", std::process::id()));
    let (o, took) = mpirun("kill", &out);
    let log = text(&o);
    assert!(!o.status.success(), "a killed rank must fail the job:\n{log}");
    assert_ne!(o.status.code(), Some(124), "the job hung until timeout killed it:\n{log}");
    println!(
        "mpi: a killed rank ends the job ({took:.1?}): {}",
        log.lines().find(|l| l.contains("rank")).unwrap_or("")
    );
}
