//! Checkpoints of long runs (`atheria run --checkpoint DIR`): everything a run needs to
//! continue exactly where it stopped.
//!
//! ```text
//! DIR/model/          config.json, model.mpk   the law, written once when the run starts
//! DIR/run.safetensors re, im (h, c)            the state after `step` steps (and its memory)
//!                     delta, input             the last step's update and input state (for the
//!                                              metrics and views of the step the run resumes at)
//!                     metadata: settings       the run's settings (JSON), step, checksum
//! ```
//!
//! `run.safetensors` is replaced atomically (temporary file, then rename), so a `kill -9` at
//! any instant leaves the previous complete checkpoint. The tools' random streams depend only on
//! their seed and the step (see [`crate::tools`]), so the step count is all they need.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};

use super::state_file::{encode_state, metadata_value, parse_state, read_tensor, HostState};
use super::{read_file, write_atomic, HostTensor};
use crate::error::{Error, Result};

/// The run's model, inside a checkpoint directory.
pub const MODEL_DIR: &str = "model";
/// The run's state and settings, inside a checkpoint directory.
pub const STATE_FILE: &str = "run.safetensors";
const SETTINGS_KEY: &str = "run_settings";

/// The settings a resumed run must keep: they decide the trajectory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSettings {
    /// (height, width).
    pub grid: (usize, usize),
    /// Universes stepped together.
    pub batch: usize,
    /// The run's total steps, counted from step 0.
    pub steps: u64,
    /// The decay rate.
    pub gamma: f64,
    /// Seed of the initial state.
    pub seed: u64,
    /// How the initial state was made (for the record; the state itself is saved).
    pub init: String,
    /// Tools as `--tool` specs with the step they act at.
    pub tools: Vec<(String, u64)>,
    /// The model as it was described when the run started ("unet d8 h16 (models/default ...)").
    pub model: String,
    /// Output settings of the original run, the defaults of a resumed one.
    pub every: u64,
    /// What frames show.
    pub views: Vec<String>,
    /// The metrics' density threshold.
    pub density_threshold: f64,
    /// Steps between two checkpoints.
    pub checkpoint_every: u64,
}

/// A run stopped after `state.step` steps.
#[derive(Debug, Clone, PartialEq)]
pub struct RunCheckpoint {
    /// The settings the run keeps.
    pub settings: RunSettings,
    /// The state after `state.step` steps, with its memory.
    pub state: HostState,
    /// The last step's update, [B, 2d, H, W] (absent at step 0).
    pub delta: Option<HostTensor>,
    /// The last step's input state, [B, 2d, H, W], when a view needs it.
    pub input: Option<HostTensor>,
}

/// Whether `dir` holds a run checkpoint.
pub fn exists(dir: &Path) -> bool {
    dir.join(STATE_FILE).is_file()
}

/// The model directory inside a checkpoint directory.
pub fn model_dir(dir: &Path) -> PathBuf {
    dir.join(MODEL_DIR)
}

/// Writes (replaces) the checkpoint's state file atomically.
pub fn save(dir: &Path, checkpoint: &RunCheckpoint) -> Result<()> {
    let path = dir.join(STATE_FILE);
    let settings = serde_json::to_string(&checkpoint.settings)
        .map_err(|error| Error::format(&path, format!("cannot encode the run settings: {error}")))?;
    let mut extra: Vec<(&str, &HostTensor)> = Vec::new();
    if let Some(delta) = &checkpoint.delta {
        extra.push(("delta", delta));
    }
    if let Some(input) = &checkpoint.input {
        extra.push(("input", input));
    }
    let metadata = HashMap::from([(SETTINGS_KEY.to_string(), settings)]);
    let bytes = encode_state(&path, &checkpoint.state, &extra, metadata)?;
    write_atomic(&path, &bytes)
}

/// Reads and validates a checkpoint directory's state file.
pub fn load(dir: &Path) -> Result<RunCheckpoint> {
    let path = dir.join(STATE_FILE);
    if !path.is_file() {
        return Err(Error::InvalidRun(format!(
            "{} holds no run checkpoint (no {STATE_FILE}): start the run with --checkpoint {}",
            dir.display(),
            dir.display()
        )));
    }
    let bytes = read_file(&path)?;
    let state = parse_state(&path, &bytes)?;
    let settings = metadata_value(&bytes, SETTINGS_KEY)
        .ok_or_else(|| Error::format(&path, "not a run checkpoint: no run settings in its metadata"))?;
    let settings: RunSettings = serde_json::from_str(&settings)
        .map_err(|error| Error::format(&path, format!("invalid run settings: {error}")))?;
    let parsed = SafeTensors::deserialize(&bytes)
        .map_err(|error| Error::format(&path, format!("not a valid safetensors file: {error}")))?;
    let delta = read_tensor(&path, &parsed, "delta")?;
    let input = read_tensor(&path, &parsed, "input")?;
    let [batch, height, width, d] = state.dims();
    let engine_shape = vec![batch, 2 * d, height, width];
    for (name, tensor) in [("delta", &delta), ("input", &input)] {
        if let Some(tensor) = tensor {
            if tensor.shape != engine_shape {
                return Err(Error::format(
                    &path,
                    format!("'{name}' has shape {:?}, the state needs {engine_shape:?}", tensor.shape),
                ));
            }
        }
    }
    if (height, width) != settings.grid || batch != settings.batch {
        return Err(Error::format(&path, "the state does not match the run settings' grid and batch"));
    }
    Ok(RunCheckpoint { settings, state, delta, input })
}
