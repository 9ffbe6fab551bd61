//! Gradients of every primitive: the GPU's VJP against central differences
//! of the f64 reference (one row per op), and against f32 finite differences
//! on the GPU (`gradcheck`); second derivatives through grad of grad.

mod common;

use common::*;
use wgrad::{DType, GradcheckOptions, Norm, ScatterReduce, Tensor, grad, gradcheck, hvp, hvp_rev, jvp};

type GpuFn = fn(&[Tensor]) -> Tensor;
type RefFn = fn(&[Array]) -> Array;

struct Case {
    name: &'static str,
    shapes: &'static [&'static [usize]],
    gpu: GpuFn,
    cpu: RefFn,
    /// input domain; `away` keeps |x| ≥ 0.1 (kinks of abs, relu, ...)
    lo: f64,
    hi: f64,
    away: bool,
}

fn idx_u32(v: &[u32], shape: &[usize]) -> Tensor {
    Tensor::from_slice(dev(), v, shape)
}

#[rustfmt::skip]
const CASES: &[Case] = &[
    // unary maps
    Case { name: "neg",      shapes: &[&[3, 4]], gpu: |x| -&x[0],          cpu: |x| x[0].map(|v| -v),        lo: -2.0, hi: 2.0, away: false },
    Case { name: "abs",      shapes: &[&[3, 4]], gpu: |x| x[0].abs(),      cpu: |x| x[0].map(f64::abs),      lo: -2.0, hi: 2.0, away: true },
    Case { name: "sign",     shapes: &[&[5]],    gpu: |x| x[0].sign(),     cpu: |x| x[0].map(f64::signum),   lo: -2.0, hi: 2.0, away: true },
    Case { name: "exp",      shapes: &[&[3, 4]], gpu: |x| x[0].exp(),      cpu: |x| x[0].map(f64::exp),      lo: -2.0, hi: 2.0, away: false },
    Case { name: "log",      shapes: &[&[3, 4]], gpu: |x| x[0].log(),      cpu: |x| x[0].map(f64::ln),       lo: 0.2, hi: 3.0, away: false },
    Case { name: "sqrt",     shapes: &[&[3, 4]], gpu: |x| x[0].sqrt(),     cpu: |x| x[0].map(f64::sqrt),     lo: 0.2, hi: 3.0, away: false },
    Case { name: "rsqrt",    shapes: &[&[3, 4]], gpu: |x| x[0].rsqrt(),    cpu: |x| x[0].map(|v| 1.0 / v.sqrt()), lo: 0.2, hi: 3.0, away: false },
    Case { name: "recip",    shapes: &[&[3, 4]], gpu: |x| x[0].recip(),    cpu: |x| x[0].map(|v| 1.0 / v),   lo: 0.2, hi: 3.0, away: false },
    Case { name: "sin",      shapes: &[&[3, 4]], gpu: |x| x[0].sin(),      cpu: |x| x[0].map(f64::sin),      lo: -3.0, hi: 3.0, away: false },
    Case { name: "cos",      shapes: &[&[3, 4]], gpu: |x| x[0].cos(),      cpu: |x| x[0].map(f64::cos),      lo: -3.0, hi: 3.0, away: false },
    Case { name: "tanh",     shapes: &[&[3, 4]], gpu: |x| x[0].tanh(),     cpu: |x| x[0].map(f64::tanh),     lo: -2.0, hi: 2.0, away: false },
    Case { name: "sigmoid",  shapes: &[&[3, 4]], gpu: |x| x[0].sigmoid(),  cpu: |x| x[0].map(|v| 1.0 / (1.0 + (-v).exp())), lo: -3.0, hi: 3.0, away: false },
    Case { name: "relu",     shapes: &[&[3, 4]], gpu: |x| x[0].relu(),     cpu: |x| x[0].map(|v| v.max(0.0)), lo: -2.0, hi: 2.0, away: true },
    Case { name: "gelu",     shapes: &[&[3, 4]], gpu: |x| x[0].gelu(),     cpu: |x| x[0].map(|v| 0.5 * v * (1.0 + libm::erf(v / 2f64.sqrt()))), lo: -3.0, hi: 3.0, away: false },
    Case { name: "softplus", shapes: &[&[3, 4]], gpu: |x| x[0].softplus(), cpu: |x| x[0].map(|v| v.exp().ln_1p()), lo: -3.0, hi: 3.0, away: false },
    Case { name: "erf",      shapes: &[&[3, 4]], gpu: |x| x[0].erf(),      cpu: |x| x[0].map(libm::erf),     lo: -2.0, hi: 2.0, away: false },
    Case { name: "softsign", shapes: &[&[3, 4]], gpu: |x| x[0].softsign(), cpu: |x| x[0].map(|v| v / (1.0 + v.abs())), lo: -3.0, hi: 3.0, away: false },
    Case { name: "tan",      shapes: &[&[3, 4]], gpu: |x| x[0].tan(),      cpu: |x| x[0].map(f64::tan),      lo: -1.2, hi: 1.2, away: false },
    Case { name: "asin",     shapes: &[&[3, 4]], gpu: |x| x[0].asin(),     cpu: |x| x[0].map(f64::asin),     lo: -0.9, hi: 0.9, away: false },
    Case { name: "acos",     shapes: &[&[3, 4]], gpu: |x| x[0].acos(),     cpu: |x| x[0].map(f64::acos),     lo: -0.9, hi: 0.9, away: false },
    Case { name: "atan",     shapes: &[&[3, 4]], gpu: |x| x[0].atan(),     cpu: |x| x[0].map(f64::atan),     lo: -3.0, hi: 3.0, away: false },
    Case { name: "sinh",     shapes: &[&[3, 4]], gpu: |x| x[0].sinh(),     cpu: |x| x[0].map(f64::sinh),     lo: -2.0, hi: 2.0, away: false },
    Case { name: "cosh",     shapes: &[&[3, 4]], gpu: |x| x[0].cosh(),     cpu: |x| x[0].map(f64::cosh),     lo: -2.0, hi: 2.0, away: false },
    Case { name: "asinh",    shapes: &[&[3, 4]], gpu: |x| x[0].asinh(),    cpu: |x| x[0].map(f64::asinh),    lo: -3.0, hi: 3.0, away: false },
    Case { name: "acosh",    shapes: &[&[3, 4]], gpu: |x| x[0].acosh(),    cpu: |x| x[0].map(f64::acosh),    lo: 1.2, hi: 3.0, away: false },
    Case { name: "atanh",    shapes: &[&[3, 4]], gpu: |x| x[0].atanh(),    cpu: |x| x[0].map(f64::atanh),    lo: -0.9, hi: 0.9, away: false },
    Case { name: "log1p",    shapes: &[&[3, 4]], gpu: |x| x[0].log1p(),    cpu: |x| x[0].map(f64::ln_1p),    lo: -0.8, hi: 3.0, away: false },
    Case { name: "expm1",    shapes: &[&[3, 4]], gpu: |x| x[0].expm1(),    cpu: |x| x[0].map(f64::exp_m1),   lo: -2.0, hi: 2.0, away: false },
    Case { name: "log2",     shapes: &[&[3, 4]], gpu: |x| x[0].log2(),     cpu: |x| x[0].map(f64::log2),     lo: 0.2, hi: 3.0, away: false },
    Case { name: "exp2",     shapes: &[&[3, 4]], gpu: |x| x[0].exp2(),     cpu: |x| x[0].map(f64::exp2),     lo: -2.0, hi: 2.0, away: false },
    Case { name: "floor",    shapes: &[&[5]],    gpu: |x| x[0].floor(),    cpu: |x| x[0].map(f64::floor),    lo: 0.1, hi: 0.9, away: false },
    Case { name: "ceil",     shapes: &[&[5]],    gpu: |x| x[0].ceil(),     cpu: |x| x[0].map(f64::ceil),     lo: 0.1, hi: 0.9, away: false },
    Case { name: "round",    shapes: &[&[5]],    gpu: |x| x[0].round(),    cpu: |x| x[0].map(f64::round),    lo: 0.1, hi: 0.4, away: false },
    Case { name: "trunc",    shapes: &[&[5]],    gpu: |x| x[0].trunc(),    cpu: |x| x[0].map(f64::trunc),    lo: 1.1, hi: 1.9, away: false },
    Case { name: "silu",     shapes: &[&[3, 4]], gpu: |x| x[0].silu(),     cpu: |x| x[0].map(|v| v / (1.0 + (-v).exp())), lo: -3.0, hi: 3.0, away: false },
    Case { name: "mish",     shapes: &[&[3, 4]], gpu: |x| x[0].mish(),     cpu: |x| x[0].map(|v| v * v.exp().ln_1p().tanh()), lo: -3.0, hi: 3.0, away: false },
    Case { name: "hardsigmoid", shapes: &[&[3, 4]], gpu: |x| x[0].hardsigmoid(), cpu: |x| x[0].map(|v| (v / 6.0 + 0.5).clamp(0.0, 1.0)), lo: -2.9, hi: 2.9, away: false },
    Case { name: "logsigmoid", shapes: &[&[3, 4]], gpu: |x| x[0].logsigmoid(), cpu: |x| x[0].map(|v| -(-v).exp().ln_1p()), lo: -3.0, hi: 3.0, away: false },
    Case { name: "clamp",    shapes: &[&[3, 4]], gpu: |x| x[0].clamp(-0.5, 1.0), cpu: |x| x[0].map(|v| v.clamp(-0.5, 1.0)), lo: -2.0, hi: 2.0, away: false },
    Case { name: "hardtanh", shapes: &[&[3, 4]], gpu: |x| x[0].hardtanh(), cpu: |x| x[0].map(|v| v.clamp(-1.0, 1.0)), lo: -2.0, hi: 2.0, away: false },
    // binary maps, broadcasting both ways
    Case { name: "add",      shapes: &[&[3, 4], &[4]], gpu: |x| &x[0] + &x[1], cpu: |x| x[0].zip(&x[1], |a, b| a + b), lo: -2.0, hi: 2.0, away: false },
    Case { name: "sub",      shapes: &[&[3, 1], &[4]], gpu: |x| &x[0] - &x[1], cpu: |x| x[0].zip(&x[1], |a, b| a - b), lo: -2.0, hi: 2.0, away: false },
    Case { name: "mul",      shapes: &[&[2, 3, 4], &[3, 1]], gpu: |x| &x[0] * &x[1], cpu: |x| x[0].zip(&x[1], |a, b| a * b), lo: -2.0, hi: 2.0, away: false },
    Case { name: "div",      shapes: &[&[3, 4], &[3, 4]], gpu: |x| &x[0] / &x[1], cpu: |x| x[0].zip(&x[1], |a, b| a / b), lo: 0.5, hi: 2.0, away: false },
    Case { name: "pow",      shapes: &[&[3, 4], &[4]], gpu: |x| x[0].pow(&x[1]), cpu: |x| x[0].zip(&x[1], f64::powf), lo: 0.5, hi: 2.0, away: false },
    Case { name: "maximum",  shapes: &[&[3, 4], &[3, 4]], gpu: |x| x[0].maximum(&x[1]), cpu: |x| x[0].zip(&x[1], f64::max), lo: -2.0, hi: 2.0, away: false },
    Case { name: "minimum",  shapes: &[&[3, 4], &[4]], gpu: |x| x[0].minimum(&x[1]), cpu: |x| x[0].zip(&x[1], f64::min), lo: -2.0, hi: 2.0, away: false },
    Case { name: "x*s",      shapes: &[&[3, 4]], gpu: |x| &x[0] * 2.5,      cpu: |x| x[0].map(|v| v * 2.5),      lo: -2.0, hi: 2.0, away: false },
    Case { name: "s-x",      shapes: &[&[3, 4]], gpu: |x| 2.5 - &x[0],      cpu: |x| x[0].map(|v| 2.5 - v),      lo: -2.0, hi: 2.0, away: false },
    Case { name: "s/x",      shapes: &[&[3, 4]], gpu: |x| 2.0 / &x[0],      cpu: |x| x[0].map(|v| 2.0 / v),      lo: 0.5, hi: 2.0, away: false },
    Case { name: "x/s",      shapes: &[&[3, 4]], gpu: |x| &x[0] / 4.0,      cpu: |x| x[0].map(|v| v / 4.0),      lo: -2.0, hi: 2.0, away: false },
    Case { name: "x^3",      shapes: &[&[3, 4]], gpu: |x| x[0].pow(3.0),    cpu: |x| x[0].map(|v| v.powi(3)),    lo: -2.0, hi: 2.0, away: false },
    Case { name: "2^x",      shapes: &[&[3, 4]], gpu: |x| x[0].exp() * 0.0 + &Tensor::full(dev(), &[], 2.0f32).pow(&x[0]), cpu: |x| x[0].map(|v| 2f64.powf(v)), lo: -2.0, hi: 2.0, away: false },
    Case { name: "max(x,s)", shapes: &[&[3, 4]], gpu: |x| x[0].maximum(0.3), cpu: |x| x[0].map(|v| v.max(0.3f32 as f64)), lo: -2.0, hi: 2.0, away: false },
    Case { name: "where",    shapes: &[&[3, 4], &[4]], gpu: |x| idx_u32(&[1, 0, 0, 1], &[4]).where_(&x[0], &x[1]), cpu: |x| Array::new(&[4], vec![1.0, 0.0, 0.0, 1.0]).where_(&x[0], &x[1]), lo: -2.0, hi: 2.0, away: false },
    Case { name: "atan2",    shapes: &[&[3, 4], &[4]], gpu: |x| x[0].atan2(&x[1]), cpu: |x| x[0].zip(&x[1], f64::atan2), lo: -2.0, hi: 2.0, away: true },
    Case { name: "fmod",     shapes: &[&[3, 4], &[4]], gpu: |x| x[0].fmod(&x[1]), cpu: |x| x[0].zip(&x[1], |a, b| a % b), lo: 0.5, hi: 3.0, away: false },
    Case { name: "remainder", shapes: &[&[3, 4], &[4]], gpu: |x| (-&x[0]).remainder(&x[1]), cpu: |x| x[0].zip(&x[1], |a, b| (-a).rem_euclid(b)), lo: 0.5, hi: 3.0, away: false },
    Case { name: "s%x",      shapes: &[&[3, 4]], gpu: |x| Tensor::full(dev(), &[], 2.5f32).remainder(&x[0]), cpu: |x| x[0].map(|b| 2.5f64.rem_euclid(b)), lo: 0.4, hi: 3.0, away: false },
    Case { name: "atan2(x,s)", shapes: &[&[3, 4]], gpu: |x| x[0].atan2(0.7), cpu: |x| x[0].map(|a| a.atan2(0.7f32 as f64)), lo: -2.0, hi: 2.0, away: false },
    Case { name: "lerp",     shapes: &[&[3, 4], &[4], &[3, 1]], gpu: |x| x[0].lerp(&x[1], &x[2]), cpu: |x| x[0].zip(&x[1].zip(&x[0], |b, a| b - a).zip(&x[2], |d, w| d * w), |a, s| a + s), lo: -2.0, hi: 2.0, away: false },
    Case { name: "clamp tensors", shapes: &[&[3, 4], &[4], &[3, 1]], gpu: |x| x[0].clamp(&x[1], &(&x[2] + 2.0)), cpu: |x| { let hi = x[2].map(|v| v + 2.0); x[0].zip(&x[1], f64::max).zip(&hi, f64::min) }, lo: -2.0, hi: 2.0, away: false },
    Case { name: "masked_fill", shapes: &[&[3, 4], &[4]], gpu: |x| x[0].masked_fill(&idx_u32(&[1, 0, 0, 1], &[4]), &x[1]), cpu: |x| Array::new(&[4], vec![1.0, 0.0, 0.0, 1.0]).where_(&x[1], &x[0]), lo: -2.0, hi: 2.0, away: false },
    // reductions and rows
    Case { name: "sum",      shapes: &[&[2, 3, 4]], gpu: |x| x[0].sum(&[0, 2], false),   cpu: |x| x[0].sum(&[0, 2], false), lo: -2.0, hi: 2.0, away: false },
    Case { name: "sum kd",   shapes: &[&[2, 3, 4]], gpu: |x| x[0].sum(&[1], true),       cpu: |x| x[0].sum(&[1], true),     lo: -2.0, hi: 2.0, away: false },
    Case { name: "mean",     shapes: &[&[3, 4]],    gpu: |x| x[0].mean(&[1], false),     cpu: |x| x[0].mean(&[1], false),   lo: -2.0, hi: 2.0, away: false },
    Case { name: "max",      shapes: &[&[3, 4]],    gpu: |x| x[0].max(&[1], false),      cpu: |x| x[0].max(&[1], false),    lo: -2.0, hi: 2.0, away: false },
    Case { name: "min",      shapes: &[&[3, 4]],    gpu: |x| x[0].min(&[0], true),       cpu: |x| x[0].min(&[0], true),     lo: -2.0, hi: 2.0, away: false },
    Case { name: "logsumexp",shapes: &[&[2, 3, 4]], gpu: |x| x[0].logsumexp(&[0, 2], false), cpu: |x| x[0].logsumexp(&[0, 2], false), lo: -2.0, hi: 2.0, away: false },
    Case { name: "prod",     shapes: &[&[2, 3, 4]], gpu: |x| x[0].prod(&[0, 2], false),  cpu: |x| prod_ref(&x[0], &[0, 2], false), lo: -2.0, hi: 2.0, away: false },
    Case { name: "prod kd",  shapes: &[&[3, 4]],    gpu: |x| x[0].prod(&[1], true),      cpu: |x| prod_ref(&x[0], &[1], true), lo: -2.0, hi: 2.0, away: false },
    Case { name: "prod_all", shapes: &[&[2, 3]],    gpu: |x| x[0].t().prod_all(),        cpu: |x| prod_ref(&x[0], &[0, 1], false), lo: -2.0, hi: 2.0, away: false },
    Case { name: "var",      shapes: &[&[3, 4]],    gpu: |x| x[0].var(&[1], 1, false),   cpu: |x| var_ref(&x[0], &[1], 1, false), lo: -2.0, hi: 2.0, away: false },
    Case { name: "std",      shapes: &[&[2, 3, 4]], gpu: |x| x[0].std(&[0, 2], 0, true), cpu: |x| var_ref(&x[0], &[0, 2], 0, true).map(f64::sqrt), lo: -2.0, hi: 2.0, away: false },
    Case { name: "norm L1",  shapes: &[&[3, 4]],    gpu: |x| x[0].norm(Norm::L1, &[1], false), cpu: |x| x[0].abs().sum(&[1], false), lo: -2.0, hi: 2.0, away: true },
    Case { name: "norm L2",  shapes: &[&[2, 3, 4]], gpu: |x| x[0].norm(Norm::L2, &[0, 2], false), cpu: |x| x[0].map(|v| v * v).sum(&[0, 2], false).map(f64::sqrt), lo: -2.0, hi: 2.0, away: false },
    Case { name: "norm Inf", shapes: &[&[3, 4]],    gpu: |x| x[0].norm(Norm::Inf, &[0], true), cpu: |x| x[0].abs().max(&[0], true), lo: -2.0, hi: 2.0, away: true },
    Case { name: "norm NegInf", shapes: &[&[3, 4]], gpu: |x| x[0].norm(Norm::NegInf, &[1], false), cpu: |x| x[0].abs().min(&[1], false), lo: -2.0, hi: 2.0, away: true },
    Case { name: "norm Fro", shapes: &[&[2, 3, 4]], gpu: |x| x[0].norm(Norm::Fro, &[-1, -2], false), cpu: |x| x[0].map(|v| v * v).sum(&[1, 2], false).map(f64::sqrt), lo: -2.0, hi: 2.0, away: false },
    Case { name: "softmax",  shapes: &[&[3, 4]],    gpu: |x| x[0].softmax(0),            cpu: |x| x[0].softmax(0),          lo: -2.0, hi: 2.0, away: false },
    Case { name: "log_softmax", shapes: &[&[3, 4]], gpu: |x| x[0].log_softmax(-1),       cpu: |x| x[0].log_softmax(1),      lo: -2.0, hi: 2.0, away: false },
    // matmul, including broadcast batches and transposed views
    Case { name: "matmul",   shapes: &[&[3, 4], &[4, 5]],    gpu: |x| x[0].matmul(&x[1]), cpu: |x| x[0].matmul_with_scale(&x[1]).0, lo: -2.0, hi: 2.0, away: false },
    Case { name: "einsum ij,kj->ik", shapes: &[&[3, 4], &[5, 4]], gpu: |x| Tensor::einsum("ij,kj->ik", &[&x[0], &x[1]]), cpu: |x| x[0].matmul_with_scale(&x[1].t()).0, lo: -2.0, hi: 2.0, away: false },
    Case { name: "einsum ij,ij->i", shapes: &[&[3, 4], &[3, 4]], gpu: |x| Tensor::einsum("ij,ij->i", &[&x[0], &x[1]]), cpu: |x| x[0].zip(&x[1], |a, b| a * b).sum(&[1], false), lo: -2.0, hi: 2.0, away: false },
    Case { name: "bmm",      shapes: &[&[2, 3, 4], &[4, 5]], gpu: |x| x[0].matmul(&x[1]), cpu: |x| x[0].matmul_with_scale(&x[1]).0, lo: -2.0, hi: 2.0, away: false },
    Case { name: "matmul tᵀ",shapes: &[&[4, 3], &[5, 4]],    gpu: |x| x[0].t().matmul(&x[1].t()), cpu: |x| x[0].t().matmul_with_scale(&x[1].t()).0, lo: -2.0, hi: 2.0, away: false },
    // layout
    Case { name: "reshape",  shapes: &[&[3, 4]],    gpu: |x| x[0].reshape(&[2, 6]),      cpu: |x| x[0].reshape(&[2, 6]),    lo: -2.0, hi: 2.0, away: false },
    Case { name: "permute",  shapes: &[&[2, 3, 4]], gpu: |x| x[0].permute(&[2, 0, 1]),   cpu: |x| x[0].permute(&[2, 0, 1]), lo: -2.0, hi: 2.0, away: false },
    Case { name: "reshape of view", shapes: &[&[3, 4]], gpu: |x| x[0].t().reshape(&[12]), cpu: |x| x[0].t().reshape(&[12]), lo: -2.0, hi: 2.0, away: false },
    Case { name: "expand",   shapes: &[&[3, 1]],    gpu: |x| x[0].expand(&[2, 3, 4]),    cpu: |x| x[0].expand(&[2, 3, 4]),  lo: -2.0, hi: 2.0, away: false },
    Case { name: "narrow",   shapes: &[&[3, 5]],    gpu: |x| x[0].narrow(1, 1, 3),       cpu: |x| x[0].narrow(1, 1, 3),     lo: -2.0, hi: 2.0, away: false },
    Case { name: "pad",      shapes: &[&[3, 4]],    gpu: |x| x[0].pad(&[(1, 0), (2, 1)], 0.5), cpu: |x| x[0].pad(&[(1, 0), (2, 1)], 0.5), lo: -2.0, hi: 2.0, away: false },
    Case { name: "cat",      shapes: &[&[2, 3], &[4, 3]], gpu: |x| Tensor::cat(&[&x[0], &x[1], &x[0]], 0), cpu: |x| Array::cat(&[&x[0], &x[1], &x[0]], 0), lo: -2.0, hi: 2.0, away: false },
    Case { name: "stack",    shapes: &[&[3], &[3]], gpu: |x| Tensor::stack(&[&x[0], &x[1]], 1), cpu: |x| Array::cat(&[&x[0].reshape(&[3, 1]), &x[1].reshape(&[3, 1])], 1), lo: -2.0, hi: 2.0, away: false },
    Case { name: "index_select", shapes: &[&[4, 3]], gpu: |x| x[0].index_select(0, &idx_u32(&[3, 0, 3, 1], &[4])), cpu: |x| x[0].index_select(0, &[3, 0, 3, 1]), lo: -2.0, hi: 2.0, away: false },
    Case { name: "index_select axis 1", shapes: &[&[2, 4, 3]], gpu: |x| x[0].index_select(1, &idx_u32(&[3, 0, 3, 1, 2], &[5])), cpu: |x| x[0].index_select(1, &[3, 0, 3, 1, 2]), lo: -2.0, hi: 2.0, away: false },
    Case { name: "gather",   shapes: &[&[3, 4]],    gpu: |x| x[0].gather(1, &idx_u32(&[0, 0, 3, 2, 1, 1], &[3, 2])), cpu: |x| x[0].gather(1, &Array::new(&[3, 2], vec![0.0, 0.0, 3.0, 2.0, 1.0, 1.0])), lo: -2.0, hi: 2.0, away: false },
    Case { name: "scatter_add", shapes: &[&[3, 2], &[4, 2]], gpu: |x| x[0].scatter_add(0, &idx_u32(&[0, 2, 2, 2, 0, 1, 0, 0], &[4, 2]), &x[1]), cpu: |x| x[0].scatter_add(0, &Array::new(&[4, 2], vec![0.0, 2.0, 2.0, 2.0, 0.0, 1.0, 0.0, 0.0]), &x[1]), lo: -2.0, hi: 2.0, away: false },
    // layout and indexing: flip, roll, repeat, views with steps, triangles, scatters
    Case { name: "flip",     shapes: &[&[3, 4]],    gpu: |x| x[0].flip(&[0, 1]),         cpu: |x| x[0].flip(&[0, 1]),       lo: -2.0, hi: 2.0, away: false },
    Case { name: "roll",     shapes: &[&[3, 4]],    gpu: |x| x[0].roll(&[-1, 5], &[1, 0]), cpu: |x| x[0].roll(&[-1, 5], &[1, 0]), lo: -2.0, hi: 2.0, away: false },
    Case { name: "repeat",   shapes: &[&[3, 2]],    gpu: |x| x[0].repeat(&[2, 1, 3]),    cpu: |x| x[0].repeat(&[2, 1, 3]),  lo: -2.0, hi: 2.0, away: false },
    Case { name: "chunk",    shapes: &[&[5, 2]],    gpu: |x| { let c = x[0].chunk(2, 0); Tensor::cat(&[&c[1], &c[0]], 0) }, cpu: |x| Array::cat(&[&x[0].narrow(0, 3, 2), &x[0].narrow(0, 0, 3)], 0), lo: -2.0, hi: 2.0, away: false },
    Case { name: "slice",    shapes: &[&[3, 7]],    gpu: |x| x[0].slice(1, 1, 7, 3).square(), cpu: |x| x[0].slice(1, 1, 7, 3).map(|v| v * v), lo: -2.0, hi: 2.0, away: false },
    Case { name: "diagonal", shapes: &[&[2, 3, 4]], gpu: |x| x[0].diagonal(1, 2, 1).square(), cpu: |x| x[0].diagonal(1, 2, 1).map(|v| v * v), lo: -2.0, hi: 2.0, away: false },
    Case { name: "diag vec", shapes: &[&[3]],       gpu: |x| x[0].diag(-1).square(),     cpu: |x| x[0].diag_matrix(-1).map(|v| v * v), lo: -2.0, hi: 2.0, away: false },
    Case { name: "diag mat", shapes: &[&[4, 4]],    gpu: |x| x[0].diag(1),               cpu: |x| x[0].diagonal(1, 0, 1),   lo: -2.0, hi: 2.0, away: false },
    Case { name: "tril",     shapes: &[&[2, 3, 4]], gpu: |x| x[0].tril(1),               cpu: |x| x[0].triangle(1, false),  lo: -2.0, hi: 2.0, away: false },
    Case { name: "triu",     shapes: &[&[3, 4]],    gpu: |x| x[0].triu(-1),              cpu: |x| x[0].triangle(-1, true),  lo: -2.0, hi: 2.0, away: false },
    Case { name: "index_add", shapes: &[&[3, 2], &[3, 4]], gpu: |x| x[0].index_add(1, &idx_u32(&[1, 0, 1, 1], &[4]), &x[1]), cpu: |x| x[0].index_add(1, &[1, 0, 1, 1], &x[1]), lo: -2.0, hi: 2.0, away: false },
    Case { name: "scatter sum",  shapes: &[&[3, 2], &[4, 2]], gpu: |x| x[0].scatter_reduce(0, &idx_u32(&SCATTER_IDX, &[4, 2]), &x[1], ScatterReduce::Sum, false), cpu: |x| x[0].scatter_reduce(0, &scatter_idx(), &x[1], "sum", false), lo: -2.0, hi: 2.0, away: false },
    Case { name: "scatter mean", shapes: &[&[3, 2], &[4, 2]], gpu: |x| x[0].scatter_reduce(0, &idx_u32(&SCATTER_IDX, &[4, 2]), &x[1], ScatterReduce::Mean, true), cpu: |x| x[0].scatter_reduce(0, &scatter_idx(), &x[1], "mean", true), lo: -2.0, hi: 2.0, away: false },
    Case { name: "scatter mean -self", shapes: &[&[3, 2], &[4, 2]], gpu: |x| x[0].scatter_reduce(0, &idx_u32(&SCATTER_IDX, &[4, 2]), &x[1], ScatterReduce::Mean, false), cpu: |x| x[0].scatter_reduce(0, &scatter_idx(), &x[1], "mean", false), lo: -2.0, hi: 2.0, away: false },
    Case { name: "scatter prod", shapes: &[&[3, 2], &[4, 2]], gpu: |x| x[0].scatter_reduce(0, &idx_u32(&SCATTER_IDX, &[4, 2]), &x[1], ScatterReduce::Prod, true), cpu: |x| x[0].scatter_reduce(0, &scatter_idx(), &x[1], "prod", true), lo: -2.0, hi: 2.0, away: false },
    Case { name: "scatter prod -self", shapes: &[&[3, 2], &[4, 2]], gpu: |x| x[0].scatter_reduce(0, &idx_u32(&SCATTER_IDX, &[4, 2]), &x[1], ScatterReduce::Prod, false), cpu: |x| x[0].scatter_reduce(0, &scatter_idx(), &x[1], "prod", false), lo: -2.0, hi: 2.0, away: false },
    Case { name: "scatter amax", shapes: &[&[3, 2], &[4, 2]], gpu: |x| x[0].scatter_reduce(0, &idx_u32(&SCATTER_IDX, &[4, 2]), &x[1], ScatterReduce::Amax, true), cpu: |x| x[0].scatter_reduce(0, &scatter_idx(), &x[1], "amax", true), lo: -2.0, hi: 2.0, away: false },
    Case { name: "scatter amin -self", shapes: &[&[3, 2], &[4, 2]], gpu: |x| x[0].scatter_reduce(0, &idx_u32(&SCATTER_IDX, &[4, 2]), &x[1], ScatterReduce::Amin, false), cpu: |x| x[0].scatter_reduce(0, &scatter_idx(), &x[1], "amin", false), lo: -2.0, hi: 2.0, away: false },
    Case { name: "index_put", shapes: &[&[3, 4, 2], &[4, 2]], gpu: |x| x[0].index_put(&[&idx_u32(&[2, 0, 2, 1], &[4]), &idx_u32(&[3, 1, 3, 0], &[4])], &x[1], false), cpu: |x| x[0].index_put(&[&[2, 0, 2, 1], &[3, 1, 3, 0]], &x[1], false), lo: -2.0, hi: 2.0, away: false },
    Case { name: "index_put acc", shapes: &[&[3, 4, 2], &[4, 2]], gpu: |x| x[0].index_put(&[&idx_u32(&[2, 0, 2, 1], &[4]), &idx_u32(&[3, 1, 3, 0], &[4])], &x[1], true), cpu: |x| x[0].index_put(&[&[2, 0, 2, 1], &[3, 1, 3, 0]], &x[1], true), lo: -2.0, hi: 2.0, away: false },
    Case { name: "contiguous", shapes: &[&[3, 4]],  gpu: |x| x[0].t().contiguous(),     cpu: |x| x[0].t(),                lo: -2.0, hi: 2.0, away: false },
];

