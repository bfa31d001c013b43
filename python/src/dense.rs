//! `atheria._native.Dense`: a dense batch of universes held between calls.

use std::sync::Mutex;

use atheria::backend::DeviceRequest;
use atheria::observables::View;
use atheria::session::{DenseSession, DenseSettings};
use atheria::state::InitialState;
use atheria::tools::Tool;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::model::Model;
use crate::{detached, float_bytes, guard, state_bytes, state_from_bytes};

/// A dense session; the Python class `atheria.Simulation` wraps it.
#[pyclass(module = "atheria._native")]
pub struct Dense {
    session: Mutex<DenseSession>,
}

impl Dense {
    fn with<T: Send>(
        &self,
        py: Python<'_>,
        work: impl FnOnce(&mut DenseSession) -> atheria::Result<T> + Send,
    ) -> PyResult<T> {
        detached(py, &self.session, work)
    }
}

#[pymethods]
impl Dense {
    #[new]
    #[pyo3(signature = (model, grid=None, batch=1, init=None, seed=0, device="auto", strict=false, gamma=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        model: &Model,
        grid: Option<(usize, usize)>,
        batch: usize,
        init: Option<&str>,
        seed: u64,
        device: &str,
        strict: bool,
        gamma: Option<f64>,
    ) -> PyResult<Self> {
        let device: DeviceRequest = guard(|| device.parse())?;
        let init = init.map(|text| guard(|| text.parse::<InitialState>())).transpose()?;
        let settings = DenseSettings {
            model: model.source.clone(),
            device,
            strict_device: strict,
            grid,
            batch,
            init,
            seed,
            gamma,
        };
        let session = py.detach(|| guard(|| DenseSession::new(&settings)))?;
        Ok(Self { session: Mutex::new(session) })
    }

    /// Takes `steps` steps. Python's signals are checked after each step: Ctrl-C raises
    /// KeyboardInterrupt with the state at the last completed step.
    fn step(&self, py: Python<'_>, steps: u64) -> PyResult<u64> {
        let mut reached = self.with(py, |session| Ok(session.step_count()))?;
        for _ in 0..steps {
            reached = self.with(py, |session| session.step(1, &|| false))?;
            py.check_signals()?;
        }
        Ok(reached)
    }

    /// The state as interleaved complex64 bytes, [B, H, W, d].
    fn psi<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let state = self.with(py, |session| session.state())?;
        Ok(state_bytes(py, &state))
    }

    /// Replaces the state with interleaved complex64 bytes of `shape` [B, H, W, d].
    fn set_psi(&self, py: Python<'_>, data: &[u8], shape: [usize; 4]) -> PyResult<()> {
        let state = guard(|| state_from_bytes(data, shape, 0))?;
        self.with(py, |session| {
            let step = session.step_count();
            session.set_state(&atheria::io::state_file::HostState { step, ..state })
        })
    }

    /// Applies a tool given as `--tool` reads it (`vortex:x=32,y=32,radius=8,m=2`).
    fn apply(&self, py: Python<'_>, spec: &str) -> PyResult<()> {
        let tool: Tool = guard(|| spec.parse())?;
        self.with(py, |session| session.apply(tool))
    }

    /// A view of every universe as little-endian f32 bytes, [B, H, W].
    fn view<'py>(&self, py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyBytes>> {
        let view: View = guard(|| name.parse())?;
        let values = self.with(py, |session| session.view(view))?;
        Ok(float_bytes(py, &values))
    }

    /// [B, H, W, d].
    #[getter]
    fn dims(&self, py: Python<'_>) -> PyResult<[usize; 4]> {
        self.with(py, |session| Ok(session.dims()))
    }

    #[getter]
    fn step_count(&self, py: Python<'_>) -> PyResult<u64> {
        self.with(py, |session| Ok(session.step_count()))
    }

    #[getter]
    fn gamma(&self, py: Python<'_>) -> PyResult<f64> {
        self.with(py, |session| Ok(session.gamma()))
    }

    #[setter]
    fn set_gamma(&self, py: Python<'_>, gamma: f64) -> PyResult<()> {
        self.with(py, |session| session.set_gamma(gamma))
    }

    /// How the device was chosen, in the CLI's words.
    #[getter]
    fn device_report(&self, py: Python<'_>) -> PyResult<String> {
        self.with(py, |session| Ok(session.device_report().summary()))
    }

    /// True when the backend running is not the one explicitly asked for.
    #[getter]
    fn fell_back(&self, py: Python<'_>) -> PyResult<bool> {
        self.with(py, |session| Ok(session.device_report().fell_back()))
    }

    /// The same report as JSON (every attempt and its cause).
    fn device_report_json(&self, py: Python<'_>) -> PyResult<String> {
        let report = self.with(py, |session| Ok(session.device_report().clone()))?;
        serde_json::to_string(&report).map_err(|error| crate::AtheriaError::new_err(error.to_string()))
    }
}
