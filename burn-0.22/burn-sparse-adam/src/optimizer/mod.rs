//! The optimizer layer: the public surface (what a [`SparseAdamConfig`] builds), the rule
//! ([`rule`]: the per-tensor [`SparseAdam`], Burn's `Optimizer`), and the whole-model
//! [`SparseAdamOptimizer`] with fallible steps.
//!
//! Two whole-model optimizers run the same rule:
//!
//! - Burn's own `ModuleOptimizer` ([`SparseAdamConfig::init`], as `AdamConfig::init`): what
//!   burn-train's `Learner` takes (`Learner::new(model, optim: ModuleOptimizer, ..)` in
//!   `burn-train-0.22.1/src/learner/base.rs`; it is a concrete type, not a trait), so the
//!   route for training with the Learner, its checkpoints and its resume. Errors are
//!   panics, as in every Burn optimizer.
//! - [`SparseAdamOptimizer`] ([`SparseAdamConfig::init_optimizer`]): a step is planned and
//!   checked before anything changes, and a refused step is an [`Error`] that hands back
//!   the model and the gradients ([`Rejected`]); its states can be read
//!   ([`SparseAdamOptimizer::state`]).
//!
//! A step of [`SparseAdamOptimizer`] runs in two passes. The first *plans* it and changes
//! nothing: it checks the learning rate, every gradient's shape, every row gradient's rows
//! and width, every saved state's rank and shape, and (when the config asks) whether
//! gradients are finite. The second applies the plan.

pub mod rule;

use std::collections::HashMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::{
    DynState, GradientsParams, LearningRate, ModuleOptimizer, MultiGradientsParams,
};
use burn::tensor::{Device, Shape, Tensor};

use crate::config::{NonFinite, SparseAdamConfig};
use crate::embedding::row_grads::{RowGrad, marker_shape, scope};
use crate::error::{Error, Rejected, Result};
use crate::kernels;
use crate::state::SparseAdamState;
use rule::{SparseAdam, reshape_state};

impl SparseAdamConfig {
    /// Builds the per-tensor [`SparseAdam`] rule (Burn's `Optimizer`), after validation.
    ///
    /// # Errors
    ///
    /// As [`SparseAdamConfig::validate`].
    pub fn try_build(&self) -> Result<SparseAdam> {
        self.validate()?;
        Ok(SparseAdam::new_unchecked(self.clone()))
    }

    /// Builds the per-tensor [`SparseAdam`] rule (Burn's `Optimizer`).
    ///
    /// # Panics
    ///
    /// When the config is invalid, with the message of [`SparseAdamConfig::validate`]'s
    /// error.
    pub fn build(&self) -> SparseAdam {
        self.try_build().unwrap_or_else(|err| panic!("{err}"))
    }

    /// Builds Burn's `ModuleOptimizer` over the [`SparseAdam`] rule, after validation: the
    /// optimizer burn-train's `Learner` takes. Every
    /// [`SparseEmbedding`](crate::SparseEmbedding) whose rows were collected with
    /// [`collect_grads`](crate::collect_grads) takes the row path; every other parameter the
    /// dense one.
    ///
    /// # Errors
    ///
    /// As [`SparseAdamConfig::validate`].
    pub fn try_init(&self) -> Result<ModuleOptimizer> {
        Ok(self.try_build()?.into())
    }

    /// Builds Burn's `ModuleOptimizer` over the [`SparseAdam`] rule (see
    /// [`SparseAdamConfig::try_init`]).
    ///
    /// # Panics
    ///
    /// When the config is invalid, with the message of [`SparseAdamConfig::validate`]'s
    /// error.
    pub fn init(&self) -> ModuleOptimizer {
        self.build().into()
    }

    /// Builds this crate's whole-model [`SparseAdamOptimizer`], after validation.
    ///
    /// # Errors
    ///
    /// As [`SparseAdamConfig::validate`].
    pub fn try_init_optimizer(&self) -> Result<SparseAdamOptimizer> {
        Ok(SparseAdamOptimizer::new(self.try_build()?))
    }

    /// Builds this crate's whole-model [`SparseAdamOptimizer`].
    ///
    /// # Panics
    ///
    /// When the config is invalid, with the message of [`SparseAdamConfig::validate`]'s
    /// error.
    pub fn init_optimizer(&self) -> SparseAdamOptimizer {
        self.try_init_optimizer()
            .unwrap_or_else(|err| panic!("{err}"))
    }
}

