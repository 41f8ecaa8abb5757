//! Checkpoints: the model's and the optimizer's records (Burn's `BinFileRecorder`, full
//! precision) and a JSON file with everything else a resumed run needs: the configuration,
//! the backend and optimizer, the graph's size and the metrics history.
//!
//! A directory holds one checkpoint, rewritten after every epoch:
//!
//! - `model-epoch<E>.bin`: the two tables (`burn::nn::EmbeddingRecord` each, so a
//!   checkpoint of either model loads into the other);
//! - `optimizer-epoch<E>.bin`: SparseAdam's (or Adam's) record, moments and step counts;
//! - `checkpoint.json`: [`CheckpointMeta`], naming those two files.
//!
//! `checkpoint.json` is written last, through a rename, so an interrupted save leaves the
//! previous checkpoint intact; the previous epoch's record files are removed afterwards.
//! Records are backend-independent files, so a checkpoint saved on one backend loads on
//! another (`--resume-backend`).

use std::fs;
use std::path::Path;

use burn::optim::Optimizer;
use burn::record::{BinFileRecorder, FullPrecisionSettings, Recorder, RecorderError};
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::model::SkipGramModel;
use crate::train::{History, TrainConfig, Training};

/// The version of the checkpoint layout; a checkpoint of another version is refused.
pub const CHECKPOINT_FORMAT: u32 = 1;

/// The name of the metadata file in a checkpoint directory.
pub const META_FILE: &str = "checkpoint.json";

/// The recorder of both records.
pub type CheckpointRecorder = BinFileRecorder<FullPrecisionSettings>;

/// The size of the graph a checkpoint was trained on, checked when resuming.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GraphSize {
    /// Nodes.
    pub nodes: usize,
    /// Edges.
    pub edges: usize,
}

/// Everything in a checkpoint besides the records.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// [`CHECKPOINT_FORMAT`].
    pub format: u32,
    /// The backend that trained it (`ndarray`, `wgpu`); several backends may have.
    pub backend: String,
    /// The optimizer (`sparse-adam`, `adam`).
    pub optimizer: String,
    /// The graph it was trained on.
    pub graph: GraphSize,
    /// The configuration.
    pub config: TrainConfig,
    /// The metrics, one record per finished epoch.
    pub history: History,
    /// The model record's file name (without the `.bin` the recorder adds).
    pub model_file: String,
    /// The optimizer record's file name (without `.bin`).
    pub optimizer_file: String,
}

impl CheckpointMeta {
    /// Epochs finished.
    pub fn epochs_done(&self) -> usize {
        self.history.epochs.len()
    }
}

/// Why the `what` record of checkpoint `dir`, saved at `path` (without the recorder's
/// `.bin`), cannot be read, and what to do about it. Burn's own message nests the decoder's
/// error in a debug-escaped string and guesses at a format-version mismatch; what a user
/// needs is the broken file and the way out.
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
    checkpoint_error(
        dir,
        format!(
            "the {what} record {problem}; this checkpoint cannot be resumed: run without --resume, or with another --out, to train from scratch (or delete {} first)",
            dir.display()
        ),
    )
}

fn checkpoint_error(dir: &Path, reason: impl std::fmt::Display) -> Error {
    Error::Checkpoint {
        dir: dir.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Saves `training` into `dir` (created if needed), replacing the checkpoint there.
///
/// # Errors
///
/// [`Error::Checkpoint`] when a file cannot be written.
pub fn save<B, M, O>(
    dir: &Path,
    training: &Training<B, M, O>,
    backend: &str,
    optimizer: &str,
    graph: GraphSize,
) -> Result<CheckpointMeta, Error>
where
    B: AutodiffBackend,
    M: SkipGramModel<B>,
    O: Optimizer<M, B>,
{
    fs::create_dir_all(dir).map_err(|e| checkpoint_error(dir, format!("cannot create it: {e}")))?;
    let previous = load_meta(dir).ok();
    let epoch = training.epochs_done();
    let meta = CheckpointMeta {
        format: CHECKPOINT_FORMAT,
        backend: backend.to_string(),
        optimizer: optimizer.to_string(),
        graph,
        config: training.config().clone(),
        history: training.history().clone(),
        model_file: format!("model-epoch{epoch}"),
        optimizer_file: format!("optimizer-epoch{epoch}"),
    };
    let recorder = CheckpointRecorder::new();
    recorder
        .record(
            training.model().clone().into_record(),
            dir.join(&meta.model_file),
        )
        .map_err(|e| checkpoint_error(dir, format!("cannot write the model record: {e}")))?;
    recorder
        .record(training.optim().to_record(), dir.join(&meta.optimizer_file))
        .map_err(|e| checkpoint_error(dir, format!("cannot write the optimizer record: {e}")))?;

    let json = serde_json::to_string_pretty(&meta).expect("the metadata serializes");
    let partial = dir.join(format!("{META_FILE}.partial"));
    fs::write(&partial, json + "\n")
        .and_then(|()| fs::rename(&partial, dir.join(META_FILE)))
        .map_err(|e| checkpoint_error(dir, format!("cannot write {META_FILE}: {e}")))?;

    if let Some(previous) = previous {
        for file in [previous.model_file, previous.optimizer_file] {
            if file != meta.model_file && file != meta.optimizer_file {
                let _ = fs::remove_file(dir.join(file).with_extension("bin"));
            }
        }
    }
    Ok(meta)
}

/// Reads `dir`'s [`CheckpointMeta`].
///
/// # Errors
///
/// [`Error::Checkpoint`] when there is no checkpoint, or it is unreadable or of another
/// format.
pub fn load_meta(dir: &Path) -> Result<CheckpointMeta, Error> {
    let path = dir.join(META_FILE);
    let text = fs::read_to_string(&path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            checkpoint_error(
                dir,
                format!("no {META_FILE}: nothing to resume (run without --resume first)"),
            )
        } else {
            checkpoint_error(dir, format!("cannot read {META_FILE}: {e}"))
        }
    })?;
    let meta: CheckpointMeta = serde_json::from_str(&text)
        .map_err(|e| checkpoint_error(dir, format!("{META_FILE} is malformed: {e}")))?;
    if meta.format != CHECKPOINT_FORMAT {
        return Err(checkpoint_error(
            dir,
            format!(
                "format {} is not the supported format {CHECKPOINT_FORMAT}",
                meta.format
            ),
        ));
    }
    Ok(meta)
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
