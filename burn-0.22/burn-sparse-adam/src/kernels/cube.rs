//! The fused row update on CubeCL backends (burn-wgpu, and every other cubecl runtime):
//! one kernel, one thread per touched lane, with or without burn-fusion.
//!
//! The composed path costs a dozen kernels per step on a GPU, three of them writing through
//! table-sized `select_assign`s. Here the touched rows' indices go up as a small integer
//! tensor and one kernel reads each lane's gradient and moments, evaluates the core's
//! [`sparse_adam_delta`](sparse_adam_core::sparse_adam_delta) operations in its order on
//! `f32`, and adds the three deltas in place.
//!
//! A step from uncoalesced lookups ([`step_lookups`]: indices with duplicates and their
//! gradients, as a lookup's backward pass leaves them) plans its rows on the device: one
//! kernel writes each lookup's sort key (its row, or `u32::MAX` for an index outside the
//! table and for the slots padding the sort to a power of two), a bitonic sort of
//! `(row, position)` pairs brings each row's positions together in order
//! (`log₂(p)·(log₂(p) + 1)/2` stage kernels over `p` lookups padded to a power of two), and
//! one fused kernel sums each run of a row in registers and updates the row. Nothing is read
//! back to the host, and no `[k, d]` row gradient is written.
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
use burn::tensor::Shape;
use burn::tensor::{DType, Tensor, TensorData};
use burn_cubecl::CubeBackend;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device;
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
    adam_lane(
        param,
        exp_avg,
        exp_avg_sq,
        lane,
        grad[ABSOLUTE_POS],
        one_minus_beta_1,
        one_minus_beta_2,
        epsilon,
        neg_step_size,
        decay,
        maximize,
    );
}

