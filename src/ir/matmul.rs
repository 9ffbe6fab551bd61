//! The matmul kernels' vocabulary: which generated kernel a product runs
//! (its variant and tile, how it loads its operands, which convolution
//! product it is), shared by the op that chooses it (`ops/matmul`), the
//! generators (`codegen/matmul*.rs`) and fusion.

/// How a lane loads A. Four-wide loads need the vectors contiguous and
/// every offset and stride of A a multiple of 4; on lavapipe, where every
/// storage access is issued lane by lane, they divide the loads by four.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum ALoad {
    /// One element of its row per k step.
    Scalar,
    /// Rows contiguous along k (k a multiple of 4): four k steps of its row
    /// at once (`unroll` is then 4).
    AlongK,
    /// Columns contiguous along m (a transposed view): four rows at once
    /// (`rows` a multiple of 32).
    AlongM,
}

/// How a lane loads B (the same alignment rules as [`ALoad`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum BLoad {
    /// One element of each of its columns per k step.
    Scalar,
    /// Rows contiguous along n: a lane owns four adjacent columns per
    /// vector and loads them (and stores C) four at a time.
    AlongN,
    /// Columns contiguous along k (a transposed view, as the weights of
    /// `x·wᵀ`): four k steps of each column at once (`unroll` is then 4).
    AlongK,
}

/// A convolution run as the matmul (implicit GEMM, `shaders/conv_gathers*.wgsl`):
/// which of its three products, so which operands the kernel gathers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum ConvGemm {
    /// y = w · cols(x): B gathered from x.
    Forward,
    /// dx = wᵀ · dcols(dy): both gathered.
    InputGrad,
    /// dw = dy · cols(x)ᵀ, summed over the batch: both gathered.
    WeightGrad,
}

impl ConvGemm {
    pub fn name(self) -> &'static str {
        match self {
            ConvGemm::Forward => "conv2d",
            ConvGemm::InputGrad => "conv2d (input gradient)",
            ConvGemm::WeightGrad => "conv2d (weight gradient)",
        }
    }
}

/// Tile shape of the subgroup matmul: `rows` (a multiple of 8) × 8·`cols`
/// (`cols` a multiple of 4), `unroll` k steps per iteration, and how A and
/// B load.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct MatmulTile {
    pub rows: usize,
    pub cols: usize,
    pub unroll: usize,
    pub a: ALoad,
    pub b: BLoad,
}

impl MatmulTile {
    pub fn tile_m(&self) -> usize {
        self.rows
    }

    pub fn tile_n(&self) -> usize {
        8 * self.cols
    }
}

/// How the workgroup-tiled matmul feeds its FMAs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Staging {
    /// Each invocation loads its rows and columns from memory itself (no
    /// barrier: what CPU adapters need).
    None,
    /// The workgroup stages `bk` steps of k of A and B at a time in
    /// workgroup memory; an invocation's rows and columns are interleaved
    /// one by one, and each k step loads them one by one.
    Scalar,
    /// As `Scalar`, but an invocation's rows and columns come in runs of
    /// four, which each k step loads from workgroup memory as vectors (a
    /// quarter of the load instructions; `tm`, `tn` multiples of 4).
    Vec4,
}

/// Tile of the workgroup-tiled matmul (`codegen/matmul_tiled.rs`): a
/// `wx`×`wy` workgroup computes (`wy`·`tm`)×(`wx`·`tn`) outputs, each
/// invocation `tm`×`tn`, staging `bk` steps of k at a time (if it stages).
/// Every tile gives the same bits (see `codegen/matmul_tiled.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct WorkgroupTile {
    pub wx: u32,
    pub wy: u32,
    pub tm: u32,
    pub tn: u32,
    pub bk: u32,
    pub staging: Staging,
}

const fn tile(wx: u32, wy: u32, tm: u32, tn: u32, bk: u32, staging: Staging) -> WorkgroupTile {
    WorkgroupTile { wx, wy, tm, tn, bk, staging }
}

impl WorkgroupTile {
    /// The tile where none is measured on a GPU.
    pub const DEFAULT: WorkgroupTile = tile(16, 16, 4, 4, 16, Staging::Scalar);

    /// The default where the tiles are not measured on a CPU adapter.
    pub const UNSTAGED: WorkgroupTile = tile(16, 16, 4, 4, 1, Staging::None);

