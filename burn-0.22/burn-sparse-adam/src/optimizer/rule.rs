//! [`SparseAdam`]: the update rule for one parameter, on its two paths, and Burn 0.22's
//! per-tensor [`Optimizer`] trait for it.
//!
//! - The **dense path** ([`SparseAdam::step_dense`]) takes a gradient shaped like the
//!   parameter, as stock Burn modules produce. A row (a slice along dim 0; an element of a
//!   1-d parameter) is touched when any entry of its gradient is non-zero: the masking model
//!   of PyTorch's documentation, where a dense gradient reaches SparseAdam as
//!   `grad.to_sparse(sparse_dim=1)`. It reads nothing back: on burn-flex it is one pass
//!   over the parameter, its gradient and both moments (the core's `update_dense`), on other
//!   backends a masked update in Burn operations, with the same bits.
//! - The **row path** ([`SparseAdam::step_rows`]) takes a [`RowGrad`]: it gathers the
//!   touched rows, updates them, and adds the deltas back; its cost follows the number of
//!   touched rows, not the table. A looked-up row is touched even when its gradient sums to
//!   exactly zero, as with PyTorch's sparse layout.
//!
//! Both run the core's formula, and both count a step for the parameter, even when no row
//! is touched (an all-zero dense gradient, an empty row gradient), as PyTorch does.
//!
//! # Under Burn's `ModuleOptimizer`
//!
//! Burn 0.22's `ModuleOptimizer` gives a per-tensor [`Optimizer`] a parameter and its
//! gradient, and nothing else: not the parameter's id, not its module. For a
//! [`SparseEmbedding`](crate::SparseEmbedding) whose rows were collected, the gradient is the
//! marker of [`collect_grads`](crate::collect_grads); `ModuleOptimizer` steps through
//! `module.map`, and the table's `map` keeps its row-gradient tape reachable while its weight
//! is mapped, so [`Optimizer::step`] recognizes the marker and takes the row path with the
//! tape's rows. That is how `ModuleOptimizer`, and burn-train's `Learner` which takes one,
//! train tables through their row gradients.

use burn::module::ParamId;
use burn::optim::{LearningRate, Optimizer};
use burn::tensor::{DType, Device, Shape, Tensor};
use sparse_adam_core::StepScalars;

use crate::config::{NonFinite, SparseAdamConfig};
use crate::embedding::row_grads::{RowGrad, RowGradTape, marker_shape, scope};
use crate::error::Error;
use crate::kernels::{self, Kernel};
use crate::state::{SparseAdamState, burn_dtype};

