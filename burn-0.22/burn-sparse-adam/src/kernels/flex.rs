//! The fused path on burn-flex: the core's loops over flex's `f32` storage.
//!
//! A tensor takes this path when it lives on flex without autodiff and holds `f32`; every
//! function gives its inputs back unchanged (`Err`) otherwise, before consuming anything.
//! Flex's storage is copy-on-write (`Arc`): a tensor still shared elsewhere (a clone of the
//! model) is copied once by `storage_mut` before it is written, so no other holder ever sees
//! a change, as with any Burn operation.
//!
//! The batch-sized tensors made here (a lookup's output, a row gradient) are built in the
//! memory of earlier ones that nobody holds any more (the core's
//! [`Recycler`](sparse_adam_core::recycle::Recycler), one per thread): allocated afresh, glibc
//! gives them back to the kernel each step and the next step faults them in again.

// Each function hands its tensors back unconsumed when they cannot take this path; a
// `Tensor` is a few hundred bytes, and boxing it for the rare fallback buys nothing.
#![allow(clippy::result_large_err)]

use std::cell::RefCell;

use burn::backend::flex::FlexTensor;
use burn::backend::{DispatchDevice, Flex};
use burn::tensor::{DType, Tensor, TensorData, bf16, f16};
use sparse_adam_core::StepScalars;
use sparse_adam_core::pages::{copy_to_huge_pages, is_huge_table, zeros_on_huge_pages};
use sparse_adam_core::recycle::Recycler;

use super::Table;

/// Whether `tensor` can take the fused path.
fn fusable<const D: usize>(tensor: &Tensor<D>) -> bool {
    tensor.dtype() == DType::F32 && on_flex(tensor)
}

/// Whether a pair of moments can take the fused path: on flex, stored in one of the
/// core's moment types ([`MomentElement`]).
fn fusable_moments<const D: usize>(m: &Tensor<D>, v: &Tensor<D>) -> bool {
    m.dtype() == v.dtype()
        && matches!(m.dtype(), DType::F32 | DType::BF16 | DType::F16)
        && on_flex(m)
        && on_flex(v)
}

/// Whether `tensor` lives on flex, without autodiff.
fn on_flex<const D: usize>(tensor: &Tensor<D>) -> bool {
    !tensor.is_autodiff() && matches!(tensor.device().as_dispatch(), DispatchDevice::Flex(_))
}

/// Runs `$body` with `$m` and `$v` rebound to the first `$len` values of the moments'
/// storage, in their stored type (one [`fusable_moments`] accepted).
macro_rules! with_moments {
    ($m:ident, $v:ident, $len:expr, $body:expr) => {
        match $m.dtype() {
            DType::BF16 => {
                let ($m, $v) = (
                    &mut $m.storage_mut::<bf16>()[..$len],
                    &mut $v.storage_mut::<bf16>()[..$len],
                );
                $body
            }
            DType::F16 => {
                let ($m, $v) = (
                    &mut $m.storage_mut::<f16>()[..$len],
                    &mut $v.storage_mut::<f16>()[..$len],
                );
                $body
            }
            _ => {
                let ($m, $v) = (
                    &mut $m.storage_mut::<f32>()[..$len],
                    &mut $v.storage_mut::<f32>()[..$len],
                );
                $body
            }
        }
    };
}

/// The flex primitive of a tensor that [`fusable`] accepted, contiguous from offset 0.
fn primitive<const D: usize>(tensor: Tensor<D>) -> FlexTensor {
    let primitive = tensor
        .try_into_primitive::<Flex>()
        .expect("a float tensor on flex without autodiff is a flex primitive");
    match primitive.layout().contiguous_offsets() {
        Some((0, _)) => primitive,
        _ => primitive.to_contiguous(),
    }
}

/// A tensor from a flex primitive.
fn tensor<const D: usize>(primitive: FlexTensor) -> Tensor<D> {
    Tensor::from_primitive::<Flex>(primitive)
}

thread_local! {
    static KEPT_TENSORS: RefCell<Recycler<FlexTensor>> = const { RefCell::new(Recycler::new()) };
}

