//! What a generator returns.

/// A generated kernel: its module's text, the entry point (with the
/// pipeline constants it is specialised by), its storage buffers by the
/// names its WGSL declares, its uniform's bytes, and its workgroup grid.
pub(crate) struct GeneratedKernel {
    /// For profiles and graphs.
    pub label: String,
    pub wgsl: String,
    pub entry: &'static str,
    pub constants: Vec<(&'static str, u32)>,
    /// Whether the module uses subgroup operations.
    pub subgroups: bool,
    pub bindings: Vec<(String, wgpu::Buffer)>,
    pub uniform: Vec<u8>,
    pub groups: [u32; 3],
}
