//! The generated matmuls (and convolutions as implicit GEMMs), with
//! epilogues: the kernels are `matmul_tiled.rs` (workgroup-tiled: GPUs,
//! the browser) and `matmul_subgroup.rs` (register-blocked with subgroups:
//! CPU adapters such as lavapipe); what both share is in
//! `matmul_header.rs`.

use super::chain::{Chain, FusedMember};
use super::kernel::GeneratedKernel;
use super::{matmul_subgroup, matmul_tiled};
use crate::ir::{ConvGemm, MatmulVariant, MmInfo};

/// WGSL of `variant`'s kernel (entry point `matmul`; bindings `a`, `b`,
/// `c`), the product of convolution `conv` if there is one, with
/// `epilogue` run on every element of its result.
pub(crate) fn source(variant: MatmulVariant, conv: Option<ConvGemm>, epilogue: Option<&Chain>) -> String {
    match variant {
        MatmulVariant::Subgroup(t) => matmul_subgroup::source(t, conv, epilogue),
        MatmulVariant::Workgroup(t) => matmul_tiled::source(t, conv, epilogue),
    }
}

/// The matmul node `mm` (its `uniform` and workgroup `groups`) with
/// `members` as its epilogue, run per element of its result, which they see
/// as a dense tensor of `shape`. `None` when the chain's iteration space has
/// too many dimensions.
pub(crate) fn with_epilogue(
    mm: &MmInfo,
    uniform: &[u8],
    groups: [u32; 3],
    shape: &[usize],
    members: &[FusedMember],
) -> Option<GeneratedKernel> {
    let chain = Chain::new(shape, members)?;
    let mut bindings =
        vec![("a".to_string(), mm.a.clone()), ("b".to_string(), mm.b.clone()), ("c".to_string(), mm.c.clone())];
    bindings.extend(chain.bindings());
    let mut uniform = uniform.to_vec();
    uniform.extend_from_slice(bytemuck::cast_slice(&chain.words()));
    Some(GeneratedKernel {
        label: format!("{} + epilogue", mm.variant.label(mm.conv)),
        wgsl: source(mm.variant, mm.conv, Some(&chain)),
        entry: "matmul",
        constants: Vec::new(),
        subgroups: mm.variant.subgroups(),
        bindings,
        uniform,
        groups,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{ALoad, BLoad, MatmulTile, WorkgroupTile};
    use crate::runtime::DynamicShader;

    /// Generated kernels parse and validate (with subgroups) for several tiles.
    #[test]
    fn subgroup_matmul_validates() {
        let tile = |rows, cols, unroll, a, b| MatmulTile { rows, cols, unroll, a, b };
        for t in [
            tile(8, 4, 1, ALoad::Scalar, BLoad::Scalar),
            tile(64, 8, 2, ALoad::Scalar, BLoad::Scalar),
            tile(64, 8, 4, ALoad::AlongK, BLoad::AlongN),
            tile(16, 4, 2, ALoad::Scalar, BLoad::AlongN),
            tile(32, 8, 2, ALoad::AlongM, BLoad::Scalar),
            tile(64, 8, 4, ALoad::AlongK, BLoad::AlongK),
            tile(32, 4, 4, ALoad::AlongM, BLoad::AlongK),
        ] {
            let src = source(MatmulVariant::Subgroup(t), None, None);
            DynamicShader::new("matmul", &src, true).unwrap_or_else(|e| panic!("{t:?}: {e}"));
        }
        // a convolution's products: gathered operands load one element at a time
        for (conv, a) in [
            (ConvGemm::Forward, ALoad::AlongK),
            (ConvGemm::Forward, ALoad::Scalar),
            (ConvGemm::InputGrad, ALoad::Scalar),
            (ConvGemm::WeightGrad, ALoad::Scalar),
        ] {
            for t in
                [tile(8, 4, if a == ALoad::AlongK { 4 } else { 1 }, a, BLoad::Scalar), tile(64, 8, 4, a, BLoad::Scalar)]
            {
                let src = source(MatmulVariant::Subgroup(t), Some(conv), None);
                DynamicShader::new("conv", &src, true).unwrap_or_else(|e| panic!("{t:?} {conv:?}: {e}"));
            }
        }
    }

    /// Every autotune candidate of the workgroup-tiled matmul validates
    /// (without subgroups).
    #[test]
    fn workgroup_matmul_validates() {
        for t in WorkgroupTile::CANDIDATES {
            for conv in [None, Some(ConvGemm::Forward), Some(ConvGemm::InputGrad), Some(ConvGemm::WeightGrad)] {
                let src = source(MatmulVariant::Workgroup(t), conv, None);
                DynamicShader::new("matmul", &src, false).unwrap_or_else(|e| panic!("{t} {conv:?}: {e}"));
            }
        }
    }
}
