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
    dims: [u32; 20],
}

impl ConvGeom {
    fn params(&self, total: usize, split: usize) -> ConvParams {
        let v = [
            self.n,
            self.c,
            self.h,
            self.w,
            self.o,
            self.oh,
            self.ow,
            self.groups,
            self.kh,
            self.kw,
            self.stride.0,
            self.stride.1,
            self.padding.0,
            self.padding.1,
            self.dilation.0,
            self.dilation.1,
            total,
            split,
            0,
            0,
        ];
        ConvParams {
            dims: v.map(|x| x as u32),
        }
    }

    pub fn x_shape(&self) -> [usize; 4] {
        [self.n, self.c, self.h, self.w]
    }

    pub fn w_shape(&self) -> [usize; 4] {
        [self.o, self.c / self.groups, self.kh, self.kw]
    }

    pub fn y_shape(&self) -> [usize; 4] {
        [self.n, self.o, self.oh, self.ow]
    }
}

fn conv_launch(
    entry: &'static str,
    g: &ConvGeom,
    a: &Tensor,
    b: &Tensor,
    out_shape: &[usize],
    split: usize,
) -> Tensor {
    let (a, b) = (dense_from_zero(a), dense_from_zero(b));
    let out = Tensor::empty(a.device(), entry, out_shape, DType::F32);
    let total = out.numel();
    if total == 0 {
        return out;
    }
    let params = g.params(total, split);
    let bindings = vec![
        (1, a.storage().clone()),
        (2, b.storage().clone()),
        (3, out.storage().clone()),
    ];
    let kernel = Kernel::new(Shader::Conv, entry);
    out.device().inner.record(
        &kernel,
        bindings,
        bytemuck::bytes_of(&params),
        crate::graph::grid(total.div_ceil(256) as u32),
    );
    out
}

pub(crate) fn conv2d_forward(g: &ConvGeom, x: &Tensor, w: &Tensor) -> Tensor {
    conv_launch("conv2d", g, x, w, &g.y_shape(), 1)
}

pub(crate) fn conv2d_backward_data_forward(g: &ConvGeom, dy: &Tensor, w: &Tensor) -> Tensor {
    conv_launch("conv2d_backward_data", g, dy, w, &g.x_shape(), 1)
}

pub(crate) fn conv2d_backward_weight_forward(g: &ConvGeom, x: &Tensor, dy: &Tensor) -> Tensor {
    // Split the batch so each invocation sums about 4096 terms at most.
    let per_image = g.oh * g.ow;
    let split = (g.n * per_image).div_ceil(4096).clamp(1, g.n.max(1));
    let ws = g.w_shape();
    let partial = conv_launch(
        "conv2d_backward_weight",
        g,
        x,
        dy,
        &[split, ws[0], ws[1], ws[2], ws[3]],
        split,
    );
    if split == 1 {
        partial.reshape(&ws)
    } else {
        partial.sum(&[0], false)
    }
}

/// VJPs of the three convolution primitives. With ⟨·,·⟩ the sum of
/// elementwise products: ⟨conv(x, w), g⟩ = ⟨x, data(g, w)⟩ = ⟨w, weight(x, g)⟩.
pub(crate) fn conv_vjp(
    prim: &Prim,
    g: &Tensor,
    x: &[&Tensor],
    needs: &[bool],
) -> Vec<Option<Tensor>> {
    let call = |p: Prim, a: &Tensor, b: &Tensor| apply(p, &[a, b]);
    match prim {
        // y = conv(x, w)
        Prim::Conv2d(geom) => vec![
            needs[0].then(|| call(Prim::Conv2dBackwardData(*geom), g, x[1])),
            needs[1].then(|| call(Prim::Conv2dBackwardWeight(*geom), x[0], g)),
        ],
        // dx = data(dy, w)
        Prim::Conv2dBackwardData(geom) => vec![
            needs[0].then(|| call(Prim::Conv2d(*geom), g, x[1])),
            needs[1].then(|| call(Prim::Conv2dBackwardWeight(*geom), g, x[0])),
        ],
        // dw = weight(x, dy)
        Prim::Conv2dBackwardWeight(geom) => vec![
            needs[0].then(|| call(Prim::Conv2dBackwardData(*geom), x[1], g)),
            needs[1].then(|| call(Prim::Conv2d(*geom), x[0], g)),
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
fn pool_launch(
    entry: &'static str,
    g: &PoolGeom,
    x: &Tensor,
    v: Option<&Tensor>,
    out_shape: &[usize],
) -> Tensor {
    let x = dense_from_zero(x);
    let v = v.map(dense_from_zero);
    let out = Tensor::empty(x.device(), entry, out_shape, DType::F32);
    let total = out.numel();
    if total == 0 {
        return out;
    }
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
    let params = PoolParams {
        dims: d.map(|x| x as u32),
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
        Prim::MaxPoolScatter(g) => {
            pool_launch("max_pool2d_scatter", g, x[0], Some(x[1]), &g.in_shape())
        }
        Prim::AvgPool2d(g) => pool_launch("avg_pool2d", g, x[0], None, &g.out_shape()),
        Prim::AvgPoolBackward(g) => {
            pool_launch("avg_pool2d_backward", g, x[0], None, &g.in_shape())
        }
        _ => unreachable!("pool_forward of {prim:?}"),
    }
}

/// VJPs of the pooling primitives: select and scatter at the argmax are
/// adjoint (the argmax, a function of x alone, is constant); average pooling
/// and its backward are adjoint.
pub(crate) fn pool_vjp(
    prim: &Prim,
    g: &Tensor,
    x: &[&Tensor],
    needs: &[bool],
) -> Vec<Option<Tensor>> {
    match prim {
        Prim::MaxPool2d(geom) => vec![Some(apply(Prim::MaxPoolScatter(geom.clone()), &[x[0], g]))],
        Prim::MaxPoolSelect(geom) => {
            vec![
                None,
                needs[1].then(|| apply(Prim::MaxPoolScatter(geom.clone()), &[x[0], g])),
            ]
        }
        Prim::MaxPoolScatter(geom) => vec![
            None,
            needs[1].then(|| apply(Prim::MaxPoolSelect(geom.clone()), &[x[0], g])),
        ],
        Prim::AvgPool2d(geom) => vec![Some(apply(Prim::AvgPoolBackward(geom.clone()), &[g]))],
        Prim::AvgPoolBackward(geom) => vec![Some(apply(Prim::AvgPool2d(geom.clone()), &[g]))],
        _ => unreachable!("pool_vjp of {prim:?}"),
    }
}
