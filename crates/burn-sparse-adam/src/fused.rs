//! The fused row update: one pass over the touched rows that reads and writes the parameter
//! and both moments in place, for backends whose tensors this crate can reach.
//!
//! The composed row path (gather three `[k, d]` blocks, a dozen tensor operations, three
//! additive scatters) is correct on every backend but makes about twenty passes over the
//! touched rows and allocates for each. Where the tensors' memory is reachable, this module
//! evaluates the same [`sparse_adam_delta`] on each `f32` lane instead, once: the results are
//! bit for bit the composed path's.
//!
//! - burn-ndarray (feature `ndarray`): `f32` tensors in standard layout. Tensors shared with
//!   another owner are copied first (Burn's copy-on-write), so nobody else sees the change.
//!
//! Anything else (another backend, another float type, a strided layout) is handed back
//! untouched and takes the composed path.

use burn::tensor::{backend::Backend, Tensor};

#[cfg(feature = "ndarray")]
use crate::update::sparse_adam_delta;
use crate::update::StepScalars;

/// The parameter, `exp_avg` and `exp_avg_sq` of an `[n, d]` table.
pub(crate) type Table<B> = [Tensor<B, 2>; 3];

/// Updates rows `rows` (sorted, unique, in range) of `table` with their gradients `values`
/// (`[rows.len(), d]`), in one pass; or hands `table` back unchanged when this backend or
/// layout has no fused update.
pub(crate) fn step_rows<B: Backend>(
    table: Table<B>,
    rows: &[i64],
    values: &Tensor<B, 2>,
    scalars: &StepScalars,
) -> Result<Table<B>, Table<B>> {
    #[cfg(feature = "ndarray")]
    {
        ndarray::step_rows(table, rows, values, scalars)
    }
    #[cfg(not(feature = "ndarray"))]
    {
        let _ = (rows, values, scalars);
        Err(table)
    }
}

#[cfg(feature = "ndarray")]
mod ndarray {
    use std::any::Any;

    use burn::tensor::{backend::Backend, Tensor, TensorPrimitive};
    use burn_ndarray::NdArrayTensor;

    use super::{sparse_adam_delta, StepScalars, Table};

    /// The burn-ndarray tensor behind `tensor`, if `B` is burn-ndarray.
    fn reach<B: Backend>(tensor: Tensor<B, 2>) -> Result<NdArrayTensor, Tensor<B, 2>> {
        let TensorPrimitive::Float(primitive) = tensor.into_primitive() else {
            unreachable!("a float tensor's primitive is a float primitive")
        };
        let boxed: Box<dyn Any> = Box::new(primitive);
        match boxed.downcast::<NdArrayTensor>() {
            Ok(tensor) => Ok(*tensor),
            Err(boxed) => Err(back(boxed)),
        }
    }

    /// The tensor of `B` holding a primitive reached by [`reach`].
    fn back<B: Backend>(boxed: Box<dyn Any>) -> Tensor<B, 2> {
        let primitive = boxed
            .downcast::<B::FloatTensorPrimitive>()
            .expect("the primitive came from this backend");
        Tensor::from_primitive(TensorPrimitive::Float(*primitive))
    }

    fn release<B: Backend>(tensor: NdArrayTensor) -> Tensor<B, 2> {
        back(Box::new(tensor))
    }

    pub(super) fn step_rows<B: Backend>(
        table: Table<B>,
        rows: &[i64],
        values: &Tensor<B, 2>,
        scalars: &StepScalars,
    ) -> Result<Table<B>, Table<B>> {
        let [param, exp_avg, exp_avg_sq] = table;
        let param = match reach(param) {
            Ok(param) => param,
            Err(param) => return Err([param, exp_avg, exp_avg_sq]),
        };
        // One backend for all four: if the parameter is burn-ndarray's, so are the others.
        let same = |t: Tensor<B, 2>| reach(t).unwrap_or_else(|_| unreachable!("one backend"));
        let (exp_avg, exp_avg_sq, grad) = (same(exp_avg), same(exp_avg_sq), same(values.clone()));
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
        for (grad_row, &row) in g.chunks_exact(d).zip(rows) {
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
    use crate::row_grads::RowGrad;
    use crate::sparse_adam::composed_step_rows;
    use crate::update::StepScalars;

    /// The fused update is the composed one, bit for bit, and leaves other rows alone.
    #[test]
    fn fused_equals_composed_bit_for_bit() {
        let device = Default::default();
        let table = || {
            [
                Tensor::<NdArray, 2>::random([50, 7], Distribution::Normal(0.0, 1.0), &device),
                Tensor::random([50, 7], Distribution::Normal(0.0, 0.1), &device),
                Tensor::random([50, 7], Distribution::Uniform(0.0, 0.01), &device),
            ]
        };
        let table = table();
        let rows = vec![0, 3, 4, 17, 49];
        let values = Tensor::random([5, 7], Distribution::Normal(0.0, 1.0), &device);
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
                .unwrap_or_else(|_| panic!("burn-ndarray f32 tensors take the fused path"));
            for (f, c) in fused.into_iter().zip(composed) {
                assert_eq!(f.into_data(), c.into_data());
            }
        }
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

    fn param_zeros(device: &burn::tensor::Device<NdArray>) -> Tensor<NdArray, 2> {
        Tensor::zeros([4, 2], device)
    }
}
