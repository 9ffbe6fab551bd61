//! Convolutions: 2-d, 1-d (the 2-d one on rows of height 1) and
//! transposed 2-d (the 2-d one's input gradient), all one implicit-GEMM
//! primitive of `ops::conv`, differentiable any number of times.

use crate::ops::conv::ConvGeom;
use crate::ops::{need_f32, same_device};
use crate::tensor::Tensor;

/// Options of [`conv2d`] and [`conv_transpose2d`]: stride, zero padding
/// and dilation (rows, columns), and the number of groups.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvOptions {
    pub stride: (usize, usize),
    pub padding: (usize, usize),
    pub dilation: (usize, usize),
    pub groups: usize,
}

impl Default for ConvOptions {
    fn default() -> Self {
        ConvOptions { stride: (1, 1), padding: (0, 0), dilation: (1, 1), groups: 1 }
    }
}

impl ConvOptions {
    /// The same stride along both axes.
    pub fn stride(mut self, s: usize) -> Self {
        self.stride = (s, s);
        self
    }
    /// The same zero padding along both axes.
    pub fn padding(mut self, p: usize) -> Self {
        self.padding = (p, p);
        self
    }
    /// The same dilation along both axes.
    pub fn dilation(mut self, d: usize) -> Self {
        self.dilation = (d, d);
        self
    }
    /// Channel groups (input and output channels must divide by it).
    pub fn groups(mut self, g: usize) -> Self {
        self.groups = g;
        self
    }
}

/// Options of [`conv1d`]: stride, zero padding, dilation and groups.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv1dOptions {
    pub stride: usize,
    pub padding: usize,
    pub dilation: usize,
    pub groups: usize,
}

impl Default for Conv1dOptions {
    fn default() -> Self {
        Conv1dOptions { stride: 1, padding: 0, dilation: 1, groups: 1 }
    }
}

impl Conv1dOptions {
    /// The stride.
    pub fn stride(mut self, s: usize) -> Self {
        self.stride = s;
        self
    }
    /// The zero padding at each end.
    pub fn padding(mut self, p: usize) -> Self {
        self.padding = p;
        self
    }
    /// The dilation.
    pub fn dilation(mut self, d: usize) -> Self {
        self.dilation = d;
        self
    }
    /// Channel groups (input and output channels must divide by it).
    pub fn groups(mut self, g: usize) -> Self {
        self.groups = g;
        self
    }
}

/// The geometry of convolving an input of shape `xs` [N, C, H, W] with a
/// weight `ws` [O, C/groups, KH, KW]; panics name `op` and the shapes the
/// caller gave (`x`, `w`: those of conv1d are 3-d).
#[track_caller]
fn conv_geom(op: &str, x: &Tensor, w: &Tensor, xs: [usize; 4], ws: [usize; 4], opts: ConvOptions) -> ConvGeom {
    // a macro, not a closure: the panic then names the caller's line
    macro_rules! bad {
        ($why:expr) => {
            panic!("wgrad: {op}: input {:?} and weight {:?} with {opts:?}: {}", x.shape(), w.shape(), $why)
        };
    }
    let ([n, c, h, wd], [o, cg, kh, kw]) = (xs, ws);
    let g = opts.groups;
    if g == 0 || c % g != 0 || o % g != 0 || cg * g != c {
        bad!("channels do not match the weight and groups");
    }
    if g > x.device().inner.limits.max_compute_workgroups_per_dimension as usize {
        bad!("more groups than a dispatch holds (65,535 on most adapters)");
    }
    if opts.stride.0 == 0 || opts.stride.1 == 0 || opts.dilation.0 == 0 || opts.dilation.1 == 0 {
        bad!("stride and dilation must be at least 1");
    }
    let span = |k: usize, d: usize| (k - 1) * d + 1;
    let (eh, ew) = (h + 2 * opts.padding.0, wd + 2 * opts.padding.1);
    if kh == 0 || kw == 0 || span(kh, opts.dilation.0) > eh || span(kw, opts.dilation.1) > ew {
        bad!("the kernel is larger than the padded input");
    }
    ConvGeom {
        n,
        c,
        h,
        w: wd,
        o,
        oh: (eh - span(kh, opts.dilation.0)) / opts.stride.0 + 1,
        ow: (ew - span(kw, opts.dilation.1)) / opts.stride.1 + 1,
        kh,
        kw,
        stride: opts.stride,
        padding: opts.padding,
        dilation: opts.dilation,
        groups: g,
    }
}

