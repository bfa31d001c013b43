//! Telling a checkpoint's architecture and sizes, so that the lab's files load without flags.
//!
//! A file that records the lab's class (a TorchScript archive) names its architecture exactly
//! ([`Architecture::from_lab_class`]). Otherwise the tensor names and shapes decide:
//!
//! - `net.0.weight` [h, 2d, 1, 1]: the MLP;
//! - `conv_neighbors.weight` [16d, 1, 3, 3] with `processing_net.0.weight` [h, 16d, 1, 1]: the
//!   first engine's `qca-operator-deep` when `M_bias_real` is there, else `deep-qca`;
//! - `inc.conv_block.0.weight` [h, 2d, 3, 3]: a U-Net, with
//!   - `conv_gates.weight`: the ConvLSTM U-Net,
//!   - a norm weight without a bias (`inc.conv_block.1.weight` only): RMSNorm blocks, imported
//!     as `unet-rmsnorm`, as the lab's engine runs `UNetUnitaryRMSNorm` (the unitary product
//!     only for a class named `UNetUnitary`),
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

/// What the file says.
#[derive(Debug, Clone, PartialEq)]
struct Layout {
    /// Architectures the weights fit (two for a U-Net whose update is not in the file), the one
    /// the lab ran first.
    candidates: Vec<Architecture>,
    /// The tensor (or class) and the words that decide the architecture, for messages.
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
const NEIGHBOURS: &str = "conv_neighbors.weight";
const PROCESSING_INPUT: &str = "processing_net.0.weight";
const FIRST_ENGINE_BIAS: &str = "M_bias_real";

fn unknown(path: &Path, reason: impl Into<String>) -> Error {
    Error::UnknownLayout { path: path.to_path_buf(), reason: reason.into() }
}

/// `[out, inputs_per_d * d, k, k]` of the first layer to (d_state, hidden).
fn sizes_from(
    path: &Path,
    name: &str,
    shape: &[usize],
    kernel: usize,
    inputs_per_d: usize,
) -> Result<(usize, usize)> {
    match shape {
        &[hidden, input, k1, k2]
            if input % inputs_per_d == 0 && input > 0 && hidden > 0 && k1 == kernel && k2 == kernel =>
        {
            Ok((input / inputs_per_d, hidden))
        }
        _ => Err(unknown(
            path,
            format!(
                "tensor '{name}' has shape {shape:?}, expected [hidden, {inputs_per_d} * d_state, {kernel}, {kernel}]"
            ),
        )),
    }
}

/// The first tensor of an architecture, with its kernel and inputs per complex channel.
fn first_layer(arch: Architecture) -> (&'static str, usize, usize) {
    if arch.is_unet() {
        (UNET_INPUT, 3, 2)
    } else if arch.reads_neighbours() {
        (PROCESSING_INPUT, 1, 16)
    } else {
        (MLP_INPUT, 1, 2)
    }
}

fn layout_of_class(weights: &WeightFile, class: &str) -> Result<Layout> {
    let path = &weights.path;
    let arch = Architecture::from_lab_class(class).ok_or_else(|| {
        unknown(
            path,
            format!(
                "it records the lab's class '{class}', which atheria does not implement (it implements \
                 UNet, UNetUnitary, UNetUnitaryRMSNorm, UNetConvLSTM, MLP, DeepQCA and QCA_Operator_Deep)"
            ),
        )
    })?;
    let (tensor, kernel, per_d) = first_layer(arch);
    let shape = weights
        .tensors
        .get(tensor)
        .map(|tensor| tensor.shape.clone())
        .ok_or_else(|| unknown(path, format!("it records class '{class}' but holds no '{tensor}'")))?;
    let (d_state, hidden) = sizes_from(path, tensor, &shape, kernel, per_d)?;
    let words = if arch == Architecture::UnetRmsnorm {
        format!(
            "is the lab's '{class}', which its engine runs without the unitary product (applied only to a \
             class named UNetUnitary): {arch}"
        )
    } else {
        format!("is the lab's '{class}': {arch}")
    };
    Ok(Layout {
        candidates: vec![arch],
        arch_evidence: ("class".into(), words),
        d_state,
        hidden,
        size_evidence: (tensor.into(), shape),
    })
}

fn layout(weights: &WeightFile) -> Result<Layout> {
    if let Some(class) = &weights.origin.class_name {
        return layout_of_class(weights, class);
    }
    let path = &weights.path;
    let has = |name: &str| weights.tensors.contains_key(name);
    let shape = |name: &str| weights.tensors.get(name).map(|tensor| tensor.shape.clone());
    let firsts: Vec<&str> =
        [MLP_INPUT, UNET_INPUT, NEIGHBOURS].into_iter().filter(|name| has(name)).collect();
    if firsts.len() > 1 {
        return Err(unknown(
            path,
            format!("it holds the first layers of several laws: {}", firsts.join(", ")),
        ));
    }
    let layout = |candidates: Vec<Architecture>, evidence: (&str, String), tensor: &str| -> Result<Layout> {
        let (_, kernel, per_d) = first_layer(candidates[0]);
        let found = shape(tensor)
            .ok_or_else(|| unknown(path, format!("it holds '{}' but no '{tensor}'", evidence.0)))?;
        let (d_state, hidden) = sizes_from(path, tensor, &found, kernel, per_d)?;
        Ok(Layout {
            candidates,
            arch_evidence: (evidence.0.to_string(), evidence.1),
            d_state,
            hidden,
            size_evidence: (tensor.into(), found),
        })
    };
    match firsts.first().copied() {
        Some(MLP_INPUT) => {
            layout(vec![Architecture::Mlp], (MLP_INPUT, "belongs to the mlp".into()), MLP_INPUT)
        }
        Some(NEIGHBOURS) if has(FIRST_ENGINE_BIAS) => layout(
            vec![Architecture::QcaOperatorDeep],
            (FIRST_ENGINE_BIAS, "is the first engine's learned bias: qca-operator-deep".into()),
            PROCESSING_INPUT,
        ),
        Some(NEIGHBOURS) => layout(
            vec![Architecture::DeepQca],
            (NEIGHBOURS, "is the neighbour sum without the first engine's bias: deep-qca".into()),
            PROCESSING_INPUT,
        ),
        Some(_) => {
            let rms = has(FIRST_NORM_WEIGHT) && !has(FIRST_NORM_BIAS);
            let (candidates, evidence) = match (rms, has(GATES)) {
                (true, true) => {
                    return Err(unknown(
                        path,
                        "RMSNorm blocks with a ConvLSTM memory ('conv_gates.weight') is not an architecture of the registry",
                    ))
                }
                (true, false) => (
                    vec![Architecture::UnetRmsnorm, Architecture::UnetUnitaryRmsnorm],
                    (FIRST_NORM_WEIGHT, "is an RMSNorm weight (no bias): unet-rmsnorm or unet-unitary-rmsnorm".to_string()),
                ),
                (false, true) => {
                    (vec![Architecture::UnetConvlstm], (GATES, "is a ConvLSTM gate: unet-convlstm".to_string()))
                }
                (false, false) if has(FIRST_NORM_BIAS) => (
                    vec![Architecture::Unet, Architecture::UnetUnitary],
                    (
                        FIRST_NORM_BIAS,
                        "is a GroupNorm bias and there is no 'conv_gates.weight': unet or unet-unitary".to_string(),
                    ),
                ),
                (false, false) => {
                    (vec![Architecture::Unet, Architecture::UnetUnitary], (GATES, "is absent: unet or unet-unitary".to_string()))
                }
            };
            layout(candidates, evidence, UNET_INPUT)
        }
        None => {
            let sample: Vec<&str> = weights.tensors.keys().take(4).map(String::as_str).collect();
            Err(unknown(
                path,
                format!(
                    "no '{UNET_INPUT}' (U-Net), '{MLP_INPUT}' (MLP) or '{NEIGHBOURS}' (DeepQCA) among its {} \
                     tensor(s) ({}{})",
                    weights.tensors.len(),
                    sample.join(", "),
                    if weights.tensors.len() > sample.len() { ", ..." } else { "" }
                ),
            ))
        }
    }
}

/// Why the first of two candidates is the default, for the note that offers the other.
fn default_reason(first: Architecture, second: Architecture) -> String {
    match (first, second) {
        (Architecture::UnetRmsnorm, _) => format!(
            "the lab's engine runs its UNetUnitaryRMSNorm without the unitary product (it applies it only to a \
             class named UNetUnitary): imported as {first}; pass --arch {second} for the product"
        ),
        _ => format!(
            "a {first} has the same weights as a {second}: imported as {first}; pass --arch {second} for the {} update",
            if second.is_unitary() { "unitary" } else { "additive" }
        ),
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
                (Some(arch), Some(d_state), Some(hidden)) if weights.origin.class_name.is_none() => {
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
        let what =
            if tensor == "class" { "the archive's class".to_string() } else { format!("tensor '{tensor}'") };
        notes.push(format!("inferred {arch}: {what} {words}"));
        if let [first, second] = found.candidates[..] {
            notes.push(default_reason(first, second));
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
    fn rmsnorm_u_nets_import_as_the_lab_ran_them() {
        let rms = file(&[(UNET_INPUT, &[7, 6, 3, 3]), (FIRST_NORM_WEIGHT, &[7])]);
        let resolved = resolve(&rms, &ConfigHints::default()).unwrap();
        assert_eq!(resolved.config.arch, Architecture::UnetRmsnorm);
        assert!(
            resolved.notes.iter().any(|note| note.contains("--arch unet-unitary-rmsnorm")),
            "{:?}",
            resolved.notes
        );
        let hints = ConfigHints { arch: Some(Architecture::UnetUnitaryRmsnorm), ..ConfigHints::default() };
        assert_eq!(resolve(&rms, &hints).unwrap().config.arch, Architecture::UnetUnitaryRmsnorm);
    }

    #[test]
    fn the_neighbour_laws_are_told_apart_by_the_first_engines_bias() {
        let deep = file(&[(NEIGHBOURS, &[48, 1, 3, 3]), (PROCESSING_INPUT, &[10, 48, 1, 1])]);
        let resolved = resolve(&deep, &ConfigHints::default()).unwrap();
        assert_eq!(
            (resolved.config.arch, resolved.config.d_state, resolved.config.hidden_channels),
            (Architecture::DeepQca, 3, 10)
        );
        let first = file(&[
            (NEIGHBOURS, &[48, 1, 3, 3]),
            (PROCESSING_INPUT, &[10, 48, 1, 1]),
            (FIRST_ENGINE_BIAS, &[3]),
        ]);
        let resolved = resolve(&first, &ConfigHints::default()).unwrap();
        assert_eq!(resolved.config.arch, Architecture::QcaOperatorDeep);
        assert_eq!(resolved.config.gamma, 0.0, "the first engine had no decay");
    }

    #[test]
    fn a_recorded_class_decides_and_unknown_classes_are_named() {
        let mut unet = file(&[(UNET_INPUT, &[7, 6, 3, 3]), (FIRST_NORM_BIAS, &[7])]);
        unet.origin.class_name = Some("UNetUnitary".into());
        assert_eq!(resolve(&unet, &ConfigHints::default()).unwrap().config.arch, Architecture::UnetUnitary);
        unet.origin.class_name = Some("SNNUNet".into());
        let error = resolve(&unet, &ConfigHints::default()).unwrap_err();
        assert!(
            matches!(error, Error::UnknownLayout { .. }) && error.to_string().contains("'SNNUNet'"),
            "{error}"
        );
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
