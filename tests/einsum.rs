//! einsum against a reference written here: every assignment of every
//! subscript enumerated, the products summed in f64. Values, gradients
//! (central differences of the reference, exact for its multilinear and
//! quadratic cases up to rounding), forward mode and the argument checks.
//!
//! Error bound: each output (and each gradient entry) is a sum of at most T
//! products of at most n factors, T the product of every subscript's size;
//! whatever order the composition sums them in, f32 rounding leaves at most
//! (T + n)·u·Σ|terms| (u = 2⁻²⁴, to first order).

mod common;

use std::panic::AssertUnwindSafe;

use common::*;
use wgrad::{Tensor, grad, jvp};

const U: f64 = EPS / 2.0;

/// The reference: `spec` with letters, `...` and an optional `->`, numpy's
/// rules. Returns the output and Σ|terms| per output element.
fn reference(spec: &str, xs: &[Array]) -> (Array, Array, usize) {
    let (lhs, rhs) = match spec.split_once("->") {
        Some((l, r)) => (l, Some(r)),
        None => (spec, None),
    };
    // ellipsis dimensions become the digits '0' (rightmost), '1', ...
    let expand = |term: &str, n: usize| -> Vec<char> {
        let dots: String = (0..n).rev().map(|k| char::from(b'0' + k as u8)).collect();
        term.replace("...", &dots).chars().collect()
    };
    let terms: Vec<&str> = lhs.split(',').collect();
    let mut inputs = Vec::new();
    let mut ell = 0;
    for (t, x) in terms.iter().zip(xs) {
        let letters = t.replace("...", "").len();
        let n = x.shape.len() - letters;
        ell = ell.max(n);
        inputs.push(expand(t, n));
    }
    let output: Vec<char> = match rhs {
        Some(r) => expand(r, ell),
        None => {
            let all: Vec<char> = inputs.iter().flatten().copied().collect();
            let mut once: Vec<char> = all
                .iter()
                .copied()
                .filter(|c| c.is_alphabetic() && all.iter().filter(|d| *d == c).count() == 1)
                .collect();
            once.sort_unstable();
            let dots: Vec<char> = (0..ell).rev().map(|k| char::from(b'0' + k as u8)).collect();
            [dots, once].concat()
        }
    };
    let mut labels: Vec<(char, usize)> = Vec::new();
    for (t, x) in inputs.iter().zip(xs) {
        for (&c, &n) in t.iter().zip(&x.shape) {
            match labels.iter_mut().find(|(d, _)| *d == c) {
                Some((_, s)) => *s = (*s).max(n),
                None => labels.push((c, n)),
            }
        }
    }
    let size = |c: char| labels.iter().find(|(d, _)| *d == c).expect("a label").1;
    let out_shape: Vec<usize> = output.iter().map(|&c| size(c)).collect();
    let (mut out, mut abs) = (Array::full(&out_shape, 0.0), Array::full(&out_shape, 0.0));
    let total: usize = labels.iter().map(|l| l.1).product();
    let mut value = vec![0usize; labels.len()];
    for flat in 0..total {
        let mut rem = flat;
        for (v, (_, n)) in value.iter_mut().zip(&labels).rev() {
            *v = rem % n;
            rem /= n;
        }
        let of = |c: char| value[labels.iter().position(|(d, _)| *d == c).expect("a label")];
        let mut product = 1.0;
        for (t, x) in inputs.iter().zip(xs) {
            // a size-1 dimension broadcasts
            let coords: Vec<usize> = t.iter().zip(&x.shape).map(|(&c, &n)| if n == 1 { 0 } else { of(c) }).collect();
            product *= x.at(&coords);
        }
        let o: Vec<usize> = output.iter().map(|&c| of(c)).collect();
        let mut k = 0;
        for (d, &i) in o.iter().enumerate() {
            k = k * out_shape[d] + i;
        }
        out.data[k] += product;
        abs.data[k] += product.abs();
    }
    (out, abs, total)
}

fn gpu(spec: &str, xs: &[Tensor]) -> Tensor {
    Tensor::einsum(spec, &xs.iter().collect::<Vec<_>>())
}

