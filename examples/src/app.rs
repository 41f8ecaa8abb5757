//! The run behind the CLI on Burn 0.21: the shared run ([`wordnet_app::app`]) with this
//! line's backends and optimizers, [`Burn021`].

use std::io::Write;
use std::path::{Path, PathBuf};

use burn::backend::{Autodiff, NdArray, Wgpu};
use burn::optim::{AdamConfig, Optimizer};
use burn::tensor::backend::AutodiffBackend;
use burn_sparse_adam::SparseAdamConfig;
use wordnet_app::cli::OptimizerName;
use wordnet_app::Line;

pub use wordnet_app::app::{RunSummary, CHART_FILE};

use crate::checkpoint::{self, CheckpointMeta};
use crate::cli::{BackendName, Options};
use crate::model::{DenseSkipGram, SkipGramModel, SparseSkipGram};
use crate::train::{TrainConfig, Trainer, Training};
use crate::Error;

/// burn-ndarray under autodiff.
pub type NdArrayBackend = Autodiff<NdArray>;
/// burn-wgpu under autodiff.
pub type WgpuBackend = Autodiff<Wgpu>;

/// The 0.1 line's example: burn-ndarray or burn-wgpu, `BinFileRecorder` checkpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Burn021;

impl Line for Burn021 {
    const CPU_BACKEND: &'static str = "ndarray";
    const COMMAND: &'static str = "cargo run --release --example wordnet";
    const CHECKPOINT_FORMAT: u32 = checkpoint::CHECKPOINT_FORMAT;

    /// The root workspace: the parent of this package's directory.
    fn workspace_root() -> PathBuf {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        manifest.parent().unwrap_or(manifest).to_path_buf()
    }

    fn start(
        backend: BackendName,
        optimizer: OptimizerName,
        config: &TrainConfig,
        nodes: usize,
        resume: Option<(&Path, &CheckpointMeta)>,
    ) -> Result<Box<dyn Trainer>, Error> {
        match (backend, optimizer) {
            (BackendName::Cpu(_), OptimizerName::SparseAdam) => {
                start_on::<NdArrayBackend, SparseSkipGram<_>, _>(
                    SparseAdamConfig::new().init(),
                    config,
                    nodes,
                    resume,
                )
            }
            (BackendName::Cpu(_), OptimizerName::Adam) => {
                start_on::<NdArrayBackend, DenseSkipGram<_>, _>(adam(), config, nodes, resume)
            }
            (BackendName::Wgpu, OptimizerName::SparseAdam) => {
                start_on::<WgpuBackend, SparseSkipGram<_>, _>(
                    SparseAdamConfig::new().init(),
                    config,
                    nodes,
                    resume,
                )
            }
            (BackendName::Wgpu, OptimizerName::Adam) => {
                start_on::<WgpuBackend, DenseSkipGram<_>, _>(adam(), config, nodes, resume)
            }
            (_, OptimizerName::SparseAdamBf16 | OptimizerName::SparseAdamF16) => {
                Err(Error::Usage(format!(
                    "--optimizer {}: compact moments are on the 0.2 line only (burn-ndarray \
                     0.21 holds no 16-bit floats); run the 0.2 line's example",
                    optimizer.name()
                )))
            }
        }
    }
}

/// Runs what `options` ask for, writing the report to `out`.
///
/// # Errors
///
/// A malformed data file, a checkpoint that is missing or does not fit the options, a
/// file that cannot be written.
pub fn run(options: &Options, out: &mut dyn Write) -> Result<RunSummary, Error> {
    wordnet_app::app::run(options, out)
}

/// Burn's Adam with PyTorch's epsilon, the comparison the issue asks for.
fn adam<B: AutodiffBackend, M: SkipGramModel<B>>() -> impl Optimizer<M, B> {
    AdamConfig::new().with_epsilon(1e-8).init()
}

/// A fresh run, or the checkpoint restored, on backend `B`'s default device.
fn start_on<B, M, O>(
    optim: O,
    config: &TrainConfig,
    nodes: usize,
    resume: Option<(&Path, &CheckpointMeta)>,
) -> Result<Box<dyn Trainer>, Error>
where
    B: AutodiffBackend,
    M: SkipGramModel<B>,
    O: Optimizer<M, B> + 'static,
{
    let device = Default::default();
    Ok(match resume {
        Some((dir, meta)) => Box::new(checkpoint::restore::<B, M, O>(dir, meta, optim, &device)?),
        None => Box::new(Training::<B, M, O>::new(
            config.clone(),
            nodes,
            optim,
            &device,
        )),
    })
}