#[track_caller]
fn four(op: &str, x: &Tensor, w: &Tensor, expect: &str) -> ([usize; 4], [usize; 4]) {
    need_f32(op, x);
    need_f32(op, w);
    same_device(op, &[x, w]);
    match (x.shape().try_into(), w.shape().try_into()) {
        (Ok(xs), Ok(ws)) => (xs, ws),
        _ => panic!("wgrad: {op}: input {:?} and weight {:?}: {expect}", x.shape(), w.shape()),
    }
}

/// `y + b` with `b` `[channels]` along axis 1 of the 4-d `y`.
#[track_caller]
fn with_bias(op: &str, y: Tensor, b: Option<&Tensor>, channels: usize) -> Tensor {
    match b {
        Some(b) if b.shape() != [channels] => {
            panic!("wgrad: {op}: the bias must have shape [{channels}] (output channels), got {:?}", b.shape())
        }
        Some(b) => y + b.reshape(&[channels, 1, 1]),
        None => y,
    }
}

/// 2-d convolution (cross-correlation, as PyTorch) of `x` [N, C, H, W] with
/// `w` [O, C/groups, KH, KW], plus `b` `[O]`.
///
/// ```
/// use wgrad::{nn, Device, Tensor};
/// # let dev = Device::new()?;
/// let x = Tensor::ones(&dev, &[1, 1, 4, 4]);
/// let w = Tensor::ones(&dev, &[2, 1, 3, 3]);
/// let y = nn::conv2d(&x, &w, None, nn::ConvOptions::default().padding(1));
/// assert_eq!(y.shape(), &[1, 2, 4, 4]);
/// assert_eq!(y.to_vec::<f32>()?[..4], [4.0, 6.0, 6.0, 4.0]);
/// # Ok::<(), wgrad::Error>(())
/// ```
#[track_caller]
pub fn conv2d(x: &Tensor, w: &Tensor, b: Option<&Tensor>, opts: ConvOptions) -> Tensor {
    let (xs, ws) = four("conv2d", x, w, "input must be [N, C, H, W] and weight [O, C/groups, KH, KW]");
    let geom = conv_geom("conv2d", x, w, xs, ws, opts);
    with_bias("conv2d", crate::ops::conv::conv2d(&geom, x, w), b, geom.o)
}

/// 1-d convolution (cross-correlation, as PyTorch) of `x` [N, C, L] with
/// `w` [O, C/groups, K], plus `b` `[O]`: [`conv2d`] of rows of height 1
/// (views, so the same single dispatch and gradients).
///
/// ```
/// use wgrad::{nn, Device, Tensor};
/// # let dev = Device::new()?;
/// let x = Tensor::from_slice(&dev, &[1.0f32, 2.0, 3.0, 4.0], &[1, 1, 4]);
/// let w = Tensor::from_slice(&dev, &[1.0f32, -1.0], &[1, 1, 2]);
/// let y = nn::conv1d(&x, &w, None, nn::Conv1dOptions::default().dilation(2));
/// assert_eq!(y.to_vec::<f32>()?, vec![-2.0, -2.0]);
/// # Ok::<(), wgrad::Error>(())
/// ```
#[track_caller]
pub fn conv1d(x: &Tensor, w: &Tensor, b: Option<&Tensor>, opts: Conv1dOptions) -> Tensor {
    need_f32("conv1d", x);
    need_f32("conv1d", w);
    same_device("conv1d", &[x, w]);
    let (Ok([n, c, l]), Ok([o, cg, k])): (Result<[usize; 3], _>, Result<[usize; 3], _>) =
        (x.shape().try_into(), w.shape().try_into())
    else {
        panic!("wgrad: conv1d: input {:?} must be [N, C, L] and weight {:?} [O, C/groups, K]", x.shape(), w.shape());
    };
    let opts2 = ConvOptions {
        stride: (1, opts.stride),
        padding: (0, opts.padding),
        dilation: (1, opts.dilation),
        groups: opts.groups,
    };
    let geom = conv_geom("conv1d", x, w, [n, c, 1, l], [o, cg, 1, k], opts2);
    let y = crate::ops::conv::conv2d(&geom, &x.unsqueeze(2), &w.unsqueeze(2));
    with_bias("conv1d", y, b, o).squeeze(2)
}

