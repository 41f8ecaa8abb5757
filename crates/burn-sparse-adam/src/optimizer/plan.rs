//! The first pass of a step: it checks everything and plans each parameter's update, and
//! changes nothing.
//!
//! For each parameter with a gradient, in order: its gradients are read (one per device,
//! not taken); classified as dense or as a row gradient's marker; its saved state checked
//! against it; its group's hyperparameters and learning rate resolved and the step's
//! scalars checked in `f32`; the row gradients its markers announce gathered and checked
//! against the table; and, when the config asks, its gradient checked for NaN or ±inf. Any
//! problem is an [`Error`] for the whole step.

use std::collections::HashSet;

use burn::module::{ModuleVisitor, Param, ParamId};
use burn::optim::adaptor::GradAdaptor;
use burn::optim::LearningRate;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Shape, Tensor};
use hashbrown::HashMap;

use super::groups::{ParamGroup, ParamGroups};
use super::hooks::{ParamStep, StepInfo, StepPath};
use super::record::{state_shape, state_step, ParamStates};
use super::rule::SparseAdam;
use crate::config::{NonFinite, SparseAdamConfig};
use crate::embedding::row_grads::RowGrad;
use crate::embedding::tape::{is_marker, scope, ForeignMarker, RowGradTape};
use crate::error::{Error, Result};
use crate::formula::StepScalars;

/// What the step does to one parameter.
pub(super) enum Update<B: Backend> {
    /// The dense path, with the parameter's gradients.
    Dense,
    /// The row path, with the sum of the announced row gradients.
    Rows(RowGrad<B>),
    /// Nothing: the gradient held NaN or ±inf and the config says `Skip`.
    Skip,
}

/// The plan of one parameter's step.
pub(super) struct ParamPlan<B: Backend> {
    pub(super) rule: SparseAdam,
    pub(super) lr: LearningRate,
    pub(super) group: Option<String>,
    pub(super) update: Update<B>,
    pub(super) touched_rows: usize,
}

/// The plans of a step, in the model's order.
pub(super) struct StepPlan<B: Backend> {
    pub(super) plans: HashMap<ParamId, ParamPlan<B>>,
    order: Vec<ParamId>,
    gather_info: bool,
}

impl<B: Backend> StepPlan<B> {
    /// What step hooks see, if any hook is registered.
    pub(super) fn info<AB: AutodiffBackend>(
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
                        kernel: None,
                    }
                })
                .collect(),
        })
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

/// The planning pass, a visitor of the model.
pub(super) struct Planner<'a, B: AutodiffBackend> {
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

