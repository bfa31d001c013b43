//! Model directories: `config.json` (architecture, sizes, default gamma, provenance) and
//! `model.mpk` (the network as a burn record, named MessagePack, full precision).
//!
//! `config.json` records the SHA-256 of `model.mpk` (`record_sha256`), and loading verifies
//! it: a flipped byte inside the weights would otherwise load silently as different weights.
//! Directories written before the checksum existed load with a warning.

use std::path::Path;

use burn::module::Module;
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
use burn_store::ModuleSnapshot;

use super::{read_file, sha256_hex, write_atomic};
use crate::error::{Error, Result};
use crate::guard::catch_silently;
use crate::kernels::EngineBackend;
use crate::models::detect::{resolve, ConfigHints};
use crate::models::{Law, Model, ModelConfig};

/// The model's configuration, inside a model directory.
pub const CONFIG_FILE: &str = "config.json";
/// The network's weights, inside a model directory.
pub const RECORD_FILE: &str = "model.mpk";
/// The field of `config.json` that holds `model.mpk`'s SHA-256.
pub const RECORD_CHECKSUM_FIELD: &str = "record_sha256";

type ModelRecorder = NamedMpkBytesRecorder<FullPrecisionSettings>;

/// Writes `DIR/config.json` and `DIR/model.mpk`, each atomically. The record is the bytes
/// burn's `NamedMpkFileRecorder` writes, so burn code can load it directly.
pub fn save_model<B: EngineBackend>(dir: &Path, model: &Model<B>) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|error| Error::io(dir, error))?;
    let record = ModelRecorder::default()
        .record(model.law.clone().into_record(), ())
        .map_err(|error| Error::format(dir.join(RECORD_FILE), format!("cannot encode: {error}")))?;
    let config = config_json(&model.config, &record)
        .map_err(|error| Error::format(dir.join(CONFIG_FILE), error.to_string()))?;
    // The record first: a crash in between leaves the old config naming the old architecture
    // only if the record did not change shape, which a loader detects.
    write_atomic(&dir.join(RECORD_FILE), &record)?;
    write_atomic(&dir.join(CONFIG_FILE), &config)
}

/// `config.json`'s bytes: the configuration and the record's checksum.
fn config_json(config: &ModelConfig, record: &[u8]) -> serde_json::Result<Vec<u8>> {
    let mut value = serde_json::to_value(config)?;
    if let Some(fields) = value.as_object_mut() {
        fields.insert(RECORD_CHECKSUM_FIELD.into(), serde_json::Value::String(sha256_hex(record)));
    }
    serde_json::to_vec_pretty(&value)
}

/// Verifies `record` against the checksum `config.json` recorded (`config_bytes`); a missing
/// checksum (an older directory) is a warning, not an error.
pub fn verify_record(
    config_path: &Path,
    config_bytes: &[u8],
    record_path: &Path,
    record: &[u8],
) -> Result<()> {
    let recorded = serde_json::from_slice::<serde_json::Value>(config_bytes)
        .ok()
        .and_then(|value| value.get(RECORD_CHECKSUM_FIELD)?.as_str().map(str::to_owned));
    match recorded {
        Some(expected) if expected == sha256_hex(record) => Ok(()),
        Some(_) => Err(Error::ChecksumMismatch {
            path: record_path.to_path_buf(),
            what: format!("its SHA-256 differs from the one {} records", config_path.display()),
        }),
        None => {
            tracing::warn!(
                "{}: no {RECORD_CHECKSUM_FIELD} (written by an older atheria): {} loads unverified",
                config_path.display(),
                record_path.display()
            );
            Ok(())
        }
    }
}

/// Loads a model directory.
pub fn load_model<B: EngineBackend>(dir: &Path, device: &B::Device) -> Result<Model<B>> {
    if !dir.is_dir() {
        return Err(Error::io(
            dir,
            std::io::Error::new(std::io::ErrorKind::NotFound, "model directory not found"),
        ));
    }
    let config_path = dir.join(CONFIG_FILE);
    let record_path = dir.join(RECORD_FILE);
    let config_bytes = read_file(&config_path)?;
    let config = parse_config(&config_path, &config_bytes)?;
    let record = read_file(&record_path)?;
    verify_record(&config_path, &config_bytes, &record_path, &record)?;
    model_from_record(config, record, &record_path, device)
}

/// Parses and validates a `config.json`.
pub fn parse_config(path: &Path, bytes: &[u8]) -> Result<ModelConfig> {
    let config: ModelConfig = serde_json::from_slice(bytes)
        .map_err(|error| Error::format(path, format!("invalid model config: {error}")))?;
    config.validate().map_err(|error| Error::format(path, error.to_string()))?;
    Ok(config)
}

