//! Fused kernels: the row path's three hot loops as plain passes over the touched rows, for
//! backends whose tensors this crate can reach.
//!
//! The composed row path, in Burn tensor operations, is correct on every backend. Where a
//! backend's memory is reachable, the same work runs here as one loop each:
//!
//! - [`gather`]: a lookup's output rows, copied from the table;
//! - [`coalesce`]: a lookup's gradient summed per touched row (duplicates added in lookup
//!   order, as the composed scatter does);
//! - [`step_rows`]: the row update of the parameter and both moments, in place, evaluating
//!   [`sparse_adam_delta`] on each `f32` lane once instead of a dozen tensor operations over
//!   gathered copies.
//!
//! Each gives bit for bit what its composed counterpart gives (the wgpu update: on the
//! drivers tested, see its module).
//!
//! On burn-ndarray the gather's output and the summed rows are built in the memory of the
//! previous step's, once nothing else holds it (`recycle`): allocated afresh, these
//! batch-sized blocks cost more in page faults than the loops that fill them.
//!
//! Reachable: burn-ndarray `f32` tensors in standard layout (feature `ndarray`), also under
//! burn-autodiff for reads; and, for [`step_rows`] only, burn-wgpu `f32` tensors in standard
//! layout (feature `wgpu`; burn-wgpu without burn-fusion, whose tensors are CubeCL's), where
//! the update is one CubeCL kernel instead of the composed path's dozen kernels and
//! table-sized scatters. Tensors shared with another owner are copied before an in-place
//! update (Burn's copy-on-write), so nobody else sees the change. Anything else returns
//! `None` or hands its tensors back, and the caller takes the composed path.

use burn::tensor::{backend::Backend, Tensor};

#[cfg(feature = "ndarray")]
use crate::update::sparse_adam_delta;
use crate::update::StepScalars;

#[cfg(feature = "ndarray")]
mod recycle;
#[cfg(feature = "wgpu")]
mod wgpu;

/// The parameter, `exp_avg` and `exp_avg_sq` of an `[n, d]` table.
pub(crate) type Table<B> = [Tensor<B, 2>; 3];

/// Rows `indices` of the `[n, d]` `table`, as a `[batch, seq, d]` tensor of `table`'s backend
/// (`batch · seq = indices.len()`), if reachable. The indices are in range.
pub(crate) fn gather<B: Backend>(
    table: &Tensor<B, 2>,
    indices: &[i64],
    [batch, seq]: [usize; 2],
) -> Option<Tensor<B, 3>> {
    #[cfg(feature = "ndarray")]
    {
        ndarray::gather(table, indices, [batch, seq])
    }
    #[cfg(not(feature = "ndarray"))]
    {
        let _ = (table, indices, batch, seq);
        None
    }
}

/// Whether autodiff on `table`'s backend differentiates through tensors with no element,
/// as a lookup of nothing (or a table of width 0) needs for its output to be tracked.
///
/// Known for burn-ndarray. Burn 0.21's CubeCL backends (wgpu among them) broadcast a
/// dimension of size 0 as if it were 1, so the backward pass of a sum over an empty tensor
/// fails there; on every backend not known to work, an empty lookup's output is left
/// untracked.
pub(crate) fn differentiates_empty<B: Backend>(table: &Tensor<B, 2>) -> bool {
    #[cfg(feature = "ndarray")]
    {
        ndarray::is_ndarray(table)
    }
    #[cfg(not(feature = "ndarray"))]
    {
        let _ = table;
        false
    }
}

/// The `[k, d]` sum, per touched row, of a lookup's `[.., .., d]` gradient: position `i` adds
/// to row `slots[i]` (`-1`: a padding position, which adds nothing), if reachable.
pub(crate) fn coalesce<B: Backend>(
    grad: &Tensor<B, 3>,
    slots: &[i64],
    k: usize,
) -> Option<Tensor<B, 2>> {
    #[cfg(feature = "ndarray")]
    {
        ndarray::coalesce(grad, slots, k)
    }
    #[cfg(not(feature = "ndarray"))]
    {
        let _ = (grad, slots, k);
        None
    }
}

