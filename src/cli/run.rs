//! `atheria run`: evolve a universe and write frames and the final state.

use std::path::PathBuf;

use atheria::app::{self, RunOptions};
use atheria::state::InitialState;
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

    /// Write density frames (PNG) into this directory.
    #[arg(long)]
    pub frames: Option<PathBuf>,

    /// Write a frame every K steps (and the first and last).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub every: u64,
}

pub fn run(args: RunArgs, verbose: bool) -> anyhow::Result<()> {
    let init: InitialState = args.init.parse()?;
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
        progress: true,
    };
    let report = app::run(&options, &|device| args.device.print_report(device, verbose))?;
    eprintln!("{}", report.summary());
    if let Some(dir) = &args.frames {
        eprintln!("frames: {} file(s) in {}", report.frames, dir.display());
    }
    if let Some(path) = &args.save_state {
        eprintln!("state: {}", path.display());
    }
    Ok(())
}
