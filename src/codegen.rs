//! Generated WGSL: kernels whose best form is straight-line code too long to
//! write by hand (every generated module is validated by naga when made).
//!
//! The matmuls: the workgroup-tiled kernel of GPUs and the browser
//! ([`matmul_tiled`]), and the register-blocked one for CPU adapters with
//! subgroups (lavapipe), described here. There a workgroup of 8
//! invocations is one SIMD register and every load is
//! issued lane by lane, so what counts is loads per FMA and keeping the
//! accumulators in registers — which needs fully unrolled code (an
//! accumulator array indexed in loops stays in memory and runs ~10× slower).
//! Each workgroup computes a `rows`×(8·`cols`) tile of C: lane l owns the
//! columns c0 + l + 8j and loads, per k, `rows/8` values of A (one row per
//! lane) that `subgroupBroadcast` shares with all lanes, and `cols` values of
//! B. Each accumulator gets `unroll` FMAs in a row.

use std::fmt::Write;

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
const BATCH_OFFSETS: &str = "    var ao = p.a_off;
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
fn matmul_header(conv: Option<ConvGemm>, epilogue: Option<&Chain>, a: &str, b: &str, c: &str) -> String {
    let mut s = String::new();
    if let Some(e) = epilogue {
        s += crate::shaders::FUSED_PRELUDE;
        s += &e.declarations(4);
    } else if conv.is_some() {
        s += crate::shaders::COMMON;
    }
    if let Some(conv) = conv {
        let (gathers, gathered_a) =
            crate::shaders::CONV_GATHERS.split_once("// ---- gathered A\n").expect("conv.wgsl marks its gathers of A");
        s += gathers;
        if conv.a().is_some() {
            s += gathered_a;
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

/// How a lane loads A. Four-wide loads need the vectors contiguous and
/// every offset and stride of A a multiple of 4; on lavapipe, where every
/// storage access is issued lane by lane, they divide the loads by four.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum ALoad {
    /// One element of its row per k step.
    Scalar,
    /// Rows contiguous along k (k a multiple of 4): four k steps of its row
    /// at once (`unroll` is then 4).
    AlongK,
    /// Columns contiguous along m (a transposed view): four rows at once
    /// (`rows` a multiple of 32).
    AlongM,
}

/// How a lane loads B (the same alignment rules as [`ALoad`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum BLoad {
    /// One element of each of its columns per k step.
    Scalar,
    /// Rows contiguous along n: a lane owns four adjacent columns per
    /// vector and loads them (and stores C) four at a time.
    AlongN,
    /// Columns contiguous along k (a transposed view, as the weights of
    /// `x·wᵀ`): four k steps of each column at once (`unroll` is then 4).
    AlongK,
}

/// A convolution run as the matmul (implicit GEMM, `shaders/conv.wgsl`):
/// which of its three products, so which operands the kernel gathers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum ConvGemm {
    /// y = w · cols(x): B gathered from x.
    Forward,
    /// dx = wᵀ · dcols(dy): both gathered.
    InputGrad,
    /// dw = dy · cols(x)ᵀ, summed over the batch: both gathered.
    WeightGrad,
}

impl ConvGemm {
    /// If A is gathered, the functions giving the offset of k in its rows
    /// from k and from k's counters (see [`BGather`]).
    fn a(self) -> Option<(&'static str, &'static str)> {
        match self {
            ConvGemm::Forward => None,
            ConvGemm::InputGrad => Some(("conv_ka_input", "conv_kac_input")),
            ConvGemm::WeightGrad => Some(("conv_ka_weight", "conv_kac_weight")),
        }
    }

    /// B's gather.
    fn b(self) -> BGather {
        let (kc, of, next, col, at) = match self {
            ConvGemm::Forward => ("conv_kc_forward", "conv_taps_of", "conv_taps_next", "conv_col_forward", "conv_x_at"),
            ConvGemm::InputGrad => ("conv_kc_input", "conv_taps_of", "conv_taps_next", "conv_col_input", "conv_dy_at"),
            ConvGemm::WeightGrad => {
                ("conv_kc_weight", "conv_positions_of", "conv_positions_next", "conv_col_weight", "conv_x_at")
            }
        };
        BGather { kc, of, next, col, at }
    }

    pub fn name(self) -> &'static str {
        match self {
            ConvGemm::Forward => "conv2d",
            ConvGemm::InputGrad => "conv2d (input gradient)",
            ConvGemm::WeightGrad => "conv2d (weight gradient)",
        }
    }
}

/// B's element (k, col) of a convolution's product is `at(kc(bo, of(k)) +
/// col(col))` (see `shaders/conv.wgsl`): `of(k)` splits k into counters,
/// `kc` gives k's part from them, and kernels that walk k in order advance
/// them with `next`, without division.
#[derive(Clone, Copy)]
struct BGather {
    kc: &'static str,
    of: &'static str,
    next: &'static str,
    col: &'static str,
    at: &'static str,
}

/// Tile shape of the subgroup matmul: `rows` (a multiple of 8) × 8·`cols`
/// (`cols` a multiple of 4), `unroll` k steps per iteration, and how A and
/// B load.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct MatmulTile {
    pub rows: usize,
    pub cols: usize,
    pub unroll: usize,
    pub a: ALoad,
    pub b: BLoad,
}

impl MatmulTile {
    pub fn tile_m(&self) -> usize {
        self.rows
    }

    pub fn tile_n(&self) -> usize {
        8 * self.cols
    }
}

/// How the workgroup-tiled matmul feeds its FMAs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Staging {
    /// Each invocation loads its rows and columns from memory itself (no
    /// barrier: what CPU adapters need).
    None,
    /// The workgroup stages `bk` steps of k of A and B at a time in
    /// workgroup memory; an invocation's rows and columns are interleaved
    /// one by one, and each k step loads them one by one.
    Scalar,
    /// As `Scalar`, but an invocation's rows and columns come in runs of
    /// four, which each k step loads from workgroup memory as vectors (a
    /// quarter of the load instructions; `tm`, `tn` multiples of 4).
    Vec4,
}

/// Tile of the workgroup-tiled matmul ([`matmul_tiled`]): a
/// `wx`×`wy` workgroup computes (`wy`·`tm`)×(`wx`·`tn`) outputs, each
/// invocation `tm`×`tn`, staging `bk` steps of k at a time (if it stages).
/// Every tile gives the same bits (see [`matmul_tiled`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct WorkgroupTile {
    pub wx: u32,
    pub wy: u32,
    pub tm: u32,
    pub tn: u32,
    pub bk: u32,
    pub staging: Staging,
}

const fn tile(wx: u32, wy: u32, tm: u32, tn: u32, bk: u32, staging: Staging) -> WorkgroupTile {
    WorkgroupTile { wx, wy, tm, tn, bk, staging }
}

impl WorkgroupTile {
    /// The tile where none is measured on a GPU.
    pub const DEFAULT: WorkgroupTile = tile(16, 16, 4, 4, 16, Staging::Scalar);

    /// The default where the tiles are not measured on a CPU adapter.
    pub const UNSTAGED: WorkgroupTile = tile(16, 16, 4, 4, 1, Staging::None);

