//! The live lab's WebSocket protocol (documented in `docs/protocol.md`): JSON commands from a
//! client, JSON messages and binary frames from the server. Every command is validated here,
//! before it reaches the simulation; a bad one is answered with an `error` message and changes
//! nothing.

use serde::{Deserialize, Serialize};

use crate::models::Architecture;
use crate::observables::View;
use crate::training::loss::LossKind;

/// The protocol's version, in the `hello` message and every frame.
pub const PROTOCOL_VERSION: u32 = 1;

/// The largest message a client may send, in bytes.
pub const MAX_CLIENT_MESSAGE: usize = 16 * 1024;

/// The largest grid side a client may ask for.
pub const MAX_GRID: usize = 1024;

/// The most universes a client may ask for.
pub const MAX_BATCH: usize = 16;

/// The slowest frame rate a client may ask for (a frame every ten seconds).
pub const MIN_FPS: f64 = 0.1;

/// The fastest frame rate a client may ask for.
pub const MAX_FPS: f64 = 120.0;

/// A client's command. Unknown commands and unknown fields are refused: the commands without
/// fields are written `Play {}` rather than `Play` because serde ignores extra fields of a unit
/// variant even under `deny_unknown_fields`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
pub enum Command {
    /// Run continuously (ends what is left of a `step`).
    Play {},
    /// Stop stepping (ends what is left of a `step`).
    Pause {},
    /// Take `count` steps, paused; replaces what is left of an earlier `step`.
    Step {
        /// How many, 1 to 10,000.
        #[serde(default = "one")]
        count: u32,
    },
    /// A new universe: what is not given stays as it was.
    Reset {
        /// Seed of the initial state.
        seed: Option<u64>,
        /// `random`, `complex-noise[:S]`, `zeros`.
        init: Option<String>,
        /// [height, width].
        grid: Option<[usize; 2]>,
        /// Universes stepped together.
        batch: Option<usize>,
    },
    /// Change how the run is shown and stepped.
    Set {
        /// Steps between two frames.
        steps_per_frame: Option<u32>,
        /// The most frames per second sent.
        max_fps: Option<f64>,
        /// The decay rate.
        gamma: Option<f64>,
        /// What frames show.
        views: Option<Vec<View>>,
        /// Which universe of the batch frames show.
        universe: Option<usize>,
    },
    /// Apply a tool, written as `--tool` takes it (`vortex:x=10,y=12,m=1,radius=6`). A
    /// click-out stays active after every step until `click-out:enabled=false`.
    Tool {
        /// The tool spec.
        spec: String,
    },
    /// The channel densities and phases of one cell of the universe shown.
    Probe {
        /// Column.
        x: usize,
        /// Row.
        y: usize,
    },
    /// Write the state into the snapshot directory.
    Snapshot {
        /// The file's name without extension (letters, digits, `-`, `_`); a timestamp if absent.
        name: Option<String>,
    },
    /// Continue from a state file of the snapshot directory.
    LoadSnapshot {
        /// Its name, as `snapshot` or an upload gave it.
        name: String,
    },
    /// Record the next `frames` frames as a GIF in the snapshot directory.
    Record {
        /// 1 to 1,000.
        frames: u32,
    },
    /// Go back `back` frames in the history the server keeps.
    Rewind {
        /// How many frames back (1 to the history's length).
        back: usize,
    },
    /// Sparse runs: move the window frames show (its top-left cell).
    Window {
        /// Column.
        x: i64,
        /// Row.
        y: i64,
    },
    /// Sparse runs: place a disc of matter (random channel states, normalised per cell) centred
    /// on cell (x, y) of the unbounded universe.
    Matter {
        /// Column.
        x: i64,
        /// Row.
        y: i64,
        /// The disc's radius in cells, 1 to 32 (default 4).
        #[serde(default = "default_matter_radius")]
        radius: f64,
    },
    /// Start a training run (one at a time).
    TrainStart {
        /// What to train.
        settings: TrainSettings,
    },
    /// Stop the training run after its episode, with a checkpoint.
    TrainStop {},
    /// Load the training run's best (or last) checkpoint into the live view.
    TrainLoad {
        /// `best` (default) or `last`.
        which: Option<String>,
    },
    /// The training run's points after the first `since`.
    TrainHistory {
        /// How many the client has.
        since: usize,
    },
}

