//! Shared helpers of the 0.2 line's tests.

use burn::tensor::Device;

/// The device the tests train on: Burn 0.22's CPU backend, flex, with autodiff.
pub fn device() -> Device {
    Device::flex().autodiff()
}

/// A tensor's values, row-major.
pub fn values<const D: usize>(tensor: burn::tensor::Tensor<D>) -> Vec<f32> {
    tensor
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("float data")
}
