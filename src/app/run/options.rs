//! What a run is asked to do and what it did: the options of `atheria run` (a dense batch of
//! universes or a sparse unbounded one) and its report.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::backend::{DeviceReport, DeviceRequest};
use crate::error::Result;
use crate::interrupt::Interruption;
use crate::io::model_dir::ModelSource;
use crate::io::run_checkpoint::{self, RunCheckpoint};
use crate::models::ModelConfig;
use crate::observables::View;
use crate::sparse::{MatterSeed, Region, SparseConfig, SparseStepReport};
use crate::state::InitialState;
use crate::tools::ScheduledTool;

/// What to run. `Default` is the shipped model on a random 64x64 universe for 100 steps.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The law.
    pub model: ModelSource,
    /// Where to run it.
    pub device: DeviceRequest,
    /// Fail instead of falling back when the device cannot start.
    pub strict_device: bool,
    /// Dense runs: the grid (height, width); `None`: 64x64, or the size of an `init` state
    /// file. Sparse runs: the size of the default window.
    pub grid: Option<(usize, usize)>,
    /// The step count to reach (counted from step 0, also when resuming).
    pub steps: u64,
    /// Decay rate; `None`: the model's configured gamma.
    pub gamma: Option<f64>,
    /// Seed of the initial state (dense) or of the matter blobs (sparse).
    pub seed: u64,
    /// Pictures and metrics.
    pub outputs: OutputOptions,
    /// Draw a progress bar on a terminal.
    pub progress: bool,
    /// A dense batch of universes, or a sparse unbounded one.
    pub universe: UniverseOptions,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            model: ModelSource::Default,
            device: DeviceRequest::Auto,
            strict_device: false,
            grid: None,
            steps: 100,
            gamma: None,
            seed: 0,
            outputs: OutputOptions::default(),
            progress: false,
            universe: UniverseOptions::Dense(DenseOptions::default()),
        }
    }
}

/// Where a run's pictures and metrics go, and what the pictures show.
#[derive(Debug, Clone)]
pub struct OutputOptions {
    /// Directory for frames (PNG).
    pub frames: Option<PathBuf>,
    /// A frame every this many steps (and the first and last), for the PNGs and the GIF.
    pub every: u64,
    /// What a frame shows (universe 0): one view is drawn alone, several as a labelled panel.
    pub views: Vec<View>,
    /// An animated GIF of the frames.
    pub gif: Option<PathBuf>,
    /// A CSV of scalar metrics per step (and universe).
    pub metrics: Option<PathBuf>,
}

impl Default for OutputOptions {
    fn default() -> Self {
        Self { frames: None, every: 10, views: View::DEFAULT_PANEL.to_vec(), gif: None, metrics: None }
    }
}

/// The kind of universe a run evolves.
#[derive(Debug, Clone)]
pub enum UniverseOptions {
    /// A batch of universes on a finite grid.
    Dense(DenseOptions),
    /// One unbounded universe of tiles over a vacuum.
    Sparse(SparseRunOptions),
}

/// The settings of a dense run.
#[derive(Debug, Clone)]
pub struct DenseOptions {
    /// Universes stepped together.
    pub batch: usize,
    /// How the initial state is made; `None`: the model's default (see
    /// [`crate::models::RunDefaults`]), else random.
    pub init: Option<InitialState>,
    /// Write the final state here.
    pub save_state: Option<PathBuf>,
    /// The density above which a cell counts in the metrics' `cells_above`.
    pub density_threshold: f64,
    /// Tools and when they act.
    pub tools: Vec<ScheduledTool>,
    /// Keep the latest state of the run in this directory (see [`crate::io::run_checkpoint`]).
    pub checkpoint: Option<PathBuf>,
    /// A checkpoint every this many steps (and at step 0, at the end and at an interruption).
    pub checkpoint_every: u64,
    /// The checkpointed run this one continues; set by [`RunOptions::resume`].
    pub resume: Option<Resumed>,
}

impl Default for DenseOptions {
    fn default() -> Self {
        Self {
            batch: 1,
            init: None,
            save_state: None,
            density_threshold: 0.5,
            tools: Vec::new(),
            checkpoint: None,
            checkpoint_every: DEFAULT_CHECKPOINT_EVERY,
            resume: None,
        }
    }
}

/// A checkpointed run to continue: its directory and what it holds, read once.
#[derive(Debug, Clone)]
pub struct Resumed {
    /// The checkpoint directory.
    pub dir: PathBuf,
    /// Its settings and state.
    pub checkpoint: Arc<RunCheckpoint>,
}

/// Steps between two checkpoints of a run, unless told otherwise.
pub const DEFAULT_CHECKPOINT_EVERY: u64 = 1000;