/// An empty vector with room for at least `len` `f32`s: the allocation of a remembered
/// tensor that nobody else holds any more (the smallest that fits), or a new one.
fn buffer(len: usize) -> Vec<f32> {
    let reused = KEPT_TENSORS.with(|kept| kept.borrow_mut().take_free(len, FlexTensor::is_unique));
    let Some(tensor) = reused else {
        return Vec::with_capacity(Recycler::<FlexTensor>::new_capacity(len));
    };
    // Unique, contiguous from offset 0 and exactly as long as its values (made by
    // `from_values`), so neither step copies: the `Arc` is unwrapped, the vector taken back.
    let mut values = tensor
        .into_data()
        .try_into_vec::<f32>()
        .expect("only f32 tensors are kept");
    values.clear();
    values
}

/// A flex tensor of `values` shaped `shape`, remembered so that its allocation can serve a
/// later [`buffer`].
fn from_values<const D: usize>(values: Vec<f32>, shape: [usize; D]) -> Tensor<D> {
    let capacity = values.capacity();
    let primitive = FlexTensor::from_data(TensorData::new(values, shape));
    KEPT_TENSORS.with(|kept| kept.borrow_mut().keep(capacity, primitive.clone()));
    tensor(primitive)
}

/// The rows `host` of `weight`, `[batch, seq, d]`.
pub(super) fn gather(
    weight: Tensor<2>,
    host: &[i64],
    [batch, seq]: [usize; 2],
) -> Result<Tensor<3>, Tensor<2>> {
    if !fusable(&weight) {
        return Err(weight);
    }
    let [_, d] = weight.dims();
    let weight = primitive(weight);
    let table = weight.as_slice::<f32>().expect("contiguous f32");
    let mut out = buffer(host.len() * d);
    sparse_adam_core::gather_rows(table, d, host, &mut out);
    Ok(from_values(out, [batch, seq, d]))
}

/// The `[k, d]` per-row sum of a lookup's gradient (see
/// [`sum_per_row`](super::sum_per_row)).
pub(super) fn sum_per_row(
    grad: Tensor<3>,
    slots: &[i64],
    k: usize,
) -> Result<Tensor<2>, Tensor<3>> {
    if !fusable(&grad) {
        return Err(grad);
    }
    let [_, _, d] = grad.dims();
    let grad = primitive(grad);
    let mut out = buffer(k * d);
    sparse_adam_core::sum_per_row(
        grad.as_slice::<f32>().expect("contiguous f32"),
        d,
        slots,
        k,
        &mut out,
    );
    Ok(from_values(out, [k, d]))
}

/// The row gradient of several lookups in one pass (see [`sum_lookups`](super::sum_lookups)).
#[allow(clippy::type_complexity)]
pub(super) fn sum_lookups(
    lookups: Vec<super::LookupGrad>,
) -> Result<Option<(Vec<i64>, Tensor<2>)>, Vec<super::LookupGrad>> {
    if lookups.is_empty() || !lookups.iter().all(|(_, _, grad)| fusable(grad)) {
        return Err(lookups);
    }
    let d = lookups[0].2.dims()[2];
    let lists: Vec<&[i64]> = lookups.iter().map(|(rows, _, _)| rows.as_slice()).collect();
    let (union, places) = sparse_adam_core::union_of_sorted(&lists);
    // Each lookup's slots, into the union instead of its own rows.
    let slots: Vec<Vec<i64>> = lookups
        .iter()
        .zip(&places)
        .map(|((_, slots, _), places)| {
            slots
                .iter()
                .map(|&slot| match usize::try_from(slot) {
                    Ok(slot) => places[slot],
                    // Padding stays padding; anything else below 0 is refused by the core's
                    // slot check, as before.
                    Err(_) => slot,
                })
                .collect()
        })
        .collect();
    let grads: Vec<FlexTensor> = lookups
        .into_iter()
        .map(|(_, _, grad)| primitive(grad))
        .collect();
    let parts: Vec<(&[f32], &[i64])> = grads
        .iter()
        .zip(&slots)
        .map(|(grad, slots)| {
            (
                grad.as_slice::<f32>().expect("contiguous f32"),
                slots.as_slice(),
            )
        })
        .collect();
    if union.is_empty() {
        return Ok(None);
    }
    let mut out = buffer(union.len() * d);
    sparse_adam_core::sum_lookups_per_row(&parts, d, union.len(), &mut out);
    let k = union.len();
    Ok(Some((union, from_values(out, [k, d]))))
}

