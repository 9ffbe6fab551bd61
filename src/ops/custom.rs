//! Users' own primitives: WGSL kernels of their own, and ops whose forward
//! and backward they define (with their kernels or with wgrad's ops).

use std::sync::Arc;

use crate::autograd::{Primitive, transposed_jvp};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::ops::layout::dense_from_zero;
use crate::ops::{apply, same_device};
use crate::runtime::{Device, DynamicShader, Kernel};
use crate::tensor::Tensor;

/// A compute kernel written in WGSL by the user, validated by naga when made.
///
/// Binding convention, all in `@group(0)`: `@binding(0)` a uniform with the
/// `params` bytes (omit it when there are none), `@binding(1)` … `@binding(n)`
/// the inputs as read-only storage arrays (contiguous, 32-bit elements), and
/// `@binding(n + 1)` the output as a read-write storage array.
///
/// ```
/// use wgrad::{CustomKernel, DType, Device, Tensor};
/// # let dev = Device::new()?;
/// let cube = CustomKernel::new(&dev, "cube", "
///     @group(0) @binding(1) var<storage, read> x: array<f32>;
///     @group(0) @binding(2) var<storage, read_write> y: array<f32>;
///     @compute @workgroup_size(64)
///     fn main(@builtin(global_invocation_id) id: vec3<u32>) {
///         if id.x < arrayLength(&y) { y[id.x] = x[id.x] * x[id.x] * x[id.x]; }
///     }", "main")?;
/// let x = Tensor::from_slice(&dev, &[1.0f32, 2.0, 3.0], &[3]);
/// let y = cube.launch(&[&x], &[3], DType::F32, &[], [1, 1, 1]);
/// assert_eq!(y.to_vec::<f32>()?, vec![1.0, 8.0, 27.0]);
/// # Ok::<(), wgrad::Error>(())
/// ```
#[derive(Clone)]
pub struct CustomKernel {
    device: Device,
    kernel: Kernel,
    name: String,
}

impl CustomKernel {
    /// Compiles `wgsl` (entry point `entry`) for `device`; invalid WGSL is
    /// an [`Error::Shader`] naming the line.
    pub fn new(device: &Device, name: &str, wgsl: &str, entry: &str) -> Result<CustomKernel> {
        let subgroups = device.features().contains(wgpu::Features::SUBGROUP);
        let shader = DynamicShader::new(name, wgsl, subgroups)
            .map_err(|message| Error::Shader { name: name.to_string(), message })?;
        Ok(CustomKernel { device: device.clone(), kernel: Kernel::dynamic(shader, entry), name: name.to_string() })
    }

    /// Records one dispatch of `workgroups` over `inputs`, returning a new
    /// contiguous output of `shape` and `dtype`.
    ///
    /// The kernel itself has no gradient: call it from the forward or the
    /// backward of a [`CustomOp`], which differentiation treats as a primitive.
    #[track_caller]
    pub fn launch(
        &self,
        inputs: &[&Tensor],
        shape: &[usize],
        dtype: DType,
        params: &[u8],
        workgroups: [u32; 3],
    ) -> Tensor {
        same_device(&self.name, inputs);
        if inputs.iter().any(|t| !t.device().same(&self.device)) {
            panic!("wgrad: {}: inputs live on another device than the kernel", self.name);
        }
        if inputs.iter().any(|t| t.traced().is_some()) {
            panic!(
                "wgrad: {}: a custom kernel has no gradient of its own; launch it inside a CustomOp \
                 (if this is the backward kernel of a CustomOp, that op is not twice differentiable: \
                 write its backward with wgrad ops instead)",
                self.name
            );
        }
        self.check(inputs.len(), params, workgroups);
        // kernels index their bindings from element 0 with no strides
        let dense: Vec<Tensor> = inputs.iter().map(|t| dense_from_zero(t)).collect();
        let out = Tensor::empty(&self.device, "custom kernel", shape, dtype);
        let mut bindings: Vec<_> = dense.iter().enumerate().map(|(i, t)| (i as u32 + 1, t.storage())).collect();
        bindings.push((dense.len() as u32 + 1, out.storage()));
        self.device.inner.record_numbered(&self.kernel, &bindings, params, workgroups);
        out
    }
}

