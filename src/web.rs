//! The browser demo's exports (wasm-bindgen). The models are trained with the
//! same `grad`, `nn` and `optim` code as natively; only the entry points are
//! here. Every method returns a promise: read-backs are awaited, never
//! blocked on.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use js_sys::Promise;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

mod gpt;
mod js;
mod newton;

use js::{adapter_json, js_err};
use newton::Newton;

use crate::data::Mnist;
use crate::nn::{self, ConvOptions, Reduction};
use crate::optim::Optimizer;
use crate::{Compiled, Device, GradcheckOptions, GradcheckReport, Params, Tensor, compile, grad, gradcheck_async};

#[derive(Params)]
struct Mlp {
    w1: Tensor,
    b1: Tensor,
    w2: Tensor,
    b2: Tensor,
}

#[derive(Params)]
struct Cnn {
    conv1: Tensor,
    b1: Tensor,
    conv2: Tensor,
    b2: Tensor,
    w: Tensor,
    b: Tensor,
}

/// A batch: images [B, 784] and labels [B].
type Batch = (Tensor, Tensor);

/// A compiled training step (forward, backward, Adam) over parameters `P`.
type Step<P> = Compiled<(P, Optimizer), Batch, Tensor, fn(&mut (P, Optimizer), &Batch) -> Tensor>;

/// A model, its optimizer (together, the step's state) and its step.
enum Model {
    Mlp((Mlp, Optimizer), Step<Mlp>),
    Cnn((Cnn, Optimizer), Step<Cnn>),
}

/// A model of the demo: class scores [B, 10] of images [B, 784].
trait Classifier: Params {
    fn logits(&self, x: &Tensor) -> Tensor;
}

impl Classifier for Mlp {
    fn logits(&self, x: &Tensor) -> Tensor {
        let h = nn::linear(x, &self.w1, Some(&self.b1)).tanh();
        nn::linear(&h, &self.w2, Some(&self.b2))
    }
}

impl Classifier for Cnn {
    fn logits(&self, x: &Tensor) -> Tensor {
        let same = ConvOptions::default().padding(2);
        let x = x.reshape(&[x.dim(0), 1, 28, 28]);
        let h = nn::max_pool2d(&nn::conv2d(&x, &self.conv1, Some(&self.b1), same).tanh(), 2, 2, 0);
        let h = nn::max_pool2d(&nn::conv2d(&h, &self.conv2, Some(&self.b2), same).tanh(), 2, 2, 0);
        nn::linear(&h.flatten(1, -1), &self.w, Some(&self.b))
    }
}

/// One training step: cross-entropy, its gradient, an Adam update.
fn train_step<P: Classifier>((p, opt): &mut (P, Optimizer), batch: &Batch) -> Tensor {
    let f = |p: &P, (x, y): &Batch| nn::cross_entropy(&p.logits(x), y, Reduction::Mean);
    let (g, loss, ()) = grad(f)(p, batch);
    *p = opt.step(p, &g);
    loss
}

/// Fresh Adam state for `p`, and the compiled training step.
fn trainer<P: Classifier>(p: P) -> ((P, Optimizer), Step<P>) {
    let mut opt = Optimizer::adam(1e-3);
    opt.init(&p);
    ((p, opt), compile(train_step::<P> as fn(&mut (P, Optimizer), &Batch) -> Tensor))
}

impl Model {
    fn new(dev: &Device, kind: &str) -> Result<Model, JsError> {
        Ok(match kind {
            "mlp" => {
                let (state, step) = trainer(Mlp {
                    w1: nn::init::xavier_uniform(dev, &[256, 784], 1.0),
                    b1: Tensor::zeros(dev, &[256]),
                    w2: nn::init::xavier_uniform(dev, &[10, 256], 1.0),
                    b2: Tensor::zeros(dev, &[10]),
                });
                Model::Mlp(state, step)
            }
            "cnn" => {
                let (state, step) = trainer(Cnn {
                    conv1: nn::init::kaiming_uniform(dev, &[16, 1, 5, 5]),
                    b1: Tensor::zeros(dev, &[16]),
                    conv2: nn::init::kaiming_uniform(dev, &[32, 16, 5, 5]),
                    b2: Tensor::zeros(dev, &[32]),
                    w: nn::init::xavier_uniform(dev, &[10, 32 * 7 * 7], 1.0),
                    b: Tensor::zeros(dev, &[10]),
                });
                Model::Cnn(state, step)
            }
            other => return Err(JsError::new(&format!("unknown model {other:?}: use \"mlp\" or \"cnn\""))),
        })
    }

