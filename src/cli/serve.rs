//! `atheria serve`: the live lab in the browser.

use std::net::SocketAddr;
use std::path::PathBuf;

use atheria::app::SparseRunOptions;
use atheria::interrupt::Interruption;
use atheria::serve::{serve as run_server, ServeOptions};
use atheria::sparse::{MatterSeed, SparseConfig};
use atheria::state::InitialState;
use clap::Args;

use super::common::{DeviceArgs, GridSize, ModelArgs};

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub model: ModelArgs,

    #[command(flatten)]
    pub device: DeviceArgs,

    /// Grid size, N or HxW (the window of a sparse run) [default: 64].
    #[arg(long)]
    pub grid: Option<GridSize>,

    /// Universes stepped together.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,

    /// Seed of the initial state.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    /// Initial state: random, complex-noise[:STRENGTH], zeros, or a state file.
    #[arg(long)]
    pub init: Option<String>,

    /// Lindblad decay rate (default: the model's).
    #[arg(long)]
    pub gamma: Option<f64>,

    /// Serve a sparse, unbounded universe (drag the view to move over it).
    #[arg(long)]
    pub sparse: bool,

    /// Sparse: blobs of matter, x,y,radius[;x,y,radius...].
    #[arg(long, value_name = "X,Y,R[;...]", requires = "sparse", allow_hyphen_values = true)]
    pub seed_matter: Vec<String>,

    /// The address to listen on. Anything but loopback needs --token.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,

    /// A secret the page and the WebSocket must present (`?token=`); required off loopback.
    #[arg(long, env = "ATHERIA_TOKEN")]
    pub token: Option<String>,

    /// Where snapshots, uploads and recorded GIFs go.
    #[arg(long, default_value = "snapshots")]
    pub snapshots: PathBuf,

    /// Where training runs started from the page go.
    #[arg(long, default_value = "runs")]
    pub runs: PathBuf,

    /// Frames kept for the rewind slider (bounded by 512 MiB of states).
    #[arg(long, default_value_t = 64)]
    pub history: usize,
}

pub fn serve(args: ServeArgs, verbose: bool) -> anyhow::Result<Option<Interruption>> {
    let init = args.init.as_deref().map(str::parse::<InitialState>).transpose()?;
    let sparse = if args.sparse {
        let mut seeds = Vec::new();
        for spec in &args.seed_matter {
            seeds.extend(MatterSeed::parse_list(spec)?);
        }
        Some(SparseRunOptions { config: SparseConfig::default(), seeds, window: None })
    } else {
        None
    };
    let options = ServeOptions {
        model: args.model.source()?,
        device: args.device.device,
        strict_device: args.device.strict_device,
        grid: args.grid.map(|grid| (grid.height, grid.width)),
        batch: args.batch,
        seed: args.seed,
        init,
        gamma: args.gamma,
        sparse,
        bind: args.bind,
        token: args.token.clone(),
        snapshots: args.snapshots.clone(),
        runs: args.runs.clone(),
        history: args.history,
    };
    let interrupted = run_server(options, &|listening| {
        args.device.print_report(&listening.device, verbose);
        eprintln!("the live lab is at {}", listening.url);
        eprintln!("(Ctrl-C stops it; a training run started from the page checkpoints first)");
    })?;
    Ok(interrupted)
}
