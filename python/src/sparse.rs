//! `atheria._native.Sparse`: an unbounded universe of tiles held between calls.

use std::sync::Mutex;

use atheria::backend::DeviceRequest;
use atheria::io::model_dir::ModelSource;
use atheria::session::SparseSession;
use atheria::sparse::{Region, SparseConfig};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::model::Model;
use crate::{detached, guard, state_bytes, state_from_bytes};

/// A sparse session; the Python classes `atheria.SparseUniverse` and the lab's `Engine` wrap
/// it.
#[pyclass(module = "atheria._native")]
pub struct Sparse {
    session: Mutex<SparseSession>,
}

impl Sparse {
    fn with<T: Send>(
        &self,
        py: Python<'_>,
        work: impl FnOnce(&mut SparseSession) -> atheria::Result<T> + Send,
    ) -> PyResult<T> {
        detached(py, &self.session, work)
    }
}

#[pymethods]
impl Sparse {
    #[new]
    #[pyo3(signature = (d_state, device="auto", strict=false, tile=None, threshold=None, vacuum_seed=0))]
    fn new(
        py: Python<'_>,
        d_state: usize,
        device: &str,
        strict: bool,
        tile: Option<usize>,
        threshold: Option<f64>,
        vacuum_seed: u64,
    ) -> PyResult<Self> {
        let device: DeviceRequest = guard(|| device.parse())?;
        let mut config = SparseConfig { vacuum_seed, ..SparseConfig::default() };
        if let Some(tile) = tile {
            config.tile = tile;
        }
        if let Some(threshold) = threshold {
            config.threshold = threshold;
        }
        let session = py.detach(|| guard(|| SparseSession::new(&config, d_state, device, strict)))?;
        Ok(Self { session: Mutex::new(session) })
    }

    /// Loads a law (d_state must match; no ConvLSTM memory).
    fn load_model(&self, py: Python<'_>, model: &Model) -> PyResult<()> {
        let source: ModelSource = model.source.clone();
        self.with(py, |session| session.load_model(&source).map(|_| ()))
    }

    /// One step; returns (step count, stored tiles, matter cells).
    fn step(&self, py: Python<'_>) -> PyResult<(u64, usize, usize)> {
        let report = self.with(py, |session| session.step())?;
        py.check_signals()?;
        Ok((report.step, report.stored_tiles, report.matter_cells))
    }

    /// The region as interleaved complex64 bytes [1, height, width, d].
    fn to_dense<'py>(
        &self,
        py: Python<'py>,
        x: i64,
        y: i64,
        width: usize,
        height: usize,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let state = self.with(py, |session| session.to_dense(Region::new(x, y, width, height)))?;
        Ok(state_bytes(py, &state))
    }

    /// Writes interleaved complex64 bytes of shape [1, H, W, d] with the top-left cell at (x, y).
    fn paste_dense(&self, py: Python<'_>, data: &[u8], shape: [usize; 4], x: i64, y: i64) -> PyResult<()> {
        let state = guard(|| state_from_bytes(data, shape, 0))?;
        self.with(py, |session| session.from_dense(&state, x, y))
    }

    /// Forgets every stored tile and the step count.
    fn clear(&self, py: Python<'_>) -> PyResult<()> {
        self.with(py, |session| session.clear())
    }

    #[getter]
    fn stored_tiles(&self, py: Python<'_>) -> PyResult<Vec<(i64, i64)>> {
        self.with(py, |session| Ok(session.stored_tiles()))
    }

    #[getter]
    fn matter_cells(&self, py: Python<'_>) -> PyResult<usize> {
        self.with(py, |session| Ok(session.matter_cells()))
    }

    #[getter]
    fn step_count(&self, py: Python<'_>) -> PyResult<u64> {
        self.with(py, |session| Ok(session.step_count()))
    }

    #[getter]
    fn d_state(&self, py: Python<'_>) -> PyResult<usize> {
        self.with(py, |session| Ok(session.d_state()))
    }

    #[getter]
    fn tile(&self, py: Python<'_>) -> PyResult<usize> {
        self.with(py, |session| Ok(session.tile()))
    }

    #[getter]
    fn has_model(&self, py: Python<'_>) -> PyResult<bool> {
        self.with(py, |session| Ok(session.model_config().is_some()))
    }

    /// Sets the decay rate (None: the model's).
    fn set_gamma(&self, py: Python<'_>, gamma: Option<f64>) -> PyResult<()> {
        self.with(py, |session| session.set_gamma(gamma))
    }

    #[getter]
    fn device_report(&self, py: Python<'_>) -> PyResult<String> {
        self.with(py, |session| Ok(session.device_report().summary()))
    }

    /// True when the backend running is not the one explicitly asked for.
    #[getter]
    fn fell_back(&self, py: Python<'_>) -> PyResult<bool> {
        self.with(py, |session| Ok(session.device_report().fell_back()))
    }
}
