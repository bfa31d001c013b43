//! `atheria run`: evolve a universe and write frames and the final state.

use std::path::PathBuf;

use atheria::app::{self, DenseOptions, RunOptions, SparseRunOptions, UniverseOptions};
use atheria::interrupt::Interruption;
use atheria::observables::View;
use atheria::sparse::{self, MatterSeed, Region, SparseConfig};
use atheria::state::InitialState;
use atheria::tools::{ScheduledTool, Tool, ToolKind};
use clap::Args;

use super::common::{DeviceArgs, GridSize, ModelArgs, Names};

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub model: ModelArgs,

    #[command(flatten)]
    pub device: DeviceArgs,

    /// Grid size, N or HxW (multiples of 4 for the U-Nets). Defaults to the size of an --init
    /// state file (a larger multiple tiles the file), else the model's (64 unless an imported
    /// lab experiment says).
    #[arg(long)]
    pub grid: Option<GridSize>,

    /// Universes stepped together [default: 1].
    #[arg(long)]
    pub batch: Option<usize>,

    /// Steps to run [default: 100]. With --resume: the run's total, counted from its step 0
    /// [default: the total it was started with].
    #[arg(long)]
    pub steps: Option<u64>,

    /// Lindblad decay rate (default: the model's, 0.01 unless its config says otherwise).
    #[arg(long)]
    pub gamma: Option<f64>,

    /// Seed of the initial state [default: 0].
    #[arg(long)]
    pub seed: Option<u64>,

    /// Initial state: random, complex-noise[:STRENGTH], zeros, or a state file (.safetensors, or
    /// a lab snapshot .pt) [default: the model's, else random].
    #[arg(long)]
    pub init: Option<String>,

    /// Keep the latest state of the run in DIR (written atomically every --checkpoint-every
    /// steps, at the end and when stopped by Ctrl-C or kill), to continue it with --resume.
    #[arg(long, value_name = "DIR")]
    pub checkpoint: Option<PathBuf>,

    /// Steps between two checkpoints [default: 1000, or the resumed run's].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub checkpoint_every: Option<u64>,

    /// Continue the run checkpointed in DIR with its saved model, grid, batch, gamma, seed and
    /// tools; output flags (--save-state, --frames, --gif, --metrics, --view, --every) may be
    /// given anew, and --steps sets the new total.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["checkpoint", "sparse"])]
    pub resume: Option<PathBuf>,

    /// Write the final state here (safetensors, `re`/`im` [B, H, W, d]).
    #[arg(long)]
    pub save_state: Option<PathBuf>,

    /// Write frames (PNG) into this directory, one file per frame.
    #[arg(long)]
    pub frames: Option<PathBuf>,

    /// Write a frame every K steps (and the first and last) [default: 10].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub every: Option<u64>,

    /// What frames show. Several (comma-separated or repeated) make a labelled panel
    /// [default: phase,entropy,activity,real].
    #[arg(long, value_parser = Names::<View>::new("view"), value_delimiter = ',')]
    pub view: Vec<View>,

    /// Write an animated GIF of the frames (every K steps) to FILE.
    #[arg(long, value_name = "FILE")]
    pub gif: Option<PathBuf>,

    /// Write scalar metrics per step and universe (total energy, mean entropy, cells above the
    /// density threshold) to FILE.csv.
    #[arg(long, value_name = "FILE")]
    pub metrics: Option<PathBuf>,

    /// Density above which a cell counts in the metrics' cells_above [default: 0.5].
    #[arg(long)]
    pub density_threshold: Option<f64>,

    /// Apply a tool: NAME or NAME:key=value,... (e.g. vortex:x=32,y=32,radius=8,m=1).
    /// Repeatable.
    #[arg(long, value_name = "SPEC", long_help = tool_help())]
    pub tool: Vec<String>,

    /// When the tool at the same position acts: before step STEP (0 = the initial state); a
    /// click-out acts after every step from STEP on. Tools without one act from step 0.
    #[arg(long, value_name = "STEP")]
    pub tool_at: Vec<u64>,

    /// Run the sparse engine: an unbounded universe that stores only the tiles holding matter,
    /// over a deterministic vacuum. Matter comes from --seed-matter; frames show --window.
    #[arg(long)]
    pub sparse: bool,

    /// Sparse: tile side in cells (a multiple of 4).
    #[arg(long, default_value_t = sparse::DEFAULT_TILE, requires = "sparse")]
    pub tile: usize,

    /// Sparse: blobs of matter, x,y,radius[;x,y,radius...] (random complex cells in a disc).
    /// Repeatable.
    #[arg(long, value_name = "X,Y,R[;...]", requires = "sparse", allow_hyphen_values = true)]
    pub seed_matter: Vec<String>,

    /// Sparse: the region frames show, X,Y,WxH (top-left cell and size). Default: a window of
    /// --grid (64) centred on the first blob.
    #[arg(long, value_name = "X,Y,WxH", requires = "sparse", allow_hyphen_values = true)]
    pub window: Option<String>,

    /// Sparse: a cell holds matter when the L1 distance of its channel densities |psi_c|^2
    /// from the vacuum's (1/d each) exceeds this.
    #[arg(long, default_value_t = sparse::DEFAULT_MATTER_THRESHOLD, requires = "sparse")]
    pub matter_threshold: f64,

    /// Sparse: seed of the vacuum.
    #[arg(long, default_value_t = 0, requires = "sparse")]
    pub vacuum_seed: u64,
}

