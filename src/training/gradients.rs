//! Gradients of the law: clipping by their global norm, reading them under the lab's names, and
//! the parameter numbering that lets peers of a data-parallel run reduce them in one order.

use burn::module::{AutodiffModule, Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::Tensor;

use crate::error::Result;
use crate::io::HostTensor;
use crate::kernels::EngineBackend;
use crate::models::Model;

/// Scales all gradients together so that their global L2 norm is at most `max_norm`
/// (PyTorch's `clip_grad_norm_`); returns the norm before clipping (one read-back).
pub fn clip_global_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    gradients: &mut GradientsParams,
    max_norm: f64,
) -> Result<f64> {
    struct SquaredNorm<'a, B: AutodiffBackend> {
        gradients: &'a GradientsParams,
        total: Option<Tensor<B::InnerBackend, 1>>,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for SquaredNorm<'_, B> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            if let Some(gradient) = self.gradients.get::<B::InnerBackend, D>(param.id) {
                let squared = gradient.square().sum();
                self.total = Some(match self.total.take() {
                    Some(total) => total + squared,
                    None => squared,
                });
            }
        }
    }
    struct Scale<'a> {
        gradients: &'a mut GradientsParams,
        factor: f64,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Scale<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            if let Some(gradient) = self.gradients.remove::<B::InnerBackend, D>(param.id) {
                self.gradients.register(param.id, gradient * self.factor);
            }
        }
    }

    let mut squared = SquaredNorm::<B> { gradients, total: None };
    module.visit(&mut squared);
    let norm = match squared.total {
        Some(total) => crate::readback::scalar(total)?.sqrt(),
        None => 0.0,
    };
    let factor = max_norm / (norm + 1e-6);
    if factor < 1.0 {
        module.visit(&mut Scale { gradients, factor });
    }
    Ok(norm)
}

/// The gradients of a model's parameters under the lab's names (to compare with PyTorch's).
pub fn named_gradients<B: AutodiffBackend + EngineBackend>(
    model: &Model<B>,
    gradients: &GradientsParams,
) -> Result<Vec<(String, HostTensor)>> {
    struct Collect<'a> {
        gradients: &'a GradientsParams,
        found: std::collections::HashMap<ParamId, Result<HostTensor>>,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Collect<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            if let Some(gradient) = self.gradients.get::<B::InnerBackend, D>(param.id) {
                self.found.insert(param.id, crate::readback::host_tensor(gradient));
            }
        }
    }
    let mut collect = Collect { gradients, found: Default::default() };
    model.law.visit(&mut collect);
    model
        .parameter_names()?
        .into_iter()
        .filter_map(|(name, id)| collect.found.remove(&id).map(|gradient| gradient.map(|g| (name, g))))
        .collect()
}

/// Gives the module's parameters the ids 0, 1, 2, ... in the order the module visits them.
///
/// burn-collective reduces gradients in the order of their ids, so peers must agree on them:
/// a seeded model draws fresh random ids in every process, a loaded one keeps its record's.
pub fn number_parameters<B: Backend, M: Module<B>>(module: M) -> M {
    struct Numbering {
        next: u64,
    }
    impl<B: Backend> ModuleMapper<B> for Numbering {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
            let (_, tensor, mapper) = param.consume();
            let id = ParamId::from(self.next);
            self.next += 1;
            Param::from_mapped_value(id, tensor, mapper)
        }
    }
    module.map(&mut Numbering { next: 0 })
}

/// The module's parameter ids in visit order.
pub fn parameter_ids<B: Backend, M: Module<B>>(module: &M) -> Vec<u64> {
    struct Ids(Vec<u64>);
    impl<B: Backend> ModuleVisitor<B> for Ids {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            self.0.push(param.id.val());
        }
    }
    let mut ids = Ids(Vec::new());
    module.visit(&mut ids);
    ids.0
}
