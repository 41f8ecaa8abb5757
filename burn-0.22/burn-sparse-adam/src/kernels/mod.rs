//! The kernels layer: every computation on tensors that the embedding and the optimizer
//! share, behind one dispatcher per operation, which says which path ran ([`Kernel`]).
//!
//! - *fused* on burn-flex (feature `flex`, on by default): the lookup's gather, the row
//!   gradient's per-row sum and coalescing, and the row update run as the core's loops over
//!   flex's `f32` storage (compact moments in `bf16` or `f16`; [`sparse_adam_core::kernels`]),
//!   reached through Burn 0.22's `Tensor::try_into_primitive::<Flex>()` (`burn-tensor-0.22.1/src/tensor/api/extension.rs`).
//!   The optimizer hands this layer values without autodiff, so this also serves autodiff
//!   training;
//! - *fused* on CubeCL backends (feature `wgpu`): the row update as one CubeCL kernel, a
//!   backend extension that burn-fusion queues with the step's other operations when fusion
//!   is on (Burn's default for wgpu) and that runs directly when it is off ([`cube`]); and
//!   a step from unplanned lookups ([`step_lookups`]): a sort on the device and one kernel
//!   that sums each row's gradients and updates the row, with nothing read back;
//! - *composed* everywhere else: Burn tensor operations that run on every backend (wgpu
//!   without the feature, ndarray, a tensor that is not `f32`), and on wgpu for the lookup and
//!   the row sums, which are not fused there.
//!
//! The formula itself is not written here: it is the core's
//! [`sparse_adam_delta`](sparse_adam_core::sparse_adam_delta), run on whole tensors through
//! the [`Lanes`] newtype (Rust's orphan rule keeps the core's trait off Burn's `Tensor`).

mod composed;
#[cfg(feature = "wgpu")]
mod cube;
#[cfg(feature = "flex")]
mod flex;

use burn::tensor::{Bool, DType, Device, Int, Shape, Tensor, TensorData};
use sparse_adam_core::{Elementwise, RowDelta, StepScalars};

/// Which path an operation took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// One pass over the touched rows: the core's loops over burn-flex's storage, or one
    /// CubeCL kernel on a `Cube` device (with or without burn-fusion).
    Fused,
    /// Burn tensor operations.
    Composed,
    /// Lookups planned on the device (a table with
    /// [`check_indices`](crate::SparseEmbeddingConfig::check_indices) off, on wgpu): sorted
    /// there, and each row's gradients summed and applied in one CubeCL kernel, with nothing
    /// read back to the host.
    FusedLookups,
}

/// Whether the fused paths may run (they do by default; [`use_fused_kernels`] turns them
/// off, so that a test can check the composed paths on a backend that has fused ones).
static FUSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Lets the fused paths run (`true`, the default) or makes every operation take the composed
/// path (`false`), process-wide. For tests and comparisons: the numbers are the same either
/// way, only the speed differs.
pub fn use_fused_kernels(enabled: bool) {
    FUSED.store(enabled, std::sync::atomic::Ordering::Relaxed);
}

#[cfg(any(feature = "flex", feature = "wgpu"))]
fn fused() -> bool {
    FUSED.load(std::sync::atomic::Ordering::Relaxed)
}

/// The largest buffer, in bytes, that `device` (with or without autodiff) allocates at once:
/// a `Cube` device's page size, which on wgpu is the storage-binding limit, so the largest
/// buffer one kernel can bind (where the adapter indexes in 64 bits, cubecl takes a memory
/// heap's size instead). `None` for devices without such a limit (flex), and where this
/// crate is built without its `wgpu` feature (then a table over the limit fails at its first
/// kernel, as Burn's own `Embedding` does).
pub(crate) fn binding_limit(device: &Device) -> Option<u64> {
    #[cfg(feature = "wgpu")]
    return cube::binding_limit(device);
    #[cfg(not(feature = "wgpu"))]
    {
        let _ = device;
        None
    }
}

