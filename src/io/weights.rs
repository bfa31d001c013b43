//! Reading PyTorch weights: `.pth`/`.pt` pickles (bare state_dicts or training checkpoints) and
//! `.safetensors`, into PyTorch-named f32 tensors.
//!
//! f64, f16 and bf16 tensors are converted to f32 (the engine computes in f32; the original dtypes
//! are listed in [`WeightOrigin::dtypes`] so that callers can say so); integer and boolean tensors
//! are rejected. Every tensor must be finite. A reader error never leaves a partial result.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use burn::tensor::DType;
use burn_store::pytorch::reader::PickleValue;
use burn_store::pytorch::PytorchReader;
use burn_store::TensorSnapshot;
use safetensors::{Dtype, SafeTensors};

use super::pickle::Value;
use super::torch_archive::{module_tensors, state_dict_tensors, TorchArchive};
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
    /// The file read (what errors report).
    pub path: PathBuf,
    /// The tensors by PyTorch name, wrapper prefixes removed, as f32.
    pub tensors: BTreeMap<String, HostTensor>,
    /// How the tensors were stored, and what a training checkpoint said about them.
    pub origin: WeightOrigin,
}

/// What surrounded the tensors in the file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WeightOrigin {
    /// `pytorch` or `safetensors`.
    pub format: &'static str,
    /// The training-checkpoint entry the weights were taken from (`model_state_dict`, ...).
    pub state_dict_key: Option<String>,
    /// Wrapper prefixes removed from the names (`_orig_mod.`, `module.`).
    pub stripped_prefixes: BTreeSet<String>,
    /// The dtypes as stored (`F32`, `F64`, `F16`, `BF16`); anything but F32 was converted.
    pub dtypes: BTreeSet<String>,
    /// A training checkpoint's `episode` entry.
    pub episode: Option<i64>,
    /// A training checkpoint's `metrics` entry, as JSON.
    pub metrics: Option<serde_json::Value>,
    /// The lab's class of the model, when the file records it (a TorchScript archive):
    /// `UNetUnitary`, `MLP`, ...
    pub class_name: Option<String>,
}

impl WeightOrigin {
    /// Stored dtypes other than f32 (converted on reading).
    pub fn converted_dtypes(&self) -> Vec<&str> {
        self.dtypes.iter().map(String::as_str).filter(|dtype| *dtype != "F32").collect()
    }
}

impl WeightFile {
    /// Reads `.safetensors` by extension, anything else as a PyTorch pickle.
    pub fn read(path: &Path) -> Result<Self> {
        if is_safetensors(path) {
            Self::read_safetensors(path)
        } else {
            Self::read_pytorch(path)
        }
    }

