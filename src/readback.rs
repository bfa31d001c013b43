//! Reading tensors back to the host: the one place it is written. A failed read-back (a
//! device lost mid-run, a dtype the backend cannot convert) is an error, never empty data.

use burn::tensor::backend::Backend;
use burn::tensor::{BasicOps, Element, Tensor, TensorKind};

use crate::error::{Error, Result};
use crate::io::HostTensor;

/// The values of `tensor` (any rank and kind) converted to `E`, row-major.
pub fn values<E: Element, B: Backend, const D: usize, K: TensorKind<B> + BasicOps<B>>(
    tensor: Tensor<B, D, K>,
) -> Result<Vec<E>> {
    tensor.into_data().convert::<E>().to_vec::<E>().map_err(|error| Error::ReadBack(format!("{error:?}")))
}

/// The values of a float tensor as f32.
pub fn floats<B: Backend, const D: usize>(tensor: Tensor<B, D>) -> Result<Vec<f32>> {
    values::<f32, B, D, burn::tensor::Float>(tensor)
}

/// A float tensor with its shape, on the host.
pub fn host_tensor<B: Backend, const D: usize>(tensor: Tensor<B, D>) -> Result<HostTensor> {
    let shape = tensor.dims().to_vec();
    Ok(HostTensor { shape, data: floats(tensor)? })
}

#[cfg(test)]
mod tests {
    use burn::backend::NdArray;
    use burn::tensor::{Int, Tensor};

    #[test]
    fn floats_and_integers_come_back_row_major() {
        let device = Default::default();
        let x = Tensor::<NdArray, 2>::from_floats([[1.0, 2.0], [3.0, 4.0]], &device);
        assert_eq!(super::floats(x.clone()).unwrap(), [1.0, 2.0, 3.0, 4.0]);
        let host = super::host_tensor(x.clone()).unwrap();
        assert_eq!(host.shape, [2, 2]);
        let counts = Tensor::<NdArray, 1, Int>::from_ints([3, 1], &device);
        assert_eq!(super::values::<i64, _, 1, Int>(counts).unwrap(), [3, 1]);
        assert_eq!(super::values::<f64, _, 2, burn::tensor::Float>(x).unwrap(), [1.0, 2.0, 3.0, 4.0]);
    }
}
