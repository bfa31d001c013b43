//! Reading PyTorch weights: `.pth`/`.pt` pickles (bare state_dicts or training checkpoints) and
//! `.safetensors`, into PyTorch-named f32 tensors.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::tensor::DType;
use burn_store::pytorch::PytorchReader;
use safetensors::{Dtype, SafeTensors};

use super::{read_file, HostTensor};
use crate::error::{Error, Result};
use crate::guard::catch_silently;

/// Keys under which training checkpoints keep the model's state_dict.
pub const STATE_DICT_KEYS: [&str; 2] = ["model_state_dict", "state_dict"];

/// Prefixes that wrappers add to parameter names: `torch.compile` and `DataParallel`.
pub const WRAPPER_PREFIXES: [&str; 2] = ["_orig_mod.", "module."];

/// The float tensors of a weights file, by PyTorch name (wrapper prefixes removed).
#[derive(Debug, Clone)]
pub struct WeightFile {
    pub path: PathBuf,
    pub tensors: BTreeMap<String, HostTensor>,
}

impl WeightFile {
    /// Reads `.safetensors` by extension, anything else as a PyTorch pickle.
    pub fn read(path: &Path) -> Result<Self> {
        let is_safetensors =
            path.extension().and_then(|ext| ext.to_str()).is_some_and(|ext| ext == "safetensors");
        if is_safetensors {
            Self::read_safetensors(path)
        } else {
            Self::read_pytorch(path)
        }
    }

    /// Reads a safetensors file.
    pub fn read_safetensors(path: &Path) -> Result<Self> {
        let bytes = read_file(path)?;
        let parsed = SafeTensors::deserialize(&bytes)
            .map_err(|error| Error::format(path, format!("not a valid safetensors file: {error}")))?;
        let mut tensors = BTreeMap::new();
        for (name, view) in parsed.tensors() {
            let data = safetensors_to_f32(path, &name, view.dtype(), view.data())?;
            tensors.insert(name, HostTensor { shape: view.shape().to_vec(), data });
        }
        Ok(Self::from_named(path, tensors))
    }

    /// Reads a PyTorch pickle (zip or legacy format). A training checkpoint's
    /// `model_state_dict`/`state_dict` entry is taken; other entries are ignored.
    pub fn read_pytorch(path: &Path) -> Result<Self> {
        if !path.exists() {
            return Err(Error::io(path, std::io::Error::from(std::io::ErrorKind::NotFound)));
        }
        let reader = catch_silently(|| PytorchReader::new(path))
            .map_err(|panic| Error::format(path, format!("unreadable PyTorch file: {panic}")))?
            .map_err(|error| Error::format(path, format!("not a readable PyTorch file: {error}")))?;
        let snapshots = reader.into_tensors();

        // A training checkpoint nests the weights one level down; keep only that entry.
        let nested = STATE_DICT_KEYS.iter().find(|key| {
            let prefix = format!("{key}.");
            snapshots.keys().any(|name| name.starts_with(&prefix))
        });
        let mut tensors = BTreeMap::new();
        for (name, snapshot) in snapshots {
            let name = match nested {
                Some(key) => match name.strip_prefix(&format!("{key}.")) {
                    Some(inner) => inner.to_string(),
                    None => continue,
                },
                None => name,
            };
            let data = catch_silently(|| snapshot.to_data())
                .map_err(|panic| Error::format(path, format!("tensor '{name}': {panic}")))?
                .map_err(|error| Error::format(path, format!("tensor '{name}': {error}")))?;
            let shape = data.shape.to_vec();
            let values = tensor_data_to_f32(path, &name, data)?;
            let expected: usize = shape.iter().product();
            if values.len() != expected {
                return Err(Error::format(
                    path,
                    format!("tensor '{name}': {} values for shape {shape:?}", values.len()),
                ));
            }
            tensors.insert(name, HostTensor { shape, data: values });
        }
        if tensors.is_empty() {
            return Err(Error::format(path, "the file holds no tensors"));
        }
        Ok(Self::from_named(path, tensors))
    }

    /// Strips wrapper prefixes from every name.
    fn from_named(path: &Path, tensors: BTreeMap<String, HostTensor>) -> Self {
        let tensors = tensors
            .into_iter()
            .map(|(name, tensor)| (strip_wrappers(&name).to_string(), tensor))
            .collect();
        Self { path: path.to_path_buf(), tensors }
    }
}

/// Removes `_orig_mod.` / `module.` prefixes, however nested.
pub fn strip_wrappers(mut name: &str) -> &str {
    while let Some(inner) = WRAPPER_PREFIXES.iter().find_map(|prefix| name.strip_prefix(prefix)) {
        name = inner;
    }
    name
}

fn wrong_dtype(path: &Path, name: &str, found: impl std::fmt::Debug) -> Error {
    Error::DType {
        path: path.to_path_buf(),
        name: name.to_string(),
        found: format!("{found:?}"),
        expected: "f32, f16, bf16 or f64".into(),
    }
}

fn tensor_data_to_f32(path: &Path, name: &str, data: burn::tensor::TensorData) -> Result<Vec<f32>> {
    match data.dtype {
        DType::F32 | DType::F64 | DType::F16 | DType::BF16 => {
            let dtype = data.dtype;
            let converted = catch_silently(|| data.convert::<f32>().to_vec::<f32>())
                .map_err(|panic| Error::format(path, format!("tensor '{name}': {panic}")))?;
            converted.map_err(|_| wrong_dtype(path, name, dtype))
        }
        other => Err(wrong_dtype(path, name, other)),
    }
}

fn safetensors_to_f32(path: &Path, name: &str, dtype: Dtype, bytes: &[u8]) -> Result<Vec<f32>> {
    let values = match dtype {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F64 => bytes
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f32)
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        other => return Err(wrong_dtype(path, name, other)),
    };
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_nested_wrapper_prefixes() {
        assert_eq!(strip_wrappers("_orig_mod.inc.conv_block.0.weight"), "inc.conv_block.0.weight");
        assert_eq!(strip_wrappers("module._orig_mod.net.0.bias"), "net.0.bias");
        assert_eq!(strip_wrappers("outc.weight"), "outc.weight");
    }
}
