//! What the character-level examples (`gpt`, `lstm`) share: the text and its
//! split, options, batches of windows, the bigram baseline, evaluation in
//! nats per character, sampling and the closing line.

use std::path::{Path, PathBuf};

use wgrad::optim::{Optimizer, Schedule};
use wgrad::{Device, Tensor, nn};

use super::{Result, command_line};

/// Options of a character-level example.
pub struct TextArgs {
    /// The text file (default: the shipped Shakespeare tragedies).
    pub data: PathBuf,
    pub steps: usize,
    pub batch: usize,
    pub lr: f32,
    pub seed: u64,
    /// Characters of sample text to print at the end.
    pub sample: usize,
    /// A short run that asserts its headline figure (exit status 1 if not met).
    pub quick: bool,
}

/// Parses the command line of a character-level example over its defaults
/// for a full run (`steps`) and for `--quick` (`quick_steps`).
pub fn args(name: &str, about: &str, steps: usize, quick_steps: usize, batch: usize, lr: f32) -> TextArgs {
    let options = [
        "--data FILE    a text file (default data/shakespeare/tragedies.txt)".to_string(),
        format!("--steps N      training steps, at least 1 (default {steps}; {quick_steps} with --quick)"),
        format!("--batch N      windows per step, at least 1 (default {batch})"),
        format!("--lr X         Adam's learning rate, positive (default {lr})"),
        "--seed N       seed of initialisation and batches (default 1)".to_string(),
        "--sample N     characters of sample text to print (default 300)".to_string(),
        "--quick        a short run that asserts validation loss below the bigram's".to_string(),
    ];
    let count = |n: &usize| *n >= 1;
    command_line(name, about, &options, |p| {
        let quick = p.flag("--quick");
        Ok(TextArgs {
            data: p
                .value("--data", "a file", |p: &PathBuf| !p.as_os_str().is_empty())?
                .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("data/shakespeare/tragedies.txt")),
            steps: p.value("--steps", "a whole number of at least 1", count)?.unwrap_or(if quick {
                quick_steps
            } else {
                steps
            }),
            batch: p.value("--batch", "a whole number of at least 1", count)?.unwrap_or(batch),
            lr: p.value("--lr", "a positive number", |x: &f32| x.is_finite() && *x > 0.0)?.unwrap_or(lr),
            seed: p.value("--seed", "a whole number", |_| true)?.unwrap_or(1),
            sample: p.value("--sample", "a whole number", |_| true)?.unwrap_or(300),
            quick,
        })
    })
}

/// A text as character ids: the vocabulary is the characters it contains,
/// sorted; the first 90 % is the training split, the rest the validation
/// split (contiguous, so no sentence is in both).
pub struct Text {
    pub chars: Vec<char>,
    pub train: Vec<u32>,
    pub val: Vec<u32>,
}

impl Text {
    pub fn load(path: &Path) -> Result<Text> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let mut chars: Vec<char> = text.chars().collect();
        chars.sort_unstable();
        chars.dedup();
        let ids: Vec<u32> = text.chars().map(|c| chars.binary_search(&c).expect("in the vocabulary") as u32).collect();
        let cut = ids.len() * 9 / 10;
        let (train, val) = (ids[..cut].to_vec(), ids[cut..].to_vec());
        println!(
            "data: {} characters ({} distinct) from {}: {} training, {} validation",
            ids.len(),
            chars.len(),
            path.display(),
            train.len(),
            val.len()
        );
        Ok(Text { chars, train, val })
    }

    pub fn vocab(&self) -> usize {
        self.chars.len()
    }

    pub fn decode(&self, ids: &[u32]) -> String {
        ids.iter().map(|&i| self.chars[i as usize]).collect()
    }
}

/// splitmix64: a small seeded generator for batch offsets and sampling.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.uniform() * n as f64) as usize
    }
}

/// `batch` random window starts in a split of `len` characters, for windows
/// of `t` inputs and their `t` next characters.
pub fn random_starts(rng: &mut Rng, len: usize, t: usize, batch: usize) -> Vec<usize> {
    (0..batch).map(|_| rng.below(len - t)).collect()
}

/// `windows` evenly spaced window starts in a split (the same every run, so
/// the validation figures compare across runs and models).
pub fn spaced_starts(len: usize, t: usize, windows: usize) -> Vec<usize> {
    let room = len - t - 1;
    (0..windows).map(|i| i * room / windows.max(1)).collect()
}

