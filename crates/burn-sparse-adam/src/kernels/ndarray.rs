//! The fused kernels on burn-ndarray (feature `ndarray`): the core's loops over the `f32`
//! storage of burn-ndarray tensors, with or without burn-autodiff around them.
//!
//! The lookup's output and its row gradient are built in reused buffers (`recycle`).
//! Tensors shared with another owner are copied before an in-place update (burn-ndarray's
//! copy-on-write), so nobody else sees the change.

use std::any::Any;

use burn::backend::ndarray::NdArrayTensor;
use burn::backend::{Autodiff, NdArray};
use burn::tensor::{backend::Backend, Tensor, TensorPrimitive};
use sparse_adam_core::kernels::{gather_rows, sum_per_row, update_dense, update_rows};
use sparse_adam_core::pages::{copy_to_huge_pages, is_huge_table, zeros_on_huge_pages};

use super::primitive::{downcast, downcast_update, restore, upcast};
use super::{recycle, ParamAndMoments};
use crate::formula::StepScalars;

/// The burn-ndarray tensor holding `tensor`'s values, to read: `B` is burn-ndarray, or
/// burn-ndarray (default element types) under burn-autodiff.
fn values_of<B: Backend, const D: usize>(tensor: &Tensor<B, D>) -> Option<NdArrayTensor> {
    let tensor = match downcast::<NdArrayTensor, B, D>(tensor.clone()) {
        Ok(values) => return Some(values),
        Err(tensor) => tensor,
    };
    let boxed: Box<dyn Any> = Box::new(tensor);
    let tracked = boxed.downcast::<Tensor<Autodiff<NdArray>, D>>().ok()?;
    downcast::<NdArrayTensor, NdArray, D>(tracked.inner()).ok()
}

/// The tensor of `B` (burn-ndarray, or burn-ndarray under burn-autodiff, as [`values_of`]
/// reads) holding `values`; under burn-autodiff, an untracked tensor.
fn tensor_of<B: Backend, const D: usize>(values: NdArrayTensor) -> Option<Tensor<B, D>> {
    let values = match upcast::<B, D, NdArrayTensor>(values) {
        Ok(tensor) => return Some(tensor),
        Err(values) => values,
    };
    let inner = Tensor::<NdArray, D>::from_primitive(TensorPrimitive::Float(values));
    let tracked: Box<dyn Any> = Box::new(Tensor::<Autodiff<NdArray>, D>::from_inner(inner));
    tracked
        .downcast::<Tensor<B, D>>()
        .ok()
        .map(|tensor| *tensor)
}

/// Whether `tensor` is a burn-ndarray tensor, or one under burn-autodiff.
pub(super) fn is_ndarray<B: Backend, const D: usize>(tensor: &Tensor<B, D>) -> bool {
    values_of(tensor).is_some()
}

pub(super) fn gather<B: Backend>(
    table: &Tensor<B, 2>,
    indices: &[i64],
    [batch, seq]: [usize; 2],
) -> Option<Tensor<B, 3>> {
    let NdArrayTensor::F32(table) = values_of(table)? else {
        return None;
    };
    let d = *table.shape().get(1)?;
    let view = table.view();
    let mut out = recycle::buffer(indices.len() * d);
    gather_rows(view.as_slice()?, d, indices, &mut out);
    tensor_of(recycle::tensor(out, &[batch, seq, d]))
}

pub(super) fn sum_per_row_fused<B: Backend>(
    grad: &Tensor<B, 3>,
    slots: &[i64],
    k: usize,
) -> Option<Tensor<B, 2>> {
    let NdArrayTensor::F32(grad) = values_of(grad)? else {
        return None;
    };
    let d = *grad.shape().get(2)?;
    let view = grad.view();
    let mut out = recycle::buffer(k * d);
    sum_per_row(view.as_slice()?, d, slots, k, &mut out);
    tensor_of(recycle::tensor(out, &[k, d]))
}

