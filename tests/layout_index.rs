//! Layout and indexing ops against the f64 reference: views, copies,
//! flips, rolls, slices and diagonals; gathers, scatters and their
//! reductions, index_put, and out-of-range indices reported as errors.

mod common;

use common::*;
use wgrad::{ScatterReduce, Tensor};

#[test]
fn layout_ops() {
    let mut rng = Rng::new(6);
    let a = rng.array(&[2, 3, 4], -5.0, 5.0);
    let t = upload(&a);
    let exact = |what: &str, got: &Tensor, want: &Array| assert_close(what, &download(got), want, 0.0, 0.0);
    exact("reshape", &t.reshape(&[6, 4]), &a.reshape(&[6, 4]));
    exact("reshape infer", &t.reshape(&[4, usize::MAX]), &a.reshape(&[4, 6]));
    exact("permute", &t.permute(&[2, 0, 1]), &a.permute(&[2, 0, 1]));
    exact("transpose", &t.transpose(0, 2), &a.permute(&[2, 1, 0]));
    exact("reshape of permuted (copies)", &t.permute(&[2, 0, 1]).reshape(&[24]), &a.permute(&[2, 0, 1]).reshape(&[24]));
    exact("flatten", &t.flatten(1, 2), &a.reshape(&[2, 12]));
    exact("expand", &upload(&a.narrow(1, 0, 1)).expand(&[2, 3, 4]), &a.narrow(1, 0, 1).expand(&[2, 3, 4]));
    exact("expand new dims", &t.expand(&[5, 2, 3, 4]), &a.expand(&[5, 2, 3, 4]));
    exact("narrow", &t.narrow(2, 1, 2), &a.narrow(2, 1, 2));
    exact("narrow of permuted", &t.permute(&[2, 0, 1]).narrow(0, 1, 3), &a.permute(&[2, 0, 1]).narrow(0, 1, 3));
    exact("squeeze/unsqueeze", &t.unsqueeze(1).squeeze(1), &a);
    exact("unsqueeze -1", &t.unsqueeze(-1), &a.reshape(&[2, 3, 4, 1]));
    exact("contiguous", &t.transpose(0, 1).contiguous(), &a.permute(&[1, 0, 2]));
    let b = rng.array(&[2, 5, 4], -5.0, 5.0);
    exact("cat", &Tensor::cat(&[&t, &upload(&b)], 1), &Array::cat(&[&a, &b], 1));
    exact("cat of views", &Tensor::cat(&[&t.t(), &t.t()], 0), &Array::cat(&[&a.t(), &a.t()], 0));
    let s = Tensor::stack(&[&t, &t], 1);
    exact("stack", &s, &Array::cat(&[&a.reshape(&[2, 1, 3, 4]), &a.reshape(&[2, 1, 3, 4])], 1));
    exact("pad", &t.pad(&[(1, 0), (0, 2), (3, 1)], -1.5), &a.pad(&[(1, 0), (0, 2), (3, 1)], -1.5));
    exact("pad of view", &t.t().pad(&[(0, 0), (1, 1), (0, 1)], 0.0), &a.t().pad(&[(0, 0), (1, 1), (0, 1)], 0.0));
    assert!(t.t().reshape(&[2, 2, 2, 3]).numel() == 24);
    // views share data: no dispatch until something is computed
    let d = own_device();
    let x = Tensor::zeros(&d, &[4, 6]);
    d.sync().unwrap();
    let before = d.counters();
    let _v = x.t().narrow(0, 1, 3).unsqueeze(0).expand(&[2, 3, 4]).reshape(&[2, 3, 2, 2]);
    d.sync().unwrap();
    assert_eq!((d.counters() - before).dispatches, 0, "views must not copy");
}

