//! Layouts of strided views, broadcasting, and the dimension bookkeeping the
//! kernels need (coalescing, axis normalisation).

/// The most dimensions a kernel indexes after coalescing (uniforms hold 8).
pub(crate) const MAX_RANK: usize = 8;

/// Where a tensor's elements sit in its buffer, in elements.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Layout {
    pub shape: Vec<usize>,
    pub strides: Vec<usize>,
    pub offset: usize,
}

/// Row-major strides of a dense tensor of `shape`.
pub(crate) fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        strides[d] = strides[d + 1] * shape[d + 1];
    }
    strides
}

/// The number of elements, saturating: a shape too large to count is too
/// large to allocate, and is refused as such.
pub(crate) fn numel(shape: &[usize]) -> usize {
    shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d)).unwrap_or(usize::MAX)
}

impl Layout {
    pub fn contiguous(shape: &[usize]) -> Layout {
        Layout { shape: shape.to_vec(), strides: contiguous_strides(shape), offset: 0 }
    }

    pub fn numel(&self) -> usize {
        numel(&self.shape)
    }

    /// The view of index `i` of the first axis: one dimension fewer.
    pub fn select(&self, i: usize) -> Layout {
        Layout {
            shape: self.shape[1..].to_vec(),
            strides: self.strides[1..].to_vec(),
            offset: self.offset + i * self.strides[0],
        }
    }

    /// Dense and row-major from `offset` (size-1 dimensions may have any stride).
    pub fn is_contiguous(&self) -> bool {
        let mut expected = 1;
        for (&n, &s) in self.shape.iter().zip(&self.strides).rev() {
            if n != 1 && s != expected {
                return false;
            }
            expected *= n;
        }
        true
    }

    /// The view broadcast to `shape` (new and size-1 dimensions get stride 0),
    /// or `None` if the shapes are incompatible.
    pub fn broadcast_to(&self, shape: &[usize]) -> Option<Layout> {
        if shape.len() < self.shape.len() {
            return None;
        }
        let lead = shape.len() - self.shape.len();
        let mut strides = vec![0; shape.len()];
        for (d, &n) in self.shape.iter().enumerate() {
            if n == shape[lead + d] {
                strides[lead + d] = if n == 1 { 0 } else { self.strides[d] };
            } else if n != 1 {
                return None;
            }
        }
        Some(Layout { shape: shape.to_vec(), strides, offset: self.offset })
    }

    pub fn permute(&self, perm: &[usize]) -> Layout {
        Layout {
            shape: perm.iter().map(|&p| self.shape[p]).collect(),
            strides: perm.iter().map(|&p| self.strides[p]).collect(),
            offset: self.offset,
        }
    }

    pub fn narrow(&self, axis: usize, start: usize, len: usize) -> Layout {
        let mut l = self.clone();
        l.shape[axis] = len;
        if len > 0 {
            l.offset += start * self.strides[axis];
        }
        l
    }

    /// The same elements under a new shape without copying, if the strides
    /// allow it (always for contiguous views). The algorithm walks both
    /// shapes from the innermost dimension, matching runs of dimensions that
    /// are contiguous with each other ("chunks") in the old view.
    pub fn reshape(&self, shape: &[usize]) -> Option<Layout> {
        debug_assert_eq!(numel(shape), self.numel());
        if self.is_contiguous() || self.numel() == 0 {
            return Some(Layout { shape: shape.to_vec(), strides: contiguous_strides(shape), offset: self.offset });
        }
        let mut strides = vec![0; shape.len()];
        let mut view_d = shape.len() as isize - 1;
        let mut chunk_stride = *self.strides.last()?;
        let (mut tensor_numel, mut view_numel) = (1, 1);
        for d in (0..self.shape.len()).rev() {
            tensor_numel *= self.shape[d];
            let chunk_ends = d == 0 || (self.shape[d - 1] != 1 && self.strides[d - 1] != tensor_numel * chunk_stride);
            if chunk_ends {
                while view_d >= 0 && (view_numel < tensor_numel || shape[view_d as usize] == 1) {
                    strides[view_d as usize] = view_numel * chunk_stride;
                    view_numel *= shape[view_d as usize];
                    view_d -= 1;
                }
                if view_numel != tensor_numel {
                    return None;
                }
                if d > 0 {
                    chunk_stride = self.strides[d - 1];
                    tensor_numel = 1;
                    view_numel = 1;
                }
            }
        }
        (view_d == -1).then(|| Layout { shape: shape.to_vec(), strides, offset: self.offset })
    }
}