/// Inputs `split[s..s+t]` and targets `split[s+1..s+t+1]` for each start, as
/// u32 tensors [B, t].
pub fn batch(dev: &Device, split: &[u32], starts: &[usize], t: usize) -> (Tensor, Tensor) {
    let x: Vec<u32> = starts.iter().flat_map(|&s| split[s..s + t].iter().copied()).collect();
    let y: Vec<u32> = starts.iter().flat_map(|&s| split[s + 1..s + t + 1].iter().copied()).collect();
    let shape = [starts.len(), t];
    (Tensor::from_slice(dev, &x, &shape), Tensor::from_slice(dev, &y, &shape))
}

/// The bigram model counted exactly from the training split, with add-one
/// (Laplace) smoothing: P(b | a) = (count(a b) + 1) / (count(a) + V). Returns
/// its mean loss in nats per character on the same targets the models are
/// scored on (each target predicted from the character before it).
pub fn bigram_loss(text: &Text, split: &[u32], starts: &[usize], t: usize) -> f64 {
    let v = text.vocab();
    let mut pairs = vec![0u64; v * v];
    let mut firsts = vec![0u64; v];
    for w in text.train.windows(2) {
        pairs[w[0] as usize * v + w[1] as usize] += 1;
        firsts[w[0] as usize] += 1;
    }
    let mut nats = 0.0;
    for &s in starts {
        for i in s..s + t {
            let (a, b) = (split[i] as usize, split[i + 1] as usize);
            nats -= ((pairs[a * v + b] + 1) as f64 / (firsts[a] + v as u64) as f64).ln();
        }
    }
    nats / (starts.len() * t) as f64
}

/// Mean cross-entropy in nats per character of `logits` ([B, t, V] for
/// inputs [B, t]) over the windows at `starts`, in batches of `batch`; summed
/// on the GPU and read back once.
pub fn evaluate(
    dev: &Device,
    split: &[u32],
    starts: &[usize],
    t: usize,
    batch_size: usize,
    logits: impl Fn(&Tensor) -> Tensor,
) -> wgrad::Result<f32> {
    let mut total = Tensor::zeros(dev, &[]);
    for chunk in starts.chunks(batch_size) {
        let (x, y) = batch(dev, split, chunk, t);
        let l = logits(&x);
        let v = l.dim(-1);
        total = total
            + nn::cross_entropy(&l.reshape(&[chunk.len() * t, v]), &y.reshape(&[chunk.len() * t]), nn::Reduction::Sum);
    }
    Ok(total.item::<f32>()? / (starts.len() * t) as f32)
}

/// Draws a character from `logits` (one row, host side) at `temperature`.
pub fn draw(rng: &mut Rng, logits: &[f32], temperature: f32) -> u32 {
    let top = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let weights: Vec<f64> = logits.iter().map(|&l| (((l - top) / temperature) as f64).exp()).collect();
    let mut u = rng.uniform() * weights.iter().sum::<f64>();
    for (i, w) in weights.iter().enumerate() {
        if u < *w {
            return i as u32;
        }
        u -= w;
    }
    (weights.len() - 1) as u32
}

/// Prints the closing line and, in a quick run, fails unless the model's
/// validation loss is below the bigram's.
pub fn finish(args: &TextArgs, val: f32, bigram: f64) -> Result<()> {
    println!("final validation loss: {val:.3} nats/char (bigram: {bigram:.3})");
    if args.quick && f64::from(val) >= bigram {
        return Err(
            format!("quick check failed: validation loss {val:.3} is not below the bigram's {bigram:.3}").into()
        );
    }
    Ok(())
}

/// Mean cross-entropy of the next characters `y` [B, T] under `logits`
/// [B, T, V], in nats.
pub fn next_char_loss(logits: &Tensor, y: &Tensor) -> Tensor {
    let n = logits.dim(0) * logits.dim(1);
    nn::cross_entropy(&logits.reshape(&[n, logits.dim(2)]), &y.reshape(&[n]), nn::Reduction::Mean)
}

/// The text examples' optimizer: Adam at the rate asked for, decayed by a
/// cosine to a tenth of it over the run, gradients clipped at norm 1.
pub fn optimizer(args: &TextArgs) -> Optimizer {
    let total = args.steps as u64;
    Optimizer::adam(args.lr).schedule(Schedule::Cosine { total, min_lr: args.lr / 10.0 }).clip_grad_norm(1.0)
}
