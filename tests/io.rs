//! Files: the IDX loader on the shipped digits and on malformed input;
//! checkpoints round-trip, refuse mismatches, and are written atomically.

mod common;

use std::collections::BTreeMap;

use common::*;
use wgrad::data::{Idx, Mnist};
use wgrad::optim::Optimizer;
use wgrad::{Error, Params, Tensor, checkpoint, grad};

fn mnist_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist")
}

#[test]
fn shipped_mnist_loads() {
    let m = Mnist::load(mnist_dir()).unwrap();
    assert_eq!((m.train.len(), m.test.len(), m.train.rows, m.train.cols), (8000, 2000, 28, 28));
    let mut counts = [0usize; 10];
    for &l in &m.train.labels {
        counts[l as usize] += 1;
    }
    assert!(counts.iter().all(|&c| c > 600), "{counts:?}");
    // ink is bright and digits are centred: the border is blank on average
    let border: f64 = m.train.images.chunks(784).map(|im| im[0] as f64 + im[27] as f64 + im[783] as f64).sum::<f64>();
    assert!(border / 8000.0 < 1.0);
    let (x, y) = m.train.batch(dev(), &[0, 1, 2]);
    assert_eq!((x.shape(), y.shape()), (&[3, 784][..], &[3][..]));
    let v: Vec<f32> = x.to_vec().unwrap();
    assert!(v.iter().all(|&p| (0.0..=1.0).contains(&p)) && v.contains(&1.0));
    let batches = m.train.batches(128, 7);
    assert_eq!(batches.len(), 63);
    let mut all: Vec<usize> = batches.concat();
    all.sort();
    assert_eq!(all, (0..8000).collect::<Vec<_>>());
    assert_eq!(m.train.batches(128, 7), batches, "a seed fixes the order");
    let line = line!() + 1;
    let (msg, at) = panic_of(std::panic::AssertUnwindSafe(|| drop(m.train.batch(dev(), &[7999, 8000]))));
    assert!(msg.contains("batch") && msg.contains("8000") && msg.contains("8000 examples"), "{msg}");
    assert_eq!(at, format!("tests/io.rs:{line}"));
}

fn idx_bytes(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        b.extend(d.to_be_bytes());
    }
    b.extend(data);
    b
}

#[test]
fn malformed_idx_files_are_errors() {
    let good = idx_bytes(&[2, 3], &[1, 2, 3, 4, 5, 6]);
    assert_eq!(Idx::parse("good", &good).unwrap(), Idx { dims: vec![2, 3], data: vec![1, 2, 3, 4, 5, 6] });
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", vec![], "no header"),
        ("magic", vec![1, 0, 8, 1, 0, 0, 0, 0], "bad magic"),
        ("type", vec![0, 0, 0x0d, 1, 0, 0, 0, 1, 0, 0, 0, 0], "element type 0x0d"),
        ("truncated header", vec![0, 0, 8, 2, 0, 0, 0, 2], "truncated header"),
        ("short data", idx_bytes(&[2, 3], &[1, 2, 3]), "need 6 bytes"),
        ("long data", idx_bytes(&[2, 3], &[0; 9]), "need 6 bytes"),
        ("huge", idx_bytes(&[65536, 65536, 65536], &[]), "exceed"),
        ("gzip garbage", vec![0x1f, 0x8b, 8, 0, 1, 2, 3], "no header"),
    ];
    for (name, bytes, needle) in cases {
        let err = Idx::parse(name, &bytes).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::Format(_)) && msg.contains(name) && msg.contains(needle), "{name}: {msg}");
    }
    // gzip of a truncated file
    let mut gz = Vec::new();
    {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(&mut gz, flate2::Compression::default());
        e.write_all(&idx_bytes(&[2, 3], &[1, 2])).unwrap();
    }
    assert!(Idx::parse("gz", &gz).unwrap_err().to_string().contains("need 6 bytes"));
    let err = Mnist::load("/nonexistent/dir").unwrap_err();
    assert!(matches!(err, Error::Io(_)) && err.to_string().contains("train-images-idx3-ubyte"), "{err}");
}

#[derive(Params, Debug)]
struct Model {
    layers: Vec<BTreeMap<String, Tensor>>,
    head: (Tensor, Tensor),
    steps: Tensor,
}

