//! What a PyTorch checkpoint holds, as the importer sees it: how the weights were wrapped, the
//! architecture and sizes inferred from the tensors, and a training checkpoint's episode and
//! metrics. Reads only; `atheria import` (or `atheria::app::import`) writes the model directory.
//!
//! ```sh
//! cargo run --release --example load_pytorch -- tests/fixtures/pytorch/unet-convlstm_checkpoint.pth
//! ```

use std::path::PathBuf;

use atheria::io::weights::WeightFile;
use atheria::models::detect::{resolve, ConfigHints};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = PathBuf::from(std::env::args().nth(1).ok_or("usage: load_pytorch CHECKPOINT")?);
    let weights = WeightFile::read(&path)?;
    let origin = &weights.origin;
    println!("{}: {} tensors ({})", path.display(), weights.tensors.len(), origin.format);
    if let Some(key) = &origin.state_dict_key {
        println!("  training checkpoint, weights under '{key}'");
    }
    if !origin.stripped_prefixes.is_empty() {
        println!("  removed prefixes: {:?}", origin.stripped_prefixes);
    }
    if !origin.converted_dtypes().is_empty() {
        println!("  converted to f32 from: {:?}", origin.converted_dtypes());
    }
    if let Some(episode) = origin.episode {
        println!("  episode {episode}");
    }
    if let Some(metrics) = &origin.metrics {
        println!("  metrics {metrics}");
    }
    let resolved = resolve(&weights, &ConfigHints::default())?;
    for note in &resolved.notes {
        println!("  {note}");
    }
    let config = &resolved.config;
    println!("  => {} d_state {} hidden {}", config.arch, config.d_state, config.hidden_channels);
    Ok(())
}
