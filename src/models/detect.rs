//! Telling a checkpoint's architecture and sizes from its tensor names and shapes, so that the
//! lab's files load without flags:
//!
//! - `net.0.weight` [h, 2d, 1, 1]: the MLP;
//! - `inc.conv_block.0.weight` [h, 2d, 3, 3]: a U-Net, with
//!   - `conv_gates.weight`: the ConvLSTM U-Net,
//!   - a norm weight without a bias (`inc.conv_block.1.weight` only): RMSNorm blocks,
//!   - otherwise GroupNorm blocks: `unet` or `unet-unitary`, which have identical weights (the
//!     unitary update is not in the file), so `unet` unless the caller says otherwise.
//!
//! Flags that the tensors contradict are errors; everything else about the names and shapes is
//! checked when the model is built from the weights.

use std::path::Path;

use super::{Architecture, ModelConfig};
use crate::error::{Error, Result};
use crate::io::weights::WeightFile;

/// What the caller said about the model (`--arch`, `--d-state`, `--hidden`); `None` is inferred.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConfigHints {
    /// `--arch`.
    pub arch: Option<Architecture>,
    /// `--d-state`.
    pub d_state: Option<usize>,
    /// `--hidden`.
    pub hidden: Option<usize>,
}

impl ConfigHints {
    /// Whether every hint is given (then nothing needs inferring).
    pub fn is_complete(&self) -> bool {
        self.arch.is_some() && self.d_state.is_some() && self.hidden.is_some()
    }
}

/// A configuration and, in words, what was inferred to reach it.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    /// The configuration.
    pub config: ModelConfig,
    /// One line per inference ("inferred ... from tensor ..."); empty when every flag was given.
    pub notes: Vec<String>,
}

/// What the tensors say.
#[derive(Debug, Clone, PartialEq)]
struct Layout {
    /// Architectures the weights fit (two for a GroupNorm U-Net), the default first.
    candidates: Vec<Architecture>,
    /// The tensor and the words that decide the architecture, for messages.
    arch_evidence: (String, String),
    d_state: usize,
    hidden: usize,
    /// The tensor whose shape gives the sizes, and that shape.
    size_evidence: (String, Vec<usize>),
}

const MLP_INPUT: &str = "net.0.weight";
const UNET_INPUT: &str = "inc.conv_block.0.weight";
const GATES: &str = "conv_gates.weight";
const FIRST_NORM_WEIGHT: &str = "inc.conv_block.1.weight";
const FIRST_NORM_BIAS: &str = "inc.conv_block.1.bias";

fn unknown(path: &Path, reason: impl Into<String>) -> Error {
    Error::UnknownLayout { path: path.to_path_buf(), reason: reason.into() }
}

/// `[out, 2d, k, k]` of the first layer to (d_state, hidden).
fn sizes_from(path: &Path, name: &str, shape: &[usize], kernel: usize) -> Result<(usize, usize)> {
    match shape {
        &[hidden, input, k1, k2]
            if input % 2 == 0 && input > 0 && hidden > 0 && k1 == kernel && k2 == kernel =>
        {
            Ok((input / 2, hidden))
        }
        _ => Err(unknown(
            path,
            format!(
                "tensor '{name}' has shape {shape:?}, expected [hidden, 2 * d_state, {kernel}, {kernel}]"
            ),
        )),
    }
}

fn layout(weights: &WeightFile) -> Result<Layout> {
    let path = &weights.path;
    let has = |name: &str| weights.tensors.contains_key(name);
    let shape = |name: &str| weights.tensors.get(name).map(|tensor| tensor.shape.clone());
    match (shape(MLP_INPUT), shape(UNET_INPUT)) {
        (Some(_), Some(_)) => {
            Err(unknown(path, format!("it holds both '{MLP_INPUT}' (MLP) and '{UNET_INPUT}' (U-Net)")))
        }
        (Some(first), None) => {
            let (d_state, hidden) = sizes_from(path, MLP_INPUT, &first, 1)?;
            Ok(Layout {
                candidates: vec![Architecture::Mlp],
                arch_evidence: (MLP_INPUT.into(), "belongs to the mlp".into()),
                d_state,
                hidden,
                size_evidence: (MLP_INPUT.into(), first),
            })
        }
        (None, Some(first)) => {
            let (d_state, hidden) = sizes_from(path, UNET_INPUT, &first, 3)?;
            let rms = has(FIRST_NORM_WEIGHT) && !has(FIRST_NORM_BIAS);
            let memory = has(GATES);
            let (candidates, arch_evidence) = match (rms, memory) {
                (true, true) => {
                    return Err(unknown(
                        path,
                        "RMSNorm blocks with a ConvLSTM memory ('conv_gates.weight') is not an architecture of the registry",
                    ))
                }
                (true, false) => (
                    vec![Architecture::UnetUnitaryRmsnorm],
                    (FIRST_NORM_WEIGHT.to_string(), "is an RMSNorm weight (no bias): unet-unitary-rmsnorm".to_string()),
                ),
                (false, true) => (
                    vec![Architecture::UnetConvlstm],
                    (GATES.to_string(), "is a ConvLSTM gate: unet-convlstm".to_string()),
                ),
                (false, false) => (
                    vec![Architecture::Unet, Architecture::UnetUnitary],
                    (
                        if has(FIRST_NORM_BIAS) { FIRST_NORM_BIAS } else { GATES }.to_string(),
                        if has(FIRST_NORM_BIAS) {
                            "is a GroupNorm bias and there is no 'conv_gates.weight': unet or unet-unitary"
                        } else {
                            "is absent: unet or unet-unitary"
                        }
                        .to_string(),
                    ),
                ),
            };
            Ok(Layout {
                candidates,
                arch_evidence,
                d_state,
                hidden,
                size_evidence: (UNET_INPUT.into(), first),
            })
        }
        (None, None) => {
            let sample: Vec<&str> = weights.tensors.keys().take(4).map(String::as_str).collect();
            Err(unknown(
                path,
                format!(
                    "no '{UNET_INPUT}' (U-Net) or '{MLP_INPUT}' (MLP) among its {} tensor(s) ({}{})",
                    weights.tensors.len(),
                    sample.join(", "),
                    if weights.tensors.len() > sample.len() { ", ..." } else { "" }
                ),
            ))
        }
    }
}

