//! The lab's saved states, read as state files: `torch.save` archives of
//!
//! - psi alone, complex64 or complex128, `[1, H, W, d]` or `[H, W, d]` (what the lab's
//!   `snapshot_manager.save_snapshot` and its trainer's `snapshot_epN.pt` write);
//! - a dict with `psi` and, for a ConvLSTM model, `h_state` and `c_state` (`[1, B, 4h, H/4,
//!   W/4]`, the engine's `save_state`);
//! - the first engine's `{'step', 'x_real', 'x_imag'}` (real tensors `[1, H, W, d]`).
//!
//! The step comes from the file's `step` entry, else from the `step` of the JSON the snapshot
//! manager writes beside it (`NAME.json`), else 0.

use std::path::Path;

use super::pickle::Value;
use super::torch_archive::{ArchiveTensor, TorchArchive};
use super::HostTensor;
use crate::error::{Error, Result};

/// A lab state's parts: real and imaginary parts (`[.., H, W, d]`), the memory if any, the step.
pub(crate) struct LabState {
    pub re: HostTensor,
    pub im: HostTensor,
    pub memory: (Option<HostTensor>, Option<HostTensor>),
    pub step: u64,
}

/// Whether `bytes` are a zip archive (PyTorch's format) rather than safetensors.
pub(crate) fn is_zip(bytes: &[u8]) -> bool {
    bytes.starts_with(b"PK\x03\x04")
}

/// Reads a lab state from the bytes of a `torch.save` archive.
pub(crate) fn parse_lab_state(path: &Path, bytes: &[u8]) -> Result<LabState> {
    let mut archive = TorchArchive::from_bytes(path, bytes.to_vec())?
        .ok_or_else(|| Error::format(path, "not a PyTorch archive"))?;
    let object = archive.object()?;
    let mut tensor = |name: &str, value: &Value| -> Result<ArchiveTensor> {
        match value {
            Value::Tensor(reference) => {
                let tensor = archive.tensor(name, reference)?;
                let count = tensor.values.iter().filter(|v| !v.is_finite()).count();
                if count > 0 {
                    return Err(Error::NonFinite { path: path.to_path_buf(), name: name.into(), count });
                }
                Ok(tensor)
            }
            _ => Err(Error::format(path, format!("'{name}' is not a tensor"))),
        }
    };
    let step_entry = object.get("step").and_then(|step| match step {
        Value::Int(step) if *step >= 0 => Some(*step as u64),
        _ => None,
    });
    let (re, im, memory) = match &object {
        Value::Tensor(_) => {
            let (re, im) = split_complex(path, "psi", tensor("psi", &object)?)?;
            (re, im, (None, None))
        }
        Value::Dict(_) if object.get("psi").is_some() => {
            let (re, im) =
                split_complex(path, "psi", tensor("psi", object.get("psi").unwrap_or(&Value::None))?)?;
            let mut memory = |key: &str| -> Result<Option<HostTensor>> {
                match object.get(key) {
                    None | Some(Value::None) => Ok(None),
                    Some(value) => real(path, key, tensor(key, value)?).map(|t| Some(squeeze_leading(t, 5))),
                }
            };
            let memory = (memory("h_state")?, memory("c_state")?);
            (re, im, memory)
        }
        Value::Dict(_) if object.get("x_real").is_some() && object.get("x_imag").is_some() => {
            let re = real(path, "x_real", tensor("x_real", object.get("x_real").unwrap_or(&Value::None))?)?;
            let im = real(path, "x_imag", tensor("x_imag", object.get("x_imag").unwrap_or(&Value::None))?)?;
            (re, im, (None, None))
        }
        _ => {
            return Err(Error::format(
                path,
                "a PyTorch file that holds no lab state: expected a complex psi tensor, a dict with 'psi', \
                 or the first engine's 'x_real' and 'x_imag'",
            ))
        }
    };
    let step = step_entry.or_else(|| sidecar_step(path)).unwrap_or(0);
    Ok(LabState { re, im, memory, step })
}

/// A complex tensor's real and imaginary parts.
fn split_complex(path: &Path, name: &str, tensor: ArchiveTensor) -> Result<(HostTensor, HostTensor)> {
    if !tensor.complex {
        return Err(Error::DType {
            path: path.to_path_buf(),
            name: name.into(),
            found: tensor.dtype.into(),
            expected: "complex64 or complex128".into(),
        });
    }
    let re = tensor.values.iter().step_by(2).copied().collect();
    let im = tensor.values.iter().skip(1).step_by(2).copied().collect();
    let part = |data| squeeze_leading(HostTensor { shape: tensor.shape.clone(), data }, 4);
    Ok((part(re), part(im)))
}

/// A real tensor.
fn real(path: &Path, name: &str, tensor: ArchiveTensor) -> Result<HostTensor> {
    if tensor.complex {
        return Err(Error::DType {
            path: path.to_path_buf(),
            name: name.into(),
            found: tensor.dtype.into(),
            expected: "a real floating-point dtype".into(),
        });
    }
    Ok(HostTensor { shape: tensor.shape, data: tensor.values })
}

/// Drops a leading axis of size 1 from a tensor of rank `rank` (the lab's extra batch axis).
fn squeeze_leading(mut tensor: HostTensor, rank: usize) -> HostTensor {
    if tensor.shape.len() == rank && tensor.shape[0] == 1 {
        tensor.shape.remove(0);
    }
    tensor
}

/// The `step` of the snapshot manager's JSON beside `path`.
fn sidecar_step(path: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(path.with_extension("json")).ok()?;
    serde_json::from_str::<serde_json::Value>(&text).ok()?.get("step")?.as_u64()
}
