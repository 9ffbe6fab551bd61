//! Convolution primitives (NCHW): the forward and both gradients, each the
//! generated matmul reading its operands through the gathers of
//! `shaders/conv_gathers.wgsl` (implicit GEMM). Each gradient is another
//! primitive of this module, and their gradients close the set, so all are
//! differentiable any number of times.

use bytemuck::{Pod, Zeroable};

use crate::autograd::{Primitive, multilinear_jvp};
use crate::ir::ConvGemm;
use crate::ops::apply;
use crate::ops::matmul::{Gemm, GemmOperand, gemm};
use crate::tensor::Tensor;

/// A convolution's three products, each bilinear.
#[derive(Clone, Debug)]
pub(crate) enum Conv {
    /// inputs: x [N, C, H, W], w [O, C/groups, KH, KW]; output: y [N, O, OH, OW]
    Forward(ConvGeom),
    /// inputs: dy (y's shape), w; output: dx (x's shape)
    InputGrad(ConvGeom),
    /// inputs: x, dy; output: dw (w's shape)
    WeightGrad(ConvGeom),
}

impl Primitive for Conv {
    fn name(&self) -> &'static str {
        match self {
            Conv::Forward(_) => ConvGemm::Forward.name(),
            Conv::InputGrad(_) => ConvGemm::InputGrad.name(),
            Conv::WeightGrad(_) => ConvGemm::WeightGrad.name(),
        }
    }

    fn forward(&self, x: &[&Tensor]) -> Tensor {
        match self {
            Conv::Forward(g) => conv2d_forward(g, x[0], x[1]),
            Conv::InputGrad(g) => conv2d_input_grad(g, x[0], x[1]),
            Conv::WeightGrad(g) => conv2d_weight_grad(g, x[0], x[1]),
        }
    }

    /// Every gradient is another of the three products.
    fn vjp(&self, g: &Tensor, x: &[&Tensor], _y: &Tensor, needs: &[bool]) -> Vec<Option<Tensor>> {
        let with = |p: Conv, a: &Tensor, b: &Tensor| apply(p, &[a, b]);
        match *self {
            // y = conv(x, w)
            Conv::Forward(c) => vec![
                needs[0].then(|| with(Conv::InputGrad(c), g, x[1])),
                needs[1].then(|| with(Conv::WeightGrad(c), x[0], g)),
            ],
            // dx = convᵀ(dy, w): ⟨dx, g⟩ = ⟨dy, conv(g, w)⟩
            Conv::InputGrad(c) => vec![
                needs[0].then(|| with(Conv::Forward(c), g, x[1])),
                needs[1].then(|| with(Conv::WeightGrad(c), g, x[0])),
            ],
            // dw = Σ dy·cols(x)ᵀ: ⟨dw, g⟩ = ⟨conv(x, g), dy⟩ = ⟨x, convᵀ(dy, g)⟩
            Conv::WeightGrad(c) => vec![
                needs[0].then(|| with(Conv::InputGrad(c), x[1], g)),
                needs[1].then(|| with(Conv::Forward(c), x[0], g)),
            ],
        }
    }

    /// Each of the three is bilinear in its two inputs.
    fn jvp(&self, t: &[Option<&Tensor>], x: &[&Tensor], _y: &Tensor) -> Option<Tensor> {
        multilinear_jvp(self, t, x, &[0, 1])
    }
}

/// The geometry of one convolution: input [n, c, h, w], weight
/// [o, c/groups, kh, kw], output [n, o, oh, ow].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ConvGeom {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub o: usize,
    pub oh: usize,
    pub ow: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: (usize, usize),
    pub padding: (usize, usize),
    pub dilation: (usize, usize),
    pub groups: usize,
}

/// The uniform of the gathers (`ConvGather` in `shaders/conv_gathers.wgsl`).
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct ConvGather {
    dims: [u32; 16],
    img: [u32; 4],
    magic: [u32; 8],
    shift: [u32; 8],
}

impl ConvGeom {
    pub fn x_shape(&self) -> [usize; 4] {
        [self.n, self.c, self.h, self.w]
    }

    fn cg(&self) -> usize {
        self.c / self.groups
    }

    fn og(&self) -> usize {
        self.o / self.groups
    }

    fn khkw(&self) -> usize {
        self.kh * self.kw
    }

    fn positions(&self) -> usize {
        self.oh * self.ow
    }

    fn with_n(&self, n: usize) -> ConvGeom {
        ConvGeom { n, ..*self }
    }