/// SparseAdam over a whole model, with fallible steps: built by
/// [`SparseAdamConfig::init_optimizer`].
///
/// It walks the model and gives each parameter that has a gradient one [`SparseAdam`] step:
/// the row path for a [`SparseEmbedding`](crate::SparseEmbedding) whose row gradients were
/// collected by [`collect_grads`](crate::collect_grads), the dense path for every other
/// gradient. Its states are keyed by parameter id, as `ModuleOptimizer`'s.
#[derive(Clone)]
pub struct SparseAdamOptimizer {
    rule: SparseAdam,
    states: HashMap<ParamId, DynState>,
}

impl SparseAdamOptimizer {
    fn new(rule: SparseAdam) -> Self {
        Self {
            rule,
            states: HashMap::new(),
        }
    }

    /// The hyperparameters.
    pub fn config(&self) -> &SparseAdamConfig {
        self.rule.config()
    }

    /// The state of parameter `id`, if it has taken a step.
    ///
    /// # Panics
    ///
    /// When `D` is not the parameter's rank.
    pub fn state<const D: usize>(&self, id: ParamId) -> Option<SparseAdamState<D>> {
        let state = self.states.get(&id)?;
        assert_eq!(state.rank(), D, "parameter {id} has rank {}", state.rank());
        Some(state.downcast_ref::<SparseAdamState<D>>().clone())
    }

    /// One optimizer step, or an error that leaves everything unchanged and hands the model
    /// and the gradients back (in [`Rejected`]), so that nothing is lost.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidLearningRate`], [`Error::LearningRateOutOfRange`],
    /// [`Error::StepSizeOverflow`], [`Error::GradientShape`], [`Error::IndexOutOfRange`]
    /// (a row gradient beyond its table), [`Error::StateShape`] and [`Error::StateRank`] (a
    /// state that does not fit its parameter), [`Error::NonFiniteGradient`],
    /// [`Error::RowGradientsNotCollected`].
    pub fn try_step<M: Module>(
        &mut self,
        lr: LearningRate,
        module: M,
        grads: GradientsParams,
    ) -> core::result::Result<M, Rejected<M, GradientsParams>> {
        self.step_checked(lr, module, Grads::Single(grads))
            .map_err(|(error, module, grads)| match grads {
                Grads::Single(grads) => Rejected {
                    error,
                    module,
                    grads,
                },
                Grads::Multi(_) => unreachable!("given single-device gradients"),
            })
    }

    /// [`SparseAdamOptimizer::try_step`] for gradients from several devices: each
    /// parameter's gradients, row gradients included, are summed on the device Burn picks
    /// for that parameter.
    ///
    /// # Errors
    ///
    /// As [`SparseAdamOptimizer::try_step`].
    pub fn try_step_multi<M: Module>(
        &mut self,
        lr: LearningRate,
        module: M,
        grads: MultiGradientsParams,
    ) -> core::result::Result<M, Rejected<M, MultiGradientsParams>> {
        self.step_checked(lr, module, Grads::Multi(grads))
            .map_err(|(error, module, grads)| match grads {
                Grads::Multi(grads) => Rejected {
                    error,
                    module,
                    grads,
                },
                Grads::Single(_) => unreachable!("given multi-device gradients"),
            })
    }

    /// One optimizer step.
    ///
    /// # Panics
    ///
    /// Where [`SparseAdamOptimizer::try_step`] returns an error, with its message, before
    /// changing anything.
    pub fn step<M: Module>(&mut self, lr: LearningRate, module: M, grads: GradientsParams) -> M {
        self.try_step(lr, module, grads)
            .unwrap_or_else(|rejected| panic!("{}", rejected.error))
    }

    /// One optimizer step with gradients from several devices.
    ///
    /// # Panics
    ///
    /// As [`SparseAdamOptimizer::step`].
    pub fn step_multi<M: Module>(
        &mut self,
        lr: LearningRate,
        module: M,
        grads: MultiGradientsParams,
    ) -> M {
        self.try_step_multi(lr, module, grads)
            .unwrap_or_else(|rejected| panic!("{}", rejected.error))
    }