/// The SparseAdam update rule (PyTorch's `torch.optim.SparseAdam`) for one parameter at a
/// time: Burn 0.22's per-tensor [`Optimizer`], with the row path.
///
/// Wrap it in Burn's `ModuleOptimizer` (`SparseAdamConfig::init` does) to train a whole
/// model, in a manual loop or with burn-train's `Learner`; or use
/// [`SparseAdamOptimizer`](crate::SparseAdamOptimizer) for fallible steps.
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

    /// `grad` after the config's gradient clipping, if any: Burn's own `GradientClipping`.
    fn clip<const D: usize>(&self, grad: Tensor<D>) -> Tensor<D> {
        match &self.config.grad_clipping {
            Some(clipping) => clipping.init().clip_gradient(grad),
            None => grad,
        }
    }

    /// The type a parameter of type `param`'s moments are stored in: the config's
    /// `moment_dtype`, else the parameter's own.
    pub(crate) fn moment_dtype(&self, param: DType) -> DType {
        self.config.moment_dtype.map_or(param, burn_dtype)
    }

    /// Checks that `param`'s update can run in its float type (epsilon), that its moments
    /// can be stored as the config asks on the device the step runs on (`param`'s, and each
    /// of `devices`: a multi-device step moves the parameter to its gradient's), and that a
    /// saved `state` holds them so.
    pub(crate) fn check_moments<const D: usize>(
        &self,
        param: &Tensor<D>,
        devices: &[Device],
        state: Option<&SparseAdamState<D>>,
    ) -> crate::Result<()> {
        let param_dtype = param.dtype();
        let expected = self.moment_dtype(param_dtype);
        // The update runs in the parameter's type: f16 is the one float type whose smallest
        // positive value (2⁻²⁴) is above the default epsilon (1e-8).
        if param_dtype == DType::F16 && self.config.epsilon < f64::from(half_min_positive()) {
            return Err(Error::EpsilonUnderflowsInParam {
                value: self.config.epsilon,
                param: param_dtype,
            });
        }
        if let Some(moments) = self.config.moment_dtype {
            // The moments are widened to the parameter's type for the update, which must be
            // exact: the parameter's own type, or a narrower one under f32 or f64 (bf16 and
            // f16 do not hold each other's values).
            let exact = expected == param_dtype
                || (matches!(param_dtype, DType::F32 | DType::F64)
                    && expected.size() < param_dtype.size());
            if !exact {
                return Err(Error::MomentsWiderThanParam {
                    moments,
                    param: param_dtype,
                });
            }
            let unsupported = std::iter::once(param.device())
                .chain(devices.iter().cloned())
                .find(|device| !device.supports_dtype(expected));
            if let Some(device) = unsupported {
                return Err(Error::MomentDtypeUnsupported {
                    moments,
                    device: format!("{device:?}"),
                });
            }
        }
        let found = state.map(|s| (s.exp_avg.dtype(), s.exp_avg_sq.dtype()));
        match found {
            Some((m, v)) if m != expected || v != expected => Err(Error::StateMomentDtype {
                expected,
                found: if m != expected { m } else { v },
            }),
            _ => Ok(()),
        }
    }

    /// `param` and `state`, or `param` and the state of its first step (zero moments in the
    /// type the config asks for, from [`kernels::fresh_table`], which may have moved the
    /// parameter's values to other memory); panics with the message of
    /// [`Self::check_moments`]' error.
    fn state_or_zeros<const D: usize>(
        &self,
        param: Tensor<D>,
        state: Option<SparseAdamState<D>>,
    ) -> (Tensor<D>, SparseAdamState<D>) {
        if let Err(err) = self.check_moments(&param, &[], state.as_ref()) {
            panic!("{err}");
        }
        if let Some(state) = state {
            return (param, state);
        }
        // The kernels layer makes the moments where the row update is fastest on them (huge
        // pages on flex), and may move the parameter there too, once.
        let dtype = self.moment_dtype(param.dtype());
        let [param, exp_avg, exp_avg_sq] = kernels::fresh_table(param, dtype);
        let state = SparseAdamState {
            step: 0,
            exp_avg,
            exp_avg_sq,
        };
        (param, state)
    }

    /// The scalars of step `step` (1-based) at learning rate `lr`, checked.
    pub(crate) fn scalars(&self, lr: LearningRate, step: usize) -> crate::Result<StepScalars> {
        StepScalars::try_new(&self.config, lr, step).map_err(Error::from)
    }

    /// One dense-path step of one parameter (see the [module docs](self)).
    ///
    /// `grad` has the parameter's shape. Returns the new parameter and state; the state's
    /// step count advances even when no row is touched.
    ///
    /// # Panics
    ///
    /// On a learning rate or step size that [`StepScalars::try_new`] rejects, or moments
    /// that cannot be stored as the config asks (`moment_dtype` wider than the parameter or
    /// not held by its device, a `state` in another type), with the message of the
    /// [`Error`] it maps to.
    pub fn step_dense<const D: usize>(
        &self,
        lr: LearningRate,
        param: Tensor<D>,
        grad: Tensor<D>,
        state: Option<SparseAdamState<D>>,
    ) -> (Tensor<D>, SparseAdamState<D>) {
        let (param, state, _) = self.step_dense_reporting(lr, param, grad, state);
        (param, state)
    }

    /// [`SparseAdam::step_dense`], also saying which kernel ran.
    pub(crate) fn step_dense_reporting<const D: usize>(
        &self,
        lr: LearningRate,
        param: Tensor<D>,
        grad: Tensor<D>,
        state: Option<SparseAdamState<D>>,
    ) -> (Tensor<D>, SparseAdamState<D>, Kernel) {
        let (param, mut state) = self.state_or_zeros(param, state);
        state.step += 1;
        let scalars = self
            .scalars(lr, state.step)
            .unwrap_or_else(|err| panic!("{err}"));
        let grad = self.clip(grad);
        let ([param, exp_avg, exp_avg_sq], kernel) =
            kernels::step_dense(param, state.exp_avg, state.exp_avg_sq, grad, &scalars);
        state.exp_avg = exp_avg;
        state.exp_avg_sq = exp_avg_sq;
        (param, state, kernel)
    }

    /// One row-path step of one `[n, d]` parameter (see the [module docs](self)).
    ///
    /// `grad`'s rows must lie in `0..n` and its width be `d`. Rows not in `grad` keep their
    /// parameter and moments bit for bit.
    ///
    /// # Panics
    ///
    /// As [`SparseAdam::step_dense`].
    pub fn step_rows(
        &self,
        lr: LearningRate,
        param: Tensor<2>,
        grad: &RowGrad,
        state: Option<SparseAdamState<2>>,
    ) -> (Tensor<2>, SparseAdamState<2>) {
        let (param, state, _) = self.step_rows_reporting(lr, param, grad, state);
        (param, state)
    }

    /// [`SparseAdam::step_rows`], and the path the row update took (`None` when no row was
    /// touched).
    pub(crate) fn step_rows_reporting(
        &self,
        lr: LearningRate,
        param: Tensor<2>,
        grad: &RowGrad,
        state: Option<SparseAdamState<2>>,
    ) -> (Tensor<2>, SparseAdamState<2>, Option<Kernel>) {
        let (param, mut state) = self.state_or_zeros(param, state);
        state.step += 1;
        let scalars = self
            .scalars(lr, state.step)
            .unwrap_or_else(|err| panic!("{err}"));
        let table = [param, state.exp_avg, state.exp_avg_sq];
        let ([param, exp_avg, exp_avg_sq], kernel) = self.update_rows(table, grad, &scalars);
        state.exp_avg = exp_avg;
        state.exp_avg_sq = exp_avg_sq;
        (param, state, kernel)
    }

    /// The row update of `table` with `grad`: unplanned lookups on the device where the
    /// kernels layer can ([`kernels::step_lookups`]; not with gradient clipping, which needs
    /// the summed rows), else the planned rows ([`kernels::step_rows`]).
    fn update_rows(
        &self,
        table: kernels::Table,
        grad: &RowGrad,
        scalars: &StepScalars,
    ) -> (kernels::Table, Option<Kernel>) {
        let table = match grad.lookups() {
            // Unchecked lookups of width 0: only the step count changes (checked ones are
            // planned below, which checks their indices).
            Some(lookups) if lookups.width() == 0 && !lookups.check => return (table, None),
            Some(lookups) if lookups.width() > 0 && self.config.grad_clipping.is_none() => {
                match kernels::step_lookups(table, &lookups.batch, scalars) {
                    Ok(table) => return (table, Some(Kernel::FusedLookups)),
                    Err(table) => table,
                }
            }
            _ => table,
        };
        // No touched row, or rows of width 0: only the step count changes.
        let Some(values) = grad.values().filter(|v| v.dims()[1] > 0) else {
            return (table, None);
        };
        // The `[k, d]` values of unique rows have the norm of the sparse gradient.
        let values = self.clip(values.clone());
        let (table, kernel) = kernels::step_rows(table, grad.rows(), values, scalars);
        (table, Some(kernel))
    }

    /// One step of one `[n, d]` parameter from its lookups' gradients, uncoalesced: row
    /// `indices[i]` (`[p]`, any order, duplicates allowed) has gradient `values[i]` (`[p, d]`),
    /// and a row looked up several times takes the sum of its gradients, in lookup order
    /// (PyTorch's `coalesce` of a sparse gradient, which `torch.optim.SparseAdam` does
    /// first). The result is [`SparseAdam::step_rows`] of that coalesced row gradient, bit
    /// for bit; rows not looked up keep their parameter and moments; `p = 0` only counts
    /// the step.
    ///
    /// With the feature `wgpu`, on a `Cube` device (wgpu), for `f32` tables with moments in
    /// `f32` and no gradient clipping, nothing is read back to the host: the lookups are
    /// sorted on the device, and one fused kernel sums each row's gradients in registers
    /// and updates the row, so no `[k, d]` row gradient is ever written. **There, an index
    /// outside `0..n` is skipped**, not reported (checking it would read the indices back).
    /// Everywhere else the indices are read to the host, checked, and planned there (the
    /// row path).
    ///
    /// # Panics
    ///
    /// When `values` is not `[p, d]`
    /// ([`Error::TensorGradientShape`](crate::Error::TensorGradientShape)); where the
    /// indices are read, on an index outside `0..n`
    /// ([`Error::IndexOutOfRange`](crate::Error::IndexOutOfRange)); and as
    /// [`SparseAdam::step_dense`]; with the matching message, before anything changes.
    ///
    /// # Example
    ///
    /// ```
    /// use burn::optim::LearningRate;
    /// use burn::tensor::{Device, Int, Tensor};
    /// use burn_sparse_adam::SparseAdamConfig;
    ///
    /// let device = Device::default();
    /// let rule = SparseAdamConfig::new().build();
    /// let table = Tensor::<2>::zeros([4, 2], &device);
    /// // Row 1 is looked up twice: it takes the sum of both gradients.
    /// let indices = Tensor::<1, Int>::from_data([1, 3, 1], &device);
    /// let grads = Tensor::<2>::from_data([[1.0, 0.0], [0.0, 2.0], [1.0, 0.0]], &device);
    /// let (table, state) = rule.step_lookups(0.1 as LearningRate, table, indices, grads, None);
    /// assert_eq!(state.step, 1);
    /// let rows = table.into_data().convert::<f32>().to_vec::<f32>().unwrap();
    /// assert_eq!(&rows[..2], &[0.0, 0.0]); // row 0: not looked up
    /// assert!(rows[2] < 0.0 && rows[7] < 0.0); // rows 1 and 3: one step against the gradient
    /// ```
    pub fn step_lookups(
        &self,
        lr: LearningRate,
        param: Tensor<2>,
        indices: Tensor<1, burn::tensor::Int>,
        values: Tensor<2>,
        state: Option<SparseAdamState<2>>,
    ) -> (Tensor<2>, SparseAdamState<2>) {
        let [n, d] = param.dims();
        let [p] = indices.dims();
        if values.dims() != [p, d] {
            panic!(
                "{}",
                Error::TensorGradientShape {
                    expected: vec![p, d],
                    found: values.dims().to_vec(),
                }
            );
        }
        let grad = RowGrad::from_lookups(vec![(indices, values)], n, true);
        let (param, state, _) = self.step_rows_reporting(lr, param, &grad, state);
        (param, state)
    }

    /// The row gradient a marker announces: the newest collected row gradients of `tape`,
    /// as many as the marker counts passes, summed on `device`, after checking that they fit
    /// a `[n, d]` table. `None` when the tape holds none (they were cleared).
    pub(crate) fn rows_of_marker<const D: usize>(
        tape: &RowGradTape,
        markers: &[Tensor<D>],
        [n, d]: [usize; 2],
        device: &Device,
    ) -> Option<Result<RowGrad, Misfit>> {
        let collected = tape.announced(markers);
        if collected.is_empty() {
            return None;
        }
        for rows in &collected {
            // Unplanned lookups are checked where they are planned (their indices are not
            // read back to check them here); their width is known.
            if let Some(lookups) = rows.lookups() {
                let width = lookups.width();
                if width != d {
                    return Some(Err(Misfit::Width {
                        rows: lookups.batch.indices.dims()[0],
                        width,
                    }));
                }
                continue;
            }
            if let Some(width) = rows.width().filter(|&w| w != d) {
                return Some(Err(Misfit::Width {
                    rows: rows.rows().len(),
                    width,
                }));
            }
            if let Some(&row) = rows.rows().last().filter(|&&r| r as usize >= n) {
                return Some(Err(Misfit::Row { index: row, n }));
            }
        }
        Some(Ok(RowGrad::sum(collected, device)))
    }
}

