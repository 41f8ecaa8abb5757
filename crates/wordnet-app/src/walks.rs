//! Uniform random walks (DeepWalk's, node2vec with `p = q = 1`) over the undirected graph.

use wordnet_graph::Adjacency;

use crate::rng::Rng;

/// Appends a walk of `length` nodes starting at `start` to `out`: each next node is a
/// uniformly chosen neighbour of the current one (an edge's endpoint counted once per
/// edge). A node without neighbours repeats itself, as PyTorch Geometric's walks do.
pub fn random_walk(
    adjacency: &Adjacency,
    start: u32,
    length: usize,
    rng: &mut Rng,
    out: &mut Vec<u32>,
) {
    let mut node = start;
    for step in 0..length {
        if step > 0 {
            let neighbours = adjacency.neighbours(node);
            if !neighbours.is_empty() {
                node = neighbours[rng.below(neighbours.len() as u64) as usize];
            }
        }
        out.push(node);
    }
}

/// The start nodes of one epoch: every node `walks_per_node` times, shuffled.
pub fn epoch_starts(num_nodes: usize, walks_per_node: usize, rng: &mut Rng) -> Vec<u32> {
    let mut starts: Vec<u32> = (0..walks_per_node)
        .flat_map(|_| 0..num_nodes as u32)
        .collect();
    rng.shuffle(&mut starts);
    starts
}

#[cfg(test)]
mod tests {
    use super::*;
    use wordnet_graph::{Edge, EdgeKind, NounGraph};

    fn path_graph() -> NounGraph {
        // 0 - 1 - 2, and 3 alone.
        let edge = |child, parent| Edge {
            child,
            parent,
            kind: EdgeKind::Hypernym,
        };
        NounGraph::new(
            vec![0, 1, 2, 3],
            ["a", "b", "c", "d"].map(String::from).to_vec(),
            vec![edge(1, 0), edge(2, 1)],
        )
        .unwrap()
    }

    #[test]
    fn walks_follow_edges() {
        let adjacency = path_graph().adjacency();
        let mut rng = Rng::new(5);
        for start in 0..3 {
            let mut walk = Vec::new();
            random_walk(&adjacency, start, 50, &mut rng, &mut walk);
            assert_eq!(walk.len(), 50);
            assert_eq!(walk[0], start);
            for pair in walk.windows(2) {
                assert_eq!(pair[0].abs_diff(pair[1]), 1, "{walk:?}");
            }
        }
        let mut walk = Vec::new();
        random_walk(&adjacency, 3, 4, &mut rng, &mut walk);
        assert_eq!(walk, [3, 3, 3, 3]);
    }

    #[test]
    fn every_node_starts_walks_per_node_times() {
        let mut starts = epoch_starts(5, 2, &mut Rng::new(1));
        starts.sort_unstable();
        assert_eq!(starts, [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]);
    }
}
