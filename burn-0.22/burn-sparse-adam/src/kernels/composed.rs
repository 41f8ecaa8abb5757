//! The composed path: Burn tensor operations that run on every backend.

use burn::tensor::module::embedding;
use burn::tensor::{DType, Device, IndexingUpdateOp, Int, Tensor};
use sparse_adam_core::StepScalars;

use super::{Table, decayed, delta, index_tensor};

/// The rows `indices` (`[batch, seq]`) of `weight` (`[n, d]`), `[batch, seq, d]`: the values
/// of a lookup, on `weight`'s device. Neither input may carry autodiff.
pub(crate) fn gather(weight: Tensor<2>, indices: Tensor<2, Int>) -> Tensor<3> {
    embedding(weight, indices)
}

/// The `[k, d]` sum, per row, of a lookup's `[batch, seq, d]` gradient: position `i` adds to
/// row `slots[i]`, padding positions (`-1`) add nothing. Duplicates add up in lookup order.
pub(crate) fn sum_per_row(grad: Tensor<3>, slots: &[i64], k: usize) -> Tensor<2> {
    let [batch, seq, d] = grad.dims();
    let device = grad.device();
    if d == 0 || k == 0 {
        return Tensor::zeros([k, d], &device);
    }
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

/// The union of several `(rows, [k_i, d] values)` row gradients, sorted and unique, with the
/// values of shared rows added in the order given (the core's
/// [`coalesce`](sparse_adam_core::coalesce), on the device).
pub(crate) fn coalesce(
    parts: Vec<(Vec<i64>, Tensor<2>)>,
    device: &Device,
) -> (Vec<i64>, Tensor<2>) {
    let all_rows: Vec<i64> = parts
        .iter()
        .flat_map(|(rows, _)| rows.iter().copied())
        .collect();
    let (rows, inverse) = sparse_adam_core::unique_sorted(&all_rows);
    let values: Vec<Tensor<2>> = parts
        .into_iter()
        .map(|(_, values)| values.to_device(device))
        .collect();
    let values = Tensor::cat(values, 0);
    let width = values.dims()[1];
    let summed = Tensor::zeros([rows.len(), width], device).select_assign(
        0,
        index_tensor(&inverse, device),
        values,
        IndexingUpdateOp::Add,
    );
    (rows, summed)
}

/// The row update: gathers the touched rows of the parameter and both moments, computes the
/// delta on the `[k, d]` blocks, adds the deltas back. `rows` are sorted, unique and in
/// range; `values` is `[rows.len(), d]`.
///
/// Moments stored in another type than the parameter's (compact moments) are widened to
/// it for the formula, and the updated rows, rounded once to the moments' type, overwrite
/// theirs (an added delta would round twice).
pub(crate) fn step_rows(
    [param, exp_avg, exp_avg_sq]: Table,
    rows: &[i64],
    values: Tensor<2>,
    scalars: &StepScalars,
) -> Table {
    let rows = index_tensor(rows, &param.device());
    let gather = |t: &Tensor<2>| t.clone().select(0, rows.clone());
    let compute = param.dtype();
    let widened = |t: &Tensor<2>| in_dtype(gather(t), compute);
    let (m_rows, v_rows) = (widened(&exp_avg), widened(&exp_avg_sq));
    let delta = delta(values, m_rows.clone(), v_rows.clone(), scalars);
    // Indices are unique, so the additive scatter is exactly PyTorch's
    // `tensor.add_(sparse_delta)`.
    let add_rows =
        |t: Tensor<2>, d: Tensor<2>| t.select_assign(0, rows.clone(), d, IndexingUpdateOp::Add);
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
    let moment = |t: Tensor<2>, old_rows: Tensor<2>, d: Tensor<2>| {
        let dtype = t.dtype();
        if dtype == compute {
            add_rows(t, d)
        } else {
            let new_rows = (old_rows + d).cast(dtype);
            t.select_assign(0, rows.clone(), new_rows, IndexingUpdateOp::Assign)
        }
    };
    [
        add_rows(param, delta.param),
        moment(exp_avg, m_rows, delta.exp_avg),
        moment(exp_avg_sq, v_rows, delta.exp_avg_sq),
    ]
}

/// `t` in the float type `dtype` (itself when it already is).
pub(crate) fn in_dtype<const D: usize>(t: Tensor<D>, dtype: DType) -> Tensor<D> {
    if t.dtype() == dtype { t } else { t.cast(dtype) }
}