/// Builds a model of `config` and fills it from record bytes, checking that every parameter
/// has the shape the configuration implies (burn's loader does not check shapes).
pub fn model_from_record<B: EngineBackend>(
    config: ModelConfig,
    record: Vec<u8>,
    record_path: &Path,
    device: &B::Device,
) -> Result<Model<B>> {
    let skeleton = Model::<B>::seeded(config.clone(), 0, device)?;
    let expected: Vec<(String, Vec<usize>)> = parameter_shapes(&skeleton.law);
    let law = catch_silently(|| -> Result<Law<B>> {
        // burn's own message talks about record formats of old burn versions; what a user
        // needs to know is that this file is damaged or belongs to another model.
        let loaded = ModelRecorder::default().load(record, device).map_err(|error| {
            tracing::debug!("{}: burn's record error: {error}", record_path.display());
            Error::format(
                record_path,
                format!("truncated or corrupt model record: it does not decode as a {} record", config.arch),
            )
        })?;
        Ok(skeleton.law.load_record(loaded))
    })
    .map_err(|panic| Error::format(record_path, format!("corrupt model record: {panic}")))??;
    let found = parameter_shapes(&law);
    for ((name, want), (_, got)) in expected.iter().zip(found.iter()) {
        if want != got {
            return Err(Error::ShapeMismatch {
                path: record_path.to_path_buf(),
                name: name.clone(),
                expected: want.clone(),
                found: got.clone(),
            });
        }
    }
    if expected.len() != found.len() {
        return Err(Error::format(
            record_path,
            format!("record has {} tensors, the config implies {}", found.len(), expected.len()),
        ));
    }
    Ok(Model { config, law })
}

fn parameter_shapes<B: EngineBackend>(law: &Law<B>) -> Vec<(String, Vec<usize>)> {
    let mut shapes: Vec<(String, Vec<usize>)> = law
        .collect(None, None, false)
        .into_iter()
        .map(|snapshot| (snapshot.full_path(), snapshot.shape.to_vec()))
        .collect();
    shapes.sort();
    shapes
}

/// The model shipped in `models/default/`, compiled into the library so that `atheria run`
/// works from any directory.
pub const DEFAULT_MODEL_CONFIG: &[u8] = include_bytes!("../../models/default/config.json");
const DEFAULT_MODEL_RECORD: &[u8] = include_bytes!("../../models/default/model.mpk");

/// Loads the embedded default model.
pub fn default_model<B: EngineBackend>(device: &B::Device) -> Result<Model<B>> {
    let origin = Path::new("<embedded>/models/default");
    let config = parse_config(&origin.join(CONFIG_FILE), DEFAULT_MODEL_CONFIG)?;
    verify_record(
        &origin.join(CONFIG_FILE),
        DEFAULT_MODEL_CONFIG,
        &origin.join(RECORD_FILE),
        DEFAULT_MODEL_RECORD,
    )?;
    model_from_record(config, DEFAULT_MODEL_RECORD.to_vec(), &origin.join(RECORD_FILE), device)
}

/// Where a model comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelSource {
    /// The embedded `models/default/`.
    Default,
    /// A model directory (`config.json` + `model.mpk`).
    Dir(std::path::PathBuf),
    /// PyTorch-named weights (`.pth`, `.pt`, `.safetensors`); what `hints` leaves open is
    /// inferred from the tensors.
    Weights {
        /// The file.
        path: std::path::PathBuf,
        /// What the caller said about the architecture and sizes.
        hints: ConfigHints,
    },
    /// A fresh seeded initialisation.
    Seeded {
        /// The architecture and sizes.
        config: ModelConfig,
        /// Seed of the initialisation.
        seed: u64,
    },
}

impl ModelSource {
    /// Loads or builds the model on `device`.
    pub fn load<B: EngineBackend>(&self, device: &B::Device) -> Result<Model<B>> {
        match self {
            ModelSource::Default => default_model(device),
            ModelSource::Dir(dir) => load_model(dir, device),
            ModelSource::Weights { path, hints } => {
                let weights = crate::io::weights::WeightFile::read(path)?;
                let resolved = resolve(&weights, hints)?;
                for note in &resolved.notes {
                    tracing::info!("{note}");
                }
                Model::from_weights(resolved.config, &weights, device)
            }
            ModelSource::Seeded { config, seed } => Model::seeded(config.clone(), *seed, device),
        }
    }

    /// A short description for logs ("models/default (embedded)", a path, ...).
    pub fn describe(&self) -> String {
        match self {
            ModelSource::Default => "models/default (embedded)".into(),
            ModelSource::Dir(dir) => dir.display().to_string(),
            ModelSource::Weights { path, .. } => path.display().to_string(),
            ModelSource::Seeded { seed, .. } => format!("untrained, seed {seed}"),
        }
    }
}
