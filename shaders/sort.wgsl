// Sort family: a stable argsort along the last axis of rows, by a bitonic
// sorting network on (key, index) pairs.
//
// Keys are u32 whose unsigned order is the order wanted (`key_of`), so one
// network serves f32, i32 and u32, ascending and descending. Comparing the
// pairs lexicographically makes every pair distinct: the sorted order is
// unique, ties keep their original order (stable) and the result does not
// depend on the network's schedule.
//
// Rows are padded to P = 2^p_log2 elements with (0xffffffff, 0xffffffff),
// which sorts after every real element, and laid end to end in a flat array
// of `total` pairs (a multiple of BLOCK). Stage k of the network merges
// bitonic runs of k elements in steps j = k/2, …, 1; element i is
// compared with i ^ j, in ascending order when (i mod P) & k is 0. Runs
// never cross a row (k ≤ P), so each row is sorted on its own, and at the
// last stage (k = P) every row ascends.
//
// The kernels read one set of buffers and write another (no buffer is both
// read and written by one dispatch: the pairs ping-pong between two sets):
// - sort_rows: loads BLOCK elements of x per workgroup into shared memory
//   and runs every stage k ≤ min(P, BLOCK);
// - sort_step: one step (k, j) with j ≥ BLOCK, one invocation per pair;
// - sort_merge: the steps j < BLOCK of stage k, in shared memory.
// The `_out` forms of the shared-memory kernels write only the indices of
// the real elements, compact, row after row: the sort's last dispatch.

struct Sort {
    n_rows: u32,
    n: u32,
    p_log2: u32,
    total: u32,
    // 0: f32, 1: i32, 2: u32
    dtype: u32,
    descending: u32,
    k: u32,
    j: u32,
    stride: u32,
    rank_outer: u32,
    offset: u32,
    _pad: u32,
    shape_outer: array<vec4<u32>, 2>,
    str_outer: array<vec4<u32>, 2>,
    magic_outer: array<vec4<u32>, 2>,
    shift_outer: array<vec4<u32>, 2>,
}

@group(0) @binding(0) var<uniform> p: Sort;
@group(0) @binding(1) var<storage, read> x: array<u32>;
@group(0) @binding(2) var<storage, read> keys_in: array<u32>;
@group(0) @binding(3) var<storage, read> idx_in: array<u32>;
@group(0) @binding(4) var<storage, read_write> keys_out: array<u32>;
@group(0) @binding(5) var<storage, read_write> idx_out: array<u32>;

// Pairs a workgroup sorts in shared memory: 8 KiB of keys and indices,
// half of WebGPU's default 16 KiB of workgroup storage (wgpu's downlevel
// limit is 16352 bytes, just short of 2048 pairs).
const BLOCK: u32 = 1024u;
const PAD: u32 = 0xffffffffu;

var<workgroup> skeys: array<u32, BLOCK>;
var<workgroup> sidx: array<u32, BLOCK>;

// A key whose unsigned order is the value's order: f32 by its bits, with
// the negatives' bits flipped, −0 as +0 and every NaN as the largest key
// (NaN last ascending, first descending); i32 with its sign bit flipped;
// descending flips every bit (ties stay ties, so they keep their order).
fn key_of(bits: u32) -> u32 {
    var k = bits;
    if p.dtype == 0u {
        if (bits & 0x7fffffffu) > 0x7f800000u {
            k = PAD;
        } else if (bits & 0x7fffffffu) == 0u {
            k = 0x80000000u;
        } else if (bits & 0x80000000u) != 0u {
            k = ~bits;
        } else {
            k = bits | 0x80000000u;
        }
    } else if p.dtype == 1u {
        k = bits ^ 0x80000000u;
    }
    if p.descending != 0u { k = ~k; }
    return k;
}

// Is (ka, ia) after (kb, ib)?
fn after(ka: u32, ia: u32, kb: u32, ib: u32) -> bool {
    return ka > kb || (ka == kb && ia > ib);
}

// Does position i (flat) of stage k sort ascending?
fn ascending(i: u32, k: u32) -> bool {
    return (i & ((1u << p.p_log2) - 1u) & k) == 0u;
}

// The pair with its bit j (a power of two) clear, numbered t.
fn lower(t: u32, j: u32) -> u32 {
    return ((t & ~(j - 1u)) << 1u) | (t & (j - 1u));
}

