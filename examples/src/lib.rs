//! Examples of burn-sparse-adam on real data.
//!
//! # `wordnet`: DeepWalk on the WordNet 3.0 noun hierarchy
//!
//! `cargo run --release --example wordnet` trains node embeddings with random walks and
//! skip-gram with negative sampling (DeepWalk), the textbook SparseAdam workload, on the
//! 82,115 noun synsets of WordNet 3.0, and scores them by ROC AUC. The example binary
//! (`examples/wordnet.rs`) only parses arguments; the pipeline lives here, one module per
//! concept:
//!
//! - [`graph`]: loading the shipped graph, subgraphs, the evaluation's node pairs;
//! - [`rng`]: the seeded random streams that make runs reproducible and resumable;
//! - [`walks`]: uniform random walks;
//! - [`skipgram`]: skip-gram batches and the loss on looked-up rows;
//! - [`model`]: input and context tables, as `SparseEmbedding`s (SparseAdam) or stock
//!   `Embedding`s (Burn's Adam);
//! - [`train`]: the training loop, one `collect_grads` + `optim.step` per batch;
//! - [`eval`]: cosine similarities, exact ROC AUC, nearest neighbours;
//! - [`checkpoint`]: model and optimizer records plus metadata, resumable on any backend;
//! - [`plot`]: the loss and AUC chart;
//! - [`progress`]: the progress bar;
//! - [`cli`] and [`app`]: the command line and the run behind it.

#![warn(missing_docs)]

pub mod app;
pub mod checkpoint;
pub mod cli;
pub mod error;
pub mod eval;
pub mod graph;
pub mod model;
pub mod plot;
pub mod progress;
pub mod rng;
pub mod skipgram;
pub mod train;
pub mod walks;

pub use error::Error;
