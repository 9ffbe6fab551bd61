// The convolution's gathers of A (see conv_gathers.wgsl): its input
// gradient reads wᵀ, its weight gradient dy, through these.

// input gradient: wᵀ[row = c, k = (o, ab)] = w[o, c, ab] (a_rs: the stride
// of c, a_cs: of o)
fn conv_ka_input(k: u32) -> u32 {
    let o = conv_divmod(k, G_KHKW, p.cv.khkw);
    return o.x * p.a_cs + o.y;
}

fn conv_kac_input(t: vec3<u32>) -> u32 {
    return t.x * p.a_cs + t.y * p.cv.kw + t.z;
}

// weight gradient: dy[n, o = row, pos], k = (n, pos) (a_rs: the stride of
// o, a_cs: of n)
fn conv_ka_weight(k: u32) -> u32 {
    let np = conv_divmod(k, G_POSITIONS, p.cv.positions);
    return np.x * p.a_cs + np.y;
}

fn conv_kac_weight(t: vec3<u32>) -> u32 {
    return t.x * p.a_cs + t.y * p.cv.ow + t.z;
}