    /// The tiles an adapter's autotune chooses from: large tiles for large
    /// products (more FMAs per load), small ones where large tiles would
    /// leave most of the adapter idle, and unstaged ones (what CPU
    /// adapters need: a barrier makes llvmpipe compile a kernel for 20–40 s,
    /// and their caches do what workgroup memory would).
    pub const CANDIDATES: [WorkgroupTile; 14] = [
        WorkgroupTile::DEFAULT,
        tile(16, 16, 8, 8, 8, Staging::Scalar),
        tile(16, 16, 8, 8, 16, Staging::Scalar),
        tile(16, 16, 8, 4, 16, Staging::Scalar),
        tile(16, 16, 4, 8, 16, Staging::Scalar),
        tile(16, 16, 2, 2, 16, Staging::Scalar),
        tile(8, 8, 4, 4, 16, Staging::Scalar),
        tile(16, 16, 4, 4, 16, Staging::Vec4),
        tile(16, 16, 8, 8, 8, Staging::Vec4),
        tile(16, 16, 8, 8, 16, Staging::Vec4),
        tile(16, 16, 8, 4, 16, Staging::Vec4),
        tile(16, 16, 4, 8, 16, Staging::Vec4),
        WorkgroupTile::UNSTAGED,
        tile(8, 8, 4, 4, 1, Staging::None),
    ];

    pub fn tile_m(&self) -> usize {
        (self.wy * self.tm) as usize
    }

    pub fn tile_n(&self) -> usize {
        (self.wx * self.tn) as usize
    }

    /// The rows of A and B per k step in workgroup memory, in elements
    /// (padded, so that staging along k does not hit one bank).
    pub fn strides(&self) -> (u32, u32) {
        let pad = if self.staging == Staging::Vec4 { 4 } else { 1 };
        (self.wy * self.tm + pad, self.wx * self.tn + pad)
    }

    /// Does a workgroup of this tile fit the adapter's limits?
    pub fn fits(&self, limits: &wgpu::Limits) -> bool {
        let (sa, sb) = self.strides();
        let staged = if self.staging == Staging::None { 0 } else { 4 * self.bk * (sa + sb) };
        self.wx * self.wy <= limits.max_compute_invocations_per_workgroup
            && self.wx <= limits.max_compute_workgroup_size_x
            && self.wy <= limits.max_compute_workgroup_size_y
            && staged <= limits.max_compute_workgroup_storage_size
    }
}

impl std::fmt::Display for WorkgroupTile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (m, n, wx, wy, tm, tn) = (self.tile_m(), self.tile_n(), self.wx, self.wy, self.tm, self.tn);
        write!(f, "{m}×{n} ({wx}×{wy} invocations of {tm}×{tn}")?;
        match self.staging {
            Staging::None => write!(f, ", unstaged)"),
            Staging::Scalar => write!(f, ", staged by {} k)", self.bk),
            Staging::Vec4 => write!(f, ", staged by {} k, vec4)", self.bk),
        }
    }
}

/// Which generated matmul a node runs, and its tile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum MatmulVariant {
    Subgroup(MatmulTile),
    Workgroup(WorkgroupTile),
}

impl MatmulVariant {
    pub fn tile_m(&self) -> usize {
        match self {
            MatmulVariant::Subgroup(t) => t.tile_m(),
            MatmulVariant::Workgroup(t) => t.tile_m(),
        }
    }

    pub fn tile_n(&self) -> usize {
        match self {
            MatmulVariant::Subgroup(t) => t.tile_n(),
            MatmulVariant::Workgroup(t) => t.tile_n(),
        }
    }

    pub fn subgroups(&self) -> bool {
        matches!(self, MatmulVariant::Subgroup(_))
    }

    /// A short name, for profiles and graphs: the op, the kind and the
    /// tile.
    pub fn label(&self, conv: Option<ConvGemm>) -> String {
        let (m, n) = (self.tile_m(), self.tile_n());
        let op = conv.map_or("matmul", ConvGemm::name);
        match self {
            MatmulVariant::Subgroup(_) => format!("{op} {m}×{n}, subgroups"),
            MatmulVariant::Workgroup(t) => match t.staging {
                Staging::None => format!("{op} {m}×{n}, unstaged"),
                Staging::Scalar => format!("{op} {m}×{n}, staged"),
                Staging::Vec4 => format!("{op} {m}×{n}, staged vec4"),
            },
        }
    }
}
