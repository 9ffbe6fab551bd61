//! The WGSL sources, embedded into one table, and the keys of pipelines.
//! Each family file in `shaders/` is compiled together with `common.wgsl`
//! (shared indexing helpers); the elementwise kernels and everything
//! fused are generated (`codegen`) from the files in [`sources`].

use std::borrow::Cow;
use std::sync::Arc;

/// A shader family: one WGSL module with one or more entry points.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Shader {
    Reduce,
    Softmax,
    Index,
    Rng,
    Pool,
    Optim,
    Check,
    Scan,
    Sort,
}

macro_rules! family {
    ($($file:literal),+) => {
        concat!(include_str!("../../shaders/common.wgsl"), $("\n", include_str!(concat!("../../shaders/", $file))),+)
    };
}

/// The files that generated kernels are made of (`codegen`), each alone.
pub(crate) mod sources {
    /// The shared functions of every module.
    pub const COMMON: &str = include_str!("../../shaders/common.wgsl");
    /// The elementwise ops' functions.
    pub const ELEMENTWISE_OPS: &str = include_str!("../../shaders/elementwise_ops.wgsl");
    /// The eager elementwise kernels.
    pub const ELEMENTWISE: &str = include_str!("../../shaders/elementwise.wgsl");
    /// The reduction kernels, without their hooks.
    pub const REDUCE: &str = include_str!("../../shaders/reduce.wgsl");
    /// The convolution's gathers of B (and what all its gathers share).
    pub const CONV_GATHERS: &str = include_str!("../../shaders/conv_gathers.wgsl");
    /// The convolution's gathers of A.
    pub const CONV_GATHERS_A: &str = include_str!("../../shaders/conv_gathers_a.wgsl");
    /// The optimizers' update rules.
    pub const OPTIM_RULES: &str = include_str!("../../shaders/optim_rules.wgsl");
}

impl Shader {
    #[cfg(test)]
    pub const ALL: [Shader; 9] = [
        Shader::Reduce,
        Shader::Softmax,
        Shader::Index,
        Shader::Rng,
        Shader::Pool,
        Shader::Optim,
        Shader::Check,
        Shader::Scan,
        Shader::Sort,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Shader::Reduce => "reduce.wgsl",
            Shader::Softmax => "softmax.wgsl",
            Shader::Index => "index.wgsl",
            Shader::Rng => "rng.wgsl",
            Shader::Pool => "pool.wgsl",
            Shader::Optim => "optim.wgsl",
            Shader::Check => "check.wgsl",
            Shader::Scan => "scan.wgsl",
            Shader::Sort => "sort.wgsl",
        }
    }

    pub fn source(self) -> &'static str {
        match self {
            // the eager reductions run with the default hooks
            Shader::Reduce => family!("reduce.wgsl", "reduce_hooks.wgsl"),
            Shader::Softmax => family!("softmax.wgsl"),
            Shader::Index => family!("index.wgsl"),
            Shader::Rng => family!("rng.wgsl"),
            Shader::Pool => family!("pool.wgsl"),
            Shader::Optim => family!("optim_rules.wgsl", "optim.wgsl"),
            Shader::Check => family!("check.wgsl"),
            Shader::Scan => family!("scan.wgsl"),
            Shader::Sort => family!("sort.wgsl"),
        }
    }
}

/// WGSL made at run time (generated kernels, users' custom kernels),
/// validated by naga when made.
#[derive(Debug)]
pub(crate) struct DynamicShader {
    pub id: u64,
    pub label: String,
    pub wgsl: String,
    /// The parsed module: the bindings are read from it, and native
    /// backends take it as it is instead of parsing the text again (a
    /// large generated matmul takes tens of milliseconds to parse).
    pub module: naga::Module,
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
        Ok(Arc::new(DynamicShader { id, label: label.to_string(), wgsl: wgsl.to_string(), module }))
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

    /// `entry (module)` with its specialisation, for profiles and graphs.
    pub fn label(&self) -> String {
        let mut label = format!("{} ({})", self.entry, self.source.label());
        for (k, v) in &self.constants {
            label.push_str(&format!(" {k}={v}"));
        }
        label
    }
}

#[cfg(test)]
mod tests {
    use super::Shader;
    use crate::ir::ReduceOp;

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

    /// The reduction kinds' codes agree with the shader's.
    #[test]
    fn reduce_codes_match_shader() {
        let red = module(Shader::Reduce);
        for op in ReduceOp::ALL {
            assert_eq!(constant(&red, &op.name().to_uppercase()), op.code(), "{op:?}");
        }
    }
}