/// The coalescing of row gradients (see [`coalesce`](super::coalesce)).
#[allow(clippy::type_complexity)]
pub(super) fn coalesce(
    parts: Vec<(Vec<i64>, Tensor<2>)>,
) -> Result<(Vec<i64>, Tensor<2>), Vec<(Vec<i64>, Tensor<2>)>> {
    if parts.is_empty() || !parts.iter().all(|(_, values)| fusable(values)) {
        return Err(parts);
    }
    let d = parts[0].1.dims()[1];
    let primitives: Vec<(Vec<i64>, FlexTensor)> = parts
        .into_iter()
        .map(|(rows, values)| (rows, primitive(values)))
        .collect();
    let slices: Vec<(&[i64], &[f32])> = primitives
        .iter()
        .map(|(rows, values)| {
            (
                rows.as_slice(),
                values.as_slice::<f32>().expect("contiguous f32"),
            )
        })
        .collect();
    let (rows, values) = sparse_adam_core::coalesce(&slices, d);
    let k = rows.len();
    Ok((rows, from_values(values, [k, d])))
}

/// The row update (see [`step_rows`](super::step_rows)): the core's `update_rows` on the
/// parameter's and the moments' storage, in place when they are not shared; the moments in
/// `f32`, `bf16` or `f16`.
pub(super) fn step_rows(
    [param, exp_avg, exp_avg_sq]: Table,
    rows: &[i64],
    values: Tensor<2>,
    scalars: &StepScalars,
) -> Result<Table, (Table, Tensor<2>)> {
    if !(fusable(&param) && fusable_moments(&exp_avg, &exp_avg_sq) && fusable(&values)) {
        return Err(([param, exp_avg, exp_avg_sq], values));
    }
    let [n, d] = param.dims();
    let (mut p, mut m, mut v) = (primitive(param), primitive(exp_avg), primitive(exp_avg_sq));
    let g = primitive(values);
    let len = n * d;
    let p_values = &mut p.storage_mut::<f32>()[..len];
    let grad = g.as_slice::<f32>().expect("contiguous f32");
    with_moments!(m, v, len, {
        sparse_adam_core::update_rows(p_values, m, v, grad, rows, d, scalars)
    });
    Ok([tensor(p), tensor(m), tensor(v)])
}

/// The dense update (see [`step_dense`](super::step_dense)): the core's one pass over the
/// parameter's, the moments' and the gradient's storage, in place when not shared.
pub(super) fn step_dense<const D: usize>(
    [param, exp_avg, exp_avg_sq]: [Tensor<D>; 3],
    grad: Tensor<D>,
    scalars: &StepScalars,
) -> Result<[Tensor<D>; 3], ([Tensor<D>; 3], Tensor<D>)> {
    if !(fusable(&param) && fusable_moments(&exp_avg, &exp_avg_sq) && fusable(&grad)) {
        return Err(([param, exp_avg, exp_avg_sq], grad));
    }
    let [_, d] = super::as_rows(&param.shape());
    let len = param.shape().num_elements();
    let (mut p, mut m, mut v) = (primitive(param), primitive(exp_avg), primitive(exp_avg_sq));
    let g = primitive(grad);
    let p_values = &mut p.storage_mut::<f32>()[..len];
    let grad = &g.as_slice::<f32>().expect("contiguous f32")[..len];
    with_moments!(m, v, len, {
        sparse_adam_core::update_dense(p_values, m, v, grad, d, scalars)
    });
    Ok([tensor(p), tensor(m), tensor(v)])
}