pub(super) fn step_rows<B: Backend>(
    table: ParamAndMoments<B>,
    rows: &[i64],
    values: &Tensor<B, 2>,
    scalars: &StepScalars,
) -> Result<ParamAndMoments<B>, ParamAndMoments<B>> {
    let ([param, exp_avg, exp_avg_sq], grad) = downcast_update::<NdArrayTensor, B>(table, values)?;
    let (mut param, mut exp_avg, mut exp_avg_sq, grad) = match (param, exp_avg, exp_avg_sq, grad) {
        (
            NdArrayTensor::F32(param),
            NdArrayTensor::F32(exp_avg),
            NdArrayTensor::F32(exp_avg_sq),
            NdArrayTensor::F32(grad),
        ) => (param, exp_avg, exp_avg_sq, grad),
        // Another element type: the composed path.
        (param, exp_avg, exp_avg_sq, _) => {
            return Err([param, exp_avg, exp_avg_sq].map(restore));
        }
    };
    let d = grad.shape().get(1).copied().unwrap_or(0);
    let grad_view = grad.view();
    let updated = match (
        param.ensure_owned().as_slice_mut(),
        exp_avg.ensure_owned().as_slice_mut(),
        exp_avg_sq.ensure_owned().as_slice_mut(),
        grad_view.as_slice(),
    ) {
        (Some(p), Some(m), Some(v), Some(g)) => {
            update_rows(p, m, v, g, rows, d, scalars);
            true
        }
        _ => false,
    };
    let table = [param, exp_avg, exp_avg_sq].map(|t| restore(NdArrayTensor::F32(t)));
    if updated {
        Ok(table)
    } else {
        Err(table)
    }
}

/// A parameter's first state on huge pages (see [`fresh_table`](super::fresh_table)): the
/// parameter copied once ([`onto_huge_pages`]), the moments made zero
/// ([`zeros_on_huge_pages`]). `Err(param)` untouched on [`onto_huge_pages`]'s conditions
/// (the row update's own: a burn-ndarray `f32` tensor in standard layout), or when it holds
/// less than [`HUGE_TABLE_BYTES`](sparse_adam_core::pages::HUGE_TABLE_BYTES).
pub(super) fn fresh_table<B: Backend, const D: usize>(
    param: Tensor<B, D>,
) -> Result<[Tensor<B, D>; 3], Tensor<B, D>> {
    let param = onto_huge_pages(param)?;
    let shape = param.dims();
    let zeros = || {
        table_tensor(&shape, zeros_on_huge_pages(shape.iter().product()))
            .expect("a tensor of the backend the parameter was just rebuilt on")
    };
    Ok([param, zeros(), zeros()])
}

/// `table` copied once onto huge pages ([`copy_to_huge_pages`]): a parameter's first state
/// ([`fresh_table`]), or a parameter or moment loaded from a record
/// ([`loaded_table`](super::loaded_table)). The values are kept bit for bit, and a tracked
/// tensor comes back tracked, requiring its gradient if it did. `Err(table)` untouched when
/// it is not a burn-ndarray `f32` tensor in standard layout (with or without burn-autodiff),
/// or holds less than [`HUGE_TABLE_BYTES`](sparse_adam_core::pages::HUGE_TABLE_BYTES).
pub(super) fn onto_huge_pages<B: Backend, const D: usize>(
    table: Tensor<B, D>,
) -> Result<Tensor<B, D>, Tensor<B, D>> {
    if !is_huge_table(table.shape().num_elements()) {
        return Err(table);
    }
    let Some(NdArrayTensor::F32(storage)) = values_of(&table) else {
        return Err(table);
    };
    let shape = storage.shape().to_vec();
    let Some(copy) = storage.view().as_slice().map(copy_to_huge_pages) else {
        return Err(table);
    };
    drop(storage);
    let Some(moved) = table_tensor::<B, D>(&shape, copy) else {
        return Err(table);
    };
    Ok(match table.is_require_grad() {
        true => moved.require_grad(),
        false => moved,
    })
}

