//! The WGSL sources, embedded into one table. Each family file in `shaders/`
//! is compiled together with `common.wgsl` (shared indexing helpers).

use std::borrow::Cow;
use std::sync::Arc;

/// A shader family: one WGSL module with one or more entry points.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Shader {
    Elementwise,
    Reduce,
    Softmax,
    Index,
    Rng,
    Pool,
    Optim,
    Check,
}

macro_rules! family {
    ($($file:literal),+) => {
        concat!(include_str!("../shaders/common.wgsl"), $("\n", include_str!(concat!("../shaders/", $file))),+)
    };
}

/// The shared functions plus the elementwise ops: the prelude of every
/// generated fused kernel.
pub(crate) const FUSED_PRELUDE: &str = family!("elementwise_ops.wgsl");

/// The shared functions alone.
pub(crate) const COMMON: &str = include_str!("../shaders/common.wgsl");

/// The convolution's gathers, for the generated matmul (which adds the
/// shared functions).
pub(crate) const CONV_GATHERS: &str = include_str!("../shaders/conv.wgsl");

/// `reduce.wgsl` alone, for generated variants (which add the prelude).
pub(crate) const REDUCE: &str = include_str!("../shaders/reduce.wgsl");

impl Shader {
    #[cfg(test)]
    pub const ALL: [Shader; 8] = [
        Shader::Elementwise,
        Shader::Reduce,
        Shader::Softmax,
        Shader::Index,
        Shader::Rng,
        Shader::Pool,
        Shader::Optim,
        Shader::Check,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Shader::Elementwise => "elementwise.wgsl",
            Shader::Reduce => "reduce.wgsl",
            Shader::Softmax => "softmax.wgsl",
            Shader::Index => "index.wgsl",
            Shader::Rng => "rng.wgsl",
            Shader::Pool => "pool.wgsl",
            Shader::Optim => "optim.wgsl",
            Shader::Check => "check.wgsl",
        }
    }

    pub fn source(self) -> &'static str {
        match self {
            Shader::Elementwise => family!("elementwise_ops.wgsl", "elementwise.wgsl"),
            Shader::Reduce => family!("reduce.wgsl"),
            Shader::Softmax => family!("softmax.wgsl"),
            Shader::Index => family!("index.wgsl"),
            Shader::Rng => family!("rng.wgsl"),
            Shader::Pool => family!("pool.wgsl"),
            Shader::Optim => family!("optim.wgsl"),
            Shader::Check => family!("check.wgsl"),
        }
    }
}

/// WGSL made at run time (users' custom kernels), validated by naga when made.
#[derive(Debug)]
pub(crate) struct DynamicShader {
    pub id: u64,
    pub label: String,
    pub wgsl: String,
}

/// Where a module's WGSL comes from; compared by identity.
#[derive(Clone, Debug)]
pub(crate) enum Source {
    Builtin(Shader),
    Dynamic(Arc<DynamicShader>),
}

impl Source {
    pub fn label(&self) -> &str {
        match self {
            Source::Builtin(s) => s.name(),
            Source::Dynamic(d) => &d.label,
        }
    }

    pub fn wgsl(&self) -> &str {
        match self {
            Source::Builtin(s) => s.source(),
            Source::Dynamic(d) => &d.wgsl,
        }
    }

    fn key(&self) -> (usize, u64) {
        match self {
            Source::Builtin(s) => (0, *s as u64),
            Source::Dynamic(d) => (1, d.id),
        }
    }
}

impl PartialEq for Source {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Source {}

impl std::hash::Hash for Source {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key().hash(state)
    }
}

impl DynamicShader {
    /// Parses and validates `wgsl` with naga, so a mistake is reported with
    /// its line instead of surfacing later as a GPU error.
    /// `subgroups`: the device supports subgroup operations.
    pub fn new(label: &str, wgsl: &str, subgroups: bool) -> Result<Arc<DynamicShader>, String> {
        let module = naga::front::wgsl::parse_str(wgsl).map_err(|e| e.emit_to_string(wgsl))?;
        let caps = if subgroups { naga::valid::Capabilities::SUBGROUP } else { naga::valid::Capabilities::empty() };
        let mut validator = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), caps);
        if subgroups {
            validator
                .subgroup_stages(naga::valid::ShaderStages::COMPUTE)
                .subgroup_operations(naga::valid::SubgroupOperationSet::all());
        }
        validator.validate(&module).map_err(|e| e.emit_to_string(wgsl))?;
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(Arc::new(DynamicShader { id, label: label.to_string(), wgsl: wgsl.to_string() }))
    }
}

/// A pipeline to build: an entry point of a module, specialised by
/// pipeline-overridable constants. Pipelines are cached by this key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Kernel {
    pub source: Source,
    pub entry: Cow<'static, str>,
    pub constants: Vec<(&'static str, u32)>,
}

impl Kernel {
    pub fn new(shader: Shader, entry: &'static str) -> Kernel {
        Kernel { source: Source::Builtin(shader), entry: Cow::Borrowed(entry), constants: Vec::new() }
    }

    pub fn dynamic(shader: Arc<DynamicShader>, entry: &str) -> Kernel {
        Kernel { source: Source::Dynamic(shader), entry: Cow::Owned(entry.to_string()), constants: Vec::new() }
    }

    pub fn with(mut self, name: &'static str, value: u32) -> Kernel {
        self.constants.push((name, value));
        self
    }
}

#[cfg(test)]
mod tests {
    use super::Shader;
    use crate::ops::elementwise::{BinaryOp, UnaryOp};
    use crate::ops::reduce::ReduceOp;

    fn module(shader: Shader) -> naga::Module {
        let module = naga::front::wgsl::parse_str(shader.source())
            .unwrap_or_else(|e| panic!("{}: {}", shader.name(), e.emit_to_string(shader.source())));
        naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all())
            .validate(&module)
            .unwrap_or_else(|e| panic!("{}: {}", shader.name(), e.emit_to_string(shader.source())));
        module
    }

    /// Every shader family parses and validates with naga.
    #[test]
    fn shaders_validate() {
        for s in Shader::ALL {
            module(s);
        }
    }

    fn constant(m: &naga::Module, name: &str) -> u32 {
        let (_, c) = m
            .constants
            .iter()
            .find(|(_, c)| c.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("no constant {name}"));
        match m.global_expressions[c.init] {
            naga::Expression::Literal(naga::Literal::U32(v)) => v,
            ref e => panic!("{name} is {e:?}"),
        }
    }

    /// The Rust op enums and the shaders' op codes agree.
    #[test]
    fn op_codes_match_shaders() {
        let ew = module(Shader::Elementwise);
        for op in UnaryOp::ALL {
            assert_eq!(constant(&ew, &op.name().to_uppercase()), op as u32, "{op:?}");
        }
        for op in BinaryOp::ALL {
            assert_eq!(constant(&ew, &op.name().to_uppercase()), op as u32, "{op:?}");
        }
        let red = module(Shader::Reduce);
        for op in [ReduceOp::Sum, ReduceOp::Max, ReduceOp::Min, ReduceOp::ArgMax, ReduceOp::ArgMin] {
            assert_eq!(constant(&red, &op.name().to_uppercase()), op as u32, "{op:?}");
        }
    }
}