impl<'a, B: AutodiffBackend> Planner<'a, B> {
    /// A planner of a step at learning rate `lr`. `verify_all_states`: a record was loaded,
    /// so every saved state is checked against the model, with a gradient or not.
    /// `gather_info`: step hooks want [`StepInfo`], worth a read-back per dense gradient.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        grads: &'a GradAdaptor,
        config: &'a SparseAdamConfig,
        groups: &'a ParamGroups,
        states: &'a ParamStates<B>,
        lr: LearningRate,
        verify_all_states: bool,
        gather_info: bool,
    ) -> Self {
        Self {
            grads,
            config,
            groups,
            states,
            lr,
            verify_all_states,
            gather_info,
            plans: HashMap::new(),
            order: Vec::new(),
            seen: HashSet::new(),
            error: None,
        }
    }

    /// The plan, once the model has been visited, or the first problem found.
    pub(super) fn finish(self) -> Result<StepPlan<B::InnerBackend>> {
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

    /// The plan of one parameter, `None` when it takes no step.
    fn plan<const D: usize>(
        &self,
        id: ParamId,
        param: &Tensor<B, D>,
    ) -> Result<Option<ParamPlan<B::InnerBackend>>> {
        let shape = param.shape();
        let tape = scope::tape::<B>(id);
        if let Some(tape) = &tape {
            tape.knows_autodiff();
        }
        let grads = peek_grads::<B::InnerBackend, D>(self.grads, id);
        let Some(first) = grads.first() else {
            if self.verify_all_states {
                self.check_state::<D>(id, &shape)?;
            }
            return without_gradient(id, tape.as_ref()).map(|()| None);
        };
        let kind = classify(id, &shape, &first.shape(), tape.is_some())?;
        self.check_state::<D>(id, &shape)?;
        let group = self.groups.of(id);
        let (config, lr) = self.hyperparameters(id, group)?;

        let (update, finite, touched_rows) = match (kind, tape) {
            (GradKind::Rows, Some(tape)) => {
                let Some(rows) = self.announced_rows(id, &shape, &tape, &grads, &param.device())?
                else {
                    return Ok(None);
                };
                let finite = self.config.non_finite == NonFinite::Propagate
                    || rows.values().is_none_or(|v| all_finite(v.clone()));
                let touched = rows.rows().len();
                (Update::Rows(rows), finite, touched)
            }
            _ => {
                let finite = self.config.non_finite == NonFinite::Propagate
                    || grads.iter().all(|g| all_finite(g.clone()));
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

    /// A saved state of `id`, if any, fits a parameter of shape `shape` and rank `D`.
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

    /// The hyperparameters and learning rate of `id` (its group's, if any), after checking
    /// that this step's scalars are finite in `f32`: a step size that overflows is an error
    /// before anything changes (the update computes the scalars again).
    fn hyperparameters(
        &self,
        id: ParamId,
        group: Option<&ParamGroup>,
    ) -> Result<(SparseAdamConfig, LearningRate)> {
        let config = group.map_or_else(|| self.config.clone(), |g| g.config(self.config));
        let lr = group.map_or(self.lr, |g| g.lr().resolve(self.lr));
        let step = self.states.get(&id).map_or(0, state_step) + 1;
        match StepScalars::try_new(&config, lr, step) {
            Ok(_) => Ok((config, lr)),
            Err(err) => Err(match group {
                Some(g) => Error::InGroup {
                    group: g.name().to_string(),
                    source: Box::new(err.into()),
                },
                None => err.into(),
            }),
        }
    }

    /// The sum of the row gradients that the markers `markers` announce for the `[n, d]`
    /// table `id`, after checking each against the table; `None` when they announce none
    /// (the rows were cleared since they were collected).
    fn announced_rows<const D: usize>(
        &self,
        id: ParamId,
        shape: &Shape,
        tape: &RowGradTape<B>,
        markers: &[Tensor<B::InnerBackend, D>],
        device: &B::Device,
    ) -> Result<Option<RowGrad<B::InnerBackend>>> {
        let announced = tape
            .announced(markers)
            .map_err(|ForeignMarker| Error::RowGradientsReducedAsDense { param: id })?;
        if announced.is_empty() {
            return Ok(None);
        }
        let [n, d] = as_rows(shape);
        for rows in &announced {
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
        Ok(Some(RowGrad::sum(announced, device)))
    }
}

/// A parameter without a gradient takes no step; for a table, that is an error if this
/// thread's lookups of it went through autodiff without their row gradients being collected
/// (`GradientsParams::from_grads` used by mistake).
fn without_gradient<B: AutodiffBackend>(id: ParamId, tape: Option<&RowGradTape<B>>) -> Result<()> {
    let Some(tape) = tape else {
        return Ok(());
    };
    let not_collected = match tape.released_uncollected() {
        Some(lookups) => lookups > 0,
        // Where autodiff's liveness cannot be seen: lookups recorded and nothing collected.
        None => tape.has_pending() && tape.counts().1 == 0,
    };
    if not_collected {
        Err(Error::RowGradientsNotCollected { param: id })
    } else {
        Ok(())
    }
}

/// How the gradient of shape `grad` of a parameter of shape `param` arrived.
fn classify(id: ParamId, param: &Shape, grad: &Shape, has_tape: bool) -> Result<GradKind> {
    if grad == param {
        Ok(GradKind::Dense)
    } else if has_tape && is_marker(param, grad) {
        Ok(GradKind::Rows)
    } else {
        Err(Error::GradientShape {
            param: id,
            expected: param.to_vec(),
            found: grad.to_vec(),
        })
    }
}

/// `[n, d]`: a parameter seen as rows (dim 0) of flattened entries.
pub(super) fn as_rows(shape: &Shape) -> [usize; 2] {
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
