// Debug check: flags the first op (in recording order) whose f32 output holds
// NaN or ±Inf. `tag` names the op; the flag keeps the smallest tag seen.

struct Check {
    numel: u32,
    rank: u32,
    offset: u32,
    tag: u32,
    shape: array<vec4<u32>, 2>,
    strides: array<vec4<u32>, 2>,
    magic: array<vec4<u32>, 2>,
    shift: array<vec4<u32>, 2>,
}

@group(0) @binding(0) var<uniform> p: Check;
@group(0) @binding(1) var<storage, read> x: array<u32>;
@group(0) @binding(2) var<storage, read_write> flag: array<atomic<u32>>;

@compute @workgroup_size(256)
fn check_finite(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wg, nwg, lid);
    if i >= p.numel { return; }
    var rem = i;
    var o = p.offset;
    for (var d = i32(p.rank) - 1; d >= 0; d--) {
        let q = u32(d) / 4u;
        let r = u32(d) % 4u;
        let quot = fast_div(rem, p.magic[q][r], p.shift[q][r]);
        o += (rem - quot * p.shape[q][r]) * p.strides[q][r];
        rem = quot;
    }
    // exponent all ones: NaN or infinity
    if (x[o] & 0x7f800000u) == 0x7f800000u {
        atomicMin(&flag[0], p.tag);
    }
}
