// 2-d convolution (NCHW, cross-correlation as in PyTorch) as implicit GEMM:
// the generated matmul (src/codegen/matmul*.rs) reads one operand, or both, through
// these functions instead of from a stored matrix, so the receptive fields
// are never written out. Per image n and group g (Cg input and Og output
// channels per group, P = OH·OW output positions, k its sum's index):
//
//   forward         y[n, g, o, pos] = Σ_k w[g, o, k] · cols[k, pos],    k = (c, a, b)
//   input gradient  dx[n, g, c, pix] = Σ_k wᵀ[c, k] · dcols[k, pix],     k = (o, a, b)
//   weight gradient dw[g, o, f] = Σ_k dy[o, k] · cols[f, k],             k = (n, pos), f = (c, a, b)
//
//   cols[(c, a, b), (i, j)] = x[n, g·Cg + c, i·sh − ph + a·dh, j·sw − pw + b·dw]
//   dcols[(o, a, b), (p, q)] = dy[n, g·Og + o, i, j] where i·sh − ph + a·dh = p
//                              and j·sw − pw + b·dw = q (0 where no such i, j)
//
// (0 outside the image). The image gathered (x; dy for the input gradient)
// is the matmul's B and may be any strided view (`img`: its strides); the
// gathered A operands (wᵀ; dy for the weight gradient) are dense along k's
// last part.

struct ConvGather {
    h: u32, w: u32, oh: u32, ow: u32,
    kw: u32, khkw: u32, positions: u32, kh: u32,
    sh: u32, sw: u32, ph: u32, pw: u32,
    dh: u32, dw: u32, _pad1: u32, _pad2: u32,
    img: vec4<u32>,
    // fast_div constants of OW, KW, KH·KW, OH·OW, W, SH, SW
    magic: array<vec4<u32>, 2>,
    shift: array<vec4<u32>, 2>,
}

const G_OW = 0u;
const G_KW = 1u;
const G_KHKW = 2u;
const G_POSITIONS = 3u;
const G_W = 4u;
const G_SH = 5u;
const G_SW = 6u;

// (x / d, x % d) for divisor `k` of the table above, whose value is d.
fn conv_divmod(x: u32, k: u32, d: u32) -> vec2<u32> {
    let q = fast_div(x, p.cv.magic[k / 4u][k % 4u], p.cv.shift[k / 4u][k % 4u]);
    return vec2<u32>(q, x - q * d);
}

// B's element (k, col) is `at(k_part(bo, counters(k)) + col_part(col))`:
// the parts are (offset, row, column, residue) in the image, computed once
// per k step and once per column of the tile, so that a load costs an
// addition of vectors and a bounds check (no division, no branch: a load
// outside the image reads element 0 and is not used).

// v a pixel of x: v.x its offset, (v.y, v.z) its row and column
fn conv_x_at(v: vec4<i32>) -> f32 {
    let inside = (u32(v.y) < p.cv.h) & (u32(v.z) < p.cv.w);
    return select(0.0, b[select(0u, u32(v.x), inside)], inside);
}

// v an element of dy: v.x its offset, (v.y, v.z) its row and column, v.w
// the difference of the residues of the pixel and the filter tap (≠ 0: no
// output position reads the pixel there)
fn conv_dy_at(v: vec4<i32>) -> f32 {
    let inside = (u32(v.y) < p.cv.oh) & (u32(v.z) < p.cv.ow) & (v.w == 0);
    return select(0.0, b[select(0u, u32(v.x), inside)], inside);
}

// the offset of row y, column x of an image
fn conv_offset(y: i32, x: i32) -> i32 {
    return y * i32(p.cv.img.z) + x * i32(p.cv.img.w);
}

// k's part comes from k's counters: k split into (c or o, a, b) or (n, i,
// j), which kernels that walk k in order (unstaged and subgroup ones)
// advance without division.
fn conv_advance(t: vec3<u32>, mid: u32, lo: u32) -> vec3<u32> {
    let z = t.z + 1u;
    let wrap_lo = z == lo;
    let y = select(t.y, t.y + 1u, wrap_lo);
    let wrap_mid = y == mid;
    return vec3<u32>(select(t.x, t.x + 1u, wrap_mid), select(y, 0u, wrap_mid), select(z, 0u, wrap_lo));
}