    /// The tiles an adapter's autotune chooses from: large tiles for large
    /// products (more FMAs per load), small ones where large tiles would
    /// leave most of the adapter idle, and unstaged ones (what CPU
    /// adapters need: a barrier makes llvmpipe compile a kernel for 20–40 s,
    /// and their caches do what workgroup memory would).
    pub const CANDIDATES: [WorkgroupTile; 14] = [
        WorkgroupTile::DEFAULT,
        tile(16, 16, 8, 8, 8, Staging::Scalar),
        tile(16, 16, 8, 8, 16, Staging::Scalar),
        tile(16, 16, 8, 4, 16, Staging::Scalar),
        tile(16, 16, 4, 8, 16, Staging::Scalar),
        tile(16, 16, 2, 2, 16, Staging::Scalar),
        tile(8, 8, 4, 4, 16, Staging::Scalar),
        tile(16, 16, 4, 4, 16, Staging::Vec4),
        tile(16, 16, 8, 8, 8, Staging::Vec4),
        tile(16, 16, 8, 8, 16, Staging::Vec4),
        tile(16, 16, 8, 4, 16, Staging::Vec4),
        tile(16, 16, 4, 8, 16, Staging::Vec4),
        WorkgroupTile::UNSTAGED,
        tile(8, 8, 4, 4, 1, Staging::None),
    ];

    pub fn tile_m(&self) -> usize {
        (self.wy * self.tm) as usize
    }

    pub fn tile_n(&self) -> usize {
        (self.wx * self.tn) as usize
    }

    /// The rows of A and B per k step in workgroup memory, in elements
    /// (padded, so that staging along k does not hit one bank).
    fn strides(&self) -> (u32, u32) {
        let pad = if self.staging == Staging::Vec4 { 4 } else { 1 };
        (self.wy * self.tm + pad, self.wx * self.tn + pad)
    }

    /// Does a workgroup of this tile fit the adapter's limits?
    pub fn fits(&self, limits: &wgpu::Limits) -> bool {
        let (sa, sb) = self.strides();
        let staged = if self.staging == Staging::None { 0 } else { 4 * self.bk * (sa + sb) };
        self.wx * self.wy <= limits.max_compute_invocations_per_workgroup
            && self.wx <= limits.max_compute_workgroup_size_x
            && self.wy <= limits.max_compute_workgroup_size_y
            && staged <= limits.max_compute_workgroup_storage_size
    }
}

impl std::fmt::Display for WorkgroupTile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (m, n, wx, wy, tm, tn) = (self.tile_m(), self.tile_n(), self.wx, self.wy, self.tm, self.tn);
        write!(f, "{m}×{n} ({wx}×{wy} invocations of {tm}×{tn}")?;
        match self.staging {
            Staging::None => write!(f, ", unstaged)"),
            Staging::Scalar => write!(f, ", staged by {} k)", self.bk),
            Staging::Vec4 => write!(f, ", staged by {} k, vec4)", self.bk),
        }
    }
}

/// Which generated matmul a node runs, and its tile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum MatmulVariant {
    Subgroup(MatmulTile),
    Workgroup(WorkgroupTile),
}

impl MatmulVariant {
    pub fn tile_m(&self) -> usize {
        match self {
            MatmulVariant::Subgroup(t) => t.tile_m(),
            MatmulVariant::Workgroup(t) => t.tile_m(),
        }
    }

    pub fn tile_n(&self) -> usize {
        match self {
            MatmulVariant::Subgroup(t) => t.tile_n(),
            MatmulVariant::Workgroup(t) => t.tile_n(),
        }
    }

    /// WGSL of the kernel (entry point `matmul`), the product of
    /// convolution `conv` if there is one, with `epilogue` run on every
    /// element of its result.
    pub fn source(&self, conv: Option<ConvGemm>, epilogue: Option<&Chain>) -> String {
        match *self {
            MatmulVariant::Subgroup(t) => matmul_source(t, conv, epilogue),
            MatmulVariant::Workgroup(t) => matmul_tiled(t, conv, epilogue),
        }
    }

    pub fn subgroups(&self) -> bool {
        matches!(self, MatmulVariant::Subgroup(_))
    }

    /// A short name, for profiles and graphs: the op, the kind and the
    /// tile.
    pub fn label(&self, conv: Option<ConvGemm>) -> String {
        let (m, n) = (self.tile_m(), self.tile_n());
        let op = conv.map_or("matmul", ConvGemm::name);
        match self {
            MatmulVariant::Subgroup(_) => format!("{op} {m}×{n}, subgroups"),
            MatmulVariant::Workgroup(t) => match t.staging {
                Staging::None => format!("{op} {m}×{n}, unstaged"),
                Staging::Scalar => format!("{op} {m}×{n}, staged"),
                Staging::Vec4 => format!("{op} {m}×{n}, staged vec4"),
            },
        }
    }
}

/// Replaces `line` of a shader file's source by `with`. The line must be
/// there: a silent miss would drop generated code.
fn hook(source: &mut String, line: &str, with: &str) {
    assert!(source.contains(line), "the shader lacks the line `{}`", line.trim_end());
    *source = source.replace(line, with);
}

