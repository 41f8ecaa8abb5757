//! Evaluation: how well the input vectors' cosine similarity tells hypernym pairs from
//! random pairs, as ROC AUC, and the nearest neighbours of a few words.
//!
//! Held-out edges would cut a tree apart, so instead of link prediction the example
//! measures *reconstruction* (direct pairs: edges, which the walks run along) and
//! *generalisation* (grandparent pairs: a node and a hypernym of its hypernym that is never
//! linked to it by an edge, so the model only ever sees them two steps apart on a walk).
//! Each kind of pair is scored against as many uniformly random pairs of distinct nodes. The pairs are drawn once per run
//! from the seed's [`Stream::Eval`] stream, so every epoch is scored on the same pairs.
//!
//! Similarities are computed by the Burn line, with tensor ops on the evaluation backend
//! (`Trainer::cosine_similarities`); the AUC
//! is exact, computed here on the host from ranks (ties get their average rank).

use wordnet_graph::NounGraph;

use crate::graph::{direct_pairs, grandparent_pairs};
use crate::rng::{Rng, Stream};

/// The node pairs an evaluation scores.
#[derive(Clone, Debug, PartialEq)]
pub struct EvalPairs {
    /// Sampled edges `(child, parent)`.
    pub direct: Vec<(u32, u32)>,
    /// Random pairs scored against `direct`, as many.
    pub direct_random: Vec<(u32, u32)>,
    /// Sampled grandparent pairs `(node, grandparent)`.
    pub grandparent: Vec<(u32, u32)>,
    /// Random pairs scored against `grandparent`, as many.
    pub grandparent_random: Vec<(u32, u32)>,
}

impl EvalPairs {
    /// Draws up to `per_kind` edges and grandparent pairs (without replacement; all of
    /// them where there are fewer), each with as many random pairs of distinct nodes.
    pub fn sample(graph: &NounGraph, per_kind: usize, seed: u64) -> Self {
        let mut rng = Rng::stream(seed, Stream::Eval, 0);
        let pick = |pairs: Vec<(u32, u32)>, rng: &mut Rng| {
            let chosen: Vec<(u32, u32)> = rng
                .sample_indices(pairs.len(), per_kind)
                .into_iter()
                .map(|i| pairs[i])
                .collect();
            let random = random_pairs(graph.num_nodes(), chosen.len(), rng);
            (chosen, random)
        };
        let (direct, direct_random) = pick(direct_pairs(graph), &mut rng);
        let (grandparent, grandparent_random) = pick(grandparent_pairs(graph), &mut rng);
        Self {
            direct,
            direct_random,
            grandparent,
            grandparent_random,
        }
    }
}

/// `count` uniformly random pairs of distinct nodes (none when there are fewer than two).
fn random_pairs(nodes: usize, count: usize, rng: &mut Rng) -> Vec<(u32, u32)> {
    if nodes < 2 {
        return Vec::new();
    }
    (0..count)
        .map(|_| {
            let a = rng.below(nodes as u64) as u32;
            let b = rng.below(nodes as u64 - 1) as u32;
            (a, if b >= a { b + 1 } else { b })
        })
        .collect()
}

/// Both ROC AUCs of an evaluation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Aucs {
    /// Edges against random pairs.
    pub direct: f64,
    /// Grandparent pairs against random pairs.
    pub grandparent: f64,
}

impl EvalPairs {
    /// Every pair the AUCs score, in one list, so a line computes the similarities in one
    /// pass: direct, their random pairs, grandparent, their random pairs.
    pub fn all(&self) -> Vec<(u32, u32)> {
        self.lists()
            .iter()
            .flat_map(|l| l.iter().copied())
            .collect()
    }

    fn lists(&self) -> [&[(u32, u32)]; 4] {
        [
            &self.direct,
            &self.direct_random,
            &self.grandparent,
            &self.grandparent_random,
        ]
    }

    /// Both AUCs from the similarities of [`EvalPairs::all`], in that order.
    ///
    /// # Panics
    ///
    /// When there are not as many scores as pairs.
    pub fn aucs(&self, scores: &[f32]) -> Aucs {
        let lists = self.lists();
        assert_eq!(
            scores.len(),
            lists.iter().map(|l| l.len()).sum::<usize>(),
            "one score per pair"
        );
        let mut parts = Vec::new();
        let mut start = 0;
        for list in lists {
            parts.push(&scores[start..start + list.len()]);
            start += list.len();
        }
        Aucs {
            direct: roc_auc(parts[0], parts[1]),
            grandparent: roc_auc(parts[2], parts[3]),
        }
    }
}

