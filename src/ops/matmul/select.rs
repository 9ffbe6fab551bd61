//! Which generated matmul a product runs on this adapter, and the cache of
//! their modules. CPU adapters with subgroups (lavapipe) run register-
//! blocked kernels whose tile fits the output (narrow outputs waste no
//! lanes); other adapters the workgroup-tiled kernel with the tiles their
//! autotune chose (`autotune.rs`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::codegen::matmul_source;
use crate::ir::{ALoad, BLoad, ConvGemm, MatmulTile, MatmulVariant, WorkgroupTile};
use crate::runtime::{DeviceInner, DynamicShader, Kernel};

/// The workgroup tile of the matmul for each size of product.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct MatmulTiles {
    pub small: WorkgroupTile,
    pub medium: WorkgroupTile,
    pub large: WorkgroupTile,
}

impl MatmulTiles {
    /// One tile for every size.
    pub fn uniform(t: WorkgroupTile) -> MatmulTiles {
        MatmulTiles { small: t, medium: t, large: t }
    }

    /// The tiles where they are not measured: the shader's default on
    /// GPUs, the unstaged one on CPU adapters.
    pub fn default_for(info: &wgpu::AdapterInfo) -> MatmulTiles {
        match info.device_type == wgpu::DeviceType::Cpu {
            true => MatmulTiles::uniform(WorkgroupTile::UNSTAGED),
            false => MatmulTiles::uniform(WorkgroupTile::DEFAULT),
        }
    }

    /// The tile for a product with `outputs` elements (batches included)
    /// and `m` rows: the one measured for its size, unless another of the
    /// three pads m to fewer rows (a convolution's input gradient has as
    /// many rows as the layer has input channels, often few).
    pub fn for_product(&self, outputs: usize, m: usize) -> WorkgroupTile {
        let sized = match outputs {
            0..65536 => self.small,
            65536..1048576 => self.medium,
            _ => self.large,
        };
        let padded = |t: &WorkgroupTile| m.div_ceil(t.tile_m()) * t.tile_m();
        // (min_by_key keeps the first of equals: the sized tile)
        [sized, self.small, self.medium, self.large].into_iter().min_by_key(padded).expect("four tiles")
    }

    pub(super) fn get(&mut self, size: usize) -> &mut WorkgroupTile {
        [&mut self.small, &mut self.medium, &mut self.large][size]
    }
}

/// Generated modules by variant and convolution product (`None`:
/// generation failed).
type Modules = HashMap<(MatmulVariant, Option<ConvGemm>), Option<Arc<DynamicShader>>>;

/// What a device keeps of its matmuls.
#[derive(Default)]
pub(crate) struct MatmulState {
    /// The workgroup-tiled kernel's tiles (`None`: the subgroup kernel).
    tiles: Mutex<Option<MatmulTiles>>,
    modules: Mutex<Modules>,
}

/// The state of `dev`'s matmuls.
pub(crate) fn state(dev: &DeviceInner) -> Arc<MatmulState> {
    dev.local::<MatmulState>()
}

/// Sets the workgroup-tiled matmul's tiles (`None`: the subgroup kernel).
pub(crate) fn set_tiles(dev: &DeviceInner, tiles: Option<MatmulTiles>) {
    *state(dev).tiles.lock().unwrap_or_else(|p| p.into_inner()) = tiles;
}

/// Does `dev` run the subgroup kernels (CPU adapters with subgroups), and
/// so a tile of one row for row vectors?
pub(crate) fn row_vector_tiles(dev: &DeviceInner) -> bool {
    state(dev).tiles.lock().unwrap_or_else(|p| p.into_inner()).is_none()
}

/// A matmul pipeline key and the variant (and tile) it runs.
pub(crate) struct MatmulKernel {
    pub kernel: Kernel,
    pub variant: MatmulVariant,
}

/// The matmul kernel for an [m, n] output (`outputs` elements with the
/// batches) on `dev`: the subgroup kernel with a tile that fits the output,
/// or the workgroup-tiled one with the tile measured for products of this
/// size and rows (`MatmulTiles::for_product`). `a`, `b`: the four-wide loads
/// the operands allow (see [`MatmulTile`]).
pub(crate) fn kernel(
    dev: &DeviceInner,
    outputs: usize,
    m: usize,
    n: usize,
    a: ALoad,
    b: BLoad,
    conv: Option<ConvGemm>,
) -> MatmulKernel {
    let state = state(dev);
    let tiles = *state.tiles.lock().unwrap_or_else(|p| p.into_inner());
    let variant = match tiles {
        Some(tiles) => MatmulVariant::Workgroup(tiles.for_product(outputs, m)),
        None => {
            // (a gathered A reads k step by step: no row-vector tile)
            let vector = m == 1 && !conv.is_some_and(ConvGemm::gathers_a);
            let rows = match m {
                _ if vector => 1,
                0..=8 => 8,
                9..=16 => 16,
                17..=32 => 32,
                _ => 64,
            };
            let cols = if n > 32 { 8 } else { 4 };
            let a = if vector || (a == ALoad::AlongM && rows % 32 != 0) { ALoad::Scalar } else { a };
            let unroll = match (a, b) {
                (ALoad::AlongK, _) | (_, BLoad::AlongK) => 4,
                // a row vector: one load of A per lane per 8 steps
                _ if vector => 8,
                _ => 2,
            };
            MatmulVariant::Subgroup(MatmulTile { rows, cols, unroll, a, b })
        }
    };
    let mut cache = state.modules.lock().unwrap_or_else(|p| p.into_inner());
    let mut shader = |v: MatmulVariant| {
        cache
            .entry((v, conv))
            .or_insert_with(|| {
                DynamicShader::new(&v.label(conv), &matmul_source(v, conv, None), v.subgroups())
                    .map_err(|e| eprintln!("wgrad: the generated matmul {v:?} {conv:?} failed validation:\n{e}"))
                    .ok()
            })
            .clone()
    };
    let (variant, shader) = match shader(variant) {
        Some(s) => (variant, s),
        None => {
            let default = MatmulVariant::Workgroup(WorkgroupTile::DEFAULT);
            (default, shader(default).expect("the default tile validates (a unit test checks it)"))
        }
    };
    MatmulKernel { kernel: Kernel::dynamic(shader, "matmul"), variant }
}
