//! State files: safetensors with f32 tensors `re` and `im` of shape [B, H, W, d_state] (the
//! original lab's psi layout), plus `h` and `c` for a ConvLSTM model's memory. The lab's own
//! saved states (`torch.save` of a complex psi) are read too.
//!
//! The metadata holds the step count and `sha256`, the SHA-256 of the tensors' bytes in the
//! order of their names; loading verifies it (files without one load as before).

use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

use super::{read_file, sha256_hex, write_atomic, HostTensor};
use crate::error::{Error, Result};

/// A universe (or a batch of them) on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct HostState {
    /// Real parts, [B, H, W, d].
    pub re: HostTensor,
    /// Imaginary parts, [B, H, W, d].
    pub im: HostTensor,
    /// ConvLSTM hidden and cell states, [B, 4h, H/4, W/4], when the model has memory.
    pub memory: Option<(HostTensor, HostTensor)>,
    /// How many steps produced this state.
    pub step: u64,
}

impl HostState {
    /// [B, H, W, d].
    pub fn dims(&self) -> [usize; 4] {
        let s = &self.re.shape;
        [s[0], s[1], s[2], s[3]]
    }

    /// Values that are NaN or infinite, over psi and the memory.
    pub fn non_finite(&self) -> usize {
        let memory = self.memory.iter().flat_map(|(hidden, cell)| [hidden, cell]);
        [&self.re, &self.im].into_iter().chain(memory).map(HostTensor::non_finite).sum()
    }
}

/// The metadata key of the checksum of the tensors and the rest of the metadata.
const CHECKSUM_KEY: &str = "sha256_state";

/// The key of the checksum of files written before the metadata was covered: the tensors only.
const TENSORS_CHECKSUM_KEY: &str = "sha256";

/// The SHA-256 of a state file's content: its tensors' bytes in the order of their names, then
/// every metadata entry but the checksums, `key=value` lines in the order of their keys (the
/// step and a run's settings are as much the state as its tensors).
fn state_checksum<'a>(tensors: impl Iterator<Item = &'a [u8]>, metadata: &HashMap<String, String>) -> String {
    let mut content: Vec<u8> = tensors.flat_map(|bytes| bytes.iter().copied()).collect();
    let mut entries: Vec<(&String, &String)> = metadata
        .iter()
        .filter(|(key, _)| ![CHECKSUM_KEY, TENSORS_CHECKSUM_KEY].contains(&key.as_str()))
        .collect();
    entries.sort();
    for (key, value) in entries {
        content.extend_from_slice(format!("{key}={value}\n").as_bytes());
    }
    sha256_hex(&content)
}

/// Writes a state file atomically.
pub fn save_state(path: &Path, state: &HostState) -> Result<()> {
    write_atomic(path, &encode_state(path, state, &[], HashMap::new())?)
}

/// A state file's bytes: the state, `extra` tensors beside it, and `metadata` besides the
/// format, step and checksum (the checksum covers every tensor, in the order of their names).
pub fn encode_state(
    path: &Path,
    state: &HostState,
    extra: &[(&str, &HostTensor)],
    mut metadata: HashMap<String, String>,
) -> Result<Vec<u8>> {
    let mut tensors: Vec<(&str, &HostTensor)> = vec![("re", &state.re), ("im", &state.im)];
    if let Some((hidden, cell)) = &state.memory {
        tensors.push(("h", hidden));
        tensors.push(("c", cell));
    }
    tensors.extend_from_slice(extra);
    tensors.sort_by_key(|(name, _)| *name);
    let bytes_of = |tensor: &HostTensor| -> Vec<u8> {
        tensor.data.iter().flat_map(|value| value.to_le_bytes()).collect()
    };
    let buffers: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(name, tensor)| (name.to_string(), tensor.shape.clone(), bytes_of(tensor)))
        .collect();
    metadata.insert("format".to_string(), "atheria-state".to_string());
    metadata.insert("step".to_string(), state.step.to_string());
    let tensor_bytes = buffers.iter().map(|(_, _, bytes)| bytes.as_slice());
    let checksum = state_checksum(tensor_bytes, &metadata);
    let views: Vec<(String, TensorView<'_>)> = buffers
        .iter()
        .map(|(name, shape, bytes)| {
            TensorView::new(Dtype::F32, shape.clone(), bytes)
                .map(|view| (name.clone(), view))
                .map_err(|error| Error::format(path, format!("cannot encode '{name}': {error}")))
        })
        .collect::<Result<_>>()?;
    metadata.insert(CHECKSUM_KEY.to_string(), checksum);
    safetensors::serialize(views, &Some(metadata))
        .map_err(|error| Error::format(path, format!("cannot encode state: {error}")))
}

/// Reads and validates a state file: f32 `re` and `im` of equal rank-4 shape (a rank-3
/// [H, W, d] file is read as a batch of one), finite values, and a consistent memory.
pub fn load_state(path: &Path) -> Result<HostState> {
    parse_state(path, &read_file(path)?)
}