/// Updates rows `rows` (sorted, unique, in range) of `table` with their gradients `values`
/// (`[rows.len(), d]`), in one pass; or hands `table` back unchanged when this backend or
/// layout has no fused update.
pub(crate) fn step_rows<B: Backend>(
    table: Table<B>,
    rows: &[i64],
    values: &Tensor<B, 2>,
    scalars: &StepScalars,
) -> Result<Table<B>, Table<B>> {
    // Each kernel hands back the tensors that are not its backend's, for the next one.
    #[cfg(feature = "ndarray")]
    let table = match ndarray::step_rows(table, rows, values, scalars) {
        Ok(table) => return Ok(table),
        Err(table) => table,
    };
    #[cfg(feature = "wgpu")]
    let table = match wgpu::step_rows(table, rows, values, scalars) {
        Ok(table) => return Ok(table),
        Err(table) => table,
    };
    let _ = (rows, values, scalars);
    Err(table)
}

/// The primitive of type `P` behind the float tensor `tensor`, if `B`'s float primitive is
/// `P`: how this crate reaches a backend's memory while staying generic over `B`.
#[cfg(any(feature = "ndarray", feature = "wgpu"))]
fn take<P: 'static, B: Backend, const D: usize>(tensor: Tensor<B, D>) -> Result<P, Tensor<B, D>> {
    use burn::tensor::TensorPrimitive;
    let TensorPrimitive::Float(primitive) = tensor.into_primitive() else {
        unreachable!("a float tensor's primitive is a float primitive")
    };
    let boxed: Box<dyn std::any::Any> = Box::new(primitive);
    match boxed.downcast::<P>() {
        Ok(primitive) => Ok(*primitive),
        Err(boxed) => Err(give_back(boxed)),
    }
}

/// A table's three tensors and its row gradient `values` as primitives of type `P`, if
/// `B`'s float primitive is `P`; otherwise the table, unchanged.
#[cfg(any(feature = "ndarray", feature = "wgpu"))]
fn take_table<P: 'static, B: Backend>(
    [param, exp_avg, exp_avg_sq]: Table<B>,
    values: &Tensor<B, 2>,
) -> Result<([P; 3], P), Table<B>> {
    let param = match take::<P, B, 2>(param) {
        Ok(param) => param,
        Err(param) => return Err([param, exp_avg, exp_avg_sq]),
    };
    // One backend for all four: if the parameter's primitive is `P`, so are the others'.
    let same = |t| take::<P, B, 2>(t).unwrap_or_else(|_| unreachable!("one backend"));
    Ok((
        [param, same(exp_avg), same(exp_avg_sq)],
        same(values.clone()),
    ))
}

/// The tensor of `B` around a primitive that [`take`] took from it (or one of its type).
#[cfg(any(feature = "ndarray", feature = "wgpu"))]
fn give_back<B: Backend, const D: usize>(boxed: Box<dyn std::any::Any>) -> Tensor<B, D> {
    tensor_of(boxed).unwrap_or_else(|_| unreachable!("the primitive came from this backend"))
}

/// The tensor of `B` around `boxed`, if it is `B`'s float primitive; otherwise `boxed`.
#[cfg(any(feature = "ndarray", feature = "wgpu"))]
fn tensor_of<B: Backend, const D: usize>(
    boxed: Box<dyn std::any::Any>,
) -> Result<Tensor<B, D>, Box<dyn std::any::Any>> {
    use burn::tensor::TensorPrimitive;
    let primitive = boxed.downcast::<B::FloatTensorPrimitive>()?;
    Ok(Tensor::from_primitive(TensorPrimitive::Float(*primitive)))
}

#[cfg(feature = "ndarray")]
mod ndarray {
    use std::any::Any;

    use burn::backend::ndarray::NdArrayTensor;
    use burn::backend::{Autodiff, NdArray};
    use burn::tensor::{backend::Backend, Tensor, TensorPrimitive};

    use super::{give_back, recycle, sparse_adam_delta, take_table, StepScalars, Table};

    /// The burn-ndarray tensor behind `tensor`, if `B` is a burn-ndarray backend.
    fn take<B: Backend, const D: usize>(
        tensor: Tensor<B, D>,
    ) -> Result<NdArrayTensor, Tensor<B, D>> {
        super::take(tensor)
    }

