//! A plain f64 n-d array with numpy semantics: the independent reference
//! every GPU result is compared against. Written for clarity, not speed.

#[derive(Clone, Debug, PartialEq)]
pub struct Array {
    pub shape: Vec<usize>,
    pub data: Vec<f64>,
}

fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        s[d] = s[d + 1] * shape[d + 1];
    }
    s
}

fn coords(mut i: usize, shape: &[usize]) -> Vec<usize> {
    let mut c = vec![0; shape.len()];
    for d in (0..shape.len()).rev() {
        c[d] = i % shape[d];
        i /= shape[d];
    }
    c
}

pub fn broadcast(a: &[usize], b: &[usize]) -> Vec<usize> {
    let r = a.len().max(b.len());
    (0..r)
        .map(|i| {
            let da = if i + a.len() >= r { a[i + a.len() - r] } else { 1 };
            let db = if i + b.len() >= r { b[i + b.len() - r] } else { 1 };
            assert!(da == db || da == 1 || db == 1, "reference: {a:?} and {b:?} do not broadcast");
            if da == 1 { db } else { da }
        })
        .collect()
}

impl Array {
    pub fn new(shape: &[usize], data: Vec<f64>) -> Array {
        assert_eq!(shape.iter().product::<usize>(), data.len(), "reference: shape {shape:?}");
        Array { shape: shape.to_vec(), data }
    }

    pub fn full(shape: &[usize], v: f64) -> Array {
        Array::new(shape, vec![v; shape.iter().product()])
    }

    pub fn numel(&self) -> usize {
        self.data.len()
    }

    pub fn at(&self, c: &[usize]) -> f64 {
        let s = strides(&self.shape);
        self.data[c.iter().zip(&s).map(|(a, b)| a * b).sum::<usize>()]
    }

    /// The value broadcast to `shape` at output coordinates `c`.
    fn at_broadcast(&self, c: &[usize]) -> f64 {
        let lead = c.len() - self.shape.len();
        let cc: Vec<usize> =
            self.shape.iter().enumerate().map(|(d, &n)| if n == 1 { 0 } else { c[lead + d] }).collect();
        self.at(&cc)
    }

    pub fn map(&self, f: impl Fn(f64) -> f64) -> Array {
        Array::new(&self.shape, self.data.iter().map(|&x| f(x)).collect())
    }

    pub fn zip(&self, b: &Array, f: impl Fn(f64, f64) -> f64) -> Array {
        let shape = broadcast(&self.shape, &b.shape);
        let n = shape.iter().product();
        let data = (0..n)
            .map(|i| {
                let c = coords(i, &shape);
                f(self.at_broadcast(&c), b.at_broadcast(&c))
            })
            .collect();
        Array::new(&shape, data)
    }

    pub fn where_(&self, a: &Array, b: &Array) -> Array {
        let shape = broadcast(&broadcast(&self.shape, &a.shape), &b.shape);
        let n = shape.iter().product();
        let data = (0..n)
            .map(|i| {
                let c = coords(i, &shape);
                if self.at_broadcast(&c) != 0.0 { a.at_broadcast(&c) } else { b.at_broadcast(&c) }
            })
            .collect();
        Array::new(&shape, data)
    }

    pub fn expand(&self, shape: &[usize]) -> Array {
        self.zip(&Array::full(shape, 0.0), |x, _| x)
    }

    /// Folds `axes` with `f` from `init`; `keepdim` keeps them as size 1.
    pub fn reduce(&self, axes: &[usize], keepdim: bool, init: f64, f: impl Fn(f64, f64) -> f64) -> Array {
        let kept: Vec<usize> =
            self.shape.iter().enumerate().map(|(d, &n)| if axes.contains(&d) { 1 } else { n }).collect();
        let mut out = Array::full(&kept, init);
        let ks = strides(&kept);
        for i in 0..self.numel() {
            let c = coords(i, &self.shape);
            let o: usize = c.iter().enumerate().map(|(d, &x)| if axes.contains(&d) { 0 } else { x * ks[d] }).sum();
            out.data[o] = f(out.data[o], self.data[i]);
        }
        if !keepdim {
            out.shape = self.shape.iter().enumerate().filter(|(d, _)| !axes.contains(d)).map(|(_, &n)| n).collect();
        }
        out
    }

    pub fn sum(&self, axes: &[usize], keepdim: bool) -> Array {
        self.reduce(axes, keepdim, 0.0, |a, b| a + b)
    }