/// The update of one lane `lane` of the three tables with its summed gradient `g`: the one
/// place the CubeCL kernels hold the formula (see [`sparse_adam_rows_kernel`]).
#[cube]
fn adam_lane(
    param: &mut [f32],
    exp_avg: &mut [f32],
    exp_avg_sq: &mut [f32],
    lane: usize,
    grad: f32,
    one_minus_beta_1: f32,
    one_minus_beta_2: f32,
    epsilon: f32,
    neg_step_size: f32,
    decay: f32,
    #[comptime] maximize: bool,
) {
    let mut g = grad;
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

/// The sort keys of a step from lookups: slot `i` holds lookup `i`'s row, or `u32::MAX`
/// (sorted last, never updated) for an index outside `0..rows` and for the slots past the
/// lookups that pad the sort to a power of two; `positions[i] = i` breaks ties, so that
/// after the sort each row's lookups lie together in lookup order.
#[cube(launch_unchecked)]
fn lookup_keys_kernel(indices: &[i32], keys: &mut [u32], positions: &mut [u32], rows: i32) {
    if ABSOLUTE_POS >= keys.len() {
        terminate!();
    }
    keys[ABSOLUTE_POS] = u32::MAX;
    if ABSOLUTE_POS < indices.len() {
        let index = indices[ABSOLUTE_POS];
        if index >= 0i32 && index < rows {
            keys[ABSOLUTE_POS] = u32::cast_from(index);
        }
    }
    positions[ABSOLUTE_POS] = u32::cast_from(ABSOLUTE_POS);
}

/// One compare-and-swap stage of a bitonic sort of `(keys, positions)` pairs, in the order
/// of `(key, position)` (pairs are distinct: positions are): slot `i` and its partner
/// `i ^ span` are put in ascending order where bit `block` of `i` is clear, descending
/// where it is set. The stages for `block = 2, 4, …, len` and, within each, `span = block/2,
/// block/4, …, 1` sort `len` (a power of two) pairs.
#[cube(launch_unchecked)]
fn bitonic_stage_kernel(keys: &mut [u32], positions: &mut [u32], block: u32, span: u32) {
    if ABSOLUTE_POS >= keys.len() {
        terminate!();
    }
    let i = u32::cast_from(ABSOLUTE_POS);
    let partner = i ^ span;
    if partner > i {
        let (a, b) = (i as usize, partner as usize);
        let (key_a, key_b) = (keys[a], keys[b]);
        let (pos_a, pos_b) = (positions[a], positions[b]);
        let a_after_b = key_a > key_b || (key_a == key_b && pos_a > pos_b);
        let ascending = (i & block) == 0u32;
        if a_after_b == ascending {
            keys[a] = key_b;
            keys[b] = key_a;
            positions[a] = pos_b;
            positions[b] = pos_a;
        }
    }
}

/// The fused sum-and-update of a step from lookups: one thread per lane `j` of each sorted
/// slot `s` that starts a row's run (its key is a row, and the slot before holds another).
/// It sums the gradients of the run's positions as the host path does (each lookup's in
/// order from zero, as the composed path's additive scatter into zeros does, then the
/// lookups of a pass, then the passes: `lookup_of` and `pass_of` say where each position
/// came from), and updates lane `j` of that row
/// ([`adam_lane`]). No row gradient is written to memory; each row is updated by exactly one
/// thread per lane.
#[cube(launch_unchecked, address_type = "dynamic")]
fn sparse_adam_lookups_kernel(
    param: &mut [f32],
    exp_avg: &mut [f32],
    exp_avg_sq: &mut [f32],
    keys: &[u32],
    positions: &[u32],
    lookup_of: &[i32],
    pass_of: &[i32],
    grad: &[f32],
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
    let lookups = grad.len() / width;
    let slot = ABSOLUTE_POS / width;
    let column = ABSOLUTE_POS % width;
    let key = keys[slot];
    let mut starts_run = key != u32::MAX;
    if slot > 0 {
        starts_run = starts_run && keys[slot - 1] != key;
    }
    if !starts_run {
        terminate!();
    }
    // The sums nest as the host's do: each lookup's gradients in order from zero, each
    // pass's lookups, then the passes (the run holds them in that order: positions are
    // concatenated lookup by lookup, pass by pass).
    let mut g = 0.0f32;
    let mut in_pass = 0.0f32;
    let mut in_lookup = 0.0f32;
    let first = positions[slot] as usize;
    let mut lookup = lookup_of[first];
    let mut pass = pass_of[first];
    let mut next = slot;
    // Two tests, not one `&&`: the key is read only once `next` is known to be a lookup.
    loop {
        if next >= lookups {
            break;
        }
        if keys[next] != key {
            break;
        }
        let position = positions[next] as usize;
        if pass_of[position] != pass {
            in_pass += in_lookup;
            g += in_pass;
            in_pass = 0.0f32;
            in_lookup = 0.0f32;
            pass = pass_of[position];
            lookup = lookup_of[position];
        } else if lookup_of[position] != lookup {
            in_pass += in_lookup;
            in_lookup = 0.0f32;
            lookup = lookup_of[position];
        }
        in_lookup += grad[position * width + column];
        next += 1;
    }
    in_pass += in_lookup;
    g += in_pass;
    adam_lane(
        param,
        exp_avg,
        exp_avg_sq,
        key as usize * width + column,
        g,
        one_minus_beta_1,
        one_minus_beta_2,
        epsilon,
        neg_step_size,
        decay,
        maximize,
    );
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

/// The output of [`SparseAdamRowsOps::sparse_adam_lookups`] as burn-fusion sees it: the
/// three tables, as [`table_specs`].
fn lookup_table_specs(
    param: &TensorSpec,
    exp_avg: &TensorSpec,
    exp_avg_sq: &TensorSpec,
    indices: &TensorSpec,
    _lookup_ids: &TensorSpec,
    _pass_ids: &TensorSpec,
    grad: &TensorSpec,
    width: &usize,
    one_minus_beta_1: &f32,
    one_minus_beta_2: &f32,
    epsilon: &f32,
    neg_step_size: &f32,
    decay: &f32,
    maximize: &bool,
) -> (TensorSpec, TensorSpec, TensorSpec) {
    table_specs(
        param,
        exp_avg,
        exp_avg_sq,
        indices,
        grad,
        width,
        one_minus_beta_1,
        one_minus_beta_2,
        epsilon,
        neg_step_size,
        decay,
        maximize,
    )
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

    /// The `[n, d]` `f32` tables take one step from lookups: `indices` (`[p]`, `i32`, any
    /// order, duplicates allowed; an index outside `0..n` is skipped) and their `[p, d]`
    /// gradients `grad` (position `i` from lookup `lookup_ids[i]` of pass `pass_ids[i]`),
    /// each row's gradients summed as the host path nests them. Returns the three tables.
    #[fusion(meta = lookup_table_specs)]
    fn sparse_adam_lookups(
        param: FloatTensor<Self>,
        exp_avg: FloatTensor<Self>,
        exp_avg_sq: FloatTensor<Self>,
        indices: IntTensor<Self>,
        lookup_ids: IntTensor<Self>,
        pass_ids: IntTensor<Self>,
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

/// A table the kernels write in place: one shared with another holder (a clone of the model)
/// is copied first, so that no other holder sees the update, and it is read as contiguous
/// rows.
fn writable(t: CubeTensor) -> CubeTensor {
    match t.can_mut() && t.is_contiguous() {
        true => t,
        false => into_contiguous(t.copy()),
    }
}

/// An input the kernels read as contiguous rows.
fn readable(t: CubeTensor) -> CubeTensor {
    match t.is_contiguous() {
        true => t,
        false => into_contiguous(t),
    }
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
        let (param, exp_avg, exp_avg_sq) =
            (writable(param), writable(exp_avg), writable(exp_avg_sq));
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

    fn sparse_adam_lookups(
        param: CubeTensor,
        exp_avg: CubeTensor,
        exp_avg_sq: CubeTensor,
        indices: CubeTensor,
        lookup_ids: CubeTensor,
        pass_ids: CubeTensor,
        grad: CubeTensor,
        width: usize,
        one_minus_beta_1: f32,
        one_minus_beta_2: f32,
        epsilon: f32,
        neg_step_size: f32,
        decay: f32,
        maximize: bool,
    ) -> (CubeTensor, CubeTensor, CubeTensor) {
        let (param, exp_avg, exp_avg_sq) =
            (writable(param), writable(exp_avg), writable(exp_avg_sq));
        let (indices, grad) = (readable(indices), readable(grad));
        let (lookup_ids, pass_ids) = (readable(lookup_ids), readable(pass_ids));
        let lookups = indices.meta.num_elements();
        if lookups == 0 || width == 0 {
            return (param, exp_avg, exp_avg_sq);
        }
        let rows = i32::try_from(param.meta.num_elements() / width)
            .expect("step_lookups admits tables of at most i32::MAX rows");
        let client = param.client.clone();
        let device = param.device.clone();
        // The sort runs over a power of two of slots; the slots past the lookups sort last.
        let slots = lookups.next_power_of_two();
        let keys = empty_device::<u32>(client.clone(), device.clone(), Shape::new([slots]));
        let positions = empty_device::<u32>(client.clone(), device, Shape::new([slots]));
        let slot_dim = CubeDim::new(&client, slots);
        let slot_count = calculate_cube_count_elemwise(&client, slots, slot_dim);
        // SAFETY: thread `i < slots` writes slot `i` of `keys` and `positions` (both `slots`
        // long) and reads `indices[i]` only for `i < lookups`, its length; threads past
        // `slots` return first.
        unsafe {
            lookup_keys_kernel::launch_unchecked(
                &client,
                slot_count.clone(),
                slot_dim,
                indices.into_buffer_arg(),
                keys.clone().into_buffer_arg(),
                positions.clone().into_buffer_arg(),
                rows,
            );
        }
        // `slots` is a power of two of at most 2^31 (`step_lookups` admits at most 2^31
        // lookups), so every stage's `block` and `span` fit `u32`.
        let mut block = 2usize;
        while block <= slots {
            let mut span = block / 2;
            while span > 0 {
                // SAFETY: thread `i < slots` touches slots `i` and `i ^ span`; `span < slots`
                // and `slots` is a power of two, so `i ^ span < slots`, the length of both
                // buffers. Only the thread with the smaller of the two writes the pair.
                unsafe {
                    bitonic_stage_kernel::launch_unchecked(
                        &client,
                        slot_count.clone(),
                        slot_dim,
                        keys.clone().into_buffer_arg(),
                        positions.clone().into_buffer_arg(),
                        block as u32,
                        span as u32,
                    );
                }
                span /= 2;
            }
            block *= 2;
        }
        let lanes = grad.meta.num_elements();
        let addressing = [&param, &exp_avg, &exp_avg_sq, &grad]
            .into_iter()
            .map(CubeTensor::required_address_type)
            .max()
            .unwrap_or_default();
        let cube_dim = CubeDim::new(&client, lanes);
        let cube_count = calculate_cube_count_elemwise(&client, lanes, cube_dim);
        // SAFETY: lanes past `grad.len() = lookups·d` return first; lane `s·d + j` reads
        // `keys[s]` and `keys[s − 1]` with `s < lookups ≤ slots`, then `keys[t]` and
        // `positions[t]` only for `t < lookups`, and `grad[positions[t]·d + j]`,
        // `lookup_ids[positions[t]]` and `pass_ids[positions[t]]` (both `lookups` long) with
        // `positions[t] < lookups` (the sorted slots before `lookups` hold the lookups'
        // positions: a padding slot's key is `u32::MAX`, sorted after every row, and a run
        // of `u32::MAX` is never summed). A key below `u32::MAX` is a row below `n`
        // (`lookup_keys_kernel`), so `key·d + j < n·d`, the length of each contiguous table.
        // One thread per lane and row writes the three tables (a run has one start), which
        // are distinct buffers (uniquely owned, copied above when shared).
        unsafe {
            sparse_adam_lookups_kernel::launch_unchecked(
                &client,
                cube_count,
                cube_dim,
                addressing,
                param.clone().into_buffer_arg(),
                exp_avg.clone().into_buffer_arg(),
                exp_avg_sq.clone().into_buffer_arg(),
                keys.into_buffer_arg(),
                positions.into_buffer_arg(),
                lookup_ids.into_buffer_arg(),
                pass_ids.into_buffer_arg(),
                grad.into_buffer_arg(),
                width,
                one_minus_beta_1,
                one_minus_beta_2,
                epsilon,
                neg_step_size,
                decay,
                maximize,
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

/// Whether lookups of `weight` (with or without autodiff) can be planned on its device:
/// an `f32` table on a `Cube` device.
pub(super) fn plans_on_device(weight: &Tensor<2>) -> bool {
    weight.dtype() == DType::F32
        && matches!(
            weight.device().inner().as_dispatch(),
            DispatchDevice::Cube(_)
        )
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

/// One step of `table` from `lookups` in one sort and one fused kernel, nothing read back to
/// the host; or the table handed back untouched when the tensors are not `f32` tensors
/// without autodiff on a `Cube` device, or the table has more rows than `i32` holds. An
/// index outside the table is skipped (it is not read back to be checked).
pub(super) fn step_lookups(
    table: Table,
    lookups: &super::Lookups,
    scalars: &StepScalars,
) -> Result<Table, Table> {
    let [n, d] = table[0].dims();
    let super::Lookups {
        indices,
        lookup,
        pass,
        values,
    } = lookups;
    let p = indices.dims()[0];
    let on_cube = |t: &Tensor<1, burn::tensor::Int>| {
        !t.is_autodiff() && matches!(t.device().as_dispatch(), DispatchDevice::Cube(_))
    };
    let fits = table.iter().chain([values]).all(fusable)
        && [indices, lookup, pass].into_iter().all(on_cube)
        && table.iter().all(|t| t.dims() == [n, d])
        && values.dims() == [p, d]
        && lookup.dims() == [p]
        && pass.dims() == [p]
        && i32::try_from(n).is_ok()
        && u32::try_from(p).is_ok_and(|p| p <= 1 << 31);
    if !fits {
        return Err(table);
    }
    // Indices outside the table become −1 in their own type first, so that narrowing to
    // `i32` cannot turn one (2^32 + 2, say) into a row.
    let inside = indices
        .clone()
        .greater_equal_elem(0)
        .bool_and(indices.clone().lower_elem(n as i64));
    let indices = indices
        .clone()
        .mask_fill(inside.bool_not(), -1)
        .cast(burn::tensor::IntDType::I32);
    let ids = |t: &Tensor<1, burn::tensor::Int>| t.clone().cast(burn::tensor::IntDType::I32);
    let [param, exp_avg, exp_avg_sq] = table;
    let (param, exp_avg, exp_avg_sq) = Dispatch::sparse_adam_lookups(
        param.into_dispatch(),
        exp_avg.into_dispatch(),
        exp_avg_sq.into_dispatch(),
        indices.into_dispatch(),
        ids(lookup).into_dispatch(),
        ids(pass).into_dispatch(),
        values.clone().into_dispatch(),
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
