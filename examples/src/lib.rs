//! Examples of burn-sparse-adam on real data.
//!
//! # `wordnet`: DeepWalk on the WordNet 3.0 noun hierarchy
//!
//! `cargo run --release --example wordnet` trains node embeddings with random walks and
//! skip-gram with negative sampling (DeepWalk), the textbook SparseAdam workload, on the
//! 82,115 noun synsets of WordNet 3.0, and scores them by ROC AUC. The example binary
//! (`examples/wordnet.rs`) only parses arguments; the pipeline is the Burn-free
//! `wordnet-app` crate, shared with the 0.2 line's example (Burn 0.22), plus the Burn 0.21
//! code here:
//!
//! - [`skipgram`]: the batches' index tensors and the loss on looked-up rows;
//! - [`model`]: input and context tables, as `SparseEmbedding`s (SparseAdam) or stock
//!   `Embedding`s (Burn's Adam);
//! - [`train`]: [`train::Training`], one `collect_grads` + `optim.step` per batch;
//! - [`eval`]: cosine similarities on the device;
//! - [`checkpoint`]: model and optimizer records (`BinFileRecorder`), resumable on any
//!   backend;
//! - [`cli`] and [`app`]: this line's command line, [`app::Burn021`].
//!
//! The shared modules are re-exported under their names ([`graph`], [`rng`], [`walks`],
//! [`plot`], [`progress`]), so this crate's paths are those of the whole pipeline.

#![warn(missing_docs)]

pub mod app;
pub mod checkpoint;
pub mod cli;
pub mod eval;
pub mod model;
pub mod skipgram;
pub mod train;

pub use wordnet_app::{graph, plot, progress, rng, walks, Error};
