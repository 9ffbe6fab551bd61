//! Matrix multiplication: 2-d, batched, with broadcasting of batch
//! dimensions and 1-d operands as in numpy. Kernel: `shaders/matmul.wgsl`.

use bytemuck::{Pod, Zeroable};

use crate::codegen::{ALoad, BLoad};
use crate::graph::{Fusable, MmInfo};
use crate::ops::{Prim, apply, need_f32, same_device};
use crate::shape::{MAX_RANK, broadcast_shapes, coalesce, pack};
use crate::tensor::Tensor;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct MmParams {
    m: u32,
    n: u32,
    k: u32,
    batch_rank: u32,
    a_off: u32,
    b_off: u32,
    a_rs: u32,
    a_cs: u32,
    b_rs: u32,
    b_cs: u32,
    k_split: u32,
    _pad: u32,
    batch_shape: [u32; MAX_RANK],
    a_bstr: [u32; MAX_RANK],
    b_bstr: [u32; MAX_RANK],
}

/// Can matrix operand `t` (rank ≥ 2; `batch`: its batch strides, merged)
/// be read four elements at a time along its last axis ([0]) or the one
/// before ([1])? The axis must be contiguous, and its length, the offset,
/// the other axis's stride and every batch stride multiples of 4, so that
/// vectors stay aligned.
fn four_wide(t: &Tensor, batch: &[usize]) -> [bool; 2] {
    let (r, s, off) = (t.rank(), t.strides(), t.layout().offset);
    let aligned = |other: usize| off % 4 == 0 && other % 4 == 0 && batch.iter().all(|b| b % 4 == 0);
    let along = |axis: usize, other: usize| t.shape()[axis] % 4 == 0 && s[axis] == 1 && aligned(s[other]);
    [along(r - 1, r - 2), along(r - 2, r - 1)]
}

/// Both operands have rank ≥ 2 here.
pub(crate) fn matmul_forward(a: &Tensor, b: &Tensor) -> Tensor {
    let (ra, rb) = (a.rank(), b.rank());
    let (m, k, n) = (a.shape()[ra - 2], a.shape()[ra - 1], b.shape()[rb - 1]);
    let batch = broadcast_shapes(&a.shape()[..ra - 2], &b.shape()[..rb - 2]).expect("checked by matmul");
    let mut out_shape = batch.clone();
    out_shape.extend([m, n]);
    let nb: usize = batch.iter().product();
    if nb * m * n == 0 || k == 0 {
        let out = Tensor::empty(a.device(), "matmul", &out_shape, a.dtype());
        crate::ops::elementwise::fill(&out, 0);
        return out;
    }
    let bview = |t: &Tensor| {
        let r = t.rank();
        let l = crate::shape::Layout {
            shape: t.shape()[..r - 2].to_vec(),
            strides: t.strides()[..r - 2].to_vec(),
            offset: 0,
        };
        l.broadcast_to(&batch).expect("checked").strides
    };
    let mut strides = vec![bview(a), bview(b)];
    let bshape = coalesce(&batch, &mut strides);
    if bshape.len() > MAX_RANK {
        panic!("wgrad: matmul: more than {MAX_RANK} batch dimensions after merging");
    }
    let (sa, sb) = (a.strides(), b.strides());
    let a_load = match four_wide(a, &strides[0]) {
        [true, _] => ALoad::AlongK,
        [_, true] => ALoad::AlongM,
        _ => ALoad::Scalar,
    };
    let b_load = match four_wide(b, &strides[1]) {
        [true, _] => BLoad::AlongN,
        [_, true] => BLoad::AlongK,
        _ => BLoad::Scalar,
    };
    let mk = a.device().inner.matmul_kernel(m, n, a_load, b_load);
    let tiles = nb * m.div_ceil(mk.tile_m) * n.div_ceil(mk.tile_n);
    // Few output tiles over a long k leave most of the GPU idle: split k so
    // that enough workgroups run, each over at least 256 steps of k.
    let busy = a.device().inner.busy_workgroups();
    let k_split = if tiles < busy { busy.div_ceil(tiles).min(k / 256).max(1) } else { 1 };
    let out_shape = if k_split > 1 { vec![nb, k_split, m, n] } else { out_shape };
    let out = Tensor::empty(a.device(), "matmul", &out_shape, a.dtype());
    let params = MmParams {
        m: m as u32,
        n: n as u32,
        k: k as u32,
        batch_rank: bshape.len() as u32,
        a_off: a.layout().offset as u32,
        b_off: b.layout().offset as u32,
        a_rs: sa[ra - 2] as u32,
        a_cs: sa[ra - 1] as u32,
        b_rs: sb[rb - 2] as u32,
        b_cs: sb[rb - 1] as u32,
        k_split: k_split as u32,
        _pad: 0,
        batch_shape: pack(&bshape),
        a_bstr: pack(&strides[0]),
        b_bstr: pack(&strides[1]),
    };
    let bindings = vec![(1, a.storage().clone()), (2, b.storage().clone()), (3, out.storage().clone())];
    let groups = [n.div_ceil(mk.tile_n) as u32, m.div_ceil(mk.tile_m) as u32, (nb * k_split) as u32];
    let uniform = bytemuck::bytes_of(&params);
    match mk.generated {
        Some(tile) if k_split == 1 => {
            let info = MmInfo {
                tile,
                a: a.storage().buffer().clone(),
                b: b.storage().buffer().clone(),
                c: out.storage().buffer().clone(),
                numel: out.numel(),
            };
            a.device().inner.record_fusable(&mk.kernel, bindings, uniform, groups, Fusable::Matmul(Box::new(info)));
        }
        _ => a.device().inner.record(&mk.kernel, bindings, uniform, groups),
    }
    if k_split > 1 {
        // partial products [nb, k_split, m, n], summed in a fixed order
        let mut shape = batch;
        shape.extend([m, n]);
        return super::reduce::reduce_forward(super::reduce::ReduceOp::Sum, &out, &[1], false, 1.0).reshape(&shape);
    }
    out
}

