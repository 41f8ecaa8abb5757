//! The second pass of a [`SparseAdamOptimizer`](crate::SparseAdamOptimizer) step: applies
//! the plan, parameter by parameter, through the rule.

use std::collections::HashMap;

use burn::module::{ModuleMapper, Param, ParamId};
use burn::optim::DynState;
use burn::tensor::{Device, GradientCheckpointingStrategy, Tensor};

use crate::embedding::row_grads::scope;
use crate::kernels::{self, Kernel};
use crate::optimizer::groups::Groups;
use crate::optimizer::plan::{Grads, ParamPlan, Update};
use crate::optimizer::rule::{SparseAdam, reshape_state};
use crate::state::SparseAdamState;

/// The second pass of a step.
pub(crate) struct Stepper<'a> {
    pub(crate) base: &'a SparseAdam,
    pub(crate) groups: &'a Groups,
    pub(crate) plans: HashMap<ParamId, ParamPlan>,
    pub(crate) states: &'a mut HashMap<ParamId, DynState>,
    pub(crate) grads: &'a mut Grads,
    /// The path each row update took.
    pub(crate) kernels: HashMap<ParamId, Kernel>,
}

impl Stepper<'_> {
    fn step<const D: usize>(
        &mut self,
        id: ParamId,
        plan: ParamPlan,
        param: Tensor<D>,
        grad: Tensor<D>,
        device: &Device,
    ) -> Tensor<D> {
        let rule = self.groups.rule(plan.group, self.base);
        let rows = match plan.update {
            Update::Skip => return param,
            Update::Dense => None,
            Update::Rows(rows) => Some(*rows),
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
                let (param, state, kernel) = rule.step_rows_reporting(
                    plan.lr,
                    kernels::to_rank(param, [n, d]),
                    &rows,
                    state,
                );
                if let Some(kernel) = kernel {
                    self.kernels.insert(id, kernel);
                }
                (
                    kernels::to_rank(param, shape.clone()),
                    reshape_state(state, shape),
                )
            }
            None => {
                let (param, state, kernel) = rule.step_dense_reporting(plan.lr, param, grad, state);
                self.kernels.insert(id, kernel);
                (param, state)
            }
        };
        self.states.insert(id, DynState::create(state, D));
        param
    }
}

impl ModuleMapper for Stepper<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (id, tensor, mapper) = param.consume();
        let Some(plan) = self.plans.remove(&id) else {
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
        let stepped = self.step(id, plan, tensor.inner(), grad, &device);
        Param::from_mapped_value(id, context.restore(stepped, id), mapper)
    }
}

/// The autodiff state a parameter carries, taken before the update runs on its values and
/// put back on the result (what burn-optim's crate-private `ParameterContext` does for
/// `ModuleOptimizer`): autodiff, the gradient-checkpointing strategy, whether it requires
/// its gradient and whether it is distributed.
struct Context {
    autodiff: bool,
    strategy: Option<GradientCheckpointingStrategy>,
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
