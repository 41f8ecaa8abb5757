//! The optimizer layer: [`SparseAdamOptimizer`], SparseAdam for a whole model, as a Burn
//! `Optimizer`.
//!
//! - this module: the public surface (steps, groups, hooks, records);
//! - `rule`: [`SparseAdam`](rule::SparseAdam), the per-parameter rule on its dense and row
//!   paths (a Burn `SimpleOptimizer`);
//! - `plan`: the first pass of a step, which validates and changes nothing;
//! - `apply`: the second pass, which applies the plan;
//! - `groups`, `hooks`, `record`: parameter groups, PyTorch's hooks, the saved state.
//!
//! It walks the model like Burn's `OptimizerAdaptor` and gives each parameter that has a
//! gradient one [`SparseAdam`] step: the row path for a
//! [`SparseEmbedding`](crate::SparseEmbedding) whose row gradients were collected by
//! [`collect_grads`](crate::collect_grads), the dense path for every other gradient. On top
//! of Burn's optimizer surface it has PyTorch's: parameter groups, step hooks and record
//! hooks.
//!
//! A step runs in two passes. The first *plans* it and changes nothing: it checks the
//! learning rates, every gradient's shape, every row gradient's rows and width, every saved
//! state's rank and shape, the groups, a freshly loaded record against the model, and (when
//! the config asks) whether gradients are finite. Any problem is an [`Error`] and leaves the
//! model, the states and the collected row gradients as they were. The second pass applies
//! the plan.

use std::marker::PhantomData;

use burn::module::{AutodiffModule, ParamId};
use burn::optim::adaptor::GradAdaptor;
use burn::optim::{GradientsParams, LearningRate, MultiGradientsParams, Optimizer};
use burn::tensor::backend::AutodiffBackend;
use hashbrown::HashMap;

use crate::config::SparseAdamConfig;
use crate::error::{Error, Rejected, Result};
use crate::state::SparseAdamState;
use apply::Stepper;
use groups::{ParamGroup, ParamGroups};
use hooks::{Hook, HookHandle, Hooks, StepInfo};
use plan::Planner;
use record::{state_step, ParamStates, SparseAdamRecord};
use rule::validate_lr;

mod apply;
pub mod groups;
pub mod hooks;
mod plan;
pub mod record;
pub mod rule;

/// SparseAdam over a whole model: built by
/// [`SparseAdamConfig::init`](crate::SparseAdamConfig::init), used like any Burn
/// `Optimizer` (a manual loop or burn-train's `Learner`).
///
/// # Example
///
/// ```
/// use burn::backend::{Autodiff, NdArray};
/// use burn::nn::{Linear, LinearConfig};
/// use burn::optim::{GradientsParams, Optimizer};
/// use burn::tensor::Tensor;
/// use burn_sparse_adam::SparseAdamConfig;
///
/// type B = Autodiff<NdArray>;
/// let device = Default::default();
/// let model: Linear<B> = LinearConfig::new(4, 2).init(&device);
/// let mut optim = SparseAdamConfig::new().init();
///
/// let loss = model.forward(Tensor::<B, 2>::ones([3, 4], &device)).sum();
/// let grads = GradientsParams::from_grads(loss.backward(), &model);
/// let model = optim.try_step(1e-3, model, grads).expect("a valid step");
///
/// // A learning rate PyTorch rejects is an error here, and nothing changes.
/// let loss = model.forward(Tensor::<B, 2>::ones([3, 4], &device)).sum();
/// let grads = GradientsParams::from_grads(loss.backward(), &model);
/// let err = optim.try_step(-1.0, model, grads).unwrap_err();
/// assert_eq!(
///     err.to_string(),
///     "invalid learning rate: -1 (the step's learning rate must be finite and > 0)"
/// );
/// ```
pub struct SparseAdamOptimizer<M, B: AutodiffBackend> {
    config: SparseAdamConfig,
    groups: ParamGroups,
    states: ParamStates<B>,
    hooks: Hooks<Self, SparseAdamRecord<B>>,
    /// A record was loaded and has not yet been checked against a model.
    verify_record: bool,
    module: PhantomData<fn() -> M>,
}

