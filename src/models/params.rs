//! Where a model's parameters come from: a seeded initialiser (a fresh, reproducible model) or
//! a set of named tensors read from a file (PyTorch's state_dict names). Models are built
//! through one constructor for both, so the names a model asks for are exactly the ones a
//! checkpoint must contain.

use std::collections::BTreeSet;

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

use crate::error::{Error, Result};
use crate::io::weights::WeightFile;
use crate::io::HostTensor;

/// How a freshly initialised parameter is drawn.
#[derive(Debug, Clone, Copy)]
pub enum Init {
    /// U(-bound, bound), PyTorch's default for convolutions.
    Uniform {
        /// The half-width of the interval.
        bound: f64,
    },
    /// N(0, std).
    Normal {
        /// The standard deviation.
        std: f64,
    },
    /// All zeros (biases, norm shifts).
    Zeros,
    /// All ones (norm scales).
    Ones,
}

/// Supplies tensors by name and shape while a model is built.
pub trait ParamSource<B: Backend> {
    /// A tensor whose values the architecture fixes (not learned): a file must hold exactly
    /// `values`, anything else is refused.
    fn take_fixed<const D: usize>(
        &mut self,
        name: &str,
        shape: [usize; D],
        values: &[f32],
    ) -> Result<Tensor<B, D>>;

    /// The tensor called `name` (PyTorch's name) of `shape`; `init` says how a fresh one is drawn.
    fn take<const D: usize>(&mut self, name: &str, shape: [usize; D], init: Init) -> Result<Tensor<B, D>>;
}

/// Draws every parameter from a seeded ChaCha stream on the host, so that the same seed gives
/// the same model on every backend.
pub struct SeededInit<'a, B: Backend> {
    rng: ChaCha8Rng,
    device: &'a B::Device,
}

impl<'a, B: Backend> SeededInit<'a, B> {
    /// Draws from a ChaCha8 stream seeded with `seed`, placing tensors on `device`.
    pub fn new(seed: u64, device: &'a B::Device) -> Self {
        Self { rng: ChaCha8Rng::seed_from_u64(seed), device }
    }
}

impl<B: Backend> ParamSource<B> for SeededInit<'_, B> {
    fn take_fixed<const D: usize>(
        &mut self,
        _name: &str,
        shape: [usize; D],
        values: &[f32],
    ) -> Result<Tensor<B, D>> {
        Ok(Tensor::from_data(TensorData::new(values.to_vec(), shape), self.device))
    }

    fn take<const D: usize>(&mut self, _name: &str, shape: [usize; D], init: Init) -> Result<Tensor<B, D>> {
        let count: usize = shape.iter().product();
        let values: Vec<f32> = match init {
            Init::Uniform { bound } => (0..count).map(|_| self.rng.gen_range(-bound..bound) as f32).collect(),
            Init::Normal { std } => {
                let normal = Normal::new(0.0, std).map_err(|error| {
                    Error::InvalidModel(format!("invalid initialisation std {std}: {error}"))
                })?;
                (0..count).map(|_| normal.sample(&mut self.rng) as f32).collect()
            }
            Init::Zeros => vec![0.0; count],
            Init::Ones => vec![1.0; count],
        };
        Ok(Tensor::from_data(TensorData::new(values, shape), self.device))
    }
}

/// Hands out the tensors of a weights file, checking names and shapes, and remembers which
/// were used so that leftovers are reported instead of silently ignored.
pub struct NamedWeights<'a, B: Backend> {
    file: &'a WeightFile,
    arch: String,
    used: BTreeSet<String>,
    device: &'a B::Device,
}

impl<'a, B: Backend> NamedWeights<'a, B> {
    /// Hands out `file`'s tensors for a model of architecture `arch` on `device`.
    pub fn new(file: &'a WeightFile, arch: impl Into<String>, device: &'a B::Device) -> Self {
        Self { file, arch: arch.into(), used: BTreeSet::new(), device }
    }

    /// Fails if the file holds tensors the model did not ask for.
    pub fn finish(self) -> Result<()> {
        let unused: Vec<String> =
            self.file.tensors.keys().filter(|name| !self.used.contains(*name)).cloned().collect();
        if unused.is_empty() {
            Ok(())
        } else {
            Err(Error::UnexpectedTensors { path: self.file.path.clone(), names: unused, arch: self.arch })
        }
    }
}

impl<B: Backend> ParamSource<B> for NamedWeights<'_, B> {
    fn take_fixed<const D: usize>(
        &mut self,
        name: &str,
        shape: [usize; D],
        values: &[f32],
    ) -> Result<Tensor<B, D>> {
        let tensor = self.take(name, shape, Init::Zeros)?;
        let found = &self.file.tensors[name].data;
        if let Some(index) = found.iter().zip(values).position(|(found, fixed)| found != fixed) {
            return Err(Error::format(
                &self.file.path,
                format!(
                    "tensor '{name}' must hold the architecture's fixed values, but element {index} is {} \
                     where {} belongs: this is not a checkpoint of the {}",
                    found[index], values[index], self.arch
                ),
            ));
        }
        Ok(tensor)
    }

    fn take<const D: usize>(&mut self, name: &str, shape: [usize; D], _init: Init) -> Result<Tensor<B, D>> {
        let tensor = self.file.tensors.get(name).ok_or_else(|| Error::MissingTensor {
            path: self.file.path.clone(),
            name: name.to_string(),
            expected: shape.to_vec(),
            arch: self.arch.clone(),
        })?;
        if tensor.shape != shape {
            return Err(Error::ShapeMismatch {
                path: self.file.path.clone(),
                name: name.to_string(),
                expected: shape.to_vec(),
                found: tensor.shape.clone(),
            });
        }
        self.used.insert(name.to_string());
        Ok(Tensor::from_data(TensorData::new(tensor.data.clone(), shape), self.device))
    }
}

/// Records the names and shapes a network asks for, in the order it asks (which is also the
/// order its fields are declared in, and so the order a module visitor meets them).
pub(crate) struct NameRecorder<'a, B: Backend> {
    pub names: Vec<(String, Vec<usize>)>,
    device: &'a B::Device,
}

impl<'a, B: Backend> NameRecorder<'a, B> {
    pub fn new(device: &'a B::Device) -> Self {
        Self { names: Vec::new(), device }
    }
}

impl<B: Backend> ParamSource<B> for NameRecorder<'_, B> {
    fn take_fixed<const D: usize>(
        &mut self,
        name: &str,
        shape: [usize; D],
        _values: &[f32],
    ) -> Result<Tensor<B, D>> {
        self.take(name, shape, Init::Zeros)
    }

    fn take<const D: usize>(&mut self, name: &str, shape: [usize; D], _init: Init) -> Result<Tensor<B, D>> {
        self.names.push((name.to_string(), shape.to_vec()));
        Ok(Tensor::zeros(shape, self.device))
    }
}

/// Every float parameter of a module, in declaration order: its id and its values on the host.
pub fn collect_parameters<B: Backend, M: Module<B>>(module: &M) -> Result<Vec<(ParamId, HostTensor)>> {
    struct Collect(Vec<Result<(ParamId, HostTensor)>>);
    impl<B: Backend> ModuleVisitor<B> for Collect {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            self.0.push(crate::readback::host_tensor(param.val()).map(|tensor| (param.id, tensor)));
        }
    }
    let mut collect = Collect(Vec::new());
    module.visit(&mut collect);
    collect.0.into_iter().collect()
}