fn prod_ref(x: &Array, axes: &[usize], keepdim: bool) -> Array {
    x.reduce(axes, keepdim, 1.0, |a, b| a * b)
}

/// Σ(x − x̄)² / (N − correction).
fn var_ref(x: &Array, axes: &[usize], correction: usize, keepdim: bool) -> Array {
    let n: usize = axes.iter().map(|&d| x.shape[d]).product();
    let mean = x.mean(axes, true);
    x.zip(&mean, |v, m| (v - m) * (v - m)).sum(axes, keepdim).map(|s| s / (n - correction) as f64)
}

/// Destinations along axis 0 of a [3, 2] tensor for a [4, 2] source: row 0
/// gets three sources in column 1, row 2 none in column 0.
const SCATTER_IDX: [u32; 8] = [0, 0, 1, 0, 0, 2, 1, 0];

fn scatter_idx() -> Array {
    Array::new(&[4, 2], SCATTER_IDX.iter().map(|&i| i as f64).collect())
}

fn inputs(rng: &mut Rng, case: &Case) -> Vec<Array> {
    case.shapes
        .iter()
        .map(|s| {
            let a = rng.array(s, case.lo, case.hi);
            if case.away { a.map(|v| if v.abs() < 0.1 { v.signum() * 0.1 + v } else { v }) } else { a }
        })
        .collect()
}

