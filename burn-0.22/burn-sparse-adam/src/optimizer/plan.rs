//! The first pass of a [`SparseAdamOptimizer`](crate::SparseAdamOptimizer) step: it checks
//! everything and plans each parameter, changing nothing.
//!
//! It checks the learning rates and step sizes, the moments' type (config, device, saved
//! state), every gradient's shape, every row
//! gradient's rows and width, every saved state's rank and shape (all of them, once a
//! record was loaded), and (when the config asks) whether gradients are finite.

use std::collections::{HashMap, HashSet};

use burn::module::{ModuleVisitor, Param, ParamId};
use burn::optim::lr_scheduler::module_lr_scheduler::ModuleLearningRate;
use burn::optim::{DynState, GradientsParams, LearningRate, MultiGradientsParams};
use burn::tensor::{Device, Shape, Tensor};

use crate::config::NonFinite;
use crate::embedding::row_grads::{RowGrad, marker_shape, scope};
use crate::error::{Error, Result};
use crate::kernels;
use crate::optimizer::groups::Groups;
use crate::optimizer::hooks::{ParamStep, StepInfo, StepPath};
use crate::optimizer::rule::SparseAdam;
use crate::state::SparseAdamState;

/// Single- or multi-device gradients.
pub(crate) enum Grads {
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
    pub(crate) fn remove<const D: usize>(&mut self, id: ParamId) -> Option<(Tensor<D>, Device)> {
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
pub(crate) enum Update {
    Dense,
    Rows(Box<RowGrad>),
    Skip,
}

/// The plan of one parameter's step.
pub(crate) struct ParamPlan {
    /// Its group, if any.
    pub(crate) group: Option<usize>,
    /// Its learning rate.
    pub(crate) lr: LearningRate,
    pub(crate) update: Update,
    /// Its module path.
    pub(crate) path: String,
    /// Rows the step touches (counted only when step hooks want it).
    pub(crate) touched_rows: usize,
}

/// The plans of a step, in the model's order.
pub(crate) struct StepPlan {
    pub(crate) plans: HashMap<ParamId, ParamPlan>,
    pub(crate) order: Vec<ParamId>,
}

impl StepPlan {
    /// What step hooks see.
    pub(crate) fn info(&self, lr: LearningRate, steps: impl Fn(ParamId) -> usize) -> StepInfo {
        StepInfo {
            lr,
            params: self
                .order
                .iter()
                .map(|&id| {
                    let plan = &self.plans[&id];
                    ParamStep {
                        param: id,
                        module_path: plan.path.clone(),
                        group: plan.group,
                        lr: plan.lr,
                        step: steps(id),
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
        }
    }
}

/// The step count of a state.
pub(crate) fn state_step(state: &DynState) -> usize {
    with_state_ref(state, |step, _| step)
}

/// Calls `f` with a state's step and shape, whatever its rank.
fn with_state_ref<T>(state: &DynState, f: impl FnOnce(usize, Vec<usize>) -> T) -> T {
    macro_rules! arm {
        ($($d:literal)*) => {
            match state.rank() {
                $($d => {
                    let s = state.downcast_ref::<SparseAdamState<$d>>();
                    f(s.step, s.shape())
                })*
                rank => unreachable!("states have ranks 0 to 8, not {rank}"),
            }
        };
    }
    arm!(0 1 2 3 4 5 6 7 8)
}

/// The first pass of a step.
pub(crate) struct Planner<'a> {
    pub(crate) grads: &'a Grads,
    pub(crate) base: &'a SparseAdam,
    pub(crate) groups: &'a Groups,
    pub(crate) states: &'a HashMap<ParamId, DynState>,
    pub(crate) lr: &'a ModuleLearningRate,
    /// Check every state against the model (after a record was loaded).
    pub(crate) verify_all_states: bool,
    /// Count the touched rows of dense gradients (a read-back each) for step hooks.
    pub(crate) count_rows: bool,
    pub(crate) path: Vec<String>,
    pub(crate) plans: HashMap<ParamId, ParamPlan>,
    pub(crate) order: Vec<ParamId>,
    pub(crate) seen: HashSet<ParamId>,
    pub(crate) error: Option<Error>,
}

impl Planner<'_> {
    pub(crate) fn finish(self) -> Result<StepPlan> {
        if let Some(err) = self.error {
            return Err(err);
        }
        if self.verify_all_states {
            let mut stray: Vec<&ParamId> = self
                .states
                .keys()
                .filter(|p| !self.seen.contains(p))
                .collect();
            stray.sort_by_key(|id| id.val());
            if let Some(&&param) = stray.first() {
                return Err(Error::RecordParamNotInModel { param });
            }
        }
        Ok(StepPlan {
            plans: self.plans,
            order: self.order,
        })
    }

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

    fn plan<const D: usize>(&self, id: ParamId, param: &Tensor<D>) -> Result<Option<ParamPlan>> {
        let shape = param.shape();
        let tape = scope::tape(id);
        let grads = self.grads.peek::<D>(id);
        if self.verify_all_states {
            self.check_state::<D>(id, &shape)?;
        }
        let Some(first) = grads.first() else {
            return match tape {
                Some(tape) if tape.has_pending() && tape.peek_collected().is_empty() => {
                    Err(Error::RowGradientsNotCollected { param: id })
                }
                _ => Ok(None),
            };
        };
        let rows_kind =
            first.shape() != shape && tape.is_some() && first.shape() == marker_shape(&shape);
        if first.shape() != shape && !rows_kind {
            return Err(Error::GradientShape {
                param: id,
                expected: shape.to_vec(),
                found: first.shape().to_vec(),
            });
        }
        let step = self.check_state::<D>(id, &shape)? + 1;

        let path = self.path.join(".");
        let group = self.groups.of(&id, &path);
        let rule = self.groups.rule(group, self.base);
        let lr = self.lr.lr_from_param(id, Some(&path));
        // The step's scalars, checked here so that a learning rate or step size that `f32`
        // cannot hold is an error before anything changes (the update computes them again).
        let state = self
            .states
            .get(&id)
            .map(|state| state.downcast_ref::<SparseAdamState<D>>());
        rule.scalars(lr, step)
            .and_then(|_| {
                let devices: Vec<Device> = grads.iter().map(Tensor::device).collect();
                rule.check_moments(param, &devices, state)
            })
            .map_err(|err| match group {
                Some(g) => Error::InGroup {
                    group: format!("#{g}"),
                    source: Box::new(err),
                },
                None => err,
            })?;

        let non_finite = rule.config().non_finite;
        let (update, finite, touched_rows) = match tape.filter(|_| rows_kind) {
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
                // Unplanned lookups are counted (planned on the host) only for step hooks.
                let touched = match (rows.known_len(), self.count_rows) {
                    (Some(len), _) => len,
                    (None, true) => rows.rows().len(),
                    (None, false) => 0,
                };
                (Update::Rows(Box::new(rows)), finite, touched)
            }
            None => {
                let finite = match non_finite {
                    NonFinite::Propagate => true,
                    _ => grads.iter().all(kernels::all_finite),
                };
                let touched = if self.count_rows {
                    kernels::count_touched_rows(&grads)
                } else {
                    0
                };
                (Update::Dense, finite, touched)
            }
        };
        let (update, touched_rows) = match (finite, non_finite) {
            (true, _) | (false, NonFinite::Propagate) => (update, touched_rows),
            (false, NonFinite::Skip) => (Update::Skip, 0),
            (false, NonFinite::Error) => return Err(Error::NonFiniteGradient { param: id }),
        };
        Ok(Some(ParamPlan {
            group,
            lr,
            update,
            path,
            touched_rows,
        }))
    }
}

impl ModuleVisitor for Planner<'_> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
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
