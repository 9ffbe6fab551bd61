//! Checkpoints in the safetensors format (read by PyTorch, candle and burn):
//! any [`Params`] structure, keyed by its tensor names (`layers.0.w`), and
//! optionally an optimizer's state (`optimizer.<name>.<slot>` and the step
//! counter `optimizer.t`). Writes are atomic; loads check every name, shape
//! and dtype against the structure they fill.

use std::collections::HashMap;

use crate::autograd::Params;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::optim::Optimizer;
use crate::tensor::Tensor;

const RULE_KEY: &str = "wgrad.optimizer.rule";

fn st_dtype(d: DType) -> safetensors::Dtype {
    match d {
        DType::F32 => safetensors::Dtype::F32,
        DType::I32 => safetensors::Dtype::I32,
        DType::U32 => safetensors::Dtype::U32,
    }
}

fn optimizer_name(param: &str, slot: usize) -> String {
    format!("optimizer.{param}.{slot}")
}

/// Serialises `params` (and `optimizer`'s state) to safetensors bytes. Reads
/// every tensor back from the GPU.
pub async fn to_bytes<P: Params>(params: &P, optimizer: Option<&Optimizer>) -> Result<Vec<u8>> {
    let mut entries: Vec<(String, Tensor)> = params.named_tensors().into_iter().map(|(n, t)| (n, t.detach())).collect();
    let mut metadata = HashMap::new();
    if let Some(opt) = optimizer {
        let names: Vec<String> = params.named_tensors().into_iter().map(|(n, _)| n).collect();
        if opt.state().len() != names.len() {
            return Err(Error::Format(format!(
                "checkpoint: the optimizer holds state for {} tensors but the parameters have {}",
                opt.state().len(),
                names.len()
            )));
        }
        for (name, slots) in names.iter().zip(opt.state()) {
            for (k, s) in slots.iter().enumerate() {
                if let Some(s) = s {
                    entries.push((optimizer_name(name, k), s.clone()));
                }
            }
        }
        if let Some(t) = opt.step_counter() {
            entries.push(("optimizer.t".to_string(), t.clone()));
        }
        metadata.insert(RULE_KEY.to_string(), format!("{:?}", opt.rule()));
    }
    let mut seen = std::collections::HashSet::new();
    for (name, _) in &entries {
        if !seen.insert(name.as_str()) {
            return Err(Error::Format(format!("checkpoint: two tensors are named {name:?}")));
        }
    }
    let mut data = Vec::with_capacity(entries.len());
    for (_, t) in &entries {
        let bytes: Vec<u8> = match t.dtype() {
            DType::F32 => bytemuck::cast_slice(&t.to_vec_async::<f32>().await?).to_vec(),
            DType::I32 => bytemuck::cast_slice(&t.to_vec_async::<i32>().await?).to_vec(),
            DType::U32 => bytemuck::cast_slice(&t.to_vec_async::<u32>().await?).to_vec(),
        };
        data.push(bytes);
    }
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = entries
        .iter()
        .zip(&data)
        .map(|((name, t), bytes)| {
            let view = safetensors::tensor::TensorView::new(st_dtype(t.dtype()), t.shape().to_vec(), bytes)
                .map_err(|e| Error::Format(format!("checkpoint: {name}: {e}")))?;
            Ok((name.clone(), view))
        })
        .collect::<Result<_>>()?;
    safetensors::serialize(views, Some(metadata)).map_err(|e| Error::Format(format!("checkpoint: {e}")))
}

