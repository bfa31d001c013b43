//! Argument parsing and the subcommands.

mod bench;
mod common;
mod coordinator;
mod devices;
mod doctor;
mod eval;
mod import;
mod run;
mod serve;
mod train;

use atheria::interrupt::Interruption;
use clap::{Parser, Subcommand};

/// Learned quantum cellular automata on burn: CUDA, wgpu or CPU, chosen at runtime.
#[derive(Debug, Parser)]
#[command(name = "atheria", version, about, max_term_width = 100)]
pub struct Cli {
    /// Show debug logs, and every message captured while probing devices.
    #[arg(long, short, global = true)]
    pub verbose: bool,

    #[command(subcommand)]
    pub command: Command,
}

// Parsed once per process.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Evolve a universe under a law M and write frames and the final state.
    Run(run::RunArgs),
    /// Train a law M: checkpoints that resume exactly, metrics.csv and plots.
    Train(train::TrainArgs),
    /// A model's loss over a long noiseless rollout (compare trained and untrained models).
    Eval(eval::EvalArgs),
    /// Probe every compiled backend and report which start, and why the others do not.
    Devices(devices::DevicesArgs),
    /// What this machine can run and why not: drivers, causes, hints, a self-test per backend.
    Doctor(doctor::DoctorArgs),
    /// Convert a model of the PyTorch lab (checkpoint, TorchScript, experiment) into a model directory.
    Import(import::ImportArgs),
    /// Measure the step's speed per backend and grid (median ms/step, cells/s, GFLOP/s).
    Bench(bench::BenchArgs),
    /// The live lab: watch and steer a universe in the browser, train from the page.
    Serve(serve::ServeArgs),
    /// The meeting point of a training run over several machines (`train --nodes`).
    Coordinator(coordinator::CoordinatorArgs),
}

/// Runs the subcommand; `Some` when a signal stopped it early (after writing what was asked).
pub fn dispatch(cli: Cli) -> anyhow::Result<Option<Interruption>> {
    match cli.command {
        Command::Run(args) => run::run(args, cli.verbose),
        Command::Train(args) => train::train(args, cli.verbose),
        Command::Eval(args) => eval::eval(args, cli.verbose),
        Command::Bench(args) => bench::bench(args, cli.verbose),
        Command::Serve(args) => serve::serve(args, cli.verbose),
        Command::Devices(args) => devices::devices(args, cli.verbose).map(|()| None),
        Command::Doctor(args) => doctor::doctor(args).map(|()| None),
        Command::Import(args) => import::import(args).map(|()| None),
        Command::Coordinator(args) => coordinator::coordinator(args).map(|()| None),
    }
}

/// `error` and its causes as one readable line, each said once: the library's errors already
/// name their cause (a file's path and the operating system's message), which `{:#}` would
/// repeat.
pub fn one_line(error: &anyhow::Error) -> String {
    let mut line = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        if !line.contains(&cause) {
            line.push_str(": ");
            line.push_str(&cause);
        }
    }
    line
}

/// Logs go to stderr through tracing; `RUST_LOG` overrides the level.
pub fn init_logging(verbose: bool) {
    use tracing_subscriber::EnvFilter;
    // Other crates' warnings (GPU runtimes reporting the failures the probe already
    // classified) only show with --verbose.
    let default = if verbose { "atheria=debug,warn" } else { "atheria=info,error" };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .try_init();
}