/// The ROC AUC of `positive` scores against `negative` ones: the probability that a random
/// positive scores above a random negative, ties counting one half (Mann–Whitney U from
/// average ranks). `NaN` when either side is empty.
pub fn roc_auc(positive: &[f32], negative: &[f32]) -> f64 {
    if positive.is_empty() || negative.is_empty() {
        return f64::NAN;
    }
    let mut scored: Vec<(f32, bool)> = positive
        .iter()
        .map(|&s| (s, true))
        .chain(negative.iter().map(|&s| (s, false)))
        .collect();
    scored.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut positive_rank_sum = 0.0f64;
    let mut i = 0;
    while i < scored.len() {
        let mut j = i;
        while j + 1 < scored.len() && scored[j + 1].0 == scored[i].0 {
            j += 1;
        }
        // Ranks i+1 ..= j+1 are tied: each gets their average.
        let rank = (i + j) as f64 / 2.0 + 1.0;
        let tied_positives = scored[i..=j].iter().filter(|s| s.1).count();
        positive_rank_sum += rank * tied_positives as f64;
        i = j + 1;
    }
    let p = positive.len() as f64;
    let n = negative.len() as f64;
    (positive_rank_sum - p * (p + 1.0) / 2.0) / (p * n)
}

/// The `k` nodes of highest `similarities` (indexed by node) other than `query`, best first
/// (ties by node index), with their similarity.
pub fn rank_neighbours(similarities: Vec<f32>, query: u32, k: usize) -> Vec<(u32, f32)> {
    let mut ranked: Vec<(u32, f32)> = similarities
        .into_iter()
        .enumerate()
        .map(|(node, s)| (node as u32, s))
        .filter(|&(node, _)| node != query)
        .collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    ranked.truncate(k);
    ranked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_counts_ties_as_halves() {
        assert_eq!(roc_auc(&[3.0, 4.0], &[1.0, 2.0]), 1.0);
        assert_eq!(roc_auc(&[1.0, 2.0], &[3.0, 4.0]), 0.0);
        assert_eq!(roc_auc(&[1.0], &[1.0]), 0.5);
        // Pairs (p, n): (2,1) win, (2,2) tie, (2,3) loss, (4,*) 3 wins: 4.5 / 6.
        assert!((roc_auc(&[2.0, 4.0], &[1.0, 2.0, 3.0]) - 4.5 / 6.0).abs() < 1e-12);
        assert!(roc_auc(&[], &[1.0]).is_nan());
    }

    #[test]
    fn auc_matches_pair_counting() {
        let mut rng = Rng::new(4);
        let pos: Vec<f32> = (0..300).map(|_| (rng.below(20) as f32) + 3.0).collect();
        let neg: Vec<f32> = (0..200).map(|_| rng.below(20) as f32).collect();
        let mut wins = 0.0;
        for p in &pos {
            for n in &neg {
                wins += if p > n {
                    1.0
                } else if p == n {
                    0.5
                } else {
                    0.0
                };
            }
        }
        let expected = wins / (pos.len() * neg.len()) as f64;
        assert!((roc_auc(&pos, &neg) - expected).abs() < 1e-12);
    }

    #[test]
    fn neighbours_rank_by_similarity_without_the_query() {
        let ranked = rank_neighbours(vec![1.0, 0.5, 0.9, 0.9, -1.0], 0, 3);
        assert_eq!(ranked, [(2, 0.9), (3, 0.9), (1, 0.5)]);
    }

    #[test]
    fn aucs_split_the_scores_in_the_order_of_all() {
        let graph = crate::graph::tests::toy();
        let pairs = EvalPairs::sample(&graph, 2, 3);
        let all = pairs.all();
        assert_eq!(all.len(), 8);
        assert_eq!(&all[..2], pairs.direct.as_slice());
        // Direct pairs score above their random pairs, grandparent pairs below theirs.
        let aucs = pairs.aucs(&[1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0]);
        assert_eq!((aucs.direct, aucs.grandparent), (1.0, 0.0));
    }

    #[test]
    fn pairs_are_sampled_reproducibly() {
        let graph = crate::graph::tests::toy();
        let pairs = EvalPairs::sample(&graph, 3, 11);
        assert_eq!(pairs, EvalPairs::sample(&graph, 3, 11));
        assert_eq!(pairs.direct.len(), 3);
        assert_eq!(pairs.direct_random.len(), 3);
        assert_eq!(pairs.grandparent.len(), 3);
        assert!(pairs.direct_random.iter().all(|(a, b)| a != b));
        let all = EvalPairs::sample(&graph, 100, 11);
        assert_eq!(all.direct.len(), graph.num_edges());
        assert_eq!(all.grandparent.len(), 4);
    }
}