impl CustomKernel {
    /// Panics unless the kernel declares what a launch binds: inputs at
    /// bindings 1..=n and the output at n + 1, a uniform at binding 0 as
    /// large as `params` if there are any, and a grid within the adapter's
    /// limits. (Else the launch would reach the GPU and fail there.)
    #[track_caller]
    fn check(&self, n: usize, params: &[u8], workgroups: [u32; 3]) {
        let interface = self.device.inner.interface(&self.kernel.source);
        let mut declared: Vec<u32> = interface.bindings.iter().map(|b| b.1).collect();
        declared.sort_unstable();
        let wanted: Vec<u32> = (1..=n as u32 + 1).collect();
        if declared != wanted {
            let takes = match declared.iter().enumerate().all(|(i, &b)| b == i as u32 + 1) {
                true => format!(
                    "{} input{}, then the output",
                    declared.len().saturating_sub(1),
                    if declared.len() == 2 { "" } else { "s" }
                ),
                false => "not inputs at 1..=n and the output at n + 1".into(),
            };
            panic!(
                "wgrad: {}: launched with {n} input{}, but the kernel declares storage bindings {declared:?} ({takes})",
                self.name,
                if n == 1 { "" } else { "s" },
            );
        }
        match interface.uniform {
            None if !params.is_empty() => {
                panic!(
                    "wgrad: {}: {} bytes of params, but the kernel declares no uniform at binding 0",
                    self.name,
                    params.len()
                )
            }
            Some(size) if (params.len() as u32) < size => panic!(
                "wgrad: {}: {} bytes of params for a uniform of {size} bytes at binding 0",
                self.name,
                params.len()
            ),
            _ => {}
        }
        let most = self.device.limits().max_compute_workgroups_per_dimension;
        if workgroups.iter().any(|&w| w > most) {
            panic!("wgrad: {}: {workgroups:?} workgroups, more than the adapter's {most} per dimension", self.name);
        }
    }
}

/// A primitive defined by the user: a forward (typically one
/// [`CustomKernel`] launch) and its VJP. Run it with [`Tensor::custom`];
/// check it with [`gradcheck`](crate::gradcheck).
pub trait CustomOp: Send + Sync + 'static {
    /// Name for messages.
    fn name(&self) -> &str;
    /// The output, from inputs that are not being traced.
    fn forward(&self, inputs: &[&Tensor]) -> Tensor;
    /// Gradients of the inputs from the output's gradient `g`, one entry per
    /// input (`None`: no gradient). Written with wgrad ops it is itself
    /// differentiable; with a custom kernel it is not (grad of grad panics).
    fn vjp(&self, g: &Tensor, inputs: &[&Tensor], output: &Tensor) -> Vec<Option<Tensor>>;
    /// The output's tangent from the inputs' tangents (`None`: zero), for
    /// forward mode ([`jvp`](crate::jvp)). The default reads it off `vjp`,
    /// which must then be written with wgrad ops: the VJP is linear in its
    /// cotangent u, so J·t is the gradient of ⟨vjp(u), t⟩ with respect to
    /// u (at the cost of the VJP and its backward pass).
    fn jvp(&self, tangents: &[Option<&Tensor>], inputs: &[&Tensor], output: &Tensor) -> Option<Tensor> {
        transposed_jvp(|u| self.vjp(u, inputs, output), tangents, inputs, output)
    }
}

/// A user's op, as the tape sees it: a primitive like any other.
#[derive(Clone)]
struct UserOp(Arc<dyn CustomOp>);

impl std::fmt::Debug for UserOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Custom({})", self.0.name())
    }
}

impl Primitive for UserOp {
    fn name(&self) -> &'static str {
        "custom op"
    }

    fn forward(&self, inputs: &[&Tensor]) -> Tensor {
        self.0.forward(inputs)
    }

    fn vjp(&self, g: &Tensor, inputs: &[&Tensor], y: &Tensor, _needs: &[bool]) -> Vec<Option<Tensor>> {
        self.0.vjp(g, inputs, y)
    }

    fn jvp(&self, t: &[Option<&Tensor>], inputs: &[&Tensor], y: &Tensor) -> Option<Tensor> {
        self.0.jvp(t, inputs, y)
    }
}

impl Tensor {
    /// Applies a user-defined primitive to `inputs`: differentiation calls
    /// its `vjp` instead of looking inside its forward.
    #[track_caller]
    pub fn custom(op: Arc<dyn CustomOp>, inputs: &[&Tensor]) -> Tensor {
        same_device(op.name(), inputs);
        apply(UserOp(op), inputs)
    }
}
