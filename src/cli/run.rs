//! `atheria run`: evolve a universe and write frames and the final state.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use atheria::backend::BackendJob;
use atheria::io::model_dir::ModelSource;
use atheria::io::state_file::{load_state, save_state, HostState};
use atheria::render::{save_map, Colormap, Range};
use atheria::state::{generate, tile, InitialState, Universe};
use atheria::{observables, EngineBackend, Simulation};
use burn::tensor::Tensor;
use clap::Args;

use super::common::{create_dir, progress_bar, DeviceArgs, GridSize, ModelArgs};

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
    let source = args.model.source()?;
    let init: InitialState = args.init.parse()?;
    if args.batch == 0 {
        anyhow::bail!("--batch must be at least 1");
    }
    let selection = args.device.select(verbose)?;
    let summary = selection.device.run(RunJob { args: &args, source: &source, init })?;
    eprintln!(
        "ran {} steps of {} ({}) on {} at {} x{} in {:.2} s ({:.2} steps/s); mean |delta|^2 {:.3e}",
        summary.steps,
        summary.model,
        source.describe(),
        summary.backend,
        summary.grid,
        summary.batch,
        summary.seconds,
        summary.steps as f64 / summary.seconds.max(1e-9),
        summary.mean_update_energy,
    );
    if let Some(dir) = &args.frames {
        eprintln!("frames: {} file(s) in {}", summary.frames, dir.display());
    }
    if let Some(path) = &args.save_state {
        eprintln!("state: {}", path.display());
    }
    Ok(())
}

struct RunSummary {
    model: String,
    backend: &'static str,
    grid: GridSize,
    batch: usize,
    steps: u64,
    seconds: f64,
    frames: usize,
    mean_update_energy: f64,
}

struct RunJob<'a> {
    args: &'a RunArgs,
    source: &'a ModelSource,
    init: InitialState,
}

impl BackendJob for RunJob<'_> {
    type Output = anyhow::Result<RunSummary>;

    fn run<B: EngineBackend>(self, device: B::Device) -> Self::Output {
        let args = self.args;
        let model = self.source.load::<B>(&device)?;
        let config = model.config.clone();
        let gamma = args.gamma.unwrap_or(config.gamma);
        let host = initial_state(&self.init, args, config.d_state)?;
        let [batch, height, width, _] = host.dims();
        let universe = Universe::from_host(&host, &device);
        let mut simulation = Simulation::new(model, universe, gamma)?;

        let mut frames = 0;
        if let Some(dir) = &args.frames {
            create_dir(dir)?;
            write_frame(dir, &simulation.universe.psi, 0)?;
            frames += 1;
        }
        let bar = progress_bar(args.steps, "run");
        let started = Instant::now();
        for step in 1..=args.steps {
            simulation.step();
            if let Some(dir) = &args.frames {
                if step % args.every == 0 || step == args.steps {
                    write_frame(dir, &simulation.universe.psi, step)?;
                    frames += 1;
                }
            }
            bar.inc(1);
        }
        let mean_update_energy = match &simulation.last_delta {
            Some(delta) => observables::update_energy(delta.clone()).mean().into_scalar_f64(),
            None => 0.0,
        };
        let seconds = started.elapsed().as_secs_f64();
        bar.finish_and_clear();
        if let Some(path) = &args.save_state {
            save_state(path, &simulation.universe.to_host()?)?;
        }
        Ok(RunSummary {
            model: format!("{} d{} h{}", config.arch, config.d_state, config.hidden_channels),
            backend: B::engine_name(),
            grid: GridSize { height, width },
            batch,
            steps: args.steps,
            seconds,
            frames,
            mean_update_energy,
        })
    }
}

/// Generates or loads the initial state for `--init`, `--grid` and `--batch`.
fn initial_state(init: &InitialState, args: &RunArgs, d_state: usize) -> anyhow::Result<HostState> {
    match init {
        InitialState::File(path) => {
            let state = load_state(path)?;
            let [batch, height, width, d] = state.dims();
            if d != d_state {
                anyhow::bail!(
                    "{}: the state has d_state {d} but the model expects {d_state}",
                    path.display()
                );
            }
            if args.batch != 1 && args.batch != batch {
                anyhow::bail!("{}: the file holds {batch} universe(s), --batch asks for {}", path.display(), args.batch);
            }
            match args.grid {
                Some(grid) if (grid.height, grid.width) != (height, width) => {
                    Ok(tile(&state, grid.height, grid.width)
                        .with_context(|| format!("tiling {}", path.display()))?)
                }
                _ => Ok(state),
            }
        }
        kind => {
            let grid = args.grid.unwrap_or(GridSize { height: 64, width: 64 });
            Ok(generate(kind, args.batch, grid.height, grid.width, d_state, args.seed)?)
        }
    }
}

/// Writes the density of universe 0 as `frame_STEP.png`.
fn write_frame<B: EngineBackend>(dir: &Path, psi: &Tensor<B, 4>, step: u64) -> anyhow::Result<()> {
    let [_, _, height, width] = psi.dims();
    let map = observables::density(psi.clone().narrow(0, 0, 1))
        .into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .map_err(|error| anyhow::anyhow!("cannot read the density map: {error:?}"))?;
    let path = dir.join(format!("frame_{step:06}.png"));
    save_map(&path, &map, height, width, Colormap::Viridis, Range::Fixed(0.0, 1.0))?;
    Ok(())
}

trait ScalarF64 {
    fn into_scalar_f64(self) -> f64;
}

impl<B: burn::tensor::backend::Backend> ScalarF64 for Tensor<B, 1> {
    fn into_scalar_f64(self) -> f64 {
        use burn::tensor::ElementConversion;
        self.into_scalar().elem::<f64>()
    }
}