/// The configuration of `weights`: the hints where given (checked against the tensors), the
/// rest inferred. With every hint given, a file whose layout is not recognised is still tried
/// (building the model then names the first missing tensor).
pub fn resolve(weights: &WeightFile, hints: &ConfigHints) -> Result<Resolved> {
    let path = &weights.path;
    let found = match layout(weights) {
        Ok(found) => found,
        Err(error) => {
            return match (hints.arch, hints.d_state, hints.hidden) {
                (Some(arch), Some(d_state), Some(hidden)) => {
                    Ok(Resolved { config: ModelConfig::new(arch, d_state, hidden), notes: vec![] })
                }
                _ => Err(error),
            }
        }
    };
    let mismatch = |flag: &str, given: String, tensor: &str, found: String| Error::FlagMismatch {
        path: path.clone(),
        flag: flag.into(),
        given,
        tensor: tensor.into(),
        found,
    };
    let (size_tensor, size_shape) = &found.size_evidence;
    let mut notes = Vec::new();
    let arch = match hints.arch {
        Some(arch) if found.candidates.contains(&arch) => arch,
        Some(arch) => {
            let (tensor, words) = &found.arch_evidence;
            return Err(mismatch("--arch", arch.to_string(), tensor, words.clone()));
        }
        None => found.candidates[0],
    };
    if let Some(d_state) = hints.d_state {
        if d_state != found.d_state {
            let words = format!("has shape {size_shape:?}: d_state {}", found.d_state);
            return Err(mismatch("--d-state", d_state.to_string(), size_tensor, words));
        }
    }
    if let Some(hidden) = hints.hidden {
        if hidden != found.hidden {
            let words = format!("has shape {size_shape:?}: hidden {}", found.hidden);
            return Err(mismatch("--hidden", hidden.to_string(), size_tensor, words));
        }
    }
    if hints.arch.is_none() {
        let (tensor, words) = &found.arch_evidence;
        notes.push(format!("inferred {arch}: tensor '{tensor}' {words}"));
        if found.candidates.len() > 1 {
            notes.push(format!(
                "a {} has the same weights as a {}: imported as {arch}; pass --arch {} for the {} update",
                found.candidates[0],
                found.candidates[1],
                found.candidates[1],
                if found.candidates[1].is_unitary() { "unitary" } else { "additive" }
            ));
        }
    }
    if hints.d_state.is_none() || hints.hidden.is_none() {
        notes.push(format!(
            "inferred d_state {} and hidden {} from tensor '{size_tensor}' {size_shape:?}",
            found.d_state, found.hidden
        ));
    }
    let config = ModelConfig::new(arch, found.d_state, found.hidden);
    config.validate().map_err(|error| unknown(path, error.to_string()))?;
    Ok(Resolved { config, notes })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::io::weights::WeightOrigin;
    use crate::io::HostTensor;

    fn file(tensors: &[(&str, &[usize])]) -> WeightFile {
        let tensors: BTreeMap<String, HostTensor> = tensors
            .iter()
            .map(|(name, shape)| {
                let count = shape.iter().product();
                (name.to_string(), HostTensor { shape: shape.to_vec(), data: vec![0.0; count] })
            })
            .collect();
        WeightFile { path: "w.pth".into(), tensors, origin: WeightOrigin::default() }
    }

    #[test]
    fn a_bad_first_layer_shape_is_unknown() {
        let odd = file(&[(UNET_INPUT, &[7, 5, 3, 3])]);
        let error = resolve(&odd, &ConfigHints::default()).unwrap_err();
        assert!(matches!(error, Error::UnknownLayout { .. }), "{error}");
        assert!(error.to_string().contains("[7, 5, 3, 3]"), "{error}");
        let flat = file(&[(MLP_INPUT, &[16, 6])]);
        assert!(matches!(resolve(&flat, &ConfigHints::default()), Err(Error::UnknownLayout { .. })));
    }

    #[test]
    fn rmsnorm_with_memory_is_not_an_architecture() {
        let both = file(&[(UNET_INPUT, &[7, 6, 3, 3]), (FIRST_NORM_WEIGHT, &[7]), (GATES, &[112, 56, 3, 3])]);
        let error = resolve(&both, &ConfigHints::default()).unwrap_err();
        assert!(error.to_string().contains("not an architecture"), "{error}");
    }

    #[test]
    fn complete_hints_are_used_when_the_layout_is_unknown() {
        let strange = file(&[("encoder.weight", &[3])]);
        let hints = ConfigHints { arch: Some(Architecture::Mlp), d_state: Some(2), hidden: Some(4) };
        let resolved = resolve(&strange, &hints).unwrap();
        assert_eq!(resolved.config, ModelConfig::new(Architecture::Mlp, 2, 4));
        assert!(resolved.notes.is_empty());
    }
}
