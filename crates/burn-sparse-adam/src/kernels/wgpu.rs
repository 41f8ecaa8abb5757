//! The fused row update on burn-wgpu: one CubeCL kernel, one thread per touched lane.
//!
//! The composed path costs a dozen kernels per step on a GPU, three of them writing through
//! table-sized `select_assign`s (each copies the table when it is not uniquely owned). Here
//! the touched rows' indices go up as a small `u32` buffer and a single kernel reads each
//! lane's gradient and moments, evaluates [`sparse_adam_delta`](crate::formula::sparse_adam_delta)'s
//! operations in its order on `f32`, and adds the three deltas in place.
//!
//! Reached when `B`'s float primitive is burn-wgpu's `CubeTensor<WgpuRuntime>` (burn-wgpu
//! without burn-fusion, any element types) and the four tensors are `f32`, contiguous, and
//! shaped as [`step_rows`](super::step_rows) promises. The optimizer steps on the inner
//! backend, so `Autodiff<Wgpu>` models reach it as plain `Wgpu` tensors.
//!
//! The result is the composed path's bit for bit on Mesa's lavapipe (tested in
//! `kernels/mod.rs`). The composed path runs each operation as its own kernel, so no compiler can
//! contract its `(g − m)·(1 − β1) + m` into a fused multiply-add; a GPU driver that does so
//! here would differ in the last bit, far inside the tolerance PyTorch conformance allows.

use burn::backend::wgpu::{CubeTensor, WgpuRuntime};
use burn::tensor::{backend::Backend, DType, Shape, Tensor};
use cubecl::prelude::*;
use cubecl::{calculate_cube_count_elemwise, CubeDim};

use super::primitive::{downcast_update, restore};
use super::ParamAndMoments;
use crate::formula::StepScalars;

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
/// the operations of [`sparse_adam_delta`](crate::formula::sparse_adam_delta) in its order
/// (`m + Δm` is evaluated as `Δm + m`, as there), on the same `f32` scalars. Lanes past
/// `grad.len()` (the last cube's tail) do nothing.
#[cube(launch_unchecked, address_type = "dynamic")]
#[allow(clippy::too_many_arguments)]
fn sparse_adam_rows(
    param: &mut Array<f32>,
    exp_avg: &mut Array<f32>,
    exp_avg_sq: &mut Array<f32>,
    rows: &Array<u32>,
    grad: &Array<f32>,
    width: usize,
    one_minus_beta_1: f32,
    one_minus_beta_2: f32,
    epsilon: f32,
    neg_step_size: f32,
    decay: f32,
    #[comptime] maximize: bool,
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

/// Updates rows `rows` of `table` with `values` in one kernel launch, or hands the table
/// back untouched when `B` is not burn-wgpu or a tensor is not an `f32` contiguous one of
/// the expected shape.
pub(super) fn step_rows<B: Backend>(
    table: ParamAndMoments<B>,
    rows: &[i64],
    values: &Tensor<B, 2>,
    scalars: &StepScalars,
) -> Result<ParamAndMoments<B>, ParamAndMoments<B>> {
    let (table, grad) = downcast_update::<CubeTensor<WgpuRuntime>, B>(table, values)?;
    let Some(indices) = indices(&table, &grad, rows) else {
        return Err(table.map(restore));
    };
    Ok(launch(table, indices, grad, scalars).map(restore))
}

/// `rows` as `u32`s, if the kernel can update `table` with `grad`: all `f32`, contiguous,
/// `[n, d]` tables and a `[rows.len(), d]` gradient, rows below `n`, and lane indices the
/// device can address.
fn indices(
    table: &[CubeTensor<WgpuRuntime>; 3],
    grad: &CubeTensor<WgpuRuntime>,
    rows: &[i64],
) -> Option<Vec<u32>> {
    let shape = table[0].meta.shape().clone();
    let usable = |t: &CubeTensor<WgpuRuntime>| {
        t.dtype == DType::F32 && t.qparams.is_none() && t.is_contiguous()
    };
    let fits = table.iter().chain([grad]).all(usable)
        && table.iter().all(|t| *t.meta.shape() == shape)
        && shape.num_dims() == 2
        && grad.meta.shape().num_dims() == 2
        && grad.meta.shape()[0] == rows.len()
        && grad.meta.shape()[1] == shape[1]
        && table[0]
            .client
            .properties()
            .supports_address(address_type([&table[0], &table[1], &table[2], grad]));
    if !fits {
        return None;
    }
    // The optimizer checks the rows before any step; checked again here, since the launch
    // skips bounds checks.
    let n = shape[0];
    let in_range = |&row: &i64| usize::try_from(row).is_ok_and(|row| row < n);
    if !rows.iter().all(in_range) {
        return None;
    }
    rows.iter().map(|&row| u32::try_from(row).ok()).collect()
}

/// The widest address any of the kernel's arrays needs.
fn address_type(tensors: [&CubeTensor<WgpuRuntime>; 4]) -> AddressType {
    tensors
        .into_iter()
        .map(CubeTensor::required_address_type)
        .max()
        .unwrap_or_default()
}

/// Launches [`sparse_adam_rows`] over `grad`'s lanes, after copying every table tensor that
/// is shared (so that no other owner sees the update).
fn launch(
    table: [CubeTensor<WgpuRuntime>; 3],
    indices: Vec<u32>,
    grad: CubeTensor<WgpuRuntime>,
    scalars: &StepScalars,
) -> [CubeTensor<WgpuRuntime>; 3] {
    // Copy-on-write, one tensor at a time: once a copy replaces a shared handle, a tensor
    // that shared it with this table alone becomes unique and is written in place.
    let [mut param, mut exp_avg, mut exp_avg_sq] = table;
    for tensor in [&mut param, &mut exp_avg, &mut exp_avg_sq] {
        if !tensor.can_mut() {
            *tensor = tensor.copy();
        }
    }
    let lanes = grad.meta.num_elements();
    if lanes == 0 {
        return [param, exp_avg, exp_avg_sq];
    }
    let width = grad.meta.shape()[1];
    let client = param.client.clone();
    let rows = CubeTensor::new_contiguous(
        client.clone(),
        param.device.clone(),
        Shape::new([indices.len()]),
        client.create_from_slice(u32::as_bytes(&indices)),
        DType::U32,
    );
    let addressing = address_type([&param, &exp_avg, &exp_avg_sq, &grad]);
    let cube_dim = CubeDim::new(&client, lanes);
    let cube_count = calculate_cube_count_elemwise(&client, lanes, cube_dim);
    // SAFETY: every access is in bounds, which is what the unchecked launch skips checking:
    // lanes past `grad.len()` return first; lane `i·d + j` reads `rows[i]` with
    // `i < grad.len() / d = rows.len()` and `grad[i·d + j]`; `rows[i] < n` (checked by
    // `indices`), so `rows[i]·d + j < n·d`, the length of each contiguous `[n, d]` table
    // tensor. The three written tensors are distinct buffers (each uniquely owned, copied
    // above when shared), so no lane's writes alias another tensor's reads.
    unsafe {
        sparse_adam_rows::launch_unchecked(
            &client,
            cube_count,
            cube_dim,
            addressing,
            param.clone().into_array_arg(),
            exp_avg.clone().into_array_arg(),
            exp_avg_sq.clone().into_array_arg(),
            rows.into_array_arg(),
            grad.into_array_arg(),
            width,
            scalars.one_minus_beta_1,
            scalars.one_minus_beta_2,
            scalars.epsilon,
            scalars.neg_step_size,
            scalars.decay,
            scalars.maximize,
        );
    }
    [param, exp_avg, exp_avg_sq]
}
