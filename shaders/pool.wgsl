// 2-d pooling over the last two axes of a contiguous [planes, H, W] view.
//
// Max pooling is written as two linear-in-values kernels so that its
// gradient is closed under differentiation (argmax positions are constants):
//   max_pool2d(x, v)[o]          = v[argmax of x over window o]  (forward: v = x)
//   max_pool2d_scatter(x, g)[i]  = Σ_{windows o whose argmax is i} g[o]
// which are adjoint to each other. The argmax is the first maximum in
// row-major window order (as PyTorch); padding never wins.
// Where the windows tile the input two columns wide (the common 2×2,
// stride 2), the `*_tiles2` kernels read and write each row of a window as
// one vec2 and the `*_tiles4` ones two neighbouring windows as one vec4:
// on CPU adapters every storage access is issued lane by lane, so the
// count of accesses decides.
// Average pooling divides by the full window size (padding counted as 0).
// Window (i, j) reads rows i·sh − ph + a·dh, a < kh, and columns likewise
// (dh, dw: the dilation).

struct Pool {
    planes: u32, h: u32, w: u32, oh: u32,
    ow: u32, kh: u32, kw: u32, sh: u32,
    sw: u32, ph: u32, pw: u32, total: u32,
    // same: 1 when v is x (the forward), so the maximum found is the value
    dh: u32, dw: u32, same: u32, _pad1: u32,
    // fast_div constants of OW, OH, W, H (integer division runs lane by
    // lane on CPU adapters)
    magic: vec4<u32>,
    shift: vec4<u32>,
}

// (plane, row, column) of element `idx` of a [planes, rows, cols] array;
// `k`: the magic constants of (cols, rows) are at k, k + 1.
fn split(idx: u32, k: u32, rows: u32, cols: u32) -> vec3<u32> {
    let a = fast_div(idx, p.magic[k], p.shift[k]);
    let b = fast_div(a, p.magic[k + 1u], p.shift[k + 1u]);
    return vec3<u32>(b, a - b * rows, idx - a * cols);
}

@group(0) @binding(0) var<uniform> p: Pool;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> v: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
// x and out two columns at a time, for windows two columns wide
@group(0) @binding(4) var<storage, read> xv: array<vec2<f32>>;
@group(0) @binding(5) var<storage, read_write> outv: array<vec2<f32>>;
// x and out four columns at a time, for pairs of such windows
@group(0) @binding(6) var<storage, read> x4: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read_write> out4: array<vec4<f32>>;

// The window whose tap at offset `off` (a·dh) reads padded row `r`
// (r + ph), i.e. i with i·s + off = r, or −1 if there is none below `n`.
// One window per tap: the gradient kernels loop over the kh·kw taps.
fn window_of(r: u32, off: u32, s: u32, n: u32) -> i32 {
    if r < off { return -1; }
    let t = r - off;
    let i = t / s;
    if i * s != t || i >= n { return -1; }
    return i32(i);
}

// The first maximum so far of a window: its flat input index (0xffffffff
// while none) and value.
struct Arg { at: u32, best: f32 }

// Takes x[k] = val into `m` if it beats the maximum so far: the first
// maximum in row-major window order wins, and NaN beats any number.
fn take(m: ptr<function, Arg>, val: f32, k: u32) {
    if (*m).at == 0xffffffffu || val > (*m).best || (is_nan(val) && !is_nan((*m).best)) {
        (*m).best = val;
        (*m).at = k;
    }
}

// The first maximum of window (plane, i, j); `at` = 0xffffffff for a
// window entirely in the padding.
fn argmax_of(plane: u32, i: u32, j: u32) -> Arg {
    var m = Arg(0xffffffffu, -inf());
    for (var a = 0u; a < p.kh; a++) {
        let y = i32(i * p.sh + a * p.dh) - i32(p.ph);
        if y < 0 || y >= i32(p.h) { continue; }
        for (var b = 0u; b < p.kw; b++) {
            let xx = i32(j * p.sw + b * p.dw) - i32(p.pw);
            if xx < 0 || xx >= i32(p.w) { continue; }
            let k = (plane * p.h + u32(y)) * p.w + u32(xx);
            take(&m, x[k], k);
        }
    }
    return m;
}