// Compare-exchange of the shared pairs l and l | j of block position `base`.
fn exchange(base: u32, l: u32, j: u32, k: u32) {
    let m = l | j;
    let ka = skeys[l];
    let ia = sidx[l];
    let kb = skeys[m];
    let ib = sidx[m];
    if after(ka, ia, kb, ib) == ascending(base + l, k) {
        skeys[l] = kb;
        sidx[l] = ib;
        skeys[m] = ka;
        sidx[m] = ia;
    }
}

// Steps j = j0, j0/2, …, 1 of stage k on the shared block at `base`.
fn block_steps(base: u32, lid: u32, k: u32, j0: u32) {
    for (var j = j0; j > 0u; j /= 2u) {
        workgroupBarrier();
        for (var t = lid; t < BLOCK / 2u; t += WG) {
            exchange(base, lower(t, j), j, k);
        }
    }
    workgroupBarrier();
}

// Writes the shared block at `base`, every pair.
fn store_pairs(base: u32, lid: u32) {
    for (var l = lid; l < BLOCK; l += WG) {
        keys_out[base + l] = skeys[l];
        idx_out[base + l] = sidx[l];
    }
}

// Writes the indices of the real elements of the shared block at `base`
// at their compact positions, row after row: the argsort's output.
fn store_indices(base: u32, lid: u32) {
    let pm = (1u << p.p_log2) - 1u;
    for (var l = lid; l < BLOCK; l += WG) {
        let g = base + l;
        let row = g >> p.p_log2;
        let col = g & pm;
        if row < p.n_rows && col < p.n {
            idx_out[row * p.n + col] = sidx[l];
        }
    }
}

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

// Loads the BLOCK elements of x at flat position `base` (padding past the
// rows' ends) and runs every stage k ≤ min(P, BLOCK) on them.
fn sort_block(base: u32, lid: u32) {
    let pm = (1u << p.p_log2) - 1u;
    for (var l = lid; l < BLOCK; l += WG) {
        let g = base + l;
        let row = g >> p.p_log2;
        let col = g & pm;
        var key = PAD;
        var idx = PAD;
        if row < p.n_rows && col < p.n {
            key = key_of(x[row_base(row) + col * p.stride]);
            idx = col;
        }
        skeys[l] = key;
        sidx[l] = idx;
    }
    let top = min(1u << p.p_log2, BLOCK);
    for (var k = 2u; k <= top; k *= 2u) {
        block_steps(base, lid, k, k / 2u);
    }
    workgroupBarrier();
}

// Loads the block at `base` from the pairs and runs the steps j < BLOCK of
// stage k.
fn merge_block(base: u32, lid: u32) {
    for (var l = lid; l < BLOCK; l += WG) {
        skeys[l] = keys_in[base + l];
        sidx[l] = idx_in[base + l];
    }
    block_steps(base, lid, p.k, BLOCK / 2u);
}

@compute @workgroup_size(256)
fn sort_rows(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let base = linear_group(wg, nwg) * BLOCK;
    if base >= p.total { return; }
    sort_block(base, lid);
    store_pairs(base, lid);
}

// sort_rows for rows of at most BLOCK elements: the whole sort.
@compute @workgroup_size(256)
fn sort_rows_out(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let base = linear_group(wg, nwg) * BLOCK;
    if base >= p.total { return; }
    sort_block(base, lid);
    store_indices(base, lid);
}

@compute @workgroup_size(256)
fn sort_step(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let t = linear_id(wg, nwg, lid);
    if t >= p.total / 2u { return; }
    let a = lower(t, p.j);
    let b = a | p.j;
    let ka = keys_in[a];
    let ia = idx_in[a];
    let kb = keys_in[b];
    let ib = idx_in[b];
    if after(ka, ia, kb, ib) == ascending(a, p.k) {
        keys_out[a] = kb;
        idx_out[a] = ib;
        keys_out[b] = ka;
        idx_out[b] = ia;
    } else {
        keys_out[a] = ka;
        idx_out[a] = ia;
        keys_out[b] = kb;
        idx_out[b] = ib;
    }
}

@compute @workgroup_size(256)
fn sort_merge(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let base = linear_group(wg, nwg) * BLOCK;
    if base >= p.total { return; }
    merge_block(base, lid);
    store_pairs(base, lid);
}

// sort_merge of the last stage (k = P): the sort's last dispatch.
@compute @workgroup_size(256)
fn sort_merge_out(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let base = linear_group(wg, nwg) * BLOCK;
    if base >= p.total { return; }
    merge_block(base, lid);
    store_indices(base, lid);
}
