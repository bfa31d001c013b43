//! Trains a small law M with the library API and evaluates it against its untrained self.
//!
//! ```text
//! cargo run --release --example train -- [OUT_DIR] [EPISODES]
//! ```
//!
//! Writes OUT_DIR (default `runs/example`): checkpoints (model directories), metrics.csv,
//! metrics.png and density frames. Runs on the best backend the guarded constructor finds.

use std::path::PathBuf;

use atheria::app::{self, TrainOptions, TrainStart};
use atheria::backend::DeviceRequest;
use atheria::models::Architecture;
use atheria::training::TrainConfig;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let out = PathBuf::from(args.next().unwrap_or_else(|| "runs/example".into()));
    let episodes: u64 = args.next().map(|text| text.parse()).transpose()?.unwrap_or(200);

    // Every field has the lab's default; change what this experiment needs.
    let config = TrainConfig {
        arch: Architecture::Unet,
        d_state: 4,
        hidden: 8,
        grid: 32,
        qca_steps: 8,
        episodes,
        checkpoint_every: 50,
        frame_every: 50,
        ..TrainConfig::default()
    };
    let start = if out.join("last").exists() {
        TrainStart::Resume { episodes: Some(episodes) }
    } else {
        TrainStart::New(config)
    };
    let options = TrainOptions {
        start,
        out: out.clone(),
        device: DeviceRequest::Auto,
        strict_device: false,
        progress: true,
        command: "cargo run --example train".into(),
        observer: None,
        parallel: None,
    };
    let report = app::train(&options, &|device| eprintln!("{device}"))?;
    println!("{}", report.summary());
    println!("curves: {}", out.join("metrics.png").display());
    Ok(())
}
