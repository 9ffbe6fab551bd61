//! Sorting (argsort, sort, topk) against Rust's stable sort in f64: the
//! order (stable both ways, NaN as the largest), integer keys compared as
//! their type, long rows and many rows, and the values' gradients and
//! tangents routed to the selected elements.

mod common;

use std::cmp::Ordering;
use std::panic::AssertUnwindSafe;

use common::*;
use wgrad::{DType, Tensor, grad, jvp};

// ---- sorting ---------------------------------------------------------------------

/// numpy's and PyTorch's order: NaN after every number, −0 equal to +0.
fn cmp_f(a: f64, b: f64) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        _ => a.partial_cmp(&b).expect("numbers"),
    }
}

/// The stable argsort of a row (Rust's `sort_by` is stable).
fn argsort_row(row: &[f64], descending: bool) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..row.len()).collect();
    idx.sort_by(|&a, &b| if descending { cmp_f(row[b], row[a]) } else { cmp_f(row[a], row[b]) });
    idx.into_iter().map(|i| i as f64).collect()
}

fn argsort_ref(x: &Array, axis: usize, descending: bool) -> Array {
    along(x, axis, |r| argsort_row(r, descending))
}

/// Values with many ties (a few integers), ±0 and NaN.
fn tied(rng: &mut Rng, shape: &[usize]) -> Array {
    let x = rng.array(shape, 0.0, 1.0);
    x.map(|u| {
        let k = (u * 14.0) as i64;
        match k {
            0 => f64::NAN,
            1 => -0.0,
            2 => 0.0,
            _ => (k - 8) as f64,
        }
    })
}

#[track_caller]
fn check_argsort(x: &Array, xt: &Tensor, axis: isize, descending: bool) {
    let a = if axis < 0 { (axis + x.shape.len() as isize) as usize } else { axis as usize };
    let got = xt.argsort(axis, descending);
    assert_eq!(got.dtype(), DType::U32);
    assert_eq!(got.shape(), &x.shape[..]);
    let got: Vec<f64> = got.to_vec::<u32>().unwrap().into_iter().map(f64::from).collect();
    let want = argsort_ref(x, a, descending);
    if let Some(e) = (0..got.len()).find(|&e| got[e] != want.data[e]) {
        panic!(
            "argsort of {:?} along {axis} (descending: {descending}): element {e} is {}, want {}",
            x.shape, got[e], want.data[e]
        );
    }
}

#[test]
fn argsort_is_stable_with_nan_last_ascending_and_first_descending() {
    let nan = f64::NAN;
    let x = Array::new(&[9], vec![2.0, nan, 1.0, -0.0, 2.0, 0.0, nan, 1.0, -5.0]);
    let xt = upload(&x);
    let asc: Vec<u32> = xt.argsort(0, false).to_vec().unwrap();
    assert_eq!(asc, vec![8, 3, 5, 2, 7, 0, 4, 1, 6]);
    let desc: Vec<u32> = xt.argsort(0, true).to_vec().unwrap();
    assert_eq!(desc, vec![1, 6, 0, 4, 2, 7, 3, 5, 8]);
    let mut rng = Rng::new(8);
    let x = tied(&mut rng, &[3, 4, 5]);
    let xt = upload(&x);
    for axis in [0, 1, 2, -1] {
        for descending in [false, true] {
            check_argsort(&x, &xt, axis, descending);
        }
    }
    // views: transposed, and narrowed (an offset)
    let b = tied(&mut rng, &[6, 9]);
    let bt = upload(&b);
    for axis in [0, 1] {
        for descending in [false, true] {
            check_argsort(&b.t(), &bt.t(), axis, descending);
            check_argsort(&b.narrow(1, 3, 5), &bt.narrow(1, 3, 5), axis, descending);
        }
    }
}

#[test]
fn argsort_of_long_rows_many_rows_and_empty_axes() {
    let mut rng = Rng::new(9);
    // within one block of 1024, just past it, several global passes
    // (n = 5000: P = 8192), along a strided axis, many short rows
    let cases: [(&[usize], isize); 9] = [
        (&[1, 1], 1),
        (&[2, 2], 1),
        (&[4, 1000], 1),
        (&[2, 1024], 1),
        (&[3, 1025], 1),
        (&[2, 5000], -1),
        (&[5000, 3], 0),
        (&[1, 20000], 1),
        (&[70000, 3], 1),
    ];
    for (shape, axis) in cases {
        for descending in [false, true] {
            // ties and NaN; and distinct values (no help from the indices)
            let x = tied(&mut rng, shape);
            check_argsort(&x, &upload(&x), axis, descending);
            let y = rng.array(shape, -1e3, 1e3);
            check_argsort(&y, &upload(&y), axis, descending);
        }
    }
    for (shape, axis) in [(&[0usize, 5][..], 1), (&[4, 0], 1), (&[4, 0], 0)] {
        let i = Tensor::zeros(dev(), shape).argsort(axis, false);
        assert_eq!(i.shape(), shape);
        assert!(i.to_vec::<u32>().unwrap().is_empty());
    }
}