/// The workgroup-tiled matmul with tile `t`, and `epilogue` run on each
/// element as it is stored: the kernel of every adapter but CPU ones with
/// subgroups (GPUs, the browser).
///
/// A `wx`×`wy` workgroup computes a (`wy`·`tm`)×(`wx`·`tn`) tile of C,
/// each invocation `tm`×`tn` outputs whose rows and columns are interleaved
/// with those of its neighbours (one by one, or in runs of four), so that
/// neighbouring invocations store neighbouring columns. Staged: per `bk`
/// steps of k the workgroup copies the slices of A and B it needs into
/// workgroup memory, each element loaded once and walking each operand
/// along its contiguous axis; then a k step costs `tm` + `tn` (or a quarter
/// as many vector) workgroup-memory loads for `tm`·`tn` FMAs. Unstaged:
/// each invocation loads its rows and columns itself. The code is
/// straight-line, an accumulator per output: accumulators in an array
/// indexed in loops stay in memory (7× slower on an NVIDIA H200).
///
/// Each output is one fma chain over its slice of k in order, whatever the
/// tile, so every tile gives the same bits. Rows and columns past the edge
/// are staged as zeros (or read at a clamped, valid address) and not
/// written; k past the slice is staged as −0 in A, and fma(−0, 0, x) = x
/// for every x, ±0 included.
fn matmul_tiled(t: WorkgroupTile, conv: Option<ConvGemm>, epilogue: Option<&Chain>) -> String {
    let WorkgroupTile { wx, wy, tm, tn, bk, staging } = t;
    let (bm, bn, threads) = (wy * tm, wx * tn, wx * wy);
    let vec4 = staging == Staging::Vec4;
    // accumulators: per row, tn / vw vectors of vw columns
    let vw = tn.min(4);
    let staged = staging != Staging::None;
    assert!(tn % vw == 0 && (!staged || (bm * bk % threads == 0 && bn * bk % threads == 0)), "{t:?}");
    assert!(!vec4 || (tm % 4 == 0 && tn % 4 == 0), "{t:?}");
    let vt = if vw == 1 { "f32".to_string() } else { format!("vec{vw}<f32>") };
    let nv = tn / vw;
    // the tile's row of the invocation's row i, and its column j (`l`: its
    // local id; constant parts folded)
    let row = |i: u32| match vec4 {
        true => format!("4u * l.y + {}u", i / 4 * 4 * wy + i % 4),
        false => format!("l.y + {}u", i * wy),
    };
    let col = |j: u32| match vec4 {
        true => format!("4u * l.x + {}u", j / 4 * 4 * wx + j % 4),
        false => format!("l.x + {}u", j * wx),
    };
    let mut s = matmul_header(conv, epilogue, "f32", "f32", "f32");
    let w = &mut s;
    // the operands' gathers, if the product is a convolution's
    let gather_a = conv.and_then(ConvGemm::a);
    let gather_b = conv.map(ConvGemm::b);
    // writeln! into a String cannot fail
    macro_rules! line { ($($arg:tt)*) => { writeln!(w, $($arg)*).expect("write to String") }; }
    let (sa, sb) = t.strides();
    let (elem, sa_v, sb_v) = if vec4 { ("vec4<f32>", sa / 4, sb / 4) } else { ("f32", sa, sb) };
    if staged {
        line!("var<workgroup> ta: array<{elem}, {}>;", bk * sa_v);
        line!("var<workgroup> tb: array<{elem}, {}>;", bk * sb_v);
    }
    line!("@compute @workgroup_size({wx}, {wy})");
    line!("fn matmul(");
    line!("    @builtin(workgroup_id) wg: vec3<u32>,");
    line!("    @builtin(local_invocation_id) l: vec3<u32>,");
    line!("    @builtin(local_invocation_index) li: u32,");
    line!(") {{");
    *w += BATCH_OFFSETS;
    line!("    let r_0 = (wg.y + p.wg_y0) * {bm}u;");
    line!("    let c_0 = (wg.x + p.wg_x0) * {bn}u;");
    line!("    let chunk = (p.k + p.k_split - 1u) / p.k_split;");
    line!("    let k_begin = slice * chunk;");
    line!("    let k_end = min(k_begin + chunk, p.k);");
    for i in 0..tm {
        for v in 0..nv {
            line!("    var acc{i}_{v} = {vt}();");
        }
    }
    let fmas = |w: &mut String, indent: &str, a: &dyn Fn(u32) -> String| {
        for i in 0..tm {
            for v in 0..nv {
                writeln!(w, "{indent}acc{i}_{v} = fma({vt}({}), b{v}, acc{i}_{v});", a(i)).expect("write to String");
            }
        }
    };
    // element (kk, x) of a staged slice, x its row (A) or column (B)
    let slot = |array: &str, stride: u32, x: &str| match vec4 {
        true => format!("{array}[kk * {}u + {x} / 4u][{x} % 4u]", stride / 4),
        false => format!("{array}[kk * {stride}u + {x}]"),
    };
    if staged {
        // Each operand's slice [bk, extent] is walked along its contiguous
        // axis (x, A's rows or B's columns, when `x_fast`; else k), `pad`
        // where past the edge. A: rows contiguous along k, else along m; B:
        // along n, else along k.
        // (a gathered A is dense along k; a gathered B along n, but for
        // the weight gradient's along k)
        let a_along_m = if gather_a.is_some() { "false" } else { "p.a_cs != 1u" };
        let b_along_n = match conv {
            Some(c) => {
                if c == ConvGemm::WeightGrad {
                    "false"
                } else {
                    "true"
                }
            }
            None => "p.b_cs == 1u",
        };
        line!("    let a_along_m = {a_along_m};");
        line!("    let b_along_n = {b_along_n};");
        line!("    for (var k0 = k_begin; k0 < k_end; k0 += {bk}u) {{");
        let load_a = match gather_a {
            Some((f, _)) => format!("a[ao + (r_0 + x) * p.a_rs + {f}(k0 + kk)]"),
            None => "a[ao + (r_0 + x) * p.a_rs + (k0 + kk) * p.a_cs]".to_string(),
        };
        let load_b = match gather_b {
            Some(g) => format!("{}({}(bo, {}(k0 + kk)) + {}(c_0 + x))", g.at, g.kc, g.of, g.col),
            None => "b[bo + (k0 + kk) * p.b_rs + (c_0 + x) * p.b_cs]".to_string(),
        };
        let operands = [
            ("ta", sa, bm, "a_along_m", "r_0", "p.m", "bitcast<f32>(0x80000000u)", load_a),
            ("tb", sb, bn, "b_along_n", "c_0", "p.n", "0.0", load_b),
        ];
        for (array, stride, extent, x_fast, origin, limit, pad, load) in operands {
            for q in 0..extent * bk / threads {
                line!("        {{");
                line!("            let e = li + {}u;", q * threads);
                line!("            let x = select(e / {bk}u, e % {extent}u, {x_fast});");
                line!("            let kk = select(e % {bk}u, e / {extent}u, {x_fast});");
                line!("            var v = {pad};");
                line!("            if {origin} + x < {limit} && k0 + kk < k_end {{");
                line!("                v = {load};");
                line!("            }}");
                line!("            {} = v;", slot(array, stride, "x"));
                line!("        }}");
            }
        }
        line!("        workgroupBarrier();");
        line!("        for (var kk = 0u; kk < {bk}u; kk++) {{");
        if vec4 {
            // rows 4q..4q+3 of this invocation in one load, columns likewise
            for q in 0..tm / 4 {
                line!("            let a{q} = ta[kk * {}u + l.y + {}u];", sa_v, q * wy);
            }
            for v in 0..nv {
                line!("            let b{v} = tb[kk * {}u + l.x + {}u];", sb_v, v * wx);
            }
            fmas(w, "            ", &|i| format!("a{}[{}]", i / 4, i % 4));
        } else {
            for i in 0..tm {
                line!("            let a{i} = ta[kk * {sa}u + {}];", row(i));
            }
            for v in 0..nv {
                let cols: Vec<String> = (0..vw).map(|e| format!("tb[kk * {sb}u + {}]", col(v * vw + e))).collect();
                line!("            let b{v} = {vt}({});", cols.join(", "));
            }
            fmas(w, "            ", &|i| format!("a{i}"));
        }
        line!("        }}");
        line!("        workgroupBarrier();");
        line!("    }}");
    } else {
        // (clamped rows and columns: edge tiles read valid memory and skip
        // their writes; gathers take the row or column itself)
        for i in 0..tm {
            line!("    let ar{i} = ao + min(r_0 + {}, p.m - 1u) * p.a_rs;", row(i));
        }
        for j in 0..tn {
            match gather_b {
                Some(g) => line!("    let bc{j} = {}(min(c_0 + {}, p.n - 1u));", g.col, col(j)),
                None => line!("    let bc{j} = bo + min(c_0 + {}, p.n - 1u) * p.b_cs;", col(j)),
            }
        }
        if let Some(g) = gather_b {
            line!("    var kc = {}(k_begin);", g.of);
        }
        line!("    for (var k = k_begin; k < k_end; k++) {{");
        match gather_a {
            Some((_, f)) => line!("        let ka = {f}(kc);"),
            None => line!("        let ka = k * p.a_cs;"),
        }
        match gather_b {
            Some(g) => {
                line!("        let kb = {}(bo, kc);", g.kc);
                line!("        kc = {}(kc);", g.next);
            }
            None => line!("        let kb = k * p.b_rs;"),
        }
        for i in 0..tm {
            line!("        let a{i} = a[ar{i} + ka];");
        }
        let load_b = |j: u32| match gather_b {
            Some(g) => format!("{}(kb + bc{j})", g.at),
            None => format!("b[bc{j} + kb]"),
        };
        for v in 0..nv {
            let cols: Vec<String> = (0..vw).map(|e| load_b(v * vw + e)).collect();
            line!("        let b{v} = {vt}({});", cols.join(", "));
        }
        fmas(w, "        ", &|i| format!("a{i}"));
        line!("    }}");
    }
    line!("    let base = wg.z * p.m * p.n;");
    for i in 0..tm {
        line!("    let r{i} = r_0 + {};", row(i));
    }
    for j in 0..tn {
        line!("    let c{j} = c_0 + {};", col(j));
    }
    for i in 0..tm {
        for j in 0..tn {
            let e = if vw == 1 { String::new() } else { format!("[{}]", j % vw) };
            line!("    if r{i} < p.m && c{j} < p.n {{ c[base + r{i} * p.n + c{j}] = acc{i}_{}{e}; }}", j / vw);
        }
    }
    if epilogue.is_some() {
        // a loop over the elements this invocation just stored, reading
        // each back: the epilogue's code appears once
        line!("    for (var q = 0u; q < {}u; q++) {{", tm * tn);
        line!("        let i = q / {tn}u;");
        line!("        let j = q % {tn}u;");
        if vec4 {
            line!("        let row = r_0 + 4u * l.y + i / 4u * {}u + i % 4u;", 4 * wy);
            line!("        let col = c_0 + 4u * l.x + j / 4u * {}u + j % 4u;", 4 * wx);
        } else {
            line!("        let row = r_0 + l.y + i * {wy}u;");
            line!("        let col = c_0 + l.x + j * {wx}u;");
        }
        line!("        if row < p.m && col < p.n {{");
        line!("            epilogue(base + row * p.n + col, c[base + row * p.n + col]);");
        line!("        }}");
        line!("    }}");
    }
    line!("}}");
    s
}

