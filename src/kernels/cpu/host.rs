//! Host access to the CPU backend's tensors from backend-generic code: code written once for
//! every backend (the sparse engine's tile copies) can take a direct path when its tensors turn
//! out to be the CPU backend's, found by type rather than by a trait bound.

use std::any::{Any, TypeId};
use std::borrow::Cow;

use burn::backend::ndarray::NdArrayTensor;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData, TensorPrimitive};

use super::{nchw, tensor};

/// Calls `read` with the data of each of `tensors` (contiguous f32, row-major) when `B` is the
/// CPU backend, without a copy of those already contiguous; `None` on other backends and dtypes.
pub fn with_host_data<B: Backend, R>(
    tensors: &[&Tensor<B, 4>],
    read: impl FnOnce(&[&[f32]]) -> R,
) -> Option<R> {
    let cpu: Vec<NdArrayTensor> = tensors
        .iter()
        .map(|&tensor| match tensor.clone().into_primitive() {
            TensorPrimitive::Float(primitive) => {
                (&primitive as &dyn Any).downcast_ref::<NdArrayTensor>().cloned()
            }
            TensorPrimitive::QFloat(_) => None,
        })
        .collect::<Option<_>>()?;
    let data: Vec<Cow<'_, [f32]>> =
        cpu.iter().map(|tensor| nchw(tensor).map(|(_, data)| data)).collect::<Option<_>>()?;
    let slices: Vec<&[f32]> = data.iter().map(|data| data.as_ref()).collect();
    Some(read(&slices))
}

/// A tensor of backend `B` on `device` holding `data` (row-major) with `shape`: on the CPU
/// backend the vector itself, without the copy an upload through [`TensorData`] makes.
pub fn from_host<B: Backend, const D: usize>(
    shape: [usize; D],
    data: Vec<f32>,
    device: &B::Device,
) -> Tensor<B, D> {
    if TypeId::of::<B::FloatTensorPrimitive>() != TypeId::of::<NdArrayTensor>() {
        return Tensor::from_data(TensorData::new(data, shape), device);
    }
    let boxed: Box<dyn Any> = Box::new(tensor(&shape, data));
    let primitive = boxed.downcast::<B::FloatTensorPrimitive>().expect("the type ids are equal");
    Tensor::from_primitive(TensorPrimitive::Float(*primitive))
}
