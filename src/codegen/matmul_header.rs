//! What both generated matmuls share: their bindings and uniform, the
//! batch offsets, and the convolution's gathers.

use super::chain::Chain;
use crate::ir::ConvGemm;
use crate::runtime::sources;

/// The matmul kernels' bindings and uniform (both variants), so the host
/// side is shared; an epilogue appends its fields to the uniform and its
/// buffers after binding 3. `{A}`, `{B}`: the element types of the
/// operands' arrays (`f32`, or `vec4<f32>` where four consecutive elements
/// load at once), `{C}` the result's; `{CONV}`, `{EPILOGUE}`: the
/// convolution's and the epilogue's uniform fields. `wg_x0`, `wg_y0`: the
/// tile column and row of the dispatch's first workgroup (a product with
/// more tiles than a dispatch holds runs in several).
const HEADER: &str = "
struct Mm {
    m: u32, n: u32, k: u32, batch_rank: u32,
    a_off: u32, b_off: u32, a_rs: u32, a_cs: u32,
    b_rs: u32, b_cs: u32, k_split: u32, wg_x0: u32,
    wg_y0: u32, _pad0: u32, _pad1: u32, _pad2: u32,
    batch_shape: array<vec4<u32>, 2>,
    a_bstr: array<vec4<u32>, 2>,
    b_bstr: array<vec4<u32>, 2>,
{CONV}{EPILOGUE}}
@group(0) @binding(0) var<uniform> p: Mm;
@group(0) @binding(1) var<storage, read> a: array<{A}>;
@group(0) @binding(2) var<storage, read> b: array<{B}>;
@group(0) @binding(3) var<storage, read_write> c: array<{C}>;
";

/// A matmul's first lines: its operands' offsets `ao`, `bo` in the batch of
/// workgroup layer `wg.z`, and the `slice` of k it sums.
pub(super) const BATCH_OFFSETS: &str = "    var ao = p.a_off;
    var bo = p.b_off;
    let slice = wg.z % p.k_split;
    var rem = wg.z / p.k_split;
    for (var d = i32(p.batch_rank) - 1; d >= 0; d--) {
        let q = u32(d) / 4u;
        let r = u32(d) % 4u;
        let n = p.batch_shape[q][r];
        ao += (rem % n) * p.a_bstr[q][r];
        bo += (rem % n) * p.b_bstr[q][r];
        rem = rem / n;
    }
";

/// [`HEADER`] with element types `a`, `b`, `c`, the convolution's gathers
/// and fields where it is one, and the epilogue's prelude, bindings, fields
/// and function where there is one.
pub(super) fn header(conv: Option<ConvGemm>, epilogue: Option<&Chain>, a: &str, b: &str, c: &str) -> String {
    let mut s = String::new();
    if let Some(e) = epilogue {
        s += sources::COMMON;
        s += sources::ELEMENTWISE_OPS;
        s += &e.declarations(4);
    } else if conv.is_some() {
        s += sources::COMMON;
    }
    if let Some(conv) = conv {
        s += sources::CONV_GATHERS;
        if gather_a(conv).is_some() {
            s += sources::CONV_GATHERS_A;
        }
    }
    let fields = epilogue.map_or(String::new(), |e| e.fields("e_"));
    let conv_fields = if conv.is_some() { "    cv: ConvGather,\n" } else { "" };
    s += &HEADER
        .replace("{CONV}", conv_fields)
        .replace("{EPILOGUE}", &fields)
        .replace("{A}", a)
        .replace("{B}", b)
        .replace("{C}", c);
    if let Some(e) = epilogue {
        s += &format!("fn epilogue(i: u32, acc: f32) {{\n{}}}\n", e.body("p.e_"));
    }
    s
}

/// If A is gathered (a convolution's product), the functions of
/// `shaders/conv_gathers_a.wgsl` giving the offset of k in its rows from k
/// and from k's counters (see [`BGather`]).
pub(super) fn gather_a(conv: ConvGemm) -> Option<(&'static str, &'static str)> {
    match conv {
        ConvGemm::Forward => None,
        ConvGemm::InputGrad => Some(("conv_ka_input", "conv_kac_input")),
        ConvGemm::WeightGrad => Some(("conv_ka_weight", "conv_kac_weight")),
    }
}

/// B's gather (`shaders/conv_gathers.wgsl`).
pub(super) fn gather_b(conv: ConvGemm) -> BGather {
    let (kc, of, next, col, at) = match conv {
        ConvGemm::Forward => ("conv_kc_forward", "conv_taps_of", "conv_taps_next", "conv_col_forward", "conv_x_at"),
        ConvGemm::InputGrad => ("conv_kc_input", "conv_taps_of", "conv_taps_next", "conv_col_input", "conv_dy_at"),
        ConvGemm::WeightGrad => {
            ("conv_kc_weight", "conv_positions_of", "conv_positions_next", "conv_col_weight", "conv_x_at")
        }
    };
    BGather { kc, of, next, col, at }
}

/// B's element (k, col) of a convolution's product is `at(kc(bo, of(k)) +
/// col(col))` (see `shaders/conv_gathers.wgsl`): `of(k)` splits k into counters,
/// `kc` gives k's part from them, and kernels that walk k in order advance
/// them with `next`, without division.
#[derive(Clone, Copy)]
pub(super) struct BGather {
    pub kc: &'static str,
    pub of: &'static str,
    pub next: &'static str,
    pub col: &'static str,
    pub at: &'static str,
}