// The same for windows that tile the input two columns wide (kw = 2,
// stride = kernel, no padding): one vec2 load per row.
fn argmax_of2(plane: u32, i: u32, j: u32) -> Arg {
    var m = Arg(0xffffffffu, -inf());
    for (var a = 0u; a < p.kh; a++) {
        let k = (plane * p.h + i * p.kh + a) * p.w + 2u * j;
        let pair = xv[k >> 1u];
        take(&m, pair.x, k);
        take(&m, pair.y, k + 1u);
    }
    return m;
}

@compute @workgroup_size(256)
fn max_pool2d(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let idx = linear_id(wg, nwg, lid);
    if idx >= p.total { return; }
    let at_out = split(idx, 0u, p.oh, p.ow);
    let plane = at_out.x;
    let i = at_out.y;
    let j = at_out.z;
    let m = argmax_of(plane, i, j);
    if m.at == 0xffffffffu {
        out[idx] = 0.0;
    } else if p.same != 0u {
        out[idx] = m.best;
    } else {
        out[idx] = v[m.at];
    }
}

// Windows that tile the input two columns wide, two neighbours per
// invocation (OW even, so W is a multiple of 4): one vec4 load per row
// for both, the outputs (and the gradients) as vec2. `split` reads OW/2
// in slot 0 here; output 2·idx and 2·idx + 1 are the pair's.
struct Args { l: Arg, r: Arg }

fn argmax_pair(plane: u32, i: u32, jj: u32) -> Args {
    var l = Arg(0xffffffffu, -inf());
    var r = Arg(0xffffffffu, -inf());
    for (var a = 0u; a < p.kh; a++) {
        let k = (plane * p.h + i * p.kh + a) * p.w + 4u * jj;
        let quad = x4[k >> 2u];
        take(&l, quad.x, k);
        take(&l, quad.y, k + 1u);
        take(&r, quad.z, k + 2u);
        take(&r, quad.w, k + 3u);
    }
    return Args(l, r);
}

@compute @workgroup_size(256)
fn max_pool2d_tiles4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
    let idx = linear_id(wg, nwg, lid);
    if idx >= p.total { return; }
    let at_out = split(idx, 0u, p.oh, p.ow / 2u);
    let m = argmax_pair(at_out.x, at_out.y, at_out.z);
    if p.same != 0u {
        outv[idx] = vec2<f32>(m.l.best, m.r.best);
    } else {
        outv[idx] = vec2<f32>(v[m.l.at], v[m.r.at]);
    }
}

// xv = g over the outputs (pairs); out4 over the inputs.
@compute @workgroup_size(256)
fn max_pool2d_scatter_tiles4(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                             @builtin(local_invocation_index) lid: u32) {
    let idx = linear_id(wg, nwg, lid);
    if idx >= p.total { return; }
    let at_out = split(idx, 0u, p.oh, p.ow / 2u);
    let m = argmax_pair(at_out.x, at_out.y, at_out.z);
    let g = vec2<f32>(0.0) + xv[idx];
    for (var a = 0u; a < p.kh; a++) {
        let k = (at_out.x * p.h + at_out.y * p.kh + a) * p.w + 4u * at_out.z;
        out4[k >> 2u] = vec4<f32>(select(0.0, g.x, k == m.l.at), select(0.0, g.x, k + 1u == m.l.at),
                                  select(0.0, g.y, k + 2u == m.r.at), select(0.0, g.y, k + 3u == m.r.at));
    }
}

// max_pool2d for windows that tile the input two columns wide.
@compute @workgroup_size(256)
fn max_pool2d_tiles2(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
    let idx = linear_id(wg, nwg, lid);
    if idx >= p.total { return; }
    let at_out = split(idx, 0u, p.oh, p.ow);
    let m = argmax_of2(at_out.x, at_out.y, at_out.z);
    if p.same != 0u {
        out[idx] = m.best;
    } else {
        out[idx] = v[m.at];
    }
}

