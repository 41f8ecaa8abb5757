//! The WordNet 3.0 noun hypernym graph, small enough to ship with the project and quick
//! to load, for examples that train node embeddings (DeepWalk) on a real taxonomy.
//!
//! * [`NounGraph::from_data_noun`] derives the graph from WordNet's `data.noun`
//!   (Debian: `apt-get install wordnet-base`, then `/usr/share/wordnet/data.noun`).
//! * [`NounGraph::save`] / [`NounGraph::load`] write and read the compact gzip edge list
//!   the project ships as [`EDGE_LIST_PATH`]; `cargo xtask wordnet-data` regenerates it.
//! * [`NounGraph::adjacency`] gives undirected CSR adjacency lists for random walks.
//!
//! # The graph
//!
//! One node per noun synset of `data.noun`, in file order; node `i` is addressed by the
//! `u32` index `i`. Each node keeps its synset offset (WordNet's 8-digit synset id, unique
//! within `data.noun`) and a label: the synset's first lemma as written in the file
//! (`entity`, `physical_entity`, `dog`; underscores kept, case kept). Labels are not
//! unique (in WordNet 3.0, 8,887 first lemmas label several synsets, such as `bank`), so
//! [`NounGraph::index_of`] returns the first node with a label.
//!
//! One edge per hypernym pointer (`@`) and per instance-hypernym pointer (`@i`) whose
//! target is a noun synset, pointing from the synset (`child`) to its hypernym
//! (`parent`). Edges keep the order of the pointers in `data.noun`. In WordNet 3.0 every
//! noun synset but `entity` has at least one hypernym, and no pair of synsets is linked twice.
//!
//! # The edge-list format (format 1)
//!
//! UTF-8 text, lines ending in `\n` (a `\r` before it is tolerated when reading), gzip
//! compressed in the shipped file:
//!
//! ```text
//! # wordnet-graph edge list, format 1
//! # ...any number of further comment lines, each starting with `#`...
//! nodes 82115
//! 00001740<TAB>entity
//! 00001930<TAB>physical_entity
//! ...                              (one line per node: synset offset, TAB, label)
//! edges 84427
//! 1<TAB>0<TAB>@
//! ...                              (one line per edge: child index, TAB, parent index, TAB, kind)
//! ```
//!
//! * The first line is exactly `# wordnet-graph edge list, format 1`.
//! * Comment lines may only follow it, before the `nodes` line. The writer puts the source,
//!   the license pointer and the counts per edge kind there; readers ignore them.
//! * `nodes N` declares the number of node lines that follow. A node line is the synset
//!   offset in decimal (the writer pads it to 8 digits as WordNet does), a tab, and the
//!   label, which is the rest of the line: non-empty, without control characters.
//!   The node's index is its position among the node lines, from 0.
//! * `edges M` declares the number of edge lines that follow. An edge line is the child's
//!   node index, a tab, the parent's node index, a tab, and the kind: `@` for a hypernym,
//!   `@i` for an instance hypernym (WordNet's pointer symbols).
//! * Nothing may follow the last edge line. Both declared counts are checked against the
//!   actual lines, so a truncated file is an error rather than a smaller graph.
//!
//! The writer is deterministic (fixed gzip header with mtime 0, fixed compression level),
//! so regenerating the shipped file from the same `data.noun` gives the same bytes.
//!
//! # Robustness
//!
//! Malformed input of any kind, including truncated or corrupt gzip, gives a [`DataError`]
//! naming the line and the problem; the parsers never panic on input and never allocate
//! more than the input justifies, whatever counts a corrupt header declares.
//!
//! WordNet 3.0 is Copyright 2006 by Princeton University; its license notice ships next to
//! the data file (`examples/data/WORDNET-LICENSE`).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod data_noun;
mod edge_list;
mod error;

use std::collections::HashSet;

pub use error::DataError;

