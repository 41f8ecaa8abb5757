//! The Burn-free part of the WordNet DeepWalk example, shared by the example of each Burn
//! line (`burn-sparse-adam-examples` on Burn 0.21, `burn-sparse-adam-examples-022` on Burn
//! 0.22), so that the two examples cannot drift apart: same flags, same random streams,
//! same report, same checkpoint layout.
//!
//! A line's example only writes what its Burn API decides: the tables and the loss (its
//! tensors), one optimizer step, the cosine similarities, the record files. It hands them
//! over as a [`train::Trainer`] from its [`line::Line`]; everything else lives here, one
//! module per concept:
//!
//! - [`graph`]: loading the shipped graph, subgraphs, the evaluation's node pairs;
//! - [`rng`]: the seeded random streams that make runs reproducible and resumable;
//! - [`walks`]: uniform random walks;
//! - [`skipgram`]: the skip-gram samples (host indices) a batch's lookups read;
//! - [`train`]: the configuration, the epoch loop and the metrics history;
//! - [`eval`]: the evaluation pairs, exact ROC AUC, nearest-neighbour ranking;
//! - [`checkpoint`]: the checkpoint's metadata file and its atomic replacement;
//! - [`plot`]: the loss and AUC chart;
//! - [`progress`]: the progress bar;
//! - [`cli`] and [`app`]: the command line and the run behind it;
//! - [`line`]: what a Burn line supplies.

#![warn(missing_docs)]

pub mod app;
pub mod checkpoint;
pub mod cli;
pub mod error;
pub mod eval;
pub mod graph;
pub mod line;
pub mod plot;
pub mod progress;
pub mod rng;
pub mod skipgram;
pub mod train;
pub mod walks;

pub use error::Error;
pub use line::Line;