#[test]
fn index_ops() {
    let mut rng = Rng::new(7);
    let a = rng.array(&[5, 4, 3], -5.0, 5.0);
    let t = upload(&a);
    let idx = [4usize, 0, 0, 2, 4, 1];
    for axis in 0..3 {
        let idx: Vec<usize> = idx.iter().map(|&i| i % a.shape[axis]).collect();
        let it = Tensor::from_slice(dev(), &idx.iter().map(|&i| i as i32).collect::<Vec<_>>(), &[6]);
        let got = download(&t.index_select(axis as isize, &it));
        assert_close(&format!("index_select axis {axis}"), &got, &a.index_select(axis, &idx), 0.0, 0.0);
        let got = download(&t.t().index_select(axis as isize, &it));
        assert_close(&format!("index_select of view axis {axis}"), &got, &a.t().index_select(axis, &idx), 0.0, 0.0);
    }
    // gather along each axis with an index tensor smaller than the source
    for axis in 0..3 {
        let mut ishape = vec![3, 2, 2];
        ishape[axis] = 4;
        let n: usize = ishape.iter().product();
        let iv: Vec<f64> = (0..n).map(|_| rng.below(a.shape[axis]) as f64).collect();
        let ia = Array::new(&ishape, iv.clone());
        let it = Tensor::from_slice(dev(), &iv.iter().map(|&i| i as u32).collect::<Vec<_>>(), &ishape);
        let got = download(&t.gather(axis as isize, &it));
        assert_close(&format!("gather axis {axis}"), &got, &a.gather(axis, &ia), 0.0, 0.0);
    }
    // scatter_add with repeated indices (sums in a fixed order: exact here
    // because the values are small integers)
    let base = rng.array(&[4, 3], -3.0, 3.0).map(f64::round);
    let src = rng.array(&[6, 3], -3.0, 3.0).map(f64::round);
    let iv: Vec<f64> = (0..18).map(|_| rng.below(4) as f64).collect();
    let ia = Array::new(&[6, 3], iv.clone());
    let it = Tensor::from_slice(dev(), &iv.iter().map(|&i| i as u32).collect::<Vec<_>>(), &[6, 3]);
    let got = download(&upload(&base).scatter_add(0, &it, &upload(&src)));
    assert_close("scatter_add", &got, &base.scatter_add(0, &ia, &src), 0.0, 0.0);
    // one_hot
    let got = download(&it.one_hot(4));
    assert_close("one_hot", &got, &ia.one_hot(4), 0.0, 0.0);
}

