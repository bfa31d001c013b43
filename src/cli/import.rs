//! `atheria import`: a checkpoint of the PyTorch lab to a model directory.

use std::path::PathBuf;

use atheria::app::{self, ImportOptions};
use clap::Args;

use super::common::ArchArgs;

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// A bare state_dict (.pth/.pt), a training checkpoint holding one under `model_state_dict`
    /// or `state_dict`, a TorchScript module (.pt), .safetensors, or a lab experiment (its
    /// folder with config.json, or the .zip the lab exports); `_orig_mod.`/`module.` prefixes
    /// are removed.
    pub checkpoint: PathBuf,

    /// The model directory to write (config.json + model.mpk).
    #[arg(long)]
    pub out: PathBuf,

    #[command(flatten)]
    pub arch: ArchArgs,

    /// Replace --out even if it holds files.
    #[arg(long)]
    pub force: bool,
}

pub fn import(args: ImportArgs) -> anyhow::Result<()> {
    let options = ImportOptions {
        checkpoint: args.checkpoint,
        out: args.out,
        hints: args.arch.hints(),
        force: args.force,
    };
    let report = app::import(&options)?;
    for note in &report.notes {
        eprintln!("{note}");
    }
    eprintln!("{}", report.summary());
    Ok(())
}
