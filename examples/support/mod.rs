//! What the MNIST examples share: command-line options, data loading,
//! progress bars, evaluation, the loss-curve plot and image output. The
//! models and training loops are in each example.
#![allow(dead_code)]

pub mod gpt;
pub mod parallel;
pub mod text;

use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use plotters::prelude::*;
use wgrad::data::{Mnist, Split};
use wgrad::{DType, Device, Tensor};

/// What an example's body returns: any error, reported in its Display form.
pub type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Runs an example's body: an error is printed as `error: …` on stderr and
/// the process exits with status 1. (Usage errors exit earlier, with status
/// 2: see [`command_line`].)
pub fn main(body: impl FnOnce() -> Result<()>) -> ExitCode {
    match body() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The options on an example's command line, taken one by one.
pub struct Options(pico_args::Arguments);

impl Options {
    /// The value of `KEY VALUE`, if given: `what` describes what the option
    /// takes, `valid` says which values it accepts.
    pub fn value<T: FromStr>(
        &mut self,
        key: &'static str,
        what: &str,
        valid: impl Fn(&T) -> bool,
    ) -> std::result::Result<Option<T>, String> {
        let missing = || format!("{key} needs a value: {what}");
        let raw = self.0.opt_value_from_os_str(key, |s| Ok::<_, String>(s.to_os_string())).map_err(|_| missing())?;
        let Some(raw) = raw else { return Ok(None) };
        let text = raw.to_string_lossy();
        if text.starts_with("--") {
            return Err(missing());
        }
        match raw.to_str().and_then(|s| s.parse::<T>().ok()) {
            Some(v) if valid(&v) => Ok(Some(v)),
            _ => Err(format!("{key} takes {what}, not '{text}'")),
        }
    }

    /// Whether the flag `key` is given.
    pub fn flag(&mut self, key: &'static str) -> bool {
        self.0.contains(key)
    }
}

/// Reads an example's command line. `-h`/`--help` prints `about`, the usage
/// and the `options` (one line each) and exits with status 0; `read` takes
/// the options the example knows. A wrong value or an argument left over is
/// a usage error: one line on stderr, exit status 2.
pub fn command_line<T>(
    name: &str,
    about: &str,
    options: &[String],
    read: impl FnOnce(&mut Options) -> std::result::Result<T, String>,
) -> T {
    let mut opts = Options(pico_args::Arguments::from_env());
    if opts.0.contains(["-h", "--help"]) {
        println!("{about}\n");
        println!("usage: cargo run --release --example {name} -- [options]\n");
        for line in options {
            println!("  {line}");
        }
        println!("  -h, --help     print this help");
        std::process::exit(0);
    }
    let parsed = read(&mut opts).and_then(|value| {
        let rest: Vec<String> = opts.0.finish().iter().map(|a| a.to_string_lossy().into_owned()).collect();
        match rest.len() {
            0 => Ok(value),
            1 => Err(format!("unexpected argument {}", rest[0])),
            _ => Err(format!("unexpected arguments {}", rest.join(" "))),
        }
    });
    parsed.unwrap_or_else(|message| {
        eprintln!("error: {message} (see --help)");
        std::process::exit(2)
    })
}

/// Options every MNIST example accepts.
pub struct Args {
    /// Folder with the four MNIST IDX files (plain or .gz).
    pub data: PathBuf,
    pub epochs: usize,
    pub batch: usize,
    pub lr: f32,
    pub seed: u64,
    /// A checkpoint to start from.
    pub resume: Option<PathBuf>,
    /// Where the plot, images and trained model go.
    pub out: PathBuf,
    /// Run the training step op by op instead of compiled (same results).
    pub eager: bool,
    /// A short run (one epoch unless `--epochs` says otherwise) that checks
    /// the example's headline figure: see [`check`].
    pub quick: bool,
    /// Data-parallel replicas in this process, one device each (examples
    /// parsed with [`parallel_args`]; otherwise 1).
    pub devices: usize,
    /// Data parallelism across the processes `mpirun` started (feature `mpi`).
    pub data_parallel: bool,
}

/// Parses the command line of an MNIST example (`--help` lists the options)
/// over the example's defaults, and makes sure the output folder can be
/// written before any training.
pub fn args(name: &str, about: &str, epochs: usize, batch: usize, lr: f32) -> Result<Args> {
    parse(name, about, epochs, batch, lr, false)
}

/// [`args`], with the data-parallel options `--devices N` and `--data-parallel`.
pub fn parallel_args(name: &str, about: &str, epochs: usize, batch: usize, lr: f32) -> Result<Args> {
    parse(name, about, epochs, batch, lr, true)
}

fn parse(name: &str, about: &str, epochs: usize, batch: usize, lr: f32, parallel: bool) -> Result<Args> {
    let mut options = vec![
        "--data DIR     MNIST IDX files (default: data/mnist, the shipped 8k/2k digits;".to_string(),
        "               the official 60k/10k files work too)".to_string(),
        format!("--epochs N     passes over the training set, at least 1 (default {epochs})"),
        format!("--batch N      batch size, at least 1 (default {batch})"),
        format!("--lr X         learning rate, positive (default {lr})"),
        "--seed N       seed of initialisation and shuffling (default 1)".to_string(),
        "--resume FILE  continue from a checkpoint saved by a previous run".to_string(),
        "--out DIR      where the loss curve, images and model go (default out)".to_string(),
        "--eager        run each step op by op instead of compiled (same numbers, slower)".to_string(),
        "--quick        one epoch (unless --epochs is given), then check the headline figure".to_string(),
    ];
    if parallel {
        options.push("--devices N    data-parallel replicas in this process, one device each (default 1)".to_string());
        options
            .push("--data-parallel  one replica per process started by mpirun (build with --features mpi)".to_string());
    }
    let path = |p: &PathBuf| !p.as_os_str().is_empty();
    let count = |n: &usize| *n >= 1;
    let args = command_line(name, about, &options, |p| {
        let quick = p.flag("--quick");
        let epochs = if quick { 1 } else { epochs };
        Ok(Args {
            data: p
                .value("--data", "a folder", path)?
                .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist")),
            epochs: p.value("--epochs", "a whole number of at least 1", count)?.unwrap_or(epochs),
            batch: p.value("--batch", "a whole number of at least 1", count)?.unwrap_or(batch),
            lr: p.value("--lr", "a positive number", |x: &f32| x.is_finite() && *x > 0.0)?.unwrap_or(lr),
            seed: p.value("--seed", "a whole number", |_| true)?.unwrap_or(1),
            resume: p.value("--resume", "a checkpoint file", path)?,
            out: p.value("--out", "a folder", path)?.unwrap_or_else(|| PathBuf::from("out")),
            eager: p.flag("--eager"),
            quick,
            devices: match parallel {
                true => p.value("--devices", "a whole number of at least 1", count)?.unwrap_or(1),
                false => 1,
            },
            data_parallel: parallel && p.flag("--data-parallel"),
        })
    });
    writable_folder(&args.out)?;
    Ok(args)
}

/// In a `--quick` run, fails (exit status 1) unless `ok`, the example's
/// headline figure `what` having met its bar.
pub fn check(quick: bool, what: &str, ok: bool) -> Result<()> {
    if quick {
        if !ok {
            return Err(format!("quick check failed: {what}").into());
        }
        println!("quick check passed: {what}");
    }
    Ok(())
}

/// Turns an error about `path` into one that names it.
fn about_file<E: Display>(what: &str, path: &Path) -> impl Fn(E) -> String {
    let what = format!("{what} {}", path.display());
    move |e| format!("{what}: {e}")
}

/// Creates `dir` if need be and checks that files can be written in it.
fn writable_folder(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(about_file("cannot create the output folder", dir))?;
    let probe = dir.join(format!(".write-test-{}", std::process::id()));
    let fail = about_file("cannot write in the output folder", dir);
    std::fs::File::create(&probe).map_err(&fail)?;
    std::fs::remove_file(&probe).map_err(&fail)?;
    Ok(())
}

/// Opens the GPU and says which one it is.
pub fn device(seed: u64) -> wgrad::Result<Device> {
    let dev = Device::new()?;
    let info = dev.adapter_info();
    println!("device: {} ({:?}, {})", info.name, info.backend, info.driver_info);
    dev.manual_seed(seed);
    Ok(dev)
}

pub fn mnist(args: &Args) -> wgrad::Result<Mnist> {
    let m = Mnist::load(&args.data)?;
    println!("data: {} training and {} test digits from {}", m.train.len(), m.test.len(), args.data.display());
    Ok(m)
}

pub fn progress(epoch: usize, epochs: usize, steps: usize) -> ProgressBar {
    let bar = ProgressBar::new(steps as u64);
    bar.set_style(
        ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {per_sec} {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(format!("{}/{epochs}", epoch + 1));
    bar
}

/// Fraction of `split` classified correctly by `logits` (batches of 500);
/// counts are summed on the GPU and read back once.
pub fn accuracy(dev: &Device, split: &Split, logits: impl Fn(&Tensor) -> Tensor) -> wgrad::Result<f32> {
    let mut correct = Tensor::zeros(dev, &[]);
    for batch in split.batches(500, 0) {
        let (x, y) = split.batch(dev, &batch);
        let hits = logits(&x).argmax(-1, false).eq(&y).cast(DType::F32).sum_all();
        correct = correct + hits;
    }
    Ok(correct.item::<f32>()? / split.len() as f32)
}

/// The running record of a training run: loss samples along the way,
/// test accuracy per epoch.
pub struct History {
    /// (epoch, mean loss since the last sample), epochs counted fractionally.
    pub loss: Vec<(f32, f32)>,
    pub test_accuracy: Vec<f32>,
    start: Instant,
}

impl History {
    pub fn new() -> History {
        History { loss: Vec::new(), test_accuracy: Vec::new(), start: Instant::now() }
    }

    /// Records a loss sample at (fractional) epoch `at`.
    pub fn loss(&mut self, at: f32, loss: f32) {
        self.loss.push((at, loss));
    }

    /// Prints the end of an epoch: the mean training loss and the test
    /// accuracy (or another metric) if measured.
    pub fn epoch(&mut self, epoch: usize, loss: f32, accuracy: Option<f32>) {
        let acc = match accuracy {
            Some(a) => {
                self.test_accuracy.push(a);
                format!(", test accuracy {:.2}%", 100.0 * a)
            }
            None => String::new(),
        };
        println!("epoch {}: train loss {loss:.4}{acc} ({:.1} s)", epoch + 1, self.start.elapsed().as_secs_f32());
    }

    /// Prints the last test accuracy measured, if any was.
    pub fn final_accuracy(&self) {
        if let Some(a) = self.test_accuracy.last() {
            println!("final test accuracy: {:.2}%", 100.0 * a);
        }
    }

    pub fn seconds(&self) -> f32 {
        self.start.elapsed().as_secs_f32()
    }

    /// Writes the loss curve (and the test accuracy, if any) as an SVG chart.
    pub fn plot(&self, path: &Path, title: &str) -> Result<()> {
        let fail = about_file("cannot write the loss curve", path);
        let root = SVGBackend::new(path, (720, 420)).into_drawing_area();
        root.fill(&WHITE).map_err(&fail)?;
        let end = self.loss.last().map_or(1.0, |l| l.0).max(1.0);
        let top = self.loss.iter().map(|l| l.1).fold(0.0f32, f32::max) * 1.1;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .right_y_label_area_size(if self.test_accuracy.is_empty() { 0 } else { 56 })
            .build_cartesian_2d(0f32..end, 0f32..top.max(1e-3))
            .map_err(&fail)?
            .set_secondary_coord(0f32..end, 0f32..100f32);
        chart.configure_mesh().x_desc("epoch").y_desc("train loss").draw().map_err(&fail)?;
        chart
            .draw_series(LineSeries::new(self.loss.iter().copied(), BLUE.stroke_width(2)))
            .map_err(&fail)?
            .label("train loss")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BLUE.stroke_width(2)));
        if !self.test_accuracy.is_empty() {
            chart.configure_secondary_axes().y_desc("test accuracy (%)").draw().map_err(&fail)?;
            chart
                .draw_secondary_series(LineSeries::new(
                    self.test_accuracy.iter().enumerate().map(|(i, &a)| (i as f32 + 1.0, 100.0 * a)),
                    RED.stroke_width(2),
                ))
                .map_err(&fail)?
                .label("test accuracy")
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], RED.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::MiddleRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(&fail)?;
        root.present().map_err(&fail)?;
        println!("loss curve: {}", path.display());
        Ok(())
    }
}

/// Runs a training step compiled (traced once, replayed with one submission)
/// or, with `--eager`, op by op.
pub fn step<S: wgrad::Params, I: wgrad::Params, F: FnMut(&mut S, &I) -> Tensor>(
    args: &Args,
    compiled: &mut wgrad::Compiled<S, I, Tensor, F>,
    state: &mut S,
    inputs: &I,
) -> wgrad::Result<Tensor> {
    if args.eager { Ok(compiled.run_eager(state, inputs)) } else { compiled.run(state, inputs).cloned() }
}

/// One epoch of minibatch training: calls `step` on every batch of the
/// shuffled training split (images [B, 784], labels [B]); `step` records the
/// update and returns the batch loss (or the error that stopped it). Reads the loss back every 20 steps (for
/// the progress bar and the curve), otherwise the GPU runs ahead. Returns the
/// epoch's mean loss.
pub fn train_epoch(
    dev: &Device,
    split: &Split,
    args: &Args,
    epoch: usize,
    history: &mut History,
    mut step: impl FnMut(Tensor, Tensor) -> wgrad::Result<Tensor>,
) -> wgrad::Result<f32> {
    let batches = split.batches(args.batch, args.seed.wrapping_mul(1000) + epoch as u64);
    let bar = progress(epoch, args.epochs, batches.len());
    let (mut total, mut window) = (0.0f32, Tensor::zeros(dev, &[]));
    let mut since = 0;
    for (i, idx) in batches.iter().enumerate() {
        let (x, y) = split.batch(dev, idx);
        window = window + step(x, y)?;
        since += 1;
        bar.inc(1);
        if i % 20 == 19 || i + 1 == batches.len() {
            let sum = window.item::<f32>()?;
            total += sum;
            history.loss(epoch as f32 + (i + 1) as f32 / batches.len() as f32, sum / since as f32);
            bar.set_message(format!("loss {:.4}", sum / since as f32));
            (window, since) = (Tensor::zeros(dev, &[]), 0);
        }
    }
    bar.finish_and_clear();
    Ok(total / batches.len() as f32)
}

/// Writes 20 test digits `x` and their reconstructions `y` ([20, 784] each,
/// values in [0, 1]) as a PNG: 2 rows of 10 digits, each above its
/// reconstruction.
pub fn save_reconstructions(path: &Path, x: &Tensor, y: &Tensor) -> Result<()> {
    let (x, y): (Vec<f32>, Vec<f32>) = (x.to_vec()?, y.to_vec()?);
    let mut grid = Vec::with_capacity(40 * 784);
    for half in 0..2 {
        let rows = half * 10 * 784..(half + 1) * 10 * 784;
        grid.extend_from_slice(&x[rows.clone()]);
        grid.extend_from_slice(&y[rows]);
    }
    save_grid(path, &grid, (4, 10), 28, 28)
}

/// Writes grey images (values in [0, 1], `rows`×`cols` tiles of h×w) as a PNG.
pub fn save_grid(path: &Path, pixels: &[f32], tiles: (usize, usize), h: usize, w: usize) -> Result<()> {
    let (rows, cols) = tiles;
    let (width, height) = (cols * (w + 2), rows * (h + 2));
    let mut img = vec![255u8; width * height];
    for r in 0..rows {
        for c in 0..cols {
            let tile = r * cols + c;
            for y in 0..h {
                for x in 0..w {
                    let v = pixels[(tile * h + y) * w + x].clamp(0.0, 1.0);
                    img[(r * (h + 2) + 1 + y) * width + c * (w + 2) + 1 + x] = 255 - (v * 255.0) as u8;
                }
            }
        }
    }
    let file = std::fs::File::create(path).map_err(about_file("cannot create the image", path))?;
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), width as u32, height as u32);
    enc.set_color(png::ColorType::Grayscale);
    let fail = about_file("cannot write the image", path);
    let mut writer = enc.write_header().map_err(&fail)?;
    writer.write_image_data(&img).map_err(&fail)?;
    writer.finish().map_err(&fail)?;
    println!("image: {}", path.display());
    Ok(())
}
