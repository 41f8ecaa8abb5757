//! The training state on Burn 0.21: [`Training`], a model and its optimizer on one backend,
//! driven by the shared loop ([`Trainer::run_epoch`]). The configuration, the data and the
//! history are the shared crate's ([`wordnet_app::train`], re-exported here).

use std::path::Path;
use std::time::Instant;

use burn::optim::Optimizer;
use burn::record::Recorder;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::ElementConversion;

pub use wordnet_app::train::{
    EpochRecord, History, Phases, Silent, StepObserver, TrainConfig, TrainData, Trainer,
};

use crate::checkpoint::CheckpointRecorder;
use crate::eval::{cosine_similarities, similarities_to};
use crate::model::{ModelShape, SkipGramModel};
use crate::skipgram::{skip_gram_loss, SkipGramBatch};

/// A model, its optimizer and the run's history, on one backend.
pub struct Training<B: AutodiffBackend, M, O> {
    config: TrainConfig,
    model: Option<M>,
    optim: O,
    history: History,
    device: B::Device,
}

impl<B: AutodiffBackend, M: SkipGramModel<B>, O: Optimizer<M, B>> Training<B, M, O> {
    /// A new run on a graph of `nodes` nodes: the model initialized from the seed, the
    /// optimizer as given (fresh).
    pub fn new(config: TrainConfig, nodes: usize, optim: O, device: &B::Device) -> Self {
        let shape = ModelShape {
            nodes,
            dim: config.dim,
            init_std: config.init_std,
        };
        let model = M::init(shape, config.seed, device);
        Self::from_parts(config, model, optim, History::default(), device)
    }

    /// A run from its parts (a restored checkpoint).
    pub fn from_parts(
        config: TrainConfig,
        model: M,
        optim: O,
        history: History,
        device: &B::Device,
    ) -> Self {
        Self {
            config,
            model: Some(model),
            optim,
            history,
            device: device.clone(),
        }
    }

    /// Takes the run apart: configuration, model, optimizer, history.
    pub fn into_parts(self) -> (TrainConfig, M, O, History) {
        let model = self.model.expect("the model is only taken during a step");
        (self.config, model, self.optim, self.history)
    }

    /// The model.
    pub fn model(&self) -> &M {
        self.model
            .as_ref()
            .expect("the model is only taken during a step")
    }

    /// The optimizer.
    pub fn optim(&self) -> &O {
        &self.optim
    }

    /// The device.
    pub fn device(&self) -> &B::Device {
        &self.device
    }
}

impl<B: AutodiffBackend, M: SkipGramModel<B>, O: Optimizer<M, B>> Trainer for Training<B, M, O> {
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
        let value = loss.clone().into_scalar().elem::<f64>();
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

    /// On the inner backend: no autodiff graph for the evaluation.
    fn cosine_similarities(&self, pairs: &[(u32, u32)]) -> Vec<f32> {
        cosine_similarities(&self.model().input_vectors(), pairs)
    }

    fn similarities_to(&self, query: u32) -> Vec<f32> {
        similarities_to(&self.model().input_vectors(), query)
    }

    fn record_extension(&self) -> &'static str {
        "bin"
    }

    fn save_records(&self, model: &Path, optimizer: &Path) -> Result<(), String> {
        let recorder = CheckpointRecorder::new();
        recorder
            .record(self.model().clone().into_record(), model.to_path_buf())
            .map_err(|e| format!("cannot write the model record: {e}"))?;
        recorder
            .record(self.optim.to_record(), optimizer.to_path_buf())
            .map_err(|e| format!("cannot write the optimizer record: {e}"))
    }
}