    fn release<B: Backend, const D: usize>(tensor: NdArrayTensor) -> Tensor<B, D> {
        give_back(Box::new(tensor))
    }

    /// The burn-ndarray tensor holding `tensor`'s values, to read: `B` is burn-ndarray, or
    /// burn-ndarray (default element types) under burn-autodiff.
    fn read<B: Backend, const D: usize>(tensor: &Tensor<B, D>) -> Option<NdArrayTensor> {
        let tensor = match take(tensor.clone()) {
            Ok(tensor) => return Some(tensor),
            Err(tensor) => tensor,
        };
        let boxed: Box<dyn Any> = Box::new(tensor);
        let autodiff = boxed.downcast::<Tensor<Autodiff<NdArray>, D>>().ok()?;
        take(autodiff.inner()).ok()
    }

    /// Whether `tensor` is a burn-ndarray tensor, or one under burn-autodiff.
    pub(super) fn is_ndarray<B: Backend, const D: usize>(tensor: &Tensor<B, D>) -> bool {
        read(tensor).is_some()
    }

    /// The tensor of `B` (burn-ndarray, or burn-ndarray under burn-autodiff, as [`read`]
    /// accepts) around `tensor`.
    fn wrap<B: Backend, const D: usize>(tensor: NdArrayTensor) -> Option<Tensor<B, D>> {
        let tensor = match super::tensor_of::<B, D>(Box::new(tensor)) {
            Ok(tensor) => return Some(tensor),
            Err(boxed) => *boxed.downcast::<NdArrayTensor>().expect("the boxed tensor"),
        };
        // Under burn-autodiff: the values become an (untracked) tensor of the autodiff backend.
        let inner = Tensor::<NdArray, D>::from_primitive(TensorPrimitive::Float(tensor));
        let tracked: Box<dyn Any> = Box::new(Tensor::<Autodiff<NdArray>, D>::from_inner(inner));
        tracked
            .downcast::<Tensor<B, D>>()
            .ok()
            .map(|tensor| *tensor)
    }

    pub(super) fn gather<B: Backend>(
        table: &Tensor<B, 2>,
        indices: &[i64],
        [batch, seq]: [usize; 2],
    ) -> Option<Tensor<B, 3>> {
        let NdArrayTensor::F32(table) = read(table)? else {
            return None;
        };
        let d = *table.shape().get(1)?;
        if d == 0 {
            return None;
        }
        let view = table.view();
        let table = view.as_slice()?;
        let mut out = recycle::buffer(indices.len() * d);
        const AHEAD: usize = 8;
        for (n, &i) in indices.iter().enumerate() {
            if let Some(&ahead) = indices.get(n + AHEAD) {
                prefetch(&table[ahead as usize * d..(ahead as usize + 1) * d]);
            }
            let start = i as usize * d;
            out.extend_from_slice(&table[start..start + d]);
        }
        wrap(recycle::tensor(out, &[batch, seq, d]))
    }

    pub(super) fn coalesce<B: Backend>(
        grad: &Tensor<B, 3>,
        slots: &[i64],
        k: usize,
    ) -> Option<Tensor<B, 2>> {
        let NdArrayTensor::F32(grad) = read(grad)? else {
            return None;
        };
        let d = *grad.shape().get(2)?;
        if d == 0 {
            return None;
        }
        let view = grad.view();
        let grad = view.as_slice()?;
        let mut out = recycle::buffer(k * d);
        out.resize(k * d, 0.0);
        for (g, &slot) in grad.chunks_exact(d).zip(slots) {
            if slot < 0 {
                continue;
            }
            let start = slot as usize * d;
            for (o, &g) in out[start..start + d].iter_mut().zip(g) {
                *o += g;
            }
        }
        wrap(recycle::tensor(out, &[k, d]))
    }

