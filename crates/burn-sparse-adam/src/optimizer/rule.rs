//! [`SparseAdam`]: the per-parameter rule, on its two paths.
//!
//! - The **dense path** ([`SparseAdam::step_dense`], and Burn's `SimpleOptimizer::step`)
//!   takes a gradient shaped like the parameter, as stock Burn modules produce. A row (a
//!   slice along dim 0; an element of a 1-d parameter) is touched when any entry of its
//!   gradient is non-zero: the masking model of PyTorch's documentation, where a dense
//!   gradient reaches SparseAdam as `grad.to_sparse(sparse_dim=1)`. It reads nothing back:
//!   on burn-ndarray it is one pass over the parameter, its gradient and both moments (the
//!   core's `update_dense`), elsewhere a masked update in Burn operations, with the same
//!   bits.
//! - The **row path** ([`SparseAdam::step_rows`]) takes a [`RowGrad`]: it gathers the
//!   touched rows, updates them, and adds the deltas back; its cost follows the number of
//!   touched rows, not the table. A looked-up row is touched even when its gradient sums to
//!   exactly zero, as with PyTorch's sparse layout.
//!
//! Both run the formula of [`sparse_adam_delta`](crate::formula::sparse_adam_delta), and
//! both count a step for the parameter, even when no row is touched (an all-zero dense
//! gradient, an empty row gradient), as PyTorch does.

use burn::optim::{LearningRate, SimpleOptimizer};
use burn::tensor::{backend::Backend, Tensor};

use crate::config::SparseAdamConfig;
use crate::embedding::row_grads::RowGrad;
use crate::error::{Error, Result};
use crate::formula::StepScalars;
use crate::kernels::{self, KernelPath};
use crate::state::SparseAdamState;

/// The SparseAdam update rule (PyTorch's `torch.optim.SparseAdam`) for one parameter at a
/// time: a Burn [`SimpleOptimizer`] for dense gradients, plus the row path.
///
/// Most users want the whole-model optimizer that
/// [`SparseAdamConfig::init`] builds; this type is the rule it applies, and can also be
/// wrapped in Burn's own `OptimizerAdaptor` (dense gradients only).
///
/// # Example
///
/// ```
/// use burn::backend::NdArray;
/// use burn::optim::SimpleOptimizer;
/// use burn::tensor::Tensor;
/// use burn_sparse_adam::SparseAdamConfig;
///
/// let device = Default::default();
/// let rule = SparseAdamConfig::new().try_build().unwrap();
/// let param = Tensor::<NdArray, 2>::from_data([[1.0, 1.0], [2.0, 2.0]], &device);
/// // Row 1's gradient is all zero: that row is not touched.
/// let grad = Tensor::<NdArray, 2>::from_data([[0.5, -0.5], [0.0, 0.0]], &device);
/// let (param, state) = rule.step(0.1, param, grad, None);
/// let values = param.into_data().to_vec::<f32>().unwrap();
/// assert!((values[0] - 0.9).abs() < 1e-6 && (values[1] - 1.1).abs() < 1e-6);
/// assert_eq!(&values[2..], &[2.0, 2.0]);
/// assert_eq!(state.unwrap().step, 1);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct SparseAdam {
    config: SparseAdamConfig,
}

impl SparseAdam {
    /// The rule of a config already validated.
    pub(crate) fn new_unchecked(config: SparseAdamConfig) -> Self {
        Self { config }
    }

    /// The hyperparameters.
    pub fn config(&self) -> &SparseAdamConfig {
        &self.config
    }

    /// One dense-path step of one parameter (see the [module docs](self)).
    ///
    /// `grad` has the parameter's shape. Returns the new parameter and state; the state's
    /// step count advances even when no row is touched. The caller validates `lr`.
    pub fn step_dense<B: Backend, const D: usize>(
        &self,
        lr: LearningRate,
        param: Tensor<B, D>,
        grad: Tensor<B, D>,
        state: Option<SparseAdamState<B, D>>,
    ) -> (Tensor<B, D>, SparseAdamState<B, D>) {
        let (param, state, _) = self.step_dense_on_path(lr, param, grad, state);
        (param, state)
    }

    /// [`SparseAdam::step_dense`], also saying which kernel ran.
    pub(crate) fn step_dense_on_path<B: Backend, const D: usize>(
        &self,
        lr: LearningRate,
        param: Tensor<B, D>,
        grad: Tensor<B, D>,
        state: Option<SparseAdamState<B, D>>,
    ) -> (Tensor<B, D>, SparseAdamState<B, D>, KernelPath) {
        let (param, mut state) = first_state_or(param, state);
        state.step += 1;
        let scalars = StepScalars::new(&self.config, lr, state.step);
        let grad = self.clip(grad);
        let ([param, exp_avg, exp_avg_sq], path) =
            kernels::step_dense([param, state.exp_avg, state.exp_avg_sq], grad, &scalars);
        state.exp_avg = exp_avg;
        state.exp_avg_sq = exp_avg_sq;
        (param, state, path)
    }