/// The rows `indices` of `weight` (`[n, d]`), `[batch, seq, d]`: the values of a lookup, on
/// `weight`'s device. `host` holds the indices, checked; neither tensor carries autodiff.
pub(crate) fn gather(weight: Tensor<2>, indices: Tensor<2, Int>, host: &[i64]) -> Tensor<3> {
    #[cfg(feature = "flex")]
    let (weight, indices) = match fused() {
        true => match flex::gather(weight, host, indices.dims()) {
            Ok(output) => return output,
            Err(weight) => (weight, indices),
        },
        false => (weight, indices),
    };
    let _ = host;
    composed::gather(weight, indices)
}

/// The `[k, d]` sum, per row, of a lookup's `[batch, seq, d]` gradient: position `i` adds to
/// row `slots[i]`, padding positions (`-1`) add nothing. Duplicates add up in lookup order.
pub(crate) fn sum_per_row(grad: Tensor<3>, slots: &[i64], k: usize) -> Tensor<2> {
    #[cfg(feature = "flex")]
    let grad = match fused() {
        true => match flex::sum_per_row(grad, slots, k) {
            Ok(summed) => return summed,
            Err(grad) => grad,
        },
        false => grad,
    };
    composed::sum_per_row(grad, slots, k)
}

/// One lookup's part of a row gradient: its touched rows (sorted, unique), each position's
/// slot among them (`-1`: padding), and its `[batch, seq, d]` gradient.
pub(crate) type LookupGrad = (Vec<i64>, Vec<i64>, Tensor<3>);

/// The row gradient of several lookups of one table in one backward pass, on `device`: the
/// union of their rows, sorted, and the `[k, d]` sums, each lookup summed per row in lookup
/// order and the lookups added in the order given ([`sum_per_row`] of each, then
/// [`coalesce`]); `None` when no row is touched (every lookup empty or of `padding_idx`).
/// On flex that is one pass (the core's
/// [`sum_lookups_per_row`](sparse_adam_core::sum_lookups_per_row), the same bits).
pub(crate) fn sum_lookups(
    lookups: Vec<LookupGrad>,
    device: &Device,
) -> Option<(Vec<i64>, Tensor<2>)> {
    #[cfg(feature = "flex")]
    let lookups = match fused() {
        true => match flex::sum_lookups(lookups) {
            Ok(summed) => return summed,
            Err(lookups) => lookups,
        },
        false => lookups,
    };
    let mut parts: Vec<(Vec<i64>, Tensor<2>)> = lookups
        .into_iter()
        .filter(|(rows, _, _)| !rows.is_empty())
        .map(|(rows, slots, grad)| {
            let k = rows.len();
            (rows, sum_per_row(grad, &slots, k).to_device(device))
        })
        .collect();
    match parts.len() {
        0 => None,
        1 => parts.pop(),
        _ => Some(coalesce(parts, device)),
    }
}

/// The union of several `(rows, [k_i, d] values)` row gradients, sorted and unique, with the
/// values of shared rows added in the order given (the core's
/// [`coalesce`](sparse_adam_core::coalesce)), on `device`.
pub(crate) fn coalesce(
    parts: Vec<(Vec<i64>, Tensor<2>)>,
    device: &Device,
) -> (Vec<i64>, Tensor<2>) {
    let parts: Vec<(Vec<i64>, Tensor<2>)> = parts
        .into_iter()
        .map(|(rows, values)| (rows, values.to_device(device)))
        .collect();
    #[cfg(feature = "flex")]
    let parts = match fused() {
        true => match flex::coalesce(parts) {
            Ok(summed) => return summed,
            Err(parts) => parts,
        },
        false => parts,
    };
    composed::coalesce(parts, device)
}

