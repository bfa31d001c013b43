//! Shared helpers: the binary, scratch directories, fixtures, devices, error measures.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
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

// --- The binary ---

/// The `atheria` binary, with no device chosen by the environment: the one built with these
/// tests, or `ATHERIA_TEST_BINARY` where the tests run away from their build (the GPU check).
pub fn atheria_command() -> Command {
    let binary = std::env::var_os("ATHERIA_TEST_BINARY")
        .map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_atheria")), PathBuf::from);
    let mut command = Command::new(binary);
    command.env_remove("ATHERIA_DEVICE");
    command
}

/// Starts the binary with `args`, stdout and stderr captured.
pub fn spawn(args: &[&str]) -> Child {
    atheria_command()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts")
}

/// Runs the binary with `args` to its end.
pub fn atheria(args: &[&str]) -> Output {
    spawn(args).wait_with_output().expect("the binary runs")
}

/// Runs the test `test` (its path in this crate, `module::name`) alone in a child of this test
/// binary, with `env` added: where a test needs process-wide state (environment variables, the
/// dynamic linker's search path) that must not reach the other tests.
pub fn test_in_a_child<'a>(test: &str, env: impl IntoIterator<Item = (&'a str, &'a str)>) -> Output {
    Command::new(std::env::current_exe().expect("the test binary's path"))
        .args(["--exact", test, "--nocapture", "--test-threads", "1"])
        .envs(env)
        .output()
        .expect("the test binary runs")
}

/// What a run printed on stderr.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts a failed run with one `error:` line containing `needle`, and no panic; returns that
/// line.
pub fn assert_one_line_error(output: &Output, needle: &str) -> String {
    let text = stderr(output);
    assert!(!output.status.success(), "succeeded: {text}");
    assert!(!text.contains("panicked"), "panicked: {text}");
    let error_lines: Vec<&str> = text.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(error_lines.len(), 1, "{text}");
    assert!(error_lines[0].contains(needle), "expected '{needle}' in: {text}");
    error_lines[0].to_owned()
}

/// Runs the binary with `args`, asserts [`assert_one_line_error`] and returns that line.
pub fn assert_fails_with(args: &[&str], needle: &str) -> String {
    let output = atheria(args);
    assert!(!output.status.success(), "{args:?} succeeded: {}", stderr(&output));
    assert_one_line_error(&output, needle)
}

pub use crate::scratch_dir::scratch;

// --- Fixtures ---

/// `tests/fixtures/`.
pub fn fixtures() -> PathBuf {
    repository().join("tests/fixtures")
}

/// The repository's root: where these tests were built, or `ATHERIA_TEST_ROOT` where they run
/// away from their build (the GPU check carries them to another machine).
pub fn repository() -> PathBuf {
    std::env::var_os("ATHERIA_TEST_ROOT")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
}

/// A fixture written by one of the scripts in `scripts/`: f32 tensors by name, and the string
/// metadata the script recorded.
pub struct Fixture {
    pub tensors: HashMap<String, HostTensor>,
    pub metadata: HashMap<String, String>,
}

impl Fixture {
    /// Reads `tests/fixtures/NAME`.
    pub fn load(name: &str) -> Self {
        let bytes = std::fs::read(fixtures().join(name)).unwrap_or_else(|error| panic!("{name}: {error}"));
        let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
        let metadata = header.metadata().clone().unwrap_or_default();
        let parsed = SafeTensors::deserialize(&bytes).unwrap();
        let tensors = parsed
            .tensors()
            .into_iter()
            .map(|(name, view)| {
                let data = view
                    .data()
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                (name, HostTensor { shape: view.shape().to_vec(), data })
            })
            .collect();
        Self { tensors, metadata }
    }

    /// The tensor called `name`, which must be there.
    pub fn tensor(&self, name: &str) -> &HostTensor {
        self.tensors.get(name).unwrap_or_else(|| panic!("the fixture has no tensor '{name}'"))
    }

    /// The values of the tensor called `name`.
    pub fn values(&self, name: &str) -> &[f32] {
        &self.tensor(name).data
    }

