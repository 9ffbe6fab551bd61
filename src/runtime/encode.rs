//! The one routine that turns recorded nodes into GPU commands, for the
//! eager flush and for compiled steps alike: [`DeviceInner::prepare`] packs
//! the nodes' uniforms into one buffer and builds each dispatch's bind
//! group; [`encode`] records the commands, each run of dispatches in one
//! compute pass. A flush prepares and encodes its nodes once; a compiled
//! step prepares once and encodes on every replay.

use std::num::NonZeroU64;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::DeviceInner;
use super::node::Node;
use super::pipelines::Pipeline;
use super::pool::{BufferClass, Storage};

/// A command ready to encode.
pub(crate) enum Command {
    Dispatch {
        pipeline: Arc<Pipeline>,
        bind_group: wgpu::BindGroup,
        groups: [u32; 3],
    },
    /// A buffer-to-buffer copy (uploads of host data).
    Copy {
        src: wgpu::Buffer,
        dst: wgpu::Buffer,
        size: u64,
    },
}

/// Nodes made commands, with what the commands need kept alive.
pub(crate) struct Prepared {
    pub commands: Vec<Command>,
    /// The nodes' uniforms, each at an offset of its own.
    pub uniforms: Option<Arc<Storage>>,
    /// Offsets in `uniforms` of the random kernels' parameters (renewed on
    /// every replay of a compiled step).
    pub random: Vec<u64>,
    /// Host data that uploads copy from (kept alive with the commands).
    pub _staging: Vec<Arc<Storage>>,
}

impl Prepared {
    /// Dispatches among the commands.
    pub fn dispatches(&self) -> usize {
        self.commands.iter().filter(|c| matches!(c, Command::Dispatch { .. })).count()
    }
}

impl DeviceInner {
    /// Packs the uniforms of `nodes` into one buffer (written now) and
    /// builds every dispatch's pipeline (or takes it from the cache) and
    /// bind group.
    pub(crate) fn prepare(self: &Arc<Self>, nodes: &[Node]) -> Prepared {
        let align = self.limits.min_uniform_buffer_offset_alignment as usize;
        let mut bytes: Vec<u8> = Vec::new();
        let mut offsets = Vec::with_capacity(nodes.len());
        let mut random = Vec::new();
        for n in nodes {
            if let Node::Dispatch { uniform, random: r, .. } = n {
                bytes.resize(bytes.len().next_multiple_of(align), 0);
                offsets.push(bytes.len() as u64);
                if *r {
                    random.push(bytes.len() as u64);
                }
                bytes.extend_from_slice(uniform);
            } else {
                offsets.push(0);
            }
        }
        let uniforms = (!bytes.is_empty()).then(|| {
            let u = self.alloc(BufferClass::Uniform, bytes.len() as u64);
            self.queue.write_buffer(u.buffer(), 0, &bytes);
            u
        });
        let mut commands = Vec::with_capacity(nodes.len());
        let mut staging = Vec::new();
        for (n, offset) in nodes.iter().zip(offsets) {
            match n {
                Node::Dispatch { kernel, bindings, uniform, groups, .. } => {
                    let pipeline = self.pipeline(kernel);
                    let mut entries = Vec::with_capacity(bindings.len() + 1);
                    if let (Some(u), Some(size)) = (&uniforms, NonZeroU64::new(uniform.len() as u64)) {
                        entries.push(wgpu::BindGroupEntry {
                            binding: 0,
                            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                                buffer: u.buffer(),
                                offset,
                                size: Some(size),
                            }),
                        });
                    }
                    if aliases_a_writable_binding(|| self.interface(&kernel.source), bindings) {
                        self.stats.aliased.fetch_add(1, Ordering::Relaxed);
                    }
                    for (binding, buffer) in bindings {
                        entries.push(wgpu::BindGroupEntry { binding: *binding, resource: buffer.as_entire_binding() });
                    }
                    let bind_group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
                        label: None,
                        layout: &pipeline.layout,
                        entries: &entries,
                    });
                    self.stats.bind_groups.fetch_add(1, Ordering::Relaxed);
                    commands.push(Command::Dispatch { pipeline, bind_group, groups: *groups });
                }
                Node::Upload { staging: s, dst, size } => {
                    commands.push(Command::Copy { src: s.buffer().clone(), dst: dst.clone(), size: *size });
                    staging.push(s.clone());
                }
            }
        }
        Prepared { commands, uniforms, random, _staging: staging }
    }
}

/// Encodes `commands`, each run of dispatches in one compute pass; with
/// `timestamps`, each dispatch in a pass of its own, between timestamps
/// 2k and 2k + 1 (the k-th dispatch). Returns the number of dispatches.
pub(crate) fn encode(
    encoder: &mut wgpu::CommandEncoder,
    commands: &[Command],
    timestamps: Option<&wgpu::QuerySet>,
) -> u64 {
    let mut dispatches = 0;
    let mut i = 0;
    while i < commands.len() {
        if let Command::Copy { src, dst, size } = &commands[i] {
            encoder.copy_buffer_to_buffer(src, 0, dst, 0, *size);
            i += 1;
            continue;
        }
        let timestamp_writes = timestamps.map(|query_set| wgpu::ComputePassTimestampWrites {
            query_set,
            beginning_of_pass_write_index: Some(2 * dispatches as u32),
            end_of_pass_write_index: Some(2 * dispatches as u32 + 1),
        });
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: None, timestamp_writes });
        while let Some(Command::Dispatch { pipeline, bind_group, groups }) = commands.get(i) {
            pass.set_pipeline(&pipeline.pipeline);
            pass.set_bind_group(0, bind_group, &[]);
            pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
            dispatches += 1;
            i += 1;
            if timestamps.is_some() {
                break;
            }
        }
    }
    dispatches
}

/// Whether one buffer is bound to a writable binding and to another one
/// (WebGPU forbids it; native backends do not check).
/// (The module's interface is looked up only when a buffer repeats.)
fn aliases_a_writable_binding(
    interface: impl FnOnce() -> std::sync::Arc<super::pipelines::Interface>,
    bindings: &[(u32, wgpu::Buffer)],
) -> bool {
    let pairs = || {
        bindings.iter().enumerate().flat_map(|(i, (b1, buf1))| {
            bindings[i + 1..].iter().filter(move |(_, buf2)| buf1 == buf2).map(move |(b2, _)| (*b1, *b2))
        })
    };
    if pairs().next().is_none() {
        return false;
    }
    let interface = interface();
    pairs().any(|(b1, b2)| interface.writes(b1) || interface.writes(b2))
}