/// [`load_state`] on the bytes of a state file; `path` is what errors report. A PyTorch
/// archive is read as one of the lab's saved states (see `io::lab_state`).
pub fn parse_state(path: &Path, bytes: &[u8]) -> Result<HostState> {
    if super::lab_state::is_zip(bytes) {
        let lab = super::lab_state::parse_lab_state(path, bytes)?;
        return validate_state(
            path,
            HostState { re: lab.re, im: lab.im, memory: None, step: lab.step },
            lab.memory,
        );
    }
    let parsed = SafeTensors::deserialize(bytes).map_err(|error| {
        Error::format(path, format!("not a valid safetensors state (truncated or corrupt?): {error}"))
    })?;
    verify_checksum(path, bytes, &parsed)?;
    let read = |name: &str| read_tensor(path, &parsed, name);
    let required = |name: &str| -> Result<HostTensor> {
        read(name)?.ok_or_else(|| Error::format(path, format!("missing tensor '{name}'")))
    };
    let (re, im, memory) = (required("re")?, required("im")?, (read("h")?, read("c")?));
    let step = parsed_step(path, bytes)?;
    validate_state(path, HostState { re, im, memory: None, step }, memory)
}

/// Reads the f32 tensor `name` of a parsed file (`None` if absent), refusing other dtypes and
/// non-finite values.
pub(crate) fn read_tensor(path: &Path, parsed: &SafeTensors<'_>, name: &str) -> Result<Option<HostTensor>> {
    let view = match parsed.tensor(name) {
        Ok(view) => view,
        Err(safetensors::SafeTensorError::TensorNotFound(_)) => return Ok(None),
        Err(error) => return Err(Error::format(path, format!("tensor '{name}': {error}"))),
    };
    if view.dtype() != Dtype::F32 {
        return Err(Error::DType {
            path: path.to_path_buf(),
            name: name.to_string(),
            found: format!("{:?}", view.dtype()),
            expected: "f32".into(),
        });
    }
    let data: Vec<f32> =
        view.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    let tensor = HostTensor { shape: view.shape().to_vec(), data };
    let count = tensor.non_finite();
    if count > 0 {
        return Err(Error::NonFinite { path: path.to_path_buf(), name: name.to_string(), count });
    }
    Ok(Some(tensor))
}

/// Checks shapes: `re` and `im` equal and rank 4 (rank 3 read as a batch of one), and a
/// memory pair that fits them.
fn validate_state(
    path: &Path,
    state: HostState,
    memory: (Option<HostTensor>, Option<HostTensor>),
) -> Result<HostState> {
    let HostState { mut re, mut im, step, .. } = state;
    for tensor in [&mut re, &mut im] {
        if tensor.shape.len() == 3 {
            tensor.shape.insert(0, 1);
        }
    }
    if re.shape.len() != 4 {
        return Err(Error::format(
            path,
            format!("'re' has shape {:?}; expected [B, H, W, d_state]", re.shape),
        ));
    }
    if re.shape != im.shape {
        return Err(Error::format(
            path,
            format!("'re' {:?} and 'im' {:?} differ in shape", re.shape, im.shape),
        ));
    }
    if re.shape.contains(&0) {
        return Err(Error::format(path, format!("'re' has an empty dimension: {:?}", re.shape)));
    }
    let memory = match memory {
        (Some(hidden), Some(cell)) => {
            let [batch, height, width, _] = [re.shape[0], re.shape[1], re.shape[2], re.shape[3]];
            let fits = |t: &HostTensor| {
                t.shape.len() == 4
                    && t.shape[0] == batch
                    && t.shape[2] * 4 == height
                    && t.shape[3] * 4 == width
            };
            if !fits(&hidden) || hidden.shape != cell.shape {
                return Err(Error::format(
                    path,
                    format!(
                        "memory 'h' {:?} / 'c' {:?} does not fit a [{batch}, C, {}, {}] state",
                        hidden.shape,
                        cell.shape,
                        height / 4,
                        width / 4
                    ),
                ));
            }
            Some((hidden, cell))
        }
        (None, None) => None,
        _ => return Err(Error::format(path, "a state needs both 'h' and 'c', or neither")),
    };
    Ok(HostState { re, im, memory, step })
}

/// Compares the recorded checksum (if any) with the file's content.
fn verify_checksum(path: &Path, bytes: &[u8], parsed: &SafeTensors<'_>) -> Result<()> {
    let metadata = SafeTensors::read_metadata(bytes)
        .ok()
        .and_then(|(_, header)| header.metadata().clone())
        .unwrap_or_default();
    let mut names = parsed.names();
    names.sort();
    let tensors: Vec<&[u8]> =
        names.iter().filter_map(|name| parsed.tensor(name).ok()).map(|view| view.data()).collect();
    let (recorded, computed, what) = match (metadata.get(CHECKSUM_KEY), metadata.get(TENSORS_CHECKSUM_KEY)) {
        (Some(recorded), _) => (recorded, state_checksum(tensors.into_iter(), &metadata), "the state's"),
        (None, Some(recorded)) => (recorded, sha256_hex(&tensors.concat()), "the tensors'"),
        (None, None) => return Ok(()),
    };
    if computed != *recorded {
        return Err(Error::ChecksumMismatch {
            path: path.to_path_buf(),
            what: format!("{what} SHA-256 differs from the one in the file's metadata"),
        });
    }
    Ok(())
}

/// The step in the metadata: 0 when absent (a file from elsewhere), an error when unreadable.
fn parsed_step(path: &Path, bytes: &[u8]) -> Result<u64> {
    match metadata_value(bytes, "step") {
        None => Ok(0),
        Some(step) => {
            step.parse().map_err(|_| Error::format(path, format!("the step '{step}' is not a number")))
        }
    }
}

/// A value of a safetensors file's metadata.
pub(crate) fn metadata_value(bytes: &[u8], key: &str) -> Option<String> {
    SafeTensors::read_metadata(bytes)
        .ok()
        .and_then(|(_, metadata)| metadata.metadata().as_ref()?.get(key).cloned())
}
