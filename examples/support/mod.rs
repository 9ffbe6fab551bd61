//! What the MNIST examples share: command-line options, data loading,
//! progress bars, evaluation, the loss-curve plot and image output. The
//! models and training loops are in each example.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use plotters::prelude::*;
use wgrad::data::{Mnist, Split};
use wgrad::{DType, Device, Tensor};

/// Options every example accepts.
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
}

/// Parses the command line (`--help` lists the options) over the example's
/// defaults.
pub fn args(name: &str, about: &str, epochs: usize, batch: usize, lr: f32) -> Args {
    let mut p = pico_args::Arguments::from_env();
    if p.contains(["-h", "--help"]) {
        println!("{about}\n");
        println!("usage: cargo run --release --example {name} -- [options]\n");
        println!("  --data DIR     MNIST IDX files (default: data/mnist, the shipped 8k/2k digits;");
        println!("                 the official 60k/10k files work too)");
        println!("  --epochs N     passes over the training set (default {epochs})");
        println!("  --batch N      batch size (default {batch})");
        println!("  --lr X         learning rate (default {lr})");
        println!("  --seed N       seed of initialisation and shuffling (default 1)");
        println!("  --resume FILE  continue from a checkpoint saved by a previous run");
        println!("  --out DIR      where the loss curve, images and model go (default out)");
        println!("  --eager        run each step op by op instead of compiled (same numbers, slower)");
        std::process::exit(0);
    }
    let parsed = (|| -> Result<Args, pico_args::Error> {
        let args = Args {
            data: p
                .opt_value_from_str("--data")?
                .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist")),
            epochs: p.opt_value_from_str("--epochs")?.unwrap_or(epochs),
            batch: p.opt_value_from_str("--batch")?.unwrap_or(batch),
            lr: p.opt_value_from_str("--lr")?.unwrap_or(lr),
            seed: p.opt_value_from_str("--seed")?.unwrap_or(1),
            resume: p.opt_value_from_str("--resume")?,
            out: p.opt_value_from_str("--out")?.unwrap_or_else(|| PathBuf::from("out")),
            eager: p.contains("--eager"),
        };
        let rest = p.finish();
        if !rest.is_empty() {
            return Err(pico_args::Error::ArgumentParsingFailed { cause: format!("unknown arguments {rest:?}") });
        }
        Ok(args)
    })();
    match parsed {
        Ok(a) => {
            std::fs::create_dir_all(&a.out).expect("create the output folder");
            a
        }
        Err(e) => {
            eprintln!("{name}: {e} (see --help)");
            std::process::exit(2);
        }
    }
}

/// Opens the GPU and says which one it is.
pub fn device(seed: u64) -> Device {
    let dev = Device::new().unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(1)
    });
    let info = dev.adapter_info();
    println!("device: {} ({:?}, {})", info.name, info.backend, info.driver_info);
    dev.manual_seed(seed);
    dev
}

