//! f64 references of the layout and indexing ops added with flip: each is
//! written from its definition (PyTorch's semantics), element by element.

use super::Array;

fn coords(mut i: usize, shape: &[usize]) -> Vec<usize> {
    let mut c = vec![0; shape.len()];
    for d in (0..shape.len()).rev() {
        c[d] = i % shape[d];
        i /= shape[d];
    }
    c
}

fn offset(c: &[usize], shape: &[usize]) -> usize {
    c.iter().zip(shape).fold(0, |o, (&x, &n)| o * n + x)
}

impl Array {
    /// `out[c] = self[at(c)]` over `shape`.
    pub fn remap(&self, shape: &[usize], at: impl Fn(&[usize]) -> Vec<usize>) -> Array {
        let n = shape.iter().product();
        Array::new(shape, (0..n).map(|i| self.at(&at(&coords(i, shape)))).collect())
    }

    pub fn flip(&self, axes: &[usize]) -> Array {
        self.remap(&self.shape, |c| {
            c.iter().enumerate().map(|(d, &x)| if axes.contains(&d) { self.shape[d] - 1 - x } else { x }).collect()
        })
    }

    /// `out[(i + shift) mod n] = self[i]` along each axis.
    pub fn roll(&self, shifts: &[isize], axes: &[usize]) -> Array {
        self.remap(&self.shape, |c| {
            let mut c = c.to_vec();
            for (&s, &a) in shifts.iter().zip(axes) {
                let n = self.shape[a] as isize;
                c[a] = (c[a] as isize - s).rem_euclid(n) as usize;
            }
            c
        })
    }

    /// torch's repeat: `reps` at least as long as the rank.
    pub fn repeat(&self, reps: &[usize]) -> Array {
        let lead = reps.len() - self.shape.len();
        let shape: Vec<usize> =
            reps.iter().enumerate().map(|(d, &r)| r * if d < lead { 1 } else { self.shape[d - lead] }).collect();
        self.remap(&shape, |c| (lead..reps.len()).map(|d| c[d] % self.shape[d - lead]).collect())
    }

    /// `start, start + step, …` before `end` (both within the axis).
    pub fn slice(&self, axis: usize, start: usize, end: usize, step: usize) -> Array {
        let mut shape = self.shape.clone();
        shape[axis] = end.saturating_sub(start).div_ceil(step);
        self.remap(&shape, |c| {
            let mut c = c.to_vec();
            c[axis] = start + c[axis] * step;
            c
        })
    }

    /// torch.diagonal: the other axes, then the diagonal.
    pub fn diagonal(&self, offset: isize, d1: usize, d2: usize) -> Array {
        let k = offset.unsigned_abs();
        let (r0, c0) = if offset >= 0 { (0, k) } else { (k, 0) };
        let len = self.shape[d1].saturating_sub(r0).min(self.shape[d2].saturating_sub(c0));
        let others: Vec<usize> = (0..self.shape.len()).filter(|&d| d != d1 && d != d2).collect();
        let mut shape: Vec<usize> = others.iter().map(|&d| self.shape[d]).collect();
        shape.push(len);
        self.remap(&shape, |c| {
            let mut src = vec![0; self.shape.len()];
            for (i, &d) in others.iter().enumerate() {
                src[d] = c[i];
            }
            let t = c[c.len() - 1];
            src[d1] = r0 + t;
            src[d2] = c0 + t;
            src
        })
    }

    /// torch.diag of a vector: the matrix with it on diagonal `offset`.
    pub fn diag_matrix(&self, offset: isize) -> Array {
        let k = offset.unsigned_abs();
        let n = self.numel() + k;
        let (r0, c0) = if offset >= 0 { (0, k) } else { (k, 0) };
        let mut out = Array::full(&[n, n], 0.0);
        for (t, &v) in self.data.iter().enumerate() {
            out.data[(r0 + t) * n + c0 + t] = v;
        }
        out
    }

    /// torch.tril (`upper`: triu) on the last two axes.
    pub fn triangle(&self, k: isize, upper: bool) -> Array {
        let r = self.shape.len();
        let mut out = self.clone();
        for i in 0..self.numel() {
            let c = coords(i, &self.shape);
            let d = c[r - 1] as isize - c[r - 2] as isize;
            if (upper && d < k) || (!upper && d > k) {
                out.data[i] = 0.0;
            }
        }
        out
    }

    /// torch.index_add: `out[.., idx[j], ..] += src[.., j, ..]`.
    pub fn index_add(&self, axis: usize, idx: &[usize], src: &Array) -> Array {
        let mut out = self.clone();
        for i in 0..src.numel() {
            let mut c = coords(i, &src.shape);
            c[axis] = idx[c[axis]];
            out.data[offset(&c, &self.shape)] += src.data[i];
        }
        out
    }

    /// torch.scatter_reduce with reduce "sum", "prod", "mean", "amax" or
    /// "amin" ("replace": the last source wins).
    pub fn scatter_reduce(&self, axis: usize, idx: &Array, src: &Array, reduce: &str, include_self: bool) -> Array {
        let mut lists: Vec<Vec<f64>> = vec![Vec::new(); self.numel()];
        for i in 0..src.numel() {
            let mut c = coords(i, &src.shape);
            c[axis] = idx.data[i] as usize;
            lists[offset(&c, &self.shape)].push(src.data[i]);
        }
        let mut out = self.clone();
        for (o, list) in lists.iter().enumerate() {
            if list.is_empty() {
                continue;
            }
            let mut ops = list.clone();
            if include_self {
                ops.insert(0, self.data[o]);
            }
            out.data[o] = match reduce {
                "sum" => ops.iter().sum(),
                "prod" => ops.iter().product(),
                "mean" => ops.iter().sum::<f64>() / ops.len() as f64,
                "amax" => ops.iter().cloned().fold(f64::NEG_INFINITY, f64::max),
                "amin" => ops.iter().cloned().fold(f64::INFINITY, f64::min),
                "replace" => *list.last().unwrap(),
                _ => unreachable!("{reduce}"),
            };
        }
        out
    }

    /// numpy's `x[i0, i1, …] = v` (or `+=` per element with `accumulate`),
    /// the index arrays of one shape B, `values` of shape B ++ the rest.
    pub fn index_put(&self, indices: &[&[usize]], values: &Array, accumulate: bool) -> Array {
        let k = indices.len();
        let inner: usize = self.shape[k..].iter().product();
        let mut out = self.clone();
        for b in 0..indices[0].len() {
            let c: Vec<usize> = indices.iter().map(|i| i[b]).collect();
            let base = offset(&c, &self.shape[..k]) * inner;
            for e in 0..inner {
                let v = values.data[b * inner + e];
                if accumulate {
                    out.data[base + e] += v;
                } else {
                    out.data[base + e] = v;
                }
            }
        }
        out
    }
}
