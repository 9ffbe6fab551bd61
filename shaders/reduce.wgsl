// Reductions over any set of axes: sum, max, min, argmax, argmin.
//
// The host splits the input view into "kept" dimensions (one per output
// element) and "reduced" dimensions, each with its own shape and strides, so
// any axis set and any strided view is read in place. Many outputs: one
// invocation folds each, in order (`reduce_serial`). Few outputs: one
// workgroup folds each, its invocations taking strided slices combined as a
// tree (`reduce`); or, for long ones, each is split into n_chunks partial
// results, one invocation folding each chunk in order on CPU adapters
// (`reduce_serial`), a workgroup's tree on GPUs (`reduce`), then reduced
// again by a second dispatch. The order is fixed for an adapter, so results
// are deterministic run to run.

struct Reduce {
    n_out: u32,
    n_red: u32,
    rank_out: u32,
    rank_red: u32,
    offset: u32,
    chunk: u32,
    n_chunks: u32,
    scale: f32,
    shape_out: array<vec4<u32>, 2>,
    str_out: array<vec4<u32>, 2>,
    shape_red: array<vec4<u32>, 2>,
    str_red: array<vec4<u32>, 2>,
    // fast_div constants of shape_out and shape_red
    magic_out: array<vec4<u32>, 2>,
    shift_out: array<vec4<u32>, 2>,
    magic_red: array<vec4<u32>, 2>,
    shift_red: array<vec4<u32>, 2>,
    hooks: Hooks,
}

@group(0) @binding(0) var<uniform> p: Reduce;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<u32>;

// The kernels call three hooks: `element(i)`, element i of x; `finished(i,
// acc)`, run once result i (`acc`) is stored; and `revisit(base, acc)`, run
// over the elements of x that made it (from offset `base`; one output per
// invocation only). The eager module adds the defaults of
// reduce_hooks.wgsl; compiled steps generate their own
// (src/codegen/reduction.rs): an elementwise chain computing x runs in
// `element` (x is then never stored or loaded), a chain reading the results
// in `finished`, or one over x's shape reading them broadcast (as a
// softmax's gradient does) in `revisit`. The hooks' own parameters are the
// uniform's last field, a struct `Hooks` that the hooks' file declares.

override OP: u32 = 0u;
const SUM: u32 = 0u;
const MAX: u32 = 1u;
const MIN: u32 = 2u;
const ARGMAX: u32 = 3u;
const ARGMIN: u32 = 4u;

const RWG: u32 = 64u;
var<workgroup> vals: array<f32, 64>;
var<workgroup> idxs: array<u32, 64>;

fn identity() -> f32 {
    switch OP {
        case MAX, ARGMAX: { return -inf(); }
        case MIN, ARGMIN: { return inf(); }
        default: { return 0.0; }
    }
}

// Does candidate (vb, ib) beat (va, ia) for arg-reductions? NaN wins (as in
// numpy), ties go to the lower index.
fn better(va: f32, ia: u32, vb: f32, ib: u32) -> bool {
    if is_nan(vb) { return !is_nan(va) || ib < ia; }
    if is_nan(va) { return false; }
    var strictly: bool;
    if OP == ARGMAX { strictly = vb > va; } else { strictly = vb < va; }
    return strictly || (vb == va && ib < ia);
}

fn combine(acc: f32, v: f32) -> f32 {
    switch OP {
        case MAX: { return fmax(acc, v); }
        case MIN: { return fmin(acc, v); }
        default: { return acc + v; }
    }
}

fn kept_offset(o: u32) -> u32 {
    var rem = o;
    var off = p.offset;
    for (var d = i32(p.rank_out) - 1; d >= 0; d--) {
        let q = u32(d) / 4u;
        let r = u32(d) % 4u;
        let quot = fast_div(rem, p.magic_out[q][r], p.shift_out[q][r]);
        off += (rem - quot * p.shape_out[q][r]) * p.str_out[q][r];
        rem = quot;
    }
    return off;
}

fn reduced_offset(i: u32) -> u32 {
    if p.rank_red <= 1u {
        return i * p.str_red[0][0];
    }
    var rem = i;
    var off = 0u;
    for (var d = i32(p.rank_red) - 1; d >= 0; d--) {
        let q = u32(d) / 4u;
        let r = u32(d) % 4u;
        let quot = fast_div(rem, p.magic_red[q][r], p.shift_red[q][r]);
        off += (rem - quot * p.shape_red[q][r]) * p.str_red[q][r];
        rem = quot;
    }
    return off;
}

