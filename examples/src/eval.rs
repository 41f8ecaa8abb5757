//! The evaluation's tensor part on Burn 0.21: cosine similarities of input vectors,
//! computed on the evaluation backend. The pairs, the exact AUC and the ranking are the
//! shared crate's ([`wordnet_app::eval`], re-exported here).

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

pub use wordnet_app::eval::{rank_neighbours, roc_auc, Aucs, EvalPairs};

fn index_tensor<B: Backend>(
    nodes: impl Iterator<Item = u32>,
    device: &B::Device,
) -> Tensor<B, 1, Int> {
    let data: Vec<i64> = nodes.map(i64::from).collect();
    let len = data.len();
    Tensor::from_data(TensorData::new(data, [len]), device)
}

fn host<B: Backend, const D: usize>(tensor: Tensor<B, D>) -> Vec<f32> {
    tensor
        .into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .expect("f32 data")
}

/// The cosine similarity of the rows of each pair, computed on `vectors`' device.
pub fn cosine_similarities<B: Backend>(vectors: &Tensor<B, 2>, pairs: &[(u32, u32)]) -> Vec<f32> {
    if pairs.is_empty() {
        return Vec::new();
    }
    let device = vectors.device();
    let a = vectors
        .clone()
        .select(0, index_tensor(pairs.iter().map(|p| p.0), &device));
    let b = vectors
        .clone()
        .select(0, index_tensor(pairs.iter().map(|p| p.1), &device));
    let norms = |t: &Tensor<B, 2>| t.clone().powi_scalar(2).sum_dim(1).sqrt();
    host((a.clone() * b.clone()).sum_dim(1) / (norms(&a) * norms(&b)).clamp_min(1e-12))
}

/// The cosine similarity of row `query` of `vectors` with every row, by row.
pub fn similarities_to<B: Backend>(vectors: &Tensor<B, 2>, query: u32) -> Vec<f32> {
    let device = vectors.device();
    let normalized = vectors.clone()
        / vectors
            .clone()
            .powi_scalar(2)
            .sum_dim(1)
            .sqrt()
            .clamp_min(1e-12);
    let q = normalized
        .clone()
        .select(0, index_tensor(std::iter::once(query), &device));
    host(q.matmul(normalized.transpose()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;

    #[test]
    fn cosine_and_neighbours() {
        let device = Default::default();
        let vectors = Tensor::<NdArray, 2>::from_data(
            [[1.0, 0.0], [2.0, 0.1], [0.0, 3.0], [-1.0, 0.0]],
            &device,
        );
        let cos = cosine_similarities(&vectors, &[(0, 2), (0, 3), (1, 1)]);
        assert!(cos[0].abs() < 1e-6 && (cos[1] + 1.0).abs() < 1e-6 && (cos[2] - 1.0).abs() < 1e-6);
        let nearest = rank_neighbours(similarities_to(&vectors, 0), 0, 2);
        assert_eq!(nearest.iter().map(|n| n.0).collect::<Vec<_>>(), [1, 2]);
    }
}