/// numpy broadcasting of two shapes.
pub(crate) fn broadcast_shapes(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let rank = a.len().max(b.len());
    let mut out = vec![0; rank];
    for (i, o) in out.iter_mut().enumerate() {
        let da = if i + a.len() >= rank { a[i + a.len() - rank] } else { 1 };
        let db = if i + b.len() >= rank { b[i + b.len() - rank] } else { 1 };
        *o = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return None,
        };
    }
    Some(out)
}

/// Merges dimensions that every operand walks contiguously and drops size-1
/// dimensions, so a dense elementwise op indexes one flat dimension.
/// `strides[k]` are operand k's strides over `shape`; all are rewritten.
pub(crate) fn coalesce(shape: &[usize], strides: &mut [Vec<usize>]) -> Vec<usize> {
    let mut out_shape: Vec<usize> = Vec::with_capacity(shape.len());
    let mut out_strides: Vec<Vec<usize>> = vec![Vec::with_capacity(shape.len()); strides.len()];
    for d in 0..shape.len() {
        let n = shape[d];
        if n == 1 {
            continue;
        }
        let mergeable =
            !out_shape.is_empty() && strides.iter().zip(&out_strides).all(|(s, o)| *o.last().unwrap() == s[d] * n);
        if mergeable {
            *out_shape.last_mut().unwrap() *= n;
            for (s, o) in strides.iter().zip(out_strides.iter_mut()) {
                *o.last_mut().unwrap() = s[d];
            }
        } else {
            out_shape.push(n);
            for (s, o) in strides.iter().zip(out_strides.iter_mut()) {
                o.push(s[d]);
            }
        }
    }
    for (s, o) in strides.iter_mut().zip(out_strides) {
        *s = o;
    }
    out_shape
}

/// Packs up to [`MAX_RANK`] values into the `array<vec4<u32>, 2>` of a uniform.
pub(crate) fn pack(v: &[usize]) -> [u32; MAX_RANK] {
    let mut out = [0u32; MAX_RANK];
    for (o, &x) in out.iter_mut().zip(v) {
        *o = x as u32;
    }
    out
}

/// Constants that let a kernel divide by `d` with a multiply and shifts
/// (`fast_div` in `shaders/common.wgsl`; Granlund & Montgomery 1994):
/// with l = ⌈log₂ d⌉, magic = ⌊2³²(2ˡ − d)/d⌋ + 1, sh1 = min(l, 1), sh2 = max(l − 1, 0).
pub(crate) fn divisor(d: usize) -> (u32, u32) {
    let d = d.max(1) as u64;
    let l = 64 - (d - 1).leading_zeros() as u64; // ⌈log₂ d⌉ (0 for d = 1)
    let magic = (((1u64 << 32) * ((1u64 << l) - d)) / d + 1) as u32;
    let (sh1, sh2) = (l.min(1) as u32, l.saturating_sub(1) as u32);
    (magic, sh1 | sh2 << 8)
}

/// [`divisor`] constants of each entry of `shape`, packed for a uniform.
pub(crate) fn pack_divisors(shape: &[usize]) -> ([u32; MAX_RANK], [u32; MAX_RANK]) {
    let mut magic = [0u32; MAX_RANK];
    let mut shift = [0u32; MAX_RANK];
    for (i, &n) in shape.iter().enumerate() {
        (magic[i], shift[i]) = divisor(n);
    }
    (magic, shift)
}

