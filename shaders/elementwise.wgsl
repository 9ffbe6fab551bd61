// Elementwise kernels: unary maps, binary maps (tensor ⊕ tensor and
// tensor ⊕ scalar), comparisons, where, cast, strided copy and fill. The
// arithmetic is in elementwise_ops.wgsl (compiled together with this file).
//
// Every buffer is bound as raw 32-bit words so one kernel serves f32, i32 and
// u32 tensors; values are bitcast on load and store. Operands are strided
// views: the host coalesces dimensions, so a contiguous operand costs one
// div/mod per element and a broadcast operand has stride 0.
//
// The op is chosen by the pipeline-overridable constant OP (one pipeline per
// op, so the switch folds away when the pipeline is compiled): the module
// is this file after the op functions and `unary_bits`/`binary_bits`, the
// switches over the op codes that src/codegen/elementwise.rs writes from
// the op tables.

struct Ew {
    numel: u32,
    rank: u32,
    off_a: u32,
    off_b: u32,
    off_c: u32,
    off_out: u32,
    scalar: u32,
    _pad: u32,
    shape: array<vec4<u32>, 2>,
    str_a: array<vec4<u32>, 2>,
    str_b: array<vec4<u32>, 2>,
    str_c: array<vec4<u32>, 2>,
    str_out: array<vec4<u32>, 2>,
    // fast_div constants of each shape entry
    div_magic: array<vec4<u32>, 2>,
    div_shift: array<vec4<u32>, 2>,
}

@group(0) @binding(0) var<uniform> p: Ew;
@group(0) @binding(1) var<storage, read> a: array<u32>;
@group(0) @binding(2) var<storage, read> b: array<u32>;
@group(0) @binding(3) var<storage, read> c: array<u32>;
@group(0) @binding(4) var<storage, read_write> out: array<u32>;

override OP: u32 = 0u;
// Element type of the operands: 0 = f32, 1 = i32, 2 = u32.
override DT: u32 = 0u;
// Which operand of a binary op is the uniform scalar: 0 none, 1 b, 2 a.
override SCALAR: u32 = 0u;
// Source element type of a cast (DT is the destination).
override FROM: u32 = 0u;


// The view has at most one dimension after coalescing (every operand dense
// or a scalar broadcast): offsets are one multiply-add, no index arithmetic.
override FLAT: bool = false;

// Offsets of element i of the output in a, b, c and out.
fn offsets(i: u32) -> vec4<u32> {
    if FLAT {
        let s = vec4<u32>(p.str_a[0][0], p.str_b[0][0], p.str_c[0][0], p.str_out[0][0]);
        return vec4<u32>(p.off_a, p.off_b, p.off_c, p.off_out) + i * s;
    }
    var rem = i;
    var o = vec4<u32>(p.off_a, p.off_b, p.off_c, p.off_out);
    for (var d = i32(p.rank) - 1; d >= 0; d--) {
        let q = u32(d) / 4u;
        let r = u32(d) % 4u;
        let quot = fast_div(rem, p.div_magic[q][r], p.div_shift[q][r]);
        let k = rem - quot * p.shape[q][r];
        rem = quot;
        o += k * vec4<u32>(p.str_a[q][r], p.str_b[q][r], p.str_c[q][r], p.str_out[q][r]);
    }
    return o;
}

@compute @workgroup_size(256)
fn unary(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wg, nwg, lid);
    if i >= p.numel { return; }
    let o = offsets(i);
    out[o.w] = unary_bits(OP, DT, a[o.x]);
}

// ---- binary ------------------------------------------------------------

@compute @workgroup_size(256)
fn binary(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wg, nwg, lid);
    if i >= p.numel { return; }
    let o = offsets(i);
    var x = p.scalar;
    var y = p.scalar;
    if SCALAR != 2u { x = a[o.x]; }
    if SCALAR != 1u { y = b[o.y]; }
    out[o.w] = binary_bits(OP, DT, x, y);
}

// where(c, a, b): a where the mask c is non-zero, else b.
@compute @workgroup_size(256)
fn where_(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wg, nwg, lid);
    if i >= p.numel { return; }
    let o = offsets(i);
    out[o.w] = select(b[o.y], a[o.x], c[o.z] != 0u);
}

// ---- cast, copy, fill --------------------------------------------------

@compute @workgroup_size(256)
fn cast_(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wg, nwg, lid);
    if i >= p.numel { return; }
    let o = offsets(i);
    out[o.w] = cast_bits(FROM, DT, a[o.x]);
}

// Strided read of a, strided write of out: contiguous(), and the pieces of
// cat and pad written into views of their output.
@compute @workgroup_size(256)
fn copy(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wg, nwg, lid);
    if i >= p.numel { return; }
    let o = offsets(i);
    out[o.w] = a[o.x];
}

@compute @workgroup_size(256)
fn fill(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wg, nwg, lid);
    if i >= p.numel { return; }
    out[offsets(i).w] = p.scalar;
}