/// Each VJP is a handful of f32 operations on values within their ULP
/// bounds (≤ 16 ULP for the builtins used) and sums of ≤ 24 terms, so a
/// gradient is within ~64 ULP of its own magnitude plus that of the sum it
/// came from: bound = 64u·(|g| + mean|g|). sin/cos follow WGSL's absolute
/// 2⁻¹¹ bound.
fn grad_bound(name: &str, want: &Array, w: &Array) -> Array {
    let u = f32::EPSILON as f64 / 2.0;
    let mean = want.data.iter().map(|v| v.abs()).sum::<f64>() / want.numel().max(1) as f64;
    let trig =
        if name == "sin" || name == "cos" { 4.9e-4 * w.data.iter().fold(0.0f64, |m, v| m.max(v.abs())) } else { 0.0 };
    want.map(|g| 64.0 * u * (g.abs() + mean) + trig)
}

#[test]
fn every_primitive_gradient_matches_the_reference() {
    let mut rng = Rng::new(11);
    for case in CASES {
        let xs = inputs(&mut rng, case);
        let out = (case.cpu)(&xs);
        let w = rng.array(&out.shape, -1.0, 1.0);
        let want = reference_grads(&case.cpu, &xs, &w);
        let params: Vec<Tensor> = xs.iter().map(upload).collect();
        let wt = upload(&w);
        let f = |p: &Vec<Tensor>, w: &Tensor| ((case.gpu)(p) * w).sum_all();
        let (g, loss, ()) = grad(f)(&params, &wt);
        let ref_loss: f64 = out.data.iter().zip(&w.data).map(|(a, b)| a * b).sum();
        let l: f32 = loss.item().unwrap();
        assert!((l as f64 - ref_loss).abs() < 1e-4 * (1.0 + ref_loss.abs()), "{}: loss {l} vs {ref_loss}", case.name);
        for (i, (gi, wi)) in g.iter().zip(&want).enumerate() {
            let got = download(gi);
            assert_within(&format!("{} ∂x{i}", case.name), &got, wi, &grad_bound(case.name, wi, &w));
        }
        // and the same gradient against f32 finite differences on the GPU,
        // and forward mode and second order along the same directions
        let opts = GradcheckOptions { forward: true, order: 2, ..Default::default() };
        let report = gradcheck(f, &params, &wt, &opts).unwrap();
        assert!(report.passed, "{}: gradcheck {:?}", case.name, report.failures);
    }
}