const CASES: &[(&str, &[&[usize]])] = &[
    ("ij,jk->ik", &[&[3, 4], &[4, 5]]),
    ("ij,jk", &[&[3, 4], &[4, 5]]),
    ("ik,kj", &[&[3, 4], &[4, 5]]),
    ("bij,bjk->bik", &[&[2, 3, 4], &[2, 4, 5]]),
    ("bhqd,bhkd->bhqk", &[&[2, 3, 4, 5], &[2, 3, 6, 5]]),
    ("ii->i", &[&[4, 4]]),
    ("ii", &[&[4, 4]]),
    ("iij->j", &[&[3, 3, 2]]),
    ("ij->ji", &[&[3, 4]]),
    ("ij->", &[&[3, 4]]),
    ("ij->j", &[&[3, 4]]),
    ("i,i->", &[&[5], &[5]]),
    ("i,i->i", &[&[5], &[5]]),
    ("i,j->ij", &[&[3], &[4]]),
    ("ij,ij,ij->i", &[&[3, 4], &[3, 4], &[3, 4]]),
    ("...ij,...jk->...ik", &[&[2, 1, 3, 4], &[5, 4, 2]]),
    ("...ii->...i", &[&[2, 3, 3]]),
    ("...ij", &[&[2, 3, 4]]),
    ("ijk,jl,lk->i", &[&[2, 3, 4], &[3, 5], &[5, 4]]),
    ("bn,anm,bm->ba", &[&[2, 3], &[4, 3, 5], &[2, 5]]),
    ("ba,ab->", &[&[3, 4], &[4, 3]]),
    ("iJ,Jk->ik", &[&[3, 2], &[2, 4]]),
    ("ij,jk->ik", &[&[2, 0], &[0, 3]]),
];

#[test]
fn einsum_matches_the_reference() {
    let mut rng = Rng::new(41);
    for &(spec, shapes) in CASES {
        let xs: Vec<Array> = shapes.iter().map(|s| rng.array(s, -1.0, 1.0)).collect();
        let ts: Vec<Tensor> = xs.iter().map(upload).collect();
        let (want, abs, total) = reference(spec, &xs);
        let got = gpu(spec, &ts);
        assert_eq!(got.shape(), &want.shape[..], "{spec}: shape");
        let bound = abs.map(|a| (total + xs.len()) as f64 * U * a);
        assert_within(&format!("einsum {spec}"), &download(&got), &want, &bound);
    }
}

