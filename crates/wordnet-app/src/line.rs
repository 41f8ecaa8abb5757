//! What a Burn line supplies to the shared example: its names, and a [`Trainer`] built
//! with its Burn API. The lines' Burn APIs differ in every type that matters here (a
//! backend type parameter on 0.21, a run-time `Device` on 0.22; `BinFileRecorder` records
//! on 0.21, burnpack on 0.22), so the seam is a trait object, called once per step.

use std::fmt::Debug;
use std::path::{Path, PathBuf};

use crate::checkpoint::CheckpointMeta;
use crate::cli::{BackendName, OptimizerName};
use crate::error::Error;
use crate::train::{TrainConfig, Trainer};

/// A Burn line's example, as a marker type.
pub trait Line: Copy + Eq + Debug + Send + Sync + 'static {
    /// The name of the line's CPU backend, the default one (`ndarray`, `flex`), on the
    /// command line and in checkpoints.
    const CPU_BACKEND: &'static str;
    /// How the example is started, for the usage text.
    const COMMAND: &'static str;
    /// The checkpoint format: the lines write different record files, so a checkpoint of
    /// the other line is refused by its number, before a record fails to decode.
    const CHECKPOINT_FORMAT: u32;

    /// The workspace whose `target/wordnet` holds the checkpoint unless `--out` says
    /// otherwise.
    fn workspace_root() -> PathBuf;

    /// A fresh model and optimizer for a graph of `nodes` nodes, or, with `resume`, the
    /// run that checkpoint directory and metadata describe.
    ///
    /// # Errors
    ///
    /// [`Error::Checkpoint`] when a record is missing or does not decode.
    fn start(
        backend: BackendName<Self>,
        optimizer: OptimizerName,
        config: &TrainConfig,
        nodes: usize,
        resume: Option<(&Path, &CheckpointMeta)>,
    ) -> Result<Box<dyn Trainer>, Error>;
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    macro_rules! test_line {
        ($name:ident, $cpu:literal) => {
            /// A line that only has names, for the tests of the Burn-free parts.
            #[derive(Clone, Copy, Debug, PartialEq, Eq)]
            pub(crate) struct $name;

            impl Line for $name {
                const CPU_BACKEND: &'static str = $cpu;
                const COMMAND: &'static str = "cargo run --release --example wordnet";
                const CHECKPOINT_FORMAT: u32 = 1;

                fn workspace_root() -> PathBuf {
                    PathBuf::from("/workspace")
                }

                fn start(
                    _: BackendName<Self>,
                    _: OptimizerName,
                    _: &TrainConfig,
                    _: usize,
                    _: Option<(&Path, &CheckpointMeta)>,
                ) -> Result<Box<dyn Trainer>, Error> {
                    unreachable!("the Burn-free tests train nothing")
                }
            }
        };
    }

    test_line!(NdArrayLine, "ndarray");
    test_line!(FlexLine, "flex");
}
