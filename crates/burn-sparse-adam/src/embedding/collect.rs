//! [`collect_grads`]: the one line that replaces `GradientsParams::from_grads`.

use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Tensor;

use super::tape::scope;

/// Builds the `GradientsParams` of a backward pass, row gradients included: the drop-in
/// replacement of `GradientsParams::from_grads(grads, &model)`.
///
/// Every parameter's gradient is taken as Burn does; for each
/// [`SparseEmbedding`](crate::SparseEmbedding) of `module`, the gradients of the lookups
/// this thread made since its last collection are summed into one row gradient, kept by the
/// table until the optimizer's next step, and announced in the result by a marker under the
/// weight's id. The marker is a `[1, d + 1]` tensor of ones (a shape no table gradient can
/// have), so Burn's `GradientsAccumulator` and multi-device merging carry it like any
/// gradient, and its value counts the backward passes it covers.
///
/// If the weight also received a dense gradient (say, a penalty on `weight.val()`), the rows
/// are added into it and the table takes the dense path for that step.
///
/// # Example
///
/// ```
/// use burn::backend::{Autodiff, NdArray};
/// use burn::optim::Optimizer;
/// use burn::tensor::{Int, Tensor};
/// use burn_sparse_adam::{collect_grads, SparseAdamConfig, SparseEmbeddingConfig};
///
/// type B = Autodiff<NdArray>;
/// let device = Default::default();
/// let table = SparseEmbeddingConfig::new(1000, 8).init::<B>(&device);
/// let mut optim = SparseAdamConfig::new().init();
///
/// let indices = Tensor::<B, 2, Int>::from_data([[3, 7, 3]], &device);
/// let loss = table.forward(indices).sum();
/// let grads = collect_grads(loss.backward(), &table); // not GradientsParams::from_grads
/// let table = optim.step(1e-2, table, grads);         // updates rows 3 and 7 only
/// # let _ = table;
/// ```
pub fn collect_grads<B: AutodiffBackend, M: AutodiffModule<B>>(
    mut grads: B::Gradients,
    module: &M,
) -> GradientsParams {
    let mut collector = Collector::<B> {
        grads: &mut grads,
        params: GradientsParams::new(),
    };
    module.visit(&mut collector);
    collector.params
}

struct Collector<'a, B: AutodiffBackend> {
    grads: &'a mut B::Gradients,
    params: GradientsParams,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Collector<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let value = param.val();
        let grad = match scope::tape::<B>(param.id) {
            Some(tape) => tape.collect(self.grads, &value),
            None => value.grad_remove(self.grads),
        };
        if let Some(grad) = grad {
            self.params.register(param.id, grad);
        }
    }
}
