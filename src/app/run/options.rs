//! What a run is asked to do and what it did: the options of `atheria run` (dense and sparse)
//! and its report.

use std::path::{Path, PathBuf};

use crate::backend::{DeviceReport, DeviceRequest};
use crate::error::Result;
use crate::interrupt::Interruption;
use crate::io::model_dir::ModelSource;
use crate::io::run_checkpoint;
use crate::models::ModelConfig;
use crate::observables::View;
use crate::sparse::{MatterSeed, Region, SparseConfig, SparseStepReport};
use crate::state::InitialState;
use crate::tools::ScheduledTool;

/// What to run. `Default` is the shipped model on a random 64x64 universe for 100 steps.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub model: ModelSource,
    pub device: DeviceRequest,
    pub strict_device: bool,
    /// Grid (height, width); `None`: 64x64, or the size of an `init` state file.
    pub grid: Option<(usize, usize)>,
    pub batch: usize,
    pub steps: u64,
    /// Decay rate; `None`: the model's configured gamma.
    pub gamma: Option<f64>,
    pub seed: u64,
    pub init: InitialState,
    pub save_state: Option<PathBuf>,
    /// Directory for frames (PNG).
    pub frames: Option<PathBuf>,
    /// A frame every this many steps (and the first and last), for the PNGs and the GIF.
    pub every: u64,
    /// What a frame shows (universe 0): one view is drawn alone, several as a labelled panel.
    pub views: Vec<View>,
    /// An animated GIF of the frames.
    pub gif: Option<PathBuf>,
    /// A CSV of scalar metrics per step and universe.
    pub metrics: Option<PathBuf>,
    /// The density above which a cell counts in the metrics' `cells_above`.
    pub density_threshold: f64,
    /// Tools and when they act.
    pub tools: Vec<ScheduledTool>,
    /// Run the sparse engine on an unbounded universe instead of a dense grid.
    pub sparse: Option<SparseRunOptions>,
    /// Keep the latest state of the run in this directory (see [`crate::io::run_checkpoint`]).
    pub checkpoint: Option<PathBuf>,
    /// A checkpoint every this many steps (and at step 0, at the end and at an interruption).
    pub checkpoint_every: u64,
    /// Continue the run checkpointed in this directory; set by [`RunOptions::resume`].
    pub resume: Option<PathBuf>,
    pub progress: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            model: ModelSource::Default,
            device: DeviceRequest::Auto,
            strict_device: false,
            grid: None,
            batch: 1,
            steps: 100,
            gamma: None,
            seed: 0,
            init: InitialState::Random,
            save_state: None,
            frames: None,
            every: 10,
            views: View::DEFAULT_PANEL.to_vec(),
            gif: None,
            metrics: None,
            density_threshold: 0.5,
            tools: Vec::new(),
            sparse: None,
            checkpoint: None,
            checkpoint_every: DEFAULT_CHECKPOINT_EVERY,
            resume: None,
            progress: false,
        }
    }
}

/// Steps between two checkpoints of a run, unless told otherwise.
pub const DEFAULT_CHECKPOINT_EVERY: u64 = 1000;

impl RunOptions {
    /// The options of the run checkpointed in `dir`, to continue it: its model, grid, batch,
    /// gamma, seed and tools, its output settings as defaults, no output files (give them
    /// anew), and checkpoints kept in `dir` as before. `steps` is the saved total; raise it to
    /// run further.
    pub fn resume(dir: &Path) -> Result<Self> {
        let saved = run_checkpoint::load(dir)?;
        let settings = saved.settings;
        let tools = settings
            .tools
            .iter()
            .map(|(spec, at)| Ok(ScheduledTool { at: *at, tool: spec.parse()? }))
            .collect::<Result<Vec<_>>>()?;
        let views = settings.views.iter().map(|name| name.parse()).collect::<Result<Vec<_>>>()?;
        Ok(Self {
            model: ModelSource::Dir(run_checkpoint::model_dir(dir)),
            grid: Some(settings.grid),
            batch: settings.batch,
            steps: settings.steps,
            gamma: Some(settings.gamma),
            seed: settings.seed,
            every: settings.every,
            views,
            density_threshold: settings.density_threshold,
            tools,
            checkpoint: Some(dir.to_path_buf()),
            checkpoint_every: settings.checkpoint_every,
            resume: Some(dir.to_path_buf()),
            ..Self::default()
        })
    }
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub device: DeviceReport,
    /// `unet d8 h16` and where it came from.
    pub model: String,
    pub backend: &'static str,
    pub grid: (usize, usize),
    pub batch: usize,
    pub steps: u64,
    pub seconds: f64,
    /// Frames drawn (PNG files, and GIF frames when there is no frame directory).
    pub frames: usize,
    /// Tool applications (a click-out counts every step it is active).
    pub tool_applications: usize,
    /// Mean `sum_c |delta_c|^2` per cell of the last step (dense runs).
    pub mean_update_energy: f64,
    /// What a sparse run did.
    pub sparse: Option<SparseRunSummary>,
    /// The step the run started from (0, or a resumed checkpoint's).
    pub start_step: u64,
    /// Set when a signal stopped the run early; `steps` is then the steps completed.
    pub interrupted: Option<Interruption>,
}

impl RunReport {
    /// One line for the terminal.
    pub fn summary(&self) -> String {
        let ran = self.steps - self.start_step;
        let from =
            if self.start_step > 0 { format!(" (from step {})", self.start_step) } else { String::new() };
        if let Some(sparse) = &self.sparse {
            let last = sparse.steps.last().copied().unwrap_or_default();
            return format!(
                "ran {} sparse steps of {} on {} in {:.2} s ({:.2} steps/s); {} tiles stored, {} matter cells; \
                 peak tile memory {:.1} MiB; frames of {}",
                ran,
                self.model,
                self.backend,
                self.seconds,
                ran as f64 / self.seconds.max(1e-9),
                last.stored_tiles,
                last.matter_cells,
                sparse.peak_stored_bytes as f64 / (1024.0 * 1024.0),
                sparse.window,
            );
        }
        format!(
            "ran {} steps{from} of {} on {} at {}x{} x{} in {:.2} s ({:.2} steps/s); mean |delta|^2 {:.3e}",
            ran,
            self.model,
            self.backend,
            self.grid.0,
            self.grid.1,
            self.batch,
            self.seconds,
            ran as f64 / self.seconds.max(1e-9),
            self.mean_update_energy,
        )
    }
}

/// The sparse part of a run.
#[derive(Debug, Clone, Default)]
pub struct SparseRunOptions {
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

/// What a sparse run did, besides the dense run's summary.
#[derive(Debug, Clone)]
pub struct SparseRunSummary {
    /// One report per step (the first describes the seeded state, step 0).
    pub steps: Vec<SparseStepReport>,
    /// The most tile data held at once, in bytes.
    pub peak_stored_bytes: usize,
    pub window: Region,
}

/// `unet d8 h16 (where it came from)`.
pub(crate) fn describe_model(config: &ModelConfig, source: &ModelSource) -> String {
    format!("{} d{} h{} ({})", config.arch, config.d_state, config.hidden_channels, source.describe())
}