impl RunOptions {
    /// The options of the run checkpointed in `dir`, to continue it: its model, grid, batch,
    /// gamma, seed and tools, its output settings as defaults, no output files (give them
    /// anew), and checkpoints kept in `dir` as before. `steps` is the saved total; raise it to
    /// run further.
    pub fn resume(dir: &Path) -> Result<Self> {
        let checkpoint = run_checkpoint::load(dir)?;
        let settings = &checkpoint.settings;
        let tools = settings
            .tools
            .iter()
            .map(|(spec, at)| Ok(ScheduledTool { at: *at, tool: spec.parse()? }))
            .collect::<Result<Vec<_>>>()?;
        let views = settings.views.iter().map(|name| name.parse()).collect::<Result<Vec<_>>>()?;
        let dense = DenseOptions {
            batch: settings.batch,
            density_threshold: settings.density_threshold,
            tools,
            checkpoint: Some(dir.to_path_buf()),
            checkpoint_every: settings.checkpoint_every,
            ..DenseOptions::default()
        };
        Ok(Self {
            model: ModelSource::Dir(run_checkpoint::model_dir(dir)),
            grid: Some(settings.grid),
            steps: settings.steps,
            gamma: Some(settings.gamma),
            seed: settings.seed,
            outputs: OutputOptions { every: settings.every, views, ..OutputOptions::default() },
            universe: UniverseOptions::Dense(DenseOptions {
                resume: Some(Resumed { dir: dir.to_path_buf(), checkpoint: Arc::new(checkpoint) }),
                ..dense
            }),
            ..Self::default()
        })
    }
}

/// What a run did: a [`Ran`] on the device of `device`.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// The device the run asked for and the one it ran on.
    pub device: DeviceReport,
    /// What ran.
    pub ran: Ran,
}

/// What a run did on its device.
#[derive(Debug, Clone)]
pub struct Ran {
    /// `unet d8 h16` and where it came from.
    pub model: String,
    /// The backend that ran it.
    pub backend: &'static str,
    /// The step count reached.
    pub steps: u64,
    /// The step the run started from (0, or a resumed checkpoint's).
    pub start_step: u64,
    /// Wall-clock seconds of the steps.
    pub seconds: f64,
    /// Frames drawn (PNG files, and GIF frames when there is no frame directory).
    pub frames: usize,
    /// Set when a signal stopped the run early; `steps` is then the steps completed.
    pub interrupted: Option<Interruption>,
    /// Tensors read back to the host: one per picture view, two per batch of metrics
    /// (the state stays on the device otherwise).
    pub readbacks: u64,
    /// What was evolved.
    pub universe: RanUniverse,
}

/// The dense or sparse part of a [`Ran`].
#[derive(Debug, Clone)]
pub enum RanUniverse {
    /// A dense batch.
    Dense {
        /// (height, width).
        grid: (usize, usize),
        /// Universes stepped together.
        batch: usize,
        /// Tool applications (a click-out counts every step it is active).
        tool_applications: usize,
        /// Mean `sum_c |delta_c|^2` per cell of the last step.
        mean_update_energy: f64,
    },
    /// A sparse universe.
    Sparse(SparseRunSummary),
}

impl RunReport {
    /// One line for the terminal.
    pub fn summary(&self) -> String {
        let ran = &self.ran;
        let steps = ran.steps - ran.start_step;
        let rate = steps as f64 / ran.seconds.max(1e-9);
        match &ran.universe {
            RanUniverse::Sparse(sparse) => {
                let last = sparse.steps.last().copied().unwrap_or_default();
                format!(
                    "ran {steps} sparse steps of {} on {} in {:.2} s ({rate:.2} steps/s); {} tiles stored, \
                     {} matter cells; peak tile memory {:.1} MiB; frames of {}",
                    ran.model,
                    ran.backend,
                    ran.seconds,
                    last.stored_tiles,
                    last.matter_cells,
                    sparse.peak_stored_bytes as f64 / (1024.0 * 1024.0),
                    sparse.window,
                )
            }
            RanUniverse::Dense { grid, batch, mean_update_energy, .. } => {
                let from = if ran.start_step > 0 {
                    format!(" (from step {})", ran.start_step)
                } else {
                    String::new()
                };
                format!(
                    "ran {steps} steps{from} of {} on {} at {}x{} x{batch} in {:.2} s ({rate:.2} steps/s); \
                     mean |delta|^2 {mean_update_energy:.3e}",
                    ran.model, ran.backend, grid.0, grid.1, ran.seconds,
                )
            }
        }
    }
}

/// The settings of a sparse run.
#[derive(Debug, Clone, Default)]
pub struct SparseRunOptions {
    /// Tiles, matter threshold and vacuum.
    pub config: SparseConfig,
    /// Blobs of matter placed on the vacuum before the first step.
    pub seeds: Vec<MatterSeed>,
    /// What frames show; `None`: a window of the run's grid size (64x64 by default) centred
    /// on the first seed (or on the origin).
    pub window: Option<Region>,
}

impl SparseRunOptions {
    /// The window frames show.
    pub fn window(&self, grid: Option<(usize, usize)>) -> Region {
        self.window.unwrap_or_else(|| {
            let (height, width) = grid.unwrap_or((64, 64));
            let (x, y) = self.seeds.first().map_or((0, 0), |seed| (seed.x, seed.y));
            Region::new(x - width as i64 / 2, y - height as i64 / 2, width, height)
        })
    }
}

/// What a sparse run did, besides what every run reports.
#[derive(Debug, Clone)]
pub struct SparseRunSummary {
    /// One report per step (the first describes the seeded state, step 0).
    pub steps: Vec<SparseStepReport>,
    /// The most tile data held at once, in bytes.
    pub peak_stored_bytes: usize,
    /// The region frames show.
    pub window: Region,
}

/// `unet d8 h16 (where it came from)`.
pub(crate) fn describe_model(config: &ModelConfig, source: &ModelSource) -> String {
    format!("{} d{} h{} ({})", config.arch, config.d_state, config.hidden_channels, source.describe())
}
