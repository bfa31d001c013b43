//! `atheria import`: a checkpoint of the PyTorch lab to a model directory.

use std::path::PathBuf;

use atheria::app::{self, ImportOptions};
use atheria::models::infer::ConfigHints;
use atheria::models::Architecture;
use clap::Args;

use super::common::parse_arch;

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// A bare state_dict (.pth/.pt), a training checkpoint holding one under `model_state_dict`
    /// or `state_dict`, or .safetensors; `_orig_mod.`/`module.` prefixes are removed.
    pub checkpoint: PathBuf,

    /// The model directory to write (config.json + model.mpk).
    #[arg(long)]
    pub out: PathBuf,

    /// Architecture (inferred when absent; a GroupNorm U-Net imports as `unet` unless this says
    /// `unet-unitary`).
    #[arg(long, value_parser = parse_arch)]
    pub arch: Option<Architecture>,

    /// Complex channels per cell (inferred when absent).
    #[arg(long)]
    pub d_state: Option<usize>,

    /// Hidden channels of the network (inferred when absent).
    #[arg(long)]
    pub hidden: Option<usize>,

    /// Replace --out even if it holds files.
    #[arg(long)]
    pub force: bool,
}

pub fn import(args: ImportArgs) -> anyhow::Result<()> {
    let options = ImportOptions {
        checkpoint: args.checkpoint,
        out: args.out,
        hints: ConfigHints { arch: args.arch, d_state: args.d_state, hidden: args.hidden },
        force: args.force,
    };
    let report = app::import(&options)?;
    for note in &report.notes {
        eprintln!("{note}");
    }
    eprintln!("{}", report.summary());
    Ok(())
}