impl<M, B: AutodiffBackend> Clone for SparseAdamOptimizer<M, B> {
    fn clone(&self) -> Self {
        Self {
            config: self.config.clone(),
            groups: self.groups.clone(),
            states: self.states.clone(),
            hooks: self.hooks.clone(),
            verify_record: self.verify_record,
            module: PhantomData,
        }
    }
}

impl<M: AutodiffModule<B> + 'static, B: AutodiffBackend> SparseAdamOptimizer<M, B> {
    /// The optimizer of a validated config.
    pub(crate) fn new(config: SparseAdamConfig) -> Self {
        Self {
            config,
            groups: ParamGroups::default(),
            states: HashMap::new(),
            hooks: Hooks::default(),
            verify_record: false,
            module: PhantomData,
        }
    }

    /// The hyperparameters of parameters in no group.
    pub fn config(&self) -> &SparseAdamConfig {
        &self.config
    }

    /// The parameter groups, in the order they were added.
    pub fn param_groups(&self) -> &[ParamGroup] {
        self.groups.as_slice()
    }

    /// Adds a parameter group (PyTorch's `add_param_group`); allowed at any time, also
    /// during training. The state of parameters that already stepped is kept.
    ///
    /// # Errors
    ///
    /// [`Error::ParamInTwoGroups`] naming the parameter and both groups,
    /// [`Error::DuplicateGroupName`], or [`Error::InGroup`] for an invalid hyperparameter.
    /// Nothing changes on error.
    pub fn add_param_group(&mut self, group: ParamGroup) -> Result<()> {
        self.groups.add(group, &self.config)
    }

    /// The state of parameter `id`, if it has taken a step.
    ///
    /// # Panics
    ///
    /// When `D` is not the parameter's rank.
    pub fn state<const D: usize>(
        &self,
        id: ParamId,
    ) -> Option<SparseAdamState<B::InnerBackend, D>> {
        self.states
            .get(&id)
            .map(|record| record.clone().into_state())
    }

    /// Registers `hook`, called before each step with the step's [`StepInfo`] (PyTorch's
    /// `register_step_pre_hook`).
    pub fn register_step_pre_hook(
        &self,
        hook: impl Fn(&StepInfo) + Send + Sync + 'static,
    ) -> HookHandle {
        self.hooks
            .register(Hook::StepPre(std::sync::Arc::new(hook)), false)
    }

    /// Registers `hook`, called after each step (PyTorch's `register_step_post_hook`).
    pub fn register_step_post_hook(
        &self,
        hook: impl Fn(&StepInfo) + Send + Sync + 'static,
    ) -> HookHandle {
        self.hooks
            .register(Hook::StepPost(std::sync::Arc::new(hook)), false)
    }

    /// Registers `hook`, called with the optimizer before [`Optimizer::to_record`] builds
    /// the record (PyTorch's `register_state_dict_pre_hook`). `prepend` puts it first.
    pub fn register_to_record_pre_hook(
        &self,
        hook: impl Fn(&Self) + Send + Sync + 'static,
        prepend: bool,
    ) -> HookHandle {
        self.hooks
            .register(Hook::ToRecordPre(std::sync::Arc::new(hook)), prepend)
    }

    /// Registers `hook`, which receives the record [`Optimizer::to_record`] built and returns
    /// the record to give out, possibly transformed (PyTorch's
    /// `register_state_dict_post_hook`). `prepend` puts it first.
    pub fn register_to_record_post_hook(
        &self,
        hook: impl Fn(SparseAdamRecord<B>) -> SparseAdamRecord<B> + Send + Sync + 'static,
        prepend: bool,
    ) -> HookHandle {
        self.hooks
            .register(Hook::ToRecordPost(std::sync::Arc::new(hook)), prepend)
    }

    /// Registers `hook`, which receives a record about to be loaded and returns the record
    /// to load, possibly transformed (PyTorch's `register_load_state_dict_pre_hook`).
    /// `prepend` puts it first.
    pub fn register_load_record_pre_hook(
        &self,
        hook: impl Fn(SparseAdamRecord<B>) -> SparseAdamRecord<B> + Send + Sync + 'static,
        prepend: bool,
    ) -> HookHandle {
        self.hooks
            .register(Hook::LoadRecordPre(std::sync::Arc::new(hook)), prepend)
    }

    /// Registers `hook`, called with the optimizer after a record was loaded (PyTorch's
    /// `register_load_state_dict_post_hook`). `prepend` puts it first.
    pub fn register_load_record_post_hook(
        &self,
        hook: impl Fn(&Self) + Send + Sync + 'static,
        prepend: bool,
    ) -> HookHandle {
        self.hooks
            .register(Hook::LoadRecordPost(std::sync::Arc::new(hook)), prepend)
    }

    /// Loads a record (PyTorch's `load_state_dict`), or changes nothing.
    ///
    /// An optimizer without groups takes the record's groups; one with groups requires the
    /// record to have the same groups over the same parameters, and then takes their saved
    /// hyperparameters, as PyTorch does. The states are checked against the model at the
    /// next step (a record that does not fit the model is an error there). A record read
    /// back from its saved form has its large moments on huge pages already (see
    /// [`SparseAdamState`]); one taken in memory (`to_record`) keeps its tensors.
    ///
    /// # Errors
    ///
    /// [`Error::RecordGroupsMismatch`] naming the first difference, or an invalid group.
    pub fn try_load_record(&mut self, record: SparseAdamRecord<B>) -> Result<()> {
        let record = self.hooks.load_record_pre(record);
        if !self.groups.as_slice().is_empty() {
            self.groups
                .same_structure(&record.groups)
                .map_err(|detail| Error::RecordGroupsMismatch { detail })?;
        }
        self.groups = ParamGroups::from_groups(record.groups, &self.config)?;
        self.states = record.states;
        self.verify_record = true;
        self.hooks.load_record_post(self);
        Ok(())
    }

    /// One optimizer step, or an error that leaves everything unchanged and hands the model
    /// and the gradients back (in [`Rejected`]), so that nothing is lost.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidLearningRate`], [`Error::GradientShape`], [`Error::IndexOutOfRange`]
    /// (a row gradient beyond its table), [`Error::StateShape`] and [`Error::StateRank`] (a
    /// state that does not fit its parameter), [`Error::RecordParamNotInModel`],
    /// [`Error::GroupParamNotInModel`], [`Error::NonFiniteGradient`],
    /// [`Error::RowGradientsNotCollected`], [`Error::RowGradientsReducedAsDense`] (a table's
    /// gradient all-reduced by `GradientsParams::all_reduce`, which carries no rows).
    pub fn try_step(
        &mut self,
        lr: LearningRate,
        module: M,
        grads: GradientsParams,
    ) -> core::result::Result<M, Rejected<M, GradientsParams>> {
        self.step_checked(lr, module, grads.into())
            .map_err(|(error, module, grads)| match grads {
                GradAdaptor::Single(grads) => Rejected {
                    error,
                    module,
                    grads,
                },
                GradAdaptor::Multi(_) => unreachable!("given single-device gradients"),
            })
    }

    /// [`SparseAdamOptimizer::try_step`] for gradients from several devices: each
    /// parameter's gradients, row gradients included, are summed on the device Burn picks
    /// for that parameter.
    ///
    /// # Errors
    ///
    /// As [`SparseAdamOptimizer::try_step`].
    pub fn try_step_multi(
        &mut self,
        lr: LearningRate,
        module: M,
        grads: MultiGradientsParams,
    ) -> core::result::Result<M, Rejected<M, MultiGradientsParams>> {
        self.step_checked(lr, module, grads.into())
            .map_err(|(error, module, grads)| match grads {
                GradAdaptor::Multi(grads) => Rejected {
                    error,
                    module,
                    grads,
                },
                GradAdaptor::Single(_) => unreachable!("given multi-device gradients"),
            })
    }

    /// A step, or why not with everything given back.
    #[allow(clippy::result_large_err)]
    fn step_checked(
        &mut self,
        lr: LearningRate,
        module: M,
        mut grads: GradAdaptor,
    ) -> core::result::Result<M, (Error, M, GradAdaptor)> {
        if let Err(err) = validate_lr(lr) {
            return Err((err, module, grads));
        }
        let mut planner = Planner::<B>::new(
            &grads,
            &self.config,
            &self.groups,
            &self.states,
            lr,
            self.verify_record,
            self.hooks.has_step_hooks(),
        );
        module.visit(&mut planner);
        let plan = match planner.finish() {
            Ok(plan) => plan,
            Err(err) => return Err((err, module, grads)),
        };

        let info = plan.info(lr, &self.states);
        if let Some(info) = &info {
            self.hooks.step_pre(info);
        }
        let mut stepper = Stepper::<B>::new(plan.plans, &mut self.states, &mut grads);
        let module = module.map(&mut stepper);
        let kernels = stepper.kernels;
        self.verify_record = false;
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

impl<M: AutodiffModule<B> + 'static, B: AutodiffBackend> Optimizer<M, B>
    for SparseAdamOptimizer<M, B>
{
    type Record = SparseAdamRecord<B>;

    /// # Panics
    ///
    /// Where [`SparseAdamOptimizer::try_step`] returns an error, with its message, before
    /// changing anything.
    fn step(&mut self, lr: LearningRate, module: M, grads: GradientsParams) -> M {
        self.try_step(lr, module, grads)
            .unwrap_or_else(|rejected| panic!("{}", rejected.error))
    }

    /// # Panics
    ///
    /// As [`Optimizer::step`].
    fn step_multi(&mut self, lr: LearningRate, module: M, grads: MultiGradientsParams) -> M {
        self.try_step_multi(lr, module, grads)
            .unwrap_or_else(|rejected| panic!("{}", rejected.error))
    }

    fn to_record(&self) -> Self::Record {
        self.hooks.to_record_pre(self);
        let record = SparseAdamRecord {
            states: self.states.clone(),
            groups: self.groups.as_slice().to_vec(),
        };
        self.hooks.to_record_post(record)
    }

    /// # Panics
    ///
    /// Where [`SparseAdamOptimizer::try_load_record`] returns an error, with its message.
    fn load_record(mut self, record: Self::Record) -> Self {
        self.try_load_record(record)
            .unwrap_or_else(|err| panic!("{err}"));
        self
    }
}

impl SparseAdamConfig {
    /// Builds the optimizer for module `M` on backend `B`, after validation.
    ///
    /// The optimizer serves the whole model: the rows of every
    /// [`SparseEmbedding`](crate::SparseEmbedding) take the sparse path, every other
    /// parameter the dense one.
    ///
    /// # Errors
    ///
    /// As [`SparseAdamConfig::validate`].
    pub fn try_init<B: AutodiffBackend, M: AutodiffModule<B> + 'static>(
        &self,
    ) -> crate::Result<SparseAdamOptimizer<M, B>> {
        self.validate()?;
        Ok(SparseAdamOptimizer::new(self.clone()))
    }

    /// Builds the optimizer for module `M` on backend `B`.
    ///
    /// # Panics
    ///
    /// When the config is invalid, with the message of [`SparseAdamConfig::try_init`]'s error.
    pub fn init<B: AutodiffBackend, M: AutodiffModule<B> + 'static>(
        &self,
    ) -> SparseAdamOptimizer<M, B> {
        self.try_init().unwrap_or_else(|err| panic!("{err}"))
    }
}