/// flip, roll, repeat, tile, split, chunk, strided slices, diagonals,
/// tril/triu: exact (they move values), on contiguous and strided inputs,
/// with the dispatch counts their docs give.
#[test]
fn layout_and_indexing_ops() {
    let mut rng = Rng::new(8);
    let a = rng.array(&[3, 4, 5], -5.0, 5.0);
    let exact = |what: &str, got: &Tensor, want: &Array| assert_close(what, &download(got), want, 0.0, 0.0);
    for (view, t, a) in views(&a) {
        for axes in [&[0usize][..], &[2], &[0, 2], &[0, 1, 2]] {
            let ia: Vec<isize> = axes.iter().map(|&x| x as isize - 3).collect(); // negative axes
            exact(&format!("flip {axes:?} of {view}"), &t.flip(&ia), &a.flip(axes));
        }
        exact(&format!("roll of {view}"), &t.roll(&[-7, 2], &[2, 0]), &a.roll(&[-7, 2], &[2, 0]));
        exact(&format!("roll by a multiple of {view}"), &t.roll(&[8], &[1]), &a);
        let flat = a.reshape(&[60]).roll(&[13], &[0]).reshape(&[3, 4, 5]);
        exact(&format!("flattened roll of {view}"), &t.roll(&[13], &[]), &flat);
        exact(&format!("repeat of {view}"), &t.repeat(&[2, 1, 3, 2]), &a.repeat(&[2, 1, 3, 2]));
        exact(&format!("tile of {view}"), &t.tile(&[2, 1]), &a.repeat(&[1, 2, 1]));
        for (axis, start, end, step) in [(2, 0, 5, 2), (2, 1, 5, 3), (0, 1, 3, 2), (1, 0, 4, 5), (1, 3, 1, 2)] {
            let got = t.slice(axis as isize, start, end, step);
            let want = a.slice(axis, start as usize, (end as usize).max(start as usize), step);
            exact(&format!("slice {axis} {start}:{end}:{step} of {view}"), &got, &want);
        }
        exact(&format!("slice with negative ends of {view}"), &t.slice(-1, -4, -1, 2), &a.slice(2, 1, 4, 2));
        exact(&format!("slice past the end of {view}"), &t.slice(2, 1, 99, 2), &a.slice(2, 1, 5, 2));
        exact(&format!("slice of slice of {view}"), &t.slice(2, 0, 5, 2).slice(2, 1, 3, 1), &a.slice(2, 2, 5, 2));
        for (off, d1, d2) in [(0, 1, 2), (1, 1, 2), (-2, 1, 2), (2, 2, 0), (-1, 0, 2), (9, 1, 2)] {
            let got = t.diagonal(off, d1 as isize, d2 as isize);
            exact(&format!("diagonal {off} {d1} {d2} of {view}"), &got, &a.diagonal(off, d1, d2));
        }
        for k in -3..=4 {
            exact(&format!("tril {k} of {view}"), &t.tril(k), &a.triangle(k, false));
            exact(&format!("triu {k} of {view}"), &t.triu(k), &a.triangle(k, true));
        }
    }
    let t = upload(&a);
    let pieces = t.split(2, 1);
    assert_eq!(pieces.iter().map(|p| p.shape()[1]).collect::<Vec<_>>(), vec![2, 2]);
    exact("split", &pieces[1], &a.narrow(1, 2, 2));
    let pieces = t.chunk(2, -1);
    assert_eq!(pieces.iter().map(|p| p.shape()[2]).collect::<Vec<_>>(), vec![3, 2]);
    assert_eq!(t.narrow(1, 0, 3).chunk(4, 1).len(), 3); // torch: 3 in 4 chunks → 3 of size 1
    assert_eq!(Tensor::zeros(dev(), &[6]).chunk(4, 0).iter().map(|p| p.numel()).collect::<Vec<_>>(), vec![2, 2, 2]);
    let pieces = t.split_with_sizes(&[1, 0, 3], 1);
    exact("split_with_sizes", &pieces[2], &a.narrow(1, 1, 3));
    assert_eq!(pieces[1].shape(), &[3, 0, 5]);
    // diag both ways
    let v = rng.array(&[4], -2.0, 2.0);
    for k in [-2, 0, 1] {
        exact(&format!("diag of a vector, offset {k}"), &upload(&v).diag(k), &v.diag_matrix(k));
        let m = v.diag_matrix(k);
        exact(&format!("diag of a matrix, offset {k}"), &upload(&m).diag(k), &v);
    }
    // integers move as they are
    let ints = Tensor::from_slice(dev(), &[1i32, -2, 3, -4, 5, -6], &[2, 3]);
    assert_eq!(ints.flip(&[0, 1]).to_vec::<i32>().unwrap(), vec![-6, 5, -4, 3, -2, 1]);
    assert_eq!(ints.tril(0).to_vec::<i32>().unwrap(), vec![1, 0, 0, -4, 5, 0]);
    // the views cost no dispatch; the copies what their docs say
    let d = own_device();
    let x = Tensor::zeros(&d, &[4, 6, 5]);
    d.sync().unwrap();
    let count = |f: &dyn Fn() -> Tensor| {
        let before = d.counters();
        let y = f();
        d.sync().unwrap();
        drop(y);
        (d.counters() - before).dispatches
    };
    assert_eq!(count(&|| x.slice(1, 1, 6, 2).diagonal(1, 0, 2).chunk(2, 0)[1].clone()), 0, "views");
    assert_eq!(count(&|| x.split(4, 1)[1].clone()), 0, "split");
    assert_eq!(count(&|| x.flip(&[0, 2])), 2, "flip: a gather per axis");
    assert_eq!(count(&|| x.roll(&[1, -1, 5], &[0, 1, 2])), 2, "roll: a gather per moved axis");
    assert_eq!(count(&|| x.repeat(&[1, 2, 1])), 1, "repeat: one copy");
    assert_eq!(count(&|| x.tril(-1)), 1, "tril: one where_");
    assert_eq!(count(&|| x.narrow(0, 0, 1).reshape(&[6, 5]).diag(0)), 0, "diag of a matrix: a view");
    assert_eq!(count(&|| x.narrow(0, 0, 1).reshape(&[30]).diag(2)), 2, "diag of a vector: fill and copy");
}

