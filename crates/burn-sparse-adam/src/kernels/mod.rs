//! Kernels: the row path's hot loops, and the one dispatcher that picks, for each call, the
//! fastest implementation the backend allows and says which ran.
//!
//! - [`gather`]: a lookup's output rows, copied from the table;
//! - [`sum_per_row`]: a lookup's gradient summed per touched row (duplicates added in lookup
//!   order);
//! - [`step_rows`]: the row update of the parameter and both moments, reporting the
//!   [`KernelPath`] it took;
//! - [`step_dense`]: the same update from a gradient of the parameter's shape, on its rows
//!   with a non-zero entry (the dense path), reporting its path too.
//!
//! Each tries, in order: the fused burn-ndarray loops (feature `ndarray`: the core's kernels
//! over the tensors' `f32` storage, also under burn-autodiff), the fused CubeCL row update on
//! burn-wgpu without burn-fusion (feature `wgpu`, [`step_rows`] only), then the composed
//! path, in Burn tensor operations, which is correct on every backend. The fused kernels
//! give the composed results bit for bit (tested below; the wgpu kernel on the drivers
//! tested, see its module).

use burn::tensor::{backend::Backend, Int, Tensor};

use crate::formula::StepScalars;

mod composed;
#[cfg(feature = "ndarray")]
mod ndarray;
#[cfg(any(feature = "ndarray", feature = "wgpu"))]
mod primitive;
#[cfg(feature = "ndarray")]
mod recycle;
#[cfg(feature = "wgpu")]
mod wgpu;

pub(crate) use composed::{index_tensor, to_rank};

/// The parameter, `exp_avg` and `exp_avg_sq` of one `[n, d]` parameter: what a row update
/// reads and writes.
pub(crate) type ParamAndMoments<B> = [Tensor<B, 2>; 3];

/// Which implementation of the row update ran for a parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelPath {
    /// The core's loop over burn-ndarray's `f32` storage, in place (feature `ndarray`).
    FusedNdArray,
    /// One CubeCL kernel on burn-wgpu without burn-fusion, in place (feature `wgpu`).
    FusedWgpu,
    /// Burn tensor operations: gathers, the formula on `[k, d]` blocks, additive scatters
    /// (the row path on any other backend or layout), or the masked update of the dense
    /// path.
    Composed,
}

/// Rows `host` (the indices of `indices`, `[batch, seq]`, in range) of the `[n, d]` `table`,
/// as a `[batch, seq, d]` tensor of `table`'s backend, outside autodiff's graph.
pub(crate) fn gather<B: Backend>(
    table: &Tensor<B, 2>,
    indices: Tensor<B, 2, Int>,
    host: &[i64],
) -> Tensor<B, 3> {
    #[cfg(feature = "ndarray")]
    if let Some(rows) = ndarray::gather(table, host, indices.dims()) {
        return rows;
    }
    let _ = host;
    composed::gather(table, indices)
}

/// The largest buffer, in bytes, that `device` allocates at once, where this crate can tell:
/// a burn-wgpu device (feature `wgpu`), whose cubecl page size is the adapter's
/// storage-binding limit (rounded down to its alignment, as cubecl's allocator rounds it).
/// `None` elsewhere.
pub(crate) fn allocation_limit<D: 'static>(device: &D) -> Option<u64> {
    #[cfg(feature = "wgpu")]
    if let Some(device) =
        (device as &dyn std::any::Any).downcast_ref::<burn::backend::wgpu::WgpuDevice>()
    {
        use cubecl::Runtime;
        let client = burn::backend::wgpu::WgpuRuntime::client(device);
        let memory = &client.properties().memory;
        let alignment = memory.alignment.max(1);
        return Some(memory.max_page_size / alignment * alignment);
    }
    let _ = device;
    None
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

/// The `[k, d]` sum, per touched row, of a lookup's `[batch, seq, d]` gradient: position `i`
/// adds to row `slots[i]` (`-1`: a padding position, which adds nothing), duplicates in
/// lookup order. A width of 0 gives `[k, 0]`.
pub(crate) fn sum_per_row<B: Backend>(grad: Tensor<B, 3>, slots: &[i64], k: usize) -> Tensor<B, 2> {
    let [_, _, d] = grad.dims();
    if d == 0 {
        return Tensor::zeros([k, 0], &grad.device());
    }
    #[cfg(feature = "ndarray")]
    if let Some(summed) = ndarray::sum_per_row_fused(&grad, slots, k) {
        return summed;
    }
    composed::sum_per_row(grad, slots, k)
}

