// 2-d convolution (NCHW, cross-correlation as in PyTorch) lowered to matrix
// products: im2col gathers every receptive field into a column, the product
// of the weights with the columns is an ordinary (batched) matmul whose
// result is the output in NCHW order, and col2im sums the columns'
// gradients back into the image.
//
//   cols[n, g, (c,a,b), (i,j)] = x[n, g·Cg + c, i·sh − ph + a·dh, j·sw − pw + b·dw]
//                                (0 outside the image)
//   col2im: dx[n, g·Cg + c, p, q] = Σ_{a,b} dcols[n, g, (c,a,b), (i,j)]
//                                over the (i, j) with i·sh − ph + a·dh = p, j·sw − pw + b·dw = q
//
// Each output element is one invocation summing in a fixed order, so results
// are deterministic. Both sources may be any strided view (x_str, x_off).

struct Conv {
    n: u32, c: u32, h: u32, w: u32,
    oh: u32, ow: u32, kh: u32, kw: u32,
    sh: u32, sw: u32, ph: u32, pw: u32,
    dh: u32, dw: u32, groups: u32, total: u32,
    x_str: vec4<u32>,
    x_off: u32, _pad0: u32, _pad1: u32, _pad2: u32,
    // fast_div constants of OW, OH·OW, C/groups, groups, W, H, C
    magic: array<vec4<u32>, 2>,
    shift: array<vec4<u32>, 2>,
}

const D_OW = 0u;
const D_POSITIONS = 1u;
const D_CG = 2u;
const D_GROUPS = 3u;
const D_W = 4u;
const D_H = 5u;
const D_C = 6u;

// (x / d, x % d) for divisor `k` of the table above, whose value is d.
fn divmod(x: u32, k: u32, d: u32) -> vec2<u32> {
    let q = fast_div(x, p.magic[k / 4u][k % 4u], p.shift[k / 4u][k % 4u]);
    return vec2<u32>(q, x - q * d);
}

@group(0) @binding(0) var<uniform> p: Conv;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

// dst = cols [N, groups, Cg·KH·KW, OH·OW], src = x (strided). One
// invocation per (image, group, channel, position) writes that channel's
// KH·KW window, so index arithmetic (integer division) is paid once per
// window.
@compute @workgroup_size(256)
fn im2col(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let idx = linear_id(wg, nwg, lid);
    if idx >= p.total { return; }
    let cg = p.c / p.groups;
    let positions = p.oh * p.ow;
    let a0 = divmod(idx, D_POSITIONS, positions);
    let pos = a0.y;
    let a1 = divmod(a0.x, D_CG, cg);
    let ci = a1.y;
    let ng = a1.x; // n·groups + g
    let a2 = divmod(ng, D_GROUPS, p.groups);
    let g = a2.y;
    let n = a2.x;
    let a3 = divmod(pos, D_OW, p.ow);
    let j = a3.y;
    let i = a3.x;
    let xbase = p.x_off + n * p.x_str.x + (g * cg + ci) * p.x_str.y;
    var out = (ng * cg + ci) * p.kh * p.kw * positions + pos;
    for (var a = 0u; a < p.kh; a++) {
        let y = i32(i * p.sh + a * p.dh) - i32(p.ph);
        let row_ok = y >= 0 && y < i32(p.h);
        for (var b = 0u; b < p.kw; b++) {
            let x = i32(j * p.sw + b * p.dw) - i32(p.pw);
            var v = 0.0;
            if row_ok && x >= 0 && x < i32(p.w) {
                v = src[xbase + u32(y) * p.x_str.z + u32(x) * p.x_str.w];
            }
            dst[out] = v;
            out += positions;
        }
    }
}

// Stride 1 in both directions (the usual case): col2im needs no integer
// division then, which CPU adapters run lane by lane.
override UNIT_STRIDE: bool = false;

// dst = dx [N, C, H, W] (contiguous), src = dcols [N, groups, Cg·KH·KW, OH·OW]
@compute @workgroup_size(256)
fn col2im(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let idx = linear_id(wg, nwg, lid);
    if idx >= p.total { return; }
    let b0 = divmod(idx, D_W, p.w);
    let q = b0.y;
    let b1 = divmod(b0.x, D_H, p.h);
    let pp = b1.y;
    let b2 = divmod(b1.x, D_C, p.c);
    let c = b2.y;
    let n = b2.x;
    let cg = p.c / p.groups;
    let b3 = divmod(c, D_CG, cg);
    let g = b3.x;
    // the channel's first column of this image and group
    let base = p.x_off + n * p.x_str.x + g * p.x_str.y + b3.y * p.kh * p.kw * p.x_str.z;
    var acc = 0.0;
    for (var a = 0u; a < p.kh; a++) {
        let ty = i32(pp + p.ph) - i32(a * p.dh);
        var i = u32(ty);
        if !UNIT_STRIDE {
            if ty < 0 || u32(ty) % p.sh != 0u { continue; }
            i = u32(ty) / p.sh;
        }
        if ty < 0 || i >= p.oh { continue; }
        let row = base + a * p.kw * p.x_str.z + i * p.ow * p.x_str.w;
        for (var b = 0u; b < p.kw; b++) {
            let tx = i32(q + p.pw) - i32(b * p.dw);
            var j = u32(tx);
            if !UNIT_STRIDE {
                if tx < 0 || u32(tx) % p.sw != 0u { continue; }
                j = u32(tx) / p.sw;
            }
            if tx < 0 || j >= p.ow { continue; }
            acc += src[row + b * p.x_str.z + j * p.x_str.w];
        }
    }
    dst[idx] = acc;
}