fn one() -> u32 {
    1
}

fn default_matter_radius() -> f64 {
    4.0
}

/// What a training run started from the page trains: the settings of `atheria train`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSettings {
    /// Architecture of the new model.
    pub arch: Architecture,
    /// Complex channels per cell.
    pub d_state: usize,
    /// Hidden channels.
    pub hidden: usize,
    /// Side of the training grid.
    pub grid: usize,
    /// Steps unrolled per episode.
    pub qca_steps: usize,
    /// Episodes.
    pub episodes: u64,
    /// Learning rate.
    pub lr: f64,
    /// The loss.
    pub loss: LossKind,
}

/// Why a command was refused.
pub type Refusal = String;

impl Command {
    /// The command's name, for replies.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Play {} => "play",
            Command::Pause {} => "pause",
            Command::Step { .. } => "step",
            Command::Reset { .. } => "reset",
            Command::Set { .. } => "set",
            Command::Tool { .. } => "tool",
            Command::Probe { .. } => "probe",
            Command::Snapshot { .. } => "snapshot",
            Command::LoadSnapshot { .. } => "load_snapshot",
            Command::Record { .. } => "record",
            Command::Rewind { .. } => "rewind",
            Command::Window { .. } => "window",
            Command::Matter { .. } => "matter",
            Command::TrainStart { .. } => "train_start",
            Command::TrainStop {} => "train_stop",
            Command::TrainLoad { .. } => "train_load",
            Command::TrainHistory { .. } => "train_history",
        }
    }

    /// Parses and checks a client's text: values in range, names that are names.
    pub fn parse(text: &str) -> Result<Command, Refusal> {
        if text.len() > MAX_CLIENT_MESSAGE {
            return Err(format!("message of {} bytes; the limit is {MAX_CLIENT_MESSAGE}", text.len()));
        }
        let command: Command = serde_json::from_str(text).map_err(|error| format!("bad command: {error}"))?;
        command.check()?;
        Ok(command)
    }

    fn check(&self) -> Result<(), Refusal> {
        let range = |what: &str, ok: bool, expected: &str| {
            if ok {
                Ok(())
            } else {
                Err(format!("{what} must be {expected}"))
            }
        };
        match self {
            Command::Step { count } => range("count", (1..=10_000).contains(count), "between 1 and 10000"),
            Command::Reset { init, grid, batch, .. } => {
                if let Some(init) = init {
                    let parsed: crate::state::InitialState =
                        init.parse().map_err(|e: crate::Error| e.to_string())?;
                    if matches!(parsed, crate::state::InitialState::File(_)) {
                        return Err(format!("init '{init}' is not random, complex-noise[:S] or zeros (load files with load_snapshot)"));
                    }
                }
                if let Some([height, width]) = grid {
                    let ok = (1..=MAX_GRID).contains(height) && (1..=MAX_GRID).contains(width);
                    range("grid", ok, &format!("between 1 and {MAX_GRID} on both sides"))?;
                }
                match batch {
                    Some(batch) => {
                        range("batch", (1..=MAX_BATCH).contains(batch), &format!("between 1 and {MAX_BATCH}"))
                    }
                    None => Ok(()),
                }
            }
            Command::Set { steps_per_frame, max_fps, gamma, views, .. } => {
                if let Some(steps) = steps_per_frame {
                    range("steps_per_frame", (1..=1000).contains(steps), "between 1 and 1000")?;
                }
                if let Some(fps) = max_fps {
                    let ok = (MIN_FPS..=MAX_FPS).contains(fps);
                    range("max_fps", ok, &format!("between {MIN_FPS} and {MAX_FPS} frames a second"))?;
                }
                if let Some(gamma) = gamma {
                    crate::models::check_gamma(*gamma).map_err(|error| error.to_string())?;
                }
                match views {
                    Some(views) => range("views", !views.is_empty() && views.len() <= 12, "1 to 12 views"),
                    None => Ok(()),
                }
            }
            Command::Tool { spec } => {
                spec.parse::<crate::tools::Tool>().map(|_| ()).map_err(|error| error.to_string())
            }
            Command::Snapshot { name: Some(name) } | Command::LoadSnapshot { name } => check_name(name),
            Command::Record { frames } => range("frames", (1..=1000).contains(frames), "between 1 and 1000"),
            Command::Rewind { back } => range("back", *back >= 1, "at least 1"),
            Command::Matter { radius, .. } => {
                range("radius", (1.0..=32.0).contains(radius), "between 1 and 32")
            }
            Command::TrainStart { settings } => settings.check(),
            Command::TrainLoad { which: Some(which) } => {
                range("which", matches!(which.as_str(), "best" | "last"), "best or last")
            }
            _ => Ok(()),
        }
    }
}