/// Number of noun synsets in WordNet 3.0's `data.noun`, hence of nodes.
pub const WORDNET_30_NOUN_SYNSETS: usize = 82_115;

/// Number of hypernym pointers (`@`) between noun synsets in WordNet 3.0, hence of
/// [`EdgeKind::Hypernym`] edges.
pub const WORDNET_30_HYPERNYM_POINTERS: usize = 75_850;

/// Number of instance-hypernym pointers (`@i`) between noun synsets in WordNet 3.0, hence
/// of [`EdgeKind::InstanceHypernym`] edges.
pub const WORDNET_30_INSTANCE_HYPERNYM_POINTERS: usize = 8_577;

/// Where the project ships the WordNet 3.0 noun graph, relative to the workspace root.
///
/// A crate of the workspace finds the root from its manifest directory at compile time,
/// e.g. `Path::new(env!("CARGO_MANIFEST_DIR")).join("..")` for `examples/` or `xtask/`,
/// and `.join("../..")` for a crate under `crates/`.
pub const EDGE_LIST_PATH: &str = "examples/data/wordnet-nouns.tsv.gz";

/// The kind of a hypernym edge.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EdgeKind {
    /// A class-to-superclass link, WordNet pointer `@` (`dog` → `canine`).
    Hypernym,
    /// An instance-to-class link, WordNet pointer `@i` (`Einstein` → `physicist`).
    InstanceHypernym,
}

impl EdgeKind {
    /// Both kinds, in a fixed order, for iterating over counts.
    pub const ALL: [EdgeKind; 2] = [EdgeKind::Hypernym, EdgeKind::InstanceHypernym];

    /// WordNet's pointer symbol for this kind, also used by the edge-list format:
    /// `@` or `@i`.
    pub const fn symbol(self) -> &'static str {
        match self {
            EdgeKind::Hypernym => "@",
            EdgeKind::InstanceHypernym => "@i",
        }
    }

    /// The kind whose [`symbol`](Self::symbol) is `symbol`; `None` for any other text,
    /// including WordNet's other pointer symbols.
    pub fn from_symbol(symbol: &str) -> Option<Self> {
        match symbol {
            "@" => Some(EdgeKind::Hypernym),
            "@i" => Some(EdgeKind::InstanceHypernym),
            _ => None,
        }
    }
}

/// A directed edge from a synset to one of its hypernyms, by node index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Edge {
    /// Node index of the more specific synset (the one holding the pointer).
    pub child: u32,
    /// Node index of the more general synset (the pointer's target).
    pub parent: u32,
    /// Whether this is a hypernym or an instance-hypernym link.
    pub kind: EdgeKind,
}

/// The noun hypernym graph: nodes with synset offsets and labels, and hypernym edges.
///
/// The fields are private so that every `NounGraph` upholds the invariants that the
/// writer and [`adjacency`](Self::adjacency) rely on: as many labels as offsets, fewer than
/// `u32::MAX` nodes, unique offsets, valid labels (non-empty, no control characters) and
/// edge endpoints below the node count. Build one with [`NounGraph::new`],
/// [`NounGraph::from_data_noun`], [`NounGraph::read_edge_list`] or [`NounGraph::load`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NounGraph {
    offsets: Vec<u32>,
    labels: Vec<String>,
    edges: Vec<Edge>,
}

