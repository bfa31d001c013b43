//! The lab's experiments: a folder with the experiment's `config.json` and its checkpoints, or
//! the `.zip` the lab exports (`config.json` at its root, the checkpoints under
//! `checkpoints/`).
//!
//! The lab keeps an experiment's `config.json` in `output/experiments/NAME/` and its
//! checkpoints in `output/training_checkpoints/NAME/`; both layouts are found from the
//! experiment's folder. Its newest checkpoint is the one with the highest episode in its name
//! (`checkpoint_ep100.pth`), as the lab's `get_latest_checkpoint` picks it.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};

/// The settings of a lab experiment that decide how its law runs.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct LabConfig {
    /// `EXPERIMENT_NAME`.
    #[serde(rename = "EXPERIMENT_NAME", default)]
    pub name: Option<String>,
    /// `MODEL_ARCHITECTURE`: a key of the lab's `MODEL_MAP` (`UNET_UNITARY`, ...).
    #[serde(rename = "MODEL_ARCHITECTURE")]
    pub architecture: String,
    /// `MODEL_PARAMS`: `d_state` and `hidden_channels`.
    #[serde(rename = "MODEL_PARAMS", default)]
    pub params: LabModelParams,
    /// `GAMMA_DECAY`.
    #[serde(rename = "GAMMA_DECAY", default)]
    pub gamma: Option<f64>,
    /// `GRID_SIZE_TRAINING`.
    #[serde(rename = "GRID_SIZE_TRAINING", default)]
    pub training_grid: Option<usize>,
    /// `GRID_SIZE_INFERENCE`.
    #[serde(rename = "GRID_SIZE_INFERENCE", default)]
    pub inference_grid: Option<usize>,
    /// `INITIAL_STATE_MODE_INFERENCE`: `complex_noise`, `random`, `zeros`, ...
    #[serde(rename = "INITIAL_STATE_MODE_INFERENCE", default)]
    pub initial_state: Option<String>,
}

/// `MODEL_PARAMS`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct LabModelParams {
    /// Complex channels per cell.
    pub d_state: Option<usize>,
    /// The network's width.
    pub hidden_channels: Option<usize>,
}

/// An experiment found at a path: its settings and its newest checkpoint.
#[derive(Debug, Clone)]
pub struct LabExperiment {
    /// The settings.
    pub config: LabConfig,
    /// Where the checkpoint is (`DIR/checkpoints/checkpoint_ep100.pth`, `EXPORT.zip:checkpoints/...`).
    pub checkpoint_name: PathBuf,
    /// The checkpoint's bytes.
    pub checkpoint: Vec<u8>,
}

/// The episode a checkpoint's name carries (`..._ep100.pth`, `..._100.pth`); 0 when none, as
/// the lab counts it.
fn episode_of(file_name: &str) -> u64 {
    let stem = file_name.rsplit_once('.').map_or(file_name, |(stem, _)| stem);
    let last = stem.rsplit('_').next().unwrap_or(stem);
    last.trim_start_matches("ep").parse().unwrap_or(0)
}

/// The newest of `names` (the highest episode; among equals the last by name).
fn newest<'a>(names: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    names.filter(|name| name.ends_with(".pth")).max_by_key(|name| (episode_of(name), name.to_string()))
}

fn parse_config(path: &Path, bytes: &[u8]) -> Result<LabConfig> {
    serde_json::from_slice(bytes)
        .map_err(|error| Error::format(path, format!("not a lab experiment's config.json: {error}")))
}

/// Reads the experiment at `path` (a folder with `config.json`, or an exported `.zip`);
/// `None` when `path` is neither.
pub fn read_experiment(path: &Path) -> Result<Option<LabExperiment>> {
    if path.is_dir() {
        return read_folder(path).map(Some);
    }
    let is_zip_export = path.extension().is_some_and(|ext| ext.eq_ignore_ascii_case("zip"));
    if is_zip_export {
        return read_zip(path).map(Some);
    }
    Ok(None)
}

