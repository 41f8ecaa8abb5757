//! Skip-gram with negative sampling over random walks (word2vec's SGNS as DeepWalk and
//! PyTorch Geometric's `Node2Vec` use it): the batches, and the loss on looked-up rows.
//!
//! A walk of `walk_length` nodes holds `walk_length - window + 1` windows; a window is a
//! *centre* and the `window - 1` nodes that follow it on the walk (its positive contexts).
//! Each centre also gets `negatives` nodes drawn uniformly from the whole graph. The loss
//! of a batch is PyTorch Geometric's: the mean of `-log σ(u·v)` over the positive pairs plus
//! the mean of `-log σ(-u·v')` over the negative pairs, where `u` is the centre's input
//! vector and `v`, `v'` are context vectors.

use burn::tensor::activation::log_sigmoid;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};
use wordnet_graph::Adjacency;

use crate::rng::Rng;
use crate::walks::random_walk;

/// The shape of the skip-gram samples.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkipGramConfig {
    /// Nodes per walk (the start node included).
    pub walk_length: usize,
    /// Nodes per window: a centre and the `window - 1` nodes after it.
    pub window: usize,
    /// Uniform negative nodes per centre.
    pub negatives: usize,
}

impl SkipGramConfig {
    /// The number of centres (windows) per walk.
    pub fn centres(&self) -> usize {
        self.walk_length + 1 - self.window
    }

    /// Checks that a walk holds at least one window and that there are negatives.
    ///
    /// # Errors
    ///
    /// A message naming the offending value.
    pub fn validate(&self) -> Result<(), String> {
        if self.window < 2 {
            return Err(format!(
                "the window must hold a centre and at least one context node, got {}",
                self.window
            ));
        }
        if self.walk_length < self.window {
            return Err(format!(
                "the walk length ({}) must be at least the window ({})",
                self.walk_length, self.window
            ));
        }
        if self.negatives == 0 {
            return Err("at least one negative per centre is needed".to_string());
        }
        Ok(())
    }
}

/// One batch: `walks` random walks and the negatives of their centres, as host indices.
#[derive(Clone, Debug, PartialEq)]
pub struct SkipGramBatch {
    /// The number of walks.
    pub walks: usize,
    /// The sample shape.
    pub config: SkipGramConfig,
    /// `[walks, walk_length]` node indices, row-major.
    pub nodes: Vec<i64>,
    /// `[walks, centres * negatives]` node indices: the negatives of centre `c` of a walk
    /// are its entries `c * negatives .. (c + 1) * negatives`.
    pub negatives: Vec<i64>,
}

impl SkipGramBatch {
    /// Draws the walks starting at `starts`, then the negatives, from `rng`.
    pub fn sample(
        adjacency: &Adjacency,
        starts: &[u32],
        config: &SkipGramConfig,
        rng: &mut Rng,
    ) -> Self {
        let mut walk = Vec::with_capacity(config.walk_length);
        let mut nodes = Vec::with_capacity(starts.len() * config.walk_length);
        for &start in starts {
            walk.clear();
            random_walk(adjacency, start, config.walk_length, rng, &mut walk);
            nodes.extend(walk.iter().map(|&n| i64::from(n)));
        }
        let num_nodes = adjacency.num_nodes() as u64;
        let negatives = (0..starts.len() * config.centres() * config.negatives)
            .map(|_| rng.below(num_nodes) as i64)
            .collect();
        Self {
            walks: starts.len(),
            config: config.clone(),
            nodes,
            negatives,
        }
    }