/// vᵀ·H·u from grad of grad, against the mixed second difference of the
/// f64 reference: (L(x+hu+hv) − L(x+hu−hv) − L(x−hu+hv) + L(x−hu−hv)) / 4h²,
/// accurate to O(h²) + O(ε/h²) ≈ 1e-8 with h = 1e-4.
#[test]
fn second_derivatives_match_the_reference() {
    let mut rng = Rng::new(12);
    let names = [
        "exp",
        "log",
        "sqrt",
        "rsqrt",
        "recip",
        "sin",
        "cos",
        "tanh",
        "sigmoid",
        "gelu",
        "softplus",
        "erf",
        "mul",
        "div",
        "pow",
        "x^3",
        "s/x",
        "sum",
        "mean",
        "max",
        "logsumexp",
        "softmax",
        "log_softmax",
        "matmul",
        "bmm",
        "prod",
        "prod kd",
        "prod_all",
        "var",
        "std",
        "norm L1",
        "norm L2",
        "norm Inf",
        "norm Fro",
        "slice",
        "diagonal",
        "diag vec",
        "scatter prod",
        "scatter prod -self",
        "scatter mean",
    ];
    for case in CASES.iter().filter(|c| names.contains(&c.name)) {
        let xs = inputs(&mut rng, case);
        let out = (case.cpu)(&xs);
        let w = rng.array(&out.shape, -1.0, 1.0);
        let u: Vec<Array> = xs.iter().map(|x| rng.array(&x.shape, -1.0, 1.0)).collect();
        let v: Vec<Array> = xs.iter().map(|x| rng.array(&x.shape, -1.0, 1.0)).collect();
        let loss = |xs: &[Array]| -> f64 { (case.cpu)(xs).data.iter().zip(&w.data).map(|(a, b)| a * b).sum() };
        let h = 1e-4;
        let shifted = |su: f64, sv: f64| -> f64 {
            let p: Vec<Array> = xs
                .iter()
                .zip(&u)
                .zip(&v)
                .map(|((x, u), v)| {
                    Array::new(
                        &x.shape,
                        x.data
                            .iter()
                            .zip(&u.data)
                            .zip(&v.data)
                            .map(|((x, u), v)| x + su * h * u + sv * h * v)
                            .collect(),
                    )
                })
                .collect();
            loss(&p)
        };
        let want = (shifted(1.0, 1.0) - shifted(1.0, -1.0) - shifted(-1.0, 1.0) + shifted(-1.0, -1.0)) / (4.0 * h * h);
        let params: Vec<Tensor> = xs.iter().map(upload).collect();
        let vt: Vec<Tensor> = v.iter().map(upload).collect();
        let hv = hvp(|p: &Vec<Tensor>, w: &Tensor| ((case.gpu)(p) * w).sum_all(), &params, &upload(&w), &vt);
        let mut got = 0.0f64;
        for (hvi, ui) in hv.iter().zip(&u) {
            got += download(hvi).data.iter().zip(&ui.data).map(|(a, b)| a * b).sum::<f64>();
        }
        let scale: f64 = 1.0 + want.abs();
        let trig = if case.name == "sin" || case.name == "cos" { 5e-3 } else { 0.0 };
        assert!((got - want).abs() <= 1e-4 * scale + trig, "{}: uᵀHv = {got}, reference {want}", case.name);
    }
}

