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
    let cpu: Vec<NdArrayTensor> =
        tensors.iter().map(|&tensor| into_host(tensor.clone())).collect::<Option<_>>()?;
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
    if !is_host_backend::<B>() {
        return Tensor::from_data(TensorData::new(data, shape), device);
    }
    from_host_tensor(tensor(&shape, data)).expect("the backend is the CPU backend")
}

/// Whether `B`'s float tensors are the CPU backend's, the ones [`into_host`] opens.
pub fn is_host_backend<B: Backend>() -> bool {
    TypeId::of::<B::FloatTensorPrimitive>() == TypeId::of::<NdArrayTensor>()
}

/// The CPU backend's own tensor behind `tensor` (any shape; no copy), or `None` on other backends
/// and for quantized tensors.
pub fn into_host<B: Backend, const D: usize>(tensor: Tensor<B, D>) -> Option<NdArrayTensor> {
    let TensorPrimitive::Float(primitive) = tensor.into_primitive() else {
        return None;
    };
    let boxed: Box<dyn Any> = Box::new(primitive);
    boxed.downcast::<NdArrayTensor>().ok().map(|tensor| *tensor)
}

/// `tensor` as a tensor of backend `B` (no copy), the inverse of [`into_host`]; `None` unless `B`
/// is the CPU backend.
pub fn from_host_tensor<B: Backend, const D: usize>(tensor: NdArrayTensor) -> Option<Tensor<B, D>> {
    let boxed: Box<dyn Any> = Box::new(tensor);
    let primitive = boxed.downcast::<B::FloatTensorPrimitive>().ok()?;
    Some(Tensor::from_primitive(TensorPrimitive::Float(*primitive)))
}
