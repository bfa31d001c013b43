//! Arbitrary bytes into every reader of untrusted files: PyTorch pickles, safetensors weights,
//! state files and model records. The first byte picks the reader. Any panic that escapes a
//! reader, and any abort (such as an allocation the input talked the reader into), is a crash;
//! errors are the expected outcome.

#![no_main]

use std::path::Path;

use atheria::io::model_dir::model_from_record;
use atheria::io::state_file::parse_state;
use atheria::io::weights::WeightFile;
use atheria::models::{Architecture, ModelConfig};
use burn::backend::NdArray;
use libfuzzer_sys::fuzz_target;

fn check_weights(result: atheria::Result<WeightFile>) {
    if let Ok(weights) = result {
        for (name, tensor) in &weights.tensors {
            assert_eq!(tensor.data.len(), tensor.shape.iter().product::<usize>(), "{name}");
            assert_eq!(tensor.non_finite(), 0, "{name}");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    match selector % 5 {
        0 => check_weights(WeightFile::from_bytes(Path::new("fuzz.pth"), bytes)),
        1 => check_weights(WeightFile::from_bytes(Path::new("fuzz.safetensors"), bytes)),
        2 => {
            if let Ok(state) = parse_state(Path::new("fuzz.safetensors"), bytes) {
                let [batch, height, width, d] = state.dims();
                assert_eq!(state.re.data.len(), batch * height * width * d);
                assert_eq!(state.im.data.len(), state.re.data.len());
            }
        }
        // Records of a small MLP and a small ConvLSTM U-Net (the seeds are valid ones).
        3 => {
            let config = ModelConfig::new(Architecture::Mlp, 2, 4);
            let _ = model_from_record::<NdArray>(config, bytes.to_vec(), Path::new("fuzz.mpk"), &Default::default());
        }
        _ => {
            let config = ModelConfig::new(Architecture::UnetConvlstm, 1, 2);
            let _ = model_from_record::<NdArray>(config, bytes.to_vec(), Path::new("fuzz.mpk"), &Default::default());
        }
    }
});