    pub(super) fn step_rows<B: Backend>(
        table: Table<B>,
        rows: &[i64],
        values: &Tensor<B, 2>,
        scalars: &StepScalars,
    ) -> Result<Table<B>, Table<B>> {
        let ([param, exp_avg, exp_avg_sq], grad) = take_table::<NdArrayTensor, B>(table, values)?;
        match (param, exp_avg, exp_avg_sq, grad) {
            (
                NdArrayTensor::F32(mut param),
                NdArrayTensor::F32(mut exp_avg),
                NdArrayTensor::F32(mut exp_avg_sq),
                NdArrayTensor::F32(grad),
            ) => {
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
                let table = [
                    release(NdArrayTensor::F32(param)),
                    release(NdArrayTensor::F32(exp_avg)),
                    release(NdArrayTensor::F32(exp_avg_sq)),
                ];
                if updated {
                    Ok(table)
                } else {
                    Err(table)
                }
            }
            (param, exp_avg, exp_avg_sq, _) => {
                Err([release(param), release(exp_avg), release(exp_avg_sq)])
            }
        }
    }

    /// Asks the CPU to bring `lanes` into its caches; no effect on other architectures.
    #[inline(always)]
    fn prefetch(lanes: &[f32]) {
        #[cfg(target_arch = "x86_64")]
        for line in lanes.chunks(16) {
            // SAFETY: a prefetch is a hint: it reads nothing and cannot fault, and the
            // address is inside a live slice.
            unsafe {
                core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(
                    line.as_ptr().cast(),
                )
            };
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = lanes;
    }

    /// `p`, `m`, `v`: the table's rows of width `d`, row-major; `g`: the touched rows'
    /// gradients, in the order of `rows`.
    fn update_rows(
        p: &mut [f32],
        m: &mut [f32],
        v: &mut [f32],
        g: &[f32],
        rows: &[i64],
        d: usize,
        scalars: &StepScalars,
    ) {
        // Touched rows are scattered over tables far larger than the caches: fetch the rows
        // a few iterations ahead, so that their loads overlap instead of queueing.
        const AHEAD: usize = 4;
        if d == 0 {
            return;
        }
        for (i, (grad_row, &row)) in g.chunks_exact(d).zip(rows).enumerate() {
            if let Some(&ahead) = rows.get(i + AHEAD) {
                let lanes = ahead as usize * d..(ahead as usize + 1) * d;
                prefetch(&p[lanes.clone()]);
                prefetch(&m[lanes.clone()]);
                prefetch(&v[lanes]);
            }
            let lanes = row as usize * d..(row as usize + 1) * d;
            let (p, m, v) = (&mut p[lanes.clone()], &mut m[lanes.clone()], &mut v[lanes]);
            for j in 0..d {
                let delta = sparse_adam_delta(grad_row[j], m[j], v[j], scalars);
                m[j] += delta.exp_avg;
                v[j] += delta.exp_avg_sq;
                p[j] += delta.param;
            }
        }
    }
}

#[cfg(all(test, feature = "ndarray"))]
mod tests {
    use burn::backend::NdArray;
    use burn::tensor::{Distribution, Tensor};

    use crate::config::SparseAdamConfig;
    use crate::update::StepScalars;

    /// The fused update is the composed one, bit for bit, and leaves other rows alone.
    #[test]
    fn fused_equals_composed_bit_for_bit() {
        super::test_support::fused_equals_composed::<NdArray>(
            &Default::default(),
            [50, 7],
            vec![0, 3, 4, 17, 49],
        );
    }

    /// A tensor shared with another owner is copied before the update: the other owner
    /// keeps its values.
    #[test]
    fn shared_tensors_are_copied_not_changed() {
        let device = Default::default();
        let param = Tensor::<NdArray, 2>::ones([4, 2], &device);
        let keep = param.clone();
        let table = [param, param_zeros(&device), param_zeros(&device)];
        let values = Tensor::ones([1, 2], &device);
        let scalars = StepScalars::new(&SparseAdamConfig::new(), 0.1, 1);
        let [param, ..] = super::step_rows(table, &[2], &values, &scalars)
            .ok()
            .unwrap();
        assert_eq!(keep.into_data().to_vec::<f32>().unwrap(), vec![1.0; 8]);
        let moved = param.into_data().to_vec::<f32>().unwrap();
        assert!(
            (moved[4] - 0.9).abs() < 1e-6 && moved[0] == 1.0,
            "{moved:?}"
        );
    }

