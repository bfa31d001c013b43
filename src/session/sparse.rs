//! A sparse unbounded universe held between calls.

use super::{guarded, on_backend, open, AnyBackend, Builder, Generic};
use crate::backend::{DeviceReport, DeviceRequest};
use crate::error::{Error, Result};
use crate::io::model_dir::ModelSource;
use crate::io::state_file::HostState;
use crate::kernels::EngineBackend;
use crate::models::{check_gamma, Model, ModelConfig};
use crate::sparse::{check_law, Region, SparseConfig, SparseStepReport, SparseUniverse, TileCoord};
use crate::state::Universe;

/// A sparse session's state on backend `B`: the universe and, once loaded, its law.
#[derive(Debug)]
pub struct Sparse<B: EngineBackend> {
    universe: SparseUniverse<B>,
    model: Option<Model<B>>,
    device: B::Device,
}

/// [`Sparse`] on each backend.
#[derive(Debug)]
pub struct SparseFamily;

impl Generic for SparseFamily {
    type On<B: EngineBackend> = Sparse<B>;
}

struct Empty<'a> {
    config: &'a SparseConfig,
    d_state: usize,
}

impl Builder<SparseFamily> for Empty<'_> {
    fn build<B: EngineBackend>(&self, device: &B::Device) -> Result<Sparse<B>> {
        let universe = SparseUniverse::new(*self.config, self.d_state, device)?;
        Ok(Sparse { universe, model: None, device: device.clone() })
    }
}

impl<B: EngineBackend> Sparse<B> {
    fn load(&mut self, source: &ModelSource) -> Result<ModelConfig> {
        let model = source.load::<B>(&self.device)?;
        check_law(&model.config)?;
        if model.config.d_state != self.universe.d_state() {
            return Err(Error::InvalidSparse(format!(
                "the universe has d_state {} but the model expects {}",
                self.universe.d_state(),
                model.config.d_state
            )));
        }
        let config = model.config.clone();
        self.model = Some(model);
        Ok(config)
    }

    fn step(&mut self, gamma: Option<f64>) -> Result<SparseStepReport> {
        let Some(model) = &self.model else {
            return Err(Error::InvalidSparse("no model is loaded: load one before stepping".into()));
        };
        self.universe.step(model, gamma.unwrap_or(model.config.gamma))
    }

    fn to_dense(&self, region: Region) -> Result<HostState> {
        let mut host = Universe::new(self.universe.to_dense(region)?).to_host()?;
        host.step = self.universe.step_count();
        Ok(host)
    }

    fn paste(&mut self, state: &HostState, x: i64, y: i64) -> Result<()> {
        let [batch, _, _, d_state] = state.dims();
        if batch != 1 || d_state != self.universe.d_state() {
            return Err(Error::InvalidSparse(format!(
                "a dense grid for this universe is [1, H, W, {}], got {:?}",
                self.universe.d_state(),
                state.dims()
            )));
        }
        let bad = state.non_finite();
        if bad > 0 {
            return Err(Error::InvalidState(format!(
                "the grid holds {bad} non-finite value(s) (NaN or infinity)"
            )));
        }
        self.universe.from_dense(Universe::<B>::from_host(state, &self.device).psi, x, y)
    }

    fn clear(&mut self) -> Result<()> {
        self.universe = SparseUniverse::new(*self.universe.config(), self.universe.d_state(), &self.device)?;
        Ok(())
    }
}

/// An unbounded universe of tiles over the vacuum (see [`crate::sparse`]) on the device the
/// guarded constructor chose, with a law loaded when the caller is ready. Every call that
/// touches the device is guarded like [`super::DenseSession`]'s.
#[derive(Debug)]
pub struct SparseSession {
    state: AnyBackend<SparseFamily>,
    report: DeviceReport,
    gamma: Option<f64>,
    model: Option<ModelConfig>,
}

impl SparseSession {
    /// An empty universe of `d_state` channels (the vacuum everywhere) on the device
    /// `request` selects (`strict`: no fallback).
    pub fn new(config: &SparseConfig, d_state: usize, request: DeviceRequest, strict: bool) -> Result<Self> {
        let (state, report) = open::<SparseFamily>(request, strict, Empty { config, d_state })?;
        Ok(Self { state, report, gamma: None, model: None })
    }

    /// Loads the law (its d_state must be the universe's; no ConvLSTM memory).
    pub fn load_model(&mut self, source: &ModelSource) -> Result<&ModelConfig> {
        let config = on_backend!(&mut self.state, sparse, gpu => guarded(gpu, || sparse.load(source)))?;
        Ok(self.model.insert(config))
    }

    /// The loaded law's configuration.
    pub fn model_config(&self) -> Option<&ModelConfig> {
        self.model.as_ref()
    }

    /// How the device was chosen.
    pub fn device_report(&self) -> &DeviceReport {
        &self.report
    }

    /// Sets the decay rate (`None`: the model's).
    pub fn set_gamma(&mut self, gamma: Option<f64>) -> Result<()> {
        if let Some(gamma) = gamma {
            check_gamma(gamma)?;
        }
        self.gamma = gamma;
        Ok(())
    }

    /// Channels per cell.
    pub fn d_state(&self) -> usize {
        on_backend!(&self.state, sparse => sparse.universe.d_state())
    }

    /// Cells per tile side.
    pub fn tile(&self) -> usize {
        on_backend!(&self.state, sparse => sparse.universe.config().tile)
    }

    /// Steps taken.
    pub fn step_count(&self) -> u64 {
        on_backend!(&self.state, sparse => sparse.universe.step_count())
    }

    /// Cells holding matter, over the stored tiles.
    pub fn matter_cells(&self) -> usize {
        on_backend!(&self.state, sparse => sparse.universe.matter_cells())
    }

    /// The stored tiles (those with matter), as (column, row) tile coordinates.
    pub fn stored_tiles(&self) -> Vec<TileCoord> {
        on_backend!(&self.state, sparse => sparse.universe.stored_coords())
    }

    /// One step of the loaded law.
    pub fn step(&mut self) -> Result<SparseStepReport> {
        let gamma = self.gamma;
        on_backend!(&mut self.state, sparse, gpu => guarded(gpu, || sparse.step(gamma)))
    }

    /// The universe over `region` on the host, [1, height, width, d] (the vacuum where no
    /// tile is stored).
    pub fn to_dense(&self, region: Region) -> Result<HostState> {
        on_backend!(&self.state, sparse, gpu => guarded(gpu, || sparse.to_dense(region)))
    }

    /// Writes a dense grid [1, H, W, d] with its top-left cell at `(x, y)`.
    pub fn from_dense(&mut self, state: &HostState, x: i64, y: i64) -> Result<()> {
        on_backend!(&mut self.state, sparse, gpu => guarded(gpu, || sparse.paste(state, x, y)))
    }

    /// Forgets every stored tile and the step count (the law stays loaded).
    pub fn clear(&mut self) -> Result<()> {
        on_backend!(&mut self.state, sparse => sparse.clear())
    }
}
