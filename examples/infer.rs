//! Inference from a trained model: load a model directory (or import a PyTorch checkpoint
//! first), pick the device with the guarded constructor, run N steps, write density frames and
//! the final state.
//!
//! ```sh
//! cargo run --release --example infer -- MODEL_DIR_OR_CHECKPOINT [STEPS] [OUT_DIR]
//! cargo run --release --example infer -- tests/fixtures/pytorch/unet_checkpoint.pth 50 out
//! ```
//!
//! The device comes from `ATHERIA_DEVICE` (auto, cpu, wgpu, cuda, cuda:N; default auto).

use std::path::PathBuf;

use atheria::app::{self, DenseOptions, ImportOptions, OutputOptions, RunOptions, UniverseOptions};
use atheria::io::model_dir::ModelSource;
use atheria::models::detect::ConfigHints;
use atheria::DeviceRequest;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: infer MODEL_DIR_OR_CHECKPOINT [STEPS] [OUT_DIR]";
    let input = PathBuf::from(args.next().ok_or(usage)?);
    let steps: u64 = args.next().map(|text| text.parse()).transpose()?.unwrap_or(100);
    let out = PathBuf::from(args.next().unwrap_or_else(|| "infer-out".into()));

    let model_dir = if input.is_dir() {
        input
    } else {
        // A checkpoint: convert it once (architecture and sizes inferred), then load the result.
        let options = ImportOptions {
            checkpoint: input,
            out: out.join("model"),
            hints: ConfigHints::default(),
            force: true,
        };
        let report = app::import(&options)?;
        for note in &report.notes {
            eprintln!("{note}");
        }
        eprintln!("{}", report.summary());
        options.out
    };

    let device: DeviceRequest = std::env::var("ATHERIA_DEVICE").unwrap_or_else(|_| "auto".into()).parse()?;
    let options = RunOptions {
        model: ModelSource::Dir(model_dir),
        device,
        steps,
        outputs: OutputOptions { frames: Some(out.join("frames")), ..OutputOptions::default() },
        universe: UniverseOptions::Dense(DenseOptions {
            save_state: Some(out.join("final.safetensors")),
            ..DenseOptions::default()
        }),
        ..RunOptions::default()
    };
    let report = app::run(&options, &|device| eprintln!("{device}"))?;
    eprintln!("{}", report.summary());
    eprintln!(
        "{} frame(s) in {}, final state in {}",
        report.ran.frames,
        out.join("frames").display(),
        out.join("final.safetensors").display()
    );
    Ok(())
}
