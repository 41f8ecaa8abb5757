//! burn-train's `Learner` with SparseAdam: a small regression model with a `SparseEmbedding`
//! and a `Linear`, whose `TrainStep` builds its gradients with `collect_grads`, trained for a
//! few epochs from an in-memory dataset. The loss falls, the rows never looked up keep their
//! initial values bit for bit, the table takes the row path, and the result is the one of a
//! plain training loop over the same batches; with and without gradient accumulation.

use std::sync::{Arc, Mutex};

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataloader::DataLoaderBuilder;
use burn::data::dataset::InMemDataset;
use burn::module::{AutodiffModule, Module};
use burn::nn::loss::{MseLoss, Reduction};
use burn::nn::{Linear, LinearConfig};
use burn::optim::{GradientsAccumulator, Optimizer};
use burn::record::{BinFileRecorder, FullPrecisionSettings};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData};
use burn::train::checkpoint::KeepLastNCheckpoints;
use burn::train::renderer::CliMetricsRenderer;
use burn::train::{
    InferenceStep, Learner, RegressionOutput, SupervisedTraining, TrainOutput, TrainStep,
};
use burn_sparse_adam::{
    collect_grads, SparseAdamConfig, SparseAdamOptimizer, SparseEmbedding, SparseEmbeddingConfig,
    StepPath,
};
use burn_sparse_adam_tests::{
    assert_bits_eq, assert_params_bits_eq, linear, on_test_backend, param_values, sparse_table,
    values, Rng, TempDir,
};

const N: usize = 12;
/// Rows `USED..N` are never looked up.
const USED: usize = 8;
const D: usize = 4;
const ITEMS: usize = 16;
const BATCH: usize = 4;
const EPOCHS: usize = 3;
const LR: f64 = 0.05;

#[derive(Module, Debug)]
struct Regressor<B: Backend> {
    table: SparseEmbedding<B>,
    head: Linear<B>,
}

#[derive(Clone, Debug)]
struct Item {
    indices: [i64; 2],
    target: f32,
}

#[derive(Clone, Debug)]
struct RegressionBatch<B: Backend> {
    indices: Tensor<B, 2, Int>,
    targets: Tensor<B, 2>,
}

#[derive(Clone)]
struct ItemBatcher;

impl<B: Backend> Batcher<B, Item, RegressionBatch<B>> for ItemBatcher {
    fn batch(&self, items: Vec<Item>, device: &B::Device) -> RegressionBatch<B> {
        let n = items.len();
        let indices: Vec<i64> = items.iter().flat_map(|i| i.indices).collect();
        let targets: Vec<f32> = items.iter().map(|i| i.target).collect();
        RegressionBatch {
            indices: Tensor::from_data(TensorData::new(indices, [n, 2]), device),
            targets: Tensor::from_data(TensorData::new(targets, [n, 1]), device),
        }
    }
}

impl<B: Backend> Regressor<B> {
    /// `head(table(i) + table(j))`, and its mean squared error.
    fn regress(&self, batch: RegressionBatch<B>) -> RegressionOutput<B> {
        let [n, _] = batch.indices.dims();
        let pooled = self.table.forward(batch.indices).sum_dim(1).reshape([n, D]);
        let output = self.head.forward(pooled);
        let loss = MseLoss::new().forward(output.clone(), batch.targets.clone(), Reduction::Mean);
        RegressionOutput::new(loss, output, batch.targets)
    }
}

impl<B: AutodiffBackend> TrainStep for Regressor<B> {
    type Input = RegressionBatch<B>;
    type Output = RegressionOutput<B>;

    fn step(&self, batch: RegressionBatch<B>) -> TrainOutput<RegressionOutput<B>> {
        let item = self.regress(batch);
        TrainOutput {
            grads: collect_grads(item.loss.backward(), self),
            item,
        }
    }
}

impl<B: Backend> InferenceStep for Regressor<B> {
    type Input = RegressionBatch<B>;
    type Output = RegressionOutput<B>;

    fn step(&self, batch: RegressionBatch<B>) -> RegressionOutput<B> {
        self.regress(batch)
    }
}

