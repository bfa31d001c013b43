//! A model's configuration: `config.json` of a model directory.

use serde::{Deserialize, Serialize};

use super::Architecture;
use crate::error::{Error, Result};

/// The lab's default Lindblad decay rate.
pub const DEFAULT_GAMMA: f64 = 0.01;

fn default_gamma() -> f64 {
    DEFAULT_GAMMA
}

/// A model directory's `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// The architecture.
    pub arch: Architecture,
    /// Complex channels per cell (the network sees twice as many real channels).
    pub d_state: usize,
    /// Width of the network (`h` in the U-Net's 2h/4h/8h progression).
    pub hidden_channels: usize,
    /// Default Lindblad decay rate for runs with this model.
    #[serde(default = "default_gamma")]
    pub gamma: f64,
    /// Whether the weights were trained (false for a seeded initialisation).
    #[serde(default)]
    pub trained: bool,
    /// How a run of this model starts when the run does not say (the lab experiment's
    /// inference settings, for an imported experiment).
    #[serde(default, skip_serializing_if = "RunDefaults::is_empty")]
    pub run_defaults: RunDefaults,
    /// Free text shown to users (what the model is, how it was made).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Where the weights came from: the training command and metrics, or the imported
    /// checkpoint's episode and metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<serde_json::Value>,
}

/// How a run starts when neither its flags nor its state file say: what the lab's inference
/// did with the experiment a model was imported from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunDefaults {
    /// The side of the square grid (the lab's `GRID_SIZE_INFERENCE`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grid: Option<usize>,
    /// The initial state, as `--init` reads it (from `INITIAL_STATE_MODE_INFERENCE`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init: Option<String>,
    /// The side of the grid the law was trained on (`GRID_SIZE_TRAINING`). A larger run
    /// starts from a state of this size tiled over its grid, as the lab's engine does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub training_grid: Option<usize>,
}

impl RunDefaults {
    /// Whether nothing is set.
    pub fn is_empty(&self) -> bool {
        *self == RunDefaults::default()
    }
}

impl ModelConfig {
    /// A configuration with its architecture's default gamma, untrained, without provenance.
    pub fn new(arch: Architecture, d_state: usize, hidden_channels: usize) -> Self {
        Self {
            arch,
            d_state,
            hidden_channels,
            gamma: arch.default_gamma(),
            trained: false,
            run_defaults: RunDefaults::default(),
            description: None,
            provenance: None,
        }
    }

    /// Checks the values a file or a flag could get wrong.
    pub fn validate(&self) -> Result<()> {
        if self.d_state == 0 || self.d_state > 4096 {
            return Err(Error::InvalidModel(format!(
                "d_state must be between 1 and 4096, got {}",
                self.d_state
            )));
        }
        if self.hidden_channels == 0 || self.hidden_channels > 4096 {
            return Err(Error::InvalidModel(format!(
                "hidden_channels must be between 1 and 4096, got {}",
                self.hidden_channels
            )));
        }
        if let Some(grid) =
            self.run_defaults.grid.into_iter().chain(self.run_defaults.training_grid).find(|&side| side == 0)
        {
            return Err(Error::InvalidModel(format!("a default grid of {grid} cells is empty")));
        }
        check_gamma(self.gamma)
    }

    /// Checks that a grid fits the architecture (the U-Net pools twice).
    pub fn check_grid(&self, height: usize, width: usize) -> Result<()> {
        check_grid(self.arch, height, width)
    }
}

/// Checks a decay rate: finite and in [0, 1].
pub fn check_gamma(gamma: f64) -> Result<()> {
    if gamma.is_finite() && (0.0..=1.0).contains(&gamma) {
        Ok(())
    } else {
        Err(Error::InvalidModel(format!("gamma must be in [0, 1], got {gamma}")))
    }
}

/// Checks that a grid is non-empty and, for the U-Nets, a multiple of 4 on both sides.
pub fn check_grid(arch: Architecture, height: usize, width: usize) -> Result<()> {
    if height == 0 || width == 0 {
        return Err(Error::InvalidGrid { height, width, reason: "the grid is empty".into() });
    }
    if arch.is_unet() && (!height.is_multiple_of(4) || !width.is_multiple_of(4)) {
        return Err(Error::InvalidGrid {
            height,
            width,
            reason: format!("the {arch} pools twice, so height and width must be multiples of 4"),
        });
    }
    Ok(())
}