#[test]
fn sign_has_zero_gradient_and_integer_inputs_are_constants() {
    let x = Tensor::from_slice(dev(), &[-1.0f32, 2.0], &[2]);
    let (g, _, ()) = grad(|x: &Tensor, _: &()| x.sign().sum_all() + x.gt(0.0).cast(DType::F32).sum_all())(&x, &());
    assert_eq!(g.to_vec::<f32>().unwrap(), vec![0.0, 0.0]);
    let (g, _, ()) = grad(|x: &Tensor, _: &()| x.argmax(0, false).cast(DType::F32) * 1.0)(&x, &());
    assert_eq!(g.to_vec::<f32>().unwrap(), vec![0.0, 0.0]);
}

#[test]
fn a_weight_used_transposed_gets_its_gradient_in_its_own_layout() {
    // y = x·wᵀ (as nn::linear): dL/dw = gᵀ·x, computed dense in w's [out, in]
    // layout, so an optimizer reads it without a transposing copy
    let x = Tensor::from_slice(dev(), &[1.0f32, 2.0, 3.0, -1.0, 0.5, 2.0], &[2, 3]);
    let w = Tensor::from_slice(dev(), &[0.5f32, -1.0, 2.0, 1.5, 0.25, -0.5, 1.0, 1.0, 1.0, -2.0, 0.0, 3.0], &[4, 3]);
    let f = |w: &Tensor, x: &Tensor| (x.matmul(&w.t()) * Tensor::arange(dev(), 1.0, 5.0, 1.0)).sum_all();
    let (g, _, ()) = grad(f)(&w, &x);
    assert!(g.is_contiguous(), "strides {:?}", g.strides());
    // dL/dw[o, i] = (o + 1)·Σ_b x[b, i]: column sums 0, 2.5, 5
    let want: Vec<f32> = (1..=4).flat_map(|o| [0.0, 2.5, 5.0].map(|s| s * o as f32)).collect();
    assert_eq!(g.to_vec::<f32>().unwrap(), want);
}

