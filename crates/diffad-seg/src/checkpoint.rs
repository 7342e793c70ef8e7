//! Safetensors files with string metadata, written atomically.
//!
//! Weights are stored under their PyTorch state-dict names (DRAEM's
//! `encoder_segment.block1.0.weight`, ...), so a checkpoint is also a plain
//! weights file. Writes go to `path.tmp` and are renamed into place, so a
//! crash never leaves a half-written checkpoint under the real name.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use safetensors::tensor::{Dtype, TensorView};

use crate::error::{Error, Result};

/// Tensors and string metadata read from a safetensors file.
#[derive(Debug)]
pub struct TensorFile {
    /// Where the file was read from (for error messages).
    pub path: PathBuf,
    /// The tensors by name, as `f32` on the CPU.
    pub tensors: HashMap<String, Tensor>,
    /// The header's `__metadata__` entries.
    pub metadata: HashMap<String, String>,
}

impl TensorFile {
    /// Reads `path`. Tensors stored as F32, F64, F16 or BF16 are converted to
    /// `f32`; integer tensors (e.g. PyTorch's `num_batches_tracked`) are
    /// skipped. A missing, truncated or corrupt file is an error naming it.
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let corrupt = |reason: String| Error::Checkpoint {
            path: path.to_path_buf(),
            reason,
        };
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
            .map_err(|e| corrupt(format!("unreadable safetensors header: {e}")))?;
        let metadata = header.metadata().clone().unwrap_or_default();
        let st = safetensors::SafeTensors::deserialize(&bytes)
            .map_err(|e| corrupt(format!("corrupt or truncated safetensors data: {e}")))?;
        let mut tensors = HashMap::new();
        for (name, view) in st.tensors() {
            let shape = view.shape().to_vec();
            let data = view.data();
            let values: Vec<f32> = match view.dtype() {
                Dtype::F32 => data
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
                Dtype::F64 => data
                    .chunks_exact(8)
                    .map(|b| {
                        f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32
                    })
                    .collect(),
                Dtype::F16 | Dtype::BF16 => {
                    let dt = if view.dtype() == Dtype::F16 {
                        DType::F16
                    } else {
                        DType::BF16
                    };
                    let t = Tensor::from_raw_buffer(data, dt, &shape, &Device::Cpu)?;
                    t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?
                }
                _ => continue,
            };
            tensors.insert(name, Tensor::from_vec(values, shape, &Device::Cpu)?);
        }
        Ok(Self {
            path: path.to_path_buf(),
            tensors,
            metadata,
        })
    }

    /// The tensor `name`, or an error naming the file and the missing key.
    pub fn get(&self, name: &str) -> Result<&Tensor> {
        self.tensors.get(name).ok_or_else(|| Error::Checkpoint {
            path: self.path.clone(),
            reason: format!("missing tensor `{name}`"),
        })
    }

    /// The metadata entry `key`, or an error naming the file and the key.
    pub fn meta(&self, key: &str) -> Result<&str> {
        self.metadata
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| Error::Checkpoint {
                path: self.path.clone(),
                reason: format!("missing metadata entry `{key}`"),
            })
    }
}

/// Writes `tensors` (any float dtype, any device; stored as F32) with
/// `metadata` to `path` atomically (`path.tmp`, then rename).
pub fn write_atomic(
    path: &Path,
    tensors: &BTreeMap<String, Tensor>,
    metadata: HashMap<String, String>,
) -> Result<()> {
    let mut buffers: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let values = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        buffers.push((name.clone(), t.dims().to_vec(), bytes));
    }
    let mut views = Vec::with_capacity(buffers.len());
    for (name, shape, bytes) in &buffers {
        let view =
            TensorView::new(Dtype::F32, shape.clone(), bytes).map_err(|e| Error::Checkpoint {
                path: path.to_path_buf(),
                reason: format!("tensor `{name}`: {e}"),
            })?;
        views.push((name.as_str(), view));
    }
    let serialized =
        safetensors::tensor::serialize(views, Some(metadata)).map_err(|e| Error::Checkpoint {
            path: path.to_path_buf(),
            reason: format!("serialisation failed: {e}"),
        })?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| Error::Io { path: p, source }
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    std::fs::write(&tmp, &serialized).map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))?;
    Ok(())
}