    /// One training step (recorded, not waited for); its loss.
    fn train(&mut self, batch: &Batch) -> crate::Result<Tensor> {
        match self {
            Model::Mlp(state, step) => step.run(state, batch).cloned(),
            Model::Cnn(state, step) => step.run(state, batch).cloned(),
        }
    }
}

/// The derivatives of the cross-entropy of `p` on `batch` against finite
/// differences: the gradient, forward mode against reverse, and second order.
async fn check_derivatives<P: Classifier>(p: P, batch: Batch) -> crate::Result<GradcheckReport> {
    let opts = GradcheckOptions { forward: true, order: 2, directions: 2, ..Default::default() };
    let f = |p: &P, (x, y): &Batch| nn::cross_entropy(&p.logits(x), y, Reduction::Mean);
    gradcheck_async(f, &p, &batch, &opts).await
}

/// `pairs` as a JS array of two-element arrays.
fn js_pairs(pairs: &[(f32, f32)]) -> js_sys::Array {
    pairs.iter().map(|&(a, b)| js_sys::Array::of2(&(a as f64).into(), &(b as f64).into())).collect()
}

fn logits(m: &Model, x: &Tensor) -> Tensor {
    match m {
        Model::Mlp((p, _), _) => p.logits(x),
        Model::Cnn((p, _), _) => p.logits(x),
    }
}

struct State {
    dev: Device,
    data: Mnist,
    model: Model,
    batch: usize,
    /// Position in the current epoch's shuffled batches.
    order: Vec<Vec<usize>>,
    next: usize,
    epoch: u64,
    steps: u64,
}

impl State {
    fn next_batch(&mut self) -> Vec<usize> {
        if self.next >= self.order.len() {
            self.order = self.data.train.batches(self.batch, self.epoch);
            self.epoch += 1;
            self.next = 0;
        }
        self.next += 1;
        self.order[self.next - 1].clone()
    }
}

/// The MNIST demo: a model, its optimizer and the digits, on the page's GPU.
#[wasm_bindgen]
pub struct Demo {
    state: Rc<RefCell<State>>,
}

#[wasm_bindgen]
impl Demo {
    /// Opens WebGPU and parses the four MNIST IDX files (train images, train
    /// labels, test images, test labels; gzip or plain). Resolves to a Demo.
    pub fn create(train_images: Vec<u8>, train_labels: Vec<u8>, test_images: Vec<u8>, test_labels: Vec<u8>) -> Promise {
        future_to_promise(async move {
            let data = Mnist::from_bytes([&train_images, &train_labels, &test_images, &test_labels]).map_err(js_err)?;
            let dev = Device::new_async().await.map_err(js_err)?;
            dev.manual_seed(1);
            let model = Model::new(&dev, "mlp")?;
            let state = State { dev, data, model, batch: 64, order: Vec::new(), next: 0, epoch: 0, steps: 0 };
            Ok(Demo { state: Rc::new(RefCell::new(state)) }.into())
        })
    }

    /// The adapter, as JSON: name, backend, device type, driver, and what
    /// the matmul's autotune chose and measured.
    pub fn adapter(&self) -> String {
        adapter_json(&self.state.borrow().dev)
    }

    /// Starts over with a fresh model ("mlp" or "cnn") and optimizer.
    #[wasm_bindgen(js_name = setModel)]
    pub fn set_model(&self, kind: &str) -> Result<(), JsError> {
        let mut s = self.state.borrow_mut();
        s.model = Model::new(&s.dev, kind)?;
        (s.order, s.next, s.epoch, s.steps) = (Vec::new(), 0, 0, 0);
        Ok(())
    }

    /// Training steps taken so far.
    pub fn steps(&self) -> f64 {
        self.state.borrow().steps as f64
    }

    /// Epochs begun so far (fractional).
    pub fn epochs(&self) -> f64 {
        let s = self.state.borrow();
        let per_epoch = s.data.train.len().div_ceil(s.batch) as f64;
        s.steps as f64 / per_epoch
    }

