//! The composed kernels: each hot loop as a composition of Burn tensor operations, correct
//! on every backend. The fused kernels give these results bit for bit where they run.

use burn::tensor::module::embedding;
use burn::tensor::{backend::Backend, Bool, IndexingUpdateOp, Int, Shape, Tensor, TensorData};

use super::ParamAndMoments;
use crate::formula::{decayed, sparse_adam_delta, StepScalars};

/// Rows `indices` (`[batch, seq]`, in range) of the `[n, d]` `table`, as `[batch, seq, d]`,
/// outside autodiff's graph.
pub(super) fn gather<B: Backend>(table: &Tensor<B, 2>, indices: Tensor<B, 2, Int>) -> Tensor<B, 3> {
    embedding(table.clone().set_require_grad(false), indices)
}

/// The `[k, d]` sum, per row, of a lookup's `[batch, seq, d]` gradient: position `i` adds to
/// row `slots[i]`, padding positions (`-1`) add nothing. Duplicates add up in lookup order.
pub(super) fn sum_per_row<B: Backend>(grad: Tensor<B, 3>, slots: &[i64], k: usize) -> Tensor<B, 2> {
    let [batch, seq, d] = grad.dims();
    let device = grad.device();
    let grad = grad.reshape([batch * seq, d]);
    let (positions, rows): (Vec<i64>, Vec<i64>) = slots
        .iter()
        .enumerate()
        .filter(|&(_, &slot)| slot >= 0)
        .map(|(position, &slot)| (position as i64, slot))
        .unzip();
    let grad = if positions.len() < slots.len() {
        grad.select(0, index_tensor(&positions, &device))
    } else {
        grad
    };
    Tensor::zeros([k, d], &device).select_assign(
        0,
        index_tensor(&rows, &device),
        grad,
        IndexingUpdateOp::Add,
    )
}

/// The row update of any backend: gather the touched rows of the parameter and both
/// moments, compute [`sparse_adam_delta`] on the `[k, d]` blocks, add the deltas back.
/// `rows` are sorted, unique and in range; `values` is `[rows.len(), d]`.
pub(super) fn step_rows<B: Backend>(
    [param, exp_avg, exp_avg_sq]: ParamAndMoments<B>,
    rows: &[i64],
    values: &Tensor<B, 2>,
    scalars: &StepScalars,
) -> ParamAndMoments<B> {
    let rows = index_tensor(rows, &param.device());
    let gather = |t: &Tensor<B, 2>| t.clone().select(0, rows.clone());
    let delta = sparse_adam_delta(
        values.clone(),
        gather(&exp_avg),
        gather(&exp_avg_sq),
        scalars,
    );
    // Indices are unique, so the additive scatter is exactly PyTorch's
    // `tensor.add_(sparse_delta)`.
    let add_rows = |t: Tensor<B, 2>, d: Tensor<B, 2>| {
        t.select_assign(0, rows.clone(), d, IndexingUpdateOp::Add)
    };
    let param = if scalars.decay == 1.0 {
        param
    } else {
        // The decay as one more additive scatter: `p·c − p` is exact since `c = 1 − lr·λ`
        // lies in [0.5, 1] (Sterbenz; `StepScalars::try_new` holds it there), so
        // `p + (p·c − p)` is `p·c` bit for bit (but `+0.0` for `p = −0.0`), before the delta
        // is added as without decay.
        let rows_of_param = gather(&param);
        add_rows(
            param,
            decayed(rows_of_param.clone(), scalars) - rows_of_param,
        )
    };
    [
        add_rows(param, delta.param),
        add_rows(exp_avg, delta.exp_avg),
        add_rows(exp_avg_sq, delta.exp_avg_sq),
    ]
}

/// The dense update of any backend: the delta of every entry, kept only on the rows
/// (slices along dim 0) with a non-zero gradient entry; `mask_where` keeps the others bit
/// for bit, whatever the delta computed there.
pub(super) fn step_dense<B: Backend, const D: usize>(
    [param, exp_avg, exp_avg_sq]: [Tensor<B, D>; 3],
    grad: Tensor<B, D>,
    scalars: &StepScalars,
) -> [Tensor<B, D>; 3] {
    let touched = touched_rows(&grad);
    let delta = sparse_adam_delta(grad, exp_avg.clone(), exp_avg_sq.clone(), scalars);
    let masked_add = |old: Tensor<B, D>, delta: Tensor<B, D>| {
        old.clone().mask_where(touched.clone(), old + delta)
    };
    let masked_decay_then_add = |old: Tensor<B, D>, delta: Tensor<B, D>| {
        let new = if scalars.decay == 1.0 {
            old.clone() + delta
        } else {
            decayed(old.clone(), scalars) + delta
        };
        old.mask_where(touched.clone(), new)
    };
    [
        masked_decay_then_add(param, delta.param),
        masked_add(exp_avg, delta.exp_avg),
        masked_add(exp_avg_sq, delta.exp_avg_sq),
    ]
}

/// The rows of `grad` with a non-zero entry, broadcast to `grad`'s shape.
fn touched_rows<B: Backend, const D: usize>(grad: &Tensor<B, D>) -> Tensor<B, D, Bool> {
    let mut touched = grad.clone().not_equal_elem(0.0);
    for dim in 1..D {
        touched = touched.any_dim(dim);
    }
    touched.expand(grad.shape())
}

/// An index tensor from host indices.
pub(crate) fn index_tensor<B: Backend>(indices: &[i64], device: &B::Device) -> Tensor<B, 1, Int> {
    Tensor::from_data(TensorData::new(indices.to_vec(), [indices.len()]), device)
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