#[test]
fn einsum_gradients_and_forward_mode_match_the_reference() {
    let mut rng = Rng::new(42);
    for &(spec, shapes) in CASES {
        let xs: Vec<Array> = shapes.iter().map(|s| rng.array(s, -1.0, 1.0)).collect();
        let ts: Vec<Tensor> = xs.iter().map(upload).collect();
        let (out, _, total) = reference(spec, &xs);
        let w = rng.array(&out.shape, -1.0, 1.0);
        let wt = upload(&w);
        let loss = |xs: &[Array]| -> f64 { reference(spec, xs).0.data.iter().zip(&w.data).map(|(a, b)| a * b).sum() };
        // Σ|w·terms| through each input element, for the bound
        let abs_loss = |xs: &[Array]| -> f64 {
            let abs: Vec<Array> = xs.iter().map(Array::abs).collect();
            reference(spec, &abs).0.data.iter().zip(&w.data).map(|(a, b)| a * b.abs()).sum()
        };
        let (g, _, ()) = grad(|p: &Vec<Tensor>, w: &Tensor| (gpu(spec, p) * w).sum_all())(&ts, &wt);
        let n = (total + xs.len() + 1) as f64;
        for (i, x) in xs.iter().enumerate() {
            let (mut want, mut bound) = (Array::full(&x.shape, 0.0), Array::full(&x.shape, 0.0));
            for e in 0..x.numel() {
                let h = 1e-3;
                let at = |s: f64, f: &dyn Fn(&[Array]) -> f64| {
                    let mut p = xs.clone();
                    p[i].data[e] += s * h;
                    f(&p)
                };
                // (central differences are exact for polynomials of degree ≤ 2)
                want.data[e] = (at(1.0, &loss) - at(-1.0, &loss)) / (2.0 * h);
                let scale = (at(1.0, &abs_loss) - at(-1.0, &abs_loss)).abs() / (2.0 * h);
                bound.data[e] = n * U * scale + 1e-9;
            }
            assert_within(&format!("einsum {spec} ∂x{i}"), &download(&g[i]), &want, &bound);
        }
        // forward mode: J·t is the directional derivative, ⟨w, J·t⟩ = ⟨∇, t⟩
        let t: Vec<Array> = shapes.iter().map(|s| rng.array(s, -1.0, 1.0)).collect();
        let tt: Vec<Tensor> = t.iter().map(upload).collect();
        let (_, dy) = jvp(|p: &Vec<Tensor>| gpu(spec, p), &ts, &tt);
        let h = 1e-3;
        let step = |s: f64| -> Vec<Array> { xs.iter().zip(&t).map(|(x, t)| x.zip(t, |x, t| x + s * h * t)).collect() };
        let (plus, minus) = (reference(spec, &step(1.0)).0, reference(spec, &step(-1.0)).0);
        let want = plus.zip(&minus, |p, m| (p - m) / (2.0 * h));
        let abs_t: Vec<Array> = t.iter().map(Array::abs).collect();
        let abs_x: Vec<Array> = xs.iter().map(Array::abs).collect();
        let scale = {
            let step = |s: f64| -> Vec<Array> {
                abs_x.iter().zip(&abs_t).map(|(x, t)| x.zip(t, |x, t| x + s * h * t)).collect()
            };
            let (p, m) = (reference(spec, &step(1.0)).0, reference(spec, &step(-1.0)).0);
            p.zip(&m, |p, m| (p - m) / (2.0 * h))
        };
        assert_within(&format!("einsum {spec} J·t"), &download(&dy), &want, &scale.map(|s| n * U * s + 1e-9));
    }
}

#[test]
fn one_matrix_product_is_one_dispatch() {
    let d = own_device();
    let a = Tensor::randn(&d, &[2, 3, 8, 16]);
    let b = Tensor::randn(&d, &[2, 3, 12, 16]);
    for spec in ["bhqd,bhkd->bhqk", "bhqd,bhkd->bhkq", "ij,jk->ik"] {
        let (x, y) =
            if spec == "ij,jk->ik" { (a.reshape(&[48, 16]), b.reshape(&[72, 16]).t()) } else { (a.clone(), b.clone()) };
        d.sync().unwrap();
        let before = d.counters();
        let out = Tensor::einsum(spec, &[&x, &y]);
        d.sync().unwrap();
        assert_eq!((d.counters() - before).dispatches, 1, "{spec}");
        drop(out);
    }
}

#[test]
fn einsum_validates_its_equation() {
    let d = dev();
    let (a, b) = (Tensor::zeros(d, &[2, 3]), Tensor::zeros(d, &[4, 5]));
    let cases: [(&str, Vec<&Tensor>, &str); 8] = [
        ("ij,jk->ik", vec![&a], "`ij,jk->ik` has 2 input terms for 1 operands"),
        ("ijk", vec![&a], "operand 0 has 2 dimensions, but its subscripts `ijk` name 3"),
        ("ij,jk", vec![&a, &b], "`ij,jk` gives subscript `j` sizes 3 and 4"),
        ("ij->k", vec![&a], "the output `k` names `k`, which no operand has"),
        ("ij->ii", vec![&a], "the output `ii` names `i` twice"),
        ("i1", vec![&a], "operand 0's subscripts `i1` has `1`"),
        ("...j->j", vec![&a], "the output `j` has no `...` for the operands' 1 broadcast dimensions"),
        ("i......", vec![&a], "has two ellipses"),
    ];
    for (spec, ops, want) in cases {
        let (msg, at) = panic_of(AssertUnwindSafe(|| {
            Tensor::einsum(spec, &ops);
        }));
        assert!(msg.starts_with("wgrad: einsum: ") && msg.contains(want), "{spec}: {msg}");
        assert!(at.contains("einsum.rs"), "{spec}: {at}");
    }
}
