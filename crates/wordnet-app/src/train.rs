//! The training loop: configuration, one SparseAdam (or Adam) step per batch of walks,
//! epochs with their evaluation, and the metrics history.
//!
//! One step is three lines of the line's Burn code (see [`Trainer::step`]):
//!
//! ```text
//! let loss = model.loss(&batch, &config.skip_gram, &device);   // lookups + skip-gram loss
//! let grads = collect_grads(loss.backward(), &model);          // row gradients of both tables
//! let model = optim.step(lr, model, grads);                    // SparseAdam: looked-up rows only
//! ```
//!
//! Everything random is drawn from streams of the run's seed (see [`crate::rng`]), epoch by
//! epoch, so the same seed gives the same numbers on the same backend, and a run resumed
//! from the checkpoint of epoch `e` continues exactly as the uninterrupted run did.

use std::path::Path;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use wordnet_graph::{Adjacency, NounGraph};

use crate::eval::{rank_neighbours, Aucs, EvalPairs};
use crate::rng::{Rng, Stream};
use crate::skipgram::{SkipGramBatch, SkipGramConfig};
use crate::walks::epoch_starts;

/// Everything that determines a run's numbers, besides the graph and the backend.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Width of the input and context vectors.
    pub dim: usize,
    /// Standard deviation of the initial input vectors (context vectors start at zero).
    pub init_std: f64,
    /// Walk length, window and negatives.
    pub skip_gram: SkipGramConfig,
    /// Walks started from each node per epoch.
    pub walks_per_node: usize,
    /// Walks per batch (per optimizer step).
    pub batch_size: usize,
    /// The optimizer's learning rate.
    pub lr: f64,
    /// The seed of every random stream.
    pub seed: u64,
    /// Pairs of each kind (direct, grandparent) the evaluation scores.
    pub eval_pairs: usize,
}

impl Default for TrainConfig {
    /// The issue's configuration, the PyTorch reference's: dim 64, walks of 20 nodes, one
    /// walk per node per epoch, window 5, 5 negatives, batches of 256 walks, lr 0.01,
    /// input vectors `N(0, 0.1)`, 5,000 evaluation pairs of each kind.
    fn default() -> Self {
        Self {
            dim: 64,
            init_std: 0.1,
            skip_gram: SkipGramConfig {
                walk_length: 20,
                window: 5,
                negatives: 5,
            },
            walks_per_node: 1,
            batch_size: 256,
            lr: 0.01,
            seed: 0,
            eval_pairs: 5_000,
        }
    }
}

impl TrainConfig {
    /// Checks the values that would make training meaningless or panic.
    ///
    /// # Errors
    ///
    /// A message naming the offending setting.
    pub fn validate(&self) -> Result<(), String> {
        self.skip_gram.validate()?;
        if self.dim == 0 {
            return Err("the dimension must be at least 1".into());
        }
        if self.walks_per_node == 0 || self.batch_size == 0 {
            return Err("walks per node and batch size must be at least 1".into());
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(format!(
                "the learning rate must be finite and > 0, got {}",
                self.lr
            ));
        }
        if !(self.init_std.is_finite() && self.init_std >= 0.0) {
            return Err(format!(
                "the init std must be finite and >= 0, got {}",
                self.init_std
            ));
        }
        Ok(())
    }

    /// Optimizer steps per epoch on a graph of `nodes` nodes.
    pub fn steps_per_epoch(&self, nodes: usize) -> usize {
        (nodes * self.walks_per_node).div_ceil(self.batch_size)
    }
}

/// The graph in the forms training and evaluation use.
#[derive(Clone, Debug)]
pub struct TrainData {
    /// The graph.
    pub graph: NounGraph,
    /// Its undirected adjacency, for the walks.
    pub adjacency: Adjacency,
    /// The pairs every evaluation scores.
    pub eval_pairs: EvalPairs,
}

impl TrainData {
    /// Prepares `graph` for a run of `config`.
    pub fn new(graph: NounGraph, config: &TrainConfig) -> Self {
        let adjacency = graph.adjacency();
        let eval_pairs = EvalPairs::sample(&graph, config.eval_pairs, config.seed);
        Self {
            graph,
            adjacency,
            eval_pairs,
        }
    }
}

/// What one epoch measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// The epoch, from 1.
    pub epoch: usize,
    /// The mean batch loss of the epoch.
    pub loss: f64,
    /// Optimizer steps taken.
    pub steps: usize,
    /// Wall-clock seconds of the training (sampling, steps), evaluation excluded.
    pub train_secs: f64,
    /// Seconds the evaluation took.
    pub eval_secs: f64,
    /// ROC AUC of edges against random pairs after the epoch.
    pub direct_auc: f64,
    /// ROC AUC of grandparent pairs against random pairs after the epoch.
    pub grandparent_auc: f64,
    /// Where [`train_secs`](Self::train_secs) went (zero in checkpoints written before
    /// phases were recorded).
    #[serde(default)]
    pub phases: Phases,
}