/// Rebuilds a structure like `like` (same names, shapes and dtypes, on its
/// device) from safetensors bytes, and restores `optimizer`'s state if given.
pub fn from_bytes<P: Params>(bytes: &[u8], like: &P, optimizer: Option<&mut Optimizer>) -> Result<P> {
    let file = safetensors::SafeTensors::deserialize(bytes)
        .map_err(|e| Error::Format(format!("checkpoint: not a valid safetensors file: {e}")))?;
    let names = like.named_tensors();
    let Some((_, first)) = names.first() else {
        return Ok(like.map(|t| t.clone()));
    };
    let device = first.device().clone();
    let read = |name: &str, shape: &[usize], dtype: DType| -> Result<Tensor> {
        let view = file.tensor(name).map_err(|_| {
            Error::Format(format!("checkpoint: no tensor {name:?} (expected {dtype} of shape {shape:?})"))
        })?;
        if view.shape() != shape || view.dtype() != st_dtype(dtype) {
            return Err(Error::Format(format!(
                "checkpoint: {name:?} is {:?} of shape {:?}, expected {dtype} of shape {shape:?}",
                view.dtype(),
                view.shape()
            )));
        }
        let data = view.data();
        Ok(match dtype {
            DType::F32 => Tensor::from_slice(&device, &bytemuck::pod_collect_to_vec::<u8, f32>(data), shape),
            DType::I32 => Tensor::from_slice(&device, &bytemuck::pod_collect_to_vec::<u8, i32>(data), shape),
            DType::U32 => Tensor::from_slice(&device, &bytemuck::pod_collect_to_vec::<u8, u32>(data), shape),
        })
    };
    let mut expected: std::collections::HashSet<String> = names.iter().map(|(n, _)| n.clone()).collect();
    let mut loaded = Vec::with_capacity(names.len());
    for (name, t) in &names {
        loaded.push(read(name, t.shape(), t.dtype())?);
    }
    let restoring = optimizer.is_some();
    if let Some(opt) = optimizer {
        let t = read("optimizer.t", &[1], DType::F32)
            .map_err(|_| Error::Format("checkpoint: holds no optimizer state".into()))?;
        expected.insert("optimizer.t".to_string());
        let slots = opt.slots();
        let mut state = Vec::with_capacity(names.len());
        for (name, t) in &names {
            let mut entry: [Option<Tensor>; 2] = [None, None];
            for (k, e) in entry.iter_mut().enumerate().take(slots) {
                let key = optimizer_name(name, k);
                *e = Some(read(&key, t.shape(), DType::F32)?);
                expected.insert(key);
            }
            state.push(entry);
        }
        let (s, counter) = opt.state_mut();
        *s = state;
        *counter = Some(t);
    }
    let extra: Vec<String> = file.names().into_iter().filter(|n| !expected.contains(*n)).map(str::to_string).collect();
    // a model-only load of a training checkpoint ignores the optimizer state
    let extra: Vec<&String> = extra.iter().filter(|n| restoring || !n.starts_with("optimizer.")).collect();
    if !extra.is_empty() {
        return Err(Error::Format(format!("checkpoint: tensors {extra:?} have no place in the parameters")));
    }
    Ok(like.rebuild(&mut loaded.into_iter()))
}

/// Writes a checkpoint atomically: to a temporary file in the same folder,
/// flushed to disk, then renamed over `path`. A crash leaves either the old
/// file or the new one, never half of one.
#[cfg(not(target_arch = "wasm32"))]
pub fn save<P: Params>(path: impl AsRef<std::path::Path>, params: &P, optimizer: Option<&Optimizer>) -> Result<()> {
    use std::io::Write;
    let path = path.as_ref();
    let bytes = pollster::block_on(to_bytes(params, optimizer))?;
    let io = |e: std::io::Error| Error::Io(format!("{}: {e}", path.display()));
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    let name = path.file_name().ok_or_else(|| Error::Io(format!("{}: not a file path", path.display())))?;
    let tmp = dir.join(format!(".{}.{}.tmp", name.to_string_lossy(), std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io)
}

/// Loads a checkpoint written by [`save`] into a structure like `like`.
#[cfg(not(target_arch = "wasm32"))]
pub fn load<P: Params>(path: impl AsRef<std::path::Path>, like: &P, optimizer: Option<&mut Optimizer>) -> Result<P> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| Error::Io(format!("{}: {e}", path.display())))?;
    from_bytes(&bytes, like, optimizer).map_err(|e| match e {
        Error::Format(m) => Error::Format(format!("{}: {m}", path.display())),
        other => other,
    })
}
