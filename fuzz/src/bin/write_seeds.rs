//! Writes the seed corpus of the `readers` fuzz target (`fuzz/seeds/readers/`): one valid
//! input per reader, prefixed with the byte that selects it. Run by hand from `fuzz/`:
//! `cargo run --release --bin write_seeds`.

use std::path::Path;

use atheria::io::model_dir::{save_model, RECORD_FILE};
use atheria::io::state_file::save_state;
use atheria::io::HostTensor;
use atheria::models::{Architecture, Model, ModelConfig};
use atheria::state::{generate, InitialState};
use burn::backend::NdArray;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let seeds = root.join("fuzz/seeds/readers");
    let fixtures = root.join("tests/fixtures");
    std::fs::create_dir_all(&seeds)?;
    let write = |name: &str, selector: u8, bytes: &[u8]| {
        std::fs::write(seeds.join(name), [&[selector][..], bytes].concat())
    };
    let pytorch = fixtures.join("pytorch");
    write("mlp.pth", 0, &std::fs::read(pytorch.join("mlp.pth"))?)?;
    write("mlp_legacy.pth", 0, &std::fs::read(pytorch.join("mlp_legacy.pth"))?)?;
    write("mlp_checkpoint.pth", 0, &std::fs::read(pytorch.join("mlp_checkpoint.pth"))?)?;
    write("mlp.safetensors", 1, &std::fs::read(fixtures.join("mlp.safetensors"))?)?;

    let scratch = std::env::temp_dir().join(format!("atheria-fuzz-seeds-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    let mut state = generate(&InitialState::Random, 1, 4, 4, 1, 0)?;
    state.memory = Some((
        HostTensor { shape: vec![1, 8, 1, 1], data: vec![0.25; 8] },
        HostTensor { shape: vec![1, 8, 1, 1], data: vec![0.5; 8] },
    ));
    save_state(&scratch.join("state.safetensors"), &state)?;
    write("state.safetensors", 2, &std::fs::read(scratch.join("state.safetensors"))?)?;
    // The fuzz target's record configurations: mlp d2 h4 and unet-convlstm d1 h2.
    let device = Default::default();
    for (selector, config) in
        [(3, ModelConfig::new(Architecture::Mlp, 2, 4)), (4, ModelConfig::new(Architecture::UnetConvlstm, 1, 2))]
    {
        let model_dir = scratch.join(format!("model-{selector}"));
        save_model(&model_dir, &Model::<NdArray>::seeded(config, 1, &device)?)?;
        write(&format!("record-{selector}.mpk"), selector, &std::fs::read(model_dir.join(RECORD_FILE))?)?;
    }
    std::fs::remove_dir_all(&scratch)?;
    eprintln!("seeds written to {}", seeds.display());
    Ok(())
}
