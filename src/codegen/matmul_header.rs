//! What both generated matmuls share: their bindings and uniform, the
//! batch offsets, and the convolution's gathers.

use super::chain::Chain;
use crate::ir::{ConvGemm, OptInfo};
use crate::runtime::sources;

/// The matmul kernels' bindings and uniform (both variants), so the host
/// side is shared; an epilogue appends its fields to the uniform and its
/// buffers after binding 3. `{A}`, `{B}`: the element types of the
/// operands' arrays (`f32`, or `vec4<f32>` where four consecutive elements
/// load at once), `{C}` the result's; `{CONV}`, `{EPILOGUE}`: the
/// convolution's and the epilogue's uniform fields. `wg_x0`, `wg_y0`: the
/// tile column and row of the dispatch's first workgroup (a product with
/// more tiles than a dispatch holds runs in several). `{UPDATE}`: the
/// optimizer's hyper-parameters, where the product updates a parameter.
const HEADER: &str = "
struct Mm {
    m: u32, n: u32, k: u32, batch_rank: u32,
    a_off: u32, b_off: u32, a_rs: u32, a_cs: u32,
    b_rs: u32, b_cs: u32, k_split: u32, wg_x0: u32,
    wg_y0: u32, _pad0: u32, _pad1: u32, _pad2: u32,
    batch_shape: array<vec4<u32>, 2>,
    a_bstr: array<vec4<u32>, 2>,
    b_bstr: array<vec4<u32>, 2>,
{CONV}{EPILOGUE}{UPDATE}}
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
/// and fields where it is one, the epilogue's prelude, bindings, fields
/// and function where there is one, and the update in place where the
/// product is the gradient of a parameter (see [`update_in_place`]).
pub(super) fn header(
    conv: Option<ConvGemm>,
    epilogue: Option<&Chain>,
    update: Option<&OptInfo>,
    a: &str,
    b: &str,
    c: &str,
) -> String {
    assert!(epilogue.is_none() || update.is_none(), "a matmul runs an epilogue or an update, not both");
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
    if update.is_some() {
        s += sources::OPTIM_RULES;
    }
    let conv_fields = if conv.is_some() { "    cv: ConvGather,\n" } else { "" };
    let update_fields = if update.is_some() { "    o: Opt,\n" } else { "" };
    s += &HEADER
        .replace("{CONV}", conv_fields)
        .replace("{EPILOGUE}", &fields)
        .replace("{UPDATE}", update_fields)
        .replace("{A}", a)
        .replace("{B}", b)
        .replace("{C}", c);
    if let Some(e) = epilogue {
        s += &format!("fn epilogue(i: u32, acc: f32) {{\n{}}}\n", e.body("p.e_"));
    }
    if let Some(u) = update {
        s += &update_in_place(u, c);
    }
    s
}

/// Where the product is the gradient of a parameter (`update`), the
/// parameter's update rule (`shaders/optim_rules.wgsl`) runs on each
/// element in place. With `c` four-wide (`vec4<f32>`), the kernel calls
/// `store_c(i, g)` instead of storing its vector `i` of C: the gradient is
/// never stored. Otherwise the update is the epilogue, which reads back
/// each element just stored. Bindings 4 to 6 are the parameter, the
/// optimizer's gradient scale and step count, 7 and 8 the state slots the
/// rule uses. (The rules work on four elements: one element runs as lane
/// x of a vector.)
fn update_in_place(update: &OptInfo, c: &str) -> String {
    let slots = update.updates.len() - 1;
    let wide = c != "f32";
    let mut s = format!(
        "@group(0) @binding(4) var<storage, read_write> param: array<{c}>;\n\
         @group(0) @binding(5) var<storage, read> scale: array<f32>;\n\
         @group(0) @binding(6) var<storage, read> t: array<f32>;\n",
    );
    for k in 1..=slots {
        s += &format!("@group(0) @binding({}) var<storage, read_write> s{k}: array<{c}>;\n", 6 + k);
    }
    let state = |k: usize| if k <= slots { format!("vec4<f32>(s{k}[i])") } else { "vec4<f32>()".into() };
    // What every element shares is read and computed once per invocation
    // (the first time it updates one): the rate after `done` steps, which
    // the rule then takes as a constant schedule's.
    s += "var<private> ready: bool;\nvar<private> hyper: Opt;\nvar<private> done: f32;\nvar<private> factor: f32;\n";
    s += "fn constant_rate(o: Opt) -> Opt {\n    var q = o;\n    q.schedule = 0u;\n    return q;\n}\n";
    let (head, lane) =
        if wide { ("fn store_c(i: u32, acc: vec4<f32>)", "") } else { ("fn epilogue(i: u32, acc: f32)", ".x") };
    s += &format!(
        "{head} {{\n    \
         if !ready {{\n        done = t[0];\n        factor = scale[0];\n        \
         hyper = with_lr(p.o, scale[1]);\n        hyper.lr = rate(hyper, done);\n        ready = true;\n    }}\n    \
         let u = {}(constant_rate(hyper), done, factor, vec4<f32>(param[i]), vec4<f32>(acc), {}, {});\n    \
         param[i] = u.p{lane};\n",
        update.rule.function(),
        state(1),
        state(2)
    );
    for k in 1..=slots {
        s += &format!("    s{k}[i] = u.s{k}{lane};\n");
    }
    s + "}\n"
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
