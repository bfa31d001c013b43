//! A dense batch of universes held between calls.

use burn::tensor::Tensor;

use super::{guarded, on_backend, open, AnyBackend, Builder, Generic};
use crate::backend::{DeviceReport, DeviceRequest};
use crate::dynamics::{rollout, Simulation};
use crate::error::{Error, Result};
use crate::io::model_dir::ModelSource;
use crate::io::state_file::HostState;
use crate::kernels::EngineBackend;
use crate::models::{check_gamma, ModelConfig};
use crate::observables::View;
use crate::state::{resolve_initial, InitialState, Universe};
use crate::tools::Tool;

/// How a dense session starts.
#[derive(Debug, Clone)]
pub struct DenseSettings {
    /// The law.
    pub model: ModelSource,
    /// Where to run it.
    pub device: DeviceRequest,
    /// Fail instead of falling back when the device cannot start.
    pub strict_device: bool,
    /// Height and width of every universe; `None`: the model's default grid, else 64x64.
    pub grid: Option<(usize, usize)>,
    /// Universes stepped together.
    pub batch: usize,
    /// The initial state; `None`: the model's default.
    pub init: Option<InitialState>,
    /// Seed of the initial state.
    pub seed: u64,
    /// Decay rate; `None`: the model's configured gamma.
    pub gamma: Option<f64>,
}

impl Default for DenseSettings {
    fn default() -> Self {
        Self {
            model: ModelSource::Default,
            device: DeviceRequest::Auto,
            strict_device: false,
            grid: None,
            batch: 1,
            init: None,
            seed: 0,
            gamma: None,
        }
    }
}

/// A dense session's state on backend `B`: the simulation, the state its last step started
/// from (for the `physics` view) and the tools that act after every step.
#[derive(Debug)]
pub struct Dense<B: EngineBackend> {
    simulation: Simulation<B>,
    input: Option<Tensor<B, 4>>,
    per_step: Vec<Tool>,
}

/// [`Dense`] on each backend.
#[derive(Debug)]
pub struct DenseFamily;

impl Generic for DenseFamily {
    type On<B: EngineBackend> = Dense<B>;
}

impl Builder<DenseFamily> for &DenseSettings {
    fn build<B: EngineBackend>(&self, device: &B::Device) -> Result<Dense<B>> {
        let model = self.model.load::<B>(device)?;
        let gamma = self.gamma.unwrap_or(model.config.gamma);
        let init = match &self.init {
            Some(init) => init.clone(),
            None => InitialState::default_for(&model.config)?,
        };
        let state = resolve_initial::<B>(&model.config, &init, self.batch, self.grid, self.seed)?;
        let universe = Universe::from_host(&state, device);
        Ok(Dense { simulation: Simulation::new(model, universe, gamma)?, input: None, per_step: Vec::new() })
    }
}

impl<B: EngineBackend> Dense<B> {
    fn step(&mut self, steps: u64, stop: &dyn Fn() -> bool) -> Result<u64> {
        let until = self.simulation.universe.step + steps;
        let start = self.simulation.universe.step;
        rollout(&mut self.simulation, until, |simulation| {
            if simulation.universe.step > start {
                for tool in &self.per_step {
                    let psi = simulation.universe.psi.clone();
                    simulation.universe.psi = tool.apply(psi, simulation.universe.step)?;
                }
            }
            if simulation.universe.step >= until || stop() {
                return Ok(std::ops::ControlFlow::Break(()));
            }
            self.input = Some(simulation.universe.psi.clone());
            Ok::<_, Error>(std::ops::ControlFlow::Continue(()))
        })
    }

    fn set_state(&mut self, state: &HostState) -> Result<()> {
        let [_, height, width, d_state] = state.dims();
        let expected = self.simulation.universe.dims();
        if [height, width, d_state] != expected[1..] || state.dims()[0] == 0 {
            return Err(Error::InvalidState(format!(
                "the state is [B, H, W, d] = {:?}, this simulation needs [B, {}, {}, {}]",
                state.dims(),
                expected[1],
                expected[2],
                expected[3]
            )));
        }
        let bad = state.non_finite();
        if bad > 0 {
            return Err(Error::InvalidState(format!(
                "the state holds {bad} non-finite value(s) (NaN or infinity)"
            )));
        }
        let device = self.simulation.universe.psi.device();
        let universe = Universe::from_host(state, &device);
        self.simulation = Simulation::new(self.simulation.model.clone(), universe, self.simulation.gamma)?;
        self.input = None;
        Ok(())
    }

