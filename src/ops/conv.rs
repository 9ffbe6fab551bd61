//! Convolution and pooling primitives (NCHW). Kernels: the generated matmul
//! reading through `shaders/conv.wgsl`'s gathers, and `shaders/pool.wgsl`.
//! Each gradient is another primitive of this module, and their gradients
//! close the set, so all are differentiable any number of times.

use bytemuck::{Pod, Zeroable};

use crate::codegen::ConvGemm;
use crate::dtype::DType;
use crate::ops::layout::dense_from_zero;
use crate::ops::matmul::{Gemm, Operand};
use crate::ops::{Prim, apply};
use crate::shaders::{Kernel, Shader};
use crate::tensor::Tensor;

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

/// The uniform of the gathers (`ConvGather` in `shaders/conv.wgsl`).
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
/// reads them (the product is the output in NCHW order). A dispatch holds
/// at most 65,535 (image, group) pairs (the adapter's limit): larger
/// batches are convolved in slices.
pub(crate) fn conv2d(g: &ConvGeom, x: &Tensor, w: &Tensor) -> Tensor {
    let most = x.device().inner.limits.max_compute_workgroups_per_dimension as usize;
    let per = (most / g.groups).max(1);
    if g.n <= per {
        return apply(Prim::Conv2d(*g), &[x, w]);
    }
    let parts: Vec<Tensor> = (0..g.n)
        .step_by(per)
        .map(|s| {
            let len = per.min(g.n - s);
            apply(Prim::Conv2d(g.with_n(len)), &[&x.narrow(0, s, len), w])
        })
        .collect();
    let refs: Vec<&Tensor> = parts.iter().collect();
    Tensor::cat(&refs, 0)
}

pub(crate) fn conv2d_forward(g: &ConvGeom, x: &Tensor, w: &Tensor) -> Tensor {
    let (og, k) = (g.og(), g.cg() * g.khkw());
    let w = w.contiguous().reshape(&[g.groups, og, k]);
    let xs = x.strides();
    let gemm = Gemm {
        a: Operand::view(&w, vec![0, og * k]),
        b: Operand::gathered(x, x.layout().offset, 0, 0, vec![xs[0], g.cg() * xs[1]]),
        m: og,
        n: g.positions(),
        k,
        batch: vec![g.n, g.groups],
        conv: Some((ConvGemm::Forward, g.gathers(x))),
    };
    crate::ops::matmul::gemm(gemm, &[g.n, g.o, g.oh, g.ow])
}

/// dx from dy [N, O, OH, OW]: per image and group, wᵀ [Cg, Og·KH·KW] times
/// dy's receptive fields of the input pixels [Og·KH·KW, H·W].
pub(crate) fn conv2d_input_grad(g: &ConvGeom, dy: &Tensor, w: &Tensor) -> Tensor {
    let (cg, og, khkw) = (g.cg(), g.og(), g.khkw());
    let w = w.contiguous();
    let ds = dy.strides();
    let gemm = Gemm {
        a: Operand::gathered(&w, w.layout().offset, khkw, cg * khkw, vec![0, og * cg * khkw]),
        b: Operand::gathered(dy, dy.layout().offset, 0, 0, vec![ds[0], og * ds[1]]),
        m: cg,
        n: g.h * g.w,
        k: og * khkw,
        batch: vec![g.n, g.groups],
        conv: Some((ConvGemm::InputGrad, g.gathers(dy))),
    };
    crate::ops::matmul::gemm(gemm, &g.x_shape())
}

/// dw from x and dy: per group, dy [Og, N·OH·OW] times the receptive
/// fields [N·OH·OW, Cg·KH·KW] (one sum over the batch and the positions).
pub(crate) fn conv2d_weight_grad(g: &ConvGeom, x: &Tensor, dy: &Tensor) -> Tensor {
    let (og, p) = (g.og(), g.positions());
    let dy = dy.contiguous();
    let xs = x.strides();
    let gemm = Gemm {
        a: Operand::gathered(&dy, dy.layout().offset, p, g.o * p, vec![og * p]),
        b: Operand::gathered(x, x.layout().offset, 0, 0, vec![g.cg() * xs[1]]),
        m: og,
        n: g.cg() * g.khkw(),
        k: g.n * p,
        batch: vec![g.groups],
        conv: Some((ConvGemm::WeightGrad, g.gathers(x))),
    };
    crate::ops::matmul::gemm(gemm, &[g.o, g.cg(), g.kh, g.kw])
}

/// VJPs of the convolution's products, each bilinear: every gradient is
/// another of the three (so all are differentiable any number of times).
pub(crate) fn conv_vjp(prim: &Prim, g: &Tensor, x: &[&Tensor], needs: &[bool]) -> Vec<Option<Tensor>> {
    let with = |p: Prim, a: &Tensor, b: &Tensor| apply(p, &[a, b]);
    match *prim {
        // y = conv(x, w)
        Prim::Conv2d(c) => vec![
            needs[0].then(|| with(Prim::Conv2dInputGrad(c), g, x[1])),
            needs[1].then(|| with(Prim::Conv2dWeightGrad(c), x[0], g)),
        ],
        // dx = convᵀ(dy, w): ⟨dx, g⟩ = ⟨dy, conv(g, w)⟩
        Prim::Conv2dInputGrad(c) => vec![
            needs[0].then(|| with(Prim::Conv2d(c), g, x[1])),
            needs[1].then(|| with(Prim::Conv2dWeightGrad(c), g, x[0])),
        ],
        // dw = Σ dy·cols(x)ᵀ: ⟨dw, g⟩ = ⟨conv(x, g), dy⟩ = ⟨x, convᵀ(dy, g)⟩
        Prim::Conv2dWeightGrad(c) => vec![
            needs[0].then(|| with(Prim::Conv2dInputGrad(c), x[1], g)),
            needs[1].then(|| with(Prim::Conv2d(c), x[0], g)),
        ],
        _ => unreachable!("conv_vjp of {prim:?}"),
    }
}