/// A parameter's first state: its moments, zero in `dtype` and shaped like `param`, and the
/// parameter itself, as `[param, exp_avg, exp_avg_sq]`.
///
/// On the fused flex path a table of at least 64 MiB is put on huge pages
/// ([`sparse_adam_core::pages`]): the moments are made in memory advised before its first
/// write, and the parameter is copied once into memory advised the same way (one pass over
/// the table, where collapsing its written pages in place took six times as long). The
/// values are those of Burn's zeros and of `param`; only where they live differs. Every
/// other path makes Burn's zeros and hands `param` back as it came.
pub(crate) fn fresh_table<const D: usize>(param: Tensor<D>, dtype: DType) -> [Tensor<D>; 3] {
    #[cfg(feature = "flex")]
    let param = match fused() {
        true => match flex::fresh_table(param, dtype) {
            Ok(table) => return table,
            Err(param) => param,
        },
        false => param,
    };
    let zeros = || Tensor::zeros(param.shape(), (&param.device(), dtype));
    let (exp_avg, exp_avg_sq) = (zeros(), zeros());
    [param, exp_avg, exp_avg_sq]
}

/// A moment loaded from a record (a resumed run's), where the row update is fastest on it:
/// on the fused flex path a table of at least 64 MiB is copied once onto huge pages, as
/// [`fresh_table`] makes new ones (the record's bytes land in memory Burn allocated, on small
/// pages). The values and the type are kept; every other moment comes back as it came.
pub(crate) fn loaded_moment<const D: usize>(moment: Tensor<D>) -> Tensor<D> {
    #[cfg(feature = "flex")]
    let moment = match fused() {
        true => match flex::onto_huge_pages(moment) {
            Ok(moved) => moved,
            Err(same) => same,
        },
        false => moment,
    };
    moment
}

/// The row update: rows `rows` (sorted, unique, in range) of the parameter and both moments
/// take the core's update with the `[rows.len(), d]` gradient `values`; other rows are not
/// touched. Returns the table and the path that ran.
pub(crate) fn step_rows(
    table: Table,
    rows: &[i64],
    values: Tensor<2>,
    scalars: &StepScalars,
) -> (Table, Kernel) {
    #[cfg(feature = "flex")]
    let (table, values) = match fused() {
        true => match flex::step_rows(table, rows, values, scalars) {
            Ok(table) => return (table, Kernel::Fused),
            Err(given_back) => given_back,
        },
        false => (table, values),
    };
    #[cfg(feature = "wgpu")]
    let (table, values) = match fused() {
        true => match cube::step_rows(table, rows, values, scalars) {
            Ok(table) => return (table, Kernel::Fused),
            Err(given_back) => given_back,
        },
        false => (table, values),
    };
    (
        composed::step_rows(table, rows, values, scalars),
        Kernel::Composed,
    )
}

/// Whether lookups of `weight` can be planned on its device ([`step_lookups`]'s fused
/// path): feature `wgpu`, fused kernels on, an `f32` table on a `Cube` device.
pub(crate) fn plans_on_device(weight: &Tensor<2>) -> bool {
    #[cfg(feature = "wgpu")]
    return fused() && cube::plans_on_device(weight);
    #[cfg(not(feature = "wgpu"))]
    {
        let _ = weight;
        false
    }
}

/// One step from [`Lookups`] (see
/// [`SparseAdam::step_lookups`](crate::SparseAdam::step_lookups)), sorted, summed per row
/// and applied on the device in one fused kernel, with nothing read
/// back to the host (feature `wgpu`, `f32` tables on a `Cube` device; an index outside the
/// table is skipped there). Everywhere else the table comes back untouched, for the caller
/// to plan the rows on the host.
// The table comes back as it went in, for the caller's other path (as the fused kernels'
// own functions hand their inputs back).
#[allow(clippy::result_large_err)]
pub(crate) fn step_lookups(
    table: Table,
    lookups: &Lookups,
    scalars: &StepScalars,
) -> Result<Table, Table> {
    #[cfg(feature = "wgpu")]
    if fused() {
        return cube::step_lookups(table, lookups, scalars);
    }
    let _ = (lookups, scalars);
    Err(table)
}

