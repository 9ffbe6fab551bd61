//! Nested structures of tensors: what `grad` differentiates with respect to
//! and returns gradients shaped like.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

use crate::tensor::Tensor;

/// A structure holding tensors: `Tensor`, `Vec<T>`, `[T; N]`, tuples,
/// `BTreeMap<K, T>`, `HashMap<K, T>`, `Option<T>`, `()`, and structs with
/// `#[derive(Params)]`. The tensors have a fixed order (maps go by key), so
/// two values of the same structure can be zipped.
///
/// ```
/// use wgrad::{Device, Params, Tensor};
/// # let dev = Device::new()?;
/// #[derive(Params)]
/// struct Linear {
///     w: Tensor,
///     b: Tensor,
/// }
/// let p = Linear { w: Tensor::ones(&dev, &[2, 2]), b: Tensor::zeros(&dev, &[2]) };
/// let g = p.map(|t| t.ones_like());
/// let stepped = p.zip_map(&g, |p, g| p - g * 0.1);
/// assert_eq!(stepped.b.to_vec::<f32>()?, vec![-0.1, -0.1]);
/// assert_eq!(stepped.tensors().len(), 2);
/// # Ok::<(), wgrad::Error>(())
/// ```
pub trait Params: Sized {
    /// The same structure with a `Q` in place of each tensor: the shape of
    /// a Jacobian of this structure with respect to a `Q` (as JAX nests
    /// them). `Tensor::Of<Q>` is `Q`, `Vec<T>::Of<Q>` is `Vec<T::Of<Q>>`,
    /// and so on; `#[derive(Params)]` on `struct S` generates `SOf<Q>`,
    /// with the same fields (its own `Of` is a `Vec`, one per tensor).
    type Of<Q: Params>: Params;

    /// Visits every tensor in order.
    fn visit<'a>(&'a self, f: &mut dyn FnMut(&'a Tensor));

    /// [`Self::Of<Q>`], with the `Q`s taken from `it` in visiting order.
    fn nest<Q: Params>(&self, it: &mut dyn Iterator<Item = Q>) -> Self::Of<Q>;

    /// The same structure with each tensor replaced by the next one of `it`,
    /// in visiting order.
    fn rebuild(&self, it: &mut dyn Iterator<Item = Tensor>) -> Self;

    /// Visits every tensor in order with its name: a path of field names,
    /// indices and map keys joined by dots (`layers.0.w`), below `prefix`.
    /// The default numbers the tensors; containers and `#[derive(Params)]`
    /// name them. Names key checkpoints.
    fn visit_named<'a>(&'a self, prefix: &str, f: &mut dyn FnMut(String, &'a Tensor)) {
        let mut i = 0;
        self.visit(&mut |t| {
            f(join(prefix, &i.to_string()), t);
            i += 1;
        });
    }

    /// The tensors with their names, in order.
    fn named_tensors(&self) -> Vec<(String, &Tensor)> {
        let mut out = Vec::new();
        self.visit_named("", &mut |name, t| out.push((name, t)));
        out
    }

    /// The tensors, in order (flatten).
    fn tensors(&self) -> Vec<&Tensor> {
        let mut out = Vec::new();
        self.visit(&mut |t| out.push(t));
        out
    }

    /// The same structure holding `tensors`, in order (unflatten).
    #[track_caller]
    fn unflatten(&self, tensors: Vec<Tensor>) -> Self {
        let n = self.tensors().len();
        if tensors.len() != n {
            panic!("wgrad: unflatten: {} tensors for a structure of {n}", tensors.len());
        }
        self.rebuild(&mut tensors.into_iter())
    }

    /// The same structure with `f` applied to every tensor.
    fn map(&self, mut f: impl FnMut(&Tensor) -> Tensor) -> Self {
        let mapped: Vec<Tensor> = self.tensors().into_iter().map(&mut f).collect();
        self.rebuild(&mut mapped.into_iter())
    }

    /// The same structure with `f` applied to matching tensors of `self` and
    /// `other` (e.g. `params.zip_map(&grads, |p, g| p - g * lr)`).
    #[track_caller]
    fn zip_map(&self, other: &Self, mut f: impl FnMut(&Tensor, &Tensor) -> Tensor) -> Self {
        let (a, b) = (self.tensors(), other.tensors());
        if a.len() != b.len() {
            panic!("wgrad: zip_map: structures hold {} and {} tensors", a.len(), b.len());
        }
        let mapped: Vec<Tensor> = a.into_iter().zip(b).map(|(x, y)| f(x, y)).collect();
        self.rebuild(&mut mapped.into_iter())
    }
}

/// A `Q` per tensor of `p`, from `it`: [`Params::nest`] for structures
/// whose `Of<Q>` is a flat `Vec<Q>`.
pub fn nest_flat<P: Params, Q: Params>(p: &P, it: &mut dyn Iterator<Item = Q>) -> Vec<Q> {
    p.tensors().iter().map(|_| it.next().expect("wgrad: Params::nest ran out of values")).collect()
}

/// `prefix.name`, or `name` at the root.
pub fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() { name.to_string() } else { format!("{prefix}.{name}") }
}

