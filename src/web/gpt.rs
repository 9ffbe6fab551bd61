//! The demo's character GPT: the model of `examples/gpt.rs` (pre-norm blocks
//! of causal multi-head attention and a GELU MLP, output tied to the token
//! embedding), made smaller so that software WebGPU trains it visibly, and
//! exported as `TextDemo`. The example's definition is not shared: its sizes
//! are constants of a binary, and the library has no place for model zoos.

use std::cell::RefCell;
use std::rc::Rc;

use js_sys::Promise;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

use super::js::{adapter_json, js_err};
use super::newton::Newton;
use crate::nn::{self, AttnMask};
use crate::optim::Optimizer;
use crate::{Compiled, Device, Params, Tensor, compile, grad};

/// Characters the model sees at once.
const CONTEXT: usize = 32;
const WIDTH: usize = 48;
const HEADS: usize = 4;
const LAYERS: usize = 2;
/// Windows per training step.
const BATCH: usize = 16;

/// One pre-norm transformer block; linear weights are [out, in].
#[derive(Params)]
struct Block {
    norm1_w: Tensor,
    norm1_b: Tensor,
    qkv: Tensor,
    proj: Tensor,
    norm2_w: Tensor,
    norm2_b: Tensor,
    up: Tensor,
    up_b: Tensor,
    down: Tensor,
    down_b: Tensor,
}

#[derive(Params)]
struct Gpt {
    /// [V, WIDTH], also the output layer (tied weights).
    token: Tensor,
    /// [CONTEXT, WIDTH], learned.
    position: Tensor,
    blocks: Vec<Block>,
    norm_w: Tensor,
    norm_b: Tensor,
}

impl Gpt {
    fn new(dev: &Device, vocab: usize) -> Gpt {
        // residual branches scaled down by √(2·LAYERS), as in the example
        let residual = 1.0 / (2.0 * LAYERS as f32).sqrt();
        let block = || Block {
            norm1_w: Tensor::ones(dev, &[WIDTH]),
            norm1_b: Tensor::zeros(dev, &[WIDTH]),
            qkv: nn::init::xavier_uniform(dev, &[3 * WIDTH, WIDTH], 1.0),
            proj: nn::init::xavier_uniform(dev, &[WIDTH, WIDTH], 1.0) * residual,
            norm2_w: Tensor::ones(dev, &[WIDTH]),
            norm2_b: Tensor::zeros(dev, &[WIDTH]),
            up: nn::init::xavier_uniform(dev, &[4 * WIDTH, WIDTH], 1.0),
            up_b: Tensor::zeros(dev, &[4 * WIDTH]),
            down: nn::init::xavier_uniform(dev, &[WIDTH, 4 * WIDTH], 1.0) * residual,
            down_b: Tensor::zeros(dev, &[WIDTH]),
        };
        Gpt {
            token: Tensor::randn(dev, &[vocab, WIDTH]) * 0.1,
            position: Tensor::randn(dev, &[CONTEXT, WIDTH]) * 0.1,
            blocks: (0..LAYERS).map(|_| block()).collect(),
            norm_w: Tensor::ones(dev, &[WIDTH]),
            norm_b: Tensor::zeros(dev, &[WIDTH]),
        }
    }

    /// Logits [B, T, V] of the next character after each of `ids` [B, T].
    fn logits(&self, ids: &Tensor) -> Tensor {
        let t = ids.dim(1);
        let mut h = nn::embedding(ids, &self.token) + self.position.narrow(0, 0, t);
        for b in &self.blocks {
            h = b.forward(&h);
        }
        nn::layer_norm(&h, 1, Some(&self.norm_w), Some(&self.norm_b), 1e-5).matmul(&self.token.t())
    }
}

impl Block {
    /// x + attention(norm(x)), then x + mlp(norm(x)), for x [B, T, WIDTH].
    fn forward(&self, x: &Tensor) -> Tensor {
        let (batch, t) = (x.dim(0), x.dim(1));
        let heads = |z: &Tensor| z.reshape(&[batch, t, HEADS, WIDTH / HEADS]).permute(&[0, 2, 1, 3]);
        let h = nn::layer_norm(x, 1, Some(&self.norm1_w), Some(&self.norm1_b), 1e-5);
        let qkv = nn::linear(&h, &self.qkv, None).chunk(3, -1);
        let y = nn::scaled_dot_product_attention(
            &heads(&qkv[0]),
            &heads(&qkv[1]),
            &heads(&qkv[2]),
            AttnMask::Causal,
            0.0,
            false,
        );
        let x = x + &nn::linear(&y.permute(&[0, 2, 1, 3]).reshape(&[batch, t, WIDTH]), &self.proj, None);
        let h = nn::layer_norm(&x, 1, Some(&self.norm2_w), Some(&self.norm2_b), 1e-5);
        &x + &nn::linear(&nn::linear(&h, &self.up, Some(&self.up_b)).gelu(), &self.down, Some(&self.down_b))
    }
}

/// Inputs [B, T] and their next characters [B, T].
type Batch = (Tensor, Tensor);
type Step = Compiled<(Gpt, Optimizer), Batch, Tensor, fn(&mut (Gpt, Optimizer), &Batch) -> Tensor>;

/// Mean cross-entropy of the next characters, in nats per character.
fn loss(m: &Gpt, (x, y): &Batch) -> Tensor {
    let l = m.logits(x);
    let n = l.dim(0) * l.dim(1);
    nn::cross_entropy(&l.reshape(&[n, l.dim(2)]), &y.reshape(&[n]), nn::Reduction::Mean)
}

fn train_step((m, opt): &mut (Gpt, Optimizer), batch: &Batch) -> Tensor {
    let (g, l, ()) = grad(loss)(m, batch);
    *m = opt.step(m, &g);
    l
}

