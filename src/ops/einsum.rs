//! einsum: Einstein summation, a composition of views, sums, products and
//! batched matrix products (so its gradients and forward mode are theirs).
//!
//! The operands are contracted left to right: each operand first takes the
//! diagonal of a repeated subscript and sums the subscripts no one else
//! needs; then each pair becomes one batched `matmul` (the shared subscripts
//! still needed are its batch, the shared ones no longer needed its inner
//! dimension), or one broadcast product when the pair shares nothing to
//! sum; at the end the remaining sums and one permutation give the output.
//! `ij,jk->ik` and attention's `bhqd,bhkd->bhqk` are one matmul dispatch,
//! their transposed operands read in place.

use crate::ops::same_device;
use crate::tensor::Tensor;

/// A subscript: a letter (its char) or an ellipsis dimension (`ELLIPSIS + k`,
/// k counted from the right, so the operands' ellipses align as numpy
/// broadcasting aligns shapes).
type Label = u32;
const ELLIPSIS: Label = 1 << 16;

/// The parsed equation: each operand's labels and the output's.
struct Equation {
    inputs: Vec<Vec<Label>>,
    output: Vec<Label>,
}

fn show(l: Label) -> String {
    if l >= ELLIPSIS { "...".into() } else { char::from_u32(l).map_or("?".into(), String::from) }
}

/// The letters of one term, and the position of its ellipsis.
fn letters(term: &str, what: &str) -> Result<(Vec<Label>, Option<usize>), String> {
    let (mut labels, mut ellipsis) = (Vec::new(), None);
    let mut rest = term;
    while let Some(c) = rest.chars().next() {
        if let Some(after) = rest.strip_prefix("...") {
            if ellipsis.is_some() {
                return Err(format!("{what} `{term}` has two ellipses"));
            }
            ellipsis = Some(labels.len());
            rest = after;
        } else if c.is_ascii_alphabetic() {
            labels.push(c as Label);
            rest = &rest[1..];
        } else {
            return Err(format!("{what} `{term}` has `{c}`; subscripts are letters a–z, A–Z and one `...`"));
        }
    }
    Ok((labels, ellipsis))
}

/// `labels` with the ellipsis at `at` expanded to `n` dimensions.
fn expand(mut labels: Vec<Label>, at: Option<usize>, n: usize) -> Vec<Label> {
    if let Some(at) = at {
        labels.splice(at..at, (0..n).rev().map(|k| ELLIPSIS + k as Label));
    }
    labels
}

fn parse(spec: &str, ranks: &[usize]) -> Result<Equation, String> {
    let spec: String = spec.chars().filter(|c| !c.is_whitespace()).collect();
    let (lhs, rhs) = match spec.split_once("->") {
        Some((l, r)) => (l, Some(r)),
        None => (spec.as_str(), None),
    };
    let terms: Vec<&str> = lhs.split(',').collect();
    if terms.len() != ranks.len() {
        return Err(format!("`{spec}` has {} input terms for {} operands", terms.len(), ranks.len()));
    }
    let mut inputs = Vec::new();
    let mut ellipsis_rank = 0;
    for (i, (term, &rank)) in terms.iter().zip(ranks).enumerate() {
        let (labels, at) = letters(term, &format!("operand {i}'s subscripts"))?;
        let extra = rank.checked_sub(labels.len()).filter(|&e| e == 0 || at.is_some());
        let Some(extra) = extra else {
            return Err(format!(
                "operand {i} has {rank} dimensions, but its subscripts `{term}` name {}{}",
                labels.len(),
                if at.is_some() { " and more" } else { "" }
            ));
        };
        ellipsis_rank = ellipsis_rank.max(extra);
        inputs.push(expand(labels, at, extra));
    }
    let output = match rhs {
        Some(r) => {
            let (labels, at) = letters(r, "the output")?;
            if at.is_none() && ellipsis_rank > 0 {
                return Err(format!(
                    "the output `{r}` has no `...` for the operands' {ellipsis_rank} broadcast dimensions"
                ));
            }
            for (k, &l) in labels.iter().enumerate() {
                if labels[..k].contains(&l) {
                    return Err(format!("the output `{r}` names `{}` twice", show(l)));
                }
                if !inputs.iter().any(|t| t.contains(&l)) {
                    return Err(format!("the output `{r}` names `{}`, which no operand has", show(l)));
                }
            }
            expand(labels, at, ellipsis_rank)
        }
        // numpy's implicit output: the ellipsis, then the letters seen once, sorted
        None => {
            let mut once: Vec<Label> = inputs
                .iter()
                .flatten()
                .copied()
                .filter(|&l| l < ELLIPSIS && inputs.iter().flatten().filter(|&&m| m == l).count() == 1)
                .collect();
            once.sort_unstable();
            expand(once, Some(0), ellipsis_rank)
        }
    };
    Ok(Equation { inputs, output })
}