    /// The index tensors of the lookups: the centres `[walks, centres]`, the whole walks
    /// `[walks, walk_length]` and the negatives `[walks, centres * negatives]`.
    pub fn tensors<B: Backend>(&self, device: &B::Device) -> BatchTensors<B> {
        let length = self.config.walk_length;
        let centres = self.config.centres();
        let centre_ids: Vec<i64> = self
            .nodes
            .chunks(length)
            .flat_map(|walk| walk[..centres].iter().copied())
            .collect();
        let tensor = |data: Vec<i64>, width: usize| {
            Tensor::<B, 2, Int>::from_data(TensorData::new(data, [self.walks, width]), device)
        };
        BatchTensors {
            centres: tensor(centre_ids, centres),
            walks: tensor(self.nodes.clone(), length),
            negatives: tensor(self.negatives.clone(), centres * self.config.negatives),
        }
    }
}

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

    fn config() -> SkipGramConfig {
        SkipGramConfig {
            walk_length: 4,
            window: 3,
            negatives: 2,
        }
    }

    #[test]
    fn validation_names_the_problem() {
        assert!(config().validate().is_ok());
        let short = SkipGramConfig {
            walk_length: 2,
            ..config()
        };
        assert!(short.validate().unwrap_err().contains("walk length (2)"));
        let tiny = SkipGramConfig {
            window: 1,
            ..config()
        };
        assert!(tiny.validate().is_err());
    }

    #[test]
    fn loss_matches_a_scalar_computation() {
        let device = Default::default();
        let config = config(); // 2 centres per walk, 2 contexts and 2 negatives each
        let centre = Tensor::<NdArray, 3>::from_data([[[0.1, 0.2], [0.3, -0.1]]], &device);
        let context = Tensor::<NdArray, 3>::from_data(
            [[[9.0, 9.0], [0.5, 0.4], [-0.2, 0.7], [0.6, 0.1]]],
            &device,
        );
        let negative = Tensor::<NdArray, 3>::from_data(
            [[[0.3, 0.3], [-0.4, 0.2], [0.1, -0.9], [0.8, 0.5]]],
            &device,
        );
        let loss = skip_gram_loss(centre, context, negative, &config).into_scalar();

        let dot = |a: [f64; 2], b: [f64; 2]| a[0] * b[0] + a[1] * b[1];
        let nls = |x: f64| (1.0 + (-x).exp()).ln(); // -log σ(x)
        let c = [[0.1, 0.2], [0.3, -0.1]];
        let ctx = [[9.0, 9.0], [0.5, 0.4], [-0.2, 0.7], [0.6, 0.1]];
        let neg = [[0.3, 0.3], [-0.4, 0.2], [0.1, -0.9], [0.8, 0.5]];
        let pos = [
            dot(c[0], ctx[1]),
            dot(c[0], ctx[2]),
            dot(c[1], ctx[2]),
            dot(c[1], ctx[3]),
        ];
        let negs = [
            dot(c[0], neg[0]),
            dot(c[0], neg[1]),
            dot(c[1], neg[2]),
            dot(c[1], neg[3]),
        ];
        let expected = pos.iter().map(|&x| nls(x)).sum::<f64>() / 4.0
            + negs.iter().map(|&x| nls(-x)).sum::<f64>() / 4.0;
        assert!(
            (f64::from(loss) - expected).abs() < 1e-6,
            "{loss} vs {expected}"
        );
    }

    #[test]
    fn batches_have_the_documented_layout() {
        let graph = crate::graph::tests::toy();
        let adjacency = graph.adjacency();
        let batch = SkipGramBatch::sample(&adjacency, &[3, 5], &config(), &mut Rng::new(9));
        assert_eq!(batch.nodes.len(), 2 * 4);
        assert_eq!(batch.nodes[0], 3);
        assert_eq!(batch.nodes[4], 5);
        assert_eq!(batch.negatives.len(), 2 * 2 * 2);
        assert!(batch.negatives.iter().all(|&n| (0..7).contains(&n)));
        let tensors = batch.tensors::<NdArray>(&Default::default());
        assert_eq!(tensors.centres.dims(), [2, 2]);
        assert_eq!(tensors.walks.dims(), [2, 4]);
        assert_eq!(tensors.negatives.dims(), [2, 4]);
        let centres = tensors
            .centres
            .into_data()
            .convert::<i64>()
            .to_vec::<i64>()
            .unwrap();
        assert_eq!(
            centres,
            [
                batch.nodes[0],
                batch.nodes[1],
                batch.nodes[4],
                batch.nodes[5]
            ]
        );
    }
}
