//! `atheria eval`: a model's loss over a long noiseless rollout from seeded universes.

use atheria::app::{self, EvalOptions};
use atheria::training::loss::LossKind;
use clap::Args;

use super::common::{DeviceArgs, ModelArgs, Names};

#[derive(Debug, Args)]
pub struct EvalArgs {
    #[command(flatten)]
    pub model: ModelArgs,

    #[command(flatten)]
    pub device: DeviceArgs,

    /// Side of the square grid.
    #[arg(long, default_value_t = 64)]
    pub grid: usize,

    /// Steps of the rollout.
    #[arg(long, default_value_t = 100)]
    pub steps: usize,

    /// Universes evaluated together (the loss is their mean).
    #[arg(long, default_value_t = 4)]
    pub universes: usize,

    /// Seed of the initial universes (the same seed gives every model the same universes).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    /// The loss.
    #[arg(long, value_parser = Names::<LossKind>::new("loss"), default_value = "evolutionary")]
    pub loss: LossKind,

    /// Lindblad decay rate (default: the model's).
    #[arg(long)]
    pub gamma: Option<f64>,

    /// Print the result as one JSON object.
    #[arg(long)]
    pub json: bool,
}

pub fn eval(args: EvalArgs, verbose: bool) -> anyhow::Result<Option<atheria::interrupt::Interruption>> {
    let options = EvalOptions {
        model: args.model.source()?,
        device: args.device.device,
        strict_device: args.device.strict_device,
        grid: args.grid,
        steps: args.steps,
        universes: args.universes,
        seed: args.seed,
        loss: args.loss,
        gamma: args.gamma,
    };
    let report = app::evaluate(&options, &|device| args.device.print_report(device, verbose))?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{}", report.summary());
        println!("{}", report.life_summary());
    }
    Ok(report.interrupted)
}
