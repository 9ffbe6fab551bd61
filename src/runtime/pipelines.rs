//! A device's caches of what it builds from WGSL: shader modules, compute
//! pipelines, the bindings each module declares, and the generated shaders
//! (validated once per source text).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use super::DeviceInner;
use super::shaders::{DynamicShader, Kernel, Source};

/// A compute pipeline and the layout of its bind group 0.
pub(crate) struct Pipeline {
    pub pipeline: wgpu::ComputePipeline,
    pub layout: wgpu::BindGroupLayout,
    /// `entry (module)` with its specialisation, for profiles and graphs.
    pub label: String,
}

/// The bindings a module declares: its storage buffers (name, binding
/// number, and whether it is writable: `var<storage, read_write>`), and the
/// size of its uniform at binding 0, if it has one.
pub(crate) struct Interface {
    pub bindings: Vec<(String, u32, bool)>,
    pub uniform: Option<u32>,
}

impl Interface {
    fn of(source: &Source) -> Interface {
        match source {
            Source::Dynamic(d) => Interface::read(&d.module),
            Source::Builtin(s) => match naga::front::wgsl::parse_str(s.source()) {
                Ok(module) => Interface::read(&module),
                Err(_) => Interface { bindings: Vec::new(), uniform: None },
            },
        }
    }

    fn read(module: &naga::Module) -> Interface {
        let bindings = module
            .global_variables
            .iter()
            .filter_map(|(_, g)| {
                let naga::AddressSpace::Storage { access } = g.space else { return None };
                let b = g.binding.as_ref()?;
                Some((g.name.clone().unwrap_or_default(), b.binding, access.contains(naga::StorageAccess::STORE)))
            })
            .collect();
        let mut layouter = naga::proc::Layouter::default();
        let sized = layouter.update(module.to_ctx()).is_ok();
        let uniform = module
            .global_variables
            .iter()
            .find(|(_, g)| g.space == naga::AddressSpace::Uniform && g.binding.as_ref().is_some_and(|b| b.binding == 0))
            .map(|(_, g)| if sized { layouter[g.ty].size } else { 0 });
        Interface { bindings, uniform }
    }

    /// The binding number of the variable `name`.
    #[track_caller]
    pub fn binding(&self, name: &str, module: &str) -> u32 {
        match self.bindings.iter().find(|b| b.0 == name) {
            Some(b) => b.1,
            None => panic!("wgrad: internal error: {module} declares no binding named `{name}`"),
        }
    }

    /// Is binding `number` written? (unknown bindings: assume so)
    pub fn writes(&self, number: u32) -> bool {
        self.bindings.iter().find(|b| b.1 == number).is_none_or(|b| b.2)
    }
}

/// Generated modules by source text (`None`: failed validation).
type Generated = Mutex<HashMap<String, Option<Arc<DynamicShader>>>>;

#[derive(Default)]
pub(super) struct Caches {
    modules: Mutex<HashMap<Source, wgpu::ShaderModule>>,
    pipelines: Mutex<HashMap<Kernel, Arc<Pipeline>>>,
    interfaces: Mutex<HashMap<Source, Arc<Interface>>>,
    generated: Generated,
}

impl DeviceInner {
    /// The storage bindings `source` declares, parsed once per module.
    pub(crate) fn interface(&self, source: &Source) -> Arc<Interface> {
        let mut cache = self.caches.interfaces.lock().unwrap_or_else(|p| p.into_inner());
        cache.entry(source.clone()).or_insert_with(|| Arc::new(Interface::of(source))).clone()
    }

    /// `bindings` by the names `kernel`'s module gives them, as numbers.
    #[track_caller]
    pub(crate) fn bind<B>(
        &self,
        kernel: &Kernel,
        bindings: impl IntoIterator<Item = (impl AsRef<str>, B)>,
    ) -> Vec<(u32, B)> {
        let interface = self.interface(&kernel.source);
        bindings.into_iter().map(|(name, b)| (interface.binding(name.as_ref(), kernel.source.label()), b)).collect()
    }

    /// The module of a generated kernel, validated once per source text
    /// (`None` if it fails validation).
    pub(crate) fn generated_shader(&self, label: &str, wgsl: &str, subgroups: bool) -> Option<Arc<DynamicShader>> {
        let mut cache = self.caches.generated.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = cache.get(wgsl) {
            return s.clone();
        }
        let shader = DynamicShader::new(label, wgsl, subgroups)
            .map_err(|e| eprintln!("wgrad: the generated kernel `{label}` failed validation:\n{e}"))
            .ok();
        cache.insert(wgsl.to_string(), shader.clone());
        shader
    }

    /// The cached pipeline for `kernel`, built on first use.
    pub(crate) fn pipeline(&self, kernel: &Kernel) -> Arc<Pipeline> {
        // The GL turn before the cache's lock: a flush holds its turn while
        // it prepares nodes, which builds their pipelines (the other order
        // deadlocks two threads, one flushing, one building a pipeline).
        let _turn = self.gl_turn();
        let mut cache = self.caches.pipelines.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = cache.get(kernel) {
            return p.clone();
        }
        let mut modules = self.caches.modules.lock().unwrap_or_else(|p| p.into_inner());
        let module = modules.entry(kernel.source.clone()).or_insert_with(|| {
            let source = match &kernel.source {
                // (the browser's WebGPU takes WGSL only)
                #[cfg(not(target_arch = "wasm32"))]
                Source::Dynamic(d) => wgpu::ShaderSource::Naga(std::borrow::Cow::Owned(d.module.clone())),
                s => wgpu::ShaderSource::Wgsl(s.wgsl().into()),
            };
            self.device
                .create_shader_module(wgpu::ShaderModuleDescriptor { label: Some(kernel.source.label()), source })
        });
        let constants: Vec<(&str, f64)> = kernel.constants.iter().map(|&(k, v)| (k, v as f64)).collect();
        let pipeline = self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(&kernel.entry),
            layout: None,
            module,
            entry_point: Some(&kernel.entry),
            compilation_options: wgpu::PipelineCompilationOptions { constants: &constants, ..Default::default() },
            cache: None,
        });
        let layout = pipeline.get_bind_group_layout(0);
        self.stats.pipelines.fetch_add(1, Ordering::Relaxed);
        let p = Arc::new(Pipeline { pipeline, layout, label: kernel.label() });
        cache.insert(kernel.clone(), p.clone());
        p
    }
}
