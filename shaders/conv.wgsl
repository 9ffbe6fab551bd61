// 2-d convolution (NCHW, cross-correlation as in PyTorch) and the two
// products its gradient needs. With groups, input channel c belongs to group
// c / Cg (Cg = C / groups) and output channel o to group o / Og.
//
//   y[n,o,i,j]  = Σ_{c∈g(o),a,b} x[n,c, i·sh − ph + a·dh, j·sw − pw + b·dw] · w[o,c−g·Cg,a,b]
//   conv2d_backward_data:   dx[n,c,p,q] = Σ_{o∈g(c),a,b} dy[n,o,i,j] · w[o,c−g·Cg,a,b]
//                           over the (i, j) with i·sh − ph + a·dh = p (same for q)
//   conv2d_backward_weight: dw[o,c,a,b] = Σ_{n,i,j} dy[n,o,i,j] · x[n,g·Cg+c, i·sh − ph + a·dh, …]
//
// Each output element is one invocation summing its terms in a fixed order
// (deterministic). The weight gradient sums over the batch in `split`
// slices (partials reduced by the host) so that enough invocations run.
// All tensors are contiguous; out-of-range input positions are zero padding.

struct Conv {
    n: u32, c: u32, h: u32, w: u32,
    o: u32, oh: u32, ow: u32, groups: u32,
    kh: u32, kw: u32, sh: u32, sw: u32,
    ph: u32, pw: u32, dh: u32, dw: u32,
    total: u32, split: u32, _pad0: u32, _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Conv;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

// a = x [N,C,H,W], b = w [O,Cg,KH,KW], out = y [N,O,OH,OW]
@compute @workgroup_size(256)
fn conv2d(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let idx = linear_id(wg, nwg, lid);
    if idx >= p.total { return; }
    let j = idx % p.ow;
    let i = (idx / p.ow) % p.oh;
    let o = (idx / (p.ow * p.oh)) % p.o;
    let n = idx / (p.ow * p.oh * p.o);
    let cg = p.c / p.groups;
    let c0 = (o / (p.o / p.groups)) * cg;
    var acc = 0.0;
    for (var c = 0u; c < cg; c++) {
        let xbase = ((n * p.c + c0 + c) * p.h) * p.w;
        let wbase = ((o * cg + c) * p.kh) * p.kw;
        for (var ka = 0u; ka < p.kh; ka++) {
            let y = i32(i * p.sh + ka * p.dh) - i32(p.ph);
            if y < 0 || y >= i32(p.h) { continue; }
            for (var kb = 0u; kb < p.kw; kb++) {
                let x = i32(j * p.sw + kb * p.dw) - i32(p.pw);
                if x < 0 || x >= i32(p.w) { continue; }
                acc += a[xbase + u32(y) * p.w + u32(x)] * b[wbase + ka * p.kw + kb];
            }
        }
    }
    out[idx] = acc;
}

// a = dy [N,O,OH,OW], b = w [O,Cg,KH,KW], out = dx [N,C,H,W]
@compute @workgroup_size(256)
fn conv2d_backward_data(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(local_invocation_index) lid: u32) {
    let idx = linear_id(wg, nwg, lid);
    if idx >= p.total { return; }
    let q = idx % p.w;
    let pp = (idx / p.w) % p.h;
    let c = (idx / (p.w * p.h)) % p.c;
    let n = idx / (p.w * p.h * p.c);
    let cg = p.c / p.groups;
    let og = p.o / p.groups;
    let g = c / cg;
    let ci = c % cg;
    var acc = 0.0;
    for (var oo = 0u; oo < og; oo++) {
        let o = g * og + oo;
        let dybase = ((n * p.o + o) * p.oh) * p.ow;
        let wbase = ((o * cg + ci) * p.kh) * p.kw;
        for (var ka = 0u; ka < p.kh; ka++) {
            let ty = i32(pp + p.ph) - i32(ka * p.dh);
            if ty < 0 || u32(ty) % p.sh != 0u { continue; }
            let i = u32(ty) / p.sh;
            if i >= p.oh { continue; }
            for (var kb = 0u; kb < p.kw; kb++) {
                let tx = i32(q + p.pw) - i32(kb * p.dw);
                if tx < 0 || u32(tx) % p.sw != 0u { continue; }
                let j = u32(tx) / p.sw;
                if j >= p.ow { continue; }
                acc += a[dybase + i * p.ow + j] * b[wbase + ka * p.kw + kb];
            }
        }
    }
    out[idx] = acc;
}

// a = x [N,C,H,W], b = dy [N,O,OH,OW], out = partial dw [split, O,Cg,KH,KW]
@compute @workgroup_size(256)
fn conv2d_backward_weight(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                          @builtin(local_invocation_index) lid: u32) {
    let idx = linear_id(wg, nwg, lid);
    if idx >= p.total { return; }
    let cg = p.c / p.groups;
    let per = p.o * cg * p.kh * p.kw;
    let slice = idx / per;
    let widx = idx % per;
    let kb = widx % p.kw;
    let ka = (widx / p.kw) % p.kh;
    let ci = (widx / (p.kw * p.kh)) % cg;
    let o = widx / (p.kw * p.kh * cg);
    let c = (o / (p.o / p.groups)) * cg + ci;
    let n0 = slice * p.n / p.split;
    let n1 = (slice + 1u) * p.n / p.split;
    var acc = 0.0;
    for (var n = n0; n < n1; n++) {
        let xbase = ((n * p.c + c) * p.h) * p.w;
        let dybase = ((n * p.o + o) * p.oh) * p.ow;
        for (var i = 0u; i < p.oh; i++) {
            let y = i32(i * p.sh + ka * p.dh) - i32(p.ph);
            if y < 0 || y >= i32(p.h) { continue; }
            for (var j = 0u; j < p.ow; j++) {
                let x = i32(j * p.sw + kb * p.dw) - i32(p.pw);
                if x < 0 || x >= i32(p.w) { continue; }
                acc += b[dybase + i * p.ow + j] * a[xbase + u32(y) * p.w + u32(x)];
            }
        }
    }
    out[idx] = acc;
}
