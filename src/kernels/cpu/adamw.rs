//! AdamW's update for the CPU backend, fused into one pass over each parameter.
//!
//! burn's AdamW composes about fifteen element-wise tensor operations per parameter, and on the
//! CPU backend each is a pass over memory into a newly allocated array. Here one pass reads
//! the parameter, its gradient and both moments and writes the three results, the moments in
//! place when nothing else holds them. Each element goes through the same f32 operations in the
//! same order as burn's (no fused multiply-adds), so the result is burn's to the last bit.

use burn::backend::ndarray::NdArrayTensor;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor};
use ndarray::{ArcArray, IxDyn};
use rayon::prelude::*;

use super::contiguous;
use super::host::{from_host_tensor, into_host, is_host_backend};

/// Elements per task: a few pages of each of the four arrays, enough to pay for a task.
const CHUNK: usize = 1 << 14;

/// The scalars of one AdamW step, computed as burn's AdamW computes them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWStep {
    beta_1: f32,
    beta_2: f32,
    epsilon: f32,
    /// `1 - beta^t` for this step's `t`, the moments' bias corrections.
    correction_1: f32,
    correction_2: f32,
    /// What the parameter is multiplied by before the update, `1 - lr * weight_decay`; `None`
    /// without weight decay, where burn leaves the parameter untouched.
    keep: Option<f32>,
    lr: f32,
}

impl AdamWStep {
    /// The `time`-th step (1 for the first) at learning rate `lr`.
    pub fn new(beta_1: f32, beta_2: f32, epsilon: f32, weight_decay: f32, lr: f64, time: usize) -> Self {
        let time = i32::try_from(time).unwrap_or(i32::MAX);
        let decay_rate = lr * f64::from(weight_decay);
        Self {
            beta_1,
            beta_2,
            epsilon,
            correction_1: 1.0 - beta_1.powi(time),
            correction_2: 1.0 - beta_2.powi(time),
            keep: (decay_rate != 0.0).then_some((1.0 - decay_rate) as f32),
            lr: lr as f32,
        }
    }

    /// Updates one element: its moments in place, and returns the new parameter.
    #[inline(always)]
    fn element(&self, param: f32, grad: f32, moment_1: &mut f32, moment_2: &mut f32) -> f32 {
        *moment_1 = *moment_1 * self.beta_1 + grad * (1.0 - self.beta_1);
        *moment_2 = *moment_2 * self.beta_2 + grad * grad * (1.0 - self.beta_2);
        let corrected_1 = *moment_1 / self.correction_1;
        let corrected_2 = *moment_2 / self.correction_2;
        let delta = corrected_1 / (corrected_2.sqrt() + self.epsilon);
        let decayed = self.keep.map_or(param, |keep| param * keep);
        decayed - delta * self.lr
    }
}

/// One AdamW step over flat arrays of equal length: `param` and both moments are updated in
/// place (moments that start at zero give burn's first step).
pub fn adamw_update(
    param: &mut [f32],
    grad: &[f32],
    moment_1: &mut [f32],
    moment_2: &mut [f32],
    step: &AdamWStep,
) {
    debug_assert!(
        grad.len() == param.len() && moment_1.len() == param.len() && moment_2.len() == param.len()
    );
    if param.len() <= CHUNK {
        return update_serially(param, grad, moment_1, moment_2, step);
    }
    param
        .par_chunks_mut(CHUNK)
        .zip(grad.par_chunks(CHUNK))
        .zip(moment_1.par_chunks_mut(CHUNK))
        .zip(moment_2.par_chunks_mut(CHUNK))
        .for_each(|(((param, grad), moment_1), moment_2)| {
            update_serially(param, grad, moment_1, moment_2, step)
        });
}

fn update_serially(
    param: &mut [f32],
    grad: &[f32],
    moment_1: &mut [f32],
    moment_2: &mut [f32],
    step: &AdamWStep,
) {
    for (((param, &grad), moment_1), moment_2) in param.iter_mut().zip(grad).zip(moment_1).zip(moment_2) {
        *param = step.element(*param, grad, moment_1, moment_2);
    }
}

/// Whether `tensors` are the CPU backend's f32 tensors, the ones [`adamw_on_host`] takes.
pub fn are_host_f32<B: Backend, const D: usize>(tensors: &[&Tensor<B, D>]) -> bool {
    is_host_backend::<B>() && tensors.iter().all(|tensor| tensor.dtype() == DType::F32)
}

/// One fused AdamW step of `param` (any shape) with its gradient and its moments (`None` before
/// the first step): the new parameter, first moment and second moment.
///
/// The caller checks [`are_host_f32`] first; on any other tensors this is burn's contract
/// broken, and it panics.
pub fn adamw_on_host<B: Backend, const D: usize>(
    param: Tensor<B, D>,
    grad: Tensor<B, D>,
    moments: Option<(Tensor<B, D>, Tensor<B, D>)>,
    step: &AdamWStep,
) -> (Tensor<B, D>, Tensor<B, D>, Tensor<B, D>) {
    let mut param = writable(host_tensor(param));
    let grad = host_tensor(grad);
    let (mut moment_1, mut moment_2) = match moments {
        Some((moment_1, moment_2)) => (writable(host_tensor(moment_1)), writable(host_tensor(moment_2))),
        None => (ArcArray::zeros(param.raw_dim()), ArcArray::zeros(param.raw_dim())),
    };
    let (_, grad) = contiguous(&grad).expect("are_host_f32 checked the dtype");
    assert!(
        grad.len() == param.len() && moment_1.shape() == param.shape() && moment_2.shape() == param.shape(),
        "AdamW's parameter, gradient and moments differ in shape"
    );
    adamw_update(
        param.as_slice_mut().expect("writable gives the standard layout"),
        &grad,
        moment_1.as_slice_mut().expect("writable gives the standard layout"),
        moment_2.as_slice_mut().expect("writable gives the standard layout"),
        step,
    );
    (backend_tensor(param), backend_tensor(moment_1), backend_tensor(moment_2))
}

fn host_tensor<B: Backend, const D: usize>(tensor: Tensor<B, D>) -> NdArrayTensor {
    into_host(tensor).expect("are_host_f32 checked the backend and the dtype")
}

/// The array in the standard layout, held by nothing else (copied only when it is shared or
/// strided), so that it can be written in place.
fn writable(tensor: NdArrayTensor) -> ArcArray<f32, IxDyn> {
    let NdArrayTensor::F32(storage) = tensor else {
        panic!("are_host_f32 checked the dtype");
    };
    let array = storage.into_owned();
    if array.is_standard_layout() {
        array
    } else {
        array.as_standard_layout().into_owned().into_shared()
    }
}

fn backend_tensor<B: Backend, const D: usize>(array: ArcArray<f32, IxDyn>) -> Tensor<B, D> {
    from_host_tensor(NdArrayTensor::from(array)).expect("are_host_f32 checked the backend")
}
