//! PyTorch's zip archives, read with the crate's own unpickler ([`super::pickle`]): the
//! parameters of a TorchScript module (`torch.jit.trace`/`torch.jit.script` `.pt` files, the
//! format the lab's native engine loads) by module path with the class it records, and
//! tensors saved with `torch.save`, complex ones included (the lab's state snapshots).
//!
//! ```text
//! NAME/data.pkl        the pickled object: a module tree, a dict, a tensor
//! NAME/data/KEY        the bytes of the storage KEY, little-endian
//! NAME/constants.pkl   TorchScript only, with NAME/code/ (the module's code)
//! ```

use std::io::Read;
use std::path::{Path, PathBuf};

use super::pickle::{unpickle, TensorRef, Value};
use crate::error::{Error, Result};

/// An opened archive.
pub struct TorchArchive {
    path: PathBuf,
    /// The folder every entry is in (`NAME/`).
    prefix: String,
    zip: zip::ZipArchive<std::io::Cursor<Vec<u8>>>,
    torchscript: bool,
}

/// A tensor read from an archive, its values as f32 (real and imaginary parts interleaved
/// for a complex tensor).
#[derive(Debug, Clone, PartialEq)]
pub struct ArchiveTensor {
    /// The tensor's shape.
    pub shape: Vec<usize>,
    /// Row-major values; `[re, im]` pairs when `complex`.
    pub values: Vec<f32>,
    /// Whether the dtype is complex.
    pub complex: bool,
    /// The dtype as stored (`float32`, `complex64`, ...).
    pub dtype: &'static str,
}

/// Bytes per element and the dtype's name, by storage type.
fn storage_kind(storage_type: &str) -> Option<(usize, &'static str)> {
    Some(match storage_type {
        "FloatStorage" => (4, "float32"),
        "DoubleStorage" => (8, "float64"),
        "HalfStorage" => (2, "float16"),
        "BFloat16Storage" => (2, "bfloat16"),
        "ComplexFloatStorage" => (8, "complex64"),
        "ComplexDoubleStorage" => (16, "complex128"),
        _ => return None,
    })
}

/// Decodes `bytes` of a storage into f32 values (two per complex element).
fn decode(dtype: &str, bytes: &[u8]) -> Vec<f32> {
    match dtype {
        "float32" | "complex64" => {
            bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
        }
        "float64" | "complex128" => bytes
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
            .collect(),
        "float16" => bytes.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        _ => bytes.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
    }
}

impl TorchArchive {
    /// Opens `path` as a PyTorch zip archive; `None` when it is not a zip at all (a legacy
    /// pickle, or not PyTorch's).
    pub fn open(path: &Path) -> Result<Option<Self>> {
        let bytes = super::read_file(path)?;
        Self::from_bytes(path, bytes)
    }

    /// Opens archive `bytes`, reporting errors against `path`.
    pub fn from_bytes(path: &Path, bytes: Vec<u8>) -> Result<Option<Self>> {
        let Ok(zip) = zip::ZipArchive::new(std::io::Cursor::new(bytes)) else {
            return Ok(None);
        };
        let data = zip
            .file_names()
            .find(|name| name.ends_with("/data.pkl") && name.matches('/').count() == 1)
            .map(str::to_string);
        let Some(data) = data else {
            return Err(Error::format(path, "a zip file without PyTorch's NAME/data.pkl"));
        };
        let prefix = data.trim_end_matches("data.pkl").to_string();
        // A TorchScript module holds compiled code and constants beside its data.
        let (constants, code) = (format!("{prefix}constants.pkl"), format!("{prefix}code/"));
        let torchscript = zip.file_names().any(|name| name == constants || name.starts_with(&code));
        Ok(Some(Self { path: path.to_path_buf(), prefix, zip, torchscript }))
    }

    /// Whether the archive is a TorchScript module.
    pub fn is_torchscript(&self) -> bool {
        self.torchscript
    }

    fn entry(&mut self, name: &str) -> Result<Vec<u8>> {
        let full = format!("{}{name}", self.prefix);
        let mut entry = self.zip.by_name(&full).map_err(|error| {
            Error::format(&self.path, format!("no entry '{full}' in the archive: {error}"))
        })?;
        let mut bytes = Vec::new();
        entry
            .read_to_end(&mut bytes)
            .map_err(|error| Error::format(&self.path, format!("corrupt entry '{full}': {error}")))?;
        Ok(bytes)
    }

    /// The pickled object of the archive.
    pub fn object(&mut self) -> Result<Value> {
        let bytes = self.entry("data.pkl")?;
        unpickle(&bytes)
            .map_err(|message| Error::format(&self.path, format!("unreadable data.pkl: {message}")))
    }

