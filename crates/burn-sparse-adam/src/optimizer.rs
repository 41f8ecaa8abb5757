//! [`SparseAdamOptimizer`]: SparseAdam for a whole model, as a Burn `Optimizer`.
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

use std::collections::HashSet;
use std::marker::PhantomData;

use burn::module::{AutodiffModule, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::adaptor::GradAdaptor;
use burn::optim::record::{AdaptorRecord, AdaptorRecordV1};
use burn::optim::{GradientsParams, LearningRate, MultiGradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Device, ElementConversion, Shape, Tensor};
use hashbrown::HashMap;

use crate::config::{NonFinite, SparseAdamConfig};
use crate::error::{Error, Rejected, Result};
use crate::groups::{ParamGroup, ParamGroups};
use crate::hooks::{Hook, HookHandle, Hooks, ParamStep, StepInfo, StepPath};
use crate::record::{ParamStates, SparseAdamRecord};
use crate::row_grads::{marker_shape, scope, RowGrad};
use crate::sparse_adam::{validate_lr, SparseAdam};
use crate::state::SparseAdamState;
use crate::update::StepScalars;

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
    hooks: Hooks<M, B>,
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
    /// next step (a record that does not fit the model is an error there).
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
    /// [`Error::RowGradientsNotCollected`].
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
        let mut planner = Planner::<B> {
            grads: &grads,
            config: &self.config,
            groups: &self.groups,
            states: &self.states,
            lr,
            verify_all_states: self.verify_record,
            gather_info: self.hooks.has_step_hooks(),
            plans: HashMap::new(),
            order: Vec::new(),
            seen: HashSet::new(),
            error: None,
        };
        module.visit(&mut planner);
        let plan = match planner.finish() {
            Ok(plan) => plan,
            Err(err) => return Err((err, module, grads)),
        };

        let info = plan.info(lr, &self.states);
        if let Some(info) = &info {
            self.hooks.step_pre(info);
        }
        let mut stepper = Stepper::<B> {
            plans: plan.plans,
            states: &mut self.states,
            grads: &mut grads,
        };
        let module = module.map(&mut stepper);
        self.verify_record = false;
        if let Some(mut info) = info {
            for param in &mut info.params {
                param.step = self.states.get(&param.param).map_or(0, state_step);
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

/// How a parameter's gradient arrived.
#[derive(Clone, Copy, PartialEq, Eq)]
enum GradKind {
    /// A gradient shaped like the parameter.
    Dense,
    /// A marker: the rows wait on the table's tape.
    Rows,
}

/// Classifies the gradient of shape `grad` for a parameter of shape `param`.
fn grad_kind(param: &Shape, grad: &Shape, has_tape: bool) -> Option<GradKind> {
    if grad == param {
        Some(GradKind::Dense)
    } else if has_tape && *grad == marker_shape(param) {
        Some(GradKind::Rows)
    } else {
        None
    }
}

/// `[n, d]`: a parameter seen as rows (dim 0) of flattened entries.
fn as_rows(shape: &Shape) -> [usize; 2] {
    let n = shape.as_slice().first().copied().unwrap_or(1);
    [n, shape.num_elements() / n.max(1)]
}

/// Every gradient of `id` in `grads` (one per device), without taking them.
fn peek_grads<B: Backend, const D: usize>(grads: &GradAdaptor, id: ParamId) -> Vec<Tensor<B, D>> {
    match grads {
        GradAdaptor::Single(grads) => grads.get::<B, D>(id).into_iter().collect(),
        GradAdaptor::Multi(multi) => multi
            .grads
            .iter()
            .filter_map(|(grads, _)| grads.get::<B, D>(id))
            .collect(),
    }
}

/// Applies `f` to a saved state whatever its rank.
macro_rules! with_state {
    ($record:expr, |$s:ident| $body:expr) => {{
        let AdaptorRecord::V1(record) = $record;
        match record {
            AdaptorRecordV1::Rank0($s) => $body,
            AdaptorRecordV1::Rank1($s) => $body,
            AdaptorRecordV1::Rank2($s) => $body,
            AdaptorRecordV1::Rank3($s) => $body,
            AdaptorRecordV1::Rank4($s) => $body,
            AdaptorRecordV1::Rank5($s) => $body,
            AdaptorRecordV1::Rank6($s) => $body,
            AdaptorRecordV1::Rank7($s) => $body,
            AdaptorRecordV1::Rank8($s) => $body,
        }
    }};
}

fn state_step<B: AutodiffBackend>(record: &AdaptorRecord<SparseAdam, B>) -> usize {
    with_state!(record, |s| s.step)
}

fn state_shape<B: AutodiffBackend>(record: &AdaptorRecord<SparseAdam, B>) -> Vec<usize> {
    with_state!(record, |s| s.shape())
}

/// What the step does to one parameter.
enum Update<B: Backend> {
    Dense,
    Rows(RowGrad<B>),
    Skip,
}

/// The plan of one parameter's step.
struct ParamPlan<B: Backend> {
    rule: SparseAdam,
    lr: LearningRate,
    group: Option<String>,
    update: Update<B>,
    touched_rows: usize,
}

/// The plans of a step, in the model's order.
struct StepPlan<B: Backend> {
    plans: HashMap<ParamId, ParamPlan<B>>,
    order: Vec<ParamId>,
    gather_info: bool,
}

impl<B: Backend> StepPlan<B> {
    /// What step hooks see, if any hook is registered.
    fn info<AB: AutodiffBackend>(
        &self,
        lr: LearningRate,
        states: &ParamStates<AB>,
    ) -> Option<StepInfo> {
        self.gather_info.then(|| StepInfo {
            lr,
            params: self
                .order
                .iter()
                .map(|id| {
                    let plan = &self.plans[id];
                    ParamStep {
                        param: *id,
                        group: plan.group.clone(),
                        lr: plan.lr,
                        step: states.get(id).map_or(0, state_step),
                        touched_rows: plan.touched_rows,
                        path: match plan.update {
                            Update::Dense => StepPath::Dense,
                            Update::Rows(_) => StepPath::Rows,
                            Update::Skip => StepPath::SkippedNonFinite,
                        },
                    }
                })
                .collect(),
        })
    }
}

/// The first pass of a step: checks everything and plans each parameter, changing nothing.
struct Planner<'a, B: AutodiffBackend> {
    grads: &'a GradAdaptor,
    config: &'a SparseAdamConfig,
    groups: &'a ParamGroups,
    states: &'a ParamStates<B>,
    lr: LearningRate,
    verify_all_states: bool,
    gather_info: bool,
    plans: HashMap<ParamId, ParamPlan<B::InnerBackend>>,
    order: Vec<ParamId>,
    seen: HashSet<ParamId>,
    error: Option<Error>,
}

impl<B: AutodiffBackend> Planner<'_, B> {
    fn finish(self) -> Result<StepPlan<B::InnerBackend>> {
        if let Some(err) = self.error {
            return Err(err);
        }
        for group in self.groups.as_slice() {
            if let Some(&param) = group.params().iter().find(|p| !self.seen.contains(p)) {
                return Err(Error::GroupParamNotInModel {
                    group: group.name().to_string(),
                    param,
                });
            }
        }
        if self.verify_all_states {
            if let Some(&param) = self.states.keys().find(|p| !self.seen.contains(p)) {
                return Err(Error::RecordParamNotInModel { param });
            }
        }
        Ok(StepPlan {
            plans: self.plans,
            order: self.order,
            gather_info: self.gather_info,
        })
    }

    fn check_state<const D: usize>(&self, id: ParamId, shape: &Shape) -> Result<()> {
        let Some(record) = self.states.get(&id) else {
            return Ok(());
        };
        let found = state_shape(record);
        if found.len() != D {
            return Err(Error::StateRank {
                param: id,
                expected: D,
                found: found.len(),
            });
        }
        if found != shape.to_vec() {
            return Err(Error::StateShape {
                param: id,
                expected: shape.to_vec(),
                found,
            });
        }
        Ok(())
    }

    fn plan<const D: usize>(
        &self,
        id: ParamId,
        param: &Tensor<B, D>,
    ) -> Result<Option<ParamPlan<B::InnerBackend>>> {
        let shape = param.shape();
        let tape = scope::tape::<B>(id);
        let grads = peek_grads::<B::InnerBackend, D>(self.grads, id);
        if self.verify_all_states {
            self.check_state::<D>(id, &shape)?;
        }
        if let Some(tape) = &tape {
            tape.knows_autodiff();
        }
        let Some(first) = grads.first() else {
            let Some(tape) = tape else {
                return Ok(None);
            };
            return match tape.released_uncollected() {
                Some(0) => Ok(None),
                Some(_) => Err(Error::RowGradientsNotCollected { param: id }),
                // Where autodiff's liveness cannot be seen: lookups recorded and nothing
                // collected.
                None if tape.has_pending() && tape.peek_collected().is_empty() => {
                    Err(Error::RowGradientsNotCollected { param: id })
                }
                None => Ok(None),
            };
        };
        let kind = grad_kind(&shape, &first.shape(), tape.is_some()).ok_or_else(|| {
            Error::GradientShape {
                param: id,
                expected: shape.to_vec(),
                found: first.shape().to_vec(),
            }
        })?;
        self.check_state::<D>(id, &shape)?;

        let group = self.groups.of(id);
        let config = group.map_or_else(|| self.config.clone(), |g| g.config(self.config));
        let lr = group.map_or(self.lr, |g| g.lr().resolve(self.lr));
        // The step's scalars, checked here so that a step size that overflows `f32` is an
        // error before anything changes (the update computes them again).
        let step = self.states.get(&id).map_or(0, state_step) + 1;
        StepScalars::try_new(&config, lr, step)
            .map_err(Error::from)
            .map_err(|err| match group {
                Some(g) => Error::InGroup {
                    group: g.name().to_string(),
                    source: Box::new(err),
                },
                None => err,
            })?;

        let (update, finite, touched_rows) = match (kind, tape) {
            (GradKind::Rows, Some(tape)) => {
                let [n, d] = as_rows(&shape);
                let mut collected = tape.peek_collected();
                if collected.is_empty() {
                    // A marker whose rows were dropped (`clear_row_grads`) announces nothing:
                    // the table has no gradient, and takes no step.
                    return Ok(None);
                }
                if collected.len() > 1 {
                    // The markers count the backward passes these gradients cover; older row
                    // gradients belong to gradients that were dropped without a step.
                    let passes: usize = grads.iter().map(|m| marker_passes(m.clone())).sum();
                    collected.drain(..collected.len().saturating_sub(passes));
                }
                let inner: Vec<RowGrad<B::InnerBackend>> = collected
                    .into_iter()
                    .map(|rows| rows.map_values(Tensor::inner))
                    .collect();
                for rows in &inner {
                    if let Some(width) = rows.width().filter(|&w| w != d) {
                        return Err(Error::GradientShape {
                            param: id,
                            expected: shape.to_vec(),
                            found: vec![rows.rows().len(), width],
                        });
                    }
                    if let Some(&row) = rows.rows().last().filter(|&&r| r as usize >= n) {
                        return Err(Error::IndexOutOfRange {
                            index: row,
                            n_embedding: n,
                        });
                    }
                }
                let rows = RowGrad::sum(inner, &param.device());
                let finite = match self.config.non_finite {
                    NonFinite::Propagate => true,
                    _ => rows.values().is_none_or(|v| all_finite(v.clone())),
                };
                let touched = rows.rows().len();
                (Update::Rows(rows), finite, touched)
            }
            _ => {
                let finite = match self.config.non_finite {
                    NonFinite::Propagate => true,
                    _ => grads.iter().all(|g| all_finite(g.clone())),
                };
                let touched = if self.gather_info {
                    count_touched_rows(grads)
                } else {
                    0
                };
                (Update::Dense, finite, touched)
            }
        };
        let (update, touched_rows) = match (finite, self.config.non_finite) {
            (true, _) | (false, NonFinite::Propagate) => (update, touched_rows),
            (false, NonFinite::Skip) => (Update::Skip, 0),
            (false, NonFinite::Error) => return Err(Error::NonFiniteGradient { param: id }),
        };
        Ok(Some(ParamPlan {
            rule: SparseAdam::new_unchecked(config),
            lr,
            group: group.map(|g| g.name().to_string()),
            update,
            touched_rows,
        }))
    }
}

/// How many backward passes a marker covers: each `collect_grads` writes ones, and
/// accumulating or merging gradients adds them up (one value read back).
fn marker_passes<B: Backend, const D: usize>(marker: Tensor<B, D>) -> usize {
    let n = marker.shape().num_elements();
    let first = marker.reshape([n]).slice(0..1).into_scalar().elem::<f32>();
    first.round().max(0.0) as usize
}

/// Whether every value is finite: one reduction on the device, one value read back.
fn all_finite<B: Backend, const D: usize>(t: Tensor<B, D>) -> bool {
    t.is_finite().all().into_scalar().elem::<bool>()
}

/// How many rows of the summed dense gradient have a non-zero entry (one value read back).
fn count_touched_rows<B: Backend, const D: usize>(grads: Vec<Tensor<B, D>>) -> usize {
    let Some(first) = grads.first() else { return 0 };
    let device = first.device();
    let sum = grads
        .into_iter()
        .map(|g| g.to_device(&device))
        .reduce(|a, b| a + b)
        .expect("at least one gradient");
    let [n, d] = as_rows(&sum.shape());
    sum.reshape([n, d])
        .not_equal_elem(0.0)
        .any_dim(1)
        .int()
        .sum()
        .into_scalar()
        .elem::<i64>() as usize
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Planner<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.seen.insert(param.id);
        if self.error.is_some() {
            return;
        }
        match self.plan(param.id, &param.val()) {
            Ok(Some(plan)) => {
                self.order.push(param.id);
                self.plans.insert(param.id, plan);
            }
            Ok(None) => {}
            Err(err) => self.error = Some(err),
        }
    }
}

