//! What a compiled step can show of itself: each kernel's GPU time, and
//! the graph of its dispatches.

use super::program::Program;
use crate::autograd::Params;
use crate::error::Result;
use crate::runtime::{Access, Command, Device, Node, access, encode};
use crate::tensor::Tensor;

impl<O> Program<O> {
    /// Replays the dispatches (state untouched: no inputs, no write-back)
    /// with timestamps, one compute pass per dispatch.
    pub(super) async fn profile(&self) -> Result<Vec<(String, f64)>> {
        let inner = &self.device.inner;
        if !inner.features.contains(wgpu::Features::TIMESTAMP_QUERY) {
            return Err(crate::Error::Gpu("this adapter offers no timestamp queries".into()));
        }
        let labels: Vec<String> = self
            .prepared
            .commands
            .iter()
            .filter_map(|c| match c {
                Command::Dispatch { pipeline, .. } => Some(pipeline.label.clone()),
                Command::Copy { .. } => None,
            })
            .collect();
        if labels.is_empty() {
            return Ok(Vec::new());
        }
        let n = labels.len() as u32 * 2;
        let turn = inner.gl_turn();
        let queries = inner.device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("profile"),
            ty: wgpu::QueryType::Timestamp,
            count: n,
        });
        let resolve = inner.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("profile resolve"),
            size: n as u64 * 8,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let read = inner.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("profile read"),
            size: n as u64 * 8,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = inner.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("profile") });
        encode(&mut enc, &self.prepared.commands, Some(&queries));
        enc.resolve_query_set(&queries, 0..n, &resolve, 0);
        enc.copy_buffer_to_buffer(&resolve, 0, &read, 0, n as u64 * 8);
        inner.queue.submit([enc.finish()]);
        let (tx, rx) = futures::channel::oneshot::channel();
        read.slice(..).map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        inner.device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| crate::Error::Gpu(e.to_string()))?;
        drop(turn);
        rx.await
            .map_err(|_| crate::Error::Gpu("profile read-back cancelled".into()))?
            .map_err(|e| crate::Error::Gpu(e.to_string()))?;
        let ticks: Vec<u64> = bytemuck::pod_collect_to_vec(
            &read.slice(..).get_mapped_range().map_err(|e| crate::Error::Gpu(e.to_string()))?,
        );
        let period = inner.queue.get_timestamp_period() as f64;
        Ok(labels
            .into_iter()
            .enumerate()
            .map(|(i, l)| (l, ticks[2 * i + 1].saturating_sub(ticks[2 * i]) as f64 * period / 1000.0))
            .collect())
    }
}

/// Graphviz DOT of a program: inputs, state and outputs as ellipses,
/// dispatches as boxes, edges from the last writer of each buffer read.
pub(super) fn graph_dot<O: Params>(
    device: &Device,
    nodes: &[Node],
    slots: &[Tensor],
    state: &[Tensor],
    outputs: &O,
) -> String {
    use std::fmt::Write;
    let mut s = String::from("digraph step {\n  node [shape=box, fontname=\"monospace\", fontsize=10];\n");
    let mut writer: Vec<(wgpu::Buffer, String)> = Vec::new();
    let set =
        |w: &mut Vec<(wgpu::Buffer, String)>, b: &wgpu::Buffer, name: String| match w.iter_mut().find(|e| e.0 == *b) {
            Some(e) => e.1 = name,
            None => w.push((b.clone(), name)),
        };
    for (i, t) in slots.iter().enumerate() {
        let _ = writeln!(s, "  in{i} [shape=ellipse, label=\"input {i}\\n{:?}\"];", t.shape());
        set(&mut writer, t.storage().buffer(), format!("in{i}"));
    }
    for (i, t) in state.iter().enumerate() {
        let _ = writeln!(s, "  st{i} [shape=ellipse, label=\"state {i}\\n{:?}\"];", t.shape());
        set(&mut writer, t.storage().buffer(), format!("st{i}"));
    }
    for (k, n) in nodes.iter().enumerate() {
        let label = match n {
            Node::Dispatch { kernel, .. } => kernel.label().replace('"', "'"),
            Node::Upload { .. } => "constant upload".to_string(),
        };
        let _ = writeln!(s, "  n{k} [label=\"{label}\"];");
        let Access { reads, writes } = access(&device.inner, n);
        let mut from: Vec<&str> = Vec::new();
        for b in &reads {
            if let Some(e) = writer.iter().find(|e| e.0 == *b) {
                if !from.contains(&e.1.as_str()) {
                    let _ = writeln!(s, "  {} -> n{k};", e.1);
                    from.push(&e.1);
                }
            }
        }
        for b in &writes {
            set(&mut writer, b, format!("n{k}"));
        }
    }
    let mut i = 0;
    outputs.visit(&mut |t| {
        let _ = writeln!(s, "  out{i} [shape=ellipse, label=\"output {i}\\n{:?}\"];", t.shape());
        if let Some(e) = writer.iter().find(|e| e.0 == *t.storage().buffer()) {
            let _ = writeln!(s, "  {} -> out{i};", e.1);
        }
        i += 1;
    });
    s.push_str("}\n");
    s
}