/// The initial values of the model: `(table, head weight, head bias)`.
fn initial_values() -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut rng = Rng::new(41);
    (
        rng.uniform_vec(N * D, -1.0, 1.0),
        rng.uniform_vec(D, -0.5, 0.5),
        vec![0.0],
    )
}

fn model<B: Backend>(device: &B::Device) -> Regressor<B> {
    let (table, weight, bias) = initial_values();
    Regressor {
        table: sparse_table(N, D, &table, None, device),
        head: linear(D, 1, &weight, &bias, device),
    }
}

/// Pairs of rows among the first `USED`, and a target that is a fixed function of them.
fn items() -> Vec<Item> {
    let mut rng = Rng::new(42);
    let hidden: Vec<f32> = rng.uniform_vec(USED, -1.0, 1.0);
    (0..ITEMS)
        .map(|_| {
            let (i, j) = (rng.below(USED), rng.below(USED));
            Item {
                indices: [i as i64, j as i64],
                target: hidden[i] + hidden[j],
            }
        })
        .collect()
}

/// The mean squared error of a model over the whole dataset.
fn dataset_loss<B: Backend>(model: &Regressor<B>, device: &B::Device) -> f32 {
    let batch = Batcher::<B, Item, RegressionBatch<B>>::batch(&ItemBatcher, items(), device);
    values(model.regress(batch).loss)[0]
}

/// What a step hook saw: the number of steps, and the table's path and touched rows in each.
type Seen = Arc<Mutex<Vec<(StepPath, usize)>>>;

fn optimizer_with_hook<B: AutodiffBackend>(
    table: &SparseEmbedding<B>,
) -> (SparseAdamOptimizer<Regressor<B>, B>, Seen) {
    let optim: SparseAdamOptimizer<Regressor<B>, B> = SparseAdamConfig::new().init();
    let seen: Seen = Arc::default();
    let table_id = table.weight.id;
    let sink = seen.clone();
    let hook = optim.register_step_post_hook(move |info| {
        let table = info
            .params
            .iter()
            .find(|p| p.param == table_id)
            .expect("the table stepped");
        sink.lock().unwrap().push((table.path, table.touched_rows));
    });
    drop(hook); // dropping the handle keeps the hook registered
    (optim, seen)
}

/// The same training as a plain loop: the batches in the dataloader's order, one step per
/// `accumulation` batches (Burn's accumulator, reset each epoch).
fn plain_loop<B: AutodiffBackend>(device: &B::Device, accumulation: usize) -> Regressor<B> {
    let mut model = model::<B>(device);
    let mut optim: SparseAdamOptimizer<Regressor<B>, B> = SparseAdamConfig::new().init();
    let items = items();
    for _ in 0..EPOCHS {
        let mut accumulator = GradientsAccumulator::<Regressor<B>>::new();
        for (b, chunk) in items.chunks(BATCH).enumerate() {
            let batch =
                Batcher::<B, Item, RegressionBatch<B>>::batch(&ItemBatcher, chunk.to_vec(), device);
            let output = TrainStep::step(&model, batch);
            accumulator.accumulate(&model, output.grads);
            if (b + 1) % accumulation == 0 {
                model = optim.step(LR, model, accumulator.grads());
            }
        }
    }
    model
}