impl Optimizer for SparseAdam {
    type State<const D: usize> = SparseAdamState<D>;

    /// One step of one parameter, as Burn's `ModuleOptimizer` calls it: the row path when
    /// `grad` is the marker of a [`SparseEmbedding`](crate::SparseEmbedding) whose weight is
    /// being mapped, the dense path otherwise. `NonFinite::Skip` leaves the parameter and
    /// its state as they were when the gradient holds NaN or ±inf.
    ///
    /// # Panics
    ///
    /// On a learning rate or step size that PyTorch or `f32` rejects, a gradient of another
    /// shape, row gradients that do not fit the table, or a non-finite gradient under
    /// `NonFinite::Error`, with the message of the matching [`Error`], before anything
    /// changes. [`SparseAdamOptimizer::try_step`](crate::SparseAdamOptimizer::try_step)
    /// returns these as errors.
    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<D>, Option<Self::State<D>>) {
        let shape = tensor.shape();
        let step = state.as_ref().map_or(0, |s| s.step) + 1;
        if let Err(err) = self.scalars(lr, step) {
            panic!("{err}");
        }
        if let Err(err) = self.check_moments(&tensor, &[], state.as_ref()) {
            panic!("{err}");
        }
        let tape = (grad.shape() != shape && grad.shape() == marker_shape(&shape))
            .then(scope::current)
            .flatten();
        if let Some(tape) = tape {
            let [n, d] = kernels::as_rows(&shape);
            let rows =
                Self::rows_of_marker(&tape, std::slice::from_ref(&grad), [n, d], &tensor.device());
            // The step consumes every collected row gradient, stale ones included.
            drop(tape.take_collected());
            let Some(rows) = rows else {
                // A marker whose rows were dropped (`clear_row_grads`) announces nothing.
                return (tensor, state);
            };
            let rows = rows.unwrap_or_else(|misfit| panic!("{}", misfit.error(None, &shape)));
            // Only a policy other than `Propagate` reads the values (planning unplanned
            // lookups on the host).
            let non_finite = self.config.non_finite;
            if non_finite != NonFinite::Propagate && !rows.values().is_none_or(kernels::all_finite)
            {
                match non_finite {
                    NonFinite::Skip => return (tensor, state),
                    _ => panic!("{}", Error::NonFiniteTensorGradient),
                }
            }
            let state = state.map(|s| reshape_state(s, [n, d]));
            let (param, state) = self.step_rows(lr, kernels::to_rank(tensor, [n, d]), &rows, state);
            return (
                kernels::to_rank(param, shape.clone()),
                Some(reshape_state(state, shape)),
            );
        }
        if grad.shape() != shape {
            panic!(
                "{}",
                Error::TensorGradientShape {
                    expected: shape.to_vec(),
                    found: grad.shape().to_vec(),
                }
            );
        }
        match self.config.non_finite {
            NonFinite::Propagate => {}
            _ if kernels::all_finite(&grad) => {}
            NonFinite::Skip => return (tensor, state),
            NonFinite::Error => panic!("{}", Error::NonFiniteTensorGradient),
        }
        let (tensor, state) = self.step_dense(lr, tensor, grad, state);
        (tensor, Some(state))
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &Device) -> Self::State<D> {
        state.to_device(device)
    }
}

