//! Skip-gram with negative sampling on Burn 0.21 tensors: a batch's index tensors, and the
//! loss on looked-up rows. The batches themselves are the shared crate's
//! ([`wordnet_app::skipgram`], re-exported here).
//!
//! The loss of a batch is PyTorch Geometric's: the mean of `-log σ(u·v)` over the positive
//! pairs plus the mean of `-log σ(-u·v')` over the negative pairs, where `u` is the
//! centre's input vector and `v`, `v'` are context vectors.

use burn::tensor::activation::log_sigmoid;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

pub use wordnet_app::skipgram::{reference_loss, SkipGramBatch, SkipGramConfig};

/// The index tensors of a [`SkipGramBatch`].
#[derive(Clone, Debug)]
pub struct BatchTensors<B: Backend> {
    /// `[walks, centres]`: the nodes whose input vectors are trained.
    pub centres: Tensor<B, 2, Int>,
    /// `[walks, walk_length]`: the nodes whose context vectors the positive pairs use.
    pub walks: Tensor<B, 2, Int>,
    /// `[walks, centres * negatives]`: the nodes whose context vectors the negative pairs use.
    pub negatives: Tensor<B, 2, Int>,
}

impl<B: Backend> BatchTensors<B> {
    /// The index tensors of the lookups of `batch`.
    pub fn new(batch: &SkipGramBatch, device: &B::Device) -> Self {
        let config = &batch.config;
        let tensor = |data: Vec<i64>, width: usize| {
            Tensor::<B, 2, Int>::from_data(TensorData::new(data, [batch.walks, width]), device)
        };
        Self {
            centres: tensor(batch.centre_ids(), config.centres()),
            walks: tensor(batch.nodes.clone(), config.walk_length),
            negatives: tensor(batch.negatives.clone(), config.centres() * config.negatives),
        }
    }
}

/// The skip-gram loss of a batch from its looked-up rows (see the [module docs](self)).
///
/// - `centre`: input vectors of the centres, `[walks, centres, d]`;
/// - `context`: context vectors of the walks, `[walks, walk_length, d]`;
/// - `negative`: context vectors of the negatives, `[walks, centres * negatives, d]`.
///
/// The positive pairs are dot products of `centre` with `window - 1` shifted slices of
/// `context`; nothing table-sized is involved, so under autodiff the gradient reaches only
/// the rows that were looked up.
pub fn skip_gram_loss<B: Backend>(
    centre: Tensor<B, 3>,
    context: Tensor<B, 3>,
    negative: Tensor<B, 3>,
    config: &SkipGramConfig,
) -> Tensor<B, 1> {
    let [walks, centres, d] = centre.dims();
    let positive: Vec<Tensor<B, 3>> = (1..config.window)
        .map(|shift| {
            let shifted = context
                .clone()
                .slice([0..walks, shift..shift + centres, 0..d]);
            (centre.clone() * shifted).sum_dim(2)
        })
        .collect();
    let positive = Tensor::cat(positive, 2); // [walks, centres, window - 1]
    let negative = negative.reshape([walks, centres, config.negatives, d]);
    let negative = (centre.unsqueeze_dim::<4>(2) * negative).sum_dim(3); // [.., negatives, 1]
    let positive_loss = log_sigmoid(positive).mean().neg();
    let negative_loss = log_sigmoid(negative.neg()).mean().neg();
    positive_loss + negative_loss
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;
    use wordnet_app::rng::Rng;

    fn config() -> SkipGramConfig {
        SkipGramConfig {
            walk_length: 4,
            window: 3,
            negatives: 2,
        }
    }

    #[test]
    fn loss_matches_the_reference() {
        let device = Default::default();
        let config = config(); // 2 centres per walk, 2 contexts and 2 negatives each
        let centre = [0.1, 0.2, 0.3, -0.1, -0.5, 0.4, 0.2, 0.2];
        let context = [
            9.0, 9.0, 0.5, 0.4, -0.2, 0.7, 0.6, 0.1, 0.3, -0.3, 1.0, 0.0, 0.2, 0.9, -0.6, 0.5,
        ];
        let negative = [
            0.3, 0.3, -0.4, 0.2, 0.1, -0.9, 0.8, 0.5, 0.0, 0.7, -0.1, -0.2, 0.4, 0.4, 0.9, -0.8,
        ];
        let tensor = |values: &[f32], rows: usize| {
            Tensor::<NdArray, 3>::from_data(TensorData::new(values.to_vec(), [2, rows, 2]), &device)
        };
        let loss = skip_gram_loss(
            tensor(&centre, 2),
            tensor(&context, 4),
            tensor(&negative, 4),
            &config,
        )
        .into_scalar();
        let expected = reference_loss(&centre, &context, &negative, 2, 2, &config);
        assert!(
            (f64::from(loss) - expected).abs() < 1e-6,
            "{loss} vs {expected}"
        );
    }

    #[test]
    fn index_tensors_have_the_batch_layout() {
        let graph = wordnet_graph::NounGraph::new(
            vec![0, 1, 2],
            ["a", "b", "c"].map(String::from).to_vec(),
            vec![wordnet_graph::Edge {
                child: 1,
                parent: 0,
                kind: wordnet_graph::EdgeKind::Hypernym,
            }],
        )
        .unwrap();
        let batch = SkipGramBatch::sample(&graph.adjacency(), &[1, 2], &config(), &mut Rng::new(9));
        let tensors = BatchTensors::<NdArray>::new(&batch, &Default::default());
        assert_eq!(tensors.centres.dims(), [2, 2]);
        assert_eq!(tensors.walks.dims(), [2, 4]);
        assert_eq!(tensors.negatives.dims(), [2, 4]);
        let ids =
            |t: Tensor<NdArray, 2, Int>| t.into_data().convert::<i64>().to_vec::<i64>().unwrap();
        assert_eq!(ids(tensors.centres), batch.centre_ids());
        assert_eq!(ids(tensors.walks), batch.nodes);
        assert_eq!(ids(tensors.negatives), batch.negatives);
    }
}
