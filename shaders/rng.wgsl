// Counter-based random numbers: Philox4x32-10 (Salmon et al., "Parallel
// random numbers: as easy as 1, 2, 3", SC 2011). Invocation i encrypts the
// counter (i, position) under the key `seed` and yields four 32-bit words,
// so a tensor's values depend only on (seed, position, index): reproducible
// on every adapter and independent of the dispatch shape.

struct Rng {
    numel: u32,
    seed_lo: u32,
    seed_hi: u32,
    pos_lo: u32,
    pos_hi: u32,
    kind: u32,
    a: f32,
    b: f32,
}

@group(0) @binding(0) var<uniform> p: Rng;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;

const UNIFORM: u32 = 0u;
const NORMAL: u32 = 1u;

fn philox(counter: vec4<u32>, key: vec2<u32>) -> vec4<u32> {
    var c = counter;
    var k = key;
    for (var round = 0u; round < 10u; round++) {
        let h0 = mulhi(0xD2511F53u, c.x);
        let h1 = mulhi(0xCD9E8D57u, c.z);
        c = vec4<u32>(h1 ^ c.y ^ k.x, 0xCD9E8D57u * c.z, h0 ^ c.w ^ k.y, 0xD2511F53u * c.x);
        k += vec2<u32>(0x9E3779B9u, 0xBB67AE85u);
    }
    return c;
}

// Uniform in [0, 1) from the top 24 bits (exactly representable in f32).
fn unit(w: u32) -> f32 {
    return f32(w >> 8u) * 5.9604644775390625e-8;
}

@compute @workgroup_size(256)
fn random(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wg, nwg, lid);
    if i * 4u >= p.numel { return; }
    let w = philox(vec4<u32>(i, p.pos_lo, p.pos_hi, 0u), vec2<u32>(p.seed_lo, p.seed_hi));
    var v: vec4<f32>;
    if p.kind == NORMAL {
        // Box-Muller; u1 in (0, 1] keeps log finite.
        let r0 = sqrt(-2.0 * log(unit(w.x) + 5.9604644775390625e-8));
        let r1 = sqrt(-2.0 * log(unit(w.z) + 5.9604644775390625e-8));
        let t0 = 6.283185307179586 * unit(w.y);
        let t1 = 6.283185307179586 * unit(w.w);
        v = vec4<f32>(r0 * cos(t0), r0 * sin(t0), r1 * cos(t1), r1 * sin(t1));
    } else {
        v = vec4<f32>(unit(w.x), unit(w.y), unit(w.z), unit(w.w));
    }
    v = p.a * v + vec4<f32>(p.b);
    for (var j = 0u; j < 4u; j++) {
        if i * 4u + j < p.numel { out[i * 4u + j] = v[j]; }
    }
}