/// Resolves a possibly negative axis against `rank`, panicking with the op's
/// name and the shape when it is out of range.
#[track_caller]
pub(crate) fn axis(op: &str, shape: &[usize], axis: isize) -> usize {
    let rank = shape.len() as isize;
    let a = if axis < 0 { axis + rank } else { axis };
    if a < 0 || a >= rank {
        panic!("wgrad: {op}: axis {axis} is out of range for a tensor of shape {shape:?} (rank {rank})");
    }
    a as usize
}

/// Resolves an axis set: sorted, deduplicated, in range.
#[track_caller]
pub(crate) fn axes(op: &str, shape: &[usize], axes: &[isize]) -> Vec<usize> {
    let mut out = Vec::with_capacity(axes.len());
    for &a in axes {
        out.push(axis(op, shape, a)); // a loop, not a closure: keeps the caller's location
    }
    out.sort_unstable();
    let n = out.len();
    out.dedup();
    if out.len() != n {
        panic!("wgrad: {op}: repeated axis in {axes:?} for a tensor of shape {shape:?}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reshape_views() {
        // transposed 2x3 → cannot flatten without a copy
        let t = Layout::contiguous(&[3, 2]).permute(&[1, 0]);
        assert_eq!(t.reshape(&[6]), None);
        // but can split and merge size-1 dims
        let r = t.reshape(&[2, 1, 3]).unwrap();
        assert_eq!((r.strides[0], r.strides[2]), (1, 2));
        // narrowed rows stay viewable when splitting the row
        let n = Layout::contiguous(&[4, 6]).narrow(1, 0, 4);
        let r = n.reshape(&[4, 2, 2]).unwrap();
        assert_eq!(r.strides, vec![6, 2, 1]);
        assert_eq!(n.reshape(&[16]), None);
    }

    #[test]
    fn coalesce_dense_and_broadcast() {
        let mut s = vec![vec![12, 4, 1], vec![0, 0, 1]];
        let shape = coalesce(&[2, 3, 4], &mut s);
        assert_eq!(shape, vec![6, 4]);
        assert_eq!(s, vec![vec![4, 1], vec![0, 1]]);
        let mut s = vec![vec![12, 4, 1]];
        assert_eq!(coalesce(&[2, 3, 4], &mut s), vec![24]);
        assert_eq!(s, vec![vec![1]]);
    }

    /// The kernels' division by a multiply matches `/` (mirrors `fast_div`).
    #[test]
    fn fast_division_is_exact() {
        let fast = |x: u32, d: usize| {
            let (magic, shifts) = divisor(d);
            let t = ((x as u64 * magic as u64) >> 32) as u32;
            (t + ((x - t) >> (shifts & 0xff))) >> (shifts >> 8)
        };
        let divisors = [
            1usize,
            2,
            3,
            5,
            7,
            10,
            28,
            64,
            100,
            255,
            256,
            257,
            784,
            1000,
            65535,
            65536,
            1 << 20,
            3_000_017,
            (1 << 31) + 1,
        ];
        let mut xs: Vec<u32> = vec![0, 1, 2, 3, 255, 256, 65535, 65536, u32::MAX, u32::MAX - 1, 1 << 31, (1 << 31) - 1];
        let mut s = 12345u32;
        for _ in 0..20_000 {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            xs.push(s);
            xs.push(s >> 12);
        }
        for &d in &divisors {
            for &x in &xs {
                assert_eq!(fast(x, d), x / d as u32, "{x} / {d}");
            }
            for k in 0..3u32 {
                // around multiples of d
                let x = (d as u64 * 1000 + k as u64).min(u32::MAX as u64) as u32;
                assert_eq!(fast(x, d), x / d as u32);
                assert_eq!(fast(x.wrapping_sub(1), d), x.wrapping_sub(1) / d as u32);
            }
        }
    }

    #[test]
    fn broadcasting() {
        assert_eq!(broadcast_shapes(&[3, 1], &[4]), Some(vec![3, 4]));
        assert_eq!(broadcast_shapes(&[2, 3], &[3, 2]), None);
        assert_eq!(broadcast_shapes(&[], &[5]), Some(vec![5]));
    }
}