fn read_folder(dir: &Path) -> Result<LabExperiment> {
    let config_path = dir.join("config.json");
    if !config_path.is_file() {
        return Err(Error::format(dir, "a folder without config.json is not a lab experiment"));
    }
    let config = parse_config(&config_path, &super::read_file(&config_path)?)?;
    // The lab's own layout first, then the export's and a folder of checkpoints beside it.
    let mut places: Vec<PathBuf> =
        vec![dir.join("checkpoints"), dir.join("training_checkpoints"), dir.to_path_buf()];
    if let (Some(name), Some(output)) = (dir.file_name(), dir.parent().and_then(Path::parent)) {
        places.insert(0, output.join("training_checkpoints").join(name));
    }
    for place in places {
        let Ok(entries) = std::fs::read_dir(&place) else { continue };
        let names: Vec<String> =
            entries.filter_map(|entry| entry.ok()?.file_name().into_string().ok()).collect();
        if let Some(name) = newest(names.iter().map(String::as_str)) {
            let checkpoint_name = place.join(name);
            let checkpoint = super::read_file(&checkpoint_name)?;
            return Ok(LabExperiment { config, checkpoint_name, checkpoint });
        }
    }
    Err(Error::format(dir, "the experiment has no checkpoint (.pth) in checkpoints/, training_checkpoints/ or beside its config.json"))
}

fn read_zip(path: &Path) -> Result<LabExperiment> {
    let file = std::fs::File::open(path).map_err(|error| Error::io(path, error))?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file))
        .map_err(|error| Error::format(path, format!("not a zip file: {error}")))?;
    let names: Vec<String> = zip.file_names().map(str::to_string).collect();
    let config_name = names
        .iter()
        .filter(|name| name.rsplit('/').next() == Some("config.json"))
        .min_by_key(|name| name.matches('/').count())
        .ok_or_else(|| Error::format(path, "the zip holds no config.json: not an exported lab experiment"))?;
    let root = config_name.trim_end_matches("config.json");
    let mut read = |name: &str| -> Result<Vec<u8>> {
        let mut entry =
            zip.by_name(name).map_err(|error| Error::format(path, format!("'{name}': {error}")))?;
        let mut bytes = Vec::new();
        entry
            .read_to_end(&mut bytes)
            .map_err(|error| Error::format(path, format!("corrupt entry '{name}': {error}")))?;
        Ok(bytes)
    };
    let config = parse_config(&path.join(config_name), &read(config_name)?)?;
    let under = |folder: &str| {
        let prefix = format!("{root}{folder}");
        newest(
            names
                .iter()
                .filter(|name| name.starts_with(&prefix) && !name[prefix.len()..].contains('/'))
                .map(String::as_str),
        )
        .map(str::to_string)
    };
    let name = under("checkpoints/")
        .or_else(|| under("training_checkpoints/"))
        .or_else(|| under(""))
        .ok_or_else(|| Error::format(path, "the exported experiment holds no checkpoint (.pth)"))?;
    let checkpoint = read(&name)?;
    Ok(LabExperiment { config, checkpoint_name: path.join(&name), checkpoint })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_checkpoint_has_the_highest_episode() {
        let names = [
            "best_model.pth",
            "checkpoint_ep90.pth",
            "checkpoint_ep100.pth",
            "snapshot_ep200.pt",
            "notes.txt",
        ];
        assert_eq!(newest(names.into_iter()), Some("checkpoint_ep100.pth"));
        assert_eq!(episode_of("PEF_Deep_v3_G256_Eps1_100.pth"), 100);
        assert_eq!(episode_of("last_checkpoint.pth"), 0);
        assert_eq!(
            newest(["best_model.pth", "last_checkpoint.pth"].into_iter()),
            Some("last_checkpoint.pth")
        );
    }

    #[test]
    fn configs_read_the_labs_keys() {
        let text = br#"{"EXPERIMENT_NAME": "x", "MODEL_ARCHITECTURE": "UNET_UNITARY",
            "MODEL_PARAMS": {"d_state": 4, "hidden_channels": 8}, "GAMMA_DECAY": 0.02,
            "GRID_SIZE_TRAINING": 32, "INITIAL_STATE_MODE_INFERENCE": "complex_noise", "LR_RATE_M": 1e-4}"#;
        let config = parse_config(Path::new("config.json"), text).unwrap();
        assert_eq!(config.architecture, "UNET_UNITARY");
        assert_eq!((config.params.d_state, config.params.hidden_channels), (Some(4), Some(8)));
        assert_eq!((config.gamma, config.training_grid), (Some(0.02), Some(32)));
        assert!(parse_config(Path::new("config.json"), b"{}").is_err());
    }
}