fn train_with_learner<B: AutodiffBackend>(device: &B::Device, accumulation: Option<usize>) {
    let initial = model::<B>(device);
    let initial_loss = dataset_loss(&initial.valid(), device);
    let (optim, seen) = optimizer_with_hook(&initial.table);

    let dir = TempDir::new("learner");
    let train = DataLoaderBuilder::new(ItemBatcher)
        .batch_size(BATCH)
        .build(InMemDataset::new(items()));
    let valid = DataLoaderBuilder::new(ItemBatcher)
        .batch_size(BATCH)
        .build(InMemDataset::new(items()));
    let mut training = SupervisedTraining::new(dir.path(), train, valid)
        .num_epochs(EPOCHS)
        .renderer(CliMetricsRenderer::new())
        .with_application_logger(None);
    if let Some(accumulation) = accumulation {
        training = training.grads_accumulation(accumulation);
    }
    let result = training.launch(Learner::new(initial, optim, LR));
    let trained = result.model;

    // The loss fell.
    let final_loss = dataset_loss(&trained, device);
    assert!(
        final_loss < 0.5 * initial_loss,
        "the loss did not fall enough: {initial_loss} → {final_loss}"
    );

    // Rows never looked up are their initial values, bit for bit; the others moved.
    let (table, _, _) = initial_values();
    let learned = values(trained.table.weight.val());
    assert_bits_eq(
        &learned[USED * D..],
        &table[USED * D..],
        "rows never looked up",
    );
    for r in 0..USED {
        if items().iter().any(|i| i.indices.contains(&(r as i64))) {
            assert!(
                learned[r * D..(r + 1) * D] != table[r * D..(r + 1) * D],
                "row {r} moved"
            );
        }
    }

    // Every step took the row path for the table, touching only looked-up rows.
    let accumulation = accumulation.unwrap_or(1);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen.len(),
        EPOCHS * ITEMS / BATCH / accumulation,
        "optimizer steps"
    );
    for (path, touched) in &seen {
        assert_eq!(*path, StepPath::Rows, "the table's path");
        assert!((1..=USED).contains(touched), "touched rows: {touched}");
    }

    // And the Learner did what a plain loop does.
    let expected = plain_loop::<B>(device, accumulation).valid();
    assert_params_bits_eq(
        &param_values(&trained),
        &param_values(&expected),
        "Learner vs a plain loop",
    );
}

#[test]
fn learner_trains_a_sparse_embedding_with_collect_grads() {
    fn case<B: AutodiffBackend>(device: &B::Device) {
        train_with_learner::<B>(device, None);
    }
    on_test_backend!(case);
}

#[test]
fn learner_trains_a_sparse_embedding_with_gradient_accumulation() {
    fn case<B: AutodiffBackend>(device: &B::Device) {
        train_with_learner::<B>(device, Some(2));
    }
    on_test_backend!(case);
}

/// A training checkpointed by the Learner (model, SparseAdam record, scheduler, through
/// Burn's file checkpointer) and resumed from its last epoch by a new Learner with a fresh
/// model and optimizer ends where an uninterrupted training ends, bit for bit.
#[test]
fn learner_resumes_from_its_checkpoint() {
    fn case<B: AutodiffBackend>(device: &B::Device) {
        let dir = TempDir::new("learner-resume");
        let loaders = || {
            (
                DataLoaderBuilder::new(ItemBatcher)
                    .batch_size(BATCH)
                    .build(InMemDataset::new(items())),
                DataLoaderBuilder::new(ItemBatcher)
                    .batch_size(BATCH)
                    .build(InMemDataset::new(items())),
            )
        };
        let recorder = BinFileRecorder::<FullPrecisionSettings>::new();

        let (train, valid) = loaders();
        let optim: SparseAdamOptimizer<Regressor<B>, B> = SparseAdamConfig::new().init();
        let _ = SupervisedTraining::new(dir.path(), train, valid)
            .num_epochs(EPOCHS - 1)
            .with_file_checkpointer(recorder.clone())
            .with_checkpointing_strategy(KeepLastNCheckpoints::new(EPOCHS))
            .renderer(CliMetricsRenderer::new())
            .with_application_logger(None)
            .launch(Learner::new(model::<B>(device), optim, LR));

        // A new program: fresh (random) model and optimizer, resumed from the checkpoint.
        let fresh = Regressor {
            table: SparseEmbeddingConfig::new(N, D).init::<B>(device),
            head: LinearConfig::new(D, 1).init(device),
        };
        let (train, valid) = loaders();
        let optim: SparseAdamOptimizer<Regressor<B>, B> = SparseAdamConfig::new().init();
        let resumed = SupervisedTraining::new(dir.path(), train, valid)
            .num_epochs(EPOCHS)
            .checkpoint(EPOCHS - 1)
            .with_file_checkpointer(recorder)
            .with_checkpointing_strategy(KeepLastNCheckpoints::new(EPOCHS))
            .renderer(CliMetricsRenderer::new())
            .with_application_logger(None)
            .launch(Learner::new(fresh, optim, LR))
            .model;

        let expected = plain_loop::<B>(device, 1).valid();
        assert_params_bits_eq(
            &param_values(&resumed),
            &param_values(&expected),
            "resumed vs uninterrupted",
        );
    }
    on_test_backend!(case);
}