/// How collected row gradients fail to fit their table.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Misfit {
    /// A row gradient of `rows` rows has another width than the table's.
    Width { rows: usize, width: usize },
    /// A row beyond the table's `n` rows.
    Row { index: i64, n: usize },
}

impl Misfit {
    /// The error for the parameter `param` (when known) of shape `shape`.
    pub(crate) fn error(&self, param: Option<ParamId>, shape: &Shape) -> Error {
        match *self {
            Misfit::Width { rows, width } => match param {
                Some(param) => Error::GradientShape {
                    param,
                    expected: shape.to_vec(),
                    found: vec![rows, width],
                },
                None => Error::TensorGradientShape {
                    expected: shape.to_vec(),
                    found: vec![rows, width],
                },
            },
            Misfit::Row { index, n } => Error::IndexOutOfRange {
                index,
                n_embedding: n,
            },
        }
    }
}

/// A state seen with rank `D2` and shape `shape` (of as many elements).
pub(crate) fn reshape_state<const D: usize, const D2: usize>(
    state: SparseAdamState<D>,
    shape: impl Into<Shape>,
) -> SparseAdamState<D2> {
    let shape = shape.into();
    SparseAdamState {
        step: state.step,
        exp_avg: kernels::to_rank(state.exp_avg, shape.clone()),
        exp_avg_sq: kernels::to_rank(state.exp_avg_sq, shape),
    }
}

/// The smallest positive `f16` (a subnormal, 2⁻²⁴), as an `f32`. Epsilons below it are
/// refused for `f16` parameters (from half of it down they round to 0).
fn half_min_positive() -> f32 {
    burn::tensor::f16::from_bits(1).to_f32()
}