/// Seconds of an epoch's training spent in each phase of a step, summed over its steps.
///
/// Wall-clock time between the phases' boundaries, so it means what it says on backends
/// that compute as they are called (the CPU ones); on a GPU backend a phase's work may be
/// left queued and be paid by a later phase that reads a result back (the loss does).
/// `cargo xtask bench --wordnet` prints it beside PyTorch's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Phases {
    /// Random walks and negatives ([`SkipGramBatch::sample`]).
    pub sampling: f64,
    /// The batch's index tensors and the three table lookups.
    pub lookup: f64,
    /// The skip-gram loss from the looked-up rows, and reading it back.
    pub loss: f64,
    /// `loss.backward()`.
    pub backward: f64,
    /// Turning Burn's gradients into the optimizer's (`collect_grads`, `from_grads`).
    pub gradients: f64,
    /// The optimizer step.
    pub optimizer: f64,
}

impl Phases {
    /// Adds the time since `*mark` to `phase` and moves `*mark` to now, so that
    /// consecutive laps tile the step without gaps.
    pub fn lap(phase: &mut f64, mark: &mut Instant) {
        let now = Instant::now();
        *phase += now.duration_since(*mark).as_secs_f64();
        *mark = now;
    }

    /// The phases as `(name, seconds)`, in step order.
    pub fn named(&self) -> [(&'static str, f64); 6] {
        [
            ("sampling", self.sampling),
            ("lookup", self.lookup),
            ("loss", self.loss),
            ("backward", self.backward),
            ("gradients", self.gradients),
            ("optimizer", self.optimizer),
        ]
    }
}

/// The metrics of a run so far; saved with the checkpoint, drawn by the chart (`plot`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// `(direct, grandparent)` AUCs of the initial vectors.
    pub initial_aucs: Option<(f64, f64)>,
    /// One record per finished epoch.
    pub epochs: Vec<EpochRecord>,
    /// `(position in epochs, mean loss)` over stretches of about 1/50 epoch.
    pub loss_curve: Vec<(f64, f64)>,
}

impl History {
    /// The history with every wall-clock figure (seconds, phases) zeroed: what two runs of
    /// the same seed must agree on.
    pub fn without_timings(&self) -> Self {
        let mut history = self.clone();
        for epoch in &mut history.epochs {
            (epoch.train_secs, epoch.eval_secs) = (0.0, 0.0);
            epoch.phases = Phases::default();
        }
        history
    }

    /// Mean training seconds per epoch, over every recorded epoch.
    pub fn secs_per_epoch(&self) -> f64 {
        if self.epochs.is_empty() {
            return f64::NAN;
        }
        self.epochs.iter().map(|e| e.train_secs).sum::<f64>() / self.epochs.len() as f64
    }
}

/// Watches the steps of an epoch (a progress bar, periodic lines, or nothing).
pub trait StepObserver {
    /// An epoch of `steps` steps begins.
    fn epoch_start(&mut self, _epoch: usize, _epochs: usize, _steps: usize) {}
    /// Step `step` (from 1) finished with batch loss `loss`.
    fn step(&mut self, _step: usize, _loss: f64) {}
    /// The epoch's steps are done.
    fn epoch_end(&mut self) {}
}

/// A [`StepObserver`] that shows nothing.
pub struct Silent;

impl StepObserver for Silent {}

/// A model, its optimizer and the run's history, on one backend: what a Burn line
/// implements (the required methods) so that the shared loop can drive it (the provided
/// ones).
pub trait Trainer {
    /// The configuration.
    fn config(&self) -> &TrainConfig;

    /// The metrics so far.
    fn history(&self) -> &History;

    /// The metrics, for the loop to record into.
    fn history_mut(&mut self) -> &mut History;

    /// One optimizer step on `batch`; returns the batch's loss and adds the time of each
    /// phase after sampling to `phases` (see [`Phases::lap`]).
    fn step(&mut self, batch: &SkipGramBatch, phases: &mut Phases) -> f64;

    /// The cosine similarity of the input vectors of each pair, computed on the device.
    fn cosine_similarities(&self, pairs: &[(u32, u32)]) -> Vec<f32>;

    /// The cosine similarity of `query`'s input vector with every node's, by node.
    fn similarities_to(&self, query: u32) -> Vec<f32>;

    /// The extension the line's record files get (`bin`, `bpk`), for removing old ones.
    fn record_extension(&self) -> &'static str;

    /// Writes the model's and the optimizer's records to the files `model` and
    /// `optimizer` (without [`Trainer::record_extension`]).
    ///
    /// # Errors
    ///
    /// What went wrong, for a person.
    fn save_records(&self, model: &Path, optimizer: &Path) -> Result<(), String>;

