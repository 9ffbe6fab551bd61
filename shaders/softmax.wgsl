// Row kernels: softmax, log_softmax and logsumexp along one axis.
//
// A "row" is the run of elements along the axis (stride `stride`); the
// remaining dimensions (shape_outer/str_outer) enumerate rows. One workgroup
// handles one row in three passes: max, sum of exp(x - max), then the output.
// Subtracting the max keeps exp from overflowing; the tree sums are in a
// fixed order, so results are deterministic. Outputs are written row-major in
// (outer..., axis) order; the host returns a view with the input's axis order.

struct Rows {
    n_rows: u32,
    n: u32,
    stride: u32,
    rank_outer: u32,
    offset: u32,
    // attention's softmax: the inputs' factor, and the rows per causal
    // block (Tq; 0: no causal mask), see `scaled_softmax`
    scale: f32,
    causal: u32,
    _pad0: u32,
    shape_outer: array<vec4<u32>, 2>,
    str_outer: array<vec4<u32>, 2>,
    magic_outer: array<vec4<u32>, 2>,
    shift_outer: array<vec4<u32>, 2>,
}

@group(0) @binding(0) var<uniform> p: Rows;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

const RWG: u32 = 64u;
var<workgroup> scratch: array<f32, 64>;

fn row_base(row: u32) -> u32 {
    var rem = row;
    var off = p.offset;
    for (var d = i32(p.rank_outer) - 1; d >= 0; d--) {
        let q = u32(d) / 4u;
        let r = u32(d) % 4u;
        let quot = fast_div(rem, p.magic_outer[q][r], p.shift_outer[q][r]);
        off += (rem - quot * p.shape_outer[q][r]) * p.str_outer[q][r];
        rem = quot;
    }
    return off;
}

// One invocation per row (SERIAL: many rows, no barriers), or one workgroup
// per row with a tree reduction (few long rows).
override SERIAL: bool = false;

// (row, lane, lanes) of this invocation.
fn assignment(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> vec3<u32> {
    if SERIAL {
        return vec3<u32>(linear_group(wg, nwg) * RWG + lid, 0u, 1u);
    }
    return vec3<u32>(linear_group(wg, nwg), lid, RWG);
}

// Element j of a row, as the kernels see it: scale·x, or −∞ where the
// causal mask hides it (key j after query i = row mod Tq: top-left aligned,
// PyTorch's is_causal). Plain softmax has scale 1 and no mask.
fn value(base: u32, row: u32, j: u32) -> f32 {
    if p.causal != 0u && j > row % p.causal { return -inf(); }
    return p.scale * x[base + j * p.stride];
}

// Returns (max, sum of exp(x - max)) of the row, identical in every invocation.
fn row_stats(base: u32, a: vec3<u32>, live: bool) -> vec2<f32> {
    let lane = a.y;
    var m = -inf();
    if live {
        for (var j = lane; j < p.n; j += a.z) { m = fmax(m, value(base, a.x, j)); }
    }
    if !SERIAL {
        scratch[lane] = m;
        for (var s = RWG / 2u; s > 0u; s = s / 2u) {
            workgroupBarrier();
            if lane < s { scratch[lane] = fmax(scratch[lane], scratch[lane + s]); }
        }
        workgroupBarrier();
        m = scratch[0];
    }
    // A row of -inf has no finite max; shifting by 0 gives exp(-inf) = 0 sums.
    let shift = select(m, 0.0, m == -inf());
    var acc = 0.0;
    if live {
        for (var j = lane; j < p.n; j += a.z) { acc += exp(value(base, a.x, j) - shift); }
    }
    if !SERIAL {
        workgroupBarrier();
        scratch[lane] = acc;
        for (var s = RWG / 2u; s > 0u; s = s / 2u) {
            workgroupBarrier();
            if lane < s { scratch[lane] = scratch[lane] + scratch[lane + s]; }
        }
        workgroupBarrier();
        acc = scratch[0];
    }
    return vec2<f32>(shift, acc);
}

@compute @workgroup_size(64)
fn softmax(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let a = assignment(wg, nwg, lid);
    let row = a.x;
    let live = row < p.n_rows;
    let base = row_base(row);
    let st = row_stats(base, a, live);
    if !live { return; }
    let inv = 1.0 / st.y;
    for (var j = a.y; j < p.n; j += a.z) {
        out[row * p.n + j] = exp(value(base, row, j) - st.x) * inv;
    }
}

// softmax(scale·x) with the causal mask, for attention: as `softmax`, but a
// row with nothing left (every entry −∞: masked out) is all zeros, not
// 0/0 = NaN, as PyTorch's scaled_dot_product_attention (since 2.5).
@compute @workgroup_size(64)
fn scaled_softmax(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let a = assignment(wg, nwg, lid);
    let row = a.x;
    let live = row < p.n_rows;
    let base = row_base(row);
    let st = row_stats(base, a, live);
    if !live { return; }
    let inv = select(1.0 / st.y, 0.0, st.y == 0.0);
    for (var j = a.y; j < p.n; j += a.z) {
        out[row * p.n + j] = exp(value(base, row, j) - st.x) * inv;
    }
}

@compute @workgroup_size(64)
fn log_softmax(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let a = assignment(wg, nwg, lid);
    let row = a.x;
    let live = row < p.n_rows;
    let base = row_base(row);
    let st = row_stats(base, a, live);
    if !live { return; }
    let lse = st.x + log(st.y);
    for (var j = a.y; j < p.n; j += a.z) {
        out[row * p.n + j] = value(base, row, j) - lse;
    }
}

@compute @workgroup_size(64)
fn logsumexp(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let a = assignment(wg, nwg, lid);
    let row = a.x;
    let live = row < p.n_rows;
    let base = row_base(row);
    let st = row_stats(base, a, live);
    if live && a.y == 0u {
        // a row whose max is infinite sums to that infinity (st.x − st.x is NaN)
        out[row] = select(st.x + log(st.y), st.x, is_inf(st.x));
    }
}
