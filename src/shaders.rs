//! The WGSL sources, embedded into one table. Each family file in `shaders/`
//! is compiled together with `common.wgsl` (shared indexing helpers).

/// A shader family: one WGSL module with one or more entry points.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Shader {
    Elementwise,
    Reduce,
    Softmax,
    Matmul,
    Index,
    Rng,
}

macro_rules! family {
    ($file:literal) => {
        concat!(
            include_str!("../shaders/common.wgsl"),
            "\n",
            include_str!(concat!("../shaders/", $file))
        )
    };
}

impl Shader {
    #[cfg(test)]
    pub const ALL: [Shader; 6] = [
        Shader::Elementwise,
        Shader::Reduce,
        Shader::Softmax,
        Shader::Matmul,
        Shader::Index,
        Shader::Rng,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Shader::Elementwise => "elementwise.wgsl",
            Shader::Reduce => "reduce.wgsl",
            Shader::Softmax => "softmax.wgsl",
            Shader::Matmul => "matmul.wgsl",
            Shader::Index => "index.wgsl",
            Shader::Rng => "rng.wgsl",
        }
    }

    pub fn source(self) -> &'static str {
        match self {
            Shader::Elementwise => family!("elementwise.wgsl"),
            Shader::Reduce => family!("reduce.wgsl"),
            Shader::Softmax => family!("softmax.wgsl"),
            Shader::Matmul => family!("matmul.wgsl"),
            Shader::Index => family!("index.wgsl"),
            Shader::Rng => family!("rng.wgsl"),
        }
    }
}

/// A pipeline to build: an entry point of a family, specialised by
/// pipeline-overridable constants. Pipelines are cached by this key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Kernel {
    pub shader: Shader,
    pub entry: &'static str,
    pub constants: Vec<(&'static str, u32)>,
}

impl Kernel {
    pub fn new(shader: Shader, entry: &'static str) -> Kernel {
        Kernel {
            shader,
            entry,
            constants: Vec::new(),
        }
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
        naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::all(),
        )
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
            assert_eq!(
                constant(&ew, &op.name().to_uppercase()),
                op as u32,
                "{op:?}"
            );
        }
        for op in BinaryOp::ALL {
            assert_eq!(
                constant(&ew, &op.name().to_uppercase()),
                op as u32,
                "{op:?}"
            );
        }
        let red = module(Shader::Reduce);
        for op in [
            ReduceOp::Sum,
            ReduceOp::Max,
            ReduceOp::Min,
            ReduceOp::ArgMax,
            ReduceOp::ArgMin,
        ] {
            assert_eq!(
                constant(&red, &op.name().to_uppercase()),
                op as u32,
                "{op:?}"
            );
        }
    }
}