    /// Records `steps` training steps (forward, backward, Adam update — all on
    /// the GPU; each a compiled step, replayed), then resolves to their mean
    /// loss: one read-back in all.
    pub fn train(&self, steps: u32) -> Promise {
        let state = self.state.clone();
        future_to_promise(async move {
            let total = {
                let mut s = state.borrow_mut();
                let mut total = Tensor::zeros(&s.dev, &[]);
                for _ in 0..steps {
                    let idx = s.next_batch();
                    let batch = s.data.train.batch(&s.dev, &idx);
                    // the loss is overwritten by the next step: add it first
                    total = total + s.model.train(&batch).map_err(js_err)?;
                    s.steps += 1;
                }
                total
            };
            let sum: f32 = total.item_async().await.map_err(js_err)?;
            Ok(JsValue::from_f64((sum / steps.max(1) as f32) as f64))
        })
    }

    /// Resolves to the accuracy on the first `limit` test digits.
    pub fn evaluate(&self, limit: u32) -> Promise {
        let state = self.state.clone();
        future_to_promise(async move {
            let (correct, n) = {
                let s = state.borrow();
                let n = (limit as usize).min(s.data.test.len());
                let mut correct = Tensor::zeros(&s.dev, &[]);
                for start in (0..n).step_by(250) {
                    let idx: Vec<usize> = (start..(start + 250).min(n)).collect();
                    let (x, y) = s.data.test.batch(&s.dev, &idx);
                    let hits = logits(&s.model, &x).argmax(-1, false).eq(&y).cast(crate::DType::F32).sum_all();
                    correct = correct + hits;
                }
                (correct, n)
            };
            let c: f32 = correct.item_async().await.map_err(js_err)?;
            Ok(JsValue::from_f64(c as f64 / n.max(1) as f64))
        })
    }

    /// Checks the current model's derivatives on the first `n` test digits
    /// against finite differences, here on the page's GPU (`gradcheck` with
    /// forward mode and second order). Resolves to `{passed, failures,
    /// directions, forward, secondOrder}` (pairs of the two values compared).
    #[wasm_bindgen(js_name = checkDerivatives)]
    pub fn check_derivatives(&self, n: u32) -> Promise {
        let state = self.state.clone();
        future_to_promise(async move {
            let report: Pin<Box<dyn Future<Output = crate::Result<GradcheckReport>>>> = {
                let s = state.borrow();
                let idx: Vec<usize> = (0..(n as usize).min(s.data.test.len())).collect();
                let batch = s.data.test.batch(&s.dev, &idx);
                // (a snapshot of the parameters: training may go on meanwhile)
                match &s.model {
                    Model::Mlp((p, _), _) => Box::pin(check_derivatives(p.map(Tensor::clone), batch)),
                    Model::Cnn((p, _), _) => Box::pin(check_derivatives(p.map(Tensor::clone), batch)),
                }
            };
            let r = report.await.map_err(js_err)?;
            let o = js_sys::Object::new();
            let failures: js_sys::Array = r.failures.iter().map(|f| JsValue::from_str(f)).collect();
            for (k, v) in [
                ("passed", JsValue::from_bool(r.passed)),
                ("failures", failures.into()),
                ("directions", js_pairs(&r.directions).into()),
                ("forward", js_pairs(&r.forward).into()),
                ("secondOrder", js_pairs(&r.second_order).into()),
            ] {
                js_sys::Reflect::set(&o, &k.into(), &v)?;
            }
            Ok(o.into())
        })
    }

    /// The second-derivative panel, on this demo's device.
    pub fn newton(&self) -> Newton {
        Newton::new(self.state.borrow().dev.clone())
    }

    /// Resolves to the 10 class probabilities of one 28×28 image (784 values
    /// in [0, 1], ink high, row-major).
    pub fn predict(&self, pixels: Vec<f32>) -> Promise {
        let state = self.state.clone();
        future_to_promise(async move {
            if pixels.len() != 784 {
                return Err(JsError::new(&format!("predict: {} pixels, expected 784", pixels.len())).into());
            }
            let probs = {
                let s = state.borrow();
                let x = Tensor::from_slice(&s.dev, &pixels, &[1, 784]);
                logits(&s.model, &x).softmax(-1)
            };
            let p: Vec<f32> = probs.to_vec_async().await.map_err(js_err)?;
            Ok(js_sys::Float32Array::from(&p[..]).into())
        })
    }
}