/// The tools and their keys, from the registry.
fn tool_help() -> String {
    let kinds: Vec<String> = <ToolKind as clap::ValueEnum>::value_variants()
        .iter()
        .map(|kind| format!("  {}: {}", kind.name(), kind.keys().join(", ")))
        .collect();
    format!(
        "Apply a tool: NAME or NAME:key=value,... (e.g. vortex:x=32,y=32,radius=8,m=1). Repeatable.\n\
         Tools and their keys:\n{}",
        kinds.join("\n")
    )
}

impl RunArgs {
    /// With --resume, the flags that would change the saved run's trajectory are refused
    /// rather than silently ignored.
    fn check_resume(&self, dir: &std::path::Path) -> anyhow::Result<()> {
        let model = &self.model;
        let given = [
            ("--model", model.model.is_some()),
            ("--weights", model.weights.is_some()),
            ("--arch", model.arch.arch.is_some()),
            ("--d-state", model.arch.d_state.is_some()),
            ("--hidden", model.arch.hidden.is_some()),
            ("--grid", self.grid.is_some()),
            ("--batch", self.batch.is_some()),
            ("--gamma", self.gamma.is_some()),
            ("--seed", self.seed.is_some()),
            ("--init", self.init.is_some()),
            ("--tool", !self.tool.is_empty()),
            ("--tool-at", !self.tool_at.is_empty()),
        ];
        let given: Vec<&str> = given.iter().filter(|(_, set)| *set).map(|(flag, _)| *flag).collect();
        if !given.is_empty() {
            anyhow::bail!(
                "--resume continues with the model and settings saved in {}; drop {}",
                dir.display(),
                given.join(", ")
            );
        }
        Ok(())
    }

    /// The options of a new run.
    fn new_run(&self) -> anyhow::Result<RunOptions> {
        let universe = if self.sparse { self.sparse_options()? } else { self.dense_options()? };
        let defaults = RunOptions::default();
        Ok(RunOptions {
            model: self.model.source()?,
            grid: self.grid.map(|grid| (grid.height, grid.width)),
            steps: self.steps.unwrap_or(defaults.steps),
            gamma: self.gamma,
            seed: self.seed.unwrap_or(defaults.seed),
            universe,
            ..defaults
        })
    }