/// The second pass of a step: applies the plan, parameter by parameter.
struct Stepper<'a, B: AutodiffBackend> {
    plans: HashMap<ParamId, ParamPlan<B::InnerBackend>>,
    states: &'a mut ParamStates<B>,
    grads: &'a mut GradAdaptor,
}

impl<B: AutodiffBackend> Stepper<'_, B> {
    fn step<const D: usize>(
        &mut self,
        id: ParamId,
        plan: ParamPlan<B::InnerBackend>,
        param: Tensor<B::InnerBackend, D>,
        grad: Tensor<B::InnerBackend, D>,
        device: &Device<B::InnerBackend>,
    ) -> Tensor<B::InnerBackend, D> {
        let ParamPlan {
            rule, lr, update, ..
        } = plan;
        let rows = match update {
            Update::Skip => return param,
            Update::Dense => None,
            Update::Rows(rows) => Some(rows),
        };
        let state = self
            .states
            .remove(&id)
            .map(|record| record.into_state::<D>().to_device(device));
        let (param, state) = match rows {
            Some(rows) => {
                let shape = param.shape();
                let [n, d] = as_rows(&shape);
                let rows = rows.to_device(device);
                let state = state.map(|s| reshape_state(s, Shape::new([n, d])));
                let (param, state) = rule.step_rows(lr, to_rank(param, [n, d]), &rows, state);
                (to_rank(param, shape.clone()), reshape_state(state, shape))
            }
            None => rule.step_dense(lr, param, grad, state),
        };
        self.states.insert(id, AdaptorRecord::from_state(state));
        param
    }
}