/// index_add, scatter_reduce (each reduction, with and without self) and
/// index_put against the reference; small integers keep every fold exact
/// (mean: one division, correctly rounded).
#[test]
fn scatter_reductions_and_index_put() {
    let mut rng = Rng::new(9);
    let ints = |rng: &mut Rng, shape: &[usize]| rng.array(shape, -3.0, 3.0).map(f64::round);
    let idx_t =
        |v: &[f64], shape: &[usize]| Tensor::from_slice(dev(), &v.iter().map(|&i| i as u32).collect::<Vec<_>>(), shape);
    let base = ints(&mut rng, &[5, 4]);
    let src = ints(&mut rng, &[3, 4]);
    // along axis 0 (several per destination) and axis 1 of a transposed view
    for (axis, base, src) in [(0usize, base.clone(), src.clone()), (1, base.t(), src.t())] {
        let n = base.shape[axis];
        let iv: Vec<f64> = (0..src.numel()).map(|_| rng.below(n) as f64).collect();
        let ia = Array::new(&src.shape, iv.clone());
        let it = idx_t(&iv, &src.shape);
        let (bt, st) = (upload(&base), upload(&src));
        for (reduce, name) in [
            (ScatterReduce::Sum, "sum"),
            (ScatterReduce::Prod, "prod"),
            (ScatterReduce::Mean, "mean"),
            (ScatterReduce::Amax, "amax"),
            (ScatterReduce::Amin, "amin"),
        ] {
            for include in [true, false] {
                let got = download(&bt.scatter_reduce(axis as isize, &it, &st, reduce, include));
                let want = base.scatter_reduce(axis, &ia, &src, name, include);
                assert_close(
                    &format!("scatter_reduce {name} include_self={include} axis {axis}"),
                    &got,
                    &want,
                    EPS / 2.0,
                    0.0,
                );
            }
        }
        let iv: Vec<usize> = (0..src.shape[axis]).map(|_| rng.below(n)).collect();
        let it = Tensor::from_slice(dev(), &iv.iter().map(|&i| i as i32).collect::<Vec<_>>(), &[iv.len()]);
        let got = download(&bt.index_add(axis as isize, &it, &st));
        assert_close(&format!("index_add axis {axis}"), &got, &base.index_add(axis, &iv, &src), 0.0, 0.0);
    }
    // NaN wins amax and amin, as PyTorch's max (from self and from a source)
    let x = Tensor::from_slice(dev(), &[f32::NAN, 1.0, 2.0], &[3]);
    let s = Tensor::from_slice(dev(), &[5.0f32, f32::NAN, 3.0, 0.0], &[4]);
    let i = Tensor::from_slice(dev(), &[0u32, 1, 2, 0], &[4]);
    for reduce in [ScatterReduce::Amax, ScatterReduce::Amin] {
        let got = x.scatter_reduce(0, &i, &s, reduce, true).to_vec::<f32>().unwrap();
        assert!(
            got[0].is_nan() && got[1].is_nan() && got[2] == if reduce == ScatterReduce::Amax { 3.0 } else { 2.0 },
            "{reduce:?}: {got:?}"
        );
    }
    // index_put: two index vectors into the first two of three dims, with a
    // repeated position (the last wins; accumulate sums); values broadcast
    let x = ints(&mut rng, &[3, 4, 2]);
    let (i0, i1) = ([2usize, 0, 2, 1], [3usize, 1, 3, 0]);
    let t0 = Tensor::from_slice(dev(), &i0.map(|i| i as i32), &[4]);
    let t1 = Tensor::from_slice(dev(), &i1.map(|i| i as u32), &[4]);
    let vals = ints(&mut rng, &[4, 2]);
    for accumulate in [false, true] {
        let got = download(&upload(&x).index_put(&[&t0, &t1], &upload(&vals), accumulate));
        let want = x.index_put(&[&i0, &i1], &vals, accumulate);
        assert_close(&format!("index_put accumulate={accumulate}"), &got, &want, 0.0, 0.0);
    }
    // one index tensor of rank 2 into the first dim; values broadcast from [2]
    let ii = Tensor::from_slice(dev(), &[1u32, 2, 0, 1], &[2, 2]);
    let row = ints(&mut rng, &[2]);
    let got = download(&upload(&x).index_put(&[&ii], &upload(&row), false));
    let want = x.index_put(&[&[1, 2, 0, 1]], &row.expand(&[4, 4, 2]), false);
    assert_close("index_put by a 2-d index", &got, &want, 0.0, 0.0);
    // broadcast index tensors: a column against a row picks a 2×3 block
    let r = Tensor::from_slice(dev(), &[0u32, 2], &[2, 1]);
    let c = Tensor::from_slice(dev(), &[1u32, 2, 3], &[1, 3]);
    let got = download(&upload(&x).index_put(&[&r, &c], &Tensor::ones(dev(), &[]), true));
    let want = x.index_put(&[&[0, 0, 0, 2, 2, 2], &[1, 2, 3, 1, 2, 3]], &Array::full(&[6, 2], 1.0), true);
    assert_close("index_put with broadcast indices", &got, &want, 0.0, 0.0);
}

