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
//! A step of [`SparseAdamOptimizer`] runs in two passes: [`plan`] checks everything and
//! changes nothing, [`apply`] applies the plan. [`groups`] pairs Burn's `ParamGroup`s with
//! hyperparameters, [`hooks`] are PyTorch's step and state-dict hooks, [`record`] writes and
//! reads Burn 0.22's burnpack `OptimizerRecord`.

mod apply;
mod groups;
pub mod hooks;
mod plan;
mod record;
pub mod rule;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use burn::module::{Module, ParamGroup, ParamId};
use burn::optim::lr_scheduler::module_lr_scheduler::ModuleLearningRate;
use burn::optim::{
    DynState, GradientsParams, ModuleOptimizer, MultiGradientsParams, OptimizerRecord,
};
use burn::tensor::{Bytes, Device};
use sparse_adam_core::MomentDtype;

use crate::config::SparseAdamConfig;
use crate::error::{Error, Rejected, Result};
use crate::state::SparseAdamState;
use apply::Stepper;
use groups::Groups;
use hooks::{Hook, HookHandle, Hooks, StepInfo};
use plan::{Grads, Planner, state_step};
use rule::SparseAdam;

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

/// SparseAdam over a whole model, with fallible steps, groups and hooks: built by
/// [`SparseAdamConfig::init_optimizer`].
///
/// It walks the model and gives each parameter that has a gradient one [`SparseAdam`] step:
/// the row path for a [`SparseEmbedding`](crate::SparseEmbedding) whose row gradients were
/// collected by [`collect_grads`](crate::collect_grads), the dense path for every other
/// gradient. Its surface is `ModuleOptimizer`'s (`step(lr, module, grads)` with a learning
/// rate or a `ModuleLearningRate`, `step_multi`, `with_group`, `to_record`/`load_record`,
/// the same burnpack records), plus `try_step` and the hooks. Clones share their hooks.
#[derive(Clone)]
pub struct SparseAdamOptimizer {
    base: SparseAdam,
    groups: Groups,
    states: HashMap<ParamId, DynState>,
    hooks: Hooks,
    /// A record was loaded and has not yet been checked against a model.
    verify_record: bool,
}

impl SparseAdamOptimizer {
    fn new(base: SparseAdam) -> Self {
        Self {
            base,
            groups: Groups::default(),
            states: HashMap::new(),
            hooks: Hooks::default(),
            verify_record: false,
        }
    }

    /// The hyperparameters of parameters in no group.
    pub fn config(&self) -> &SparseAdamConfig {
        self.base.config()
    }

    /// The hyperparameters of the groups, in the order they were added.
    pub fn group_configs(&self) -> Vec<SparseAdamConfig> {
        self.groups.configs().cloned().collect()
    }

