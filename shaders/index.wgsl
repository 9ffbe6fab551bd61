// Indexing family: gather (index_select is a gather whose index view is
// broadcast across the other axes; flip and roll gather a reordered axis),
// scatter_add and scatter_reduce (one loop, folding by sum, prod, mean,
// amax, amin or replace) and one_hot.
//
// Index tensors are i32 or u32; both are read as u32, so a negative i32 is
// out of range. An out-of-range index reads as 0 rather than touching memory
// outside the tensor, and records the op's `tag` in `flags[1]` (the host
// reports it at the next read-back: see src/runtime/flags.rs).

struct Index {
    numel: u32,
    rank: u32,
    axis: u32,
    n_axis: u32,
    off_x: u32,
    off_idx: u32,
    n_loop: u32,
    tag: u32,
    shape: array<vec4<u32>, 2>,
    str_x: array<vec4<u32>, 2>,
    str_idx: array<vec4<u32>, 2>,
    div_magic: array<vec4<u32>, 2>,
    div_shift: array<vec4<u32>, 2>,
}

@group(0) @binding(0) var<uniform> p: Index;
@group(0) @binding(1) var<storage, read> x: array<u32>;
@group(0) @binding(2) var<storage, read> idx: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<u32>;
@group(0) @binding(4) var<storage, read_write> flags: array<atomic<u32>>;

fn out_of_range() {
    atomicMin(&flags[1], p.tag);
}

struct Coords {
    // offsets in x and idx of output element i, without the axis term of x
    x: u32,
    idx: u32,
    // coordinate of i along the axis
    along: u32,
}

fn coords(i: u32) -> Coords {
    var rem = i;
    var c = Coords(p.off_x, p.off_idx, 0u);
    for (var d = i32(p.rank) - 1; d >= 0; d--) {
        let q = u32(d) / 4u;
        let r = u32(d) % 4u;
        let quot = fast_div(rem, p.div_magic[q][r], p.div_shift[q][r]);
        let k = rem - quot * p.shape[q][r];
        rem = quot;
        c.idx += k * p.str_idx[q][r];
        if u32(d) == p.axis {
            c.along = k;
        } else {
            c.x += k * p.str_x[q][r];
        }
    }
    return c;
}

// out[c] = x[c with c[axis] replaced by idx[c]]
@compute @workgroup_size(256)
fn gather(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wg, nwg, lid);
    if i >= p.numel { return; }
    let c = coords(i);
    let j = idx[c.idx];
    var v = 0u;
    if j < p.n_axis {
        v = x[c.x + j * p.str_x[p.axis / 4u][p.axis % 4u]];
    } else {
        out_of_range();
    }
    out[i] = v;
}

// How the scatter loop folds the sources an index sends to one element
// (the codes of `ScatterReduce` in src/ops/index.rs; REPLACE: the last wins).
const SUM: u32 = 0u;
const PROD: u32 = 1u;
const MEAN: u32 = 2u;
const AMAX: u32 = 3u;
const AMIN: u32 = 4u;
const REPLACE: u32 = 5u;
override REDUCE: u32 = SUM;
// 1: out holds a copy of self, the fold's first operand (and its value
// where no source lands).
override INCLUDE_SELF: u32 = 0u;

fn fold(reduce: u32, acc: f32, v: f32) -> f32 {
    switch reduce {
        case PROD: { return acc * v; }
        // NaN wins, as in PyTorch's max (tested by its bits: compilers may
        // assume floats are never NaN)
        case AMAX: { return select(select(acc, v, v > acc || is_nan(v)), acc, is_nan(acc)); }
        case AMIN: { return select(select(acc, v, v < acc || is_nan(v)), acc, is_nan(acc)); }
        case REPLACE: { return v; }
        default: { return acc + v; }
    }
}

// out[c] = fold over j of src[c with c[axis] = j], for the j whose idx
// equals c[axis]. Each output element owns its fold, so no atomics are
// needed and the order of the operations is fixed (deterministic). x is
// the f32 source. With `from_self`, out[c] holds self's value: the first
// operand when `include`, and the result where no source lands.
fn scatter(i: u32, reduce: u32, from_self: bool, include: bool) {
    let c = coords(i);
    let sx = p.str_x[p.axis / 4u][p.axis % 4u];
    let si = p.str_idx[p.axis / 4u][p.axis % 4u];
    // coords() added the output's axis coordinate to c.idx; remove it.
    let idx0 = c.idx - c.along * si;
    // (inf() from a variable: a browser's WGSL compiler rejects an infinite constant)
    var acc = 0.0;
    switch reduce {
        case PROD: { acc = 1.0; }
        case AMAX: { acc = -inf(); }
        case AMIN: { acc = inf(); }
        default: {}
    }
    if include {
        acc = bitcast<f32>(out[i]);
    }
    var n = 0u;
    for (var j = 0u; j < p.n_loop; j++) {
        let dest = idx[idx0 + j * si];
        if dest == c.along {
            acc = fold(reduce, acc, bitcast<f32>(x[c.x + j * sx]));
            n++;
        } else if dest >= p.n_axis && c.along == 0u {
            out_of_range(); // reported once, by the first output it could have hit
        }
    }
    if reduce == MEAN && n > 0u {
        acc /= f32(n + u32(include));
    }
    if n > 0u || !from_self {
        out[i] = bitcast<u32>(acc);
    }
}

@compute @workgroup_size(256)
fn scatter_add(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wg, nwg, lid);
    if i >= p.numel { return; }
    scatter(i, SUM, false, false);
}

// The fold REDUCE into out, which holds a copy of self.
@compute @workgroup_size(256)
fn scatter_reduce(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wg, nwg, lid);
    if i >= p.numel { return; }
    scatter(i, REDUCE, true, INCLUDE_SELF == 1u);
}

// out[..., k] = 1.0 if idx[...] == k else 0.0; the class axis is the last.
@compute @workgroup_size(256)
fn one_hot(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wg, nwg, lid);
    if i >= p.numel { return; }
    let c = coords(i);
    let k = idx[c.idx];
    if k >= p.n_axis && c.along == 0u {
        out_of_range();
    }
    out[i] = bitcast<u32>(select(0.0, 1.0, k == c.along));
}
