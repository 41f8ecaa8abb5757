//! [`SparseAdamState`]: what SparseAdam remembers of one parameter, and its burnpack form.

use burn::optim::{RecordState, StateSink, StateSource};
use burn::tensor::{DType, Device, Tensor};
use burn_pack::Scalar;
use sparse_adam_core::MomentDtype;

use crate::kernels;

/// The optimizer state of one parameter: PyTorch's `state[p]` of `SparseAdam`.
///
/// Created, with zero moments, the first time the parameter has a gradient. Untouched rows
/// of the moments keep their values bit for bit: a row's moments only change in the steps
/// that touch it.
///
/// Its burnpack form (Burn 0.22's [`RecordState`]) is the fields under the parameter's
/// prefix: the scalar `step` and the tensors `exp_avg` and `exp_avg_sq` in the type they
/// are stored in (a record of compact moments keeps them compact), so a record of
/// Burn's `ModuleOptimizer` built from [`SparseAdam`](crate::SparseAdam) and one of
/// [`SparseAdamOptimizer`](crate::SparseAdamOptimizer) hold the same entries.
#[derive(Clone, Debug)]
pub struct SparseAdamState<const D: usize> {
    /// Steps this parameter has taken, PyTorch's `state["step"]`: one per optimizer step in
    /// which the parameter had a gradient, even an empty one. It is per parameter, not per
    /// row: a row looked up for the first time at step 100 is bias-corrected with `t = 100`.
    pub step: usize,
    /// First moment `m`, the shape of the parameter (PyTorch's `exp_avg`), in the
    /// parameter's float type or the config's
    /// [`moment_dtype`](crate::SparseAdamConfig::moment_dtype).
    pub exp_avg: Tensor<D>,
    /// Second moment `v`, the shape of the parameter (PyTorch's `exp_avg_sq`), in the
    /// type of `exp_avg`.
    pub exp_avg_sq: Tensor<D>,
}

impl<const D: usize> SparseAdamState<D> {
    /// The state before a parameter's first step: step 0, zero moments shaped like `param`.
    pub fn zeros_like(param: &Tensor<D>) -> Self {
        Self {
            step: 0,
            exp_avg: param.zeros_like(),
            exp_avg_sq: param.zeros_like(),
        }
    }

    /// The state before a parameter's first step with its moments stored in `dtype`: step 0,
    /// zero moments shaped like `param`, made in `dtype` directly (no table-sized `f32`
    /// temporary).
    pub fn zeros_in(param: &Tensor<D>, dtype: DType) -> Self {
        let zeros = || Tensor::zeros(param.shape(), (&param.device(), dtype));
        Self {
            step: 0,
            exp_avg: zeros(),
            exp_avg_sq: zeros(),
        }
    }

    /// The float type the moments are stored in.
    pub fn moment_dtype(&self) -> DType {
        self.exp_avg.dtype()
    }

    /// This state with its moments converted to `dtype` (rounded to nearest when
    /// narrower): the explicit conversion that lets a state saved with one
    /// [`moment_dtype`](crate::SparseAdamConfig::moment_dtype) continue under another. The
    /// step count is kept.
    pub fn with_moment_dtype(self, dtype: MomentDtype) -> Self {
        let dtype = burn_dtype(dtype);
        let cast = |t: Tensor<D>| if t.dtype() == dtype { t } else { t.cast(dtype) };
        Self {
            step: self.step,
            exp_avg: cast(self.exp_avg),
            exp_avg_sq: cast(self.exp_avg_sq),
        }
    }

    /// Moves the moments to `device`.
    pub fn to_device(self, device: &Device) -> Self {
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

/// Burn's name of a moment type (`MomentDtype::Bf16` is `DType::BF16`, …): what
/// [`SparseAdamState::moment_dtype`] reports for moments stored in it.
pub fn burn_dtype(dtype: MomentDtype) -> DType {
    match dtype {
        MomentDtype::F32 => DType::F32,
        MomentDtype::Bf16 => DType::BF16,
        MomentDtype::F16 => DType::F16,
    }
}

/// The names of the fields in a record.
pub(crate) const STEP: &str = "step";
pub(crate) const EXP_AVG: &str = "exp_avg";
pub(crate) const EXP_AVG_SQ: &str = "exp_avg_sq";

impl<const D: usize> RecordState for SparseAdamState<D> {
    fn state_flatten(&self, prefix: &str, out: &mut StateSink) {
        out.push_scalar(prefix, STEP, Scalar::from(self.step));
        out.push_tensor(prefix, EXP_AVG, self.exp_avg.to_data());
        out.push_tensor(prefix, EXP_AVG_SQ, self.exp_avg_sq.to_data());
    }

    fn state_unflatten(prefix: &str, src: &mut StateSource, device: &Device) -> Option<Self> {
        let step = usize::try_from(src.take_scalar(prefix, STEP)?).ok()?;
        let exp_avg = src.take_tensor(prefix, EXP_AVG)?;
        let exp_avg_sq = src.take_tensor(prefix, EXP_AVG_SQ)?;
        if exp_avg.rank() != D
            || exp_avg.shape() != exp_avg_sq.shape()
            || exp_avg.dtype() != exp_avg_sq.dtype()
        {
            return None;
        }
        // In the type they were saved in: `Tensor::from_data` on a device alone would make
        // them the device's default float. Then where a new state's moments live (huge pages
        // for large tables on flex), so that a resumed run steps as fast as a fresh one.
        let load = |data: burn::tensor::TensorData| {
            let dtype = data.dtype();
            kernels::loaded_moment(Tensor::from_data(data, (device, dtype)))
        };
        Some(Self {
            step,
            exp_avg: load(exp_avg),
            exp_avg_sq: load(exp_avg_sq),
        })
    }
}
