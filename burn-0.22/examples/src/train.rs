//! The training state on Burn 0.22: [`Training`], a model and its `ModuleOptimizer` on one
//! device, driven by the shared loop ([`Trainer::run_epoch`]); its evaluation's tensor part
//! (cosine similarities on the device) and its checkpoint records (burnpack files: the
//! model's `ModuleRecord`, the optimizer's `OptimizerRecord`).

use std::path::Path;
use std::time::Instant;

use burn::optim::{ModuleOptimizer, OptimizerRecord};
use burn::tensor::{Device, Int, Tensor, TensorData};
use wordnet_app::Error;
use wordnet_app::checkpoint::{CheckpointMeta, unreadable_record};
use wordnet_app::skipgram::SkipGramBatch;
use wordnet_app::train::{History, Phases, TrainConfig, Trainer};

use crate::model::{ModelShape, SkipGramModel, skip_gram_loss};

/// The extension of burnpack files, which Burn adds to a path without one.
pub const RECORD_EXTENSION: &str = "bpk";

/// A model, its optimizer and the run's history, on one device.
pub struct Training<M> {
    config: TrainConfig,
    model: Option<M>,
    optim: ModuleOptimizer,
    history: History,
    device: Device,
}

impl<M: SkipGramModel> Training<M> {
    /// A new run on a graph of `nodes` nodes: the model initialized from the seed, the
    /// optimizer as given (fresh).
    pub fn new(config: TrainConfig, nodes: usize, optim: ModuleOptimizer, device: &Device) -> Self {
        let shape = ModelShape {
            nodes,
            dim: config.dim,
            init_std: config.init_std,
        };
        let model = M::init(shape, config.seed, device);
        Self {
            config,
            model: Some(model),
            optim,
            history: History::default(),
            device: device.clone(),
        }
    }

    /// Restores the run that `meta` describes on `device` (any backend: the records are
    /// backend-independent), with `optim` a fresh optimizer of the checkpoint's kind.
    ///
    /// # Errors
    ///
    /// [`Error::Checkpoint`] when a record file is missing or unreadable.
    pub fn restore(
        dir: &Path,
        meta: &CheckpointMeta,
        optim: ModuleOptimizer,
        device: &Device,
    ) -> Result<Self, Error> {
        let file = |name: &str| dir.join(name).with_extension(RECORD_EXTENSION);
        // Burn's messages say what failed to decode; this names the file and the way out.
        let unreadable = |what: &str, path: &Path, err: &dyn std::fmt::Display| {
            let problem = if path.exists() {
                format!(
                    "{} is damaged or incomplete and cannot be decoded ({err})",
                    path.display()
                )
            } else {
                format!("{} is missing", path.display())
            };
            unreadable_record(dir, what, &problem)
        };
        let mut training = Self::new(meta.config.clone(), meta.graph.nodes, optim, device);
        let model_path = file(&meta.model_file);
        let model = training
            .model
            .take()
            .expect("a new run has its model")
            .try_load_file(&model_path)
            .map_err(|e| unreadable("model", &model_path, &e))?;
        let optim_path = file(&meta.optimizer_file);
        let record = OptimizerRecord::load(&optim_path)
            .map_err(|e| unreadable("optimizer", &optim_path, &e))?;
        training.model = Some(model);
        training.optim = training.optim.load_record(record);
        training.history = meta.history.clone();
        Ok(training)
    }

    /// The model.
    pub fn model(&self) -> &M {
        self.model
            .as_ref()
            .expect("the model is only taken during a step")
    }

    /// The optimizer.
    pub fn optim(&self) -> &ModuleOptimizer {
        &self.optim
    }

    /// The device.
    pub fn device(&self) -> &Device {
        &self.device
    }
}

impl<M: SkipGramModel> Trainer for Training<M> {
    fn config(&self) -> &TrainConfig {
        &self.config
    }

    fn history(&self) -> &History {
        &self.history
    }

    fn history_mut(&mut self) -> &mut History {
        &mut self.history
    }

    fn step(&mut self, batch: &SkipGramBatch, phases: &mut Phases) -> f64 {
        let mut mark = Instant::now();
        let model = self
            .model
            .take()
            .expect("the model is only taken during a step");
        let [centre, context, negative] = model.lookup(batch, &self.device);
        Phases::lap(&mut phases.lookup, &mut mark);
        let loss = skip_gram_loss(centre, context, negative, &self.config.skip_gram);
        let value = loss.clone().into_scalar::<f64>();
        Phases::lap(&mut phases.loss, &mut mark);
        let grads = loss.backward();
        Phases::lap(&mut phases.backward, &mut mark);
        // `SparseSkipGram::gradients` is `collect_grads(grads, &model)`; the dense model's
        // is `GradientsParams::from_grads`.
        let grads = model.gradients(grads);
        Phases::lap(&mut phases.gradients, &mut mark);
        self.model = Some(self.optim.step(self.config.lr, model, grads));
        Phases::lap(&mut phases.optimizer, &mut mark);
        value
    }

    /// Off the autodiff graph: the evaluation records nothing for a backward pass.
    fn cosine_similarities(&self, pairs: &[(u32, u32)]) -> Vec<f32> {
        cosine_similarities(&self.model().input_vectors(), pairs)
    }

    fn similarities_to(&self, query: u32) -> Vec<f32> {
        similarities_to(&self.model().input_vectors(), query)
    }

    fn record_extension(&self) -> &'static str {
        RECORD_EXTENSION
    }

    fn save_records(&self, model: &Path, optimizer: &Path) -> Result<(), String> {
        self.model()
            .clone()
            .save_file(model.with_extension(RECORD_EXTENSION))
            .map_err(|e| format!("cannot write the model record: {e}"))?;
        self.optim
            .save(optimizer.with_extension(RECORD_EXTENSION))
            .map_err(|e| format!("cannot write the optimizer record: {e}"))
    }
}

fn index_tensor(nodes: impl Iterator<Item = u32>, device: &Device) -> Tensor<1, Int> {
    let data: Vec<i64> = nodes.map(i64::from).collect();
    let len = data.len();
    Tensor::from_data(TensorData::new(data, [len]), device)
}

fn host<const D: usize>(tensor: Tensor<D>) -> Vec<f32> {
    tensor
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("f32 data")
}

/// The cosine similarity of the rows of each pair, computed on `vectors`' device.
pub fn cosine_similarities(vectors: &Tensor<2>, pairs: &[(u32, u32)]) -> Vec<f32> {
    if pairs.is_empty() {
        return Vec::new();
    }
    let device = vectors.device();
    let a = vectors
        .clone()
        .select(0, index_tensor(pairs.iter().map(|p| p.0), &device));
    let b = vectors
        .clone()
        .select(0, index_tensor(pairs.iter().map(|p| p.1), &device));
    let norms = |t: &Tensor<2>| t.clone().powi_scalar(2).sum_dim(1).sqrt();
    host((a.clone() * b.clone()).sum_dim(1) / (norms(&a) * norms(&b)).clamp_min(1e-12))
}

/// The cosine similarity of row `query` of `vectors` with every row, by row.
pub fn similarities_to(vectors: &Tensor<2>, query: u32) -> Vec<f32> {
    let device = vectors.device();
    let normalized = vectors.clone()
        / vectors
            .clone()
            .powi_scalar(2)
            .sum_dim(1)
            .sqrt()
            .clamp_min(1e-12);
    let q = normalized
        .clone()
        .select(0, index_tensor(std::iter::once(query), &device));
    host(q.matmul(normalized.transpose()))
}
