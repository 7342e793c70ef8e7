//! Strict, atomic safetensors and JSON I/O shared by every trainer.
//!
//! * Writing goes to `path.tmp` first and is then renamed over `path`, so a crash
//!   or a full disk never leaves a half-written checkpoint under the real name
//!   (the previous checkpoint survives).
//! * Reading names the file in every error: unreadable ([`Error::Io`]), truncated or
//!   corrupt ([`Error::Checkpoint`]).
//! * [`load_varmap`] checks every tensor of a file against the variables of a model by
//!   name and shape *before* changing anything, and reports all problems at once as a
//!   [`WeightsMismatch`]: tensors the model needs that the file lacks (`missing`),
//!   tensors the file has that the model does not (`unexpected`), and tensors whose
//!   shapes differ (`wrong_shape`). This is how a diffusers `safetensors` file is
//!   checked against our diffusers-named modules.
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use candle_nn::VarMap;
//! # let dir = std::env::temp_dir().join(format!("diffad-nn-doc-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir).unwrap();
//! let varmap = VarMap::new();
//! let vb = candle_nn::VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
//! let _w = vb.get_with_hints(3, "w", candle_nn::Init::Const(1.5))?;
//! let path = dir.join("weights.safetensors");
//! diffad_nn::checkpoint::save_varmap(&varmap, &path)?;
//! diffad_nn::checkpoint::load_varmap(&varmap, &path)?;
//! let file = diffad_nn::checkpoint::TensorFile::read(&path, &Device::Cpu)?;
//! assert_eq!(file.get("w")?.to_vec1::<f32>()?, vec![1.5; 3]);
//! # std::fs::remove_dir_all(&dir).ok();
//! # Ok::<(), diffad_nn::Error>(())
//! ```

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::safetensors::Load;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;

use crate::error::{Error, Result};

/// Re-exported from [`crate::error`], where it lives beside the [`Error::WeightsMismatch`]
/// variant that carries it.
pub use crate::error::WeightsMismatch;

/// Tensors and string metadata read from a safetensors file.
#[derive(Debug)]
pub struct TensorFile {
    /// Where the file was read from (named in every error).
    pub path: PathBuf,
    /// The tensors by name, in their stored dtype, on the device given to [`TensorFile::read`].
    pub tensors: BTreeMap<String, Tensor>,
    /// The header's `__metadata__` entries.
    pub metadata: HashMap<String, String>,
}

impl TensorFile {
    /// Reads every tensor of `path` onto `device`, keeping the stored dtypes.
    ///
    /// Errors: [`Error::Io`] when the file cannot be read, [`Error::Checkpoint`] when it
    /// is truncated, corrupt or holds a dtype Candle cannot represent.
    pub fn read(path: &Path, device: &Device) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let corrupt = |reason: String| Error::Checkpoint {
            path: path.to_path_buf(),
            reason,
        };
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
            .map_err(|e| corrupt(format!("unreadable safetensors header: {e}")))?;
        let metadata = header.metadata().clone().unwrap_or_default();
        let file = safetensors::SafeTensors::deserialize(&bytes)
            .map_err(|e| corrupt(format!("corrupt or truncated safetensors data: {e}")))?;
        let mut tensors = BTreeMap::new();
        for (name, view) in file.tensors() {
            let tensor = view
                .load(device)
                .map_err(|e| corrupt(format!("tensor `{name}`: {e}")))?;
            tensors.insert(name, tensor);
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

/// The path `path` with `.tmp` appended, where atomic writes go first.
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}

/// Writes `bytes` to `path` atomically: parent folders are created, the bytes go to
/// `path.tmp`, which is then renamed over `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let tmp = tmp_path(path);
    std::fs::write(&tmp, bytes).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// Writes named tensors (any dtype, any device) and optional string metadata to a
/// safetensors file atomically (see [`write_atomic`]).
pub fn save_tensors<'a, I>(
    path: &Path,
    tensors: I,
    metadata: Option<HashMap<String, String>>,
) -> Result<()>
where
    I: IntoIterator<Item = (&'a str, &'a Tensor)>,
{
    let mut cpu = Vec::new();
    for (name, t) in tensors {
        cpu.push((name.to_string(), t.to_device(&Device::Cpu)?.contiguous()?));
    }
    cpu.sort_by(|a, b| a.0.cmp(&b.0));
    let views = cpu.iter().map(|(n, t)| (n.as_str(), t));
    let bytes = safetensors::tensor::serialize(views, metadata).map_err(|e| Error::Checkpoint {
        path: path.to_path_buf(),
        reason: format!("serialisation failed: {e}"),
    })?;
    write_atomic(path, &bytes)
}

