//! Convolution and pooling primitives (NCHW). Kernels: `shaders/conv.wgsl`,
//! `shaders/pool.wgsl`. Each gradient is another primitive of this module,
//! and their gradients close the set, so all are differentiable any number
//! of times.

use bytemuck::{Pod, Zeroable};

use crate::dtype::DType;
use crate::ops::layout::dense_from_zero;
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

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct ConvParams {
    dims: [u32; 16],
    x_str: [u32; 4],
    x_off: u32,
    _pad: [u32; 3],
    /// `fast_div` constants of the kernels' divisors: OW, OH·OW, C/groups,
    /// groups, W, H, C (integer division runs lane by lane on CPU adapters)
    magic: [u32; 8],
    shift: [u32; 8],
}

impl ConvGeom {
    pub fn x_shape(&self) -> [usize; 4] {
        [self.n, self.c, self.h, self.w]
    }

    /// The columns: per image and group, one row per weight of a filter
    /// (Cg·KH·KW), one column per output position (OH·OW).
    fn cols_shape(&self) -> [usize; 4] {
        [self.n, self.groups, self.c / self.groups * self.kh * self.kw, self.oh * self.ow]
    }

    fn params(&self, total: usize, x: Option<&Tensor>) -> ConvParams {
        let d = [
            self.n,
            self.c,
            self.h,
            self.w,
            self.oh,
            self.ow,
            self.kh,
            self.kw,
            self.stride.0,
            self.stride.1,
            self.padding.0,
            self.padding.1,
            self.dilation.0,
            self.dilation.1,
            self.groups,
            total,
        ];
        let (x_str, x_off) = match x {
            Some(x) => (std::array::from_fn(|i| x.strides()[i] as u32), x.layout().offset as u32),
            None => ([0; 4], 0),
        };
        // (both kernels read their source through strides: x for im2col,
        // the columns' gradient for col2im)
        let (magic, shift) = crate::shape::pack_divisors(&[
            self.ow,
            self.oh * self.ow,
            self.c / self.groups,
            self.groups,
            self.w,
            self.h,
            self.c,
        ]);
        ConvParams { dims: d.map(|v| v as u32), x_str, x_off, _pad: [0; 3], magic, shift }
    }

    /// The weights as [groups, O/groups, Cg·KH·KW].
    fn w_matrix(&self, w: &Tensor) -> Tensor {
        let [_, g, width, _] = self.cols_shape();
        w.reshape(&[g, self.o / g, width])
    }
}

fn conv_launch(entry: &'static str, g: &ConvGeom, src: &Tensor, out_shape: &[usize]) -> Tensor {
    let out = Tensor::empty(src.device(), entry, out_shape, DType::F32);
    // im2col: one invocation per (image, group, channel, position) window
    let total = if entry == "im2col" { out.numel() / (g.kh * g.kw).max(1) } else { out.numel() };
    if out.numel() == 0 {
        return out;
    }
    let params = g.params(total, Some(src));
    let bindings = vec![(1, src.storage().clone()), (2, out.storage().clone())];
    let kernel = Kernel::new(Shader::Conv, entry).with("UNIT_STRIDE", (g.stride == (1, 1)) as u32);
    out.device().inner.record(
        &kernel,
        bindings,
        bytemuck::bytes_of(&params),
        crate::graph::grid(total.div_ceil(256) as u32),
    );
    out
}

/// Column matrices are kept under this size by convolving the batch in
/// slices (the limit of one storage binding is 128 MiB on some adapters).
const COLS_BYTES: usize = 32 << 20;

impl ConvGeom {
    /// (first image, images) slices of the batch whose column matrices fit.
    fn slices(&self) -> Vec<(usize, usize)> {
        if self.n == 0 {
            return vec![(0, 0)];
        }
        let per_image = 4 * self.groups * self.oh * self.ow * (self.c / self.groups) * self.kh * self.kw;
        let step = (COLS_BYTES / per_image.max(1)).clamp(1, self.n.max(1));
        (0..self.n).step_by(step).map(|s| (s, step.min(self.n - s))).collect()
    }

    fn with_n(&self, n: usize) -> ConvGeom {
        ConvGeom { n, ..*self }
    }
}

/// y = conv(x, w) = W · im2col(x) per image and group ([Og, Cg·KH·KW] ·
/// [Cg·KH·KW, OH·OW]: the product is the output in NCHW order), batch
/// slice by batch slice, written with ops: the gradient is the matmul's
/// and col2im's, and the columns the forward pass built are the ones the
/// weight gradient reuses.
pub(crate) fn conv2d(g: &ConvGeom, x: &Tensor, w: &Tensor) -> Tensor {
    let slices = g.slices();
    let parts: Vec<Tensor> = slices
        .iter()
        .map(|&(start, len)| {
            let gs = g.with_n(len);
            let x = if slices.len() == 1 { x.clone() } else { x.narrow(0, start, len) };
            let cols = apply(Prim::Im2col(gs), &[&x]); // [N, G, Cg·KH·KW, OH·OW]
            gs.w_matrix(w).matmul(&cols).reshape(&[len, g.o, g.oh, g.ow])
        })
        .collect();
    if parts.len() == 1 {
        return parts.into_iter().next().expect("one part");
    }
    let refs: Vec<&Tensor> = parts.iter().collect();
    Tensor::cat(&refs, 0)
}

pub(crate) fn im2col_forward(g: &ConvGeom, x: &Tensor) -> Tensor {
    conv_launch("im2col", g, x, &g.cols_shape())
}

pub(crate) fn col2im_forward(g: &ConvGeom, cols: &Tensor) -> Tensor {
    conv_launch("col2im", g, cols, &g.x_shape())
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