/// The matmul, with `epilogue` run on every element of its result.
fn matmul_source(t: MatmulTile, conv: Option<ConvGemm>, epilogue: Option<&Chain>) -> String {
    assert!(t.rows % 8 == 0 && t.cols % 4 == 0 && t.unroll >= 1, "{t:?}");
    // the operands' gathers, if the product is a convolution's: read one
    // element at a time
    let gather_a = conv.and_then(ConvGemm::a);
    let gather_b = conv.map(ConvGemm::b);
    assert!(gather_a.is_none() || t.a == ALoad::Scalar, "{t:?} {conv:?}");
    assert!(gather_b.is_none() || t.b == BLoad::Scalar, "{t:?} {conv:?}");
    match t.a {
        ALoad::Scalar => {}
        ALoad::AlongK => assert_eq!(t.unroll, 4, "{t:?}"),
        ALoad::AlongM => assert_eq!(t.rows % 32, 0, "{t:?}"),
    }
    if t.b == BLoad::AlongK {
        assert_eq!(t.unroll, 4, "{t:?}");
    }
    // both operands' four-wide loads along k need k a multiple of 4 and
    // slices of k that start at multiples of 4
    let along_k = t.a == ALoad::AlongK || t.b == BLoad::AlongK;
    // vec4 accumulators (four columns each): measured 8× faster on lavapipe
    // than the same arithmetic on scalars.
    let (rq, nv) = (t.rows / 8, t.cols / 4);
    let ty = |v: bool| if v { "vec4<f32>" } else { "f32" };
    let vec_c = t.b == BLoad::AlongN;
    let mut s = matmul_header(conv, epilogue, ty(t.a != ALoad::Scalar), ty(t.b != BLoad::Scalar), ty(vec_c));
    let w = &mut s;
    // writeln! into a String cannot fail
    macro_rules! line { ($($arg:tt)*) => { writeln!(w, $($arg)*).expect("write to String") }; }
    line!("@compute @workgroup_size(8)");
    line!("fn matmul(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) l: u32) {{");
    *w += BATCH_OFFSETS;
    line!("    let r0 = (wg.y + p.wg_y0) * {}u;", t.rows);
    // the columns of vector v of this lane: c0 + 8j (j = 4v..4v+3), or
    // c0 + 32v + 0..3 when B loads along n
    if t.b == BLoad::AlongN {
        line!("    let c0 = (wg.x + p.wg_x0) * {}u + 4u * l;", t.tile_n());
    } else {
        line!("    let c0 = (wg.x + p.wg_x0) * {}u + l;", t.tile_n());
    }
    // row offsets of the A rows this lane loads, column offsets of its B columns
    // (clamped, so edge tiles read valid memory and skip their writes)
    match t.a {
        ALoad::Scalar => {
            for q in 0..rq {
                line!("    let ar{q} = ao + min(r0 + {}u + l, p.m - 1u) * p.a_rs;", 8 * q);
            }
        }
        ALoad::AlongK => {
            for q in 0..rq {
                line!("    let ar{q} = (ao + min(r0 + {}u + l, p.m - 1u) * p.a_rs) / 4u;", 8 * q);
            }
        }
        // lane l loads rows r0 + 32j + 4l .. + 3
        ALoad::AlongM => {
            for j in 0..t.rows / 32 {
                line!("    let ar{j} = (ao + min(r0 + {}u + 4u * l, p.m - 4u)) / 4u;", 32 * j);
            }
        }
    }
    match t.b {
        BLoad::AlongN => {
            for v in 0..nv {
                line!("    let bc{v} = (bo + min(c0 + {}u, p.n - 4u)) / 4u;", 32 * v);
            }
        }
        BLoad::Scalar => {
            for j in 0..t.cols {
                match gather_b {
                    Some(g) => line!("    let bc{j} = {}(min(c0 + {}u, p.n - 1u));", g.col, 8 * j),
                    None => line!("    let bc{j} = bo + min(c0 + {}u, p.n - 1u) * p.b_cs;", 8 * j),
                }
            }
        }
        BLoad::AlongK => {
            for j in 0..t.cols {
                line!("    let bc{j} = (bo + min(c0 + {}u, p.n - 1u) * p.b_cs) / 4u;", 8 * j);
            }
        }
    }
    for r in 0..t.rows {
        for v in 0..nv {
            line!("    var acc{r}_{v} = vec4<f32>();");
        }
    }
    let body = |w: &mut String, u: usize, step: &str| {
        macro_rules! line { ($($arg:tt)*) => { writeln!(w, $($arg)*).expect("write to String") }; }
        if t.b == BLoad::AlongK {
            // four k steps of each column in one load; component i is step i
            for j in 0..t.cols {
                line!("        let bk{j} = b[bc{j} + k / 4u];");
            }
        }
        for i in 0..u {
            match t.b {
                BLoad::AlongN => {
                    line!("        let kb{i} = (k + {i}u) * p.b_rs / 4u;");
                    for v in 0..nv {
                        line!("        let b{i}_{v} = b[bc{v} + kb{i}];");
                    }
                }
                BLoad::Scalar => {
                    match gather_b {
                        Some(g) => line!("        let kb{i} = {}(bo, kc);", g.kc),
                        None => line!("        let kb{i} = (k + {i}u) * p.b_rs;"),
                    }
                    for v in 0..nv {
                        let load = |j: usize| match gather_b {
                            Some(g) => format!("{}(kb{i} + bc{j})", g.at),
                            None => format!("b[bc{j} + kb{i}]"),
                        };
                        let cols: Vec<String> = (0..4).map(|e| load(4 * v + e)).collect();
                        line!("        let b{i}_{v} = vec4<f32>({});", cols.join(", "));
                    }
                }
                BLoad::AlongK => {
                    for v in 0..nv {
                        let cols: Vec<String> = (0..4).map(|e| format!("bk{}[{i}]", 4 * v + e)).collect();
                        line!("        let b{i}_{v} = vec4<f32>({});", cols.join(", "));
                    }
                }
            }
            match t.a {
                ALoad::Scalar => {
                    match gather_a {
                        Some((_, f)) => line!("        let ka{i} = {f}(kc);"),
                        None => line!("        let ka{i} = (k + {i}u) * p.a_cs;"),
                    }
                    for q in 0..rq {
                        line!("        let a{i}_{q} = a[ar{q} + ka{i}];");
                    }
                }
                ALoad::AlongM => {
                    line!("        let ka{i} = (k + {i}u) * p.a_cs / 4u;");
                    for j in 0..t.rows / 32 {
                        line!("        let a{i}_{j} = a[ar{j} + ka{i}];");
                    }
                }
                ALoad::AlongK => {} // below, once for all u steps
            }
            if let Some(g) = gather_b {
                line!("        kc = {}(kc);", g.next);
            }
        }
        if t.a == ALoad::AlongK {
            // four k steps of each row in one load; component i is step i
            for q in 0..rq {
                line!("        let a_{q} = a[ar{q} + k / 4u];");
            }
        }
        for r in 0..t.rows {
            for i in 0..u {
                // the lane that loaded row r, and where it holds it
                let (a, lane) = match t.a {
                    ALoad::Scalar => (format!("a{i}_{}", r / 8), r % 8),
                    ALoad::AlongK => (format!("a_{}[{i}]", r / 8), r % 8),
                    ALoad::AlongM => (format!("a{i}_{}[{}]", r / 32, r % 4), r % 32 / 4),
                };
                line!("        let x{i}_{r} = vec4<f32>(subgroupBroadcast({a}, {lane}u));");
            }
            for v in 0..nv {
                let mut e = format!("acc{r}_{v}");
                for i in 0..u {
                    e = format!("fma(x{i}_{r}, b{i}_{v}, {e})");
                }
                line!("        acc{r}_{v} = {e};");
            }
        }
        line!("        k += {step}u;");
    };
    if along_k {
        // slices of k start at multiples of 4, like the vector loads
        line!("    let chunk = ((p.k + p.k_split - 1u) / p.k_split + 3u) / 4u * 4u;");
    } else {
        line!("    let chunk = (p.k + p.k_split - 1u) / p.k_split;");
    }
    line!("    let k_end = min((slice + 1u) * chunk, p.k);");
    line!("    var k = slice * chunk;");
    if let Some(g) = gather_b {
        line!("    var kc = {}(k);", g.of);
    }
    if t.unroll > 1 {
        line!("    while k + {}u <= k_end {{", t.unroll);
        body(w, t.unroll, &t.unroll.to_string());
        line!("    }}");
    }
    if !along_k {
        line!("    while k < k_end {{");
        body(w, 1, "1");
        line!("    }}");
    }
    line!("    let base = wg.z * p.m * p.n;");
    for r in 0..t.rows {
        line!("    if r0 + {r}u < p.m {{");
        if vec_c {
            for v in 0..nv {
                line!(
                    "        if c0 + {}u < p.n {{ c[(base + (r0 + {r}u) * p.n + c0 + {}u) / 4u] = acc{r}_{v}; }}",
                    32 * v,
                    32 * v
                );
            }
        } else {
            for j in 0..t.cols {
                line!(
                    "        if c0 + {}u < p.n {{ c[base + (r0 + {r}u) * p.n + c0 + {}u] = acc{r}_{}[{}]; }}",
                    8 * j,
                    8 * j,
                    j / 4,
                    j % 4
                );
            }
        }
        line!("    }}");
    }
    if epilogue.is_some() {
        // The epilogue runs in a loop over the elements this lane just
        // stored, reading each back: its code appears once. (Calling it on
        // the accumulators, unrolled or through a local array, made the
        // module take seconds to compile.)
        line!("    for (var q = 0u; q < {}u; q++) {{", t.rows * nv);
        line!("        let row = r0 + q / {nv}u;");
        line!("        for (var e = 0u; e < 4u; e++) {{");
        // the column of component e of this lane's vector q % nv (see c0)
        if vec_c {
            line!("            let col = c0 + 32u * (q % {nv}u) + e;");
        } else {
            line!("            let col = c0 + 32u * (q % {nv}u) + 8u * e;");
        }
        line!("            if row < p.m && col < p.n {{");
        line!("                let i = base + row * p.n + col;");
        if vec_c {
            line!("                epilogue(i, c[i / 4u][i % 4u]);");
        } else {
            line!("                epilogue(i, c[i]);");
        }
        line!("            }}");
        line!("        }}");
        line!("    }}");
    }
    line!("}}");
    s
}