#[test]
fn argsort_of_integers_compares_them_as_their_type() {
    let v: Vec<i32> = vec![3, -1, i32::MIN, 7, -1, i32::MAX, 0, 3];
    let x = Tensor::from_slice(dev(), &v, &[8]);
    let want = |desc: bool| -> Vec<u32> {
        let mut idx: Vec<u32> = (0..8).collect();
        idx.sort_by(|&a, &b| if desc { v[b as usize].cmp(&v[a as usize]) } else { v[a as usize].cmp(&v[b as usize]) });
        idx
    };
    assert_eq!(x.argsort(0, false).to_vec::<u32>().unwrap(), want(false));
    assert_eq!(x.argsort(0, true).to_vec::<u32>().unwrap(), want(true));
    let (vals, _) = x.sort(0, false);
    assert_eq!(vals.dtype(), DType::I32);
    let mut sorted = v.clone();
    sorted.sort();
    assert_eq!(vals.to_vec::<i32>().unwrap(), sorted);
    let u: Vec<u32> = vec![5, 0x8000_0000, 1, u32::MAX, 5, 0];
    let x = Tensor::from_slice(dev(), &u, &[2, 3]);
    let (vals, idx) = x.sort(1, true);
    assert_eq!(vals.to_vec::<u32>().unwrap(), vec![0x8000_0000, 5, 1, u32::MAX, 5, 0]);
    assert_eq!(idx.to_vec::<u32>().unwrap(), vec![1, 0, 2, 0, 1, 2]);
}

#[test]
fn sort_and_topk_give_values_and_indices() {
    let mut rng = Rng::new(10);
    let x = tied(&mut rng, &[4, 7]);
    let xt = upload(&x);
    for descending in [false, true] {
        let (vals, idx) = xt.sort(1, descending);
        let want_idx = argsort_ref(&x, 1, descending);
        assert_eq!(download(&idx.cast(DType::F32)).data, want_idx.data);
        assert_within("sort values", &download(&vals), &x.gather(1, &want_idx), &Array::full(&[4, 7], 0.0));
    }
    for (k, largest) in [(3, true), (3, false), (0, true), (7, false)] {
        let (vals, idx) = xt.topk(k, -1, largest);
        assert_eq!(vals.shape(), &[4, k]);
        let want_idx = argsort_ref(&x, 1, largest).narrow(1, 0, k);
        assert_eq!(download(&idx.cast(DType::F32)).data, want_idx.data, "topk {k} largest {largest}");
        assert_within("topk values", &download(&vals), &x.gather(1, &want_idx), &Array::full(&[4, k], 0.0));
    }
    // along the first axis of a transposed view
    let (vals, idx) = xt.t().topk(2, 0, true);
    let want_idx = argsort_ref(&x.t(), 0, true).narrow(0, 0, 2);
    assert_eq!(download(&idx.cast(DType::F32)).data, want_idx.data);
    assert_within("topk of a view", &download(&vals), &x.t().gather(0, &want_idx), &Array::full(&[2, 4], 0.0));
}

#[test]
fn sort_and_topk_gradients_go_to_the_selected_elements() {
    // ties: each tied element gets the gradient of its own place
    let x = Array::new(&[2, 6], vec![1.0, 3.0, 1.0, 2.0, 3.0, 1.0, 0.5, 0.5, -1.0, 0.5, 2.0, -1.0]);
    let w = Array::new(&[2, 6], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0]);
    let (xt, wt) = (upload(&x), upload(&w));
    for descending in [false, true] {
        let f = |x: &Tensor, w: &Tensor| (x.sort(1, descending).0 * w).sum_all();
        let (g, _, ()) = grad(f)(&xt, &wt);
        let perm = argsort_ref(&x, 1, descending);
        // ∂x[perm[j]] = w[j]
        let want = Array::full(&[2, 6], 0.0).scatter_add(1, &perm, &w);
        assert_eq!(download(&g).data, want.data, "sort descending {descending}");
        // and forward mode: the tangent is t gathered the same way
        let t = w.map(|v| (v / 7.0) as f32 as f64);
        let (_, dy) = jvp(|x: &Tensor| x.sort(1, descending).0, &xt, &upload(&t));
        assert_eq!(download(&dy).data, t.gather(1, &perm).data);
    }
    for (k, largest) in [(2, true), (4, false)] {
        let wk = w.narrow(1, 0, k);
        let f = |x: &Tensor, w: &Tensor| (x.topk(k, 1, largest).0 * w).sum_all();
        let (g, _, ()) = grad(f)(&xt, &upload(&wk));
        let perm = argsort_ref(&x, 1, largest).narrow(1, 0, k);
        let want = Array::full(&[2, 6], 0.0).scatter_add(1, &perm, &wk);
        assert_eq!(download(&g).data, want.data, "topk {k} largest {largest}");
    }
}

#[test]
fn sorting_validates_its_arguments() {
    let x = Tensor::zeros(dev(), &[2, 3]);
    let (msg, at) = panic_of(AssertUnwindSafe(|| {
        x.topk(4, 1, true);
    }));
    assert!(msg.contains("wgrad: topk: k = 4 exceeds the size 3 of axis 1 of a tensor of shape [2, 3]"), "{msg}");
    assert!(at.contains("sort.rs"), "{at}");
    let (msg, _) = panic_of(AssertUnwindSafe(|| {
        x.sort(2, false);
    }));
    assert!(msg.contains("wgrad: sort: axis 2 is out of range for a tensor of shape [2, 3]"), "{msg}");
    let (msg, _) = panic_of(AssertUnwindSafe(|| {
        x.argsort(-3, true);
    }));
    assert!(msg.contains("wgrad: argsort: axis -3"), "{msg}");
}