/// An operand on its way through the contraction: a tensor and the label
/// of each of its dimensions.
struct Term {
    t: Tensor,
    labels: Vec<Label>,
}

impl Term {
    fn size(&self, l: Label) -> usize {
        self.labels.iter().position(|&m| m == l).map_or(1, |d| self.t.shape()[d])
    }

    /// The diagonal of every repeated label: x·I summed over the second copy.
    fn diagonals(mut self) -> Term {
        while let Some((d1, d2)) = (0..self.labels.len())
            .find_map(|d2| self.labels[..d2].iter().position(|&l| l == self.labels[d2]).map(|d1| (d1, d2)))
        {
            let n = self.t.shape()[d1];
            let mut shape = vec![1; self.t.rank()];
            (shape[d1], shape[d2]) = (n, n);
            let eye = Tensor::eye(self.t.device(), n).reshape(&shape);
            self.t = (&self.t * &eye).sum(&[d2 as isize], false);
            self.labels.remove(d2);
        }
        self
    }

    /// Sums the labels `keep` does not hold.
    fn sum_unneeded(mut self, keep: &[Label]) -> Term {
        let axes: Vec<isize> =
            (0..self.labels.len()).filter(|&d| !keep.contains(&self.labels[d])).map(|d| d as isize).collect();
        if !axes.is_empty() {
            self.t = self.t.sum(&axes, false);
            self.labels.retain(|l| keep.contains(l));
        }
        self
    }

    /// This term's dimensions in the order of `labels` (all of them its
    /// own), size-1 broadcast dimensions expanded to `sizes`.
    fn arrange(&self, labels: &[Label], sizes: &[usize]) -> Tensor {
        let perm: Vec<isize> =
            labels.iter().map(|l| self.labels.iter().position(|m| m == l).expect("own label") as isize).collect();
        let t = self.t.permute(&perm);
        if t.shape() == sizes { t } else { t.expand(sizes) }
    }
}

/// The product of `a` and `b` summed over their shared labels that `keep`
/// does not hold.
fn contract(a: Term, b: Term, keep: &[Label]) -> Term {
    let shared: Vec<Label> = a.labels.iter().copied().filter(|l| b.labels.contains(l)).collect();
    let (batch, inner): (Vec<Label>, Vec<Label>) = shared.iter().partition(|l| keep.contains(l));
    let a_only: Vec<Label> = a.labels.iter().copied().filter(|l| !shared.contains(l)).collect();
    let b_only: Vec<Label> = b.labels.iter().copied().filter(|l| !shared.contains(l)).collect();
    let size = |l: &Label| a.size(*l).max(b.size(*l));
    let sizes = |ls: &[Label]| ls.iter().map(size).collect::<Vec<_>>();
    let labels: Vec<Label> = [&batch[..], &a_only, &b_only].concat();
    let batch_of = |t: &Term| batch.iter().map(|l| t.size(*l)).collect::<Vec<usize>>();
    if inner.is_empty() {
        // nothing to sum: a broadcast product [batch.., a's, 1..] · [batch.., 1.., b's]
        let lhs = a
            .arrange(&[&batch[..], &a_only].concat(), &[batch_of(&a), sizes(&a_only)].concat())
            .reshape(&[batch_of(&a), sizes(&a_only), vec![1; b_only.len()]].concat());
        let rhs = b
            .arrange(&[&batch[..], &b_only].concat(), &[batch_of(&b), sizes(&b_only)].concat())
            .reshape(&[batch_of(&b), vec![1; a_only.len()], sizes(&b_only)].concat());
        return Term { t: lhs * rhs, labels };
    }
    // [batch.., M, K] · [batch.., K, N]; batch dimensions broadcast in matmul
    let (m, k, n) = (sizes(&a_only).iter().product(), sizes(&inner).iter().product(), sizes(&b_only).iter().product());
    let lhs = a
        .arrange(&[&batch[..], &a_only, &inner].concat(), &[batch_of(&a), sizes(&a_only), sizes(&inner)].concat())
        .reshape(&[batch_of(&a), vec![m, k]].concat());
    let rhs = b
        .arrange(&[&batch[..], &inner, &b_only].concat(), &[batch_of(&b), sizes(&inner), sizes(&b_only)].concat())
        .reshape(&[batch_of(&b), vec![k, n]].concat());
    let t = lhs.matmul(&rhs).reshape(&sizes(&labels));
    Term { t, labels }
}

