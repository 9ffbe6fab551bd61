//! Many tensors in a few flat buffers: a [`Packing`] lays a list of f32
//! tensors end to end in "buckets" (one-dimensional tensors of at most a
//! given number of elements), packs them with one copy per tensor, and
//! unpacks a bucket into views of it (no copy).
//!
//! Data parallelism moves gradients through it: one read-back, one
//! all-reduce and one upload per bucket instead of per tensor
//! ([`crate::parallel`]), whose averaged gradients come back as views of
//! the packed buckets. With parameters, gradients and optimizer state packed
//! alike, one update dispatch per bucket covers every tensor.

use std::ops::Range;

use crate::DType;
use crate::autograd::no_grad;
use crate::tensor::Tensor;

/// Where each tensor of a list lies in a few flat f32 buffers ("buckets").
///
/// ```
/// use wgrad::{pack::Packing, Device, Tensor};
/// # let dev = Device::new()?;
/// let (a, b) = (Tensor::from_slice(&dev, &[1.0f32, 2.0, 3.0, 4.0], &[2, 2]), Tensor::from_slice(&dev, &[5.0f32], &[1]));
/// let packing = Packing::of(&[&a, &b], 1 << 20);
/// let buckets = packing.pack(&[&a, &b]);
/// assert_eq!(buckets[0].to_vec::<f32>()?, [1.0, 2.0, 3.0, 4.0, 5.0]);
/// let views = packing.unpack(&buckets);
/// assert_eq!(views[0].shape(), &[2, 2]);
/// # Ok::<(), wgrad::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packing {
    shapes: Vec<Vec<usize>>,
    /// Per bucket, the indices of the tensors it holds (consecutive).
    buckets: Vec<Range<usize>>,
}

impl Packing {
    /// The packing of tensors of `shapes`, in order: a bucket is closed when
    /// the next tensor would take it past `bucket_elements` (a larger tensor
    /// gets a bucket of its own).
    pub fn new(shapes: Vec<Vec<usize>>, bucket_elements: usize) -> Packing {
        let mut buckets: Vec<Range<usize>> = Vec::new();
        let mut filled = 0;
        for (i, s) in shapes.iter().enumerate() {
            let n: usize = s.iter().product();
            match buckets.last_mut() {
                Some(b) if filled + n <= bucket_elements => {
                    b.end = i + 1;
                    filled += n;
                }
                _ => {
                    buckets.push(i..i + 1);
                    filled = n;
                }
            }
        }
        Packing { shapes, buckets }
    }

    /// The packing of these tensors' shapes (see [`Packing::new`]).
    pub fn of(tensors: &[&Tensor], bucket_elements: usize) -> Packing {
        Packing::new(tensors.iter().map(|t| t.shape().to_vec()).collect(), bucket_elements)
    }

    /// How many buckets.
    pub fn buckets(&self) -> usize {
        self.buckets.len()
    }

    /// The number of elements of bucket `b`.
    pub fn bucket_len(&self, b: usize) -> usize {
        self.buckets[b].clone().map(|i| self.shapes[i].iter().product::<usize>()).sum()
    }

    /// The number of elements of all tensors.
    pub fn numel(&self) -> usize {
        (0..self.buckets()).map(|b| self.bucket_len(b)).sum()
    }

    /// The shapes of the tensors, in order.
    pub fn shapes(&self) -> &[Vec<usize>] {
        &self.shapes
    }

    /// One contiguous one-dimensional tensor per bucket holding its tensors
    /// end to end (one copy kernel per tensor; nothing is differentiated).
    #[track_caller]
    pub fn pack(&self, tensors: &[&Tensor]) -> Vec<Tensor> {
        let shapes: Vec<&[usize]> = tensors.iter().map(|t| t.shape()).collect();
        if shapes.len() != self.shapes.len()
            || shapes.iter().zip(&self.shapes).any(|(a, b)| *a != b.as_slice())
            || tensors.iter().any(|t| t.dtype() != DType::F32)
        {
            panic!(
                "wgrad: pack: f32 tensors of shapes {:?} expected, got {:?} ({:?})",
                self.shapes,
                shapes,
                tensors.iter().map(|t| t.dtype()).collect::<Vec<_>>()
            );
        }
        no_grad(|| {
            self.buckets
                .iter()
                .map(|b| {
                    let flat: Vec<Tensor> =
                        tensors[b.clone()].iter().map(|t| t.detach().reshape(&[t.numel()])).collect();
                    Tensor::cat(&flat.iter().collect::<Vec<_>>(), 0)
                })
                .collect()
        })
    }

    /// The tensors, in order, as views of the buckets (no copy).
    #[track_caller]
    pub fn unpack(&self, buckets: &[Tensor]) -> Vec<Tensor> {
        let lens: Vec<usize> = (0..self.buckets()).map(|b| self.bucket_len(b)).collect();
        if buckets.len() != lens.len() || buckets.iter().zip(&lens).any(|(t, &n)| t.shape() != [n]) {
            let got: Vec<_> = buckets.iter().map(|t| t.shape().to_vec()).collect();
            panic!(
                "wgrad: unpack: buckets of shapes {:?} expected, got {got:?}",
                lens.iter().map(|&n| [n]).collect::<Vec<_>>()
            );
        }
        let mut out = Vec::with_capacity(self.shapes.len());
        for (range, bucket) in self.buckets.iter().zip(buckets) {
            let mut start = 0;
            for shape in &self.shapes[range.clone()] {
                let n: usize = shape.iter().product();
                out.push(bucket.narrow(0, start, n).reshape(shape));
                start += n;
            }
        }
        out
    }
}