impl Tensor {
    /// Matrix product with numpy semantics: `[..., m, k] · [..., k, n]` with
    /// broadcasting batch dimensions; a 1-d left operand is a row vector and
    /// a 1-d right operand a column vector (their axis is dropped from the
    /// result). Transposed views are read in place.
    #[track_caller]
    pub fn matmul(&self, rhs: &Tensor) -> Tensor {
        need_f32("matmul", self);
        need_f32("matmul", rhs);
        same_device("matmul", &[self, rhs]);
        if self.rank() == 0 || rhs.rank() == 0 {
            panic!("wgrad: matmul: operands must have rank ≥ 1, got {:?} and {:?}", self.shape(), rhs.shape());
        }
        let a = if self.rank() == 1 { self.unsqueeze(0) } else { self.clone() };
        let b = if rhs.rank() == 1 { rhs.unsqueeze(1) } else { rhs.clone() };
        let (ra, rb) = (a.rank(), b.rank());
        if a.shape()[ra - 1] != b.shape()[rb - 2] {
            panic!(
                "wgrad: matmul: shapes {:?} and {:?} do not match: inner dimensions {} and {} differ",
                self.shape(),
                rhs.shape(),
                a.shape()[ra - 1],
                b.shape()[rb - 2]
            );
        }
        let batch = broadcast_shapes(&a.shape()[..ra - 2], &b.shape()[..rb - 2]);
        let Some(batch) = batch else {
            panic!("wgrad: matmul: batch dimensions of {:?} and {:?} do not broadcast", self.shape(), rhs.shape());
        };
        if batch.iter().product::<usize>() > 65535 {
            panic!("wgrad: matmul: {} batches exceed the 65535 a dispatch can hold", batch.iter().product::<usize>());
        }
        let mut out = apply(Prim::Matmul, &[&a, &b]);
        if self.rank() == 1 {
            out = out.squeeze(-2);
        }
        if rhs.rank() == 1 {
            out = out.squeeze(-1);
        }
        out
    }
}
