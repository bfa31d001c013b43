//! Every message the live lab sends, typed: the JSON each one serialises to is the protocol
//! (docs/protocol.md), as [`super::protocol::Command`] is for what clients send.

use serde::Serialize;

use super::protocol::PROTOCOL_VERSION;
use super::training::Point;
use crate::observables::View;

/// A message to a client, tagged by its `type`.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum Outgoing {
    /// The first message of every connection: what this lab has.
    Hello(Box<Hello>),
    /// The world's state, after every change and on the clock.
    Status(Box<Status>),
    /// A command was carried out.
    Ack {
        /// The command's name.
        cmd: &'static str,
        /// The step count after it.
        step: u64,
    },
    /// A command was refused or failed, or (without `cmd`) the simulation failed.
    Error {
        /// The command, when the error answers one.
        #[serde(skip_serializing_if = "Option::is_none")]
        cmd: Option<String>,
        /// What went wrong and what to do.
        error: String,
    },
    /// The channels of one cell.
    Probe {
        /// Column.
        x: usize,
        /// Row.
        y: usize,
        /// The universe of the batch.
        universe: usize,
        /// The step count.
        step: u64,
        /// `|psi_c|^2` per channel.
        densities: Vec<f32>,
        /// `arg psi_c` per channel.
        phases: Vec<f32>,
    },
    /// A snapshot was written.
    Snapshot {
        /// Its name.
        name: String,
        /// Where to download it.
        url: String,
    },
    /// A recording was written.
    Recorded {
        /// Its name.
        name: String,
        /// Where to download the GIF.
        url: String,
    },
    /// An uploaded state file was checked and kept.
    Uploaded {
        /// Its name.
        name: String,
        /// Its [B, H, W, d].
        dims: [usize; 4],
    },
    /// A training run started.
    Training {
        /// Its directory.
        dir: String,
    },
    /// A checkpoint of the training run became the law.
    Loaded {
        /// `best` or `last`.
        which: String,
        /// The checkpoint's directory.
        dir: String,
        /// The law, described.
        model: String,
    },
    /// The training run's episodes from `since` on.
    TrainHistory {
        /// The first episode index sent.
        since: usize,
        /// The episodes.
        points: Vec<Point>,
    },
}

impl Outgoing {
    /// An error message, answering `cmd` when given.
    pub(crate) fn error(cmd: Option<&str>, error: impl Into<String>) -> Self {
        Outgoing::Error { cmd: cmd.map(str::to_string), error: error.into() }
    }

    /// The message as sent.
    pub(crate) fn text(&self) -> String {
        // Every field serialises (strings, numbers, arrays): this cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// What the lab offers, for the page's controls.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Hello {
    pub version: u32,
    pub model: String,
    pub device: String,
    pub sparse: bool,
    pub views: Vec<NamedView>,
    pub tools: Vec<NamedTool>,
    pub archs: Vec<String>,
    pub losses: Vec<String>,
    pub colormaps: Colormaps,
}

/// A view and the colormap the page draws it with.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct NamedView {
    pub name: String,
    pub colormap: &'static str,
}

/// A tool and the parameters it takes.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct NamedTool {
    pub name: String,
    pub keys: &'static [&'static str],
}

/// The colormaps' lookup tables (256 RGB entries each).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Colormaps {
    pub viridis: Vec<[u8; 3]>,
    pub phase: Vec<[u8; 3]>,
}

impl Hello {
    /// The hello of a lab running `model` on `device`.
    pub(crate) fn new(model: String, device: String, sparse: bool) -> Self {
        use crate::render::Colormap;
        Hello {
            version: PROTOCOL_VERSION,
            model,
            device,
            sparse,
            views: View::all()
                .map(|view| NamedView {
                    name: view.name(),
                    colormap: super::frames::colormap_name(view.colormap()),
                })
                .collect(),
            tools: <crate::tools::ToolKind as clap::ValueEnum>::value_variants()
                .iter()
                .map(|kind| NamedTool { name: kind.name(), keys: kind.keys() })
                .collect(),
            archs: crate::models::Architecture::all().map(|arch| arch.name()).collect(),
            losses: <crate::training::loss::LossKind as clap::ValueEnum>::value_variants()
                .iter()
                .map(crate::names::name_of)
                .collect(),
            colormaps: Colormaps { viridis: Colormap::Viridis.lut(), phase: Colormap::Phase.lut() },
        }
    }
}

/// A failure the lab went on from (or, with no step, the one that stopped it).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Failure {
    /// What failed and why.
    pub error: String,
    /// The step count the world went on from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<u64>,
}

/// The world's state. The page trusts it: it must never claim more than is true.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Status {
    pub version: u32,
    pub running: bool,
    /// False once the simulation thread has stopped for good.
    pub healthy: bool,
    pub model: String,
    /// The newest failure.
    pub error: Option<Failure>,
    pub step: u64,
    /// 0 while no step is being taken.
    pub steps_per_s: f64,
    pub pending_steps: u32,
    /// [rows, columns] shown.
    pub grid: [usize; 2],
    pub batch: usize,
    pub universe: usize,
    pub views: Vec<View>,
    pub gamma: f64,
    pub steps_per_frame: u32,
    pub max_fps: f64,
    pub seed: u64,
    pub init: String,
    pub history_capacity: usize,
    pub clients: usize,
    /// Frames left of the recording under way.
    pub recording: Option<u32>,
    pub sparse_mode: bool,
    pub training: Option<TrainingStatus>,
    /// What only a dense or only a sparse world has.
    #[serde(flatten)]
    pub kind: KindStatus,
}

impl Status {
    /// This status, told after the simulation thread stopped for `cause`.
    pub(crate) fn stopped(mut self, cause: String) -> Self {
        self.running = false;
        self.healthy = false;
        self.steps_per_s = 0.0;
        self.error = Some(Failure { error: cause, step: None });
        self
    }
}

/// A status as the simulation publishes it: the typed status and its text, serialised once
/// for every client that reads it.
#[derive(Debug)]
pub(crate) struct Published {
    pub status: Status,
    pub text: String,
}

impl Published {
    pub(crate) fn new(status: Status) -> Self {
        let text = Outgoing::Status(Box::new(status.clone())).text();
        Published { status, text }
    }
}

/// The part of the status that depends on the kind of world.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub(crate) enum KindStatus {
    /// A dense batch.
    Dense {
        /// The per-step tools, as `--tool` writes them.
        tools: Vec<String>,
        /// How many frames back `rewind` can go.
        history: usize,
    },
    /// A sparse universe.
    Sparse {
        /// Its window and what it holds.
        sparse: SparseStatus,
    },
}

/// A sparse universe's window and content.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct SparseStatus {
    /// The window's top-left cell, [x, y].
    pub window: [i64; 2],
    pub stored_tiles: usize,
    pub matter_cells: usize,
}

/// A training run started from the page.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct TrainingStatus {
    pub dir: String,
    pub running: bool,
    pub stopping: bool,
    /// Episodes finished.
    pub points: usize,
    /// Episodes asked for.
    pub episodes: u64,
    /// The newest episode.
    pub last: Option<Point>,
    pub best: Option<CheckpointSummary>,
    pub last_checkpoint: Option<CheckpointSummary>,
    /// How the run ended, once it has.
    pub outcome: Option<String>,
}

/// A checkpoint the page can load: its episode and the metric that chose it.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct CheckpointSummary {
    pub episode: u64,
    pub metric: f64,
}