/// J·t by forward mode for the reductions built as compositions, against
/// the central difference (f(x + ht) − f(x − ht))/2h of the f64 reference
/// (h = 1e-6: O(h²) + ε·|f|/h ≈ 1e-10); the bound is the VJP's, 64u per
/// element plus 64u of the mean (each JVP is as many f32 steps as its VJP).
#[test]
fn reduction_jvps_match_directional_differences() {
    let mut rng = Rng::new(13);
    let names =
        ["prod", "prod kd", "prod_all", "var", "std", "norm L1", "norm L2", "norm Inf", "norm NegInf", "norm Fro"];
    for case in CASES.iter().filter(|c| names.contains(&c.name)) {
        let xs = inputs(&mut rng, case);
        let t = rng.array(&xs[0].shape, -1.0, 1.0);
        let h = 1e-6;
        let at = |s: f64| (case.cpu)(&[xs[0].zip(&t, |x, t| x + s * h * t)]);
        let want = at(1.0).zip(&at(-1.0), |p, m| (p - m) / (2.0 * h));
        let (y, dy) = jvp(|x: &Tensor| (case.gpu)(std::slice::from_ref(x)), &upload(&xs[0]), &upload(&t));
        let yr = (case.cpu)(&xs);
        assert_within(&format!("{} value", case.name), &download(&y), &yr, &yr.map(|v| 1e-5 * (1.0 + v.abs())));
        let bound = grad_bound(case.name, &want, &want).map(|b| b + 1e-9);
        assert_within(&format!("J·t of {}", case.name), &download(&dy), &want, &bound);
    }
}