    /// Parses the bytes of a weights file; `name` chooses the format as in [`WeightFile::read`]
    /// and is the path errors report. PyTorch's reader works on files, so a pickle is first
    /// written to a private temporary file (removed afterwards).
    pub fn from_bytes(name: &Path, bytes: &[u8]) -> Result<Self> {
        if is_safetensors(name) {
            return Self::parse_safetensors(name, bytes);
        }
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let temporary = std::env::temp_dir().join(format!(
            "atheria-weights-{}-{}.pth",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&temporary, bytes).map_err(|error| Error::io(&temporary, error))?;
        let result = Self::parse_pytorch(&temporary, name);
        let _ = std::fs::remove_file(&temporary);
        result
    }

    /// Reads a safetensors file.
    pub fn read_safetensors(path: &Path) -> Result<Self> {
        Self::parse_safetensors(path, &read_file(path)?)
    }

    fn parse_safetensors(path: &Path, bytes: &[u8]) -> Result<Self> {
        let parsed = SafeTensors::deserialize(bytes)
            .map_err(|error| Error::format(path, format!("not a valid safetensors file: {error}")))?;
        let mut origin = WeightOrigin { format: "safetensors", ..WeightOrigin::default() };
        let mut tensors = BTreeMap::new();
        for (name, view) in parsed.tensors() {
            let data = safetensors_to_f32(path, &name, view.dtype(), view.data())?;
            origin.dtypes.insert(format!("{:?}", view.dtype()));
            tensors.insert(name, HostTensor { shape: view.shape().to_vec(), data });
        }
        Self::from_named(path, tensors, origin)
    }

    /// Reads a PyTorch pickle (zip or legacy format). A training checkpoint's
    /// `model_state_dict`/`state_dict` entry is taken, with its `episode` and `metrics`; other
    /// entries (optimizer state, ...) are ignored.
    pub fn read_pytorch(path: &Path) -> Result<Self> {
        if !path.exists() {
            return Err(Error::io(path, std::io::Error::from(std::io::ErrorKind::NotFound)));
        }
        Self::parse_pytorch(path, path)
    }

    /// Reads the pickle at `file`, reporting errors against `path`.
    fn parse_pytorch(file: &Path, path: &Path) -> Result<Self> {
        let file_size = std::fs::metadata(file).map_err(|error| Error::io(path, error))?.len();
        // burn-store silently substitutes zeros for a storage it cannot read (a corrupt zip
        // entry), so every entry's checksum is verified first.
        verify_zip_entries(file, path)?;
        let mut archive = TorchArchive::from_bytes(path, read_file(file)?).ok().flatten();
        if let Some(archive) = archive.as_mut().filter(|archive| archive.is_torchscript()) {
            return Self::parse_archive(path, archive, true);
        }
        let reader = match (catch_silently(|| PytorchReader::new(file)), archive.as_mut()) {
            (Ok(Ok(reader)), _) => reader,
            // burn-store reads state_dicts; a zip archive it cannot read (a checkpoint whose
            // other entries hold classes it does not know) the crate's own reader tries.
            (_, Some(archive)) => return Self::parse_archive(path, archive, false),
            (Err(panic), None) => {
                return Err(Error::format(path, format!("unreadable PyTorch file: {panic}")))
            }
            (Ok(Err(error)), None) => {
                return Err(Error::format(path, format!("not a readable PyTorch file: {error}")))
            }
        };
        let snapshots = reader.into_tensors();

        // A training checkpoint nests the weights one level down; keep only that entry.
        let nested = STATE_DICT_KEYS.iter().copied().find(|key| {
            let prefix = format!("{key}.");
            snapshots.keys().any(|name| name.starts_with(&prefix))
        });
        let mut origin = WeightOrigin {
            format: "pytorch",
            state_dict_key: nested.map(str::to_string),
            ..WeightOrigin::default()
        };
        let mut tensors = BTreeMap::new();
        for (name, snapshot) in snapshots {
            let name = match nested {
                Some(key) => match name.strip_prefix(&format!("{key}.")) {
                    Some(inner) => inner.to_string(),
                    None => continue,
                },
                None => name,
            };
            origin.dtypes.insert(format!("{:?}", snapshot.dtype));
            let tensor = snapshot_to_host(path, &name, &snapshot, file_size)?;
            tensors.insert(name, tensor);
        }
        if tensors.is_empty() {
            return Err(Error::format(path, "the file holds no tensors"));
        }
        if nested.is_some() {
            read_checkpoint_entries(file, &mut origin);
        }
        Self::from_named(path, tensors, origin)
    }

    /// Reads a zip archive with the crate's own unpickler: a TorchScript module's parameters
    /// by module path with its class, or a state_dict (bare or in a training checkpoint).
    fn parse_archive(path: &Path, archive: &mut TorchArchive, torchscript: bool) -> Result<Self> {
        let object = archive.object()?;
        let mut origin = WeightOrigin {
            format: if torchscript { "torchscript" } else { "pytorch" },
            ..WeightOrigin::default()
        };
        let found = if torchscript {
            module_tensors(&object).map(|(class, tensors)| {
                origin.class_name = Some(class);
                tensors
            })
        } else {
            state_dict_tensors(&object, &STATE_DICT_KEYS).map(|(key, tensors)| {
                origin.state_dict_key = key.map(str::to_string);
                tensors
            })
        };
        let found = found.map_err(|message| Error::format(path, message))?;
        let mut tensors = BTreeMap::new();
        for (name, reference) in found {
            let tensor = archive.tensor(&name, &reference)?;
            if tensor.complex {
                return Err(wrong_dtype(path, &name, tensor.dtype));
            }
            origin.dtypes.insert(canonical_dtype(tensor.dtype).to_string());
            tensors.insert(name, HostTensor { shape: tensor.shape, data: tensor.values });
        }
        if tensors.is_empty() {
            return Err(Error::format(path, "the file holds no tensors"));
        }
        if origin.state_dict_key.is_some() {
            origin.episode = match object.get("episode") {
                Some(Value::Int(episode)) => Some(*episode),
                _ => None,
            };
        }
        Self::from_named(path, tensors, origin)
    }

    /// Strips wrapper prefixes from every name and checks every value is finite.
    fn from_named(
        path: &Path,
        tensors: BTreeMap<String, HostTensor>,
        mut origin: WeightOrigin,
    ) -> Result<Self> {
        let mut stripped = BTreeMap::new();
        for (name, tensor) in tensors {
            let count = tensor.non_finite();
            if count > 0 {
                return Err(Error::NonFinite { path: path.to_path_buf(), name, count });
            }
            let short = strip_wrappers(&name);
            if short.len() < name.len() {
                for prefix in WRAPPER_PREFIXES {
                    if name.contains(prefix) {
                        origin.stripped_prefixes.insert(prefix.to_string());
                    }
                }
            }
            if stripped.insert(short.to_string(), tensor).is_some() {
                return Err(Error::format(
                    path,
                    format!("tensor '{short}' appears twice (with and without a wrapper prefix)"),
                ));
            }
        }
        Ok(Self { path: path.to_path_buf(), tensors: stripped, origin })
    }
}

fn is_safetensors(path: &Path) -> bool {
    path.extension().and_then(|ext| ext.to_str()).is_some_and(|ext| ext.eq_ignore_ascii_case("safetensors"))
}

/// Removes `_orig_mod.` / `module.` prefixes, however nested.
pub fn strip_wrappers(mut name: &str) -> &str {
    while let Some(inner) = WRAPPER_PREFIXES.iter().find_map(|prefix| name.strip_prefix(prefix)) {
        name = inner;
    }
    name
}

/// Reads every entry of a zip file to its end, which checks its CRC, and checks that its name
/// in the central directory is the one in its local header (neither is checksummed, and a
/// storage whose name no longer matches would be read as zeros). Not a zip: nothing to do
/// (legacy pickles are handled, and bad ones rejected, by the PyTorch reader).
fn verify_zip_entries(file: &Path, path: &Path) -> Result<()> {
    use std::io::{Seek, SeekFrom};
    let handle = std::fs::File::open(file).map_err(|error| Error::io(path, error))?;
    let Ok(mut archive) = zip::ZipArchive::new(std::io::BufReader::new(handle)) else {
        return Ok(());
    };
    let mut raw = std::fs::File::open(file).map_err(|error| Error::io(path, error))?;
    let mut sink = [0u8; 64 * 1024];
    for index in 0..archive.len() {
        let mut entry = archive
            .by_index(index)
            .map_err(|error| Error::format(path, format!("corrupt zip entry {index}: {error}")))?;
        let name = entry.name().to_string();
        // Local file header: 30 fixed bytes (name length at 26), then the name.
        let central = entry.name_raw().to_vec();
        let mut header = [0u8; 30];
        let mut local = vec![0u8; central.len()];
        let local_matches = raw
            .seek(SeekFrom::Start(entry.header_start()))
            .and_then(|_| raw.read_exact(&mut header))
            .and_then(|_| raw.read_exact(&mut local))
            .is_ok_and(|()| {
                u16::from_le_bytes([header[26], header[27]]) as usize == central.len() && local == central
            });
        if !local_matches {
            return Err(Error::format(
                path,
                format!("corrupt zip entry '{name}': its two recorded names differ"),
            ));
        }
        loop {
            match entry.read(&mut sink) {
                Ok(0) => break,
                Ok(_) => {}
                Err(error) => {
                    return Err(Error::format(path, format!("corrupt zip entry '{name}': {error}")))
                }
            }
        }
    }
    Ok(())
}

/// Loads one tensor's values as f32.
fn snapshot_to_host(
    path: &Path,
    name: &str,
    snapshot: &TensorSnapshot,
    file_size: u64,
) -> Result<HostTensor> {
    let shape = snapshot.shape.to_vec();
    let dtype = snapshot.dtype;
    if !matches!(dtype, DType::F32 | DType::F64 | DType::F16 | DType::BF16) {
        return Err(wrong_dtype(path, name, dtype));
    }
    // The reader allocates what the shape claims before looking at the data: a shape larger
    // than the whole file is corrupt, and must not become a huge allocation.
    let claimed = shape
        .iter()
        .try_fold(dtype.size() as u64, |bytes, &size| bytes.checked_mul(size as u64))
        .filter(|&bytes| bytes <= file_size);
    if claimed.is_none() {
        return Err(Error::format(
            path,
            format!("tensor '{name}': shape {shape:?} needs more data than the file holds"),
        ));
    }
    let data = catch_silently(|| snapshot.to_data())
        .map_err(|panic| Error::format(path, format!("tensor '{name}': {panic}")))?
        .map_err(|error| Error::format(path, format!("tensor '{name}': {error}")))?;
    if data.shape.to_vec() != shape {
        return Err(Error::format(
            path,
            format!("tensor '{name}': data of shape {:?} for declared shape {shape:?}", data.shape),
        ));
    }
    let values = catch_silently(|| data.convert::<f32>().to_vec::<f32>())
        .map_err(|panic| Error::format(path, format!("tensor '{name}': {panic}")))?
        .map_err(|_| wrong_dtype(path, name, dtype))?;
    let expected: usize = shape.iter().product();
    if values.len() != expected {
        return Err(Error::format(
            path,
            format!("tensor '{name}': {} values for shape {shape:?}", values.len()),
        ));
    }
    Ok(HostTensor { shape, data: values })
}

/// Takes `episode` and `metrics` from a training checkpoint's top level. They are provenance
/// only: a file whose other entries cannot be read still loads.
fn read_checkpoint_entries(file: &Path, origin: &mut WeightOrigin) {
    let Ok(Ok(PickleValue::Dict(entries))) = catch_silently(|| PytorchReader::read_pickle_data(file, None))
    else {
        return;
    };
    origin.episode = match entries.get("episode") {
        Some(PickleValue::Int(value)) => Some(*value),
        Some(PickleValue::Float(value)) if value.fract() == 0.0 && value.is_finite() => Some(*value as i64),
        _ => None,
    };
    origin.metrics = entries.get("metrics").map(pickle_to_json).filter(|value| !value.is_null());
}

fn pickle_to_json(value: &PickleValue) -> serde_json::Value {
    use serde_json::Value;
    match value {
        PickleValue::None | PickleValue::Bytes(_) => Value::Null,
        PickleValue::Bool(flag) => Value::Bool(*flag),
        PickleValue::Int(number) => Value::from(*number),
        // JSON has no NaN or infinity.
        PickleValue::Float(number) => {
            serde_json::Number::from_f64(*number).map_or(Value::Null, Value::Number)
        }
        PickleValue::String(text) => Value::String(text.clone()),
        PickleValue::List(items) => Value::Array(items.iter().map(pickle_to_json).collect()),
        PickleValue::Dict(entries) => {
            let sorted: BTreeMap<&String, &PickleValue> = entries.iter().collect();
            Value::Object(sorted.into_iter().map(|(key, item)| (key.clone(), pickle_to_json(item))).collect())
        }
    }
}

/// The name [`WeightOrigin::dtypes`] uses for an archive's dtype (burn's `F32`, ...).
fn canonical_dtype(dtype: &str) -> &'static str {
    match dtype {
        "float64" => "F64",
        "float16" => "F16",
        "bfloat16" => "BF16",
        _ => "F32",
    }
}

