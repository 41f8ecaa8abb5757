//! The fused row update on CubeCL backends (burn-wgpu, and every other cubecl runtime):
//! one kernel, one thread per touched lane, with or without burn-fusion.
//!
//! The composed path costs a dozen kernels per step on a GPU, three of them writing through
//! table-sized `select_assign`s. Here the touched rows' indices go up as a small integer
//! tensor and one kernel reads each lane's gradient and moments, evaluates the core's
//! [`sparse_adam_delta`](sparse_adam_core::sparse_adam_delta) operations in its order on
//! `f32`, and adds the three deltas in place.
//!
//! The update is a Burn 0.22 backend extension ([`SparseAdamRowsOps`]) implemented for
//! `CubeBackend`; `Fusion` in its `#[backend_extension]` makes the macro also register it as
//! a lazy operation of `Fusion<CubeBackend>`, which is the `Cube` backend that Burn's default
//! `wgpu` features build. Under fusion the kernel is queued with the other operations of the
//! step and runs when they do; burn-fusion hands it a table whose last use this is by move,
//! so it writes in place (a table still shared elsewhere is copied first, as any Burn
//! operation would).
//!
//! The result is the composed path's bit for bit on Mesa's lavapipe (tested in the tests
//! package). The composed path runs each operation as its own kernel, so no compiler can
//! contract its `(g − m)·(1 − β1) + m` into a fused multiply-add; a GPU driver that does so
//! here would differ in the last bit, far inside the tolerance PyTorch conformance allows.

// The rows are checked against the table before any step, and each function hands its
// tensors back unconsumed when they cannot take this path.
#![allow(clippy::result_large_err, clippy::too_many_arguments)]

use burn::backend::cubecl::dtype_to_storage_type;
use burn::backend::fusion::custom::TensorSpec;
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{Backend, Dispatch, DispatchDevice, backend_extension};
use burn::tensor::{DType, Tensor, TensorData};
use burn_cubecl::CubeBackend;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::tensor::CubeTensor;
use cubecl::prelude::*;
use cubecl::{CubeDim, calculate_cube_count_elemwise};
use sparse_adam_core::StepScalars;

use super::Table;

/// One lane `ABSOLUTE_POS = i·d + j` of the touched rows: row `rows[i]`, column `j`.
///
/// With `g = grad[i, j]` (negated when `maximize`) and the row's `m`, `v`, `p`:
///
/// ```text
/// Δm = (g − m)·(1 − β1)          m ← m + Δm
/// Δv = (g·g − v)·(1 − β2)        v ← v + Δv
/// Δp = (m + Δm) / (sqrt(v + Δv) + ε) · (−α_t)    p ← p·(1 − lr·λ) + Δp
/// ```
///
/// the operations of [`sparse_adam_delta`](sparse_adam_core::sparse_adam_delta) in its
/// order (`m + Δm` is evaluated as `Δm + m`, as there), on the same `f32` scalars. Lanes past
/// `grad.len()` (the last cube's tail) do nothing.
#[cube(launch_unchecked, address_type = "dynamic")]
fn sparse_adam_rows_kernel<I: Int>(
    param: &mut [f32],
    exp_avg: &mut [f32],
    exp_avg_sq: &mut [f32],
    rows: &[I],
    grad: &[f32],
    width: usize,
    one_minus_beta_1: f32,
    one_minus_beta_2: f32,
    epsilon: f32,
    neg_step_size: f32,
    decay: f32,
    #[comptime] maximize: bool,
    #[define(I)] _index: ElemType,
) {
    if ABSOLUTE_POS >= grad.len() {
        terminate!();
    }
    let row = ABSOLUTE_POS / width;
    let lane = usize::cast_from(rows[row]) * width + ABSOLUTE_POS % width;
    let mut g = grad[ABSOLUTE_POS];
    if maximize {
        // Burn's `neg` of a float tensor is a multiplication by −1: the same bits.
        g *= -1.0f32;
    }
    let m = exp_avg[lane];
    let v = exp_avg_sq[lane];
    let exp_avg_delta = (g - m) * one_minus_beta_1;
    let exp_avg_sq_delta = (g * g - v) * one_minus_beta_2;
    let numer = exp_avg_delta + m;
    let denom = f32::sqrt(exp_avg_sq_delta + v) + epsilon;
    let param_delta = numer / denom * neg_step_size;
    exp_avg[lane] = m + exp_avg_delta;
    exp_avg_sq[lane] = v + exp_avg_sq_delta;
    // `decay` is exactly 1 without weight decay: the product (fused or not) keeps the bits.
    param[lane] = param[lane] * decay + param_delta;
}