    /// Epochs finished.
    fn epochs_done(&self) -> usize {
        self.history().epochs.len()
    }

    /// The AUCs of the current input vectors.
    fn evaluate(&self, pairs: &EvalPairs) -> Aucs {
        pairs.aucs(&self.cosine_similarities(&pairs.all()))
    }

    /// The `k` nodes whose input vectors are most cosine-similar to `query`'s (itself
    /// excluded), best first, with their similarity.
    fn nearest_neighbours(&self, query: u32, k: usize) -> Vec<(u32, f32)> {
        rank_neighbours(self.similarities_to(query), query, k)
    }

    /// Records the AUCs of the initial vectors, once (before the first epoch).
    fn evaluate_initial(&mut self, data: &TrainData) -> (f64, f64) {
        if let Some(initial) = self.history().initial_aucs {
            return initial;
        }
        let aucs = self.evaluate(&data.eval_pairs);
        self.history_mut().initial_aucs = Some((aucs.direct, aucs.grandparent));
        (aucs.direct, aucs.grandparent)
    }

    /// Trains the next epoch and evaluates it: the epoch's walks are drawn from the
    /// [`Stream::Epoch`] stream of `(seed, epoch)`, in batches of `batch_size` walks.
    /// `epochs` is only passed on to `observer`.
    fn run_epoch(
        &mut self,
        data: &TrainData,
        epochs: usize,
        observer: &mut dyn StepObserver,
    ) -> &EpochRecord {
        let config = self.config().clone();
        let epoch = self.epochs_done() + 1;
        let nodes = data.graph.num_nodes();
        let steps = config.steps_per_epoch(nodes);
        let mut rng = Rng::stream(config.seed, Stream::Epoch, epoch as u64);
        let starts = epoch_starts(nodes, config.walks_per_node, &mut rng);
        let stretch = steps.div_ceil(50).max(1);

        observer.epoch_start(epoch, epochs, steps);
        let started = Instant::now();
        let (mut total, mut stretch_total, mut stretch_steps) = (0.0, 0.0, 0);
        let mut phases = Phases::default();
        for (index, chunk) in starts.chunks(config.batch_size).enumerate() {
            let mut mark = Instant::now();
            let batch = SkipGramBatch::sample(&data.adjacency, chunk, &config.skip_gram, &mut rng);
            Phases::lap(&mut phases.sampling, &mut mark);
            let loss = self.step(&batch, &mut phases);
            total += loss;
            stretch_total += loss;
            stretch_steps += 1;
            if stretch_steps == stretch || index + 1 == steps {
                let position = (epoch - 1) as f64 + (index + 1) as f64 / steps as f64;
                self.history_mut()
                    .loss_curve
                    .push((position, stretch_total / stretch_steps as f64));
                (stretch_total, stretch_steps) = (0.0, 0);
            }
            observer.step(index + 1, loss);
        }
        let train_secs = started.elapsed().as_secs_f64();
        observer.epoch_end();

        let started = Instant::now();
        let aucs = self.evaluate(&data.eval_pairs);
        let history = self.history_mut();
        history.epochs.push(EpochRecord {
            epoch,
            loss: total / steps as f64,
            steps,
            train_secs,
            eval_secs: started.elapsed().as_secs_f64(),
            direct_auc: aucs.direct,
            grandparent_auc: aucs.grandparent,
            phases,
        });
        history.epochs.last().expect("just pushed")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn laps_tile_the_time_and_old_records_read_without_phases() {
        let mut phases = Phases::default();
        let start = Instant::now();
        let mut mark = start;
        std::thread::sleep(std::time::Duration::from_millis(2));
        Phases::lap(&mut phases.loss, &mut mark);
        Phases::lap(&mut phases.backward, &mut mark);
        let summed: f64 = phases.named().iter().map(|(_, s)| s).sum();
        assert!(phases.loss >= 0.002, "{phases:?}");
        assert_eq!(summed, phases.loss + phases.backward);
        assert!((summed - mark.duration_since(start).as_secs_f64()).abs() < 1e-9);

        let before_phases = r#"{"epoch": 1, "loss": 1.5, "steps": 3, "train_secs": 0.5,
            "eval_secs": 0.1, "direct_auc": 0.9, "grandparent_auc": 0.8}"#;
        let record: EpochRecord = serde_json::from_str(before_phases).unwrap();
        assert_eq!((record.steps, record.phases), (3, Phases::default()));
    }

    #[test]
    fn defaults_are_the_issues() {
        let config = TrainConfig::default();
        assert!(config.validate().is_ok());
        assert_eq!(config.steps_per_epoch(82_115), 321);
        assert_eq!(config.skip_gram.centres(), 16);
        let bad = TrainConfig {
            lr: 0.0,
            ..TrainConfig::default()
        };
        assert!(bad.validate().unwrap_err().contains("learning rate"));
    }
}
