//! Shared helpers of the 0.2 line's tests.

use burn::tensor::Device;

/// The device the tests train on: Burn 0.22's CPU backend, flex, with autodiff.
pub fn device() -> Device {
    Device::flex().autodiff()
}

/// A tensor's values, row-major.
pub fn values<const D: usize>(tensor: burn::tensor::Tensor<D>) -> Vec<f32> {
    tensor
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("float data")
}

/// Every parameter's state in a `ModuleOptimizer` over the `SparseAdam` rule, read back from
/// its burnpack record (`OptimizerRecord`'s fields are crate-private in burn-optim 0.22):
/// entries `"{param_id}.step"`, `"{param_id}.exp_avg"`, `"{param_id}.exp_avg_sq"`. The
/// moments are row-major.
pub fn module_optimizer_states(
    optim: &burn::optim::ModuleOptimizer,
) -> std::collections::HashMap<u64, (usize, Vec<f32>, Vec<f32>)> {
    use std::collections::HashMap;
    let bytes = optim.into_bytes().expect("the record serializes");
    let reader = burn_pack::Reader::from_bytes(bytes).expect("the record reads back");
    let steps: HashMap<u64, usize> = reader
        .scalars()
        .iter()
        .filter_map(|(name, value)| {
            let id = name.strip_suffix(".step")?.parse().ok()?;
            Some((id, usize::try_from(*value).ok()?))
        })
        .collect();
    let mut moments: HashMap<u64, (Vec<f32>, Vec<f32>)> = HashMap::new();
    for tensor in reader.into_tensors().expect("the tensors read back") {
        let (name, dtype, shape, _, bytes) = tensor.into_parts().expect("a tensor");
        let data = burn::tensor::TensorData::from_bytes(bytes, shape, dtype);
        let data = data.convert::<f32>().try_into_vec::<f32>().expect("f32 moments");
        let (id, field) = name.split_once('.').expect("named {id}.{field}");
        let entry = moments.entry(id.parse().expect("an id")).or_default();
        match field {
            "exp_avg" => entry.0 = data,
            "exp_avg_sq" => entry.1 = data,
            other => panic!("unexpected state entry {other}"),
        }
    }
    steps
        .into_iter()
        .map(|(id, step)| {
            let (m, v) = moments.remove(&id).unwrap_or_default();
            (id, (step, m, v))
        })
        .collect()
}