/// The slices a reduction over `axes` folds: for each output element (in
/// order), the flat indices of its inputs.
fn slices(shape: &[usize], axes: &[usize]) -> Vec<Vec<usize>> {
    let mut by_kept: std::collections::BTreeMap<Vec<usize>, Vec<usize>> = Default::default();
    for i in 0..shape.iter().product() {
        let (mut rest, mut kept) = (i, vec![]);
        for d in (0..shape.len()).rev() {
            if !axes.contains(&d) {
                kept.push(rest % shape[d]);
            }
            rest /= shape[d];
        }
        kept.reverse();
        by_kept.entry(kept).or_default().push(i);
    }
    by_kept.into_values().collect()
}

/// L = Σ_s w_s·Π_{k∈s} x_k is multilinear: ∂_i L = w_s·Π_{k≠i} x_k and
/// ∂_i∂_j L = w_s·Π_{k≠i,j} x_k (i ≠ j in one slice s; 0 otherwise), so
/// with zeros in x the exact values are known, and exactly 0 where the
/// other factors hold a zero. The GPU's are exclusive products from both
/// ends (n − 1 roundings each, plus the product of the two and w): within
/// (2n + 2)u of Π|factors|, and a second derivative (four such scans) within
/// (4n + 4)u; with no division, a zero among the factors makes an exact 0.
#[test]
fn prod_gradient_hessian_and_jvp_are_exact_at_zeros() {
    let u = f32::EPSILON as f64 / 2.0;
    let mut rng = Rng::new(14);
    #[rustfmt::skip]
    let rows = Array::new(&[4, 5], vec![
        1.5, -0.5, 2.0, -1.25, 0.75, // no zero
        1.5, 0.0, 2.0, -1.25, 0.75,  // one zero
        0.0, -0.5, 2.0, 0.0, 0.75,   // two zeros
        1.5, -0.5, 0.0, 0.0, 0.75,   // two zeros side by side
    ]);
    // (input, axes): rows along the last axis, along the first (a strided
    // scan), and over two axes merged (a copy first)
    let cases =
        [(rows.clone(), vec![1usize]), (rows.t(), vec![0]), (rows.reshape(&[2, 2, 5]).permute(&[1, 0, 2]), vec![0, 2])];
    for (x, axes) in cases {
        let n: usize = axes.iter().map(|&d| x.shape[d]).product();
        let iaxes: Vec<isize> = axes.iter().map(|&a| a as isize).collect();
        let out = prod_ref(&x, &axes, false);
        let (w, v, t) =
            (rng.array(&out.shape, -1.0, 1.0), rng.array(&x.shape, -1.0, 1.0), rng.array(&x.shape, -1.0, 1.0));
        // reference ∂L, H·v, J·t and the scales |w|·Π|factors| they are within
        let n_in = x.numel();
        let (mut g, mut g_scale) = (vec![0.0; n_in], vec![0.0; n_in]);
        let (mut hv, mut hv_scale) = (vec![0.0; n_in], vec![0.0; n_in]);
        let (mut jt, mut jt_scale) = (vec![0.0; out.numel()], vec![0.0; out.numel()]);
        let others = |s: &[usize], skip: &[usize]| -> (f64, f64) {
            let f = s.iter().filter(|k| !skip.contains(k));
            (f.clone().map(|&k| x.data[k]).product(), f.map(|&k| x.data[k].abs()).product())
        };
        for (o, s) in slices(&x.shape, &axes).iter().enumerate() {
            for &i in s {
                let (p, pa) = others(s, &[i]);
                g[i] = w.data[o] * p;
                g_scale[i] = w.data[o].abs() * pa;
                jt[o] += t.data[i] * p;
                jt_scale[o] += (t.data[i] * pa).abs();
                for &j in s.iter().filter(|&&j| j != i) {
                    let (p, pa) = others(s, &[i, j]);
                    hv[i] += w.data[o] * p * v.data[j];
                    hv_scale[i] += (w.data[o] * v.data[j]).abs() * pa;
                }
            }
        }
        let arr = |d: Vec<f64>, shape: &[usize]| Array::new(shape, d);
        let unit = (2 * n + 2) as f64 * u;
        let what = |q: &str| format!("{q} of prod over {axes:?} of {:?}", x.shape);
        let loss = move |x: &Tensor, w: &Tensor| (x.prod(&iaxes, false) * w).sum_all();
        let (xt, wt) = (upload(&x), upload(&w));
        let (got, _, ()) = grad(loss.clone())(&xt, &wt);
        let bound = arr(g_scale, &x.shape).map(|s| unit * s);
        assert_within(&what("∂"), &download(&got), &arr(g, &x.shape), &bound);
        let bound = arr(hv_scale, &x.shape).map(|s| 2.0 * unit * s);
        let want = arr(hv, &x.shape);
        assert_within(
            &what("H·v (forward over reverse)"),
            &download(&hvp(loss.clone(), &xt, &wt, &upload(&v))),
            &want,
            &bound,
        );
        assert_within(
            &what("H·v (reverse over reverse)"),
            &download(&hvp_rev(loss, &xt, &wt, &upload(&v))),
            &want,
            &bound,
        );
        let iaxes: Vec<isize> = axes.iter().map(|&a| a as isize).collect();
        let (_, dy) = jvp(|x: &Tensor| x.prod(&iaxes, false), &xt, &upload(&t));
        let bound = arr(jt_scale, &out.shape).map(|s| unit * s);
        assert_within(&what("J·t"), &download(&dy), &arr(jt, &out.shape), &bound);
    }
}