fn wrong_dtype(path: &Path, name: &str, found: impl std::fmt::Debug) -> Error {
    Error::DType {
        path: path.to_path_buf(),
        name: name.to_string(),
        found: format!("{found:?}"),
        expected: "f32, f16, bf16 or f64".into(),
    }
}

fn safetensors_to_f32(path: &Path, name: &str, dtype: Dtype, bytes: &[u8]) -> Result<Vec<f32>> {
    let values = match dtype {
        Dtype::F32 => bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        Dtype::F64 => {
            bytes.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f32).collect()
        }
        Dtype::F16 => {
            bytes.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect()
        }
        Dtype::BF16 => {
            bytes.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect()
        }
        other => return Err(wrong_dtype(path, name, other)),
    };
    Ok(values)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn strips_nested_wrapper_prefixes() {
        assert_eq!(strip_wrappers("_orig_mod.inc.conv_block.0.weight"), "inc.conv_block.0.weight");
        assert_eq!(strip_wrappers("module._orig_mod.net.0.bias"), "net.0.bias");
        assert_eq!(strip_wrappers("outc.weight"), "outc.weight");
    }

    #[test]
    fn a_name_present_with_and_without_a_prefix_is_an_error() {
        let tensor = HostTensor { shape: vec![1], data: vec![0.0] };
        let tensors = BTreeMap::from([
            ("_orig_mod.outc.bias".to_string(), tensor.clone()),
            ("outc.bias".to_string(), tensor),
        ]);
        let error = WeightFile::from_named(Path::new("w.pth"), tensors, WeightOrigin::default()).unwrap_err();
        assert!(error.to_string().contains("'outc.bias' appears twice"), "{error}");
    }

    #[test]
    fn pickled_metrics_become_json() {
        let metrics = PickleValue::Dict(HashMap::from([
            ("loss".to_string(), PickleValue::Float(1.25)),
            ("bad".to_string(), PickleValue::Float(f64::NAN)),
            ("steps".to_string(), PickleValue::List(vec![PickleValue::Int(3)])),
        ]));
        assert_eq!(pickle_to_json(&metrics), serde_json::json!({"bad": null, "loss": 1.25, "steps": [3]}));
    }
}