impl TrainSettings {
    fn check(&self) -> Result<(), Refusal> {
        let config = self.config();
        config.validate().map_err(|error| error.to_string())?;
        if self.grid > 256
            || self.qca_steps > 256
            || self.episodes > 1_000_000
            || self.d_state > 64
            || self.hidden > 256
        {
            return Err("training from the page is limited to grid 256, 256 unrolled steps, 10^6 episodes, d_state 64 and hidden 256".into());
        }
        Ok(())
    }

    /// The training configuration these settings make.
    pub fn config(&self) -> crate::training::TrainConfig {
        crate::training::TrainConfig {
            arch: self.arch,
            d_state: self.d_state,
            hidden: self.hidden,
            grid: self.grid,
            qca_steps: self.qca_steps,
            episodes: self.episodes,
            lr: self.lr,
            loss: self.loss,
            checkpoint_every: 10,
            frame_every: 10,
            ..crate::training::TrainConfig::default()
        }
    }
}

/// A name of a file in the snapshot directory: letters, digits, `-` and `_`, 1 to 64 of them,
/// so that a client never names a path.
pub fn check_name(name: &str) -> Result<(), Refusal> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if valid {
        Ok(())
    } else {
        Err(format!("'{name}' is not a name: use 1 to 64 letters, digits, '-' or '_'"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_and_bad_ones_are_refused_with_a_reason() {
        assert_eq!(Command::parse(r#"{"cmd":"step"}"#), Ok(Command::Step { count: 1 }));
        assert_eq!(
            Command::parse(r#"{"cmd":"set","views":["phase","entropy"]}"#),
            Ok(Command::Set {
                steps_per_frame: None,
                max_fps: None,
                gamma: None,
                views: Some(vec![View::Phase, View::Entropy]),
                universe: None
            })
        );
        for (text, needle) in [
            ("not json", "bad command"),
            (r#"{"cmd":"fly"}"#, "unknown variant"),
            (r#"{"cmd":"step","count":0}"#, "count must be"),
            (r#"{"cmd":"step","count":5,"extra":1}"#, "unknown field"),
            (r#"{"cmd":"set","gamma":2}"#, "gamma"),
            (r#"{"cmd":"set","views":["colour"]}"#, "unknown variant"),
            (r#"{"cmd":"tool","spec":"swirl"}"#, "unknown tool"),
            (r#"{"cmd":"snapshot","name":"../etc/passwd"}"#, "is not a name"),
            (r#"{"cmd":"load_snapshot","name":"a/b"}"#, "is not a name"),
            (r#"{"cmd":"reset","grid":[0,8]}"#, "grid must be"),
            (r#"{"cmd":"reset","init":"/etc/passwd"}"#, "load_snapshot"),
        ] {
            let error = Command::parse(text).unwrap_err();
            assert!(error.contains(needle), "{text}: {error}");
        }
        let long = format!(r#"{{"cmd":"tool","spec":"{}"}}"#, "x".repeat(MAX_CLIENT_MESSAGE));
        assert!(Command::parse(&long).unwrap_err().contains("limit"));
    }
}
