//! `atheria train`: train a law M and write checkpoints, metrics and plots.

use std::path::PathBuf;

use anyhow::bail;
use atheria::app::{self, TrainOptions, TrainStart};
use atheria::training::loss::LossKind;
use atheria::training::TrainConfig;
use clap::Args;

use super::common::{ArchArgs, DeviceArgs, Names};

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// A TOML file of training settings (any subset of the fields of OUT/train.toml); flags
    /// override it, defaults fill the rest.
    #[arg(long)]
    pub config: Option<PathBuf>,

    /// Holds the checkpoints (each a model directory `run --model` loads), metrics.csv,
    /// metrics.png, frames and train.toml.
    #[arg(long, default_value = "runs/train")]
    pub out: PathBuf,

    /// Continue the run in --out from its last checkpoint (only --episodes may change).
    #[arg(long)]
    pub resume: bool,

    /// Total episodes of the run (with --resume: extend or shorten it).
    #[arg(long)]
    pub episodes: Option<u64>,

    /// Side of the square training grid.
    #[arg(long)]
    pub grid: Option<usize>,

    /// Steps unrolled per episode.
    #[arg(long)]
    pub qca_steps: Option<usize>,

    /// Universes per episode.
    #[arg(long)]
    pub batch: Option<usize>,

    /// The architecture and sizes of a new model.
    #[command(flatten)]
    pub arch: ArchArgs,

    /// Start from this model directory's weights (fine-tuning).
    #[arg(long)]
    pub model: Option<PathBuf>,

    /// The loss [default: evolutionary].
    #[arg(long, value_parser = Names::<LossKind>::new("loss"))]
    pub loss: Option<LossKind>,

    /// AdamW learning rate.
    #[arg(long)]
    pub lr: Option<f64>,

    /// Seed of the model's initialisation, the states and the noise.
    #[arg(long)]
    pub seed: Option<u64>,

    #[command(flatten)]
    pub device: DeviceArgs,

    /// No progress bar (for logs).
    #[arg(long)]
    pub quiet: bool,
}

impl TrainArgs {
    /// The run's settings: defaults, then the config file, then the flags.
    fn training_config(&self) -> anyhow::Result<TrainConfig> {
        let mut config = match &self.config {
            Some(path) => TrainConfig::from_toml_file(path)?,
            None => TrainConfig::default(),
        };
        if let Some(value) = self.episodes {
            config.episodes = value;
        }
        if let Some(value) = self.grid {
            config.grid = value;
        }
        if let Some(value) = self.qca_steps {
            config.qca_steps = value;
        }
        if let Some(value) = self.batch {
            config.batch = value;
        }
        if let Some(dir) = &self.model {
            if !self.arch.given().is_empty() {
                bail!("--model starts from that model's architecture; drop {}", self.arch.given().join(", "));
            }
            config.init_model = Some(dir.clone());
        }
        if let Some(value) = self.arch.arch {
            config.arch = value;
        }
        if let Some(value) = self.arch.d_state {
            config.d_state = value;
        }
        if let Some(value) = self.arch.hidden {
            config.hidden = value;
        }
        if let Some(value) = self.loss {
            config.loss = value;
        }
        if let Some(value) = self.lr {
            config.lr = value;
        }
        if let Some(value) = self.seed {
            config.seed = value;
        }
        config.validate()?;
        Ok(config)
    }

    /// Flags other than --episodes would silently diverge from the checkpoint's settings.
    fn check_resume(&self) -> anyhow::Result<()> {
        let changed = [
            ("--config", self.config.is_some()),
            ("--grid", self.grid.is_some()),
            ("--qca-steps", self.qca_steps.is_some()),
            ("--batch", self.batch.is_some()),
            ("--arch", self.arch.arch.is_some()),
            ("--d-state", self.arch.d_state.is_some()),
            ("--hidden", self.arch.hidden.is_some()),
            ("--model", self.model.is_some()),
            ("--loss", self.loss.is_some()),
            ("--lr", self.lr.is_some()),
            ("--seed", self.seed.is_some()),
        ];
        let given: Vec<&str> = changed.iter().filter(|(_, set)| *set).map(|(flag, _)| *flag).collect();
        if !given.is_empty() {
            bail!(
                "--resume continues with the settings saved in {}/train.toml; only --episodes may change (drop {})",
                self.out.display(),
                given.join(", ")
            );
        }
        Ok(())
    }
}

pub fn train(args: TrainArgs, verbose: bool) -> anyhow::Result<Option<atheria::interrupt::Interruption>> {
    let start = if args.resume {
        args.check_resume()?;
        TrainStart::Resume { episodes: args.episodes }
    } else {
        TrainStart::New(args.training_config()?)
    };
    let options = TrainOptions {
        start,
        out: args.out.clone(),
        device: args.device.device,
        strict_device: args.device.strict_device,
        progress: !args.quiet,
        command: std::env::args().collect::<Vec<_>>().join(" "),
        observer: None,
    };
    let report = app::train(&options, &|device| args.device.print_report(device, verbose))?;
    eprintln!("{}", report.summary());
    if report.interrupted.is_some() {
        eprintln!("continue with: atheria train --out {} --resume", args.out.display());
    }
    Ok(report.interrupted)
}
