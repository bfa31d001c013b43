//! `atheria bench`: a quick table of step speed per backend and grid.

use atheria::app::{self, BenchOptions, BenchRecord};
use atheria::backend::DeviceRequest;
use clap::Args;

use super::common::ModelArgs;

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,

    /// Square grid sides to measure.
    #[arg(long, num_args = 1.., default_values_t = vec![64, 128])]
    pub grid: Vec<usize>,

    /// Devices to measure (auto, cpu, wgpu, cuda, cuda:N).
    #[arg(long, num_args = 1.., default_values = ["auto"], value_parser = parse_device)]
    pub device: Vec<DeviceRequest>,

    /// Fail instead of falling back when a requested device does not start.
    #[arg(long)]
    pub strict_device: bool,

    /// Universes stepped together.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,

    /// Timed steps per configuration; the median is reported.
    #[arg(long, default_value_t = 10)]
    pub steps: usize,

    /// Untimed steps before timing (kernel compilation, autotuning).
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,

    /// Time a training step (forward, loss, backward, AdamW) instead of an inference step.
    #[arg(long)]
    pub train: bool,

    /// One JSON object per line instead of a table.
    #[arg(long)]
    pub json: bool,
}

fn parse_device(text: &str) -> Result<DeviceRequest, String> {
    text.parse().map_err(|error: atheria::Error| error.to_string())
}

pub fn bench(args: BenchArgs, verbose: bool) -> anyhow::Result<Option<atheria::interrupt::Interruption>> {
    // Without a model flag, measure the lab's default U-Net (d_state 8, hidden 32).
    let source = if args.model.is_given() {
        args.model.source()?
    } else {
        atheria::io::model_dir::ModelSource::Seeded {
            config: atheria::ModelConfig::new(atheria::Architecture::Unet, 8, 32),
            seed: args.model.model_seed,
        }
    };
    let options = BenchOptions {
        model: source,
        devices: args.device.clone(),
        grids: args.grid.clone(),
        batch: args.batch,
        steps: args.steps,
        warmup: args.warmup,
        seed: 0,
        train: args.train,
        strict_device: args.strict_device,
    };
    let json = args.json;
    if !json {
        println!(
            "{:<6} {:>6} {:>5} {:>10} {:>9} {:>9} {:>8}",
            "backend", "grid", "batch", "ms/step", "steps/s", "Mcells/s", "GFLOP/s"
        );
    }
    let print = move |record: &BenchRecord| {
        if json {
            println!("{}", serde_json::to_string(record).unwrap_or_default());
        } else {
            println!(
                "{:<6} {:>6} {:>5} {:>10.2} {:>9.2} {:>9.2} {:>8.1}",
                record.backend,
                record.grid,
                record.batch,
                record.ms_per_step,
                record.steps_per_s,
                record.mcells_per_s,
                record.gflops
            );
        }
    };
    let records = app::bench(
        &options,
        &|report| {
            eprintln!("{report}");
            eprintln!("cpu: {}", atheria::kernels::isa::CpuKernels::current());
            if verbose {
                super::common::print_captured(&report.attempts);
            }
        },
        &print,
    )?;
    // Stopped by a signal: the configurations measured so far were printed.
    let configurations = (options.devices.len() * options.grids.len()) as u64;
    Ok(atheria::interrupt::check(records.len() as u64, configurations))
}