impl Tensor {
    /// Einstein summation over `operands`, as `numpy.einsum` and
    /// `torch.einsum`: `"ij,jk->ik"` is a matrix product, `"bhqd,bhkd->bhqk"`
    /// attention's scores, `"ii->i"` a diagonal, `"ii"` a trace, `"i,j->ij"`
    /// an outer product, `"...ij->...ji"` a batched transpose. Subscripts are
    /// letters; one `...` per term stands for broadcast dimensions (aligned
    /// from the right; size 1 broadcasts). Without `->` the output is the
    /// ellipsis, then the letters that appear once, in alphabetical order
    /// (uppercase first). A subscript repeated within a term takes the
    /// diagonal; one absent from the output is summed. With an explicit
    /// output, every operand's ellipsis dimensions must appear in it, as numpy
    /// requires. f32 only (the products are matmuls).
    ///
    /// A composition: operands are contracted left to right, each pair in
    /// one batched `matmul` (see the module doc), so the order of the
    /// operands is the order of the work — put the small ones first. Its
    /// gradient and forward mode are those of its parts.
    ///
    /// ```
    /// # use wgrad::{Device, Tensor};
    /// # let dev = Device::new()?;
    /// let a = Tensor::from_slice(&dev, &[1.0f32, 2.0, 3.0, 4.0], &[2, 2]);
    /// let b = Tensor::from_slice(&dev, &[5.0f32, 6.0], &[2]);
    /// assert_eq!(Tensor::einsum("ij,j->i", &[&a, &b]).to_vec::<f32>()?, vec![17.0, 39.0]);
    /// assert_eq!(Tensor::einsum("ii", &[&a]).item::<f32>()?, 5.0);
    /// assert_eq!(Tensor::einsum("ij->ji", &[&a]).to_vec::<f32>()?, vec![1.0, 3.0, 2.0, 4.0]);
    /// # Ok::<(), wgrad::Error>(())
    /// ```
    #[track_caller]
    pub fn einsum(spec: &str, operands: &[&Tensor]) -> Tensor {
        same_device("einsum", operands);
        let shapes: Vec<&[usize]> = operands.iter().map(|t| t.shape()).collect();
        let ranks: Vec<usize> = shapes.iter().map(|s| s.len()).collect();
        let eq = parse(spec, &ranks).unwrap_or_else(|e| panic!("wgrad: einsum: {e} (operand shapes {shapes:?})"));
        for t in operands {
            crate::ops::need_f32("einsum", t);
        }
        // every label's size agrees (ellipsis dimensions may broadcast from 1)
        let mut sizes: Vec<(Label, usize)> = Vec::new();
        for (labels, shape) in eq.inputs.iter().zip(&shapes) {
            for (&l, &n) in labels.iter().zip(*shape) {
                match sizes.iter_mut().find(|(m, _)| *m == l) {
                    None => sizes.push((l, n)),
                    Some((_, s)) if *s == n => {}
                    Some((_, s)) if l >= ELLIPSIS && (*s == 1 || n == 1) => *s = (*s).max(n),
                    Some((_, s)) => panic!(
                        "wgrad: einsum: `{spec}` gives subscript `{}` sizes {s} and {n} (operand shapes {shapes:?})",
                        show(l)
                    ),
                }
            }
        }
        let needed_after =
            |i: usize| -> Vec<Label> { eq.inputs[i + 1..].iter().flatten().chain(&eq.output).copied().collect() };
        let term = |i: usize| Term { t: operands[i].clone(), labels: eq.inputs[i].clone() }.diagonals();
        let mut acc = term(0);
        for i in 1..operands.len() {
            let next = term(i);
            let keep = needed_after(i);
            let wanted: Vec<Label> = keep.iter().chain(&next.labels).copied().collect();
            acc = acc.sum_unneeded(&wanted);
            let next = next.sum_unneeded(&[&keep[..], &acc.labels].concat());
            acc = contract(acc, next, &keep);
        }
        let acc = acc.sum_unneeded(&eq.output);
        let out_sizes: Vec<usize> = eq.output.iter().map(|&l| acc.size(l)).collect();
        acc.arrange(&eq.output, &out_sizes)
    }
}
