//! The example's error type: what the CLI prints (after `error: `) before exiting non-zero.

use std::path::PathBuf;

use wordnet_graph::DataError;

/// Everything that can stop a run, each with a message for a person.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The command line is wrong; the CLI adds the usage hint and exits with status 2.
    #[error("{0}")]
    Usage(String),
    /// The graph file is missing, truncated or malformed (the message names the line).
    #[error("cannot load the graph from `{path}`: {source}")]
    Data {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        source: DataError,
    },
    /// A checkpoint cannot be written, read, or does not fit this run.
    #[error("checkpoint in `{dir}`: {reason}")]
    Checkpoint {
        /// The checkpoint directory.
        dir: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The chart cannot be drawn or written.
    #[error("cannot write the chart `{path}`: {reason}")]
    Plot {
        /// The PNG file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// Writing the report failed (a closed pipe, a full disk).
    #[error("cannot write the report: {0}")]
    Output(#[from] std::io::Error),
}