/// The tensor of `B` (burn-ndarray, or untracked under burn-autodiff: [`tensor_of`]) of
/// shape `shape` holding `values`, in standard layout.
fn table_tensor<B: Backend, const D: usize>(
    shape: &[usize],
    values: Vec<f32>,
) -> Option<Tensor<B, D>> {
    let array = ::ndarray::ArcArray::from_shape_vec(::ndarray::IxDyn(shape), values)
        .expect("as many values as the shape holds");
    tensor_of(NdArrayTensor::from(array))
}

/// The dense update (see [`step_dense`](super::step_dense)): the core's one pass over the
/// `f32` storage of the parameter, both moments and the gradient, in place (copied first
/// when shared). Hands the tensors back, unchanged, when they are not burn-ndarray `f32`
/// tensors in standard layout.
#[allow(clippy::type_complexity)]
pub(super) fn step_dense<B: Backend, const D: usize>(
    [param, exp_avg, exp_avg_sq]: [Tensor<B, D>; 3],
    grad: Tensor<B, D>,
    scalars: &StepScalars,
) -> Result<[Tensor<B, D>; 3], ([Tensor<B, D>; 3], Tensor<B, D>)> {
    let shape = param.shape();
    let param = match downcast::<NdArrayTensor, B, D>(param) {
        Ok(param) => param,
        Err(param) => return Err(([param, exp_avg, exp_avg_sq], grad)),
    };
    // One backend for all four: if the parameter's primitive is burn-ndarray's, so are the
    // others'.
    let same =
        |t| downcast::<NdArrayTensor, B, D>(t).unwrap_or_else(|_| unreachable!("one backend"));
    let (exp_avg, exp_avg_sq, grad) = (same(exp_avg), same(exp_avg_sq), same(grad));
    let (mut param, mut exp_avg, mut exp_avg_sq, grad) = match (param, exp_avg, exp_avg_sq, grad) {
        (
            NdArrayTensor::F32(param),
            NdArrayTensor::F32(exp_avg),
            NdArrayTensor::F32(exp_avg_sq),
            NdArrayTensor::F32(grad),
        ) => (param, exp_avg, exp_avg_sq, grad),
        (param, exp_avg, exp_avg_sq, grad) => {
            return Err(([param, exp_avg, exp_avg_sq].map(restore), restore(grad)));
        }
    };
    // Rows are slices along dim 0 (an element of a rank-1 parameter).
    let n = shape.as_slice().first().copied().unwrap_or(1);
    let d = shape.num_elements() / n.max(1);
    let grad_view = grad.view();
    let updated = match grad_view.as_slice() {
        Some(g) => match (
            param.ensure_owned().as_slice_mut(),
            exp_avg.ensure_owned().as_slice_mut(),
            exp_avg_sq.ensure_owned().as_slice_mut(),
        ) {
            (Some(p), Some(m), Some(v)) => {
                update_dense(p, m, v, g, d, scalars);
                true
            }
            _ => false,
        },
        None => false,
    };
    let table = [param, exp_avg, exp_avg_sq].map(|t| restore(NdArrayTensor::F32(t)));
    let grad = restore(NdArrayTensor::F32(grad));
    if updated {
        Ok(table)
    } else {
        Err((table, grad))
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::TensorData;
    use sparse_adam_core::pages::HUGE_TABLE_BYTES;

    use super::*;

    fn table(n: usize, d: usize) -> Tensor<NdArray, 2> {
        let values: Vec<f32> = (0..n * d).map(|i| (i as f32 * 0.37).sin()).collect();
        Tensor::from_data(TensorData::new(values, [n, d]), &Default::default())
    }

    fn bits(t: Tensor<NdArray, 2>) -> Vec<u32> {
        let values = t.into_data().to_vec::<f32>().unwrap();
        values.into_iter().map(f32::to_bits).collect()
    }

    /// A first state of a table of at least 64 MiB is made here, the parameter's values kept
    /// bit for bit and the moments `+0.0`; a smaller table is handed back as it came.
    #[test]
    fn a_large_tables_first_state_keeps_the_parameter_and_zeroes_the_moments() {
        let (n, d) = (HUGE_TABLE_BYTES / 4 / 256, 256);
        let param = table(n, d);
        let expected = bits(param.clone());
        let Ok([p, m, v]) = fresh_table(param) else {
            panic!("a {n} x {d} f32 table on burn-ndarray takes the fused path");
        };
        assert!(bits(p) == expected, "the parameter's values changed");
        for moment in [m, v] {
            assert_eq!(moment.dims(), [n, d]);
            assert!(bits(moment).iter().all(|&b| b == 0), "not all +0.0");
        }
        let small = table(n / 2 - 1, d);
        let expected = bits(small.clone());
        let Err(back) = fresh_table(small) else {
            panic!("a table under {HUGE_TABLE_BYTES} bytes takes Burn's zeros");
        };
        assert!(bits(back) == expected);
    }

    /// A loaded moment of a table of at least 64 MiB moves to new memory with every bit
    /// kept; a smaller one, or one of another element type, is handed back untouched.
    #[test]
    fn a_large_loaded_moment_moves_with_its_values() {
        let (n, d) = (HUGE_TABLE_BYTES / 4 / 256, 256);
        let loaded = table(n, d);
        let expected = bits(loaded.clone());
        let from = storage_ptr(&loaded);
        let Ok(moved) = onto_huge_pages(loaded) else {
            panic!("a {n} x {d} f32 moment on burn-ndarray moves");
        };
        assert_ne!(storage_ptr(&moved), from, "copied to new memory");
        assert_eq!(moved.dims(), [n, d]);
        assert!(bits(moved) == expected, "the values changed");
        let small = table(n / 2 - 1, d);
        let from = storage_ptr(&small);
        let Err(back) = onto_huge_pages(small) else {
            panic!("a moment under {HUGE_TABLE_BYTES} bytes stays where it is");
        };
        assert_eq!(storage_ptr(&back), from);
        let wide = table(n, d).cast(burn::tensor::FloatDType::F64);
        assert_eq!(wide.dtype(), burn::tensor::DType::F64);
        assert!(
            onto_huge_pages(wide).is_err(),
            "f64 is not the fused path's element type"
        );
    }

    /// A loaded parameter of a table of at least 64 MiB moves to new memory with every bit,
    /// tracked and requiring its gradient when it came so; a smaller one stays where it is.
    #[test]
    fn a_large_loaded_parameter_moves_tracked() {
        let (n, d) = (HUGE_TABLE_BYTES / 4 / 256, 256);
        let inner = table(n, d);
        let expected = bits(inner.clone());
        let from = storage_ptr(&inner);
        let tracked = Tensor::<Autodiff<NdArray>, 2>::from_inner(inner).require_grad();
        let Ok(moved) = onto_huge_pages(tracked) else {
            panic!("a {n} x {d} f32 parameter under burn-autodiff moves");
        };
        assert!(moved.is_require_grad(), "no longer requires its gradient");
        let moved = moved.inner();
        assert_ne!(storage_ptr(&moved), from, "copied to new memory");
        assert!(bits(moved) == expected, "the values changed");
        let small = Tensor::<Autodiff<NdArray>, 2>::from_inner(table(n / 2 - 1, d));
        let Err(back) = onto_huge_pages(small.clone()) else {
            panic!("a parameter under {HUGE_TABLE_BYTES} bytes stays where it is");
        };
        assert_eq!(storage_ptr(&back.inner()), storage_ptr(&small.inner()));
    }

    fn storage_ptr(t: &Tensor<NdArray, 2>) -> *const f32 {
        let Ok(NdArrayTensor::F32(storage)) = downcast::<NdArrayTensor, NdArray, 2>(t.clone())
        else {
            panic!("an f32 burn-ndarray tensor");
        };
        storage.view().as_ptr()
    }
}
