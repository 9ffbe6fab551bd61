//! 2-d pooling primitives over the last two axes (max and average).
//! Kernels: `shaders/pool.wgsl`. Max pooling selects at the argmax and
//! its gradient scatters there: the two are adjoint (the argmax, a function
//! of x alone, is constant), as are average pooling and its gradient, so
//! all are differentiable any number of times.

use bytemuck::{Pod, Zeroable};

use crate::autograd::{Primitive, multilinear_jvp};
use crate::dtype::DType;
use crate::ops::apply;
use crate::ops::layout::dense_from_zero;
use crate::runtime::{Kernel, Shader, grid};
use crate::tensor::Tensor;

/// The pooling primitives.
#[derive(Clone, Debug)]
pub(crate) enum Pool {
    Max(PoolGeom),
    /// inputs: x (picks the argmax), v (the values taken there)
    MaxSelect(PoolGeom),
    /// inputs: x (picks the argmax), g (summed into it)
    MaxScatter(PoolGeom),
    Avg(PoolGeom),
    AvgBackward(PoolGeom),
}

impl Primitive for Pool {
    fn name(&self) -> &'static str {
        match self {
            Pool::Max(_) | Pool::MaxSelect(_) => "max_pool2d",
            Pool::MaxScatter(_) => "max_pool2d (gradient)",
            Pool::Avg(_) => "avg_pool2d",
            Pool::AvgBackward(_) => "avg_pool2d (gradient)",
        }
    }

    fn forward(&self, x: &[&Tensor]) -> Tensor {
        match self {
            // no v: the values are x's own
            Pool::Max(g) => launch(PoolKernel::Max, g, x[0], None, &g.out_shape()),
            Pool::MaxSelect(g) => launch(PoolKernel::Max, g, x[0], Some(x[1]), &g.out_shape()),
            Pool::MaxScatter(g) => launch(PoolKernel::MaxScatter, g, x[0], Some(x[1]), &g.in_shape()),
            Pool::Avg(g) => launch(PoolKernel::Avg, g, x[0], None, &g.out_shape()),
            Pool::AvgBackward(g) => launch(PoolKernel::AvgBackward, g, x[0], None, &g.in_shape()),
        }
    }

    fn vjp(&self, g: &Tensor, x: &[&Tensor], _y: &Tensor, needs: &[bool]) -> Vec<Option<Tensor>> {
        match self {
            Pool::Max(geom) => vec![Some(apply(Pool::MaxScatter(geom.clone()), &[x[0], g]))],
            Pool::MaxSelect(geom) => vec![None, needs[1].then(|| apply(Pool::MaxScatter(geom.clone()), &[x[0], g]))],
            Pool::MaxScatter(geom) => vec![None, needs[1].then(|| apply(Pool::MaxSelect(geom.clone()), &[x[0], g]))],
            Pool::Avg(geom) => vec![Some(apply(Pool::AvgBackward(geom.clone()), &[g]))],
            Pool::AvgBackward(geom) => vec![Some(apply(Pool::Avg(geom.clone()), &[g]))],
        }
    }

    fn jvp(&self, t: &[Option<&Tensor>], x: &[&Tensor], _y: &Tensor) -> Option<Tensor> {
        match self {
            // the tangent at each window's maximum
            Pool::Max(geom) => Some(apply(Pool::MaxSelect(geom.clone()), &[x[0], t[0]?])),
            // linear in the values (the positions come from x, a constant)
            Pool::MaxSelect(_) | Pool::MaxScatter(_) => multilinear_jvp(self, t, x, &[1]),
            Pool::Avg(_) | Pool::AvgBackward(_) => multilinear_jvp(self, t, x, &[0]),
        }
    }
}

/// The entry points of `shaders/pool.wgsl`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PoolKernel {
    Max,
    MaxScatter,
    /// Max where the windows tile the input two columns wide (vec2 loads).
    MaxTiles2,
    /// The scatter where the windows tile the input: one invocation per window.
    MaxScatterTiles,
    /// The same two columns wide (vec2 loads and stores).
    MaxScatterTiles2,
    /// [`MaxTiles2`](Self::MaxTiles2) for two neighbouring windows (vec4 loads).
    MaxTiles4,
    /// [`MaxScatterTiles2`](Self::MaxScatterTiles2) for two neighbouring windows (vec4 stores).
    MaxScatterTiles4,
    Avg,
    AvgBackward,
}