    /// Adds a parameter group: the parameters Burn's `group` matches (by id, or by path in
    /// the model such as `"table.weight"`) take the hyperparameters of `config`; as in
    /// `ModuleOptimizer::with_group`, the last group added that matches a parameter wins.
    /// The group's learning rate is the step's `ModuleLearningRate` for those parameters
    /// (build it with a `ModuleLrScheduler` and its own `with_group`). Unlike
    /// `ModuleOptimizer::with_group`, the state of parameters that already stepped is kept,
    /// as PyTorch's `add_param_group` keeps it.
    ///
    /// # Errors
    ///
    /// [`Error::InGroup`] naming the group (`#index`) and its invalid hyperparameter.
    pub fn with_group(mut self, group: ParamGroup, config: SparseAdamConfig) -> Result<Self> {
        self.groups.add(group, config)?;
        Ok(self)
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

    /// Registers `hook`, called before each step with the step's [`StepInfo`] (PyTorch's
    /// `register_step_pre_hook`). While a step hook is registered, the touched rows of dense
    /// gradients are counted (a one-value read-back per parameter).
    pub fn register_step_pre_hook(
        &self,
        hook: impl Fn(&StepInfo) + Send + Sync + 'static,
    ) -> HookHandle {
        self.hooks.register(Hook::StepPre(Arc::new(hook)), false)
    }

    /// Registers `hook`, called after each step (PyTorch's `register_step_post_hook`).
    pub fn register_step_post_hook(
        &self,
        hook: impl Fn(&StepInfo) + Send + Sync + 'static,
    ) -> HookHandle {
        self.hooks.register(Hook::StepPost(Arc::new(hook)), false)
    }

    /// Registers `hook`, called with the optimizer before [`SparseAdamOptimizer::to_record`]
    /// builds the record (PyTorch's `register_state_dict_pre_hook`). `prepend` puts it
    /// first.
    pub fn register_to_record_pre_hook(
        &self,
        hook: impl Fn(&Self) + Send + Sync + 'static,
        prepend: bool,
    ) -> HookHandle {
        self.hooks
            .register(Hook::ToRecordPre(Arc::new(hook)), prepend)
    }

    /// Registers `hook`, which receives the record [`SparseAdamOptimizer::to_record`] built
    /// and returns the record to give out (PyTorch's `register_state_dict_post_hook`).
    pub fn register_to_record_post_hook(
        &self,
        hook: impl Fn(OptimizerRecord) -> OptimizerRecord + Send + Sync + 'static,
        prepend: bool,
    ) -> HookHandle {
        self.hooks
            .register(Hook::ToRecordPost(Arc::new(hook)), prepend)
    }

    /// Registers `hook`, which receives a record about to be loaded and returns the record
    /// to load (PyTorch's `register_load_state_dict_pre_hook`).
    pub fn register_load_record_pre_hook(
        &self,
        hook: impl Fn(OptimizerRecord) -> OptimizerRecord + Send + Sync + 'static,
        prepend: bool,
    ) -> HookHandle {
        self.hooks
            .register(Hook::LoadRecordPre(Arc::new(hook)), prepend)
    }

    /// Registers `hook`, called with the optimizer after a record was loaded (PyTorch's
    /// `register_load_state_dict_post_hook`).
    pub fn register_load_record_post_hook(
        &self,
        hook: impl Fn(&Self) + Send + Sync + 'static,
        prepend: bool,
    ) -> HookHandle {
        self.hooks
            .register(Hook::LoadRecordPost(Arc::new(hook)), prepend)
    }

    /// The optimizer's state as Burn 0.22's `OptimizerRecord` (burnpack), entry for entry
    /// what Burn's `ModuleOptimizer` over the [`SparseAdam`] rule writes, so either loads
    /// the other's record: per parameter, the scalars `"{id}.__rank"` and `"{id}.step"` and
    /// the tensors `"{id}.exp_avg"` and `"{id}.exp_avg_sq"`. Groups are not saved (as with
    /// `ModuleOptimizer`, they are configuration: add them again).
    ///
    /// # Errors
    ///
    /// [`Error::Record`] when the record cannot be written.
    pub fn to_record(&self) -> Result<OptimizerRecord> {
        self.hooks.to_record_pre(self);
        Ok(self.hooks.to_record_post(record::to_record(&self.states)?))
    }

    /// The optimizer's state as the bytes of a burnpack `OptimizerRecord` (through the
    /// record hooks, as [`SparseAdamOptimizer::to_record`]).
    ///
    /// # Errors
    ///
    /// [`Error::Record`] when the record cannot be written.
    pub fn into_bytes(&self) -> Result<Bytes> {
        self.to_record()?.into_bytes().map_err(record_error)
    }

    /// Saves the optimizer's state to a burnpack file, as `ModuleOptimizer::save` does.
    ///
    /// # Errors
    ///
    /// [`Error::Record`] when the record cannot be written.
    pub fn save(&self, path: impl AsRef<std::path::Path>) -> Result<()> {
        self.to_record()?.save(path).map_err(record_error)
    }

    /// Loads a record (PyTorch's `load_state_dict`) written by this optimizer or by Burn's
    /// `ModuleOptimizer` over the [`SparseAdam`] rule, or changes nothing. The states are
    /// checked against the model at the next step: a state of a parameter the model does not
    /// have, or of another shape, is an error there, before anything changes.
    ///
    /// # Errors
    ///
    /// [`Error::Record`] when the record cannot be read or holds something other than
    /// SparseAdam states.
    pub fn try_load_record(&mut self, record: OptimizerRecord) -> Result<()> {
        let record = self.hooks.load_record_pre(record);
        self.states = record::from_record(record, &Device::default())?;
        self.verify_record = true;
        self.hooks.load_record_post(self);
        Ok(())
    }

    /// Loads a record (see [`SparseAdamOptimizer::try_load_record`]).
    ///
    /// # Panics
    ///
    /// Where [`SparseAdamOptimizer::try_load_record`] returns an error, with its message.
    pub fn load_record(mut self, record: OptimizerRecord) -> Self {
        self.try_load_record(record)
            .unwrap_or_else(|err| panic!("{err}"));
        self
    }

    /// Loads a burnpack record file (see [`SparseAdamOptimizer::try_load_record`]).
    ///
    /// # Errors
    ///
    /// [`Error::Record`] when the file cannot be read or holds something other than
    /// SparseAdam states.
    pub fn load(mut self, path: impl AsRef<std::path::Path>) -> Result<Self> {
        self.try_load_record(OptimizerRecord::load(path).map_err(record_error)?)?;
        Ok(self)
    }

    /// Converts every saved state's moments to `dtype` (rounded to nearest when narrower):
    /// the explicit conversion that lets a record saved with one
    /// [`moment_dtype`](SparseAdamConfig::moment_dtype) continue under a config with
    /// another (a step otherwise rejects it with [`Error::StateMomentDtype`]). Step counts
    /// are kept. Every state is converted, whatever its parameter's group: groups whose
    /// configs store moments in different types cannot be converted one group at a time.
    ///
    /// # Example
    ///
    /// ```
    /// use burn_sparse_adam::{MomentDtype, SparseAdamConfig};
    ///
    /// // A record of f32 moments, continued with bf16 moments.
    /// let before = SparseAdamConfig::new().init_optimizer();
    /// let record = before.to_record().unwrap();
    /// let mut after = SparseAdamConfig::new()
    ///     .with_moment_dtype(Some(MomentDtype::Bf16))
    ///     .init_optimizer()
    ///     .load_record(record);
    /// after.convert_moments(MomentDtype::Bf16);
    /// ```
    pub fn convert_moments(&mut self, dtype: MomentDtype) {
        let states = std::mem::take(&mut self.states);
        self.states = states
            .into_iter()
            .map(|(id, state)| (id, record::convert_moments(state, dtype)))
            .collect();
    }

    /// Burn's `ModuleOptimizer` over the same rule, with this optimizer's states: how a
    /// manual loop hands over to burn-train's `Learner`. Groups are not carried over: add
    /// them with `ModuleOptimizer::with_group(group, config.build(), None)`.
    ///
    /// # Errors
    ///
    /// [`Error::Record`] when the states cannot be written or read back.
    pub fn to_module_optimizer(&self) -> Result<ModuleOptimizer> {
        let optim: ModuleOptimizer = self.base.clone().into();
        Ok(optim.load_record(record::to_record(&self.states)?))
    }

    /// One optimizer step, or an error that leaves everything unchanged and hands the model
    /// and the gradients back (in [`Rejected`]), so that nothing is lost.
    ///
    /// `lr` is a learning rate (`f64`) or Burn's `ModuleLearningRate` (per-group learning
    /// rates from a `ModuleLrScheduler`), as for `ModuleOptimizer::step`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidLearningRate`], [`Error::LearningRateOutOfRange`],
    /// [`Error::StepSizeOverflow`], [`Error::InGroup`] (one of these for a group's
    /// hyperparameters), [`Error::GradientShape`], [`Error::IndexOutOfRange`] (a row
    /// gradient beyond its table), [`Error::StateShape`] and [`Error::StateRank`] (a state
    /// that does not fit its parameter), [`Error::RecordParamNotInModel`] (a loaded
    /// record's state of a parameter the model does not have), [`Error::NonFiniteGradient`],
    /// [`Error::RowGradientsNotCollected`].
    pub fn try_step<M: Module>(
        &mut self,
        lr: impl Into<ModuleLearningRate>,
        module: M,
        grads: GradientsParams,
    ) -> core::result::Result<M, Rejected<M, GradientsParams>> {
        self.step_checked(lr.into(), module, Grads::Single(grads))
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
        lr: impl Into<ModuleLearningRate>,
        module: M,
        grads: MultiGradientsParams,
    ) -> core::result::Result<M, Rejected<M, MultiGradientsParams>> {
        self.step_checked(lr.into(), module, Grads::Multi(grads))
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
    pub fn step<M: Module>(
        &mut self,
        lr: impl Into<ModuleLearningRate>,
        module: M,
        grads: GradientsParams,
    ) -> M {
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
        lr: impl Into<ModuleLearningRate>,
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
        lr: ModuleLearningRate,
        module: M,
        mut grads: Grads,
    ) -> core::result::Result<M, (Error, M, Grads)> {
        let base_lr = lr.base();
        if let Err(err) = sparse_adam_core::validate_lr(base_lr) {
            return Err((err.into(), module, grads));
        }
        let gather_info = self.hooks.has_step_hooks();
        let mut planner = Planner {
            grads: &grads,
            base: &self.base,
            groups: &self.groups,
            states: &self.states,
            lr: &lr,
            verify_all_states: self.verify_record,
            count_rows: gather_info,
            path: Vec::new(),
            plans: HashMap::new(),
            order: Vec::new(),
            seen: HashSet::new(),
            error: None,
        };
        module.visit(&mut planner);
        let plan = match planner.finish() {
            Err(err) => return Err((err, module, grads)),
            Ok(plan) => plan,
        };
        self.verify_record = false;
        let states = &self.states;
        let info =
            gather_info.then(|| plan.info(base_lr, |id| states.get(&id).map_or(0, state_step)));
        if let Some(info) = &info {
            self.hooks.step_pre(info);
        }
        let mut stepper = Stepper {
            base: &self.base,
            groups: &self.groups,
            plans: plan.plans,
            states: &mut self.states,
            grads: &mut grads,
            kernels: HashMap::new(),
        };
        let module = module.map(&mut stepper);
        let kernels = stepper.kernels;
        if let Some(mut info) = info {
            for param in &mut info.params {
                param.step = self.states.get(&param.param).map_or(0, state_step);
                param.kernel = kernels.get(&param.param).copied();
            }
            self.hooks.step_post(&info);
        }
        Ok(module)
    }
}

fn record_error(err: burn::store::RecordError) -> Error {
    Error::Record {
        detail: err.to_string(),
    }
}