    /// The 4-D tensor called `name`, on `device`.
    pub fn state<B: Backend>(&self, name: &str, device: &B::Device) -> Tensor<B, 4> {
        let tensor = self.tensor(name);
        let shape: [usize; 4] = tensor.shape.clone().try_into().unwrap();
        Tensor::from_data(burn::tensor::TensorData::new(tensor.data.clone(), shape), device)
    }

    /// A metadata value as a number.
    pub fn number(&self, key: &str) -> f64 {
        self.metadata[key].parse().unwrap_or_else(|_| panic!("metadata '{key}' is not a number"))
    }
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

/// The reference trajectory of `arch`.
pub fn trajectory(arch: Architecture) -> Trajectory {
    let weights = WeightFile::read(&fixtures().join(format!("{arch}.safetensors"))).unwrap();
    let fixture = Fixture::load(&format!("{arch}_trajectory.safetensors"));
    let steps = fixture.number("steps") as u64;
    let mut states = HashMap::new();
    for step in [0, 1, steps] {
        let re = fixture.tensor(&format!("psi{step}_re")).clone();
        let im = fixture.tensor(&format!("psi{step}_im")).clone();
        states.insert(step, HostState { re, im, memory: None, step });
    }
    let memory = fixture
        .tensors
        .get(&format!("h{steps}"))
        .cloned()
        .zip(fixture.tensors.get(&format!("c{steps}")).cloned());
    let config =
        ModelConfig::new(arch, fixture.number("d_state") as usize, fixture.number("hidden") as usize);
    Trajectory { config, weights, gamma: fixture.number("gamma"), steps, states, memory }
}

/// Universe `index` of a host state, as a batch of one (its memory too).
pub fn universe(state: &HostState, index: usize) -> HostState {
    let slice = |tensor: &HostTensor| {
        let per = tensor.data.len() / tensor.shape[0];
        let mut shape = tensor.shape.clone();
        shape[0] = 1;
        HostTensor { shape, data: tensor.data[index * per..(index + 1) * per].to_vec() }
    };
    HostState {
        re: slice(&state.re),
        im: slice(&state.im),
        memory: state.memory.as_ref().map(|(h, c)| (slice(h), slice(c))),
        step: state.step,
    }
}

/// Runs `model` from `start` with decay `gamma` on backend B: the states after 1 and after
/// `steps` steps.
pub fn replay<B: atheria::EngineBackend>(
    model: atheria::Model<B>,
    start: &HostState,
    gamma: f64,
    steps: u64,
    device: &B::Device,
) -> (HostState, HostState) {
    let universe = atheria::Universe::from_host(start, device);
    let mut simulation = atheria::Simulation::new(model, universe, gamma).unwrap();
    simulation.step();
    let first = simulation.universe.to_host().unwrap();
    atheria::dynamics::advance(&mut simulation, steps - 1);
    (first, simulation.universe.to_host().unwrap())
}

// --- Error measures ---

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

/// Asserts that the largest absolute difference is at most `tolerance`, naming the worst value.
pub fn assert_close(name: &str, actual: &[f32], expected: &[f32], tolerance: f32) {
    assert_eq!(actual.len(), expected.len(), "{name}: length");
    let (worst, index) = actual
        .iter()
        .zip(expected)
        .enumerate()
        .map(|(i, (a, e))| ((a - e).abs(), i))
        .fold((0.0f32, 0), |best, next| if next.0 > best.0 || next.0.is_nan() { next } else { best });
    assert!(
        worst <= tolerance,
        "{name}: |difference| {worst} at {index} (got {}, expected {})",
        actual[index],
        expected[index]
    );
}

/// A tensor's values as f32.
pub fn to_vec<B: Backend, const D: usize>(tensor: Tensor<B, D>) -> Vec<f32> {
    tensor.into_data().convert::<f32>().to_vec::<f32>().unwrap()
}

// --- Devices ---

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

/// Whether this machine must run CUDA: `ATHERIA_EXPECT_CUDA=1` (set it on GPU machines), so
/// that a CUDA that does not start fails the device tests instead of taking the fallback path.
pub fn cuda_expected() -> bool {
    std::env::var("ATHERIA_EXPECT_CUDA").is_ok_and(|value| value == "1")
}