    /// A step, or why not with everything given back.
    #[allow(clippy::result_large_err)]
    fn step_checked<M: Module>(
        &mut self,
        lr: LearningRate,
        module: M,
        mut grads: Grads,
    ) -> core::result::Result<M, (Error, M, Grads)> {
        if let Err(err) = sparse_adam_core::validate_lr(lr) {
            return Err((err.into(), module, grads));
        }
        let mut planner = Planner {
            grads: &grads,
            rule: &self.rule,
            states: &self.states,
            lr,
            plans: HashMap::new(),
            error: None,
        };
        module.visit(&mut planner);
        let plans = match planner.error {
            Some(err) => return Err((err, module, grads)),
            None => planner.plans,
        };
        let mut stepper = Stepper {
            rule: &self.rule,
            lr,
            plans,
            states: &mut self.states,
            grads: &mut grads,
        };
        Ok(module.map(&mut stepper))
    }
}

/// Single- or multi-device gradients.
enum Grads {
    Single(GradientsParams),
    Multi(MultiGradientsParams),
}

impl Grads {
    /// Every gradient of `id` (one per device), without taking them.
    fn peek<const D: usize>(&self, id: ParamId) -> Vec<Tensor<D>> {
        match self {
            Grads::Single(grads) => grads.get::<D>(id).into_iter().collect(),
            Grads::Multi(multi) => multi
                .grads
                .iter()
                .filter_map(|(grads, _)| grads.get::<D>(id))
                .collect(),
        }
    }

    /// The gradient of `id`, summed over devices, and the device it was summed on.
    fn remove<const D: usize>(&mut self, id: ParamId) -> Option<(Tensor<D>, Device)> {
        match self {
            Grads::Single(grads) => grads.remove::<D>(id).map(|g| {
                let device = g.device();
                (g, device)
            }),
            Grads::Multi(multi) => multi.remove::<D>(id),
        }
    }
}

/// What the step does to one parameter.
enum Update {
    Dense,
    Rows(RowGrad),
    Skip,
}

/// The first pass of a step: checks everything and plans each parameter, changing nothing.
struct Planner<'a> {
    grads: &'a Grads,
    rule: &'a SparseAdam,
    states: &'a HashMap<ParamId, DynState>,
    lr: LearningRate,
    plans: HashMap<ParamId, Update>,
    error: Option<Error>,
}

impl Planner<'_> {
    fn check_state<const D: usize>(&self, id: ParamId, shape: &Shape) -> Result<usize> {
        let Some(state) = self.states.get(&id) else {
            return Ok(0);
        };
        if state.rank() != D {
            return Err(Error::StateRank {
                param: id,
                expected: D,
                found: state.rank(),
            });
        }
        let state = state.downcast_ref::<SparseAdamState<D>>();
        if state.shape() != shape.to_vec() {
            return Err(Error::StateShape {
                param: id,
                expected: shape.to_vec(),
                found: state.shape(),
            });
        }
        Ok(state.step)
    }

    fn plan<const D: usize>(&self, id: ParamId, param: &Tensor<D>) -> Result<Option<Update>> {
        let shape = param.shape();
        let tape = scope::tape(id);
        let grads = self.grads.peek::<D>(id);
        let Some(first) = grads.first() else {
            return match tape {
                Some(tape) if tape.has_pending() && tape.peek_collected().is_empty() => {
                    Err(Error::RowGradientsNotCollected { param: id })
                }
                _ => Ok(None),
            };
        };
        let rows_kind = first.shape() != shape
            && tape.is_some()
            && first.shape() == marker_shape(&shape);
        if first.shape() != shape && !rows_kind {
            return Err(Error::GradientShape {
                param: id,
                expected: shape.to_vec(),
                found: first.shape().to_vec(),
            });
        }
        let step = self.check_state::<D>(id, &shape)? + 1;
        // The step's scalars, checked here so that a step size that overflows `f32` is an
        // error before anything changes (the update computes them again).
        self.rule.scalars(self.lr, step)?;

        let non_finite = self.rule.config().non_finite;
        let (update, finite) = match tape.filter(|_| rows_kind) {
            Some(tape) => {
                let rows = match SparseAdam::rows_of_marker(
                    &tape,
                    &grads,
                    kernels::as_rows(&shape),
                    &param.device(),
                ) {
                    // A marker whose rows were dropped (`clear_row_grads`) announces
                    // nothing: the table has no gradient, and takes no step.
                    None => return Ok(None),
                    Some(rows) => rows.map_err(|misfit| misfit.error(Some(id), &shape))?,
                };
                let finite = match non_finite {
                    NonFinite::Propagate => true,
                    _ => rows.values().is_none_or(kernels::all_finite),
                };
                (Update::Rows(rows), finite)
            }
            None => {
                let finite = match non_finite {
                    NonFinite::Propagate => true,
                    _ => grads.iter().all(kernels::all_finite),
                };
                (Update::Dense, finite)
            }
        };
        match (finite, non_finite) {
            (true, _) | (false, NonFinite::Propagate) => Ok(Some(update)),
            (false, NonFinite::Skip) => Ok(Some(Update::Skip)),
            (false, NonFinite::Error) => Err(Error::NonFiniteGradient { param: id }),
        }
    }
}

