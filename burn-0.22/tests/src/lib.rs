//! Shared helpers of the 0.2 line's tests.

use burn::tensor::Device;

/// The device the tests train on: Burn 0.22's CPU backend, flex, with autodiff.
pub fn device() -> Device {
    Device::flex().autodiff()
}