// ---- pooling -------------------------------------------------------------------

/// The geometry of one 2-d pooling over the last two axes: `lead` are the
/// other axes (e.g. [n, c]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PoolGeom {
    pub lead: Vec<usize>,
    pub h: usize,
    pub w: usize,
    pub oh: usize,
    pub ow: usize,
    pub kernel: (usize, usize),
    pub stride: (usize, usize),
    pub padding: (usize, usize),
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct PoolParams {
    dims: [u32; 12],
    /// `fast_div` constants of OW, OH, W, H
    magic: [u32; 4],
    shift: [u32; 4],
}

impl PoolGeom {
    fn planes(&self) -> usize {
        self.lead.iter().product()
    }

    pub fn in_shape(&self) -> Vec<usize> {
        let mut s = self.lead.clone();
        s.extend([self.h, self.w]);
        s
    }

    pub fn out_shape(&self) -> Vec<usize> {
        let mut s = self.lead.clone();
        s.extend([self.oh, self.ow]);
        s
    }
}

/// `entry` over `out_shape`, reading `x` (and `v`, for the max kernels).
fn pool_launch(entry: &'static str, g: &PoolGeom, x: &Tensor, v: Option<&Tensor>, out_shape: &[usize]) -> Tensor {
    let x = dense_from_zero(x);
    let v = v.map(dense_from_zero);
    let out = Tensor::empty(x.device(), entry, out_shape, DType::F32);
    if out.numel() == 0 {
        return out;
    }
    // windows that tile the input: one invocation per window
    let tiles = g.stride == g.kernel && g.padding == (0, 0) && g.h == g.oh * g.kernel.0 && g.w == g.ow * g.kernel.1;
    let (entry, total) = match entry {
        "max_pool2d_scatter" if tiles => ("max_pool2d_scatter_tiles", g.planes() * g.oh * g.ow),
        _ => (entry, out.numel()),
    };
    let d = [
        g.planes(),
        g.h,
        g.w,
        g.oh,
        g.ow,
        g.kernel.0,
        g.kernel.1,
        g.stride.0,
        g.stride.1,
        g.padding.0,
        g.padding.1,
        total,
    ];
    let (magic, shift) = crate::shape::pack_divisors(&[g.ow, g.oh, g.w, g.h]);
    let params = PoolParams {
        dims: d.map(|x| x as u32),
        magic: std::array::from_fn(|i| magic[i]),
        shift: std::array::from_fn(|i| shift[i]),
    };
    let mut bindings = vec![(1, x.storage().clone())];
    if let Some(v) = &v {
        bindings.push((2, v.storage().clone()));
    }
    bindings.push((3, out.storage().clone()));
    let kernel = Kernel::new(Shader::Pool, entry);
    out.device().inner.record(
        &kernel,
        bindings,
        bytemuck::bytes_of(&params),
        crate::graph::grid(total.div_ceil(256) as u32),
    );
    out
}

pub(crate) fn pool_forward(prim: &Prim, x: &[&Tensor]) -> Tensor {
    match prim {
        Prim::MaxPool2d(g) => pool_launch("max_pool2d", g, x[0], Some(x[0]), &g.out_shape()),
        Prim::MaxPoolSelect(g) => pool_launch("max_pool2d", g, x[0], Some(x[1]), &g.out_shape()),
        Prim::MaxPoolScatter(g) => pool_launch("max_pool2d_scatter", g, x[0], Some(x[1]), &g.in_shape()),
        Prim::AvgPool2d(g) => pool_launch("avg_pool2d", g, x[0], None, &g.out_shape()),
        Prim::AvgPoolBackward(g) => pool_launch("avg_pool2d_backward", g, x[0], None, &g.in_shape()),
        _ => unreachable!("pool_forward of {prim:?}"),
    }
}

/// VJPs of the pooling primitives: select and scatter at the argmax are
/// adjoint (the argmax, a function of x alone, is constant); average pooling
/// and its backward are adjoint.
pub(crate) fn pool_vjp(prim: &Prim, g: &Tensor, x: &[&Tensor], needs: &[bool]) -> Vec<Option<Tensor>> {
    match prim {
        Prim::MaxPool2d(geom) => vec![Some(apply(Prim::MaxPoolScatter(geom.clone()), &[x[0], g]))],
        Prim::MaxPoolSelect(geom) => {
            vec![None, needs[1].then(|| apply(Prim::MaxPoolScatter(geom.clone()), &[x[0], g]))]
        }
        Prim::MaxPoolScatter(geom) => {
            vec![None, needs[1].then(|| apply(Prim::MaxPoolSelect(geom.clone()), &[x[0], g]))]
        }
        Prim::AvgPool2d(geom) => vec![Some(apply(Prim::AvgPoolBackward(geom.clone()), &[g]))],
        Prim::AvgPoolBackward(geom) => vec![Some(apply(Prim::AvgPool2d(geom.clone()), &[g]))],
        _ => unreachable!("pool_vjp of {prim:?}"),
    }
}