// ---- fused elementwise kernels --------------------------------------------------

/// Where a fused member's operand comes from.
pub(crate) enum FusedOperand {
    /// The value an earlier member computed, kept in a register.
    Member(usize),
    /// A load from a buffer.
    External(crate::graph::EwOperand),
    /// The element of the matmul result the chain is the epilogue of.
    Accumulator,
}

/// One node of a fused chain: what it computes, from where, and where its
/// result is stored (`None`: only later members use it).
pub(crate) struct FusedMember {
    pub expr: crate::graph::EwExpr,
    pub operands: Vec<FusedOperand>,
    pub out: Option<crate::graph::EwOperand>,
}

/// Where a member's operand is read from in generated code.
#[derive(Clone, Copy)]
enum Ref {
    Input(usize),
    Member(usize),
    Accumulator,
}

/// A fused chain laid out for code generation: its distinct external
/// operands (inputs), its stored outputs, and one iteration space in which
/// dimensions every operand walks contiguously are merged. The code runs
/// per element `i` (a linear index of the chain's shape): in a kernel of
/// its own, or as the epilogue of a matmul.
pub(crate) struct Chain<'a> {
    members: &'a [FusedMember],
    inputs: Vec<&'a crate::graph::EwOperand>,
    refs: Vec<Vec<Ref>>,
    /// (member, where it is stored)
    outputs: Vec<(usize, &'a crate::graph::EwOperand)>,
    /// WebGPU forbids binding a buffer both read-only and writable in one
    /// dispatch: an input that is also an output is read through the output.
    written_as: Vec<Option<usize>>,
    /// Inputs another chain of the same kernel writes, read through its
    /// array (named here) for the same reason.
    elsewhere: Vec<Option<String>>,
    dims: Vec<usize>,
    /// Per operand (inputs, then outputs), over `dims`.
    strides: Vec<Vec<usize>>,
    /// Prefix of its buffers' names (two chains in one module).
    tag: &'static str,
}