impl NounGraph {
    /// Builds a graph from its parts, checking the invariants listed on [`NounGraph`].
    ///
    /// `offsets[i]` and `labels[i]` describe node `i`. Returns
    /// [`DataError::CountMismatch`] if the two lengths differ, and
    /// [`DataError::TooManyNodes`], [`DataError::DuplicateOffset`],
    /// [`DataError::InvalidLabel`] or [`DataError::EdgeOutOfRange`] (all without line
    /// numbers) for the other invariants.
    pub fn new(
        offsets: Vec<u32>,
        labels: Vec<String>,
        edges: Vec<Edge>,
    ) -> Result<Self, DataError> {
        if labels.len() != offsets.len() {
            return Err(DataError::CountMismatch {
                line: None,
                what: "labels (one per offset)",
                expected: offsets.len(),
                found: labels.len(),
            });
        }
        if u32::try_from(offsets.len()).is_err() {
            return Err(DataError::TooManyNodes { line: None });
        }
        let mut seen = HashSet::with_capacity(offsets.len());
        for &offset in &offsets {
            if !seen.insert(offset) {
                return Err(DataError::DuplicateOffset { line: None, offset });
            }
        }
        for (node, label) in labels.iter().enumerate() {
            if !is_valid_label(label) {
                return Err(DataError::InvalidLabel {
                    line: None,
                    node,
                    label: error::excerpt(label),
                });
            }
        }
        for (index, edge) in edges.iter().enumerate() {
            for node in [edge.child, edge.parent] {
                if node as usize >= offsets.len() {
                    return Err(DataError::EdgeOutOfRange {
                        line: None,
                        edge: index,
                        node: u64::from(node),
                        nodes: offsets.len(),
                    });
                }
            }
        }
        Ok(NounGraph {
            offsets,
            labels,
            edges,
        })
    }

    /// Synset offsets, one per node, indexed by node.
    pub fn offsets(&self) -> &[u32] {
        &self.offsets
    }

    /// Labels (first lemmas), one per node, indexed by node.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// The edges, in `data.noun` pointer order.
    pub fn edges(&self) -> &[Edge] {
        &self.edges
    }

    /// Takes the graph apart into `(offsets, labels, edges)`, without copying.
    pub fn into_parts(self) -> (Vec<u32>, Vec<String>, Vec<Edge>) {
        (self.offsets, self.labels, self.edges)
    }

    /// Number of nodes (noun synsets). Node indices run from 0 to this minus one, and
    /// always fit in `u32`.
    pub fn num_nodes(&self) -> usize {
        self.offsets.len()
    }

    /// Number of edges of both kinds.
    pub fn num_edges(&self) -> usize {
        self.edges.len()
    }

    /// Number of edges of one kind.
    pub fn edge_count(&self, kind: EdgeKind) -> usize {
        self.edges.iter().filter(|edge| edge.kind == kind).count()
    }

    /// The label of node `node`, or `None` if there is no such node.
    pub fn label(&self, node: u32) -> Option<&str> {
        self.labels.get(node as usize).map(String::as_str)
    }

    /// The synset offset of node `node`, or `None` if there is no such node.
    pub fn offset(&self, node: u32) -> Option<u32> {
        self.offsets.get(node as usize).copied()
    }

    /// The index of the first node labelled exactly `label` (case-sensitive, underscores
    /// for spaces, as in `data.noun`), or `None`.
    ///
    /// Labels repeat across synsets, so this is the first sense in file order, which is
    /// not necessarily the most common sense. A linear scan: build a map yourself for
    /// many lookups.
    pub fn index_of(&self, label: &str) -> Option<u32> {
        self.labels
            .iter()
            .position(|candidate| candidate == label)
            .and_then(|index| u32::try_from(index).ok())
    }

    /// The index of the node whose synset offset is `offset`, or `None`. A linear scan.
    pub fn index_of_offset(&self, offset: u32) -> Option<u32> {
        self.offsets
            .iter()
            .position(|&candidate| candidate == offset)
            .and_then(|index| u32::try_from(index).ok())
    }

