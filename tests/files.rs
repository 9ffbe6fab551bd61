//! Hostile files: the IDX and safetensors readers fed mutated real files must
//! answer `Ok` (with exactly what the bytes say) or `Err(Format)`, never
//! panic, and never allocate more than the file justifies. A checkpoint
//! writer killed at a random moment leaves the previous checkpoint intact.
//!
//! A fixed seed runs a few hundred cases; `WGRAD_FUZZ_CASES=100000 cargo test
//! --release --test files` runs a longer search.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::io::{Read, Write};

use common::Rng;
use common::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use wgrad::data::{Idx, Mnist};
use wgrad::optim::Optimizer;
use wgrad::{Error, Params, Tensor, checkpoint, grad};

// ---- allocation accounting ---------------------------------------------------

/// Counts the bytes allocated by the current thread while it is measuring,
/// and the peak of what it held at once.
struct Counting;

thread_local! {
    static MEASURING: Cell<bool> = const { Cell::new(false) };
    static HELD: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn account(delta: isize) {
    // `try_with`: the allocator runs during thread teardown too
    let _ = MEASURING.try_with(|m| {
        if m.get() {
            let held = HELD.with(|h| {
                h.set(h.get() + delta);
                h.get()
            });
            PEAK.with(|p| p.set(p.get().max(held)));
        }
    });
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        account(layout.size() as isize);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        account(-(layout.size() as isize));
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        account(new_size as isize - layout.size() as isize);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f` and returns its result with the peak bytes it held at once.
fn peak_of<T>(f: impl FnOnce() -> T) -> (T, usize) {
    HELD.with(|h| h.set(0));
    PEAK.with(|p| p.set(0));
    MEASURING.with(|m| m.set(true));
    let out = f();
    MEASURING.with(|m| m.set(false));
    (out, PEAK.with(|p| p.get()).max(0) as usize)
}

// ---- mutations -----------------------------------------------------------------

/// Values that break parsers: zero, one, sizes just past a limit, all ones.
const NASTY_U32: [u32; 8] = [0, 1, 2, 28, 0x7fff_ffff, 0x8000_0000, 0xffff_fffe, 0xffff_ffff];

#[derive(Clone, Debug)]
enum Mutation {
    FlipBit {
        at: usize,
        bit: u8,
    },
    SetByte {
        at: usize,
        value: u8,
    },
    /// A big-endian u32 written over four bytes near the start (IDX dims).
    SetHeaderU32 {
        at: usize,
        value: u32,
    },
    /// A little-endian u64 over the first eight bytes (safetensors' header length).
    SetLenU64 {
        value: u64,
    },
    Truncate {
        to: usize,
    },
    Insert {
        at: usize,
        bytes: Vec<u8>,
    },
    Delete {
        at: usize,
        len: usize,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::FlipBit { at, bit }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, value)| Mutation::SetByte { at, value }),
        (0usize..24, prop_oneof![prop::sample::select(&NASTY_U32[..]), any::<u32>()])
            .prop_map(|(at, value)| Mutation::SetHeaderU32 { at, value }),
        prop_oneof![Just(0u64), Just(1), Just(u64::MAX), Just(1 << 40), 0u64..4096]
            .prop_map(|value| Mutation::SetLenU64 { value }),
        any::<usize>().prop_map(|to| Mutation::Truncate { to }),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        (any::<usize>(), 1usize..64).prop_map(|(at, len)| Mutation::Delete { at, len }),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    let n = bytes.len();
    match *m {
        Mutation::FlipBit { at, bit } if n > 0 => bytes[at % n] ^= 1 << bit,
        Mutation::SetByte { at, value } if n > 0 => bytes[at % n] = value,
        Mutation::SetHeaderU32 { at, value } if n >= at + 4 => bytes[at..at + 4].copy_from_slice(&value.to_be_bytes()),
        Mutation::SetLenU64 { value } if n >= 8 => bytes[..8].copy_from_slice(&value.to_le_bytes()),
        Mutation::Truncate { to } => bytes.truncate(to % (n + 1)),
        Mutation::Insert { at, bytes: ref ins } => {
            let at = at % (n + 1);
            bytes.splice(at..at, ins.iter().copied());
        }
        Mutation::Delete { at, len } if n > 0 => {
            let at = at % n;
            bytes.drain(at..(at + len).min(n));
        }
        _ => {}
    }
}

fn runner() -> TestRunner {
    let cases = std::env::var("WGRAD_FUZZ_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(300);
    let config = Config { cases, failure_persistence: None, ..Config::default() };
    TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]))
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// What a gzip stream decodes to, capped: the measure of what a compressed
/// file justifies allocating.
fn gunzipped_len(bytes: &[u8], cap: u64) -> usize {
    let mut out = Vec::new();
    let _ = flate2::read::GzDecoder::new(bytes).take(cap).read_to_end(&mut out);
    out.len()
}

// ---- IDX -------------------------------------------------------------------------

fn mnist_file(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist").join(name);
    std::fs::read(path).unwrap()
}

/// The independent reading of an IDX file: the header's dimensions and
/// exactly the bytes after it, or None when they disagree.
fn idx_reference(raw: &[u8]) -> Option<Idx> {
    let (&[0, 0, 8, nd], rest) = raw.split_first_chunk::<4>()? else { return None };
    let nd = nd as usize;
    if nd == 0 || rest.len() < 4 * nd {
        return None;
    }
    let dims: Vec<usize> =
        rest[..4 * nd].chunks(4).map(|c| u32::from_be_bytes(c.try_into().unwrap()) as usize).collect();
    let data = &rest[4 * nd..];
    let total = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d))?;
    (total == data.len()).then(|| Idx { dims, data: data.to_vec() })
}

#[test]
fn mutated_idx_files_are_errors_or_exactly_their_bytes() {
    // the real files: the labels whole, the images cut to their first 40 digits
    let labels = {
        let mut r = Vec::new();
        flate2::read::GzDecoder::new(&mnist_file("t10k-labels-idx1-ubyte.gz")[..]).read_to_end(&mut r).unwrap();
        r
    };
    let images = {
        let full = Idx::parse("images", &mnist_file("t10k-images-idx3-ubyte.gz")).unwrap();
        let mut r = vec![0, 0, 8, 3];
        for d in [40u32, 28, 28] {
            r.extend(d.to_be_bytes());
        }
        r.extend(&full.data[..40 * 784]);
        r
    };
    let bases = [labels, images];
    let strategy = (0usize..2, any::<bool>(), any::<bool>(), prop::collection::vec(mutation(), 1..6));
    let (cases, accepted, worst_ratio) = (Cell::new(0), Cell::new(0), Cell::new((0usize, 0usize)));
    runner()
        .run(&strategy, |(which, compressed, mutate_compressed, mutations)| {
            // three kinds of input: plain bytes mutated; plain bytes mutated
            // and then compressed (valid gzip, hostile content); a valid gzip
            // stream mutated
            let mut bytes = bases[which].clone();
            if compressed && mutate_compressed {
                bytes = gzip(&bytes);
            }
            for m in &mutations {
                apply(&mut bytes, m);
            }
            if compressed && !mutate_compressed {
                bytes = gzip(&bytes);
            }
            let gz = bytes.starts_with(&[0x1f, 0x8b]);
            let decoded = if gz { gunzipped_len(&bytes, 1 << 32) } else { bytes.len() };
            let (result, peak) = peak_of(|| Idx::parse("fuzz", &bytes));
            cases.set(cases.get() + 1);
            // the parser holds what it reads and no more: a growing vector
            // at most doubles, plus the decoder's fixed buffers
            let bound = 2 * decoded + (256 << 10);
            prop_assert!(peak <= bound, "{mutations:?}: held {peak} bytes for a file of {decoded}");
            worst_ratio.set(worst_ratio.get().max((peak, decoded)));
            let plain = if gz {
                let mut out = Vec::new();
                flate2::read::GzDecoder::new(&bytes[..]).read_to_end(&mut out).ok().map(|_| out)
            } else {
                Some(bytes.clone())
            };
            let expected = plain.as_deref().and_then(idx_reference);
            match (result, expected) {
                (Ok(got), Some(want)) => {
                    accepted.set(accepted.get() + 1);
                    prop_assert_eq!(got, want);
                }
                (Err(Error::Format(msg)), None) => prop_assert!(msg.starts_with("fuzz: not a valid IDX file"), "{msg}"),
                (got, want) => prop_assert!(false, "{mutations:?}: parsed {got:?}, reference says {want:?}"),
            }
            Ok(())
        })
        .unwrap();
    eprintln!(
        "IDX: {} mutated files, {} still valid; the most held at once: {:?} bytes (for {:?} decoded)",
        cases.get(),
        accepted.get(),
        worst_ratio.get().0,
        worst_ratio.get().1
    );
}

#[test]
fn mismatched_mnist_files_are_errors() {
    let raw = |name: &str| {
        let mut r = Vec::new();
        flate2::read::GzDecoder::new(&mnist_file(name)[..]).read_to_end(&mut r).unwrap();
        r
    };
    let images = raw("t10k-images-idx3-ubyte.gz");
    let labels = raw("t10k-labels-idx1-ubyte.gz");
    assert!(Mnist::from_bytes([&images, &labels, &images, &labels]).is_ok());
    // labels for fewer images than there are
    let mut short = labels.clone();
    short[4..8].copy_from_slice(&1999u32.to_be_bytes());
    short.pop();
    let err = Mnist::from_bytes([&images, &short, &images, &labels]).unwrap_err().to_string();
    assert!(err.contains("2000") && err.contains("1999"), "{err}");
    // images and labels swapped
    let err = Mnist::from_bytes([&labels, &images, &images, &labels]).unwrap_err().to_string();
    assert!(err.contains("train-images"), "{err}");
    // a label that is no digit
    let mut bad = labels.clone();
    bad[8] = 10;
    let err = Mnist::from_bytes([&images, &bad, &images, &labels]).unwrap_err().to_string();
    assert!(err.contains("10"), "{err}");
}

// ---- safetensors -------------------------------------------------------------

type Model = (BTreeMap<String, Tensor>, Vec<Tensor>);

fn model() -> Model {
    let mut rng = Rng::new(3);
    let mut t = |shape: &[usize]| upload(&rng.array(shape, -1.0, 1.0));
    let layer = BTreeMap::from([("w".to_string(), t(&[5, 3])), ("b".to_string(), t(&[5]))]);
    (layer, vec![t(&[2, 5]), t(&[1])])
}

/// An independent reading of a safetensors file (the header's JSON and the
/// bytes at each entry's offsets), as name → (dtype, shape, bytes).
/// One entry of a safetensors file: dtype name, shape, bytes.
type Entry = (String, Vec<usize>, Vec<u8>);

fn safetensors_reference(bytes: &[u8]) -> Option<BTreeMap<String, Entry>> {
    let n = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?) as usize;
    let header: serde_json::Value = serde_json::from_slice(bytes.get(8..8usize.checked_add(n)?)?).ok()?;
    let data = &bytes[8 + n..];
    let mut out = BTreeMap::new();
    for (name, entry) in header.as_object()? {
        if name == "__metadata__" {
            continue;
        }
        let dtype = entry.get("dtype")?.as_str()?.to_string();
        let shape: Vec<usize> =
            entry.get("shape")?.as_array()?.iter().map(|d| d.as_u64().map(|d| d as usize)).collect::<Option<_>>()?;
        let offsets = entry.get("data_offsets")?.as_array()?;
        let (a, b) = (offsets.first()?.as_u64()? as usize, offsets.get(1)?.as_u64()? as usize);
        out.insert(name.clone(), (dtype, shape, data.get(a..b)?.to_vec()));
    }
    Some(out)
}

fn tensor_bytes(t: &Tensor) -> Vec<u8> {
    match t.dtype() {
        wgrad::DType::F32 => bytemuck::cast_slice(&t.to_vec::<f32>().unwrap()).to_vec(),
        wgrad::DType::I32 => bytemuck::cast_slice(&t.to_vec::<i32>().unwrap()).to_vec(),
        wgrad::DType::U32 => bytemuck::cast_slice(&t.to_vec::<u32>().unwrap()).to_vec(),
    }
}

/// A safetensors file whose header has been rewritten: shapes, offsets,
/// dtypes and names replaced by hostile values.
#[derive(Clone, Debug)]
enum HeaderEdit {
    Shape { entry: usize, dims: Vec<u64> },
    Offsets { entry: usize, start: u64, end: u64 },
    Dtype { entry: usize, dtype: &'static str },
    Rename { entry: usize, name: String },
    Remove { entry: usize },
    Duplicate { entry: usize },
}

fn header_edit() -> impl Strategy<Value = HeaderEdit> {
    let big = prop_oneof![0u64..64, Just(u32::MAX as u64), Just(1u64 << 40), Just(u64::MAX / 2), Just(u64::MAX)];
    prop_oneof![
        (any::<usize>(), prop::collection::vec(big.clone(), 0..4))
            .prop_map(|(entry, dims)| HeaderEdit::Shape { entry, dims }),
        (any::<usize>(), big.clone(), big).prop_map(|(entry, start, end)| HeaderEdit::Offsets { entry, start, end }),
        (any::<usize>(), prop::sample::select(vec!["F32", "I32", "U32", "F16", "F64", "BOOL", "U8", "nope"]))
            .prop_map(|(entry, dtype)| HeaderEdit::Dtype { entry, dtype }),
        (any::<usize>(), "[a-z.0-9]{0,12}").prop_map(|(entry, name)| HeaderEdit::Rename { entry, name }),
        any::<usize>().prop_map(|entry| HeaderEdit::Remove { entry }),
        any::<usize>().prop_map(|entry| HeaderEdit::Duplicate { entry }),
    ]
}

fn edit_header(bytes: &[u8], edits: &[HeaderEdit]) -> Vec<u8> {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    for e in edits {
        let keys: Vec<String> = header.keys().filter(|k| *k != "__metadata__").cloned().collect();
        let pick = |i: usize| keys[i % keys.len()].clone();
        if keys.is_empty() {
            break;
        }
        match e {
            HeaderEdit::Shape { entry, dims } => header[&pick(*entry)]["shape"] = dims.clone().into(),
            HeaderEdit::Offsets { entry, start, end } => {
                header[&pick(*entry)]["data_offsets"] = vec![*start, *end].into()
            }
            HeaderEdit::Dtype { entry, dtype } => header[&pick(*entry)]["dtype"] = (*dtype).into(),
            HeaderEdit::Rename { entry, name } => {
                let v = header.remove(&pick(*entry)).unwrap();
                header.insert(name.clone(), v);
            }
            HeaderEdit::Remove { entry } => {
                header.remove(&pick(*entry));
            }
            HeaderEdit::Duplicate { entry } => {
                let v = header[&pick(*entry)].clone();
                header.insert(format!("{}.copy", pick(*entry)), v);
            }
        }
    }
    let json = serde_json::to_vec(&header).unwrap();
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend(json);
    out.extend(&bytes[8 + n..]);
    out
}

#[test]
fn mutated_checkpoints_are_errors_or_exactly_their_bytes() {
    // a real training checkpoint: parameters and Adam's state
    let dir = std::env::temp_dir().join(format!("wgrad-files-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("train.safetensors");
    let f = |m: &Model, _: &()| m.0["w"].square().sum_all() + m.1[0].exp().sum_all() + m.1[1].sum_all();
    let mut opt = Optimizer::adam(0.1);
    let (g, _, ()) = grad(f)(&model(), &());
    let trained = opt.step(&model(), &g);
    checkpoint::save(&path, &trained, Some(&opt)).unwrap();
    let real = std::fs::read(&path).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let like = model();
    let names: Vec<(String, Vec<usize>, wgrad::DType)> =
        like.named_tensors().into_iter().map(|(n, t)| (n, t.shape().to_vec(), t.dtype())).collect();
    // warm up: the first load compiles pipelines and fills pools
    assert!(checkpoint::from_bytes(&real, &like, Some(&mut Optimizer::adam(0.1))).is_ok());

    let strategy = (any::<bool>(), prop::collection::vec(header_edit(), 0..4), prop::collection::vec(mutation(), 0..4));
    let (cases, accepted, worst) = (Cell::new(0), Cell::new(0), Cell::new((0usize, 0usize)));
    runner()
        .run(&strategy, |(with_optimizer, edits, mutations)| {
            let mut bytes = edit_header(&real, &edits);
            for m in &mutations {
                apply(&mut bytes, m);
            }
            let mut opt = Optimizer::adam(0.1);
            let (result, peak) = peak_of(|| checkpoint::from_bytes(&bytes, &like, with_optimizer.then_some(&mut opt)));
            cases.set(cases.get() + 1);
            // the file's tensors copied once on their way to the GPU, the
            // parsed header, and the recorder's bookkeeping
            let bound = 8 * bytes.len() + (1 << 20);
            prop_assert!(peak <= bound, "{edits:?} {mutations:?}: held {peak} bytes for a file of {}", bytes.len());
            worst.set(worst.get().max((peak, bytes.len())));
            match result {
                Ok(loaded) => {
                    accepted.set(accepted.get() + 1);
                    // whatever loads is exactly what the file holds
                    let reference = safetensors_reference(&bytes);
                    prop_assert!(
                        reference.is_some(),
                        "{edits:?} {mutations:?}: loaded a file the reference cannot read"
                    );
                    let reference = reference.unwrap();
                    for ((name, shape, dtype), (_, t)) in names.iter().zip(loaded.named_tensors()) {
                        let (d, s, data) = &reference[name];
                        prop_assert_eq!(d.as_str(), dtype.to_string().to_uppercase());
                        prop_assert_eq!(s, shape);
                        prop_assert_eq!(&tensor_bytes(t), data, "{}", name);
                    }
                }
                Err(Error::Format(msg)) => prop_assert!(msg.starts_with("checkpoint:"), "{msg}"),
                Err(other) => prop_assert!(false, "{edits:?} {mutations:?}: {other}"),
            }
            Ok(())
        })
        .unwrap();
    eprintln!(
        "safetensors: {} mutated checkpoints, {} still valid; the most held at once: {} bytes (for a file of {})",
        cases.get(),
        accepted.get(),
        worst.get().0,
        worst.get().1
    );
}

// ---- a writer killed mid-write -------------------------------------------------

const WRITER_ENV: &str = "WGRAD_TEST_CHECKPOINT_WRITER";

/// Every tensor filled with `version`, 4 MiB in all, so that writes take long
/// enough to be interrupted.
fn versioned(version: f32) -> Vec<Tensor> {
    (0..4).map(|_| Tensor::full(dev(), &[256, 1024], version)).collect()
}

/// Not a test by itself: the child process of `a_killed_writer_leaves_a_whole_checkpoint`,
/// saving versions 1, 2, 3, … to one path until it is killed.
#[test]
#[ignore]
fn checkpoint_writer_child() {
    let Ok(path) = std::env::var(WRITER_ENV) else { return };
    for version in 1.. {
        checkpoint::save(&path, &versioned(version as f32), None).unwrap();
    }
}

#[test]
fn a_killed_writer_leaves_a_whole_checkpoint() {
    let dir = std::env::temp_dir().join(format!("wgrad-killed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("model.safetensors");
    let like = versioned(0.0);
    let mut rng = Rng::new(11);
    let (mut kills, mut partial) = (0, 0);
    let started = std::time::Instant::now();
    let mut last_version = 0.0;
    for _ in 0..12 {
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "checkpoint_writer_child", "--ignored", "--nocapture", "--test-threads=1"])
            .env(WRITER_ENV, &path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // wait until this writer has replaced the file at least once…
        let start = std::time::Instant::now();
        let first_version = last_version;
        loop {
            assert!(start.elapsed().as_secs() < 60, "the writer never wrote");
            assert!(child.try_wait().unwrap().is_none(), "the writer exited");
            if let Ok(m) = checkpoint::load(&path, &like, None) {
                if m[0].to_vec::<f32>().unwrap()[0] != first_version {
                    break;
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        // …then kill it (SIGKILL: no destructors, no clean-up) at a random moment
        std::thread::sleep(std::time::Duration::from_millis(rng.below(60) as u64));
        child.kill().unwrap();
        child.wait().unwrap();
        kills += 1;
        let leftovers: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        partial += leftovers.len();
        for l in leftovers {
            std::fs::remove_file(l.path()).unwrap();
        }
        // the checkpoint is one whole version: every value the same
        let m = checkpoint::load(&path, &like, None).expect("the previous checkpoint survives");
        let values: Vec<f32> = m.iter().flat_map(|t| t.to_vec::<f32>().unwrap()).collect();
        last_version = values[0];
        assert!(last_version >= 1.0 && values.iter().all(|&v| v == last_version), "a torn checkpoint");
    }
    std::fs::remove_dir_all(&dir).unwrap();
    eprintln!(
        "killed the writer {kills} times in {:.1} s, {partial} times mid-write (a partial temporary file left)",
        started.elapsed().as_secs_f64()
    );
}
