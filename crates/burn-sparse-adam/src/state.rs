//! [`SparseAdamState`]: what SparseAdam remembers of one parameter, as a Burn `Record`.

use burn::record::Record;
use burn::tensor::{backend::Backend, Tensor};

/// The optimizer state of one parameter: PyTorch's `state[p]` of `SparseAdam`.
///
/// Created, with zero moments, the first time the parameter has a gradient. Untouched rows
/// of the moments keep their values bit for bit: a row's moments only change in the steps
/// that touch it.
#[derive(Record, Clone, Debug)]
pub struct SparseAdamState<B: Backend, const D: usize> {
    /// Steps this parameter has taken, PyTorch's `state["step"]`: one per optimizer step in
    /// which the parameter had a gradient, even an empty one. It is per parameter, not per
    /// row: a row looked up for the first time at step 100 is bias-corrected with `t = 100`.
    pub step: usize,
    /// First moment `m`, the shape of the parameter (PyTorch's `exp_avg`).
    pub exp_avg: Tensor<B, D>,
    /// Second moment `v`, the shape of the parameter (PyTorch's `exp_avg_sq`).
    pub exp_avg_sq: Tensor<B, D>,
}

impl<B: Backend, const D: usize> SparseAdamState<B, D> {
    /// The state before a parameter's first step: step 0, zero moments shaped like `param`.
    pub fn zeros_like(param: &Tensor<B, D>) -> Self {
        Self {
            step: 0,
            exp_avg: param.zeros_like(),
            exp_avg_sq: param.zeros_like(),
        }
    }

    /// Moves the moments to `device`.
    pub fn to_device(self, device: &B::Device) -> Self {
        Self {
            step: self.step,
            exp_avg: self.exp_avg.to_device(device),
            exp_avg_sq: self.exp_avg_sq.to_device(device),
        }
    }

    /// The shape of the moments, which must be the parameter's.
    pub fn shape(&self) -> Vec<usize> {
        self.exp_avg.dims().to_vec()
    }
}
