//! The graph the example trains on: loading the shipped WordNet noun graph, cutting a
//! subgraph for quick runs and tests, and the node pairs the evaluation scores.
//!
//! The training treats the hypernym graph as undirected ([`NounGraph::adjacency`]); the
//! evaluation uses its direction: a *direct* pair is an edge (a synset and its hypernym), a
//! *grandparent* pair a synset and a hypernym of one of its hypernyms that is not itself
//! linked to it by an edge.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};

use wordnet_graph::{DataError, Edge, NounGraph};

use crate::error::Error;

/// The shipped WordNet 3.0 noun graph, found from this crate's directory (so it does not
/// depend on the directory the example is started from, nor on which line's example runs).
pub fn default_data_path() -> PathBuf {
    repository_root().join(wordnet_graph::EDGE_LIST_PATH)
}

/// The repository root: two levels above this crate's directory (`crates/wordnet-app`).
pub fn repository_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .nth(2)
        .unwrap_or(manifest)
        .to_path_buf()
}

/// Loads an edge list written by `wordnet-graph`: gzip-compressed like the shipped file,
/// or plain text (told apart by the gzip magic bytes).
///
/// # Errors
///
/// [`Error::Data`], naming the file and, for malformed content, the line (of the
/// decompressed text).
pub fn load(path: &Path) -> Result<NounGraph, Error> {
    let error = |source| Error::Data {
        path: path.to_path_buf(),
        source,
    };
    let bytes = std::fs::read(path).map_err(|source| {
        error(DataError::Io {
            path: None,
            line: None,
            source,
        })
    })?;
    if bytes.starts_with(&[0x1f, 0x8b]) {
        NounGraph::from_gzip_bytes(&bytes).map_err(error)
    } else {
        NounGraph::read_edge_list(bytes.as_slice()).map_err(error)
    }
}

/// The subgraph induced by `root` and its descendants (hyponyms and instances, followed
/// down the edges breadth first), cut after `max_nodes` nodes. Node indices are renumbered
/// in breadth-first order, so `root` becomes node 0.
///
/// Returns `None` when no node is labelled `root` (the first sense is taken, as
/// [`NounGraph::index_of`] does).
pub fn subgraph(graph: &NounGraph, root: &str, max_nodes: usize) -> Option<NounGraph> {
    let root = graph.index_of(root)?;
    let mut children: Vec<Vec<u32>> = vec![Vec::new(); graph.num_nodes()];
    for edge in graph.edges() {
        children[edge.parent as usize].push(edge.child);
    }
    let mut new_index: HashMap<u32, u32> = HashMap::new();
    let mut order = Vec::new();
    let mut queue = VecDeque::from([root]);
    new_index.insert(root, 0);
    order.push(root);
    while let Some(node) = queue.pop_front() {
        for &child in &children[node as usize] {
            if order.len() >= max_nodes {
                break;
            }
            if let std::collections::hash_map::Entry::Vacant(slot) = new_index.entry(child) {
                slot.insert(order.len() as u32);
                order.push(child);
                queue.push_back(child);
            }
        }
    }
    let offsets = order.iter().map(|&n| graph.offsets()[n as usize]).collect();
    let labels = order
        .iter()
        .map(|&n| graph.labels()[n as usize].clone())
        .collect();
    let edges = graph
        .edges()
        .iter()
        .filter_map(|edge| {
            Some(Edge {
                child: *new_index.get(&edge.child)?,
                parent: *new_index.get(&edge.parent)?,
                kind: edge.kind,
            })
        })
        .collect();
    Some(NounGraph::new(offsets, labels, edges).expect("a subgraph keeps the invariants"))
}

/// Every distinct grandparent pair `(node, grandparent)`: a hypernym of a hypernym of
/// `node` (edges of both kinds) that is neither `node` itself nor linked to it by an edge
/// in either direction, so the pair is never trained on as an edge. Sorted.
pub fn grandparent_pairs(graph: &NounGraph) -> Vec<(u32, u32)> {
    let mut parents: Vec<Vec<u32>> = vec![Vec::new(); graph.num_nodes()];
    let mut linked: HashSet<(u32, u32)> = HashSet::with_capacity(2 * graph.num_edges());
    for edge in graph.edges() {
        parents[edge.child as usize].push(edge.parent);
        linked.insert((edge.child, edge.parent));
        linked.insert((edge.parent, edge.child));
    }
    let mut pairs = HashSet::new();
    for (node, node_parents) in parents.iter().enumerate() {
        let node = node as u32;
        for &parent in node_parents {
            for &grandparent in &parents[parent as usize] {
                if grandparent != node && !linked.contains(&(node, grandparent)) {
                    pairs.insert((node, grandparent));
                }
            }
        }
    }
    let mut pairs: Vec<(u32, u32)> = pairs.into_iter().collect();
    pairs.sort_unstable();
    pairs
}

/// Every edge as a `(child, parent)` pair, in edge order.
pub fn direct_pairs(graph: &NounGraph) -> Vec<(u32, u32)> {
    graph.edges().iter().map(|e| (e.child, e.parent)).collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use wordnet_graph::EdgeKind;

    /// entity <- animal <- dog <- puppy, animal <- cat; plant <- entity; dog -> pet -> entity.
    pub(crate) fn toy() -> NounGraph {
        let labels = ["entity", "animal", "dog", "puppy", "cat", "plant", "pet"];
        let edge = |child, parent| Edge {
            child,
            parent,
            kind: EdgeKind::Hypernym,
        };
        NounGraph::new(
            (0..labels.len() as u32).collect(),
            labels.iter().map(|s| s.to_string()).collect(),
            vec![
                edge(1, 0),
                edge(2, 1),
                edge(3, 2),
                edge(4, 1),
                edge(5, 0),
                edge(2, 6),
                edge(6, 0),
            ],
        )
        .unwrap()
    }

    #[test]
    fn grandparents_skip_direct_links() {
        // dog's grandparents: entity via animal and via pet (deduplicated); puppy's: animal,
        // pet; cat's: entity.
        assert_eq!(
            grandparent_pairs(&toy()),
            vec![(2, 0), (3, 1), (3, 6), (4, 0)]
        );
    }

    #[test]
    fn subgraph_renumbers_from_the_root() {
        let sub = subgraph(&toy(), "animal", 10).unwrap();
        assert_eq!(sub.labels(), ["animal", "dog", "cat", "puppy"]);
        assert_eq!(direct_pairs(&sub), vec![(1, 0), (3, 1), (2, 0)]);
        let capped = subgraph(&toy(), "animal", 2).unwrap();
        assert_eq!(capped.labels(), ["animal", "dog"]);
        assert!(subgraph(&toy(), "mineral", 10).is_none());
    }
}
