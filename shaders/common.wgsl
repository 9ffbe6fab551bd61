// Prepended to every shader family (see src/runtime/shaders.rs).
//
// One-dimensional problems larger than 65535 workgroups are dispatched as a
// 2-D grid (WebGPU caps each dimension at 65535), so every kernel turns its
// (workgroup id, local id) into one linear index the same way.

const WG: u32 = 256u;

fn linear_id(wg: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wg.y * nwg.x + wg.x) * WG + lid;
}

fn linear_group(wg: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wg.y * nwg.x + wg.x;
}

// Non-finite constants, made at run time: WGSL rejects NaN and ±inf in
// const-expressions, and some compilers fold a bitcast of a literal into one.
fn from_bits(bits: u32) -> f32 {
    var b = bits;
    return bitcast<f32>(b);
}

fn nan() -> f32 {
    return from_bits(0x7fc00000u);
}

fn inf() -> f32 {
    return from_bits(0x7f800000u);
}

// NaN test on the bits: shader compilers may assume finite math and fold
// `x != x` to false.
fn is_nan(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u;
}

fn is_inf(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7fffffffu) == 0x7f800000u;
}

// NaN-propagating max/min: WGSL leaves max(NaN, x) to the implementation,
// PyTorch and numpy return NaN. The NaN tests come first and on the bits:
// some compilers (GL drivers) fold comparisons as if NaN did not exist.
fn fmax(a: f32, b: f32) -> f32 {
    if is_nan(a) { return a; }
    if is_nan(b) { return b; }
    return select(a, b, b > a);
}

fn fmin(a: f32, b: f32) -> f32 {
    if is_nan(a) { return a; }
    if is_nan(b) { return b; }
    return select(a, b, b < a);
}

// High 32 bits of the 64-bit product a·b (WGSL has no 64-bit integers).
fn mulhi(a: u32, b: u32) -> u32 {
    let a0 = a & 0xffffu;
    let a1 = a >> 16u;
    let b0 = b & 0xffffu;
    let b1 = b >> 16u;
    let p01 = a0 * b1;
    let p10 = a1 * b0;
    let mid = ((a0 * b0) >> 16u) + (p01 & 0xffffu) + (p10 & 0xffffu);
    return a1 * b1 + (p01 >> 16u) + (p10 >> 16u) + (mid >> 16u);
}

// x / d for a divisor known to the host, as a multiply and shifts
// (Granlund & Montgomery, PLDI 1994, figure 4.1): `magic` and `shifts`
// (sh1 | sh2 << 8) come from the host's `shape::divisor`. Integer division is not
// a vector instruction on CPUs, so CPU rasterisers run `/` and `%` lane by
// lane; this keeps index arithmetic vectorised. Exact for every u32 x.
fn fast_div(x: u32, magic: u32, shifts: u32) -> u32 {
    let t = mulhi(x, magic);
    return (t + ((x - t) >> (shifts & 0xffu))) >> (shifts >> 8u);
}