impl ModuleVisitor for Planner<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if self.error.is_some() {
            return;
        }
        match self.plan(param.id, &param.val()) {
            Ok(Some(update)) => {
                self.plans.insert(param.id, update);
            }
            Ok(None) => {}
            Err(err) => self.error = Some(err),
        }
    }
}

/// The second pass of a step: applies the plan, parameter by parameter.
struct Stepper<'a> {
    rule: &'a SparseAdam,
    lr: LearningRate,
    plans: HashMap<ParamId, Update>,
    states: &'a mut HashMap<ParamId, DynState>,
    grads: &'a mut Grads,
}

impl Stepper<'_> {
    fn step<const D: usize>(
        &mut self,
        id: ParamId,
        update: Update,
        param: Tensor<D>,
        grad: Tensor<D>,
        device: &Device,
    ) -> Tensor<D> {
        let rows = match update {
            Update::Skip => return param,
            Update::Dense => None,
            Update::Rows(rows) => Some(rows),
        };
        let state = self
            .states
            .remove(&id)
            .map(|state| state.downcast::<SparseAdamState<D>>().to_device(device));
        let (param, state) = match rows {
            Some(rows) => {
                let shape = param.shape();
                let [n, d] = kernels::as_rows(&shape);
                let rows = rows.to_device(device);
                let state = state.map(|s| reshape_state(s, [n, d]));
                let (param, state) =
                    self.rule
                        .step_rows(self.lr, kernels::to_rank(param, [n, d]), &rows, state);
                (
                    kernels::to_rank(param, shape.clone()),
                    reshape_state(state, shape),
                )
            }
            None => self.rule.step_dense(self.lr, param, grad, state),
        };
        self.states.insert(id, DynState::create(state, D));
        param
    }
}

impl ModuleMapper for Stepper<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (id, tensor, mapper) = param.consume();
        let Some(update) = self.plans.remove(&id) else {
            return Param::from_mapped_value(id, tensor, mapper);
        };
        let (grad, device) = self
            .grads
            .remove::<D>(id)
            .expect("the plan only covers parameters with a gradient");
        if let Some(tape) = scope::tape(id) {
            // The rows of these gradients are in the plan, summed; older ones are stale. The
            // step consumes them all.
            drop(tape.take_collected());
        }
        let context = Context::capture(&tensor);
        // As Burn's `ModuleOptimizer` does: the parameter follows its gradient's device
        // (multi-device training picks one device per parameter).
        let tensor = if tensor.device() != device {
            tensor.to_device(&device)
        } else {
            tensor
        };
        let stepped = self.step(id, update, tensor.inner(), grad, &device);
        Param::from_mapped_value(id, context.restore(stepped, id), mapper)
    }
}

/// The autodiff state a parameter carries, taken before the update runs on its values and
/// put back on the result (what burn-optim's crate-private `ParameterContext` does for
/// `ModuleOptimizer`): autodiff, the gradient-checkpointing strategy, whether it requires
/// its gradient and whether it is distributed.
struct Context {
    autodiff: bool,
    strategy: Option<burn::tensor::GradientCheckpointingStrategy>,
    require_grad: bool,
    distributed: bool,
}

impl Context {
    fn capture<const D: usize>(tensor: &Tensor<D>) -> Self {
        Self {
            autodiff: tensor.is_autodiff(),
            strategy: tensor.gradient_checkpointing_strategy(),
            require_grad: tensor.is_require_grad(),
            distributed: tensor.is_distributed(),
        }
    }

    fn restore<const D: usize>(self, updated: Tensor<D>, id: ParamId) -> Tensor<D> {
        if !self.autodiff {
            return updated;
        }
        let mut tensor = Tensor::from_inner(updated);
        if let Some(strategy) = self.strategy {
            tensor = tensor.with_gradient_checkpointing_strategy(strategy);
        }
        if self.require_grad {
            tensor = tensor.require_grad();
        }
        if self.distributed {
            tensor = tensor.set_distributed(id);
        }
        tensor
    }
}