/// Transposed 2-d convolution of `x` [N, C_in, H, W] with `w`
/// [C_in, C_out/groups, KH, KW] (PyTorch's layout), plus `b` `[C_out]`, as
/// PyTorch's `conv_transpose2d`: the output is [N, C_out, OH, OW] with
/// OH = (H − 1)·stride − 2·padding + dilation·(KH − 1) + output_padding + 1
/// (OW likewise). It is the input gradient of `conv2d` from that output
/// shape to x's, so the same primitive (one dispatch) and the same
/// gradients. `output_padding` must be below the stride (PyTorch also
/// allows it below the dilation).
///
/// ```
/// use wgrad::{nn, Device, Tensor};
/// # let dev = Device::new()?;
/// let x = Tensor::ones(&dev, &[1, 1, 2, 2]);
/// let w = Tensor::ones(&dev, &[1, 1, 2, 2]);
/// let y = nn::conv_transpose2d(&x, &w, None, nn::ConvOptions::default().stride(2), (1, 0));
/// assert_eq!(y.shape(), &[1, 1, 5, 4]);
/// # Ok::<(), wgrad::Error>(())
/// ```
#[track_caller]
pub fn conv_transpose2d(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    opts: ConvOptions,
    output_padding: (usize, usize),
) -> Tensor {
    let op = "conv_transpose2d";
    let ([n, cin, h, wd], [wcin, cog, kh, kw]) =
        four(op, x, w, "input must be [N, C_in, H, W] and weight [C_in, C_out/groups, KH, KW]");
    let full = |len: usize, s: usize, p: usize, d: usize, k: usize, op: usize| {
        ((len.max(1) - 1) * s + d * (k.max(1) - 1) + op + 1).checked_sub(2 * p).filter(|&v| v > 0)
    };
    let (oh, ow) = (
        full(h, opts.stride.0, opts.padding.0, opts.dilation.0, kh, output_padding.0),
        full(wd, opts.stride.1, opts.padding.1, opts.dilation.1, kw, output_padding.1),
    );
    let (Some(oh), Some(ow)) = (oh, ow) else {
        panic!(
            "wgrad: {op}: input {:?} and weight {:?} with {opts:?} and output padding {output_padding:?}: \
             the output would be empty",
            x.shape(),
            w.shape()
        );
    };
    if wcin != cin || h == 0 || wd == 0 || output_padding.0 >= opts.stride.0 || output_padding.1 >= opts.stride.1 {
        panic!(
            "wgrad: {op}: input {:?} and weight {:?} with {opts:?} and output padding {output_padding:?}: \
             the weight must be [C_in, C_out/groups, KH, KW] and the output padding below the stride",
            x.shape(),
            w.shape()
        );
    }
    let cout = cog * opts.groups;
    // the convolution from the output [N, C_out, OH, OW] to x
    let geom = conv_geom(op, x, w, [n, cout, oh, ow], [cin, cog, kh, kw], opts);
    debug_assert_eq!((geom.oh, geom.ow), (h, wd));
    with_bias(op, crate::ops::conv::conv_transpose2d(&geom, x, w), b, cout)
}
