//! The WordNet DeepWalk example on burn-sparse-adam's 0.2 line (Burn 0.22).
//!
//! `cargo run --release --manifest-path burn-0.22/Cargo.toml --example wordnet` trains
//! node embeddings with random walks and skip-gram with negative sampling on the 82,115
//! noun synsets of WordNet 3.0 and scores them by ROC AUC, exactly as the 0.1 line's
//! example does: the pipeline (graph, walks, command line, report, chart, checkpoint
//! metadata) is the Burn-free `wordnet-app` crate both examples share. This crate is only
//! what Burn 0.22 decides:
//!
//! - [`model`]: input and context tables, as `SparseEmbedding`s (SparseAdam) or stock
//!   `Embedding`s (Burn's Adam), and the skip-gram loss on looked-up rows;
//! - [`train`]: [`train::Training`], one `collect_grads` + `ModuleOptimizer::step` per
//!   batch, cosine similarities on the device, burnpack records;
//! - [`Burn022`]: the line (flex by default, `--backend wgpu`), for `wordnet_app`.

#![warn(missing_docs)]

pub mod model;
pub mod train;

use std::path::{Path, PathBuf};

use burn::optim::{AdamConfig, ModuleOptimizer};
use burn::tensor::{Device, DeviceKind};
use burn_sparse_adam::{MomentDtype, SparseAdamConfig};
use wordnet_app::checkpoint::CheckpointMeta;
use wordnet_app::cli::{BackendName, OptimizerName};
use wordnet_app::train::{TrainConfig, Trainer};
use wordnet_app::{Error, Line};

use crate::model::{DenseSkipGram, SkipGramModel, SparseSkipGram};
use crate::train::Training;

/// The 0.2 line's example: burn-flex or burn-wgpu, burnpack checkpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Burn022;

/// This line's checkpoint format: the 0.1 line's metadata with burnpack records, which the
/// 0.1 line's `BinFileRecorder` files (format 1) are not.
pub const CHECKPOINT_FORMAT: u32 = 2;

impl Line for Burn022 {
    const CPU_BACKEND: &'static str = "flex";
    const COMMAND: &'static str =
        "cargo run --release --manifest-path burn-0.22/Cargo.toml --example wordnet";
    const CHECKPOINT_FORMAT: u32 = CHECKPOINT_FORMAT;

    /// The `burn-0.22` workspace: the parent of this package's directory.
    fn workspace_root() -> PathBuf {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        manifest.parent().unwrap_or(manifest).to_path_buf()
    }

    fn start(
        backend: BackendName<Self>,
        optimizer: OptimizerName,
        config: &TrainConfig,
        nodes: usize,
        resume: Option<(&Path, &CheckpointMeta)>,
    ) -> Result<Box<dyn Trainer>, Error> {
        let device = device(backend);
        match optimizer {
            OptimizerName::SparseAdam => start::<SparseSkipGram>(
                SparseAdamConfig::new().init(),
                config,
                nodes,
                resume,
                &device,
            ),
            OptimizerName::SparseAdamBf16 | OptimizerName::SparseAdamF16 => {
                let moments = match optimizer {
                    OptimizerName::SparseAdamBf16 => MomentDtype::Bf16,
                    _ => MomentDtype::F16,
                };
                start::<SparseSkipGram>(
                    SparseAdamConfig::new()
                        .with_moment_dtype(Some(moments))
                        .init(),
                    config,
                    nodes,
                    resume,
                    &device,
                )
            }
            OptimizerName::Adam => start::<DenseSkipGram>(adam(), config, nodes, resume, &device),
        }
    }
}

/// The training device of `backend`, with autodiff.
pub fn device(backend: BackendName<Burn022>) -> Device {
    match backend {
        BackendName::Cpu(_) => Device::flex(),
        BackendName::Wgpu => Device::wgpu(DeviceKind::DefaultDevice),
    }
    .autodiff()
}

/// Burn's Adam with PyTorch's epsilon, the comparison the issue asks for.
pub fn adam() -> ModuleOptimizer {
    AdamConfig::new().with_epsilon(1e-8).init()
}

fn start<M: SkipGramModel>(
    optim: ModuleOptimizer,
    config: &TrainConfig,
    nodes: usize,
    resume: Option<(&Path, &CheckpointMeta)>,
    device: &Device,
) -> Result<Box<dyn Trainer>, Error> {
    Ok(match resume {
        Some((dir, meta)) => Box::new(Training::<M>::restore(dir, meta, optim, device)?),
        None => Box::new(Training::<M>::new(config.clone(), nodes, optim, device)),
    })
}