    /// One row-path step of one `[n, d]` parameter (see the [module docs](self)).
    ///
    /// `grad`'s rows must lie in `0..n` and its width be `d` (the whole-model optimizer
    /// checks this before any step). Rows not in `grad` keep their parameter and moments
    /// bit for bit. The caller validates `lr`.
    pub fn step_rows<B: Backend>(
        &self,
        lr: LearningRate,
        param: Tensor<B, 2>,
        grad: &RowGrad<B>,
        state: Option<SparseAdamState<B, 2>>,
    ) -> (Tensor<B, 2>, SparseAdamState<B, 2>) {
        let (param, state, _) = self.step_rows_on_path(lr, param, grad, state);
        (param, state)
    }

    /// [`SparseAdam::step_rows`], also saying which kernel ran (`None`: nothing to update).
    pub(crate) fn step_rows_on_path<B: Backend>(
        &self,
        lr: LearningRate,
        param: Tensor<B, 2>,
        grad: &RowGrad<B>,
        state: Option<SparseAdamState<B, 2>>,
    ) -> (Tensor<B, 2>, SparseAdamState<B, 2>, Option<KernelPath>) {
        let (param, mut state) = first_state_or(param, state);
        state.step += 1;
        // No touched row, or rows of width 0: only the step count changes.
        let Some(values) = grad.values().filter(|v| v.dims()[1] > 0) else {
            return (param, state, None);
        };
        let scalars = StepScalars::new(&self.config, lr, state.step);
        let table = [param, state.exp_avg, state.exp_avg_sq];
        let clipped;
        let values = match self.config.grad_clipping {
            Some(_) => {
                clipped = self.clip(values.clone());
                &clipped
            }
            None => values,
        };
        let ([param, exp_avg, exp_avg_sq], path) =
            kernels::step_rows(table, grad.rows(), values, &scalars);
        state.exp_avg = exp_avg;
        state.exp_avg_sq = exp_avg_sq;
        (param, state, Some(path))
    }
}
/// `param` and `state`, or `param` and the state of its first step (zero moments from
/// [`kernels::fresh_table`], which may have moved the parameter's values to other memory).
fn first_state_or<B: Backend, const D: usize>(
    param: Tensor<B, D>,
    state: Option<SparseAdamState<B, D>>,
) -> (Tensor<B, D>, SparseAdamState<B, D>) {
    if let Some(state) = state {
        return (param, state);
    }
    let [param, exp_avg, exp_avg_sq] = kernels::fresh_table(param);
    let state = SparseAdamState {
        step: 0,
        exp_avg,
        exp_avg_sq,
    };
    (param, state)
}

impl SparseAdam {
    /// `grad` after the config's gradient clipping, if any: Burn's own `GradientClipping`.
    /// A row gradient's `[k, d]` values (unique rows) have the norm of the sparse gradient.
    fn clip<B: Backend, const D: usize>(&self, grad: Tensor<B, D>) -> Tensor<B, D> {
        match &self.config.grad_clipping {
            Some(clipping) => clipping.init().clip_gradient(grad),
            None => grad,
        }
    }
}

impl SparseAdamConfig {
    /// Builds the [`SparseAdam`] update rule (a Burn `SimpleOptimizer`), after validation.
    ///
    /// # Errors
    ///
    /// As [`SparseAdamConfig::validate`].
    pub fn try_build(&self) -> crate::Result<SparseAdam> {
        self.validate()?;
        Ok(SparseAdam::new_unchecked(self.clone()))
    }
}

/// Checks a step's learning rate as PyTorch does (`0 < lr`), finite too, and that it is a
/// finite, non-zero `f32`, the precision of the update.
pub(crate) fn validate_lr(lr: LearningRate) -> Result<()> {
    sparse_adam_core::validate_lr(lr).map_err(Error::from)
}

impl<B: Backend> SimpleOptimizer<B> for SparseAdam {
    type State<const D: usize> = SparseAdamState<B, D>;

    /// The dense path, for Burn's `OptimizerAdaptor`.
    ///
    /// # Panics
    ///
    /// On a learning rate that is not finite and `> 0` (in `f32` too), or a step size that
    /// overflows `f32`, before changing anything, with the message of the
    /// [`Error`](crate::Error) the whole-model optimizer returns.
    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<B, D>,
        grad: Tensor<B, D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<B, D>, Option<Self::State<D>>) {
        let step = state.as_ref().map_or(0, |s| s.step) + 1;
        if let Err(err) = StepScalars::try_new(&self.config, lr, step) {
            panic!("{}", Error::from(err));
        }
        let (tensor, state) = self.step_dense(lr, tensor, grad, state);
        (tensor, Some(state))
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &B::Device) -> Self::State<D> {
        state.to_device(device)
    }
}
