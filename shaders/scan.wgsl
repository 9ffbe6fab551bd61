// Scan family: inclusive prefix sums, products and log-sum-exps along one
// axis (cumsum, cumprod, logcumsumexp), forwards or from the end, and the
// first-order linear recurrence h_j = a_j·h_(j−1) + b_j (h before the first
// element 0), whose element is the pair (a, b) and whose ⊕ composes two
// affine maps: (a, b) ⊕ (a', b') = (a·a', a'·b + b'). The pair's a is read
// from x, its b from c at the same index plus `coff` (other ops bind c to x
// and never read it); every other op carries its value in .x.
//
// A "row" is the run of elements along the axis (input stride `stride`,
// output stride `ostride`); the other dimensions (shape_outer with the input's
// str_outer and the output's ostr_outer) enumerate rows. The output is
// contiguous in the input's shape.
//
// SERIAL (many or short rows): one invocation scans one row in order.
// Otherwise one workgroup scans one row, a chunk of CHUNK elements at a
// time: each invocation scans ITEMS consecutive elements in registers, the
// workgroup scans the invocations' totals in shared memory (Hillis–Steele),
// and each element is carry ⊕ (totals of the invocations before it) ⊕ (its
// own prefix); the chunk's total joins the carry for the next chunk. Every
// output is a fixed binary tree of ⊕ over its prefix, so results are
// deterministic and (for the error analysis) use fewer than k roundings for
// the k-th element.

struct Scan {
    n_rows: u32,
    n: u32,
    stride: u32,
    ostride: u32,
    rank_outer: u32,
    offset: u32,
    reverse: u32,
    coff: u32,
    shape_outer: array<vec4<u32>, 2>,
    str_outer: array<vec4<u32>, 2>,
    ostr_outer: array<vec4<u32>, 2>,
    magic_outer: array<vec4<u32>, 2>,
    shift_outer: array<vec4<u32>, 2>,
}

@group(0) @binding(0) var<uniform> p: Scan;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> c: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

const SUM: u32 = 0u;
const PROD: u32 = 1u;
const LOGSUMEXP: u32 = 2u;
const LINREC: u32 = 3u;

override OP: u32 = 0u;
override SERIAL: bool = false;

const ITEMS: u32 = 4u;
const CHUNK: u32 = 1024u; // WG · ITEMS
const LN2: f32 = 0.6931471805599453;

var<workgroup> totals: array<vec2<f32>, 256>;

fn identity() -> vec2<f32> {
    if OP == PROD || OP == LINREC { return vec2(1.0, 0.0); }
    if OP == LOGSUMEXP { return vec2(-inf(), 0.0); }
    return vec2(0.0);
}

// log(1 + z) for z in [0, 1], accurate for small z (WGSL has no log1p):
// u = 1 + z rounds, and log(u)·z/(u − 1) corrects for the rounding
// (Goldberg, "What every computer scientist should know...", theorem 4).
fn log1p_small(z: f32) -> f32 {
    let u = 1.0 + z;
    if u == 1.0 { return z; }
    return log(u) * (z / (u - 1.0));
}

// log(eᵃ + eᵇ) as numpy's logaddexp: NaN propagates, equal arguments give
// a + ln 2 (so −∞ ⊕ −∞ = −∞ and ∞ ⊕ ∞ = ∞), ∞ ⊕ −∞ = ∞; otherwise the max
// plus log1p(e^−|a−b|), which cannot overflow.
fn logaddexp(a: f32, b: f32) -> f32 {
    if is_nan(a) || is_nan(b) { return nan(); }
    if a == b { return a + LN2; }
    let m = max(a, b);
    return m + log1p_small(exp(-abs(a - b)));
}

fn combine(a: vec2<f32>, b: vec2<f32>) -> vec2<f32> {
    if OP == PROD { return vec2(a.x * b.x, 0.0); }
    if OP == LOGSUMEXP { return vec2(logaddexp(a.x, b.x), 0.0); }
    if OP == LINREC { return vec2(a.x * b.x, b.x * a.y + b.y); }
    return vec2(a.x + b.x, 0.0);
}

// The scan's element at input index i.
fn load(i: u32) -> vec2<f32> {
    if OP == LINREC { return vec2(x[i], c[i + p.coff]); }
    return vec2(x[i], 0.0);
}

// The output of an inclusive prefix.
fn result(acc: vec2<f32>) -> f32 {
    return select(acc.x, acc.y, OP == LINREC);
}

// Offsets of the row's first element in x and out.
fn row_bases(row: u32) -> vec2<u32> {
    var rem = row;
    var off = vec2<u32>(p.offset, 0u);
    for (var d = i32(p.rank_outer) - 1; d >= 0; d--) {
        let q = u32(d) / 4u;
        let r = u32(d) % 4u;
        let quot = fast_div(rem, p.magic_outer[q][r], p.shift_outer[q][r]);
        let k = rem - quot * p.shape_outer[q][r];
        off += k * vec2<u32>(p.str_outer[q][r], p.ostr_outer[q][r]);
        rem = quot;
    }
    return off;
}

// The element at scan position j (from the end when reversing).
fn element(j: u32) -> u32 {
    return select(j, p.n - 1u - j, p.reverse != 0u);
}

@compute @workgroup_size(256)
fn scan(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    if SERIAL {
        let row = linear_id(wg, nwg, lid);
        if row >= p.n_rows { return; }
        let b = row_bases(row);
        var acc = identity();
        for (var j = 0u; j < p.n; j++) {
            let e = element(j);
            acc = combine(acc, load(b.x + e * p.stride));
            out[b.y + e * p.ostride] = result(acc);
        }
        return;
    }
    let row = linear_group(wg, nwg);
    let live = row < p.n_rows;
    let b = row_bases(row);
    var carry = identity();
    for (var c = 0u; c < p.n; c += CHUNK) {
        // this invocation's inclusive prefixes of its ITEMS elements
        var local: array<vec2<f32>, ITEMS>;
        var acc = identity();
        for (var q = 0u; q < ITEMS; q++) {
            let j = c + lid * ITEMS + q;
            if live && j < p.n {
                acc = combine(acc, load(b.x + element(j) * p.stride));
            }
            local[q] = acc;
        }
        // inclusive scan of the invocations' totals; the barrier first
        // waits for the previous chunk's reads of `totals`
        workgroupBarrier();
        totals[lid] = acc;
        for (var off = 1u; off < WG; off *= 2u) {
            workgroupBarrier();
            var v = totals[lid];
            if lid >= off { v = combine(totals[lid - off], v); }
            workgroupBarrier();
            totals[lid] = v;
        }
        workgroupBarrier();
        var before = carry;
        if lid > 0u { before = combine(carry, totals[lid - 1u]); }
        for (var q = 0u; q < ITEMS; q++) {
            let j = c + lid * ITEMS + q;
            if live && j < p.n {
                out[b.y + element(j) * p.ostride] = result(combine(before, local[q]));
            }
        }
        carry = combine(carry, totals[WG - 1u]);
    }
}