fn model(scale: f32) -> Model {
    let t = |v: &[f32], s: &[usize]| Tensor::from_slice(dev(), &v.iter().map(|x| x * scale).collect::<Vec<_>>(), s);
    Model {
        layers: vec![BTreeMap::from([
            ("w".into(), t(&[1.0, 2.0, 3.0, 4.0], &[2, 2])),
            ("b".into(), t(&[5.0, 6.0], &[2])),
        ])],
        head: (t(&[7.0], &[1, 1]), t(&[8.0], &[1])),
        steps: Tensor::from_slice(dev(), &[42u32], &[1]),
    }
}

/// A path in a folder of this process and file name, so that tests running
/// in parallel never see each other's temporary files.
fn tmp(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("wgrad-test-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[test]
fn checkpoints_round_trip_with_names() {
    let path = tmp("model.safetensors");
    let m = model(1.0);
    checkpoint::save(&path, &m, None).unwrap();
    let names: Vec<String> = m.named_tensors().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, vec!["layers.0.b", "layers.0.w", "head.0", "head.1", "steps"]);
    // readable by any safetensors reader, under those names
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.tensor("layers.0.w").unwrap().shape(), &[2, 2]);
    let back = checkpoint::load(&path, &model(0.0), None).unwrap();
    for ((_, a), (_, b)) in m.named_tensors().iter().zip(back.named_tensors()) {
        assert_eq!(a.dtype(), b.dtype());
        assert_eq!(download_any(a), download_any(b));
    }
}

fn download_any(t: &Tensor) -> Vec<f64> {
    match t.dtype() {
        wgrad::DType::F32 => t.to_vec::<f32>().unwrap().into_iter().map(f64::from).collect(),
        wgrad::DType::U32 => t.to_vec::<u32>().unwrap().into_iter().map(f64::from).collect(),
        wgrad::DType::I32 => t.to_vec::<i32>().unwrap().into_iter().map(f64::from).collect(),
    }
}

#[test]
fn optimizer_state_resumes_exactly() {
    let path = tmp("train.safetensors");
    let f = |m: &(Vec<BTreeMap<String, Tensor>>, (Tensor, Tensor)), _: &()| {
        m.0[0]["w"].square().sum_all() + m.1.0.exp().sum_all() + m.1.1.sum_all()
    };
    let floats = |m: &Model| (m.layers.map(Tensor::clone), m.head.clone());
    let step = |p: &(Vec<BTreeMap<String, Tensor>>, (Tensor, Tensor)), opt: &mut Optimizer| {
        let (g, _, ()) = grad(f)(p, &());
        opt.step(p, &g)
    };
    let mut opt = Optimizer::adam(0.1);
    let p = step(&floats(&model(1.0)), &mut opt);
    checkpoint::save(&path, &p, Some(&opt)).unwrap();
    let continued = step(&p, &mut opt);
    let mut opt2 = Optimizer::adam(0.1);
    let resumed = checkpoint::load(&path, &floats(&model(0.0)), Some(&mut opt2)).unwrap();
    assert_eq!(opt2.steps().unwrap(), 1);
    let resumed = step(&resumed, &mut opt2);
    for ((_, a), (_, b)) in continued.named_tensors().iter().zip(resumed.named_tensors()) {
        assert_eq!(download_any(a), download_any(b), "bit-identical after resuming");
    }
    // a model-only load ignores the optimizer state
    assert!(checkpoint::load(&path, &floats(&model(0.0)), None).is_ok());
    // state saved for other parameters is refused
    let err = checkpoint::save(&path, &model(1.0), Some(&opt)).unwrap_err().to_string();
    assert!(err.contains("optimizer") && err.contains("4") && err.contains("5"), "{err}");
}