/// Lookups of a table, unplanned, on their device: position `i` looked up row `indices[i]`
/// (`[p]`, duplicates allowed; an index outside the table adds nothing) with gradient
/// `values[i]` (`[p, d]`), in lookup `lookup[i]` of backward pass `pass[i]`. Positions lie
/// lookup by lookup, pass by pass, so that a row's gradients are summed as the host path
/// sums them: each lookup's in order from zero, then each pass's lookups, then the passes
/// (the same bits).
#[derive(Clone, Debug)]
pub(crate) struct Lookups {
    pub(crate) indices: Tensor<1, Int>,
    pub(crate) lookup: Tensor<1, Int>,
    pub(crate) pass: Tensor<1, Int>,
    pub(crate) values: Tensor<2>,
}

/// A tensor seen as the core's [`Elementwise`] values, so that the core's formula runs on
/// whole tensors operation for operation as it runs on `f32` lanes.
#[derive(Clone, Debug)]
pub(crate) struct Lanes<const D: usize>(pub(crate) Tensor<D>);

impl<const D: usize> Elementwise for Lanes<D> {
    fn add(self, rhs: Self) -> Self {
        Lanes(self.0 + rhs.0)
    }
    fn sub(self, rhs: Self) -> Self {
        Lanes(self.0 - rhs.0)
    }
    fn mul(self, rhs: Self) -> Self {
        Lanes(self.0 * rhs.0)
    }
    fn div(self, rhs: Self) -> Self {
        Lanes(self.0 / rhs.0)
    }
    fn scale(self, s: f32) -> Self {
        Lanes(self.0.mul_scalar(s))
    }
    fn shift(self, s: f32) -> Self {
        Lanes(self.0.add_scalar(s))
    }
    fn sqrt(self) -> Self {
        Lanes(self.0.sqrt())
    }
    fn neg(self) -> Self {
        Lanes(self.0.neg())
    }
}

/// The core's SparseAdam update on whole tensors, as deltas (see
/// [`sparse_adam_core::update`]).
pub(crate) fn delta<const D: usize>(
    grad: Tensor<D>,
    exp_avg: Tensor<D>,
    exp_avg_sq: Tensor<D>,
    scalars: &StepScalars,
) -> RowDelta<Tensor<D>> {
    let d = sparse_adam_core::sparse_adam_delta(
        Lanes(grad),
        Lanes(exp_avg),
        Lanes(exp_avg_sq),
        scalars,
    );
    RowDelta {
        param: d.param.0,
        exp_avg: d.exp_avg.0,
        exp_avg_sq: d.exp_avg_sq.0,
    }
}

/// A touched row's parameter after the step's weight decay, `p·(1 − lr·λ)` (the core's
/// [`decayed`](sparse_adam_core::decayed) on whole tensors); its delta is added after.
pub(crate) fn decayed<const D: usize>(param: Tensor<D>, scalars: &StepScalars) -> Tensor<D> {
    sparse_adam_core::decayed(Lanes(param), scalars).0
}

/// A parameter and its two moments, `[n, d]` each.
pub(crate) type Table = [Tensor<2>; 3];

/// An index tensor on `device` from host indices.
pub(crate) fn index_tensor(indices: &[i64], device: &Device) -> Tensor<1, Int> {
    Tensor::from_data(TensorData::new(indices.to_vec(), [indices.len()]), device)
}

/// The rows of `grad` (slices along dim 0) with a non-zero entry, broadcast to its shape.
pub(crate) fn touched_rows<const D: usize>(grad: &Tensor<D>) -> Tensor<D, Bool> {
    let mut touched = grad.clone().not_equal_elem(0.0);
    for dim in 1..D {
        touched = touched.any_dim(dim);
    }
    touched.expand(grad.shape())
}

