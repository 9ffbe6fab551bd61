// Prepended to every shader family (see src/shaders.rs).
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

// NaN test on the bits: shader compilers may assume finite math and fold
// `x != x` to false.
fn is_nan(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u;
}

// NaN-propagating max/min: WGSL leaves max(NaN, x) to the implementation,
// PyTorch and numpy return NaN.
fn fmax(a: f32, b: f32) -> f32 {
    return select(select(a, b, b > a), b, is_nan(b));
}

fn fmin(a: f32, b: f32) -> f32 {
    return select(select(a, b, b < a), b, is_nan(b));
}
