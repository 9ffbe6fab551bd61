// Batched matrix multiply C[b] = A[b] · B[b] on strided views.
//
// A is read through (row stride, column stride), B likewise, so transposed
// operands (x.t(), permuted batches) are read in place with no copy; batch
// dimensions broadcast through stride-0 batch strides. C is contiguous.
//
// Register blocking: a 16×16 workgroup computes a 64×64 tile of C, each
// invocation a 4×4 block whose rows and columns are interleaved with a stride
// of 16. Neighbouring invocations then read neighbouring columns of B and the
// same element of A, which GPUs coalesce and CPU rasterisers (lavapipe)
// vectorise. Each k step loads 4 + 4 values for 16 FMAs. Out-of-range rows
// and columns read a clamped (valid) address and are not written.

struct Mm {
    m: u32,
    n: u32,
    k: u32,
    batch_rank: u32,
    a_off: u32,
    b_off: u32,
    a_rs: u32,
    a_cs: u32,
    b_rs: u32,
    b_cs: u32,
    // the k axis is split into k_split slices, one per workgroup layer, and
    // the partial products are summed by the host (few, long products)
    k_split: u32,
    _pad1: u32,
    batch_shape: array<vec4<u32>, 2>,
    a_bstr: array<vec4<u32>, 2>,
    b_bstr: array<vec4<u32>, 2>,
}

@group(0) @binding(0) var<uniform> p: Mm;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;

const T: u32 = 16u;
const BLOCK: u32 = 64u;

@compute @workgroup_size(16, 16)
fn matmul(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) l: vec3<u32>) {
    var ao = p.a_off;
    var bo = p.b_off;
    let slice = wg.z % p.k_split;
    var rem = wg.z / p.k_split;
    for (var d = i32(p.batch_rank) - 1; d >= 0; d--) {
        let q = u32(d) / 4u;
        let r = u32(d) % 4u;
        let n = p.batch_shape[q][r];
        let i = rem % n;
        rem = rem / n;
        ao += i * p.a_bstr[q][r];
        bo += i * p.b_bstr[q][r];
    }
    let row0 = wg.y * BLOCK + l.y;
    let col0 = wg.x * BLOCK + l.x;
    let a0 = ao + min(row0, p.m - 1u) * p.a_rs;
    let a1 = ao + min(row0 + T, p.m - 1u) * p.a_rs;
    let a2 = ao + min(row0 + 2u * T, p.m - 1u) * p.a_rs;
    let a3 = ao + min(row0 + 3u * T, p.m - 1u) * p.a_rs;
    let b0 = bo + min(col0, p.n - 1u) * p.b_cs;
    let b1 = bo + min(col0 + T, p.n - 1u) * p.b_cs;
    let b2 = bo + min(col0 + 2u * T, p.n - 1u) * p.b_cs;
    let b3 = bo + min(col0 + 3u * T, p.n - 1u) * p.b_cs;
    var c0 = vec4<f32>();
    var c1 = vec4<f32>();
    var c2 = vec4<f32>();
    var c3 = vec4<f32>();
    let chunk = (p.k + p.k_split - 1u) / p.k_split;
    let k_end = min((slice + 1u) * chunk, p.k);
    var ka = slice * chunk * p.a_cs;
    var kb = slice * chunk * p.b_rs;
    for (var kk = slice * chunk; kk < k_end; kk++) {
        let bv = vec4<f32>(b[b0 + kb], b[b1 + kb], b[b2 + kb], b[b3 + kb]);
        c0 = fma(vec4<f32>(a[a0 + ka]), bv, c0);
        c1 = fma(vec4<f32>(a[a1 + ka]), bv, c1);
        c2 = fma(vec4<f32>(a[a2 + ka]), bv, c2);
        c3 = fma(vec4<f32>(a[a3 + ka]), bv, c3);
        ka += p.a_cs;
        kb += p.b_rs;
    }
    let base = wg.z * p.m * p.n;
    var acc = array<vec4<f32>, 4>(c0, c1, c2, c3);
    for (var i = 0u; i < 4u; i++) {
        let r = row0 + i * T;
        if r >= p.m { break; }
        for (var j = 0u; j < 4u; j++) {
            let cc = col0 + j * T;
            if cc < p.n { c[base + r * p.n + cc] = acc[i][j]; }
        }
    }
}
