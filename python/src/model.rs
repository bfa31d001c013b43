//! `atheria._native.Model`: a law, described by where it comes from and checked on load.

use std::path::PathBuf;

use atheria::io::model_dir::ModelSource;
use atheria::models::detect::ConfigHints;
use atheria::models::{Architecture, ModelConfig};
use burn::backend::ndarray::NdArrayDevice;
use burn::backend::NdArray;
use pyo3::prelude::*;

use crate::guard;

/// A law: its source (loaded again on each simulation's device) and its configuration.
#[pyclass(frozen, module = "atheria._native")]
pub struct Model {
    pub(crate) source: ModelSource,
    pub(crate) config: ModelConfig,
    params: usize,
}

impl Model {
    /// Loads `source` once on the CPU: a bad file fails here, where the caller named it.
    fn checked(source: ModelSource) -> PyResult<Self> {
        let model = guard(|| source.load::<NdArray>(&NdArrayDevice::Cpu))?;
        Ok(Self { config: model.config.clone(), params: model.num_params(), source })
    }
}

fn parse_arch(text: &str) -> PyResult<Architecture> {
    guard(|| text.parse::<Architecture>())
}

#[pymethods]
impl Model {
    /// The shipped default model.
    #[staticmethod]
    fn default() -> PyResult<Self> {
        Self::checked(ModelSource::Default)
    }

    /// A model directory (`config.json` + `model.mpk`, as `atheria import` or `train` write).
    #[staticmethod]
    fn load(dir: PathBuf) -> PyResult<Self> {
        Self::checked(ModelSource::Dir(dir))
    }

    /// PyTorch weights (`.pth`, `.pt`, TorchScript, `.safetensors`); what is not given is
    /// read from the tensors, as `atheria import` does.
    #[staticmethod]
    #[pyo3(signature = (path, arch=None, d_state=None, hidden=None))]
    fn import_checkpoint(
        path: PathBuf,
        arch: Option<&str>,
        d_state: Option<usize>,
        hidden: Option<usize>,
    ) -> PyResult<Self> {
        let arch = arch.map(parse_arch).transpose()?;
        Self::checked(ModelSource::Weights { path, hints: ConfigHints { arch, d_state, hidden } })
    }

    /// A fresh law with seeded random weights.
    #[staticmethod]
    #[pyo3(signature = (arch, d_state, hidden, seed=0))]
    fn untrained(arch: &str, d_state: usize, hidden: usize, seed: u64) -> PyResult<Self> {
        let arch = parse_arch(arch)?;
        Self::checked(ModelSource::Seeded { config: ModelConfig::new(arch, d_state, hidden), seed })
    }

    /// The architecture's name.
    #[getter]
    fn arch(&self) -> String {
        self.config.arch.to_string()
    }

    /// Complex channels per cell.
    #[getter]
    fn d_state(&self) -> usize {
        self.config.d_state
    }

    /// Hidden channels.
    #[getter]
    fn hidden(&self) -> usize {
        self.config.hidden_channels
    }

    /// The decay rate the law was made for.
    #[getter]
    fn gamma(&self) -> f64 {
        self.config.gamma
    }

    /// Trainable parameters.
    #[getter]
    fn num_params(&self) -> usize {
        self.params
    }

    /// Where the law comes from, in words.
    #[getter]
    fn source(&self) -> String {
        self.source.describe()
    }

    /// The configuration as JSON (the model directory's `config.json`).
    fn config_json(&self) -> PyResult<String> {
        serde_json::to_string(&self.config).map_err(|error| crate::AtheriaError::new_err(error.to_string()))
    }

    fn __repr__(&self) -> String {
        format!(
            "Model(arch='{}', d_state={}, hidden={}, params={}, source='{}')",
            self.config.arch,
            self.config.d_state,
            self.config.hidden_channels,
            self.params,
            self.source.describe()
        )
    }
}
