//! What a Burn line supplies to the shared example: its names, and a [`Trainer`] built
//! with its Burn API. The lines' Burn APIs differ in every type that matters here (a
//! backend type parameter on 0.21, a run-time `Device` on 0.22; `BinFileRecorder` records
//! on 0.21, burnpack on 0.22), so the seam is a trait object, called once per step.

use std::fmt::Debug;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::checkpoint::CheckpointMeta;
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
    /// [`Error::Checkpoint`] when a record is missing or does not decode;
    /// [`Error::Usage`] when the line does not have `optimizer` (compact moments are the
    /// 0.2 line's).
    fn start(
        backend: BackendName<Self>,
        optimizer: OptimizerName,
        config: &TrainConfig,
        nodes: usize,
        resume: Option<(&Path, &CheckpointMeta)>,
    ) -> Result<Box<dyn Trainer>, Error>;
}

/// A backend the example of line `L` runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendName<L> {
    /// The line's CPU backend (burn-ndarray on 0.21, burn-flex on 0.22).
    Cpu(PhantomData<L>),
    /// burn-wgpu, on a GPU (or Mesa's software Vulkan driver).
    Wgpu,
}

impl<L: Line> BackendName<L> {
    /// The line's CPU backend.
    pub const CPU: Self = BackendName::Cpu(PhantomData);

    /// The name on the command line and in checkpoints.
    pub fn name(self) -> &'static str {
        match self {
            BackendName::Cpu(_) => L::CPU_BACKEND,
            BackendName::Wgpu => "wgpu",
        }
    }
}

impl<L: Line> FromStr for BackendName<L> {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "wgpu" => Ok(BackendName::Wgpu),
            _ if s == L::CPU_BACKEND => Ok(Self::CPU),
            _ => Err(format!(
                "unknown backend {s:?}: expected {} or wgpu",
                L::CPU_BACKEND
            )),
        }
    }
}

/// An optimizer the example trains with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptimizerName {
    /// burn-sparse-adam's SparseAdam on `SparseEmbedding` tables.
    SparseAdam,
    /// SparseAdam with its moments stored in `bf16` (compact moments, the 0.2 line's
    /// `SparseAdamConfig::moment_dtype`).
    SparseAdamBf16,
    /// SparseAdam with its moments stored in `f16`.
    SparseAdamF16,
    /// Burn's Adam (epsilon 1e-8) on stock `Embedding` tables.
    Adam,
}

impl OptimizerName {
    /// The name on the command line and in checkpoints.
    pub fn name(self) -> &'static str {
        match self {
            OptimizerName::SparseAdam => "sparse-adam",
            OptimizerName::SparseAdamBf16 => "sparse-adam-bf16",
            OptimizerName::SparseAdamF16 => "sparse-adam-f16",
            OptimizerName::Adam => "adam",
        }
    }
}

impl FromStr for OptimizerName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "sparse-adam" | "sparseadam" => Ok(OptimizerName::SparseAdam),
            "sparse-adam-bf16" => Ok(OptimizerName::SparseAdamBf16),
            "sparse-adam-f16" => Ok(OptimizerName::SparseAdamF16),
            "adam" => Ok(OptimizerName::Adam),
            _ => Err(format!(
                "unknown optimizer {s:?}: expected sparse-adam, sparse-adam-bf16, sparse-adam-f16 or adam"
            )),
        }
    }
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

    #[test]
    fn optimizer_names_round_trip() {
        for optimizer in [
            OptimizerName::SparseAdam,
            OptimizerName::SparseAdamBf16,
            OptimizerName::SparseAdamF16,
            OptimizerName::Adam,
        ] {
            assert_eq!(optimizer.name().parse::<OptimizerName>(), Ok(optimizer));
        }
        let err = "sparse-adam-f64".parse::<OptimizerName>().unwrap_err();
        assert!(err.contains("sparse-adam-bf16"), "{err}");
    }
}