// v = g over the outputs; out over the inputs.
@compute @workgroup_size(256)
fn max_pool2d_scatter(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32) {
    let idx = linear_id(wg, nwg, lid);
    if idx >= p.total { return; }
    let at_in = split(idx, 2u, p.h, p.w);
    let plane = at_in.x;
    let r = at_in.y;
    let q = at_in.z;
    var acc = 0.0;
    for (var a = 0u; a < p.kh; a++) {
        let i = window_of(r + p.ph, a * p.dh, p.sh, p.oh);
        if i < 0 { continue; }
        for (var b = 0u; b < p.kw; b++) {
            let j = window_of(q + p.pw, b * p.dw, p.sw, p.ow);
            if j < 0 { continue; }
            if argmax_of(plane, u32(i), u32(j)).at == idx {
                acc += v[(plane * p.oh + u32(i)) * p.ow + u32(j)];
            }
        }
    }
    out[idx] = acc;
}

// The same when the windows tile the input (stride = kernel, no padding,
// sizes divisible): each input lies in exactly one window, so one
// invocation per window finds its argmax once and writes the window's
// inputs (the general kernel finds each window's argmax once per input).
// `0.0 + g` as there, so a −0 gradient reads +0 in both.
@compute @workgroup_size(256)
fn max_pool2d_scatter_tiles(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                            @builtin(local_invocation_index) lid: u32) {
    let idx = linear_id(wg, nwg, lid);
    if idx >= p.total { return; }
    let at_out = split(idx, 0u, p.oh, p.ow);
    let plane = at_out.x;
    let i = at_out.y;
    let j = at_out.z;
    let at = argmax_of(plane, i, j).at;
    let g = 0.0 + v[idx];
    for (var a = 0u; a < p.kh; a++) {
        for (var b = 0u; b < p.kw; b++) {
            let k = (plane * p.h + i * p.kh + a) * p.w + j * p.kw + b;
            out[k] = select(0.0, g, k == at);
        }
    }
}

// The same two columns wide (kw = 2): vec2 loads and stores.
@compute @workgroup_size(256)
fn max_pool2d_scatter_tiles2(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                             @builtin(local_invocation_index) lid: u32) {
    let idx = linear_id(wg, nwg, lid);
    if idx >= p.total { return; }
    let at_out = split(idx, 0u, p.oh, p.ow);
    let plane = at_out.x;
    let i = at_out.y;
    let j = at_out.z;
    let at = argmax_of2(plane, i, j).at;
    let g = 0.0 + v[idx];
    for (var a = 0u; a < p.kh; a++) {
        let k = (plane * p.h + i * p.kh + a) * p.w + 2u * j;
        outv[k >> 1u] = vec2<f32>(select(0.0, g, k == at), select(0.0, g, k + 1u == at));
    }
}

@compute @workgroup_size(256)
fn avg_pool2d(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let idx = linear_id(wg, nwg, lid);
    if idx >= p.total { return; }
    let at_out = split(idx, 0u, p.oh, p.ow);
    let plane = at_out.x;
    let i = at_out.y;
    let j = at_out.z;
    var acc = 0.0;
    for (var a = 0u; a < p.kh; a++) {
        let y = i32(i * p.sh + a * p.dh) - i32(p.ph);
        if y < 0 || y >= i32(p.h) { continue; }
        for (var b = 0u; b < p.kw; b++) {
            let xx = i32(j * p.sw + b * p.dw) - i32(p.pw);
            if xx < 0 || xx >= i32(p.w) { continue; }
            acc += x[(plane * p.h + u32(y)) * p.w + u32(xx)];
        }
    }
    out[idx] = acc / f32(p.kh * p.kw);
}

// x = g over the outputs; out over the inputs: each input receives
// g/(kh·kw) from every window that covers it.
@compute @workgroup_size(256)
fn avg_pool2d_backward(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                       @builtin(local_invocation_index) lid: u32) {
    let idx = linear_id(wg, nwg, lid);
    if idx >= p.total { return; }
    let at_in = split(idx, 2u, p.h, p.w);
    let plane = at_in.x;
    let r = at_in.y;
    let q = at_in.z;
    var acc = 0.0;
    for (var a = 0u; a < p.kh; a++) {
        let i = window_of(r + p.ph, a * p.dh, p.sh, p.oh);
        if i < 0 { continue; }
        for (var b = 0u; b < p.kw; b++) {
            let j = window_of(q + p.pw, b * p.dw, p.sw, p.ow);
            if j < 0 { continue; }
            acc += x[(plane * p.oh + u32(i)) * p.ow + u32(j)];
        }
    }
    out[idx] = acc / f32(p.kh * p.kw);
}
