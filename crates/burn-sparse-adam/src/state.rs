//! [`SparseAdamState`]: what SparseAdam remembers of one parameter, as a Burn `Record`.

use burn::record::{PrecisionSettings, Record};
use burn::tensor::{backend::Backend, Tensor};
use serde::{Deserialize, Serialize};

use crate::kernels;

/// The optimizer state of one parameter: PyTorch's `state[p]` of `SparseAdam`.
///
/// Created, with zero moments, the first time the parameter has a gradient. Untouched rows
/// of the moments keep their values bit for bit: a row's moments only change in the steps
/// that touch it.
///
/// As a Burn `Record` it saves `step`, `exp_avg` and `exp_avg_sq` (the format
/// `#[derive(Record)]` gives this struct). Moments read back from a saved record go where a
/// new state's live: on the fused burn-ndarray path (feature `ndarray`), tables of 64 MiB
/// and more are copied once onto huge pages as they load.
#[derive(Clone, Debug)]
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

/// The saved form of a [`SparseAdamState`]: the struct `#[derive(Record)]` generates for it
/// (the same name, fields and serde format), written out so that loading can place the
/// moments.
#[derive(Serialize, Deserialize)]
#[serde(
    bound = "<usize as Record<B>>::Item<S>: Serialize + serde::de::DeserializeOwned, \
                 <Tensor<B, D> as Record<B>>::Item<S>: Serialize + serde::de::DeserializeOwned"
)]
pub struct SparseAdamStateItem<B: Backend, const D: usize, S: PrecisionSettings> {
    /// The step count.
    pub step: <usize as Record<B>>::Item<S>,
    /// The first moment.
    pub exp_avg: <Tensor<B, D> as Record<B>>::Item<S>,
    /// The second moment.
    pub exp_avg_sq: <Tensor<B, D> as Record<B>>::Item<S>,
}

impl<B: Backend, const D: usize, S: PrecisionSettings> Clone for SparseAdamStateItem<B, D, S> {
    fn clone(&self) -> Self {
        Self {
            step: self.step,
            exp_avg: self.exp_avg.clone(),
            exp_avg_sq: self.exp_avg_sq.clone(),
        }
    }
}

impl<B: Backend, const D: usize> Record<B> for SparseAdamState<B, D> {
    type Item<S: PrecisionSettings> = SparseAdamStateItem<B, D, S>;

    fn into_item<S: PrecisionSettings>(self) -> Self::Item<S> {
        SparseAdamStateItem {
            step: Record::<B>::into_item::<S>(self.step),
            exp_avg: Record::<B>::into_item::<S>(self.exp_avg),
            exp_avg_sq: Record::<B>::into_item::<S>(self.exp_avg_sq),
        }
    }

    /// Rebuilds the state on `device`, each moment through `kernels::loaded_table` (huge
    /// pages for large tables on the fused burn-ndarray path; the values are kept).
    fn from_item<S: PrecisionSettings>(item: Self::Item<S>, device: &B::Device) -> Self {
        let moment = |item| kernels::loaded_table(Record::<B>::from_item::<S>(item, device));
        Self {
            step: Record::<B>::from_item::<S>(item.step, device),
            exp_avg: moment(item.exp_avg),
            exp_avg_sq: moment(item.exp_avg_sq),
        }
    }
}

#[cfg(test)]
mod tests {
    use burn::backend::NdArray;
    use burn::record::{BinBytesRecorder, FullPrecisionSettings, Recorder};
    use burn::tensor::TensorData;
    use sparse_adam_core::pages::HUGE_TABLE_BYTES;

    use super::*;

    fn bits(t: Tensor<NdArray, 2>) -> Vec<u32> {
        let values = t.into_data().to_vec::<f32>().unwrap();
        values.into_iter().map(f32::to_bits).collect()
    }

    /// A state saved and read back keeps its step and every bit of its moments, for a table
    /// under 64 MiB and one that the fused burn-ndarray path moves onto huge pages as it
    /// loads.
    #[test]
    fn a_saved_state_reads_back_bit_for_bit() {
        let d = 64;
        for n in [1000, HUGE_TABLE_BYTES / 4 / d] {
            let moment = |f: fn(f32) -> f32| {
                let values: Vec<f32> = (0..n * d).map(|i| f(i as f32 * 0.37)).collect();
                Tensor::<NdArray, 2>::from_data(
                    TensorData::new(values, [n, d]),
                    &Default::default(),
                )
            };
            let state = SparseAdamState {
                step: 17,
                exp_avg: moment(f32::sin),
                exp_avg_sq: moment(|x| x.cos() * x.cos() * 1e-30),
            };
            let recorder = BinBytesRecorder::<FullPrecisionSettings>::default();
            let bytes = recorder.record(state.clone(), ()).unwrap();
            let back: SparseAdamState<NdArray, 2> =
                recorder.load(bytes, &Default::default()).unwrap();
            assert_eq!(back.step, 17);
            assert!(
                bits(back.exp_avg) == bits(state.exp_avg),
                "exp_avg changed ({n} rows)"
            );
            assert!(
                bits(back.exp_avg_sq) == bits(state.exp_avg_sq),
                "exp_avg_sq changed ({n} rows)"
            );
        }
    }
}