    /// The fused gather is the table's rows, read through autodiff too.
    #[test]
    fn gather_reads_rows_with_and_without_autodiff() {
        use burn::backend::Autodiff;
        let device = Default::default();
        let table = Tensor::<NdArray, 2>::random([9, 3], Distribution::Normal(0.0, 1.0), &device);
        let indices = [4i64, 0, 4, 8];
        let expected = table
            .clone()
            .select(0, Tensor::from_data([4, 0, 4, 8], &device))
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        let values =
            |t: Option<Tensor<NdArray, 3>>| t.map(|t| t.into_data().to_vec::<f32>().unwrap());
        assert_eq!(
            values(super::gather(&table, &indices, [2, 2])),
            Some(expected.clone())
        );
        let tracked = Tensor::<Autodiff<NdArray>, 2>::from_inner(table).require_grad();
        let gathered = super::gather(&tracked, &indices, [1, 4]).unwrap();
        assert_eq!(gathered.dims(), [1, 4, 3]);
        assert_eq!(values(Some(gathered.inner())), Some(expected));
    }

    /// Gathered outputs are built in reused buffers: one still held keeps its values
    /// while later lookups come and go, as do the rows summed from it.
    #[test]
    fn held_outputs_keep_their_values_across_later_lookups() {
        let device = Default::default();
        let table = Tensor::<NdArray, 2>::random([50, 8], Distribution::Normal(0.0, 1.0), &device);
        let values = |t: &Tensor<NdArray, 3>| t.clone().into_data().to_vec::<f32>().unwrap();
        let held = super::gather(&table, &[1, 2, 3, 4], [2, 2]).unwrap();
        let before = values(&held);
        let summed = super::coalesce(&held, &[0, 0, 1, -1], 2).unwrap();
        let summed_before = summed.clone().into_data().to_vec::<f32>().unwrap();
        for step in 0..20i64 {
            let other = super::gather(&table, &[step, 49 - step, 7, 7], [2, 2]).unwrap();
            let _ = super::coalesce(&other, &[0, 1, 2, 2], 3).unwrap();
        }
        assert_eq!(values(&held), before);
        assert_eq!(summed.into_data().to_vec::<f32>().unwrap(), summed_before);
    }

    /// The fused sum per row adds duplicates in lookup order and skips padding, as the
    /// composed scatter does, bit for bit.
    #[test]
    fn coalesce_equals_the_composed_scatter() {
        use burn::tensor::IndexingUpdateOp;
        let device = Default::default();
        let grad = Tensor::<NdArray, 3>::random([1, 6, 4], Distribution::Normal(0.0, 1.0), &device);
        let slots = [1i64, 0, 1, -1, 2, 1];
        let kept = Tensor::from_data([0, 1, 2, 4, 5], &device);
        let expected = Tensor::<NdArray, 2>::zeros([3, 4], &device)
            .select_assign(
                0,
                Tensor::from_data([1, 0, 1, 2, 1], &device),
                grad.clone().reshape([6, 4]).select(0, kept),
                IndexingUpdateOp::Add,
            )
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        let summed = super::coalesce(&grad, &slots, 3).unwrap();
        assert_eq!(summed.dims(), [3, 4]);
        assert_eq!(summed.into_data().to_vec::<f32>().unwrap(), expected);
    }

    fn param_zeros(device: &burn::tensor::Device<NdArray>) -> Tensor<NdArray, 2> {
        Tensor::zeros([4, 2], device)
    }
}

#[cfg(all(test, feature = "wgpu"))]
mod wgpu_tests {
    use burn::backend::Wgpu;
    use burn::tensor::Tensor;

    use crate::config::SparseAdamConfig;
    use crate::update::StepScalars;

    /// The fused wgpu update is the composed one, bit for bit, and leaves other rows alone.
    #[test]
    fn wgpu_fused_equals_composed_bit_for_bit() {
        // More lanes than one cube holds: 43 rows of 13.
        super::test_support::fused_equals_composed::<Wgpu>(
            &Default::default(),
            [300, 13],
            (0..300).step_by(7).collect(),
        );
    }

