//! Skip-gram with negative sampling over random walks (word2vec's SGNS as DeepWalk and
//! PyTorch Geometric's `Node2Vec` use it): the batches, as host indices. Each line turns
//! them into index tensors and computes the loss on the looked-up rows.
//!
//! A walk of `walk_length` nodes holds `walk_length - window + 1` windows; a window is a
//! *centre* and the `window - 1` nodes that follow it on the walk (its positive contexts).
//! Each centre also gets `negatives` nodes drawn uniformly from the whole graph. The loss
//! of a batch is PyTorch Geometric's: the mean of `-log σ(u·v)` over the positive pairs plus
//! the mean of `-log σ(-u·v')` over the negative pairs, where `u` is the centre's input
//! vector and `v`, `v'` are context vectors.

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

    /// The centres of every walk, `[walks, centres]` row-major: the first
    /// [`SkipGramConfig::centres`] nodes of each walk.
    pub fn centre_ids(&self) -> Vec<i64> {
        let centres = self.config.centres();
        self.nodes
            .chunks(self.config.walk_length)
            .flat_map(|walk| walk[..centres].iter().copied())
            .collect()
    }
}

/// The skip-gram loss computed on the host in `f64`, one pair at a time: what the lines'
/// tensor versions are tested against. The arguments are the looked-up rows, row-major,
/// in the tensor versions' shapes: `centre` `[walks, centres, d]`, `context`
/// `[walks, walk_length, d]`, `negative` `[walks, centres * negatives, d]`.
pub fn reference_loss(
    centre: &[f32],
    context: &[f32],
    negative: &[f32],
    walks: usize,
    d: usize,
    config: &SkipGramConfig,
) -> f64 {
    let centres = config.centres();
    let row = |table: &[f32], index: usize| -> Vec<f64> {
        table[index * d..(index + 1) * d]
            .iter()
            .map(|&v| f64::from(v))
            .collect()
    };
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    let minus_log_sigmoid = |x: f64| (1.0 + (-x).exp()).ln();
    let (mut positive, mut positives) = (0.0, 0usize);
    let (mut negative_sum, mut negatives) = (0.0, 0usize);
    for w in 0..walks {
        for c in 0..centres {
            let u = row(centre, w * centres + c);
            for shift in 1..config.window {
                let v = row(context, w * config.walk_length + c + shift);
                positive += minus_log_sigmoid(dot(&u, &v));
                positives += 1;
            }
            for n in 0..config.negatives {
                let v = row(negative, (w * centres + c) * config.negatives + n);
                negative_sum += minus_log_sigmoid(-dot(&u, &v));
                negatives += 1;
            }
        }
    }
    positive / positives as f64 + negative_sum / negatives as f64
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn reference_loss_matches_a_hand_computation() {
        let config = config(); // 2 centres per walk, 2 contexts and 2 negatives each
        let centre = [0.1, 0.2, 0.3, -0.1];
        let context = [9.0, 9.0, 0.5, 0.4, -0.2, 0.7, 0.6, 0.1];
        let negative = [0.3, 0.3, -0.4, 0.2, 0.1, -0.9, 0.8, 0.5];
        let loss = reference_loss(&centre, &context, &negative, 1, 2, &config);

        let nls = |x: f64| (1.0 + (-x).exp()).ln(); // -log σ(x)
                                                    // Centre 0 with context nodes 1 and 2, centre 1 with 2 and 3 (node 0 is never a
                                                    // context); negatives 0, 1 for centre 0 and 2, 3 for centre 1.
        let positive = [
            0.1 * 0.5 + 0.2 * 0.4,
            0.1 * -0.2 + 0.2 * 0.7,
            0.3 * -0.2 + -0.1 * 0.7,
            0.3 * 0.6 + -0.1 * 0.1,
        ];
        let negative = [
            0.1 * 0.3 + 0.2 * 0.3,
            0.1 * -0.4 + 0.2 * 0.2,
            0.3 * 0.1 + -0.1 * -0.9,
            0.3 * 0.8 + -0.1 * 0.5,
        ];
        let expected = positive.iter().map(|&x| nls(x)).sum::<f64>() / 4.0
            + negative.iter().map(|&x| nls(-x)).sum::<f64>() / 4.0;
        assert!((loss - expected).abs() < 1e-6, "{loss} vs {expected}");
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
        assert_eq!(
            batch.centre_ids(),
            [
                batch.nodes[0],
                batch.nodes[1],
                batch.nodes[4],
                batch.nodes[5]
            ]
        );
    }
}