// (x / outer, x % outer / inner, x % inner) for divisors `outer` and
// `inner` of the table above, whose values are d_o and d_i
fn conv_split(x: u32, outer: u32, d_o: u32, inner: u32, d_i: u32) -> vec3<u32> {
    let q = conv_divmod(x, outer, d_o);
    let r = conv_divmod(q.y, inner, d_i);
    return vec3<u32>(q.x, r.x, r.y);
}

// (c, a, b) of a filter tap c·KH·KW + a·KW + b
fn conv_taps_of(cab: u32) -> vec3<u32> {
    return conv_split(cab, G_KHKW, p.cv.khkw, G_KW, p.cv.kw);
}

fn conv_taps_next(t: vec3<u32>) -> vec3<u32> {
    return conv_advance(t, p.cv.kh, p.cv.kw);
}

// (n, i, j) of n·OH·OW + i·OW + j
fn conv_positions_of(k: u32) -> vec3<u32> {
    return conv_split(k, G_POSITIONS, p.cv.positions, G_OW, p.cv.ow);
}

fn conv_positions_next(t: vec3<u32>) -> vec3<u32> {
    return conv_advance(t, p.cv.oh, p.cv.ow);
}

// tap (c, a, b) → (its offset, a·dh, b·dw)
fn conv_tap(t: vec3<u32>) -> vec4<i32> {
    let y = i32(t.y * p.cv.dh);
    let x = i32(t.z * p.cv.dw);
    return vec4<i32>(i32(t.x * p.cv.img.y) + conv_offset(y, x), y, x, 0);
}

// position (i, j) → (its offset, i·sh − ph, j·sw − pw)
fn conv_position(i: u32, j: u32) -> vec4<i32> {
    let y = i32(i * p.cv.sh) - i32(p.cv.ph);
    let x = i32(j * p.cv.sw) - i32(p.cv.pw);
    return vec4<i32>(conv_offset(y, x), y, x, 0);
}

// forward: B[k = (c, a, b), col = (i, j)] of the image and group at `bo`
fn conv_kc_forward(bo: u32, t: vec3<u32>) -> vec4<i32> {
    return conv_tap(t) + vec4<i32>(i32(bo), 0, 0, 0);
}

fn conv_col_forward(col: u32) -> vec4<i32> {
    let ij = conv_divmod(col, G_OW, p.cv.ow);
    return conv_position(ij.x, ij.y);
}

// weight gradient: B[k = (n, i, j), col = (c, a, b)] of the group at `bo`
fn conv_kc_weight(bo: u32, t: vec3<u32>) -> vec4<i32> {
    return conv_position(t.y, t.z) + vec4<i32>(i32(bo + t.x * p.cv.img.x), 0, 0, 0);
}

fn conv_col_weight(col: u32) -> vec4<i32> {
    return conv_tap(conv_taps_of(col));
}

// input gradient: B[k = (o, a, b), col = (p, q)] of dy's image and group at
// `bo`: dy[i, j] where i·sh = p + ph − a·dh, j·sw = q + pw − b·dw. With
// p + ph = sh·P + r and a·dh = sh·A + s, that is i = P − A where r = s
// (likewise for columns): the column's part carries (P, Q) and its
// residues, k's part (−A, −B) and minus its residues.
fn conv_kc_input(bo: u32, t: vec3<u32>) -> vec4<i32> {
    let y = conv_divmod(t.y * p.cv.dh, G_SH, p.cv.sh);
    let x = conv_divmod(t.z * p.cv.dw, G_SW, p.cv.sw);
    let offset = i32(bo + t.x * p.cv.img.y) - conv_offset(i32(y.x), i32(x.x));
    return vec4<i32>(offset, -i32(y.x), -i32(x.x), -i32(y.y * p.cv.sw + x.y));
}

fn conv_col_input(col: u32) -> vec4<i32> {
    let pq = conv_divmod(col, G_W, p.cv.w);
    let y = conv_divmod(pq.x + p.cv.ph, G_SH, p.cv.sh);
    let x = conv_divmod(pq.y + p.cv.pw, G_SW, p.cv.sw);
    return vec4<i32>(conv_offset(i32(y.x), i32(x.x)), i32(y.x), i32(x.x), i32(y.y * p.cv.sw + x.y));
}

// A's element (row, k) is a[ao + row·a_rs + k_part(k)], like a matrix's
// a[ao + row·a_rs + k·a_cs]. The gathers of A, included where A is
// gathered (elsewhere A may be an array of vectors):
