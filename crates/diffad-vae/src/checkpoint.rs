//! Strict, atomic safetensors I/O for the variables of a `VarMap`.
//!
//! Loading checks every tensor of the file against the variables of the model by name
//! and shape *before* changing anything, and reports all problems at once: tensors the
//! model needs but the file lacks (`missing`), tensors the file has but the model does not
//! (`unexpected`), and tensors whose shapes differ (`wrong_shape`). A truncated or corrupt
//! file (bad header, offsets past the end) is a [`Error::CorruptFile`]. Tensors stored in
//! another float dtype (e.g. an `f16` Stable Diffusion VAE) are converted.
//!
//! Saving writes `path.tmp` and renames it over `path`, so an interrupted save never
//! leaves a half-written file under the real name.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;

use crate::error::{Error, Result};

/// Why a weights file does not fit a model (all lists sorted by name).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WeightsMismatch {
    /// Tensors the model needs that the file lacks.
    pub missing: Vec<String>,
    /// Tensors in the file that the model does not have.
    pub unexpected: Vec<String>,
    /// `(name, model shape, file shape)` of tensors whose shapes differ.
    pub wrong_shape: Vec<(String, Vec<usize>, Vec<usize>)>,
}

impl WeightsMismatch {
    /// Whether nothing is wrong.
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty() && self.wrong_shape.is_empty()
    }
}

impl fmt::Display for WeightsMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if !self.missing.is_empty() {
            parts.push(format!("missing [{}]", self.missing.join(", ")));
        }
        if !self.unexpected.is_empty() {
            parts.push(format!("unexpected [{}]", self.unexpected.join(", ")));
        }
        if !self.wrong_shape.is_empty() {
            let shapes: Vec<String> = self
                .wrong_shape
                .iter()
                .map(|(n, want, got)| format!("{n}: model {want:?}, file {got:?}"))
                .collect();
            parts.push(format!("wrong shape [{}]", shapes.join("; ")));
        }
        write!(f, "{}", parts.join("; "))
    }
}

fn candle_dtype(dtype: safetensors::Dtype) -> Option<DType> {
    use safetensors::Dtype as S;
    Some(match dtype {
        S::F32 => DType::F32,
        S::F16 => DType::F16,
        S::BF16 => DType::BF16,
        S::F64 => DType::F64,
        S::U8 => DType::U8,
        S::U32 => DType::U32,
        S::I64 => DType::I64,
        _ => return None,
    })
}

/// Reads every tensor of a safetensors file onto `device`, keeping the stored dtype.
///
/// Errors: [`Error::Io`] when the file cannot be read, [`Error::CorruptFile`] when it is
/// not a valid safetensors file or holds a dtype Candle cannot represent.
pub fn read_safetensors(path: &Path, device: &Device) -> Result<BTreeMap<String, Tensor>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let corrupt = |reason: String| Error::CorruptFile {
        path: path.to_path_buf(),
        reason,
    };
    let file = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| corrupt(e.to_string()))?;
    let mut out = BTreeMap::new();
    for (name, view) in file.iter() {
        let dtype = candle_dtype(view.dtype()).ok_or_else(|| {
            corrupt(format!(
                "tensor {name} has unsupported dtype {:?}",
                view.dtype()
            ))
        })?;
        let tensor = Tensor::from_raw_buffer(view.data(), dtype, view.shape(), &Device::Cpu)
            .map_err(|e| corrupt(format!("tensor {name}: {e}")))?
            .to_device(device)?;
        out.insert(name.to_string(), tensor);
    }
    Ok(out)
}

/// Loads a safetensors file into the variables of `varmap`, strictly: the file must hold
/// exactly the map's variables with the same shapes (see the module doc), otherwise
/// [`Error::WeightsMismatch`] lists every difference and no variable is changed.
/// Values are converted to each variable's dtype and device; non-finite values are a
/// [`Error::CorruptFile`].
pub fn load_varmap(varmap: &VarMap, path: &Path) -> Result<()> {
    let data = varmap
        .data()
        .lock()
        .map_err(|_| Error::Config("VarMap lock poisoned".into()))?;
    let file = read_safetensors(path, &Device::Cpu)?;
    let mut mismatch = WeightsMismatch::default();
    for (name, var) in data.iter() {
        match file.get(name) {
            None => mismatch.missing.push(name.clone()),
            Some(t) if t.dims() != var.dims() => {
                mismatch
                    .wrong_shape
                    .push((name.clone(), var.dims().to_vec(), t.dims().to_vec()))
            }
            Some(_) => {}
        }
    }
    mismatch.unexpected = file
        .keys()
        .filter(|k| !data.contains_key(*k))
        .cloned()
        .collect();
    mismatch.missing.sort();
    mismatch.wrong_shape.sort();
    if !mismatch.is_empty() {
        return Err(Error::WeightsMismatch {
            path: path.to_path_buf(),
            mismatch,
        });
    }
    // Convert everything first so a bad value leaves the model untouched.
    let mut converted = Vec::with_capacity(data.len());
    for (name, var) in data.iter() {
        let t = &file[name];
        if t.dtype().is_float() {
            let finite = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
            if finite.iter().any(|v| !v.is_finite()) {
                return Err(Error::CorruptFile {
                    path: path.to_path_buf(),
                    reason: format!("tensor {name} has non-finite values"),
                });
            }
        }
        converted.push((var, t.to_dtype(var.dtype())?.to_device(var.device())?));
    }
    for (var, t) in converted {
        var.set(&t)?;
    }
    Ok(())
}

/// The path `path` with `.tmp` appended, where atomic writes go first.
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}

/// Writes named tensors to a safetensors file atomically (`path.tmp`, then rename).
pub fn save_tensors(tensors: &HashMap<String, Tensor>, path: &Path) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let tmp = tmp_path(path);
    candle_core::safetensors::save(tensors, &tmp)?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// Saves every variable of `varmap` to `path` atomically.
pub fn save_varmap(varmap: &VarMap, path: &Path) -> Result<()> {
    let tensors: HashMap<String, Tensor> = {
        let data = varmap
            .data()
            .lock()
            .map_err(|_| Error::Config("VarMap lock poisoned".into()))?;
        data.iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
            .collect()
    };
    save_tensors(&tensors, path)
}

/// Writes a JSON value atomically (`path.tmp`, then rename).
pub fn save_json<T: serde::Serialize>(value: &T, path: &Path) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|source| Error::Json {
        path: path.to_path_buf(),
        source,
    })?;
    let tmp = tmp_path(path);
    std::fs::write(&tmp, text).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// Reads a JSON value, naming the file in any error.
pub fn load_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|source| Error::Json {
        path: path.to_path_buf(),
        source,
    })
}