    /// Undirected adjacency lists in CSR form, for random walks.
    ///
    /// Every edge `child → parent` makes `parent` a neighbour of `child` and `child` a
    /// neighbour of `parent`, whatever its kind. Each node's neighbours appear in edge
    /// order; a node without edges has an empty list. Costs one pass over the edges and
    /// `2 * num_edges` `u32`s of memory.
    pub fn adjacency(&self) -> Adjacency {
        let nodes = self.offsets.len();
        let mut starts = vec![0usize; nodes + 1];
        for edge in &self.edges {
            starts[edge.child as usize + 1] += 1;
            starts[edge.parent as usize + 1] += 1;
        }
        for node in 0..nodes {
            starts[node + 1] += starts[node];
        }
        let mut next = starts.clone();
        let mut neighbours = vec![0u32; 2 * self.edges.len()];
        for edge in &self.edges {
            for (from, to) in [(edge.child, edge.parent), (edge.parent, edge.child)] {
                let slot = &mut next[from as usize];
                neighbours[*slot] = to;
                *slot += 1;
            }
        }
        Adjacency {
            offsets: starts,
            neighbours,
        }
    }

    /// Checks that the graph has exactly WordNet 3.0's counts:
    /// [`WORDNET_30_NOUN_SYNSETS`] nodes, [`WORDNET_30_HYPERNYM_POINTERS`] hypernym edges
    /// and [`WORDNET_30_INSTANCE_HYPERNYM_POINTERS`] instance-hypernym edges.
    ///
    /// Catches a `data.noun` from another WordNet version or a parser that skips or
    /// invents pointers. Returns the first [`DataError::CountMismatch`] (without a line).
    pub fn check_wordnet_30_counts(&self) -> Result<(), DataError> {
        let checks = [
            ("noun synsets", WORDNET_30_NOUN_SYNSETS, self.num_nodes()),
            (
                "hypernym (@) edges",
                WORDNET_30_HYPERNYM_POINTERS,
                self.edge_count(EdgeKind::Hypernym),
            ),
            (
                "instance-hypernym (@i) edges",
                WORDNET_30_INSTANCE_HYPERNYM_POINTERS,
                self.edge_count(EdgeKind::InstanceHypernym),
            ),
        ];
        for (what, expected, found) in checks {
            if expected != found {
                return Err(DataError::CountMismatch {
                    line: None,
                    what,
                    expected,
                    found,
                });
            }
        }
        Ok(())
    }
}

/// Undirected adjacency lists in compressed sparse row (CSR) form; see
/// [`NounGraph::adjacency`].
///
/// The neighbours of node `n` are `neighbour_list()[offsets()[n]..offsets()[n + 1]]`.
/// `offsets()` has `num_nodes() + 1` entries, starts at 0, never decreases and ends at
/// `neighbour_list().len()`, which is twice the number of edges.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Adjacency {
    offsets: Vec<usize>,
    neighbours: Vec<u32>,
}

impl Adjacency {
    /// Number of nodes.
    pub fn num_nodes(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    /// The neighbours of `node`, in edge order (empty for an isolated node).
    ///
    /// # Panics
    ///
    /// If `node >= self.num_nodes()`, like slice indexing.
    pub fn neighbours(&self, node: u32) -> &[u32] {
        let node = node as usize;
        &self.neighbours[self.offsets[node]..self.offsets[node + 1]]
    }

    /// The number of neighbours of `node`, counting an edge's endpoint once per edge.
    ///
    /// # Panics
    ///
    /// If `node >= self.num_nodes()`.
    pub fn degree(&self, node: u32) -> usize {
        let node = node as usize;
        self.offsets[node + 1] - self.offsets[node]
    }

    /// The CSR row offsets: `num_nodes() + 1` entries into [`neighbour_list`](Self::neighbour_list).
    pub fn offsets(&self) -> &[usize] {
        &self.offsets
    }

    /// All neighbour lists, concatenated in node order.
    pub fn neighbour_list(&self) -> &[u32] {
        &self.neighbours
    }
}

/// Whether `label` can be a node label: non-empty and without control characters, so that
/// it fits on one line of the edge-list format and survives a round trip.
pub(crate) fn is_valid_label(label: &str) -> bool {
    !label.is_empty() && !label.chars().any(char::is_control)
}

#[cfg(test)]
mod tests;