    /// The gathers' uniform, reading the image `img` (x, or dy for the
    /// input gradient) through its strides.
    fn gathers(&self, img: &Tensor) -> Vec<u8> {
        #[rustfmt::skip]
        let dims = [
            self.h, self.w, self.oh, self.ow,
            self.kw, self.khkw(), self.positions(), self.kh,
            self.stride.0, self.stride.1, self.padding.0, self.padding.1,
            self.dilation.0, self.dilation.1, 0, 0,
        ];
        let (magic, shift) = crate::shape::pack_divisors(&[
            self.ow,
            self.kw,
            self.khkw(),
            self.positions(),
            self.w,
            self.stride.0,
            self.stride.1,
        ]);
        let img = std::array::from_fn(|i| img.strides()[i] as u32);
        bytemuck::bytes_of(&ConvGather { dims: dims.map(|v| v as u32), img, magic, shift }).to_vec()
    }
}

/// y = conv(x, w): per image and group, the weights [Og, Cg·KH·KW] times
/// the receptive fields [Cg·KH·KW, OH·OW] gathered from x as the product
/// reads them (the product is the output in NCHW order).
pub(crate) fn conv2d(g: &ConvGeom, x: &Tensor, w: &Tensor) -> Tensor {
    by_slices(g, x, w, Conv::Forward)
}

/// The transposed convolution of `x` (shaped like the output of the
/// convolution `g`, [N, O, OH, OW]) with `w` [O, C/groups, KH, KW]: the
/// input gradient of `g`, so the same primitive, shaped [N, C, H, W].
pub(crate) fn conv_transpose2d(g: &ConvGeom, x: &Tensor, w: &Tensor) -> Tensor {
    by_slices(g, x, w, Conv::InputGrad)
}

/// `product` of the batch `x` with `w`. A dispatch holds at most 65,535
/// (image, group) pairs (the adapter's limit): larger batches are done in
/// slices along the batch axis.
fn by_slices(g: &ConvGeom, x: &Tensor, w: &Tensor, product: fn(ConvGeom) -> Conv) -> Tensor {
    let most = x.device().inner.limits.max_compute_workgroups_per_dimension as usize;
    let per = (most / g.groups).max(1);
    if g.n <= per {
        return apply(product(*g), &[x, w]);
    }
    let parts: Vec<Tensor> = (0..g.n)
        .step_by(per)
        .map(|s| {
            let len = per.min(g.n - s);
            apply(product(g.with_n(len)), &[&x.narrow(0, s, len), w])
        })
        .collect();
    let refs: Vec<&Tensor> = parts.iter().collect();
    Tensor::cat(&refs, 0)
}

fn conv2d_forward(g: &ConvGeom, x: &Tensor, w: &Tensor) -> Tensor {
    let (og, k) = (g.og(), g.cg() * g.khkw());
    let w = w.contiguous().reshape(&[g.groups, og, k]);
    let xs = x.strides();
    let product = Gemm {
        a: GemmOperand::view(&w, vec![0, og * k]),
        b: GemmOperand::gathered(x, x.layout().offset, 0, 0, vec![xs[0], g.cg() * xs[1]]),
        m: og,
        n: g.positions(),
        k,
        batch: vec![g.n, g.groups],
        conv: Some((ConvGemm::Forward, g.gathers(x))),
    };
    gemm(product, &[g.n, g.o, g.oh, g.ow])
}

/// dx from dy [N, O, OH, OW]: per image and group, wᵀ [Cg, Og·KH·KW] times
/// dy's receptive fields of the input pixels [Og·KH·KW, H·W].
fn conv2d_input_grad(g: &ConvGeom, dy: &Tensor, w: &Tensor) -> Tensor {
    let (cg, og, khkw) = (g.cg(), g.og(), g.khkw());
    let w = w.contiguous();
    let ds = dy.strides();
    let product = Gemm {
        a: GemmOperand::gathered(&w, w.layout().offset, khkw, cg * khkw, vec![0, og * cg * khkw]),
        b: GemmOperand::gathered(dy, dy.layout().offset, 0, 0, vec![ds[0], og * ds[1]]),
        m: cg,
        n: g.h * g.w,
        k: og * khkw,
        batch: vec![g.n, g.groups],
        conv: Some((ConvGemm::InputGrad, g.gathers(dy))),
    };
    gemm(product, &g.x_shape())
}

/// dw from x and dy: per group, dy [Og, N·OH·OW] times the receptive
/// fields [N·OH·OW, Cg·KH·KW] (one sum over the batch and the positions).
fn conv2d_weight_grad(g: &ConvGeom, x: &Tensor, dy: &Tensor) -> Tensor {
    let (og, p) = (g.og(), g.positions());
    let dy = dy.contiguous();
    let xs = x.strides();
    let product = Gemm {
        a: GemmOperand::gathered(&dy, dy.layout().offset, p, g.o * p, vec![og * p]),
        b: GemmOperand::gathered(x, x.layout().offset, 0, 0, vec![g.cg() * xs[1]]),
        m: og,
        n: g.cg() * g.khkw(),
        k: g.n * p,
        batch: vec![g.groups],
        conv: Some((ConvGemm::WeightGrad, g.gathers(x))),
    };
    gemm(product, &[g.o, g.cg(), g.kh, g.kw])
}