/// Updates rows `rows` (sorted, unique, in range) of a parameter and its moments with their
/// gradients `values` (`[rows.len(), d]`, `d > 0`), and says which implementation ran.
pub(crate) fn step_rows<B: Backend>(
    table: ParamAndMoments<B>,
    rows: &[i64],
    values: &Tensor<B, 2>,
    scalars: &StepScalars,
) -> (ParamAndMoments<B>, KernelPath) {
    // Each fused kernel hands back the tensors that are not its backend's, for the next.
    #[cfg(feature = "ndarray")]
    let table = match ndarray::step_rows(table, rows, values, scalars) {
        Ok(table) => return (table, KernelPath::FusedNdArray),
        Err(table) => table,
    };
    #[cfg(feature = "wgpu")]
    let table = match wgpu::step_rows(table, rows, values, scalars) {
        Ok(table) => return (table, KernelPath::FusedWgpu),
        Err(table) => table,
    };
    (
        composed::step_rows(table, rows, values, scalars),
        KernelPath::Composed,
    )
}

/// A parameter's first state: `[param, exp_avg, exp_avg_sq]` with zero moments shaped like
/// `param`.
///
/// On the fused burn-ndarray path (feature `ndarray`) a table of at least 64 MiB is put on
/// huge pages ([`sparse_adam_core::pages`]): the moments are made in memory advised before
/// its first write, and the parameter is copied once into memory advised the same way, so
/// that the row update's scattered rows stop missing the TLB. The values are those of
/// Burn's zeros and of `param`; only where they live differs. Every other path makes Burn's
/// zeros and hands `param` back as it came.
pub(crate) fn fresh_table<B: Backend, const D: usize>(param: Tensor<B, D>) -> [Tensor<B, D>; 3] {
    #[cfg(feature = "ndarray")]
    let param = match ndarray::fresh_table(param) {
        Ok(table) => return table,
        Err(param) => param,
    };
    let (exp_avg, exp_avg_sq) = (param.zeros_like(), param.zeros_like());
    [param, exp_avg, exp_avg_sq]
}

/// A table loaded from a record (a resumed run's parameter or moment), where the row update
/// is fastest on it: on the fused burn-ndarray path (feature `ndarray`, with or without
/// burn-autodiff) a table of at least 64 MiB is copied once onto huge pages, as
/// [`fresh_table`] makes a new one (a record's values land in memory Burn allocated, on
/// small pages). The values, and whether the tensor is tracked, are kept; every other tensor
/// comes back as it came.
pub(crate) fn loaded_table<B: Backend, const D: usize>(table: Tensor<B, D>) -> Tensor<B, D> {
    #[cfg(feature = "ndarray")]
    let table = match ndarray::onto_huge_pages(table) {
        Ok(moved) => return moved,
        Err(same) => same,
    };
    table
}

/// The dense update of a parameter and its moments from a gradient of the parameter's
/// shape: rows (slices along dim 0) with a non-zero gradient entry take the update, the
/// others keep their bits. Says which implementation ran: the core's one pass over the four
/// tables on burn-ndarray (feature `ndarray`), the masked update in Burn operations
/// elsewhere, with the same bits.
pub(crate) fn step_dense<B: Backend, const D: usize>(
    table: [Tensor<B, D>; 3],
    grad: Tensor<B, D>,
    scalars: &StepScalars,
) -> ([Tensor<B, D>; 3], KernelPath) {
    #[cfg(feature = "ndarray")]
    let (table, grad) = match ndarray::step_dense(table, grad, scalars) {
        Ok(table) => return (table, KernelPath::FusedNdArray),
        Err(given_back) => given_back,
    };
    (
        composed::step_dense(table, grad, scalars),
        KernelPath::Composed,
    )
}

#[cfg(all(test, feature = "ndarray"))]
mod tests {
    use burn::backend::NdArray;
    use burn::tensor::{Distribution, Tensor};

