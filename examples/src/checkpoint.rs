//! Checkpoints on Burn 0.21: the model's and the optimizer's records through Burn's
//! `BinFileRecorder` (full precision, `.bin` files), beside the shared metadata file
//! ([`wordnet_app::checkpoint`], whose layout, atomic replacement and checks are shared
//! with the 0.2 line). Records are backend-independent files, so a checkpoint saved on one
//! backend loads on another (`--resume-backend`).

use std::path::Path;

use burn::optim::Optimizer;
use burn::record::{BinFileRecorder, FullPrecisionSettings, Recorder, RecorderError};
use burn::tensor::backend::AutodiffBackend;

use wordnet_app::checkpoint::unreadable_record;
pub use wordnet_app::checkpoint::{CheckpointMeta, GraphSize, META_FILE};

use crate::model::SkipGramModel;
use crate::train::{Trainer, Training};
use crate::Error;

/// The version of this line's checkpoint layout; a checkpoint of another version (the 0.2
/// line's burnpack records among them) is refused.
pub const CHECKPOINT_FORMAT: u32 = 1;

/// The recorder of both records.
pub type CheckpointRecorder = BinFileRecorder<FullPrecisionSettings>;

/// Why the `what` record of checkpoint `dir`, saved at `path` (without the recorder's
/// `.bin`), cannot be read. Burn's own message nests the decoder's error in a
/// debug-escaped string and guesses at a format-version mismatch; what a user needs is the
/// broken file and the way out.
fn record_error(dir: &Path, what: &str, path: &Path, err: RecorderError) -> Error {
    let file = path.with_extension("bin");
    let problem = match &err {
        RecorderError::FileNotFound(_) => format!("{} is missing", file.display()),
        RecorderError::DeserializeError(message) | RecorderError::Unknown(message) => {
            // Burn appends its metadata comparison after a line break: keep the cause.
            let cause = message.lines().next().unwrap_or_default().trim();
            format!(
                "{} is damaged or incomplete and cannot be decoded ({cause})",
                file.display()
            )
        }
    };
    unreadable_record(dir, what, &problem)
}

/// Saves `training` into `dir` (created if needed), replacing the checkpoint there.
///
/// # Errors
///
/// [`Error::Checkpoint`] when a file cannot be written.
pub fn save(
    dir: &Path,
    training: &dyn Trainer,
    backend: &str,
    optimizer: &str,
    graph: GraphSize,
) -> Result<CheckpointMeta, Error> {
    wordnet_app::checkpoint::save(dir, training, CHECKPOINT_FORMAT, backend, optimizer, graph)
}

/// Reads `dir`'s [`CheckpointMeta`].
///
/// # Errors
///
/// [`Error::Checkpoint`] when there is no checkpoint, or it is unreadable or of another
/// format.
pub fn load_meta(dir: &Path) -> Result<CheckpointMeta, Error> {
    wordnet_app::checkpoint::load_meta(dir, CHECKPOINT_FORMAT)
}

/// Restores the run that `meta` describes on backend `B` (any backend: the records are
/// backend-independent), with `optim` a fresh optimizer of the checkpoint's kind.
///
/// # Errors
///
/// [`Error::Checkpoint`] when a record file is missing or unreadable.
pub fn restore<B, M, O>(
    dir: &Path,
    meta: &CheckpointMeta,
    optim: O,
    device: &B::Device,
) -> Result<Training<B, M, O>, Error>
where
    B: AutodiffBackend,
    M: SkipGramModel<B>,
    O: Optimizer<M, B>,
{
    let recorder = CheckpointRecorder::new();
    let model_path = dir.join(&meta.model_file);
    let model_record = recorder
        .load(model_path.clone(), device)
        .map_err(|e| record_error(dir, "model", &model_path, e))?;
    let optim_path = dir.join(&meta.optimizer_file);
    let optim_record = recorder
        .load(optim_path.clone(), device)
        .map_err(|e| record_error(dir, "optimizer", &optim_path, e))?;
    let fresh = Training::<B, M, O>::new(meta.config.clone(), meta.graph.nodes, optim, device);
    let (config, model, optim, _) = fresh.into_parts();
    Ok(Training::from_parts(
        config,
        model.load_record(model_record),
        optim.load_record(optim_record),
        meta.history.clone(),
        device,
    ))
}