/// `tensor` seen with rank `D2` and shape `shape` (of as many elements). A row gradient's
/// table is already `[n, d]`: then only the type changes, since a reshape can copy the whole
/// table (burn-ndarray's does), which would cost the step its independence of the table size.
pub(crate) fn to_rank<B: Backend, const D: usize, const D2: usize>(
    tensor: Tensor<B, D>,
    shape: impl Into<Shape>,
) -> Tensor<B, D2> {
    let shape = shape.into();
    if D == D2 && tensor.shape() == shape {
        Tensor::from_primitive(tensor.into_primitive())
    } else {
        tensor.reshape(shape)
    }
}

fn reshape_state<B: Backend, const D: usize, const D2: usize>(
    state: SparseAdamState<B, D>,
    shape: Shape,
) -> SparseAdamState<B, D2> {
    SparseAdamState {
        step: state.step,
        exp_avg: to_rank(state.exp_avg, shape.clone()),
        exp_avg_sq: to_rank(state.exp_avg_sq, shape),
    }
}

impl<B: AutodiffBackend> ModuleMapper<B> for Stepper<'_, B> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        let Some(plan) = self.plans.remove(&id) else {
            return Param::from_mapped_value(id, tensor, mapper);
        };
        let (grad, device) = self
            .grads
            .remove::<B::InnerBackend, D>(id)
            .expect("the plan only covers parameters with a gradient");
        if let Some(tape) = scope::tape::<B>(id) {
            // The rows of these gradients are in the plan, summed; older ones are stale. The
            // step consumes them all.
            drop(tape.take_collected());
        }
        let is_require_grad = tensor.is_require_grad();
        // As Burn's adaptor does: the parameter follows its gradient's device (multi-device
        // training picks one device per parameter).
        let tensor = if tensor.device() != device {
            tensor.to_device(&device)
        } else {
            tensor
        };
        let stepped = self.step(id, plan, tensor.inner(), grad, &device);
        let mut tensor = Tensor::from_inner(stepped);
        if is_require_grad {
            tensor = tensor.require_grad();
        }
        Param::from_mapped_value(id, tensor, mapper)
    }
}