/// The dense update: rows (slices along dim 0) with a non-zero gradient entry take the
/// update, the others keep their bits. On flex, the core's one pass over the four tables
/// ([`update_dense`](sparse_adam_core::update_dense)); elsewhere the delta of every entry,
/// kept by a mask. Both give the same bits.
pub(crate) fn step_dense<const D: usize>(
    param: Tensor<D>,
    exp_avg: Tensor<D>,
    exp_avg_sq: Tensor<D>,
    grad: Tensor<D>,
    scalars: &StepScalars,
) -> ([Tensor<D>; 3], Kernel) {
    #[cfg(feature = "flex")]
    let ([param, exp_avg, exp_avg_sq], grad) = match fused() {
        true => match flex::step_dense([param, exp_avg, exp_avg_sq], grad, scalars) {
            Ok(table) => return (table, Kernel::Fused),
            Err(given_back) => given_back,
        },
        false => ([param, exp_avg, exp_avg_sq], grad),
    };
    (
        composed_dense(param, exp_avg, exp_avg_sq, grad, scalars),
        Kernel::Composed,
    )
}

/// The dense update in Burn operations: the delta of every entry, kept only on the rows
/// with a non-zero gradient entry (`mask_where` keeps the others bit for bit). Compact
/// moments are widened to the parameter's type and the new ones rounded once.
fn composed_dense<const D: usize>(
    param: Tensor<D>,
    exp_avg: Tensor<D>,
    exp_avg_sq: Tensor<D>,
    grad: Tensor<D>,
    scalars: &StepScalars,
) -> [Tensor<D>; 3] {
    let touched = touched_rows(&grad);
    // Compact moments: widened to the parameter's type for the formula, rounded once.
    let compute = param.dtype();
    let (m, v) = (
        composed::in_dtype(exp_avg.clone(), compute),
        composed::in_dtype(exp_avg_sq.clone(), compute),
    );
    let d = delta(grad, m.clone(), v.clone(), scalars);
    let masked_add = |stored: Tensor<D>, old: Tensor<D>, delta: Tensor<D>| {
        let dtype = stored.dtype();
        stored.mask_where(touched.clone(), composed::in_dtype(old + delta, dtype))
    };
    let new_param = match scalars.decay == 1.0 {
        true => param.clone() + d.param,
        false => decayed(param.clone(), scalars) + d.param,
    };
    [
        param.mask_where(touched.clone(), new_param),
        masked_add(exp_avg, m, d.exp_avg),
        masked_add(exp_avg_sq, v, d.exp_avg_sq),
    ]
}

/// How many rows of the sum of `grads` (one per device) have a non-zero entry (one value
/// read back).
pub(crate) fn count_touched_rows<const D: usize>(grads: &[Tensor<D>]) -> usize {
    let Some(first) = grads.first() else {
        return 0;
    };
    let device = first.device();
    let sum = grads
        .iter()
        .map(|g| g.clone().to_device(&device))
        .reduce(|a, b| a + b)
        .expect("at least one gradient");
    let [n, d] = as_rows(&sum.shape());
    sum.reshape([n, d])
        .not_equal_elem(0.0)
        .any_dim(1)
        .int()
        .sum()
        .into_scalar::<i64>() as usize
}

/// Whether every value is finite: one reduction on the device, one value read back.
pub(crate) fn all_finite<const D: usize>(t: &Tensor<D>) -> bool {
    t.clone().is_finite().all().into_scalar::<bool>()
}

/// `[n, d]`: a parameter seen as rows (dim 0) of flattened entries.
pub(crate) fn as_rows(shape: &Shape) -> [usize; 2] {
    let n = shape.as_slice().first().copied().unwrap_or(1);
    [n, shape.num_elements() / n.max(1)]
}

