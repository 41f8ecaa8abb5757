//! The second pass of a step: applies the plan, parameter by parameter, and records which
//! kernel each update ran on.

use burn::module::{ModuleMapper, Param, ParamId};
use burn::optim::adaptor::GradAdaptor;
use burn::optim::record::AdaptorRecord;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Device, Shape, Tensor};
use hashbrown::HashMap;

use super::plan::{as_rows, ParamPlan, Update};
use super::record::ParamStates;
use crate::embedding::tape::scope;
use crate::kernels::{to_rank, KernelPath};
use crate::state::SparseAdamState;

/// The applying pass, a mapper of the model.
pub(super) struct Stepper<'a, B: AutodiffBackend> {
    plans: HashMap<ParamId, ParamPlan<B::InnerBackend>>,
    states: &'a mut ParamStates<B>,
    grads: &'a mut GradAdaptor,
    /// The kernel each parameter's update ran on.
    pub(super) kernels: HashMap<ParamId, KernelPath>,
}

impl<'a, B: AutodiffBackend> Stepper<'a, B> {
    pub(super) fn new(
        plans: HashMap<ParamId, ParamPlan<B::InnerBackend>>,
        states: &'a mut ParamStates<B>,
        grads: &'a mut GradAdaptor,
    ) -> Self {
        Self {
            plans,
            states,
            grads,
            kernels: HashMap::new(),
        }
    }

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
                let (param, state, kernel) =
                    rule.step_rows_on_path(lr, to_rank(param, [n, d]), &rows, state);
                if let Some(kernel) = kernel {
                    self.kernels.insert(id, kernel);
                }
                (to_rank(param, shape.clone()), reshape_state(state, shape))
            }
            None => {
                let (param, state, kernel) = rule.step_dense_on_path(lr, param, grad, state);
                self.kernels.insert(id, kernel);
                (param, state)
            }
        };
        self.states.insert(id, AdaptorRecord::from_state(state));
        param
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
            // The rows of these gradients are in the plan, summed; older ones are stale.
            tape.claim();
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