impl PoolKernel {
    fn entry(self) -> &'static str {
        match self {
            PoolKernel::Max => "max_pool2d",
            PoolKernel::MaxScatter => "max_pool2d_scatter",
            PoolKernel::MaxTiles2 => "max_pool2d_tiles2",
            PoolKernel::MaxScatterTiles => "max_pool2d_scatter_tiles",
            PoolKernel::MaxScatterTiles2 => "max_pool2d_scatter_tiles2",
            PoolKernel::MaxTiles4 => "max_pool2d_tiles4",
            PoolKernel::MaxScatterTiles4 => "max_pool2d_scatter_tiles4",
            PoolKernel::Avg => "avg_pool2d",
            PoolKernel::AvgBackward => "avg_pool2d_backward",
        }
    }
}

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
    pub dilation: (usize, usize),
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct PoolParams {
    dims: [u32; 16],
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

/// `kernel` over `out_shape`, reading `x` (and `v`, for the max kernels;
/// `None` there: the values are x's own).
fn launch(kernel: PoolKernel, g: &PoolGeom, x: &Tensor, v: Option<&Tensor>, out_shape: &[usize]) -> Tensor {
    let x = dense_from_zero(x);
    let v = v.map(dense_from_zero);
    let out = Tensor::empty(x.device(), kernel.entry(), out_shape, DType::F32);
    if out.numel() == 0 {
        return out;
    }
    // windows that tile the input: one invocation per window
    let tiles = g.stride == g.kernel
        && g.padding == (0, 0)
        && g.dilation == (1, 1)
        && g.h == g.oh * g.kernel.0
        && g.w == g.ow * g.kernel.1;
    // ... two columns wide: vec2 loads (w = 2·ow is even)
    let pairs = tiles && g.kernel.1 == 2;
    // ... and an even number of windows across: two per invocation (vec4)
    let quads = pairs && g.ow % 2 == 0;
    let windows = g.planes() * g.oh * g.ow;
    let (kernel, total) = match kernel {
        PoolKernel::Max if quads => (PoolKernel::MaxTiles4, windows / 2),
        PoolKernel::MaxScatter if quads => (PoolKernel::MaxScatterTiles4, windows / 2),
        PoolKernel::Max if pairs => (PoolKernel::MaxTiles2, out.numel()),
        PoolKernel::MaxScatter if pairs => (PoolKernel::MaxScatterTiles2, windows),
        PoolKernel::MaxScatter if tiles => (PoolKernel::MaxScatterTiles, windows),
        _ => (kernel, out.numel()),
    };
    let max = matches!(kernel, PoolKernel::Max | PoolKernel::MaxTiles2 | PoolKernel::MaxTiles4);
    let same = max && v.is_none();
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
        g.dilation.0,
        g.dilation.1,
        same as usize,
        0,
    ];
    // the vec4 kernels index pairs of windows across
    let four = matches!(kernel, PoolKernel::MaxTiles4 | PoolKernel::MaxScatterTiles4);
    let across = if four { g.ow / 2 } else { g.ow };
    let (magic, shift) = crate::shape::pack_divisors(&[across, g.oh, g.w, g.h]);
    let params = PoolParams {
        dims: d.map(|x| x as u32),
        magic: std::array::from_fn(|i| magic[i]),
        shift: std::array::from_fn(|i| shift[i]),
    };
    // the names the entry point reads x, v and out by
    let (xn, vn, outn) = match kernel {
        PoolKernel::MaxTiles2 => ("xv", "v", "out"),
        PoolKernel::MaxScatterTiles2 => ("xv", "v", "outv"),
        PoolKernel::MaxTiles4 => ("x4", "v", "outv"),
        PoolKernel::MaxScatterTiles4 => ("x4", "xv", "out4"),
        _ => ("x", "v", "out"),
    };
    let mut bindings = vec![(xn, x.storage())];
    match &v {
        Some(v) => bindings.push((vn, v.storage())),
        None if max => bindings.push((vn, x.storage())),
        None => {}
    }
    bindings.push((outn, out.storage()));
    let k = Kernel::new(Shader::Pool, kernel.entry());
    out.device().inner.record(&k, &bindings, bytemuck::bytes_of(&params), grid(total.div_ceil(256) as u32));
    out
}

/// Max over the windows `g` of `x`'s last two axes.
#[track_caller]
pub(crate) fn max_pool2d(g: PoolGeom, x: &Tensor) -> Tensor {
    apply(Pool::Max(g), &[x])
}

/// Mean over the windows `g` of `x`'s last two axes.
#[track_caller]
pub(crate) fn avg_pool2d(g: PoolGeom, x: &Tensor) -> Tensor {
    apply(Pool::Avg(g), &[x])
}