pub fn mnist(args: &Args) -> Mnist {
    let m = Mnist::load(&args.data).unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(1)
    });
    println!("data: {} training and {} test digits from {}", m.train.len(), m.test.len(), args.data.display());
    m
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
pub fn accuracy(dev: &Device, split: &Split, logits: impl Fn(&Tensor) -> Tensor) -> f32 {
    let mut correct = Tensor::zeros(dev, &[]);
    for batch in split.batches(500, 0) {
        let (x, y) = split.batch(dev, &batch);
        let hits = logits(&x).argmax(-1, false).eq(&y).cast(DType::F32).sum_all();
        correct = correct + hits;
    }
    correct.item::<f32>().expect("read-back") / split.len() as f32
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

    pub fn seconds(&self) -> f32 {
        self.start.elapsed().as_secs_f32()
    }

    /// Writes the loss curve (and the test accuracy, if any) as an SVG chart.
    pub fn plot(&self, path: &Path, title: &str) {
        let root = SVGBackend::new(path, (720, 420)).into_drawing_area();
        root.fill(&WHITE).expect("draw");
        let end = self.loss.last().map_or(1.0, |l| l.0).max(1.0);
        let top = self.loss.iter().map(|l| l.1).fold(0.0f32, f32::max) * 1.1;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .right_y_label_area_size(if self.test_accuracy.is_empty() { 0 } else { 56 })
            .build_cartesian_2d(0f32..end, 0f32..top.max(1e-3))
            .expect("chart")
            .set_secondary_coord(0f32..end, 0f32..100f32);
        chart.configure_mesh().x_desc("epoch").y_desc("train loss").draw().expect("draw");
        chart
            .draw_series(LineSeries::new(self.loss.iter().copied(), BLUE.stroke_width(2)))
            .expect("draw")
            .label("train loss")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BLUE.stroke_width(2)));
        if !self.test_accuracy.is_empty() {
            chart.configure_secondary_axes().y_desc("test accuracy (%)").draw().expect("draw");
            chart
                .draw_secondary_series(LineSeries::new(
                    self.test_accuracy.iter().enumerate().map(|(i, &a)| (i as f32 + 1.0, 100.0 * a)),
                    RED.stroke_width(2),
                ))
                .expect("draw")
                .label("test accuracy")
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], RED.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::MiddleRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .expect("draw");
        root.present().expect("write the chart");
        println!("loss curve: {}", path.display());
    }
}

/// Runs a training step compiled (traced once, replayed with one submission)
/// or, with `--eager`, op by op.
pub fn step<S: wgrad::Params, I: wgrad::Params, F: FnMut(&mut S, &I) -> Tensor>(
    args: &Args,
    compiled: &mut wgrad::Compiled<S, I, Tensor, F>,
    state: &mut S,
    inputs: &I,
) -> Tensor {
    if args.eager {
        compiled.run_eager(state, inputs)
    } else {
        compiled.run(state, inputs).expect("training step").clone()
    }
}

/// One epoch of minibatch training: calls `step` on every batch of the
/// shuffled training split (images [B, 784], labels [B]); `step` records the
/// update and returns the batch loss. Reads the loss back every 20 steps (for
/// the progress bar and the curve), otherwise the GPU runs ahead. Returns the
/// epoch's mean loss.
pub fn train_epoch(
    dev: &Device,
    split: &Split,
    args: &Args,
    epoch: usize,
    history: &mut History,
    mut step: impl FnMut(Tensor, Tensor) -> Tensor,
) -> f32 {
    let batches = split.batches(args.batch, args.seed.wrapping_mul(1000) + epoch as u64);
    let bar = progress(epoch, args.epochs, batches.len());
    let (mut total, mut window) = (0.0f32, Tensor::zeros(dev, &[]));
    let mut since = 0;
    for (i, idx) in batches.iter().enumerate() {
        let (x, y) = split.batch(dev, idx);
        window = window + step(x, y);
        since += 1;
        bar.inc(1);
        if i % 20 == 19 || i + 1 == batches.len() {
            let sum = window.item::<f32>().expect("read-back");
            total += sum;
            history.loss(epoch as f32 + (i + 1) as f32 / batches.len() as f32, sum / since as f32);
            bar.set_message(format!("loss {:.4}", sum / since as f32));
            (window, since) = (Tensor::zeros(dev, &[]), 0);
        }
    }
    bar.finish_and_clear();
    total / batches.len() as f32
}

/// Writes grey images (values in [0, 1], `rows`×`cols` tiles of h×w) as a PNG.
pub fn save_grid(path: &Path, pixels: &[f32], tiles: (usize, usize), h: usize, w: usize) {
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
    let file = std::fs::File::create(path).expect("create the image");
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), width as u32, height as u32);
    enc.set_color(png::ColorType::Grayscale);
    enc.write_header().expect("png header").write_image_data(&img).expect("png data");
    println!("image: {}", path.display());
}