/// Where the 2-norm or std has no derivative (x = 0, a constant slice) the
/// gradient is 0, a subgradient, and the Hessian finite (0); the ∞-norm
/// shares its gradient among tied |x|, with their signs.
#[test]
fn norm_and_std_gradients_at_their_kinks() {
    let x = Tensor::from_slice(dev(), &[0.0f32, 0.0, 0.0, 0.0, 3.0, -4.0, 0.0, 0.0], &[2, 4]);
    let w = Tensor::from_slice(dev(), &[0.5f32, 2.0], &[2]);
    let v = Tensor::from_slice(dev(), &[1.0f32, -2.0, 0.5, 1.0, 0.25, 1.0, -1.0, 2.0], &[2, 4]);
    let l2 = |x: &Tensor, w: &Tensor| (x.norm(Norm::L2, &[1], false) * w).sum_all();
    let (g, loss, ()) = grad(l2)(&x, &w);
    assert_eq!(loss.item::<f32>().unwrap(), 10.0);
    // row 1: w·x/‖x‖ = 2·(3, −4, 0, 0)/5
    assert_eq!(g.to_vec::<f32>().unwrap(), vec![0.0, 0.0, 0.0, 0.0, 1.2, -1.6, 0.0, 0.0]);
    // row 1: w·(v − x̂⟨x̂, v⟩)/‖x‖, x̂ = (0.6, −0.8, 0, 0), ⟨x̂, v⟩ = −0.65
    let hv = hvp(l2, &x, &w, &v).to_vec::<f32>().unwrap();
    let want = [0.0, 0.0, 0.0, 0.0, 0.4 * (0.25 + 0.39), 0.4 * (1.0 - 0.52), -0.4, 0.4 * 2.0];
    for (h, w) in hv.iter().zip(want) {
        assert!((h - w).abs() < 1e-6, "H·v of the 2-norm: {hv:?}, want {want:?}");
    }
    // std of a constant row (2.0: its mean is exact) and of 0, 0, 3, −3
    let x = Tensor::from_slice(dev(), &[2.0f32, 2.0, 2.0, 2.0, 0.0, 0.0, 3.0, -3.0], &[2, 4]);
    let sd = |x: &Tensor, w: &Tensor| (x.std(&[1], 0, false) * w).sum_all();
    let (g, _, ()) = grad(sd)(&x, &w);
    // row 1: w·(x − x̄)/(N·std), std = √4.5
    let s = 4.5f32.sqrt();
    let want = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 2.0 * 3.0 / (4.0 * s), -2.0 * 3.0 / (4.0 * s)];
    let got = g.to_vec::<f32>().unwrap();
    for (a, b) in got.iter().zip(want) {
        assert!((a - b).abs() < 1e-6, "∂ std: {got:?}, want {want:?}");
    }
    let hv = hvp(sd, &x, &w, &v).to_vec::<f32>().unwrap();
    assert!(hv[..4].iter().all(|&h| h == 0.0) && hv.iter().all(|h| h.is_finite()), "H·v of std: {hv:?}");
    // ∞-norm: ties of |3| and |−3| share; the ∞- and 1-norm of 0 have gradient 0
    let x = Tensor::from_slice(dev(), &[3.0f32, -3.0, 1.0, 0.0, 0.0, 0.0], &[2, 3]);
    let inf = |x: &Tensor, w: &Tensor| (x.norm(Norm::Inf, &[1], false) * w).sum_all();
    let (g, _, ()) = grad(inf)(&x, &w);
    assert_eq!(g.to_vec::<f32>().unwrap(), vec![0.25, -0.25, 0.0, 0.0, 0.0, 0.0]);
    let l1 = |x: &Tensor, w: &Tensor| (x.norm(Norm::L1, &[1], false) * w).sum_all();
    let (g, _, ()) = grad(l1)(&x, &w);
    assert_eq!(g.to_vec::<f32>().unwrap(), vec![0.5, -0.5, 0.5, 0.0, 0.0, 0.0]);
}