/// `tensor` with rank `D2` and shape `shape` (of as many elements). When the shape does not
/// change only the type does, so no backend gets a chance to copy a table.
pub(crate) fn to_rank<const D: usize, const D2: usize>(
    tensor: Tensor<D>,
    shape: impl Into<Shape>,
) -> Tensor<D2> {
    let shape = shape.into();
    if D == D2 && tensor.shape() == shape {
        Tensor::from_bridge(tensor.into_bridge())
    } else {
        tensor.reshape(shape)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sparse_adam_core::Hyperparameters;

    /// The tensor form of the update is the core's lane form, bit for bit, lane by lane:
    /// the dense and composed paths compute exactly what the core's slice kernels compute.
    #[test]
    fn tensors_compute_what_lanes_compute() {
        let device = Device::flex();
        let hyper = Hyperparameters {
            beta_2: 0.99,
            maximize: true,
            ..Default::default()
        };
        let scalars = StepScalars::new(hyper, 0.03, 4);
        let (g, m, v) = (
            [0.5f32, -2.0, 0.0],
            [0.1f32, 0.0, -0.3],
            [0.2f32, 1e-8, 0.0],
        );
        let tensor = |x: [f32; 3]| Tensor::<1>::from_floats(x, &device);
        let whole = delta(tensor(g), tensor(m), tensor(v), &scalars);
        let bits = |t: Tensor<1>| {
            let values = t.into_data().try_into_vec::<f32>().unwrap();
            values.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        };
        let lanes: Vec<RowDelta<f32>> = (0..3)
            .map(|i| sparse_adam_core::sparse_adam_delta(g[i], m[i], v[i], &scalars))
            .collect();
        let lane_bits =
            |f: fn(&RowDelta<f32>) -> f32| lanes.iter().map(|d| f(d).to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(whole.param), lane_bits(|d| d.param));
        assert_eq!(bits(whole.exp_avg), lane_bits(|d| d.exp_avg));
        assert_eq!(bits(whole.exp_avg_sq), lane_bits(|d| d.exp_avg_sq));
    }

    /// The composed row update computes what the core's slice kernel computes, bit for bit
    /// (so the fused path, which is that kernel, does too); on flex the dispatcher takes the
    /// fused path.
    #[test]
    fn rows_update_as_the_cores_slice_kernel_does() {
        let device = Device::flex();
        let (n, d) = (5, 3);
        let init: Vec<f32> = (0..n * d).map(|i| (i as f32 * 0.37).sin()).collect();
        let rows = [1i64, 4];
        let grad = [0.5f32, -1.0, 0.25, 0.0, 0.0, 0.0];
        let scalars = StepScalars::new(Hyperparameters::default(), 0.1, 2);
        let table = |values: &[f32]| {
            Tensor::<2>::from_data(TensorData::new(values.to_vec(), [n, d]), &device)
        };
        let moments = vec![0.01f32; n * d];
        let values = || Tensor::<2>::from_data(TensorData::new(grad.to_vec(), [2, d]), &device);
        let [p, m, v] = composed::step_rows(
            [table(&init), table(&moments), table(&moments)],
            &rows,
            values(),
            &scalars,
        );
        let (_, kernel) = step_rows(
            [table(&init), table(&moments), table(&moments)],
            &rows,
            values(),
            &scalars,
        );
        let expected = if cfg!(feature = "flex") {
            Kernel::Fused
        } else {
            Kernel::Composed
        };
        assert_eq!(kernel, expected);
        let (mut p2, mut m2, mut v2) = (init.clone(), moments.clone(), moments.clone());
        sparse_adam_core::update_rows(&mut p2, &mut m2, &mut v2, &grad, &rows, d, &scalars);
        let read = |t: Tensor<2>| t.into_data().try_into_vec::<f32>().unwrap();
        assert_eq!(read(p), p2);
        assert_eq!(read(m), m2);
        assert_eq!(read(v), v2);
    }
}
