//! The benchmarks' models: the MLP 784-256-10 and the seed's CNN (conv 5×5
//! → tanh → max-pool, twice, then linear), with their losses.
#![allow(dead_code)]

use wgrad::nn::{self, ConvOptions};
use wgrad::{Device, Params, Tensor};

#[derive(Params)]
pub struct Mlp {
    pub w1: Tensor,
    pub b1: Tensor,
    pub w2: Tensor,
    pub b2: Tensor,
}

/// Mean cross-entropy of the MLP's tanh hidden layer and softmax output
/// against one-hot targets `y`.
pub fn mlp_loss(p: &Mlp, (x, y): &(Tensor, Tensor)) -> Tensor {
    let h = (x.matmul(&p.w1) + &p.b1).tanh();
    -((h.matmul(&p.w2) + &p.b2).log_softmax(-1) * y).sum_all() / x.dim(0) as f32
}

#[derive(Params)]
pub struct Cnn {
    pub c1: Tensor,
    pub b1: Tensor,
    pub c2: Tensor,
    pub b2: Tensor,
    pub w: Tensor,
    pub b: Tensor,
}

impl Cnn {
    /// Kaiming-uniform convolutions, a Xavier-uniform linear layer, zero
    /// biases, from `dev`'s generator.
    pub fn new(dev: &Device) -> Cnn {
        Cnn {
            c1: nn::init::kaiming_uniform(dev, &[16, 1, 5, 5]),
            b1: Tensor::zeros(dev, &[16]),
            c2: nn::init::kaiming_uniform(dev, &[32, 16, 5, 5]),
            b2: Tensor::zeros(dev, &[32]),
            w: nn::init::xavier_uniform(dev, &[10, 32 * 7 * 7], 1.0),
            b: Tensor::zeros(dev, &[10]),
        }
    }
}

/// Mean cross-entropy of the CNN's logits against class indices `y`.
pub fn cnn_loss(p: &Cnn, (x, y): &(Tensor, Tensor)) -> Tensor {
    let same = ConvOptions::default().padding(2);
    let h = nn::max_pool2d(&nn::conv2d(x, &p.c1, Some(&p.b1), same).tanh(), 2, 2, 0);
    let h = nn::max_pool2d(&nn::conv2d(&h, &p.c2, Some(&p.b2), same).tanh(), 2, 2, 0);
    nn::cross_entropy(&nn::linear(&h.flatten(1, -1), &p.w, Some(&p.b)), y, nn::Reduction::Mean)
}