    fn apply(&mut self, tool: Tool) -> Result<()> {
        let [_, height, width, _] = self.simulation.universe.dims();
        tool.check(height, width)?;
        if tool.is_per_step() {
            self.per_step.retain(|active| active.kind() != tool.kind());
            if matches!(tool, Tool::ClickOut { enabled: true, .. }) {
                self.per_step.push(tool);
            }
            return Ok(());
        }
        let psi = self.simulation.universe.psi.clone();
        self.simulation.universe.psi = tool.apply(psi, self.simulation.universe.step)?;
        Ok(())
    }

    fn view(&self, view: View) -> Result<Vec<f32>> {
        let psi = self.simulation.universe.psi.clone();
        let map = view.map(psi, self.input.clone(), self.simulation.last_delta.clone())?;
        crate::observables::read_floats(map)
    }
}

/// A dense batch of universes [B, H, W, d] under a law, on the device the guarded constructor
/// chose. Every call that touches the device is guarded: a GPU runtime that panics returns an
/// error instead of ending the process.
#[derive(Debug)]
pub struct DenseSession {
    state: AnyBackend<DenseFamily>,
    report: DeviceReport,
}

impl DenseSession {
    /// Selects the device, loads the law and makes the initial state.
    pub fn new(settings: &DenseSettings) -> Result<Self> {
        let (state, report) = open::<DenseFamily>(settings.device, settings.strict_device, settings)?;
        Ok(Self { state, report })
    }

    /// How the device was chosen.
    pub fn device_report(&self) -> &DeviceReport {
        &self.report
    }

    /// The law's configuration.
    pub fn model_config(&self) -> &ModelConfig {
        on_backend!(&self.state, dense => &dense.simulation.model.config)
    }

    /// \[batch, height, width, d_state\].
    pub fn dims(&self) -> [usize; 4] {
        on_backend!(&self.state, dense => dense.simulation.universe.dims())
    }

    /// Steps taken since the initial state.
    pub fn step_count(&self) -> u64 {
        on_backend!(&self.state, dense => dense.simulation.universe.step)
    }

    /// The decay rate.
    pub fn gamma(&self) -> f64 {
        on_backend!(&self.state, dense => dense.simulation.gamma)
    }

    /// Changes the decay rate.
    pub fn set_gamma(&mut self, gamma: f64) -> Result<()> {
        check_gamma(gamma)?;
        on_backend!(&mut self.state, dense => dense.simulation.gamma = gamma);
        Ok(())
    }

    /// Takes up to `steps` steps, asking `stop` before each one (an interruption ends the call
    /// at a step boundary). Returns the step count reached.
    pub fn step(&mut self, steps: u64, stop: &dyn Fn() -> bool) -> Result<u64> {
        on_backend!(&mut self.state, dense, gpu => guarded(gpu, || dense.step(steps, stop)))
    }

    /// The state on the host (real and imaginary parts [B, H, W, d], the step count).
    pub fn state(&self) -> Result<HostState> {
        on_backend!(&self.state, dense, gpu => guarded(gpu, || dense.simulation.universe.to_host()))
    }

    /// Replaces the state (same grid and d_state; any batch; finite values). The ConvLSTM
    /// memory and the step count come from `state`.
    pub fn set_state(&mut self, state: &HostState) -> Result<()> {
        on_backend!(&mut self.state, dense, gpu => guarded(gpu, || dense.set_state(state)))
    }

    /// Applies a tool now (click-out: from now on, after every step; disabled by `enabled=0`).
    pub fn apply(&mut self, tool: Tool) -> Result<()> {
        on_backend!(&mut self.state, dense, gpu => guarded(gpu, || dense.apply(tool)))
    }

    /// A view of every universe, [B, H, W] row-major.
    pub fn view(&self, view: View) -> Result<Vec<f32>> {
        on_backend!(&self.state, dense, gpu => guarded(gpu, || dense.view(view)))
    }
}