/// splitmix64, for window starts and sampling (seeded: runs repeat).
struct Rng(u64);

impl Rng {
    fn uniform(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn below(&mut self, n: usize) -> usize {
        (self.uniform() * n as f64) as usize
    }
}

struct State {
    dev: Device,
    /// The vocabulary: the text's distinct characters, sorted.
    chars: Vec<char>,
    /// The first 90 % of the text, as ids; the rest seeds the samples.
    train: Vec<u32>,
    prompt: Vec<u32>,
    model: (Gpt, Optimizer),
    step: Step,
    rng: Rng,
    steps: u64,
}

/// The text demo: a small character GPT trained on the page's GPU.
#[wasm_bindgen]
pub struct TextDemo {
    state: Rc<RefCell<State>>,
}

#[wasm_bindgen]
impl TextDemo {
    /// Opens WebGPU and takes `text` (at least a few hundred characters) as
    /// the training text. Resolves to a TextDemo.
    pub fn create(text: String) -> Promise {
        future_to_promise(async move {
            let mut chars: Vec<char> = text.chars().collect();
            chars.sort_unstable();
            chars.dedup();
            let ids: Vec<u32> = text.chars().filter_map(|c| chars.binary_search(&c).ok()).map(|i| i as u32).collect();
            if ids.len() < 10 * (CONTEXT + 1) {
                return Err(JsError::new(&format!("TextDemo: {} characters of text, too few", ids.len())).into());
            }
            let cut = ids.len() * 9 / 10;
            let dev = Device::new_async().await.map_err(js_err)?;
            dev.manual_seed(1);
            let gpt = Gpt::new(&dev, chars.len());
            let mut opt = Optimizer::adam(1e-2);
            opt.init(&gpt);
            let state = State {
                dev,
                chars,
                prompt: ids[cut..cut + CONTEXT].to_vec(),
                train: ids[..cut].to_vec(),
                model: (gpt, opt),
                step: compile(train_step as fn(&mut (Gpt, Optimizer), &Batch) -> Tensor),
                rng: Rng(1),
                steps: 0,
            };
            Ok(TextDemo { state: Rc::new(RefCell::new(state)) }.into())
        })
    }

    /// The adapter, as JSON (as `Demo.adapter`).
    pub fn adapter(&self) -> String {
        adapter_json(&self.state.borrow().dev)
    }

    /// The model, as one line: layers, heads, width, context, parameters.
    pub fn describe(&self) -> String {
        let s = self.state.borrow();
        let n: usize = s.model.0.tensors().iter().map(|t| t.numel()).sum();
        format!(
            "{LAYERS} blocks, {HEADS} heads, width {WIDTH}, context {CONTEXT}, batch {BATCH}, {} characters, {n} parameters",
            s.chars.len()
        )
    }

    /// Training steps taken so far.
    pub fn steps(&self) -> f64 {
        self.state.borrow().steps as f64
    }

    /// Records `steps` compiled training steps on random windows of the
    /// text, then resolves to their mean loss in nats per character.
    pub fn train(&self, steps: u32) -> Promise {
        let state = self.state.clone();
        future_to_promise(async move {
            let total = {
                let s = &mut *state.borrow_mut();
                let mut total = Tensor::zeros(&s.dev, &[]);
                for _ in 0..steps {
                    let starts: Vec<usize> = (0..BATCH).map(|_| s.rng.below(s.train.len() - CONTEXT - 1)).collect();
                    let window = |off: usize| -> Vec<u32> {
                        starts.iter().flat_map(|&b| s.train[b + off..b + off + CONTEXT].iter().copied()).collect()
                    };
                    let shape = [BATCH, CONTEXT];
                    let batch = (
                        Tensor::from_slice(&s.dev, &window(0), &shape),
                        Tensor::from_slice(&s.dev, &window(1), &shape),
                    );
                    // (the compiled step's loss is overwritten by the next
                    // replay: add it first)
                    let State { step, model, .. } = &mut *s;
                    total = total + step.run(model, &batch).map_err(js_err)?;
                    s.steps += 1;
                }
                total
            };
            let sum: f32 = total.item_async().await.map_err(js_err)?;
            Ok(JsValue::from_f64((sum / steps.max(1) as f32) as f64))
        })
    }

    /// Resolves to `n` characters drawn from the model at `temperature`,
    /// after the first CONTEXT characters of the held-out text (one forward
    /// pass and one read-back per character).
    pub fn sample(&self, n: u32, temperature: f32) -> Promise {
        let state = self.state.clone();
        future_to_promise(async move {
            let mut ids = state.borrow().prompt.clone();
            for _ in 0..n {
                let last = {
                    let s = state.borrow();
                    let x = Tensor::from_slice(&s.dev, &ids[ids.len() - CONTEXT..], &[1, CONTEXT]);
                    s.model.0.logits(&x).narrow(1, CONTEXT - 1, 1)
                };
                let logits: Vec<f32> = last.to_vec_async().await.map_err(js_err)?;
                let top = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let w: Vec<f64> = logits.iter().map(|&l| f64::from((l - top) / temperature).exp()).collect();
                let mut u = state.borrow_mut().rng.uniform() * w.iter().sum::<f64>();
                let pick = w.iter().position(|&wi| {
                    u -= wi;
                    u < 0.0
                });
                ids.push(pick.unwrap_or(w.len() - 1) as u32);
            }
            let s = state.borrow();
            Ok(JsValue::from_str(&ids[CONTEXT..].iter().map(|&i| s.chars[i as usize]).collect::<String>()))
        })
    }

    /// The second-derivative panel, on this demo's device.
    pub fn newton(&self) -> Newton {
        Newton::new(self.state.borrow().dev.clone())
    }
}