    /// The values of a tensor of the archive, gathered through its strides.
    pub fn tensor(&mut self, name: &str, tensor: &TensorRef) -> Result<ArchiveTensor> {
        let (size, dtype) = storage_kind(&tensor.storage_type).ok_or_else(|| Error::DType {
            path: self.path.clone(),
            name: name.to_string(),
            found: tensor.storage_type.clone(),
            expected: "a float or complex dtype".into(),
        })?;
        let bytes = self.entry(&format!("data/{}", tensor.storage))?;
        let complex = dtype.starts_with("complex");
        let parts = if complex { 2 } else { 1 };
        let storage = decode(dtype, &bytes[..bytes.len() - bytes.len() % size]);
        let elements = storage.len() / parts;
        let count = tensor.shape.iter().try_fold(1usize, |total, &side| total.checked_mul(side));
        // A saved tensor never holds more elements than its storage (no file of ours expands
        // one), and a larger claim must not become a huge allocation.
        let count = count.filter(|&count| count <= elements).ok_or_else(|| {
            Error::format(
                &self.path,
                format!("tensor '{name}' of shape {:?} claims more than its storage holds", tensor.shape),
            )
        })?;
        let mut values = Vec::with_capacity(count * parts);
        let mut index = vec![0usize; tensor.shape.len()];
        for _ in 0..count {
            let at = tensor.offset + index.iter().zip(&tensor.stride).map(|(i, s)| i * s).sum::<usize>();
            if at >= elements {
                return Err(Error::format(
                    &self.path,
                    format!("tensor '{name}' reads element {at} of a storage of {elements}"),
                ));
            }
            values.extend_from_slice(&storage[at * parts..(at + 1) * parts]);
            // The next index, last dimension fastest.
            for dim in (0..index.len()).rev() {
                index[dim] += 1;
                if index[dim] < tensor.shape[dim] {
                    break;
                }
                index[dim] = 0;
            }
        }
        Ok(ArchiveTensor { shape: tensor.shape.clone(), values, complex, dtype })
    }
}

/// Tensors of an archive by name.
pub type NamedTensors = Vec<(String, TensorRef)>;

/// A TorchScript module's class (the last part of `__torch__.src.models.unet.UNet`) and its
/// tensors by module path (`inc.conv_block.0.weight`), in the order the archive lists them.
pub fn module_tensors(root: &Value) -> std::result::Result<(String, NamedTensors), String> {
    let Value::Object { class, .. } = root else {
        return Err("the archive's object is not a module".into());
    };
    let Value::Global { name, .. } = class.as_ref() else {
        return Err("the archive's module has no class".into());
    };
    let mut tensors = Vec::new();
    walk(root, "", &mut tensors, 0)?;
    Ok((name.clone(), tensors))
}

fn walk(
    module: &Value,
    prefix: &str,
    tensors: &mut Vec<(String, TensorRef)>,
    depth: usize,
) -> std::result::Result<(), String> {
    if depth > 64 {
        return Err("modules nested too deeply".into());
    }
    let Value::Object { state: Some(state), .. } = module else {
        return Ok(());
    };
    let Value::Dict(attributes) = state.as_ref() else {
        return Ok(());
    };
    for (key, value) in attributes {
        let Some(key) = key.as_str() else { continue };
        match value {
            Value::Tensor(tensor) => tensors.push((format!("{prefix}{key}"), tensor.clone())),
            Value::Object { class, .. } if matches!(class.as_ref(), Value::Global { module, .. } if module.starts_with("__torch__")) =>
            {
                walk(value, &format!("{prefix}{key}."), tensors, depth + 1)?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// The state_dict of a `torch.save` object: a dict of tensors, or a training checkpoint that
/// holds one under one of `keys`. Returns the key it was under and the tensors by name;
/// entries that are not tensors are left out (a checkpoint's other contents).
pub fn state_dict_tensors<'a>(
    root: &'a Value,
    keys: &[&'a str],
) -> std::result::Result<(Option<&'a str>, NamedTensors), String> {
    let (key, dict) = match keys.iter().find_map(|key| root.get(key).map(|dict| (*key, dict))) {
        Some((key, dict)) => (Some(key), dict),
        None => (None, root),
    };
    let Value::Dict(entries) = dict else {
        return Err("the file holds no dict of tensors".into());
    };
    let tensors = entries
        .iter()
        .filter_map(|(name, value)| match (name, value) {
            (Value::Str(name), Value::Tensor(tensor)) => Some((name.clone(), tensor.clone())),
            _ => None,
        })
        .collect();
    Ok((key, tensors))
}