    pub fn max(&self, axes: &[usize], keepdim: bool) -> Array {
        self.reduce(axes, keepdim, f64::NEG_INFINITY, |a, b| if b > a || b.is_nan() { b } else { a })
    }

    pub fn min(&self, axes: &[usize], keepdim: bool) -> Array {
        self.reduce(axes, keepdim, f64::INFINITY, |a, b| if b < a || b.is_nan() { b } else { a })
    }

    pub fn mean(&self, axes: &[usize], keepdim: bool) -> Array {
        let n: usize = axes.iter().map(|&d| self.shape[d]).product();
        self.sum(axes, keepdim).map(|x| x / n as f64)
    }

    /// Index of the first maximum (`max = true`) or minimum along `axis`.
    pub fn arg(&self, axis: usize, keepdim: bool, max: bool) -> Array {
        let moved = self.move_last(axis);
        let n = self.shape[axis];
        let rows = moved.numel() / n.max(1);
        let data = (0..rows)
            .map(|r| {
                let row = &moved.data[r * n..(r + 1) * n];
                let mut best = 0;
                for j in 1..n {
                    if (max && row[j] > row[best]) || (!max && row[j] < row[best]) {
                        best = j;
                    }
                }
                best as f64
            })
            .collect();
        let mut shape = self.shape.clone();
        if keepdim {
            shape[axis] = 1
        } else {
            shape.remove(axis);
        }
        Array::new(&shape, data)
    }

    /// Moves `axis` last (materialised).
    fn move_last(&self, axis: usize) -> Array {
        let mut perm: Vec<usize> = (0..self.shape.len()).filter(|&d| d != axis).collect();
        perm.push(axis);
        self.permute(&perm)
    }

    fn restore_from_last(&self, axis: usize) -> Array {
        let r = self.shape.len();
        let mut perm: Vec<usize> = (0..r - 1).collect();
        perm.insert(axis, r - 1);
        self.permute(&perm)
    }

    pub fn logsumexp(&self, axes: &[usize], keepdim: bool) -> Array {
        let m = self.max(axes, true).map(|m| if m.is_finite() { m } else { 0.0 });
        let s = self.zip(&m, |x, m| (x - m).exp()).sum(axes, true);
        let out = s.zip(&m, |s, m| s.ln() + m);
        if keepdim { out } else { out.squeeze_axes(axes) }
    }

    fn squeeze_axes(&self, axes: &[usize]) -> Array {
        let shape: Vec<usize> =
            self.shape.iter().enumerate().filter(|(d, _)| !axes.contains(d)).map(|(_, &n)| n).collect();
        Array::new(&shape, self.data.clone())
    }

    pub fn softmax(&self, axis: usize) -> Array {
        let lse = self.logsumexp(&[axis], true);
        self.zip(&lse, |x, l| (x - l).exp())
    }

    pub fn log_softmax(&self, axis: usize) -> Array {
        let lse = self.logsumexp(&[axis], true);
        self.zip(&lse, |x, l| x - l)
    }

    pub fn permute(&self, perm: &[usize]) -> Array {
        let shape: Vec<usize> = perm.iter().map(|&p| self.shape[p]).collect();
        let n = self.numel();
        let data = (0..n)
            .map(|i| {
                let c = coords(i, &shape);
                let mut src = vec![0; c.len()];
                for (d, &p) in perm.iter().enumerate() {
                    src[p] = c[d];
                }
                self.at(&src)
            })
            .collect();
        Array::new(&shape, data)
    }

    pub fn t(&self) -> Array {
        let r = self.shape.len();
        let mut perm: Vec<usize> = (0..r).collect();
        perm.swap(r - 2, r - 1);
        self.permute(&perm)
    }

    pub fn reshape(&self, shape: &[usize]) -> Array {
        Array::new(shape, self.data.clone())
    }