fn varmap_tensors(varmap: &VarMap) -> Result<Vec<(String, Tensor)>> {
    let data = varmap
        .data()
        .lock()
        .map_err(|_| Error::config("VarMap", "lock poisoned"))?;
    Ok(data
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect())
}

/// Saves every variable of `varmap` to `path` atomically.
pub fn save_varmap(varmap: &VarMap, path: &Path) -> Result<()> {
    let tensors = varmap_tensors(varmap)?;
    save_tensors(path, tensors.iter().map(|(n, t)| (n.as_str(), t)), None)
}

/// Loads a safetensors file into the variables of `varmap`, strictly: the file must hold
/// exactly the map's variables with the same shapes, otherwise
/// [`Error::WeightsMismatch`] lists every difference and no variable is changed.
/// Values are converted to each variable's dtype and device; non-finite values are an
/// [`Error::Checkpoint`].
pub fn load_varmap(varmap: &VarMap, path: &Path) -> Result<()> {
    let file = TensorFile::read(path, &Device::Cpu)?;
    load_varmap_from(varmap, &file, "", true)
}

/// Like [`load_varmap`], from an already-read file whose tensors for this model are
/// stored under `prefix` (e.g. `"model."`); tensors outside the prefix are ignored.
/// With `strict = false`, tensors under the prefix that the model lacks (optimiser
/// state in a training checkpoint, PyTorch's `num_batches_tracked`) are ignored too;
/// missing and wrongly-shaped tensors are always errors.
pub fn load_varmap_from(
    varmap: &VarMap,
    file: &TensorFile,
    prefix: &str,
    strict: bool,
) -> Result<()> {
    let data = varmap
        .data()
        .lock()
        .map_err(|_| Error::config("VarMap", "lock poisoned"))?;
    let mut mismatch = WeightsMismatch::default();
    for (name, var) in data.iter() {
        match file.tensors.get(&format!("{prefix}{name}")) {
            None => mismatch.missing.push(name.clone()),
            Some(t) if t.dims() != var.dims() => {
                mismatch
                    .wrong_shape
                    .push((name.clone(), var.dims().to_vec(), t.dims().to_vec()))
            }
            Some(_) => {}
        }
    }
    if strict {
        mismatch.unexpected = file
            .tensors
            .keys()
            .filter_map(|k| k.strip_prefix(prefix))
            .filter(|k| !data.contains_key(*k))
            .map(str::to_string)
            .collect();
    }
    mismatch.missing.sort();
    mismatch.wrong_shape.sort();
    if !mismatch.is_empty() {
        return Err(Error::WeightsMismatch {
            path: file.path.clone(),
            mismatch,
        });
    }
    // Convert everything first so that a bad value leaves the model untouched.
    let mut converted = Vec::with_capacity(data.len());
    for (name, var) in data.iter() {
        let t = &file.tensors[&format!("{prefix}{name}")];
        if t.dtype().is_float() {
            let bad = t
                .to_dtype(DType::F32)?
                .flatten_all()?
                .to_vec1::<f32>()?
                .iter()
                .any(|v| !v.is_finite());
            if bad {
                return Err(Error::Checkpoint {
                    path: file.path.clone(),
                    reason: format!("tensor `{prefix}{name}` has non-finite values"),
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

/// Writes a value as pretty JSON atomically (see [`write_atomic`]).
pub fn save_json<T: serde::Serialize>(value: &T, path: &Path) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|source| Error::Json {
        path: path.to_path_buf(),
        source,
    })?;
    write_atomic(path, text.as_bytes())
}

/// Reads a JSON value, naming the file in any error.
pub fn load_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|source| Error::Json {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_nn::{Init, VarBuilder};

    fn model(device: &Device) -> VarMap {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
        vb.get_with_hints((2, 3), "a.weight", Init::Const(0.5))
            .unwrap();
        vb.get_with_hints(3, "a.bias", Init::Const(-1.0)).unwrap();
        varmap
    }

    #[test]
    fn round_trip_and_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/ckpt.safetensors");
        let dev = Device::Cpu;
        let varmap = model(&dev);
        save_varmap(&varmap, &path).unwrap();
        assert!(!tmp_path(&path).exists());
        let other = model(&dev);
        other.data().lock().unwrap()["a.bias"]
            .set(&Tensor::zeros(3, DType::F32, &dev).unwrap())
            .unwrap();
        load_varmap(&other, &path).unwrap();
        let bias = other.data().lock().unwrap()["a.bias"]
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(bias, vec![-1.0; 3]);

        let t = Tensor::new(&[1u32, 2], &dev).unwrap();
        let meta = HashMap::from([("step".to_string(), "7".to_string())]);
        save_tensors(&path, [("n", &t)], Some(meta)).unwrap();
        let file = TensorFile::read(&path, &dev).unwrap();
        assert_eq!(file.meta("step").unwrap(), "7");
        assert_eq!(file.get("n").unwrap().to_vec1::<u32>().unwrap(), vec![1, 2]);
        assert!(matches!(file.meta("nope"), Err(Error::Checkpoint { .. })));
    }

    #[test]
    fn mismatch_lists_every_problem_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        let dev = Device::Cpu;
        let wrong = Tensor::zeros((3, 3), DType::F32, &dev).unwrap();
        let extra = Tensor::zeros(1, DType::F32, &dev).unwrap();
        save_tensors(&path, [("a.weight", &wrong), ("zzz", &extra)], None).unwrap();
        let varmap = model(&dev);
        let err = load_varmap(&varmap, &path).unwrap_err();
        let Error::WeightsMismatch { mismatch, path: p } = err else {
            panic!("expected a mismatch, got {err}");
        };
        assert_eq!(p, path);
        assert_eq!(mismatch.missing, vec!["a.bias".to_string()]);
        assert_eq!(mismatch.unexpected, vec!["zzz".to_string()]);
        assert_eq!(
            mismatch.wrong_shape,
            vec![("a.weight".to_string(), vec![2, 3], vec![3, 3])]
        );
        let w = varmap.data().lock().unwrap()["a.weight"]
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(w, vec![0.5; 6]);
    }

    #[test]
    fn truncated_and_missing_files_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        let dev = Device::Cpu;
        save_varmap(&model(&dev), &path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 5]).unwrap();
        let err = load_varmap(&model(&dev), &path).unwrap_err();
        assert!(
            matches!(&err, Error::Checkpoint { path: p, .. } if p == &path),
            "{err}"
        );
        std::fs::write(&path, b"not a safetensors file").unwrap();
        assert!(matches!(
            TensorFile::read(&path, &dev),
            Err(Error::Checkpoint { .. })
        ));
        let gone = dir.path().join("absent.safetensors");
        let err = TensorFile::read(&gone, &dev).unwrap_err();
        assert!(err.to_string().contains("absent.safetensors"), "{err}");
    }

    #[test]
    fn json_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        save_json(&vec![1u64, 2, 3], &path).unwrap();
        let back: Vec<u64> = load_json(&path).unwrap();
        assert_eq!(back, vec![1, 2, 3]);
        std::fs::write(&path, "{").unwrap();
        assert!(matches!(
            load_json::<Vec<u64>>(&path),
            Err(Error::Json { .. })
        ));
    }
}