/// An index beyond its axis in the new scatter ops is reported at the next
/// read, naming the op and the line; the device goes on.
#[test]
fn scatter_ops_report_out_of_range_indices() {
    use wgrad::Error;
    let d = own_device();
    let x = Tensor::zeros(&d, &[3, 2]);
    let src = Tensor::ones(&d, &[2, 2]);
    let bad = Tensor::from_slice(&d, &[0u32, 3, 1, 1], &[2, 2]);
    let neg = Tensor::from_slice(&d, &[0i32, -1], &[2]);
    let far = Tensor::from_slice(&d, &[0u32, 2], &[2]);
    type Case<'a> = (Box<dyn Fn() -> Tensor + 'a>, u32, &'static str);
    let cases: Vec<Case> = vec![
        (Box::new(|| x.scatter_reduce(0, &bad, &src, ScatterReduce::Amax, false)), line!(), "scatter_reduce"),
        (Box::new(|| x.index_add(0, &neg, &src)), line!(), "index_add"),
        (Box::new(|| x.index_put(&[&neg], &src, false)), line!(), "index_put"),
        // row 0 is in range, column 2 is not (its linear index 2 would be)
        (Box::new(|| x.index_put(&[&far.zeros_like(), &far], &Tensor::ones(&d, &[2]), true)), line!(), "index_put"),
    ];
    for (f, line, op) in cases {
        let err = f().to_vec::<f32>().unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::IndexOutOfRange { .. }), "{msg}");
        assert!(msg.contains(op) && msg.contains(&format!("tests/layout_index.rs:{line}:")), "{msg}");
        assert_eq!(x.sum_all().item::<f32>().unwrap(), 0.0);
    }
}
