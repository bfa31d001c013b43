//! `atheria train`: train a law M and write checkpoints, metrics and plots.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use atheria::app::train::parallel::{DEFAULT_JOIN_TIMEOUT, DEFAULT_PEER_TIMEOUT};
use atheria::app::{self, NodeOptions, ParallelOptions, TrainOptions, TrainStart};
use atheria::backend::DeviceRequest;
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

    #[command(flatten)]
    pub parallel: ParallelArgs,

    /// No progress bar (for logs).
    #[arg(long)]
    pub quiet: bool,
}

/// Data-parallel training: several devices, several machines.
#[derive(Debug, Args)]
pub struct ParallelArgs {
    /// Train on these devices together, one peer each (`cpu,cpu`, `cuda:0,cuda:1`): the batch
    /// is shared among them and their gradients averaged. Instead of --device.
    #[arg(long, value_delimiter = ',', value_parser = parse_device, conflicts_with = "device")]
    pub devices: Option<Vec<DeviceRequest>>,

    /// Machines in the run (each runs this command with its own --node-rank).
    #[arg(long, requires_all = ["node_rank", "coordinator"])]
    pub nodes: Option<u32>,

    /// This machine's rank, 0 to --nodes minus 1; node 0 writes the run to --out, the others a log.
    #[arg(long, requires = "nodes")]
    pub node_rank: Option<u32>,

    /// The coordinator's HOST:PORT (`atheria coordinator`).
    #[arg(long, requires = "nodes")]
    pub coordinator: Option<SocketAddr>,

    /// The address the other nodes reach this one at [default: the one it reaches the coordinator from].
    #[arg(long, requires = "nodes")]
    pub node_address: Option<IpAddr>,

    /// The port this node serves its tensors to the others on [default: the coordinator's port + 1 + rank].
    #[arg(long, requires = "nodes")]
    pub data_port: Option<u16>,

    /// Seconds a peer may wait for the others before the run stops with an error.
    #[arg(long, default_value_t = DEFAULT_PEER_TIMEOUT.as_secs())]
    pub peer_timeout: u64,

    /// Seconds to wait for every peer and node to join.
    #[arg(long, default_value_t = DEFAULT_JOIN_TIMEOUT.as_secs())]
    pub join_timeout: u64,
}

fn parse_device(text: &str) -> Result<DeviceRequest, String> {
    text.parse().map_err(|error: atheria::Error| error.to_string())
}

impl ParallelArgs {
    /// `None` for a run on one device.
    fn options(&self, device: DeviceRequest) -> Option<ParallelOptions> {
        let nodes = match (self.nodes, self.node_rank, self.coordinator) {
            (Some(nodes), Some(rank), Some(coordinator)) => Some(NodeOptions {
                nodes,
                rank,
                coordinator,
                address: self.node_address,
                data_port: self.data_port,
            }),
            _ => None,
        };
        if self.devices.is_none() && nodes.is_none() {
            return None;
        }
        Some(ParallelOptions {
            devices: self.devices.clone().unwrap_or_else(|| vec![device]),
            nodes,
            peer_timeout: Duration::from_secs(self.peer_timeout),
            join_timeout: Duration::from_secs(self.join_timeout),
        })
    }
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
        parallel: args.parallel.options(args.device.device),
    };
    let report = app::train(&options, &|device| args.device.print_report(device, verbose))?;
    eprintln!("{}", report.summary());
    if report.interrupted.is_some() {
        eprintln!("continue with: atheria train --out {} --resume", args.out.display());
    }
    Ok(report.interrupted)
}