    /// Batched matrix product with broadcast batch dimensions (rank ≥ 2).
    /// Also returns, per output, Σ|a||b| (the scale of its rounding error).
    pub fn matmul_with_scale(&self, b: &Array) -> (Array, Array) {
        let (ra, rb) = (self.shape.len(), b.shape.len());
        let (m, k, n) = (self.shape[ra - 2], self.shape[ra - 1], b.shape[rb - 1]);
        assert_eq!(k, b.shape[rb - 2]);
        let batch = broadcast(&self.shape[..ra - 2], &b.shape[..rb - 2]);
        let mut shape = batch.clone();
        shape.extend([m, n]);
        let nb: usize = batch.iter().product();
        let mut out = Array::full(&shape, 0.0);
        let mut scale = Array::full(&shape, 0.0);
        for bi in 0..nb {
            let bc = coords(bi, &batch);
            for i in 0..m {
                for j in 0..n {
                    let (mut acc, mut s) = (0.0, 0.0);
                    for kk in 0..k {
                        let mut ca = bc.clone();
                        ca.extend([i, kk]);
                        let mut cb = bc.clone();
                        cb.extend([kk, j]);
                        let x = self.at_broadcast(&ca) * b.at_broadcast(&cb);
                        acc += x;
                        s += x.abs();
                    }
                    out.data[(bi * m + i) * n + j] = acc;
                    scale.data[(bi * m + i) * n + j] = s;
                }
            }
        }
        (out, scale)
    }

    pub fn narrow(&self, axis: usize, start: usize, len: usize) -> Array {
        let mut shape = self.shape.clone();
        shape[axis] = len;
        let n = shape.iter().product();
        let data = (0..n)
            .map(|i| {
                let mut c = coords(i, &shape);
                c[axis] += start;
                self.at(&c)
            })
            .collect();
        Array::new(&shape, data)
    }

    pub fn cat(xs: &[&Array], axis: usize) -> Array {
        let mut shape = xs[0].shape.clone();
        shape[axis] = xs.iter().map(|x| x.shape[axis]).sum();
        let n = shape.iter().product();
        let data = (0..n)
            .map(|i| {
                let mut c = coords(i, &shape);
                for x in xs {
                    if c[axis] < x.shape[axis] {
                        return x.at(&c);
                    }
                    c[axis] -= x.shape[axis];
                }
                unreachable!()
            })
            .collect();
        Array::new(&shape, data)
    }

    pub fn pad(&self, pads: &[(usize, usize)], value: f64) -> Array {
        let shape: Vec<usize> = self.shape.iter().zip(pads).map(|(&n, &(a, b))| n + a + b).collect();
        let n = shape.iter().product();
        let data = (0..n)
            .map(|i| {
                let c = coords(i, &shape);
                let inside = c.iter().zip(pads).zip(&self.shape).all(|((&x, &(a, _)), &s)| x >= a && x < a + s);
                if inside {
                    let src: Vec<usize> = c.iter().zip(pads).map(|(&x, &(a, _))| x - a).collect();
                    self.at(&src)
                } else {
                    value
                }
            })
            .collect();
        Array::new(&shape, data)
    }

    /// `out[c] = self[c with c[axis] = idx[c]]`; `idx` has the output's shape.
    pub fn gather(&self, axis: usize, idx: &Array) -> Array {
        let data = (0..idx.numel())
            .map(|i| {
                let mut c = coords(i, &idx.shape);
                c[axis] = idx.data[i] as usize;
                self.at(&c)
            })
            .collect();
        Array::new(&idx.shape, data)
    }

    pub fn index_select(&self, axis: usize, idx: &[usize]) -> Array {
        let mut shape = self.shape.clone();
        shape[axis] = idx.len();
        let n = shape.iter().product();
        let data = (0..n)
            .map(|i| {
                let mut c = coords(i, &shape);
                c[axis] = idx[c[axis]];
                self.at(&c)
            })
            .collect();
        Array::new(&shape, data)
    }

    /// `self` with `src[c]` added at `c with c[axis] = idx[c]`.
    pub fn scatter_add(&self, axis: usize, idx: &Array, src: &Array) -> Array {
        let mut out = self.clone();
        let s = strides(&self.shape);
        for i in 0..src.numel() {
            let mut c = coords(i, &src.shape);
            c[axis] = idx.data[i] as usize;
            let o: usize = c.iter().zip(&s).map(|(a, b)| a * b).sum();
            out.data[o] += src.data[i];
        }
        out
    }

    pub fn one_hot(&self, n: usize) -> Array {
        let mut shape = self.shape.clone();
        shape.push(n);
        let data = (0..self.numel() * n).map(|i| if self.data[i / n] as usize == i % n { 1.0 } else { 0.0 }).collect();
        Array::new(&shape, data)
    }

    pub fn abs(&self) -> Array {
        self.map(f64::abs)
    }
}