    /// A tensor shared with another owner is copied before the update: the other owner
    /// keeps its values.
    #[test]
    fn wgpu_shared_tensors_are_copied_not_changed() {
        let device = Default::default();
        let param = Tensor::<Wgpu, 2>::ones([4, 2], &device);
        let keep = param.clone();
        let exp_avg = Tensor::<Wgpu, 2>::zeros([4, 2], &device);
        let keep_exp_avg = exp_avg.clone();
        let table = [param, exp_avg, Tensor::zeros([4, 2], &device)];
        let values = Tensor::ones([1, 2], &device);
        let scalars = StepScalars::new(&SparseAdamConfig::new(), 0.1, 1);
        let [param, exp_avg, _] = super::step_rows(table, &[2], &values, &scalars)
            .ok()
            .unwrap();
        assert_eq!(keep.into_data().to_vec::<f32>().unwrap(), vec![1.0; 8]);
        assert_eq!(
            keep_exp_avg.into_data().to_vec::<f32>().unwrap(),
            vec![0.0; 8]
        );
        let moved = param.into_data().to_vec::<f32>().unwrap();
        assert!(
            (moved[4] - 0.9).abs() < 1e-6 && moved[0] == 1.0,
            "{moved:?}"
        );
        let exp_avg = exp_avg.into_data().to_vec::<f32>().unwrap();
        assert!(
            (exp_avg[4] - 0.1).abs() < 1e-7 && exp_avg[0] == 0.0,
            "{exp_avg:?}"
        );
    }

    /// A non-contiguous tensor takes the composed path: the table comes back unchanged.
    #[test]
    fn wgpu_non_contiguous_tables_fall_back() {
        let device = Default::default();
        let param = Tensor::<Wgpu, 2>::ones([2, 4], &device).transpose();
        let table = [
            param,
            Tensor::zeros([4, 2], &device),
            Tensor::zeros([4, 2], &device),
        ];
        let values = Tensor::ones([1, 2], &device);
        let scalars = StepScalars::new(&SparseAdamConfig::new(), 0.1, 1);
        let Err([param, ..]) = super::step_rows(table, &[2], &values, &scalars) else {
            panic!("a transposed table has no fused update");
        };
        assert_eq!(param.into_data().to_vec::<f32>().unwrap(), vec![1.0; 8]);
    }
}

#[cfg(all(test, any(feature = "ndarray", feature = "wgpu")))]
mod test_support {
    use burn::tensor::{backend::Backend, Distribution, Tensor};

    use crate::config::SparseAdamConfig;
    use crate::row_grads::RowGrad;
    use crate::sparse_adam::composed_step_rows;
    use crate::update::StepScalars;

    /// `B`'s fused update of rows `rows` of a random `[n, d]` table equals the composed one,
    /// bit for bit, with PyTorch's defaults and with other betas, epsilon and maximize.
    pub(super) fn fused_equals_composed<B: Backend>(
        device: &B::Device,
        [n, d]: [usize; 2],
        rows: Vec<i64>,
    ) {
        let table = [
            Tensor::<B, 2>::random([n, d], Distribution::Normal(0.0, 1.0), device),
            Tensor::random([n, d], Distribution::Normal(0.0, 0.1), device),
            Tensor::random([n, d], Distribution::Uniform(0.0, 0.01), device),
        ];
        let values = Tensor::random([rows.len(), d], Distribution::Normal(0.0, 1.0), device);
        let grad = RowGrad::new(rows.clone(), values.clone());
        for config in [
            SparseAdamConfig::new(),
            SparseAdamConfig::new()
                .with_beta_1(0.5)
                .with_epsilon(0.1)
                .with_maximize(true),
        ] {
            let scalars = StepScalars::new(&config, 0.03, 4);
            let composed = composed_step_rows(table.clone(), &grad, &values, &scalars);
            let fused = super::step_rows(table.clone(), &rows, &values, &scalars)
                .unwrap_or_else(|_| panic!("f32 tensors of this backend take the fused path"));
            for (f, c) in fused.into_iter().zip(composed) {
                let bits = |t: Tensor<B, 2>| {
                    let v = t.into_data().to_vec::<f32>().unwrap();
                    v.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
                };
                assert_eq!(bits(f), bits(c));
            }
        }
    }
}