    fn dense_options(&self) -> anyhow::Result<UniverseOptions> {
        let init: Option<InitialState> = self.init.as_deref().map(str::parse).transpose()?;
        let tools = self.tool.iter().map(|spec| spec.parse::<Tool>()).collect::<Result<Vec<_>, _>>()?;
        let defaults = DenseOptions::default();
        Ok(UniverseOptions::Dense(DenseOptions {
            batch: self.batch.unwrap_or(defaults.batch),
            init,
            tools: ScheduledTool::pair(tools, &self.tool_at)?,
            checkpoint: self.checkpoint.clone(),
            ..defaults
        }))
    }

    /// The dense-only flags are refused by name rather than ignored.
    fn sparse_options(&self) -> anyhow::Result<UniverseOptions> {
        let dense_only = [
            ("--batch", self.batch.is_some_and(|batch| batch != 1)),
            ("--init (matter comes from --seed-matter)", self.init.is_some()),
            ("--tool", !self.tool.is_empty() || !self.tool_at.is_empty()),
            ("--save-state", self.save_state.is_some()),
            ("--checkpoint (checkpoints hold dense states)", self.checkpoint.is_some()),
            ("--checkpoint-every", self.checkpoint_every.is_some()),
            ("--density-threshold (sparse metrics count matter cells)", self.density_threshold.is_some()),
        ];
        if let Some((flag, _)) = dense_only.iter().find(|(_, given)| *given) {
            anyhow::bail!("{flag} does not apply to a sparse run");
        }
        let mut seeds = Vec::new();
        for spec in &self.seed_matter {
            seeds.extend(MatterSeed::parse_list(spec)?);
        }
        let window = self.window.as_deref().map(str::parse::<Region>).transpose()?;
        let config = SparseConfig {
            tile: self.tile,
            threshold: self.matter_threshold,
            vacuum_seed: self.vacuum_seed,
            ..SparseConfig::default()
        };
        Ok(UniverseOptions::Sparse(SparseRunOptions { config, seeds, window }))
    }
}

pub fn run(args: RunArgs, verbose: bool) -> anyhow::Result<Option<Interruption>> {
    let mut options = match &args.resume {
        Some(dir) => {
            args.check_resume(dir)?;
            let mut options = RunOptions::resume(dir)?;
            if let Some(steps) = args.steps {
                options.steps = steps;
            }
            options
        }
        None => args.new_run()?,
    };
    // Output settings: the flags, else the resumed run's, else the defaults.
    if !args.view.is_empty() {
        options.outputs.views = args.view.clone();
    }
    if let Some(every) = args.every {
        options.outputs.every = every;
    }
    options.outputs.frames = args.frames.clone();
    options.outputs.gif = args.gif.clone();
    options.outputs.metrics = args.metrics.clone();
    if let UniverseOptions::Dense(dense) = &mut options.universe {
        if let Some(threshold) = args.density_threshold {
            dense.density_threshold = threshold;
        }
        if let Some(every) = args.checkpoint_every {
            dense.checkpoint_every = every;
        }
        dense.save_state = args.save_state.clone();
    }
    options.device = args.device.device;
    options.strict_device = args.device.strict_device;
    options.progress = true;
    let report = app::run(&options, &|device| args.device.print_report(device, verbose))?;
    eprintln!("{}", report.summary());
    if let Some(dir) = &args.frames {
        eprintln!("frames: {} file(s) in {}", report.ran.frames, dir.display());
    }
    if let Some(path) = &args.gif {
        eprintln!("gif: {}", path.display());
    }
    if let Some(path) = &args.metrics {
        eprintln!("metrics: {}", path.display());
    }
    if let Some(path) = &args.save_state {
        eprintln!("state: {}", path.display());
    }
    if let UniverseOptions::Dense(DenseOptions { checkpoint: Some(dir), .. }) = &options.universe {
        eprintln!("checkpoint: {} (continue with --resume {})", dir.display(), dir.display());
    }
    Ok(report.ran.interrupted)
}
