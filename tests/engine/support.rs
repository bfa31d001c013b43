//! Shared helpers: fixtures, devices, error measures.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use atheria::backend::{select_device, DeviceRequest, SelectOptions, SelectedDevice};
use atheria::io::state_file::HostState;
use atheria::io::weights::WeightFile;
use atheria::io::HostTensor;
use atheria::models::{Architecture, ModelConfig};
use burn::backend::wgpu::WgpuDevice;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use safetensors::SafeTensors;

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// A PyTorch reference trajectory written by scripts/make_fixtures.py.
pub struct Trajectory {
    pub config: ModelConfig,
    pub weights: WeightFile,
    pub gamma: f64,
    pub steps: u64,
    pub states: HashMap<u64, HostState>,
    /// ConvLSTM memory (hidden, cell) after the last step.
    pub memory: Option<(HostTensor, HostTensor)>,
}

pub fn trajectory(arch: Architecture) -> Trajectory {
    let dir = fixtures();
    let weights = WeightFile::read(&dir.join(format!("{arch}.safetensors"))).unwrap();
    let bytes = std::fs::read(dir.join(format!("{arch}_trajectory.safetensors"))).unwrap();
    let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
    let metadata = header.metadata().clone().unwrap();
    let number = |key: &str| metadata[key].parse::<f64>().unwrap();
    let parsed = SafeTensors::deserialize(&bytes).unwrap();
    let tensor = |name: &str| -> Option<HostTensor> {
        let view = parsed.tensor(name).ok()?;
        let data =
            view.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        Some(HostTensor { shape: view.shape().to_vec(), data })
    };
    let steps = number("steps") as u64;
    let mut states = HashMap::new();
    for step in [0, 1, steps] {
        let re = tensor(&format!("psi{step}_re")).unwrap();
        let im = tensor(&format!("psi{step}_im")).unwrap();
        states.insert(step, HostState { re, im, memory: None, step });
    }
    let memory = tensor(&format!("h{steps}")).zip(tensor(&format!("c{steps}")));
    let config = ModelConfig::new(arch, number("d_state") as usize, number("hidden") as usize);
    Trajectory { config, weights, gamma: number("gamma"), steps, states, memory }
}

/// ||a - b|| / ||b|| over all values.
pub fn relative_error(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    let (mut diff, mut norm) = (0.0f64, 0.0f64);
    for (x, y) in a.iter().zip(b) {
        diff += (*x as f64 - *y as f64).powi(2);
        norm += (*y as f64).powi(2);
    }
    (diff / norm).sqrt()
}

/// Relative error of two host states over re and im together.
pub fn state_error(a: &HostState, b: &HostState) -> f64 {
    assert_eq!(a.re.shape, b.re.shape);
    let join = |s: &HostState| [s.re.data.clone(), s.im.data.clone()].concat();
    relative_error(&join(a), &join(b))
}

pub fn to_vec<B: Backend, const D: usize>(tensor: Tensor<B, D>) -> Vec<f32> {
    tensor.into_data().convert::<f32>().to_vec::<f32>().unwrap()
}

/// The wgpu device, started through the guarded constructor in strict mode. Tests that need
/// it fail (never skip) when no Vulkan driver is installed: .ci/run installs one.
pub fn wgpu_device() -> WgpuDevice {
    static DEVICE: OnceLock<Result<WgpuDevice, String>> = OnceLock::new();
    DEVICE
        .get_or_init(|| {
            let options = SelectOptions { strict: true, ..SelectOptions::default() };
            match select_device(DeviceRequest::Wgpu, &options) {
                Ok(selection) => match selection.device {
                    SelectedDevice::Wgpu(device) => Ok(device),
                    other => Err(format!("strict wgpu selected {other:?}")),
                },
                Err(error) => Err(format!(
                    "wgpu did not start ({error}); install a Vulkan driver, e.g. \
                     `apt-get install mesa-vulkan-drivers libvulkan1`"
                )),
            }
        })
        .clone()
        .unwrap_or_else(|message| panic!("{message}"))
}