    use crate::config::SparseAdamConfig;
    use crate::formula::StepScalars;

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
        let ([param, ..], path) = super::step_rows(table, &[2], &values, &scalars);
        assert_eq!(path, super::KernelPath::FusedNdArray);
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
            values(super::ndarray::gather(&table, &indices, [2, 2])),
            Some(expected.clone())
        );
        let tracked = Tensor::<Autodiff<NdArray>, 2>::from_inner(table).require_grad();
        let gathered = super::ndarray::gather(&tracked, &indices, [1, 4]).unwrap();
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
        let held = super::ndarray::gather(&table, &[1, 2, 3, 4], [2, 2]).unwrap();
        let before = values(&held);
        let summed = super::ndarray::sum_per_row_fused(&held, &[0, 0, 1, -1], 2).unwrap();
        let summed_before = summed.clone().into_data().to_vec::<f32>().unwrap();
        for step in 0..20i64 {
            let other = super::ndarray::gather(&table, &[step, 49 - step, 7, 7], [2, 2]).unwrap();
            let _ = super::ndarray::sum_per_row_fused(&other, &[0, 1, 2, 2], 3).unwrap();
        }
        assert_eq!(values(&held), before);
        assert_eq!(summed.into_data().to_vec::<f32>().unwrap(), summed_before);
    }

    /// The fused sum per row adds duplicates in lookup order and skips padding, as the
    /// composed scatter does, bit for bit.
    #[test]
    fn fused_sum_per_row_equals_the_composed_scatter() {
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
        let summed = super::ndarray::sum_per_row_fused(&grad, &slots, 3).unwrap();
        assert_eq!(summed.dims(), [3, 4]);
        assert_eq!(summed.into_data().to_vec::<f32>().unwrap(), expected);
    }

    /// The dense one pass is the composed masked update, bit for bit, on parameters of rank
    /// 1, 2 and 3 whose gradient rows are zero, `-0.0`, partly zero or carry a NaN; a
    /// parameter shared with another owner is copied, not changed.
    #[test]
    fn fused_dense_equals_composed_bit_for_bit() {
        fn check<const D: usize>(shape: [usize; D]) {
            let device = Default::default();
            let len: usize = shape.iter().product();
            let width = len / shape[0];
            let tensor = |seed: f32| {
                let values: Vec<f32> = (0..len).map(|i| ((i as f32 + seed) * 0.37).sin()).collect();
                Tensor::<NdArray, 1>::from_floats(values.as_slice(), &device).reshape(shape)
            };
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
            let grad = Tensor::<NdArray, 1>::from_floats(grad.as_slice(), &device).reshape(shape);
            let tables = || [tensor(0.0), tensor(1.0), tensor(2.0).abs()];
            let bits = |t: Tensor<NdArray, D>| {
                let values = t.into_data().to_vec::<f32>().unwrap();
                values.into_iter().map(f32::to_bits).collect::<Vec<_>>()
            };
            for config in [
                SparseAdamConfig::new(),
                SparseAdamConfig::new().with_weight_decay(Some(2.0)),
            ] {
                let scalars = StepScalars::new(&config, 0.05, 3);
                let held = tables();
                let before = bits(held[0].clone());
                let (fused, path) = super::step_dense(held.clone(), grad.clone(), &scalars);
                assert_eq!(path, super::KernelPath::FusedNdArray);
                let composed = super::composed::step_dense(tables(), grad.clone(), &scalars);
                for (f, c) in fused.into_iter().zip(composed) {
                    assert_eq!(bits(f), bits(c), "{shape:?}, {config:?}");
                }
                assert_eq!(
                    bits(held[0].clone()),
                    before,
                    "the shared parameter kept its values"
                );
            }
        }
        check([37]);
        check([41, 5]);
        check([9, 2, 3]);
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
    use crate::formula::StepScalars;

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
        let ([param, exp_avg, _], path) = super::step_rows(table, &[2], &values, &scalars);
        assert_eq!(path, super::KernelPath::FusedWgpu);
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
        let Err([param, ..]) = super::wgpu::step_rows(table, &[2], &values, &scalars) else {
            panic!("a transposed table has no fused update");
        };
        assert_eq!(param.into_data().to_vec::<f32>().unwrap(), vec![1.0; 8]);
    }
}

#[cfg(all(test, any(feature = "ndarray", feature = "wgpu")))]
mod test_support {
    use burn::tensor::{backend::Backend, Distribution, Tensor};

    use crate::config::SparseAdamConfig;
    use crate::formula::StepScalars;

    /// `B`'s fused update of rows `rows` of a random `[n, d]` table equals the composed one,
    /// bit for bit, with PyTorch's defaults, with other betas, epsilon and maximize, and with
    /// weight decay.
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
        for config in [
            SparseAdamConfig::new(),
            SparseAdamConfig::new()
                .with_beta_1(0.5)
                .with_epsilon(0.1)
                .with_maximize(true),
            SparseAdamConfig::new().with_weight_decay(Some(0.5)),
        ] {
            let scalars = StepScalars::new(&config, 0.03, 4);
            let composed = super::composed::step_rows(table.clone(), &rows, &values, &scalars);
            let (fused, path) = super::step_rows(table.clone(), &rows, &values, &scalars);
            assert_ne!(
                path,
                super::KernelPath::Composed,
                "f32 tensors of this backend take a fused path"
            );
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