impl Params for Tensor {
    type Of<Q: Params> = Q;
    fn visit<'a>(&'a self, f: &mut dyn FnMut(&'a Tensor)) {
        f(self)
    }
    fn nest<Q: Params>(&self, it: &mut dyn Iterator<Item = Q>) -> Q {
        it.next().expect("wgrad: Params::nest ran out of values")
    }
    fn visit_named<'a>(&'a self, prefix: &str, f: &mut dyn FnMut(String, &'a Tensor)) {
        f(if prefix.is_empty() { "tensor".to_string() } else { prefix.to_string() }, self)
    }
    fn rebuild(&self, it: &mut dyn Iterator<Item = Tensor>) -> Self {
        it.next().expect("wgrad: Params::rebuild ran out of tensors")
    }
}

impl Params for () {
    type Of<Q: Params> = ();
    fn visit<'a>(&'a self, _: &mut dyn FnMut(&'a Tensor)) {}
    fn nest<Q: Params>(&self, _: &mut dyn Iterator<Item = Q>) {}
    fn rebuild(&self, _: &mut dyn Iterator<Item = Tensor>) -> Self {}
}

impl<T: Params> Params for Vec<T> {
    type Of<Q: Params> = Vec<T::Of<Q>>;
    fn nest<Q: Params>(&self, it: &mut dyn Iterator<Item = Q>) -> Self::Of<Q> {
        self.iter().map(|x| x.nest(it)).collect()
    }
    fn visit<'a>(&'a self, f: &mut dyn FnMut(&'a Tensor)) {
        for x in self {
            x.visit(f);
        }
    }
    fn visit_named<'a>(&'a self, prefix: &str, f: &mut dyn FnMut(String, &'a Tensor)) {
        for (i, x) in self.iter().enumerate() {
            x.visit_named(&join(prefix, &i.to_string()), f);
        }
    }
    fn rebuild(&self, it: &mut dyn Iterator<Item = Tensor>) -> Self {
        self.iter().map(|x| x.rebuild(it)).collect()
    }
}

impl<T: Params, const N: usize> Params for [T; N] {
    type Of<Q: Params> = [T::Of<Q>; N];
    fn nest<Q: Params>(&self, it: &mut dyn Iterator<Item = Q>) -> Self::Of<Q> {
        std::array::from_fn(|i| self[i].nest(it))
    }
    fn visit<'a>(&'a self, f: &mut dyn FnMut(&'a Tensor)) {
        for x in self {
            x.visit(f);
        }
    }
    fn visit_named<'a>(&'a self, prefix: &str, f: &mut dyn FnMut(String, &'a Tensor)) {
        for (i, x) in self.iter().enumerate() {
            x.visit_named(&join(prefix, &i.to_string()), f);
        }
    }
    fn rebuild(&self, it: &mut dyn Iterator<Item = Tensor>) -> Self {
        std::array::from_fn(|i| self[i].rebuild(it))
    }
}

impl<T: Params> Params for Option<T> {
    type Of<Q: Params> = Option<T::Of<Q>>;
    fn nest<Q: Params>(&self, it: &mut dyn Iterator<Item = Q>) -> Self::Of<Q> {
        self.as_ref().map(|x| x.nest(it))
    }
    fn visit<'a>(&'a self, f: &mut dyn FnMut(&'a Tensor)) {
        if let Some(x) = self {
            x.visit(f);
        }
    }
    fn visit_named<'a>(&'a self, prefix: &str, f: &mut dyn FnMut(String, &'a Tensor)) {
        if let Some(x) = self {
            x.visit_named(prefix, f);
        }
    }
    fn rebuild(&self, it: &mut dyn Iterator<Item = Tensor>) -> Self {
        self.as_ref().map(|x| x.rebuild(it))
    }
}

impl<T: Params> Params for Box<T> {
    type Of<Q: Params> = Box<T::Of<Q>>;
    fn nest<Q: Params>(&self, it: &mut dyn Iterator<Item = Q>) -> Self::Of<Q> {
        Box::new((**self).nest(it))
    }
    fn visit<'a>(&'a self, f: &mut dyn FnMut(&'a Tensor)) {
        (**self).visit(f)
    }
    fn visit_named<'a>(&'a self, prefix: &str, f: &mut dyn FnMut(String, &'a Tensor)) {
        (**self).visit_named(prefix, f)
    }
    fn rebuild(&self, it: &mut dyn Iterator<Item = Tensor>) -> Self {
        Box::new((**self).rebuild(it))
    }
}

impl<K: Ord + Clone + std::fmt::Display, T: Params> Params for BTreeMap<K, T> {
    type Of<Q: Params> = BTreeMap<K, T::Of<Q>>;
    fn nest<Q: Params>(&self, it: &mut dyn Iterator<Item = Q>) -> Self::Of<Q> {
        self.iter().map(|(k, x)| (k.clone(), x.nest(it))).collect()
    }
    fn visit<'a>(&'a self, f: &mut dyn FnMut(&'a Tensor)) {
        for x in self.values() {
            x.visit(f);
        }
    }
    fn visit_named<'a>(&'a self, prefix: &str, f: &mut dyn FnMut(String, &'a Tensor)) {
        for (k, x) in self {
            x.visit_named(&join(prefix, &k.to_string()), f);
        }
    }
    fn rebuild(&self, it: &mut dyn Iterator<Item = Tensor>) -> Self {
        self.iter().map(|(k, x)| (k.clone(), x.rebuild(it))).collect()
    }
}

/// Visited in key order, so two maps with the same keys zip correctly.
impl<K: Ord + Hash + Clone, T: Params, S: std::hash::BuildHasher + Default> Params for HashMap<K, T, S> {
    type Of<Q: Params> = HashMap<K, T::Of<Q>, S>;
    fn nest<Q: Params>(&self, it: &mut dyn Iterator<Item = Q>) -> Self::Of<Q> {
        let mut entries: Vec<_> = self.iter().collect();
        entries.sort_by(|a, b| a.0.cmp(b.0));
        entries.into_iter().map(|(k, x)| (k.clone(), x.nest(it))).collect()
    }
    fn visit<'a>(&'a self, f: &mut dyn FnMut(&'a Tensor)) {
        let mut entries: Vec<_> = self.iter().collect();
        entries.sort_by(|a, b| a.0.cmp(b.0));
        for (_, x) in entries {
            x.visit(f);
        }
    }
    fn rebuild(&self, it: &mut dyn Iterator<Item = Tensor>) -> Self {
        let mut entries: Vec<_> = self.iter().collect();
        entries.sort_by(|a, b| a.0.cmp(b.0));
        entries.into_iter().map(|(k, x)| (k.clone(), x.rebuild(it))).collect()
    }
}

macro_rules! tuple_params {
    ($($name:ident $idx:tt),+) => {
        impl<$($name: Params),+> Params for ($($name,)+) {
            type Of<Q: Params> = ($($name::Of<Q>,)+);
            fn visit<'a>(&'a self, f: &mut dyn FnMut(&'a Tensor)) {
                $(self.$idx.visit(f);)+
            }
            fn nest<Q: Params>(&self, it: &mut dyn Iterator<Item = Q>) -> Self::Of<Q> {
                ($(self.$idx.nest(it),)+)
            }
            fn visit_named<'a>(&'a self, prefix: &str, f: &mut dyn FnMut(String, &'a Tensor)) {
                $(self.$idx.visit_named(&join(prefix, stringify!($idx)), f);)+
            }
            fn rebuild(&self, it: &mut dyn Iterator<Item = Tensor>) -> Self {
                ($(self.$idx.rebuild(it),)+)
            }
        }
    };
}

tuple_params!(A 0);
tuple_params!(A 0, B 1);
tuple_params!(A 0, B 1, C 2);
tuple_params!(A 0, B 1, C 2, D 3);
tuple_params!(A 0, B 1, C 2, D 3, E 4);
tuple_params!(A 0, B 1, C 2, D 3, E 4, F 5);