// Folds elements r0..r1 of the output at `base`, in order: a run along the
// innermost reduced dimension at a time, stepping its stride (one division
// per run, not one per dimension per element).
struct Folded { acc: f32, arg: u32 }

fn fold(base: u32, r0: u32, r1: u32) -> Folded {
    var acc = identity();
    var arg = 0xffffffffu;
    let d = max(p.rank_red, 1u) - 1u;
    let q = d / 4u;
    let s = d % 4u;
    let inner = select(p.n_red, p.shape_red[q][s], p.rank_red > 1u);
    let step = p.str_red[q][s];
    var r = r0;
    while r < r1 {
        var j = r;
        if p.rank_red > 1u {
            j = r - fast_div(r, p.magic_red[q][s], p.shift_red[q][s]) * inner;
        }
        let end = min(r1, r - j + inner);
        var i = base + reduced_offset(r);
        if OP == SUM || OP == MAX || OP == MIN {
            // four loads in flight, folded in the same order
            for (; r + 4u <= end; r += 4u) {
                let v0 = element(i);
                let v1 = element(i + step);
                let v2 = element(i + 2u * step);
                let v3 = element(i + 3u * step);
                acc = combine(combine(combine(combine(acc, v0), v1), v2), v3);
                i += 4u * step;
            }
        }
        for (; r < end; r++) {
            let v = element(i);
            if OP == ARGMAX || OP == ARGMIN {
                if better(acc, arg, v, r) { acc = v; arg = r; }
            } else {
                acc = combine(acc, v);
            }
            i += step;
        }
    }
    return Folded(acc, arg);
}

// One invocation per output (or per chunk of one), folding its elements in
// order: for many outputs, or as the first pass of a few long reductions
// (no barriers, which are costly per workgroup on some adapters).
@compute @workgroup_size(64)
fn reduce_serial(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let task = (wg.y * nwg.x + wg.x) * RWG + lid;
    if task >= p.n_out * p.n_chunks { return; }
    let base = kept_offset(task / p.n_chunks);
    let r0 = (task % p.n_chunks) * p.chunk;
    let f = fold(base, r0, min(r0 + p.chunk, p.n_red));
    var bits: u32;
    if OP == ARGMAX || OP == ARGMIN {
        bits = f.arg;
    } else if OP == SUM {
        bits = bitcast<u32>(f.acc * p.scale);
    } else {
        bits = bitcast<u32>(f.acc);
    }
    out[task] = bits;
    finished(task, bitcast<f32>(bits));
    revisit(base, bitcast<f32>(bits));
}

// One workgroup per output (or per chunk of one): for few, long reductions.
@compute @workgroup_size(64)
fn reduce(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let task = linear_group(wg, nwg);
    // Uniform per workgroup, so the barriers below stay in uniform control flow.
    let live = task < p.n_out * p.n_chunks;
    let o = task / p.n_chunks;
    let base = kept_offset(o);
    let r0 = (task % p.n_chunks) * p.chunk;
    let r1 = min(r0 + p.chunk, p.n_red);
    var acc = identity();
    var arg = 0xffffffffu;
    if live {
        for (var r = r0 + lid; r < r1; r += RWG) {
            let v = element(base + reduced_offset(r));
            if OP == ARGMAX || OP == ARGMIN {
                if better(acc, arg, v, r) { acc = v; arg = r; }
            } else {
                acc = combine(acc, v);
            }
        }
    }
    vals[lid] = acc;
    idxs[lid] = arg;
    for (var s = RWG / 2u; s > 0u; s = s / 2u) {
        workgroupBarrier();
        if lid < s {
            let vb = vals[lid + s];
            if OP == ARGMAX || OP == ARGMIN {
                if better(vals[lid], idxs[lid], vb, idxs[lid + s]) {
                    vals[lid] = vb;
                    idxs[lid] = idxs[lid + s];
                }
            } else {
                vals[lid] = combine(vals[lid], vb);
            }
        }
    }
    if lid == 0u && live {
        var bits: u32;
        if OP == ARGMAX || OP == ARGMIN {
            bits = idxs[0];
        } else if OP == SUM {
            bits = bitcast<u32>(vals[0] * p.scale);
        } else {
            bits = bitcast<u32>(vals[0]);
        }
        out[task] = bits;
        finished(task, bitcast<f32>(bits));
    }
}
