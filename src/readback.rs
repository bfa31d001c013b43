//! Reading tensors back to the host: the one place it is written, and counted. A failed
//! read-back (a device lost mid-run, a dtype the backend cannot convert) is an error, never
//! empty data.
//!
//! On a GPU each read-back waits for the queued work and copies over the bus, so a run that
//! reads the state back every step loses most of the device's speed; on the CPU backend the
//! same copy is nearly free and no timing would show it. [`count`] makes it visible: `bench
//! --json` reports `readbacks_per_step` and `run -v` the total.

use std::sync::atomic::{AtomicU64, Ordering};

use burn::tensor::backend::Backend;
use burn::tensor::{BasicOps, Element, Tensor, TensorKind};

use crate::error::{Error, Result};
use crate::io::HostTensor;

// For the whole process: work runs on pool threads too (the CPU kernels' pool), and a
// read-back there must count as much as one on the caller's thread.
static READBACKS: AtomicU64 = AtomicU64::new(0);

/// How many tensors this process has read back to the host so far. A job that reports its own
/// count (a run, a bench) takes the difference over its work, which is exact when it is the
/// only job of the process, as in the command line.
pub fn count() -> u64 {
    READBACKS.load(Ordering::Relaxed)
}

/// The values of `tensor` (any rank and kind) converted to `E`, row-major.
pub fn values<E: Element, B: Backend, const D: usize, K: TensorKind<B> + BasicOps<B>>(
    tensor: Tensor<B, D, K>,
) -> Result<Vec<E>> {
    READBACKS.fetch_add(1, Ordering::Relaxed);
    tensor.into_data().convert::<E>().to_vec::<E>().map_err(|error| Error::ReadBack(format!("{error:?}")))
}

/// The one value of a single-element float tensor, as f64.
pub fn scalar<B: Backend, const D: usize>(tensor: Tensor<B, D>) -> Result<f64> {
    let values = values::<f64, B, D, burn::tensor::Float>(tensor)?;
    match values.as_slice() {
        [value] => Ok(*value),
        _ => Err(Error::ReadBack(format!("expected one value, got {}", values.len()))),
    }
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

    #[test]
    fn every_read_back_is_counted_on_any_thread() {
        // Other tests of this process read back too: the count only grows, by at least ours.
        let device = Default::default();
        let x = Tensor::<NdArray, 1>::from_floats([2.5], &device);
        let before = super::count();
        assert_eq!(super::scalar(x.clone()).unwrap(), 2.5);
        let _ = super::floats(x.clone()).unwrap();
        std::thread::spawn(move || super::floats(x).unwrap()).join().unwrap();
        assert!(super::count() - before >= 3);
        let two = Tensor::<NdArray, 1>::from_floats([1.0, 2.0], &device);
        assert!(super::scalar(two).is_err());
    }
}