/// A parameter's first state on huge pages (see [`fresh_table`](super::fresh_table)): the
/// moments made zero in `dtype` ([`zeros_on_huge_pages`]), the parameter copied once
/// ([`copy_to_huge_pages`]). `Err(param)` untouched when `param` cannot take the fused
/// path, its moments would not be of a type the fused path stores, or it holds less than
/// [`HUGE_TABLE_BYTES`](sparse_adam_core::pages::HUGE_TABLE_BYTES).
pub(super) fn fresh_table<const D: usize>(
    param: Tensor<D>,
    dtype: DType,
) -> Result<[Tensor<D>; 3], Tensor<D>> {
    let len = param.shape().num_elements();
    let fits = matches!(dtype, DType::F32 | DType::BF16 | DType::F16);
    if !(fusable(&param) && fits && is_huge_table(len)) {
        return Err(param);
    }
    let shape = param.shape();
    let source = primitive(param);
    let values = copy_to_huge_pages(&source.as_slice::<f32>().expect("contiguous f32")[..len]);
    drop(source);
    let moment = || match dtype {
        DType::BF16 => TensorData::new(zeros_on_huge_pages::<bf16>(len), shape.clone()),
        DType::F16 => TensorData::new(zeros_on_huge_pages::<f16>(len), shape.clone()),
        _ => TensorData::new(zeros_on_huge_pages::<f32>(len), shape.clone()),
    };
    let table = [TensorData::new(values, shape.clone()), moment(), moment()];
    Ok(table.map(|data| tensor(FlexTensor::from_data(data))))
}

