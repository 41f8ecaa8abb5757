//! Checkpoints: the model's and the optimizer's records (written by the line, in its
//! Burn's record format) and a JSON file with everything else a resumed run needs: the
//! configuration, the backend and optimizer, the graph's size and the metrics history.
//!
//! A directory holds one checkpoint, rewritten after every epoch:
//!
//! - `model-epoch<E>.<ext>`: the two tables (each line's two models share a record layout,
//!   so a checkpoint of either model loads into the other);
//! - `optimizer-epoch<E>.<ext>`: SparseAdam's (or Adam's) record, moments and step counts;
//! - `checkpoint.json`: [`CheckpointMeta`], naming those two files.
//!
//! `<ext>` is the line's ([`Trainer::record_extension`]): `bin` for Burn 0.21's
//! `BinFileRecorder`, `bpk` for Burn 0.22's burnpack. `checkpoint.json` is written last,
//! through a rename, so an interrupted save leaves the previous checkpoint intact; the
//! previous epoch's record files are removed afterwards. Records are backend-independent
//! files, so a checkpoint saved on one backend loads on another (`--resume-backend`).

use std::fs;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::train::{History, TrainConfig, Trainer};

/// The name of the metadata file in a checkpoint directory.
pub const META_FILE: &str = "checkpoint.json";

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
    /// The line's [`Line::CHECKPOINT_FORMAT`](crate::Line::CHECKPOINT_FORMAT).
    pub format: u32,
    /// The backend that trained it (`ndarray` or `flex`, `wgpu`); several backends may have.
    pub backend: String,
    /// The optimizer (`sparse-adam`, `adam`).
    pub optimizer: String,
    /// The graph it was trained on.
    pub graph: GraphSize,
    /// The configuration.
    pub config: TrainConfig,
    /// The metrics, one record per finished epoch.
    pub history: History,
    /// The model record's file name (without the record extension).
    pub model_file: String,
    /// The optimizer record's file name (without the record extension).
    pub optimizer_file: String,
}

impl CheckpointMeta {
    /// Epochs finished.
    pub fn epochs_done(&self) -> usize {
        self.history.epochs.len()
    }
}

/// A record of checkpoint `dir` that cannot be read: `problem` says why (missing,
/// damaged), this adds what to do about it.
pub fn unreadable_record(dir: &Path, what: &str, problem: &str) -> Error {
    checkpoint_error(
        dir,
        format!(
            "the {what} record {problem}; this checkpoint cannot be resumed: run without --resume, or with another --out, to train from scratch (or delete {} first)",
            dir.display()
        ),
    )
}

/// An [`Error::Checkpoint`] of `dir`.
pub fn checkpoint_error(dir: &Path, reason: impl std::fmt::Display) -> Error {
    Error::Checkpoint {
        dir: dir.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Saves `training` into `dir` (created if needed), replacing the checkpoint there, as
/// checkpoint format `format`.
///
/// # Errors
///
/// [`Error::Checkpoint`] when a file cannot be written.
pub fn save(
    dir: &Path,
    training: &dyn Trainer,
    format: u32,
    backend: &str,
    optimizer: &str,
    graph: GraphSize,
) -> Result<CheckpointMeta, Error> {
    fs::create_dir_all(dir).map_err(|e| checkpoint_error(dir, format!("cannot create it: {e}")))?;
    let previous = load_meta(dir, format).ok();
    let epoch = training.epochs_done();
    let meta = CheckpointMeta {
        format,
        backend: backend.to_string(),
        optimizer: optimizer.to_string(),
        graph,
        config: training.config().clone(),
        history: training.history().clone(),
        model_file: format!("model-epoch{epoch}"),
        optimizer_file: format!("optimizer-epoch{epoch}"),
    };
    training
        .save_records(&dir.join(&meta.model_file), &dir.join(&meta.optimizer_file))
        .map_err(|e| checkpoint_error(dir, e))?;

    let json = serde_json::to_string_pretty(&meta).expect("the metadata serializes");
    let partial = dir.join(format!("{META_FILE}.partial"));
    fs::write(&partial, json + "\n")
        .and_then(|()| fs::rename(&partial, dir.join(META_FILE)))
        .map_err(|e| checkpoint_error(dir, format!("cannot write {META_FILE}: {e}")))?;

    if let Some(previous) = previous {
        for file in [previous.model_file, previous.optimizer_file] {
            if file != meta.model_file && file != meta.optimizer_file {
                let _ = fs::remove_file(dir.join(file).with_extension(training.record_extension()));
            }
        }
    }
    Ok(meta)
}

/// Reads `dir`'s [`CheckpointMeta`], which must be of checkpoint format `format`.
///
/// # Errors
///
/// [`Error::Checkpoint`] when there is no checkpoint, or it is unreadable or of another
/// format.
pub fn load_meta(dir: &Path, format: u32) -> Result<CheckpointMeta, Error> {
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
    if meta.format != format {
        return Err(checkpoint_error(
            dir,
            format!(
                "format {} is not the supported format {format} (a checkpoint of the other Burn line's example?)",
                meta.format
            ),
        ));
    }
    Ok(meta)
}