#[test]
fn mismatched_and_corrupt_checkpoints_are_errors() {
    let path = tmp("mismatch.safetensors");
    checkpoint::save(&path, &model(1.0), None).unwrap();
    // wrong shape
    let mut other = model(1.0);
    other.head.1 = Tensor::zeros(dev(), &[2]);
    let msg = checkpoint::load(&path, &other, None).unwrap_err().to_string();
    assert!(msg.contains("head.1") && msg.contains("[1]") && msg.contains("[2]"), "{msg}");
    // wrong dtype
    let mut other = model(1.0);
    other.steps = Tensor::zeros(dev(), &[1]);
    let msg = checkpoint::load(&path, &other, None).unwrap_err().to_string();
    assert!(msg.contains("steps") && msg.contains("f32"), "{msg}");
    // missing and extra names
    let msg = checkpoint::load(&path, &(Tensor::zeros(dev(), &[1]),), None).unwrap_err().to_string();
    assert!(msg.contains("no tensor \"0\""), "{msg}");
    let small = (model(1.0).head.0,);
    let p2 = tmp("small.safetensors");
    checkpoint::save(&p2, &small, None).unwrap();
    let mut bigger = model(1.0);
    bigger.layers.clear();
    let msg = checkpoint::load(&p2, &bigger, None).unwrap_err().to_string();
    assert!(msg.contains("no tensor \"head.0\""), "{msg}");
    // corrupt and truncated files
    let bytes = std::fs::read(&path).unwrap();
    for (name, bad) in
        [("truncated", bytes[..bytes.len() / 2].to_vec()), ("garbage", vec![0xff; 64]), ("empty", vec![])]
    {
        let p = tmp(&format!("{name}.safetensors"));
        std::fs::write(&p, &bad).unwrap();
        let err = checkpoint::load(&p, &model(0.0), None).unwrap_err();
        assert!(
            matches!(err, Error::Format(_)) && err.to_string().contains("not a valid safetensors"),
            "{name}: {err}"
        );
    }
    // optimizer state asked of a checkpoint that has none
    let mut opt = Optimizer::adam(0.1);
    let msg = checkpoint::load(&path, &model(0.0), Some(&mut opt)).unwrap_err().to_string();
    assert!(msg.contains("no optimizer state"), "{msg}");
}

#[test]
fn a_failed_write_leaves_the_previous_checkpoint() {
    let path = tmp("atomic.safetensors");
    checkpoint::save(&path, &model(1.0), None).unwrap();
    let before = std::fs::read(&path).unwrap();
    // after a save to `path` failed, `path` still holds the previous
    // checkpoint, byte for byte and loadable with its values, and nothing
    // else is left in its folder
    let intact = |what: &str| {
        let now = std::fs::read(&path).unwrap_or_else(|e| panic!("{what}: the previous checkpoint is gone: {e}"));
        assert!(now == before, "{what}: the previous checkpoint changed ({} bytes, were {})", now.len(), before.len());
        let back = checkpoint::load(&path, &model(0.0), None).unwrap();
        for ((name, a), (_, b)) in model(1.0).named_tensors().iter().zip(back.named_tensors()) {
            assert_eq!(download_any(a), download_any(b), "{what}: {name}");
        }
        let others: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name())
            .filter(|n| n.as_os_str() != path.file_name().unwrap())
            .collect();
        assert!(others.is_empty(), "{what}: left behind {others:?}");
    };
    // the new checkpoint cannot be made: optimizer state for other parameters
    let mut opt = Optimizer::adam(0.1);
    opt.init(&(Tensor::zeros(dev(), &[1]),));
    let err = checkpoint::save(&path, &model(2.0), Some(&opt)).unwrap_err().to_string();
    assert!(err.contains("optimizer"), "{err}");
    intact("a checkpoint that cannot be made");
    // the disk fills up while the new checkpoint is written: its temporary
    // file (`.<name>.<pid>.tmp` beside it) leads to /dev/full, where every
    // write fails
    #[cfg(target_os = "linux")]
    {
        let name = path.file_name().unwrap().to_string_lossy();
        let temporary = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
        std::os::unix::fs::symlink("/dev/full", &temporary).unwrap();
        let err = checkpoint::save(&path, &model(2.0), None)
            .expect_err("a save whose temporary file is on a full disk fails")
            .to_string();
        assert!(err.contains("atomic.safetensors"), "{err}");
        intact("a write to a full disk");
    }
    // and a later save replaces it
    checkpoint::save(&path, &model(2.0), None).unwrap();
    let back = checkpoint::load(&path, &model(0.0), None).unwrap();
    assert_eq!(download_any(&back.head.1), vec![16.0]);
}
