//! The character-level transformer of the `gpt` example (also timed by the
//! benchmark suite): learned token and position embeddings, pre-norm blocks
//! of causal multi-head self-attention and a GELU MLP, the output layer tied
//! to the token embedding.

use wgrad::nn::AttnMask;
use wgrad::{Params, Tensor, nn};

use super::text;

/// Characters the model sees at once.
pub const CONTEXT: usize = 64;
pub const WIDTH: usize = 64;
pub const HEADS: usize = 4;
pub const LAYERS: usize = 2;

/// One pre-norm transformer block; linear weights are [out, in].
#[derive(Params)]
pub struct Block {
    pub norm1_w: Tensor,
    pub norm1_b: Tensor,
    pub qkv: Tensor,
    pub proj: Tensor,
    pub norm2_w: Tensor,
    pub norm2_b: Tensor,
    pub up: Tensor,
    pub up_b: Tensor,
    pub down: Tensor,
    pub down_b: Tensor,
}

#[derive(Params)]
pub struct Gpt {
    /// [V, WIDTH], also the output layer (tied weights).
    pub token: Tensor,
    /// [CONTEXT, WIDTH], learned.
    pub position: Tensor,
    pub blocks: Vec<Block>,
    pub norm_w: Tensor,
    pub norm_b: Tensor,
}

impl Gpt {
    pub fn new(dev: &wgrad::Device, vocab: usize) -> Gpt {
        let block = || Block {
            norm1_w: Tensor::ones(dev, &[WIDTH]),
            norm1_b: Tensor::zeros(dev, &[WIDTH]),
            qkv: nn::init::xavier_uniform(dev, &[3 * WIDTH, WIDTH], 1.0),
            proj: nn::init::xavier_uniform(dev, &[WIDTH, WIDTH], 1.0) * (1.0 / (2.0 * LAYERS as f32).sqrt()),
            norm2_w: Tensor::ones(dev, &[WIDTH]),
            norm2_b: Tensor::zeros(dev, &[WIDTH]),
            up: nn::init::xavier_uniform(dev, &[4 * WIDTH, WIDTH], 1.0),
            up_b: Tensor::zeros(dev, &[4 * WIDTH]),
            down: nn::init::xavier_uniform(dev, &[WIDTH, 4 * WIDTH], 1.0) * (1.0 / (2.0 * LAYERS as f32).sqrt()),
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
}

/// x + attention(norm(x)), then x + mlp(norm(x)), for x [B, T, WIDTH].
pub fn block(b: &Block, x: &Tensor) -> Tensor {
    let (batch, t) = (x.dim(0), x.dim(1));
    let heads = |z: &Tensor| z.reshape(&[batch, t, HEADS, WIDTH / HEADS]).permute(&[0, 2, 1, 3]);
    let h = nn::layer_norm(x, 1, Some(&b.norm1_w), Some(&b.norm1_b), 1e-5);
    let qkv = nn::linear(&h, &b.qkv, None).chunk(3, -1);
    // causal attention: the mask is made from indices inside the softmax kernel
    let y = nn::scaled_dot_product_attention(
        &heads(&qkv[0]),
        &heads(&qkv[1]),
        &heads(&qkv[2]),
        AttnMask::Causal,
        0.0,
        false,
    );
    let x = x + &nn::linear(&y.permute(&[0, 2, 1, 3]).reshape(&[batch, t, WIDTH]), &b.proj, None);
    let h = nn::layer_norm(&x, 1, Some(&b.norm2_w), Some(&b.norm2_b), 1e-5);
    let mlp = nn::linear(&nn::linear(&h, &b.up, Some(&b.up_b)).gelu(), &b.down, Some(&b.down_b));
    &x + &mlp
}

/// Logits [B, T, V] of the next character after each of `ids` [B, T].
pub fn logits(m: &Gpt, ids: &Tensor) -> Tensor {
    let t = ids.dim(1);
    let mut h = nn::embedding(ids, &m.token) + m.position.narrow(0, 0, t);
    for b in &m.blocks {
        h = block(b, &h);
    }
    nn::layer_norm(&h, 1, Some(&m.norm_w), Some(&m.norm_b), 1e-5).matmul(&m.token.t())
}

/// Mean cross-entropy of the next characters `y` [B, T], in nats.
pub fn loss(m: &Gpt, (x, y): &(Tensor, Tensor)) -> Tensor {
    text::next_char_loss(&logits(m, x), y)
}