/// A moment loaded from a record, copied once onto huge pages as [`fresh_table`] makes new
/// ones (see [`loaded_moment`](super::loaded_moment)). `Err(moment)` untouched when it is
/// not on flex in a moment type of the fused path, or its table holds less than
/// [`HUGE_TABLE_BYTES`](sparse_adam_core::pages::HUGE_TABLE_BYTES) in `f32`, the measure `fresh_table` takes.
pub(super) fn onto_huge_pages<const D: usize>(moment: Tensor<D>) -> Result<Tensor<D>, Tensor<D>> {
    let len = moment.shape().num_elements();
    let dtype = moment.dtype();
    let fits = matches!(dtype, DType::F32 | DType::BF16 | DType::F16);
    if !(on_flex(&moment) && fits && is_huge_table(len)) {
        return Err(moment);
    }
    let shape = moment.shape();
    let source = primitive(moment);
    let checked = "contiguous, of the checked dtype";
    let data = match dtype {
        DType::BF16 => {
            let values = &source.as_slice::<bf16>().expect(checked)[..len];
            TensorData::new(copy_to_huge_pages(values), shape)
        }
        DType::F16 => {
            let values = &source.as_slice::<f16>().expect(checked)[..len];
            TensorData::new(copy_to_huge_pages(values), shape)
        }
        _ => {
            let values = &source.as_slice::<f32>().expect(checked)[..len];
            TensorData::new(copy_to_huge_pages(values), shape)
        }
    };
    Ok(tensor(FlexTensor::from_data(data)))
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Device, Int};
    use sparse_adam_core::Hyperparameters;
    use sparse_adam_core::pages::HUGE_TABLE_BYTES;

    use super::super::composed;
    use super::*;

    fn table(seed: f32, n: usize, d: usize) -> Tensor<2> {
        let values: Vec<f32> = (0..n * d)
            .map(|i| ((i as f32 + seed) * 0.37).sin())
            .collect();
        Tensor::from_data(TensorData::new(values, [n, d]), &Device::flex())
    }

    fn bits<const D: usize>(t: Tensor<D>) -> Vec<u32> {
        let values = t.into_data().try_into_vec::<f32>().unwrap();
        values.into_iter().map(f32::to_bits).collect()
    }

    fn storage_ptr<const D: usize>(t: &Tensor<D>) -> *const f32 {
        primitive(t.clone()).as_slice::<f32>().unwrap().as_ptr()
    }

    /// A first state of a table of at least 64 MiB is made here: the parameter's values
    /// kept bit for bit (in new memory), the moments zero in the asked type, shaped like
    /// it; a smaller table is handed back untouched, to Burn's zeros.
    #[test]
    fn a_large_tables_first_state_keeps_the_parameter_and_zeroes_the_moments() {
        let (n, d) = (HUGE_TABLE_BYTES / 4 / 256, 256);
        let param = table(3.0, n, d);
        let expected = bits(param.clone());
        for dtype in [DType::F32, DType::BF16, DType::F16] {
            let Ok([p, m, v]) = fresh_table(param.clone(), dtype) else {
                panic!("a {n} x {d} f32 table on flex takes the fused path");
            };
            assert_ne!(storage_ptr(&p), storage_ptr(&param), "copied to new memory");
            assert!(bits(p) == expected, "the parameter's values changed");
            for moment in [m, v] {
                assert_eq!((moment.dims(), moment.dtype()), ([n, d], dtype));
                let zeros = moment
                    .cast(DType::F32)
                    .into_data()
                    .try_to_vec::<f32>()
                    .unwrap();
                assert!(zeros.iter().all(|&x| x.to_bits() == 0), "not all +0.0");
            }
        }
        let small = table(3.0, n / 2 - 1, d);
        let Err(back) = fresh_table(small.clone(), DType::F32) else {
            panic!("a table under {HUGE_TABLE_BYTES} bytes takes Burn's zeros");
        };
        assert_eq!(storage_ptr(&back), storage_ptr(&small));
    }

    /// A loaded moment of a table of at least 64 MiB moves to new memory with every bit and
    /// its type kept, in each moment type; a smaller one, or one in a type the fused path
    /// does not store (`f64`), is handed back untouched.
    #[test]
    fn a_large_loaded_moment_moves_with_its_values() {
        let (n, d) = (HUGE_TABLE_BYTES / 4 / 256, 256);
        let moment = table(5.0, n, d);
        for dtype in [DType::F32, DType::BF16, DType::F16] {
            let loaded = moment.clone().cast(dtype);
            let expected = loaded.clone().into_data();
            let Ok(moved) = onto_huge_pages(loaded.clone()) else {
                panic!("a {n} x {d} {dtype:?} moment on flex moves");
            };
            assert_eq!((moved.dims(), moved.dtype()), ([n, d], dtype));
            let (from, to) = (primitive(loaded), primitive(moved.clone()));
            assert_ne!(
                from.bytes().as_ptr(),
                to.bytes().as_ptr(),
                "copied to new memory"
            );
            assert_eq!(
                moved.into_data().as_bytes(),
                expected.as_bytes(),
                "values changed"
            );
        }
        let small = table(5.0, n / 2 - 1, d);
        let Err(back) = onto_huge_pages(small.clone()) else {
            panic!("a moment under {HUGE_TABLE_BYTES} bytes stays where it is");
        };
        assert_eq!(storage_ptr(&back), storage_ptr(&small));
        let wide = table(5.0, n, d).cast(DType::F64);
        assert!(
            onto_huge_pages(wide).is_err(),
            "f64 is not a moment type of the fused path"
        );
    }

    /// A lookup's output is built in the memory of an earlier one only once nobody holds
    /// that one any more, and a tensor still held keeps its values whatever comes after it.
    #[test]
    fn lookups_reuse_the_memory_of_dropped_outputs_only() {
        let weight = table(1.0, 10, 4);
        let gather = |host: &[i64]| {
            let dims = [1, host.len()];
            gather(weight.clone(), host, dims).ok().unwrap()
        };
        let first = gather(&[1, 2, 3]);
        let first_ptr = storage_ptr(&first);
        let first_bits = bits(first.clone());
        let second = gather(&[4, 5, 6]);
        assert_ne!(
            storage_ptr(&second),
            first_ptr,
            "a held output is not reused"
        );
        assert_eq!(bits(first.clone()), first_bits);

        drop(first);
        let second_bits = bits(second.clone());
        let third = gather(&[7, 8]);
        assert_eq!(storage_ptr(&third), first_ptr, "a dropped output is reused");
        let ids =
            Tensor::<2, Int>::from_data(TensorData::new(vec![7i64, 8], [1, 2]), &Device::flex());
        assert_eq!(bits(third), bits(composed::gather(weight.clone(), ids)));
        assert_eq!(bits(second), second_bits);
    }

    #[test]
    fn the_fused_row_update_is_the_composed_one_bit_for_bit() {
        let (n, d) = (12, 5);
        let rows = [0i64, 3, 4, 11];
        let scalars = StepScalars::new(Hyperparameters::default(), 0.05, 3);
        let tables = || {
            [
                table(0.0, n, d),
                table(1.0, n, d).abs(),
                table(2.0, n, d).abs(),
            ]
        };
        let values = table(3.0, rows.len(), d);
        let fused = step_rows(tables(), &rows, values.clone(), &scalars)
            .ok()
            .unwrap();
        let composed = composed::step_rows(tables(), &rows, values, &scalars);
        for (f, c) in fused.into_iter().zip(composed) {
            assert_eq!(bits(f), bits(c));
        }
    }

    /// Compact moments: the fused row and dense updates over `bf16` or `f16` storage are
    /// the composed ones (widen, update, round once) bit for bit, and keep the type; rows
    /// not touched keep their stored moments.
    #[test]
    fn compact_moments_fuse_bit_for_bit() {
        let (n, d) = (12, 5);
        let rows = [0i64, 3, 4, 11];
        let hyper = Hyperparameters {
            weight_decay: 0.5,
            ..Default::default()
        };
        let scalars = StepScalars::new(hyper, 0.05, 3);
        for dtype in [DType::BF16, DType::F16] {
            let tables = || {
                [
                    table(0.0, n, d),
                    table(1.0, n, d).mul_scalar(0.1).cast(dtype),
                    table(2.0, n, d).abs().mul_scalar(0.01).cast(dtype),
                ]
            };
            let raw = |t: Tensor<2>| t.into_data().as_bytes().to_vec();
            let values = table(3.0, rows.len(), d);
            let fused = step_rows(tables(), &rows, values.clone(), &scalars)
                .ok()
                .unwrap();
            let composed = composed::step_rows(tables(), &rows, values, &scalars);
            for (f, c) in fused.into_iter().zip(composed) {
                assert_eq!(f.dtype(), c.dtype());
                assert_eq!(raw(f), raw(c), "{dtype:?} rows");
            }
            // The dense pass, with untouched rows (zero gradient rows).
            let mut grad: Vec<f32> = (0..n * d).map(|i| (i as f32 * 0.71).cos()).collect();
            grad[..2 * d].fill(0.0);
            let grad = Tensor::<2>::from_data(TensorData::new(grad, [n, d]), &Device::flex());
            let fused = step_dense(tables(), grad.clone(), &scalars).ok().unwrap();
            let [tp, tm, tv] = tables();
            let composed = super::super::composed_dense(tp, tm, tv, grad, &scalars);
            let [_, before_m, _] = tables();
            let before_m = raw(before_m);
            for (i, (f, c)) in fused.into_iter().zip(composed).enumerate() {
                assert_eq!(f.dtype(), if i == 0 { DType::F32 } else { dtype });
                if i == 1 {
                    assert_eq!(raw(f.clone())[..4 * d], before_m[..4 * d], "untouched rows");
                }
                assert_eq!(raw(f), raw(c), "{dtype:?} dense");
            }
        }
    }

    /// The dense one-pass update is the masked update in Burn operations, bit for bit, on
    /// parameters of rank 1, 2 and 3, with rows that are zero, `-0.0`, partly zero or carry
    /// a NaN; a parameter shared with another holder is copied, not changed.
    #[test]
    fn the_fused_dense_update_is_the_composed_one_bit_for_bit() {
        fn check<const D: usize>(shape: [usize; D]) {
            let len: usize = shape.iter().product();
            let n = shape[0];
            let width = len / n;
            let tensor = |seed: f32| -> Tensor<D> { table(seed, len, 1).reshape(shape) };
            let mut grad: Vec<f32> = (0..len).map(|i| ((i as f32) * 0.71).cos()).collect();
            for (r, row) in grad.chunks_exact_mut(width).enumerate() {
                match r % 4 {
                    0 => row.fill(0.0),
                    1 => row.fill(-0.0),
                    2 if width > 1 => row[1..].fill(0.0),
                    _ if r % 7 == 3 => row[0] = f32::NAN,
                    _ => {}
                }
            }
            let grad = Tensor::<D>::from_data(TensorData::new(grad, shape), &Device::flex());
            let tables = || [tensor(0.0), tensor(1.0), tensor(2.0).abs()];
            let scalars = StepScalars::new(Hyperparameters::default(), 0.05, 3);
            let [p, m, v] = step_dense(tables(), grad.clone(), &scalars).ok().unwrap();
            let [tp, tm, tv] = tables();
            let [cp, cm, cv] = super::super::composed_dense(tp, tm, tv, grad, &scalars);
            assert_eq!(bits(p), bits(cp), "{shape:?}");
            assert_eq!(bits(m), bits(cm), "{shape:?}");
            assert_eq!(bits(v), bits(cv), "{shape:?}");
        }
        check([37]);
        check([41, 5]);
        check([9, 2, 3]);
        // A shared tensor: its other holder keeps its values.
        let param = table(0.0, 6, 3);
        let held = param.clone();
        let zeros = || Tensor::<2>::zeros([6, 3], &Device::flex());
        let scalars = StepScalars::new(Hyperparameters::default(), 0.1, 1);
        let [stepped, ..] = step_dense([param, zeros(), zeros()], table(4.0, 6, 3), &scalars)
            .ok()
            .unwrap();
        assert_ne!(bits(stepped), bits(held.clone()));
        assert_eq!(bits(held), bits(table(0.0, 6, 3)));
    }

    #[test]
    fn a_shared_table_is_copied_not_changed() {
        let (n, d) = (6, 3);
        let param = table(0.0, n, d);
        let held = param.clone();
        let before = bits(held.clone());
        let scalars = StepScalars::new(Hyperparameters::default(), 0.1, 1);
        let zeros = || Tensor::<2>::zeros([n, d], &Device::flex());
        let [stepped, ..] = step_rows([param, zeros(), zeros()], &[2], table(5.0, 1, d), &scalars)
            .ok()
            .unwrap();
        assert_eq!(bits(held), before, "the other holder keeps its values");
        assert_ne!(bits(stepped), before);
    }

    #[test]
    fn gather_sum_and_coalesce_are_the_composed_ones() {
        let device = Device::flex();
        let weight = table(0.0, 7, 4);
        let host = [6i64, 0, 6, 2];
        let indices = Tensor::<2, Int>::from_data(TensorData::new(host.to_vec(), [2, 2]), &device);
        let fused = gather(weight.clone(), &host, [2, 2]).ok().unwrap();
        assert_eq!(bits(fused), bits(composed::gather(weight, indices)));

        let grad: Tensor<3> = table(1.0, 4, 4).reshape([2, 2, 4]);
        let slots = [2i64, 0, 2, -1];
        let fused = sum_per_row(grad.clone(), &slots, 3).ok().unwrap();
        assert_eq!(bits(fused), bits(composed::sum_per_row(grad, &slots, 3)));

        let parts = || {
            vec![
                (vec![1i64, 5], table(2.0, 2, 4)),
                (vec![0, 5], table(3.0, 2, 4)),
            ]
        };
        let (rows, fused) = coalesce(parts()).ok().unwrap();
        let (rows_c, composed) = composed::coalesce(parts(), &device);
        assert_eq!(rows, rows_c);
        assert_eq!(bits(fused), bits(composed));

        // Three lookups of one table in one pass: rows shared, repeated, padding, and a
        // lookup of padding only; against each lookup's composed sum, composed-coalesced.
        let lookups = || -> Vec<super::super::LookupGrad> {
            vec![
                (
                    vec![1, 5],
                    vec![1, 0, 1, -1],
                    table(4.0, 4, 4).reshape([1, 4, 4]),
                ),
                (vec![], vec![-1, -1], table(5.0, 2, 4).reshape([2, 1, 4])),
                (
                    vec![0, 5],
                    vec![1, 1, 0],
                    table(6.0, 3, 4).reshape([3, 1, 4]),
                ),
            ]
        };
        let (rows, fused) = sum_lookups(lookups()).ok().unwrap().unwrap();
        let parts = lookups()
            .into_iter()
            .filter(|(rows, _, _)| !rows.is_empty())
            .map(|(rows, slots, grad)| {
                let k = rows.len();
                (rows, composed::sum_per_row(grad, &slots, k))
            })
            .collect();
        let (rows_c, composed) = composed::coalesce(parts, &device);
        assert_eq!(rows, [0, 1, 5]);
        assert_eq!(rows, rows_c);
        assert_eq!(bits(fused), bits(composed));
        let padding_only = vec![(vec![], vec![-1], table(7.0, 1, 4).reshape([1, 1, 4]))];
        assert!(sum_lookups(padding_only).ok().unwrap().is_none());
    }

    #[test]
    fn autodiff_or_other_dtypes_take_the_composed_path() {
        let tracked = table(0.0, 3, 2).autodiff();
        assert!(gather(tracked, &[0], [1, 1]).is_err());
        let half = table(0.0, 3, 2).cast(burn::tensor::FloatDType::F64);
        assert!(gather(half, &[0], [1, 1]).is_err());
    }
}