/// The output of [`SparseAdamRowsOps::sparse_adam_rows`] as burn-fusion sees it before the
/// kernel runs: the three tables keep their shapes and dtypes.
fn table_specs(
    param: &TensorSpec,
    exp_avg: &TensorSpec,
    exp_avg_sq: &TensorSpec,
    _rows: &TensorSpec,
    _grad: &TensorSpec,
    _width: &usize,
    _one_minus_beta_1: &f32,
    _one_minus_beta_2: &f32,
    _epsilon: &f32,
    _neg_step_size: &f32,
    _decay: &f32,
    _maximize: &bool,
) -> (TensorSpec, TensorSpec, TensorSpec) {
    (param.clone(), exp_avg.clone(), exp_avg_sq.clone())
}

/// The SparseAdam row update as a Burn backend extension: `Cube` runs
/// [`sparse_adam_rows_kernel`]; `Fusion` queues it as a lazy operation of
/// `Fusion<CubeBackend>`. Only [`step_rows`] calls it, after checking that the tensors live
/// on a `Cube` device (the macro panics on any other backend).
#[backend_extension(Cube, Fusion)]
pub(crate) trait SparseAdamRowsOps: Backend {
    /// Rows `rows` (`[k]`, unique, below `n`) of the `[n, d]` `f32` tables take the update
    /// with the `[k, d]` gradient `grad`; returns the three tables.
    #[fusion(meta = table_specs)]
    fn sparse_adam_rows(
        param: FloatTensor<Self>,
        exp_avg: FloatTensor<Self>,
        exp_avg_sq: FloatTensor<Self>,
        rows: IntTensor<Self>,
        grad: FloatTensor<Self>,
        width: usize,
        one_minus_beta_1: f32,
        one_minus_beta_2: f32,
        epsilon: f32,
        neg_step_size: f32,
        decay: f32,
        maximize: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
}

impl SparseAdamRowsOps for CubeBackend {
    fn sparse_adam_rows(
        param: CubeTensor,
        exp_avg: CubeTensor,
        exp_avg_sq: CubeTensor,
        rows: CubeTensor,
        grad: CubeTensor,
        width: usize,
        one_minus_beta_1: f32,
        one_minus_beta_2: f32,
        epsilon: f32,
        neg_step_size: f32,
        decay: f32,
        maximize: bool,
    ) -> (CubeTensor, CubeTensor, CubeTensor) {
        // Written in place: a table shared with another holder (a clone of the model) is
        // copied first, so that no other holder sees the update, and every buffer is read as
        // contiguous rows.
        let writable = |t: CubeTensor| match t.can_mut() && t.is_contiguous() {
            true => t,
            false => into_contiguous(t.copy()),
        };
        let (param, exp_avg, exp_avg_sq) =
            (writable(param), writable(exp_avg), writable(exp_avg_sq));
        let readable = |t: CubeTensor| match t.is_contiguous() {
            true => t,
            false => into_contiguous(t),
        };
        let (rows, grad) = (readable(rows), readable(grad));
        let lanes = grad.meta.num_elements();
        if lanes == 0 || width == 0 {
            return (param, exp_avg, exp_avg_sq);
        }
        let client = param.client.clone();
        let addressing = [&param, &exp_avg, &exp_avg_sq, &rows, &grad]
            .into_iter()
            .map(CubeTensor::required_address_type)
            .max()
            .unwrap_or_default();
        let cube_dim = CubeDim::new(&client, lanes);
        let cube_count = calculate_cube_count_elemwise(&client, lanes, cube_dim);
        let index = dtype_to_storage_type(rows.dtype);
        // SAFETY: every access is in bounds, which is what the unchecked launch skips checking:
        // lanes past `grad.len()` return first; lane `i·d + j` reads `rows[i]` with
        // `i < grad.len() / d = rows.len()` and `grad[i·d + j]`; `rows[i] < n` (checked by the
        // optimizer before any step), so `rows[i]·d + j < n·d`, the length of each contiguous
        // `[n, d]` table. The three written tables are distinct buffers (each uniquely owned,
        // copied above when shared), so no lane's writes alias another table's reads.
        unsafe {
            sparse_adam_rows_kernel::launch_unchecked(
                &client,
                cube_count,
                cube_dim,
                addressing,
                param.clone().into_buffer_arg(),
                exp_avg.clone().into_buffer_arg(),
                exp_avg_sq.clone().into_buffer_arg(),
                rows.into_buffer_arg(),
                grad.into_buffer_arg(),
                width,
                one_minus_beta_1,
                one_minus_beta_2,
                epsilon,
                neg_step_size,
                decay,
                maximize,
                index,
            );
        }
        (param, exp_avg, exp_avg_sq)
    }
}

/// The largest buffer `device`'s cubecl client allocates (see [`super::binding_limit`]): its
/// page size, rounded down to its alignment, as cubecl's allocator rounds it (an allocation
/// is padded up to the alignment, so one between the two would not fit).
pub(super) fn binding_limit(device: &burn::tensor::Device) -> Option<u64> {
    match device.clone().inner().as_dispatch() {
        DispatchDevice::Cube(cube) => {
            let memory = cube.client().properties().memory.clone();
            let alignment = memory.alignment.max(1);
            Some(memory.max_page_size / alignment * alignment)
        }
        _ => None,
    }
}

/// Whether `tensor` can take this path: `f32`, without autodiff, on a `Cube` device.
fn fusable<const D: usize>(tensor: &Tensor<D>) -> bool {
    !tensor.is_autodiff()
        && tensor.dtype() == DType::F32
        && matches!(tensor.device().as_dispatch(), DispatchDevice::Cube(_))
}

/// Updates rows `rows` of `table` with `values` in one kernel, or hands both back untouched
/// when they do not live on a `Cube` device as `f32` tensors without autodiff.
pub(super) fn step_rows(
    table: Table,
    rows: &[i64],
    values: Tensor<2>,
    scalars: &StepScalars,
) -> Result<Table, (Table, Tensor<2>)> {
    let [n, d] = table[0].dims();
    let fits = table.iter().chain([&values]).all(fusable)
        && table.iter().all(|t| t.dims() == [n, d])
        && values.dims() == [rows.len(), d]
        && rows
            .iter()
            .all(|&row| usize::try_from(row).is_ok_and(|row| row < n))
        && i32::try_from(n).is_ok();
    if !fits {
        return Err((table, values));
    }
    let device = values.device();
    // `i32` holds every row of a table that passed `fits`, and it is an integer type every
    // cubecl runtime reads.
    let indices: Vec<i32> = rows.iter().map(|&row| row as i32).collect();
    let indices =
        Tensor::<1, burn::tensor::Int>::from_data(TensorData::new(indices, [rows.len()]), &device);
    let [param, exp_avg, exp_avg_sq] = table;
    let (param, exp_avg, exp_avg_sq) = Dispatch::sparse_adam_rows(
        param.into_dispatch(),
        exp_avg.into_dispatch(),
        exp_avg_sq.into_dispatch(),
        indices.into_dispatch(),
        values.into_dispatch(),
        d,
        scalars.one_minus_beta_1,
        scalars.one_minus_beta_2,
        scalars.epsilon,
        scalars.neg_step_size,
        scalars.decay,
        scalars.maximize,
    );
    Ok([
        Tensor::from_dispatch(param),
        Tensor::from_dispatch(exp_avg),
        Tensor::from_dispatch(exp_avg_sq),
    ])
}
