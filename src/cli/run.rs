//! `atheria run`: evolve a universe and write frames and the final state.

use std::path::PathBuf;

use atheria::app::{self, RunOptions, SparseRunOptions};
use atheria::sparse::{self, MatterSeed, Region, SparseConfig};
use atheria::observables::View;
use atheria::state::InitialState;
use atheria::tools::{ScheduledTool, Tool};
use clap::Args;

use super::common::{DeviceArgs, GridSize, ModelArgs};

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub model: ModelArgs,

    #[command(flatten)]
    pub device: DeviceArgs,

    /// Grid size, N or HxW (multiples of 4 for the U-Nets). Defaults to 64, or to the size of
    /// an --init state file (a larger multiple tiles the file).
    #[arg(long)]
    pub grid: Option<GridSize>,

    /// Universes stepped together.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,

    /// Steps to run.
    #[arg(long, default_value_t = 100)]
    pub steps: u64,

    /// Lindblad decay rate (default: the model's, 0.01 unless its config says otherwise).
    #[arg(long)]
    pub gamma: Option<f64>,

    /// Seed of the initial state.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    /// Initial state: random, complex-noise[:STRENGTH], zeros, or a state file (.safetensors).
    #[arg(long, default_value = "random")]
    pub init: String,

    /// Write the final state here (safetensors, `re`/`im` [B, H, W, d]).
    #[arg(long)]
    pub save_state: Option<PathBuf>,

    /// Write frames (PNG) into this directory, one file per frame.
    #[arg(long)]
    pub frames: Option<PathBuf>,

    /// Write a frame every K steps (and the first and last).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub every: u64,

    /// What frames show: density, phase, energy, gradient, real, imag, entropy, coherence,
    /// activity, spectral, physics, matter. Several (comma-separated or repeated) make a labelled
    /// panel.
    #[arg(long, value_delimiter = ',', default_value = "density")]
    pub view: Vec<String>,

    /// Write an animated GIF of the frames (every K steps) to FILE.
    #[arg(long, value_name = "FILE")]
    pub gif: Option<PathBuf>,

    /// Write scalar metrics per step and universe (total energy, mean entropy, cells above the
    /// density threshold) to FILE.csv.
    #[arg(long, value_name = "FILE")]
    pub metrics: Option<PathBuf>,

    /// Density above which a cell counts in the metrics' cells_above.
    #[arg(long, default_value_t = 0.5)]
    pub density_threshold: f64,

    /// Apply a tool: NAME or NAME:key=value,... with NAME one of vortex, wave, collapse,
    /// click-out, phase-flip, bit-flip (e.g. vortex:x=32,y=32,radius=8,m=1). Repeatable.
    #[arg(long, value_name = "SPEC")]
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

pub fn run(args: RunArgs, verbose: bool) -> anyhow::Result<()> {
    let init: InitialState = args.init.parse()?;
    let views = args.view.iter().map(|name| name.parse::<View>()).collect::<Result<Vec<_>, _>>()?;
    let tools = args.tool.iter().map(|spec| spec.parse::<Tool>()).collect::<Result<Vec<_>, _>>()?;
    let tools = ScheduledTool::pair(tools, &args.tool_at)?;
    let sparse = if args.sparse {
        let mut seeds = Vec::new();
        for spec in &args.seed_matter {
            seeds.extend(MatterSeed::parse_list(spec)?);
        }
        let window = args.window.as_deref().map(str::parse::<Region>).transpose()?;
        let config = SparseConfig {
            tile: args.tile,
            threshold: args.matter_threshold,
            vacuum_seed: args.vacuum_seed,
            ..SparseConfig::default()
        };
        Some(SparseRunOptions { config, seeds, window })
    } else {
        None
    };
    let options = RunOptions {
        model: args.model.source()?,
        device: args.device.device,
        strict_device: args.device.strict_device,
        grid: args.grid.map(|grid| (grid.height, grid.width)),
        batch: args.batch,
        steps: args.steps,
        gamma: args.gamma,
        seed: args.seed,
        init,
        save_state: args.save_state.clone(),
        frames: args.frames.clone(),
        every: args.every,
        views,
        gif: args.gif.clone(),
        metrics: args.metrics.clone(),
        density_threshold: args.density_threshold,
        tools,
        sparse,
        progress: true,
    };
    let report = app::run(&options, &|device| args.device.print_report(device, verbose))?;
    eprintln!("{}", report.summary());
    if let Some(dir) = &args.frames {
        eprintln!("frames: {} file(s) in {}", report.frames, dir.display());
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
    Ok(())
}