impl<'a> Chain<'a> {
    /// `None` when the iteration space has too many dimensions.
    fn new(shape: &[usize], members: &'a [FusedMember]) -> Option<Chain<'a>> {
        let mut inputs: Vec<&crate::graph::EwOperand> = Vec::new();
        let mut refs = Vec::new();
        for m in members {
            let mut ids = Vec::new();
            for o in &m.operands {
                ids.push(match o {
                    FusedOperand::Member(k) => Ref::Member(*k),
                    FusedOperand::Accumulator => Ref::Accumulator,
                    FusedOperand::External(e) => {
                        let same = |x: &&crate::graph::EwOperand| {
                            x.buffer == e.buffer && x.offset == e.offset && x.strides == e.strides
                        };
                        Ref::Input(match inputs.iter().position(same) {
                            Some(j) => j,
                            None => {
                                inputs.push(e);
                                inputs.len() - 1
                            }
                        })
                    }
                });
            }
            refs.push(ids);
        }
        let outputs: Vec<(usize, &crate::graph::EwOperand)> =
            members.iter().enumerate().filter_map(|(k, m)| m.out.as_ref().map(|o| (k, o))).collect();
        let written_as = inputs.iter().map(|i| outputs.iter().position(|(_, o)| o.buffer == i.buffer)).collect();
        let elsewhere = vec![None; inputs.len()];
        let mut strides: Vec<Vec<usize>> =
            inputs.iter().copied().chain(outputs.iter().map(|o| o.1)).map(|o| o.strides.clone()).collect();
        let dims = crate::shape::coalesce(shape, &mut strides);
        (dims.len() <= crate::shape::MAX_RANK).then_some(Chain {
            members,
            inputs,
            refs,
            outputs,
            written_as,
            elsewhere,
            dims,
            strides,
            tag: "",
        })
    }

    fn operands(&self) -> impl Iterator<Item = &crate::graph::EwOperand> {
        self.inputs.iter().copied().chain(self.outputs.iter().map(|o| o.1))
    }

    fn numel(&self) -> usize {
        self.dims.iter().product()
    }

    /// Its uniform's WGSL struct fields, names prefixed with `pre`.
    fn fields(&self, pre: &str) -> String {
        let k = self.strides.len();
        format!(
            "    {pre}numel: u32, {pre}rank: u32, {pre}zero: u32, {pre}pad1: u32,
    {pre}shape: array<vec4<u32>, 2>,
    {pre}magic: array<vec4<u32>, 2>,
    {pre}shift: array<vec4<u32>, 2>,
    {pre}offs: array<vec4<u32>, {}>,
    {pre}strides: array<vec4<u32>, {}>,\n",
            k.div_ceil(4),
            2 * k
        )
    }

    /// The uniform's words, in the order of [`fields`](Self::fields).
    fn words(&self) -> Vec<u32> {
        let (magic, shift) = crate::shape::pack_divisors(&self.dims);
        let mut words: Vec<u32> = vec![self.numel() as u32, self.dims.len() as u32, 0, 0];
        words.extend(crate::shape::pack(&self.dims));
        words.extend(magic);
        words.extend(shift);
        let mut offs = vec![0u32; 4 * self.strides.len().div_ceil(4)];
        for (j, o) in self.operands().enumerate() {
            offs[j] = o.offset as u32;
        }
        words.extend(offs);
        for st in &self.strides {
            words.extend(crate::shape::pack(st));
        }
        words
    }

    /// WGSL declarations of its buffers, bindings from `first`.
    fn declarations(&self, first: u32) -> String {
        let mut s = String::new();
        for (j, w) in self.written_as.iter().enumerate() {
            if w.is_none() && self.elsewhere[j].is_none() {
                s += &format!(
                    "@group(0) @binding({}) var<storage, read> {t}x{j}: array<u32>;\n",
                    first + j as u32,
                    t = self.tag
                );
            }
        }
        for j in 0..self.outputs.len() {
            let b = first + (self.inputs.len() + j) as u32;
            s += &format!("@group(0) @binding({b}) var<storage, read_write> {t}y{j}: array<u32>;\n", t = self.tag);
        }
        s
    }

    /// Its buffers by binding number, bindings from `first`.
    fn bindings(&self, first: u32) -> Vec<(u32, wgpu::Buffer)> {
        self.operands()
            .enumerate()
            .filter(|(j, _)| *j >= self.inputs.len() || self.written_as[*j].is_none() && self.elsewhere[*j].is_none())
            .map(|(j, o)| (first + j as u32, o.buffer.clone()))
            .collect()
    }

    /// WGSL computing element `i` (a `u32` in scope; `acc`, an `f32`, too in
    /// an epilogue): loads, the members' arithmetic, stores. `u`: the
    /// uniform's field prefix (`p.` or `p.e_`).
    fn body(&self, u: &str) -> String {
        use crate::graph::EwExpr;
        let mut s = String::new();
        let w = &mut s;
        macro_rules! line { ($($arg:tt)*) => { writeln!(w, $($arg)*).expect("write to String") }; }
        let k = self.strides.len();
        for j in 0..k {
            line!("    var o{j} = {u}offs[{}][{}];", j / 4, j % 4);
        }
        if self.dims.len() <= 1 {
            for j in 0..k {
                line!("    o{j} += i * {u}strides[{}][0];", 2 * j);
            }
        } else {
            line!("    var rem = i;");
            for d in (0..self.dims.len()).rev() {
                let (q, r) = (d / 4, d % 4);
                line!("    {{");
                line!("        let quot = fast_div(rem, {u}magic[{q}][{r}], {u}shift[{q}][{r}]);");
                line!("        let coord = rem - quot * {u}shape[{q}][{r}];");
                line!("        rem = quot;");
                for j in 0..k {
                    line!("        o{j} += coord * {u}strides[{}][{r}];", 2 * j + q);
                }
                line!("    }}");
            }
        }
        for (j, w) in self.written_as.iter().enumerate() {
            match (w, &self.elsewhere[j]) {
                (Some(y), _) => line!("    let x{j}v = {t}y{y}[o{j}];", t = self.tag),
                (None, Some(array)) => line!("    let x{j}v = {array}[o{j}];"),
                (None, None) => line!("    let x{j}v = {t}x{j}[o{j}];", t = self.tag),
            }
        }
        // A member's value passes to the next through `^ zero`, a uniform
        // word the compiler cannot know is 0, as it passes through memory
        // between eager kernels: else a driver may contract a product and
        // the sum that uses it into one fma (one rounding instead of two)
        // and the fused kernel's bits differ from eager mode's (seen on an
        // NVIDIA H200's Vulkan driver; SPIR-V allows it by default).
        let operand = |m: usize, slot: usize| match self.refs[m][slot] {
            Ref::Input(j) => format!("x{j}v"),
            Ref::Member(member) => format!("(t{member} ^ {u}zero)"),
            Ref::Accumulator => "bitcast<u32>(acc)".to_string(),
        };
        for (m, member) in self.members.iter().enumerate() {
            let a = || operand(m, 0);
            let e = match &member.expr {
                EwExpr::Unary { op, dt } => format!("unary_bits({op}u, {dt}u, {})", a()),
                EwExpr::Binary { op, dt, scalar: None } => {
                    format!("binary_bits({op}u, {dt}u, {}, {})", a(), operand(m, 1))
                }
                EwExpr::Binary { op, dt, scalar: Some((bits, false)) } => {
                    format!("binary_bits({op}u, {dt}u, {}, {bits}u)", a())
                }
                EwExpr::Binary { op, dt, scalar: Some((bits, true)) } => {
                    format!("binary_bits({op}u, {dt}u, {bits}u, {})", a())
                }
                EwExpr::Where => format!("select({}, {}, {} != 0u)", operand(m, 1), a(), operand(m, 2)),
                EwExpr::Cast { from, to } => format!("cast_bits({from}u, {to}u, {})", a()),
                EwExpr::Copy => a(),
                EwExpr::Fill { bits } => format!("{bits}u"),
            };
            line!("    let t{m} = {e};");
        }
        for (j, (m, _)) in self.outputs.iter().enumerate() {
            line!("    {t}y{j}[o{}] = t{m};", self.inputs.len() + j, t = self.tag);
        }
        s
    }
}

/// A dispatch running `members` per element of `shape` in one kernel, built
/// from the eager kernels' op functions (`shaders/elementwise_ops.wgsl`).
/// `None` if the generated module fails validation (the nodes then stay
/// unfused).
pub(crate) fn fused_elementwise(
    dev: &std::sync::Arc<crate::device::DeviceInner>,
    shape: &[usize],
    members: &[FusedMember],
) -> Option<crate::graph::Node> {
    let chain = Chain::new(shape, members)?;
    let mut s = String::from(crate::shaders::FUSED_PRELUDE);
    s += &format!("struct Fused {{\n{}}}\n", chain.fields(""));
    s += "@group(0) @binding(0) var<uniform> p: Fused;\n";
    s += &chain.declarations(1);
    s += "@compute @workgroup_size(256)
fn fused(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wg, nwg, lid);
    if i >= p.numel { return; }
";
    s += &chain.body("p.");
    s += "}\n";
    let shader = dev.fused_shader("fused elementwise", &s, false)?;
    let uniform = bytemuck::cast_slice(&chain.words()).to_vec();
    let groups = crate::graph::grid(chain.numel().div_ceil(256) as u32);
    Some(node(dev, crate::shaders::Kernel::dynamic(shader, "fused"), chain.bindings(1), uniform, groups))
}

/// The dispatch of a generated kernel.
fn node(
    dev: &crate::device::DeviceInner,
    kernel: crate::shaders::Kernel,
    bindings: Vec<(u32, wgpu::Buffer)>,
    uniform: Vec<u8>,
    groups: [u32; 3],
) -> crate::graph::Node {
    crate::graph::Node::Dispatch {
        pipeline: dev.pipeline(&kernel),
        bindings,
        uniform,
        groups,
        random: false,
        fusable: None,
    }
}

/// The matmul node `mm` (its `uniform` and workgroup `groups`) with
/// `members` as its epilogue, run per element of its result, which they
/// see as a dense tensor of `shape`. `None` if the generated module fails
/// validation.
pub(crate) fn matmul_epilogue(
    dev: &std::sync::Arc<crate::device::DeviceInner>,
    mm: &crate::graph::MmInfo,
    uniform: &[u8],
    groups: [u32; 3],
    shape: &[usize],
    members: &[FusedMember],
) -> Option<crate::graph::Node> {
    let chain = Chain::new(shape, members)?;
    let source = mm.variant.source(mm.conv, Some(&chain));
    let shader =
        dev.fused_shader(&format!("{} + epilogue", mm.variant.label(mm.conv)), &source, mm.variant.subgroups())?;
    let mut bindings = vec![(1, mm.a.clone()), (2, mm.b.clone()), (3, mm.c.clone())];
    bindings.extend(chain.bindings(4));
    let mut uniform = uniform.to_vec();
    uniform.extend_from_slice(bytemuck::cast_slice(&chain.words()));
    Some(node(dev, crate::shaders::Kernel::dynamic(shader, "matmul"), bindings, uniform, groups))
}

/// The reduction node `info` (its `uniform` and workgroup `groups`) with
/// `prologue`, a chain of `shape` whose member `m` is the reduction's input
/// (computed where it is read, never loaded), and `epilogue`, a chain run
/// on each result as it is stored (`acc`) — or, if its flag is set, on each
/// element of the input that made the result (`acc` its result). `None` if
/// the generated module fails validation.
pub(crate) fn reduction(
    dev: &std::sync::Arc<crate::device::DeviceInner>,
    info: &crate::graph::RedInfo,
    uniform: &[u8],
    groups: [u32; 3],
    prologue: Option<(&[usize], &[FusedMember], usize)>,
    epilogue: Option<(&[usize], &[FusedMember], bool)>,
) -> Option<crate::graph::Node> {
    let pro = match prologue {
        Some((shape, members, m)) => Some((Chain { tag: "q", ..Chain::new(shape, members)? }, m)),
        None => None,
    };
    let (mut epi, revisit) = match epilogue {
        Some((shape, members, revisit)) => (Some(Chain::new(shape, members)?), revisit),
        None => (None, false),
    };
    const LAST_FIELD: &str = "    shift_red: array<vec4<u32>, 2>,\n";
    const ELEMENT: &str = "fn element(i: u32) -> f32 { return x[i]; }\n";
    const FINISHED: &str = "fn finished(i: u32, acc: f32) {}\n";
    const REVISIT: &str = "fn revisit(base: u32, acc: f32) {}\n";
    let mut fields = String::from(LAST_FIELD);
    let mut source = crate::shaders::REDUCE.to_string();
    let mut bindings = vec![(2, info.out.clone())];
    let mut uniform = uniform.to_vec();
    let mut next = 3;
    let mut declarations = String::new();
    match &pro {
        Some((c, m)) => {
            fields += &c.fields("q_");
            let element = format!(
                "fn element(i: u32) -> f32 {{\n{}    return bitcast<f32>(t{m} ^ p.q_zero);\n}}\n",
                c.body("p.q_")
            );
            hook(&mut source, ELEMENT, &element);
            declarations += &c.declarations(next);
            bindings.extend(c.bindings(next));
            uniform.extend_from_slice(bytemuck::cast_slice(&c.words()));
            next += c.strides.len() as u32;
        }
        None => match epi.as_ref().and_then(|c| c.outputs.iter().position(|(_, o)| o.buffer == info.x.buffer)) {
            // the epilogue overwrites the input (one result): read it
            // through the epilogue's binding
            Some(y) => {
                hook(&mut source, ELEMENT, &format!("fn element(i: u32) -> f32 {{ return bitcast<f32>(y{y}[i]); }}\n"))
            }
            None => bindings.push((1, info.x.buffer.clone())),
        },
    }
    if let (Some(c), Some((p, _))) = (epi.as_mut(), &pro) {
        // what the prologue stores, the epilogue reads through its arrays
        for (j, input) in c.inputs.iter().enumerate() {
            if let Some(y) = p.outputs.iter().position(|(_, o)| o.buffer == input.buffer) {
                c.elsewhere[j] = Some(format!("{}y{y}", p.tag));
            }
        }
    }
    if let Some(c) = &epi {
        fields += &c.fields("e_");
        match revisit {
            false => hook(&mut source, FINISHED, &format!("fn finished(i: u32, acc: f32) {{\n{}}}\n", c.body("p.e_"))),
            true => hook(
                &mut source,
                REVISIT,
                &format!(
                    "fn revisit(base: u32, acc: f32) {{\n    for (var r = 0u; r < p.n_red; r++) {{\n        let i = base + reduced_offset(r);\n{}    }}\n}}\n",
                    c.body("p.e_")
                ),
            ),
        }
        declarations += &c.declarations(next);
        bindings.extend(c.bindings(next));
        uniform.extend_from_slice(bytemuck::cast_slice(&c.words()));
    }
    hook(&mut source, LAST_FIELD, &fields);
    let s = format!("{}\n{source}{declarations}", crate::shaders::FUSED_PRELUDE);
    let shader = dev.fused_shader("reduction + chain", &s, false)?;
    let kernel = crate::shaders::Kernel::dynamic(shader, info.entry).with("OP", info.op);
    Some(node(dev, kernel, bindings, uniform, groups))
}

// ---- optimizer updates in place --------------------------------------------

/// One dispatch applying the update rule of `infos` (all one rule, with
/// hyper-parameters `uniform`) to each of their parameter tensors, in
/// place: the parameter and state buffers they read are the ones written.
/// Built on the rule functions of `shaders/optim.wgsl`. `None` if the
/// generated module fails validation.
/// `count`: where the advanced step count goes, and the bits of the f32
/// added to it (the step count's own `t + 1`, taken on by this dispatch).
pub(crate) fn optimizer_in_place(
    dev: &std::sync::Arc<crate::device::DeviceInner>,
    uniform: &[u8],
    infos: &[&crate::graph::OptInfo],
    count: Option<(&wgpu::Buffer, u32)>,
) -> Option<crate::graph::Node> {
    let entry = infos[0].entry;
    let mut s = crate::shaders::Shader::Optim.source().to_string();
    let w = &mut s;
    macro_rules! line { ($($arg:tt)*) => { writeln!(w, $($arg)*).expect("write to String") }; }
    let mut bindings = vec![(3, infos[0].scale.clone()), (9, infos[0].t.clone())];
    for (k, info) in infos.iter().enumerate() {
        let first = 10 + 4 * k as u32;
        line!("@group(0) @binding({first}) var<storage, read_write> p{k}: array<vec4<f32>>;");
        line!("@group(0) @binding({}) var<storage, read> g{k}: array<vec4<f32>>;", first + 1);
        bindings.push((first, info.updates[0].0.clone()));
        bindings.push((first + 1, info.grad.clone()));
        for (slot, (read, _)) in info.updates[1..].iter().enumerate() {
            line!(
                "@group(0) @binding({}) var<storage, read_write> s{}_{k}: array<vec4<f32>>;",
                first + 2 + slot as u32,
                slot + 1
            );
            bindings.push((first + 2 + slot as u32, read.clone()));
        }
    }
    line!("@compute @workgroup_size(256)");
    line!("fn in_place(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,");
    line!("            @builtin(local_invocation_index) lid: u32) {{");
    line!("    let group = linear_group(wg, nwg);");
    if let Some((buffer, bits)) = count {
        let b = 10 + 4 * infos.len() as u32;
        bindings.push((b, buffer.clone()));
        let decl = format!("@group(0) @binding({b}) var<storage, read_write> count: array<f32>;\n");
        w.insert_str(w.rfind("@compute").expect("an entry point"), &decl);
        line!("    if group == 0u && lid == 0u {{ count[0] = t[0] + bitcast<f32>({bits}u); }}");
    }
    line!("    let done = t[0];");
    line!("    let factor = scale[0];");
    line!("    let z = vec4<f32>();");
    // each tensor has workgroups of its own (on a GPU, no workgroup then
    // diverges); `start`: its first workgroup
    let mut start = 0;
    for (k, info) in infos.iter().enumerate() {
        let vectors = info.numel.div_ceil(4);
        let end = start + vectors.div_ceil(256);
        line!("    let j{k} = (group - {start}u) * 256u + lid;");
        line!("    if group >= {start}u && group < {end}u && j{k} < {vectors}u {{");
        line!("        let j = j{k};");
        let state = |slot: usize| {
            if slot < info.updates.len() { format!("s{slot}_{k}[j]") } else { "z".to_string() }
        };
        line!("        let u = {entry}_rule(o, done, factor, p{k}[j], g{k}[j], {}, {});", state(1), state(2));
        if info.numel % 4 == 0 {
            line!("        p{k}[j] = u.p;");
            for slot in 1..info.updates.len() {
                line!("        s{slot}_{k}[j] = u.s{slot};");
            }
        } else {
            // lanes past the tensor's end keep their values: the buffer
            // may hold another tensor there
            line!("        let live = 4u * j + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>({}u);", info.numel);
            line!("        p{k}[j] = select(p{k}[j], u.p, live);");
            for slot in 1..info.updates.len() {
                line!("        s{slot}_{k}[j] = select(s{slot}_{k}[j], u.s{slot}, live);");
            }
        }
        line!("    }}");
        start = end;
    }
    line!("}}");
    let shader = dev.fused_shader("optimizer in place", &s, false)?;
    let kernel = crate::shaders::Kernel::dynamic(shader, "in_place");
    Some(node(dev, kernel, bindings, uniform.to_vec(), crate::graph::grid(start as u32)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Generated kernels parse and validate (with subgroups) for several tiles.
    #[test]
    fn subgroup_matmul_validates() {
        let tile = |rows, cols, unroll, a, b| MatmulTile { rows, cols, unroll, a, b };
        for t in [
            tile(8, 4, 1, ALoad::Scalar, BLoad::Scalar),
            tile(64, 8, 2, ALoad::Scalar, BLoad::Scalar),
            tile(64, 8, 4, ALoad::AlongK, BLoad::AlongN),
            tile(16, 4, 2, ALoad::Scalar, BLoad::AlongN),
            tile(32, 8, 2, ALoad::AlongM, BLoad::Scalar),
            tile(64, 8, 4, ALoad::AlongK, BLoad::AlongK),
            tile(32, 4, 4, ALoad::AlongM, BLoad::AlongK),
        ] {
            let src = MatmulVariant::Subgroup(t).source(None, None);
            crate::shaders::DynamicShader::new("matmul", &src, true).unwrap_or_else(|e| panic!("{t:?}: {e}"));
        }
        // a convolution's products: gathered operands load one element at a time
        for (conv, a) in [
            (ConvGemm::Forward, ALoad::AlongK),
            (ConvGemm::Forward, ALoad::Scalar),
            (ConvGemm::InputGrad, ALoad::Scalar),
            (ConvGemm::WeightGrad, ALoad::Scalar),
        ] {
            for t in
                [tile(8, 4, if a == ALoad::AlongK { 4 } else { 1 }, a, BLoad::Scalar), tile(64, 8, 4, a, BLoad::Scalar)]
            {
                let src = MatmulVariant::Subgroup(t).source(Some(conv), None);
                crate::shaders::DynamicShader::new("conv", &src, true)
                    .unwrap_or_else(|e| panic!("{t:?} {conv:?}: {e}"));
            }
        }
    }

    /// Every autotune candidate of the workgroup-tiled matmul validates
    /// (without subgroups).
    #[test]
    fn workgroup_matmul_validates() {
        for t in WorkgroupTile::CANDIDATES {
            for conv in [None, Some(ConvGemm::Forward), Some(ConvGemm::InputGrad), Some(ConvGemm::WeightGrad)] {
                let src = MatmulVariant::Workgroup(t).source(conv, None);
                crate::shaders::DynamicShader::new("matmul", &src, false)
                    .unwrap_or_else(|e| panic!("{t} {conv:?}: {e}"));
            }
        }
    }
}
