//! burn-train's `Learner` (which takes Burn's `ModuleOptimizer` and nothing else:
//! `Learner::new(model, optim: ModuleOptimizer, lr_scheduler)`) trains a `SparseEmbedding`
//! through its row gradients with `SparseAdamConfig::init()`, checkpoints, and resumes.

use std::path::Path;
use std::sync::Arc;

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataloader::{DataLoader, DataLoaderBuilder};
use burn::data::dataset::InMemDataset;
use burn::lr_scheduler::constant::ConstantLr;
use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::optim::ModuleOptimizer;
use burn::tensor::{Device, Int, Tensor, TensorData};
use burn::train::checkpoint::KeepLastNCheckpoints;
use burn::train::logger::InMemoryMetricLogger;
use burn::train::metric::LossMetric;
use burn::train::{
    InferenceStep, Learner, RegressionOutput, SupervisedTraining, TrainOutput, TrainStep,
};
use burn_sparse_adam::{SparseAdamConfig, SparseEmbedding, SparseEmbeddingConfig, collect_grads};
use burn_sparse_adam_tests::{device, module_optimizer_states, set_params, values};

const ROWS: usize = 200;
const DIM: usize = 8;
/// Only rows below this are ever looked up.
const USED: i64 = 40;

#[derive(Module, Debug)]
struct Model {
    table: SparseEmbedding,
    head: Linear,
}

impl Model {
    /// The same model every time: fixed weights, no randomness.
    fn new(device: &Device) -> Self {
        let table = SparseEmbeddingConfig::new(ROWS, DIM).init(device);
        let init: Vec<f32> = (0..ROWS * DIM)
            .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
            .collect();
        let table = set_params(table, vec![init]);
        let head_init: Vec<f32> = (0..DIM).map(|i| 0.1 * i as f32 - 0.3).collect();
        let head = Linear {
            weight: Param::from_tensor(
                Tensor::<2>::from_data(TensorData::new(head_init, [DIM, 1]), device).require_grad(),
            ),
            bias: None,
        };
        Self { table, head }
    }

    fn forward(&self, ids: Tensor<2, Int>) -> Tensor<2> {
        let pooled: Tensor<2> = self.table.forward(ids).mean_dim(1).squeeze_dim(1);
        self.head.forward(pooled)
    }
}

#[derive(Clone, Debug)]
struct Item {
    ids: [i64; 3],
    target: f32,
}

#[derive(Clone, Debug)]
struct Batch {
    ids: Tensor<2, Int>,
    targets: Tensor<2>,
}

struct ItemBatcher;

impl Batcher<Item, Batch> for ItemBatcher {
    fn batch(&self, items: Vec<Item>, device: &Device) -> Batch {
        let n = items.len();
        let ids: Vec<i64> = items.iter().flat_map(|i| i.ids).collect();
        let targets: Vec<f32> = items.iter().map(|i| i.target).collect();
        Batch {
            ids: Tensor::from_data(TensorData::new(ids, [n, 3]), device),
            targets: Tensor::from_data(TensorData::new(targets, [n, 1]), device),
        }
    }
}

impl TrainStep for Model {
    type Input = Batch;
    type Output = RegressionOutput;

    fn step(&self, batch: Batch) -> TrainOutput<RegressionOutput> {
        let output = self.forward(batch.ids);
        let loss = (output.clone() - batch.targets.clone())
            .powi_scalar(2)
            .mean();
        // Not `TrainOutput::new(self, grads, item)`, which calls `GradientsParams::from_grads`.
        TrainOutput {
            grads: collect_grads(loss.backward(), self),
            item: RegressionOutput::new(loss, output, batch.targets),
        }
    }
}

impl InferenceStep for Model {
    type Input = Batch;
    type Output = RegressionOutput;

    fn step(&self, batch: Batch) -> RegressionOutput {
        let output = self.forward(batch.ids);
        let loss = (output.clone() - batch.targets.clone())
            .powi_scalar(2)
            .mean();
        RegressionOutput::new(loss, output, batch.targets)
    }
}

fn items() -> Vec<Item> {
    (0..24)
        .map(|i: i64| Item {
            ids: [i % USED, (i * 7 + 3) % USED, (i * 13 + 5) % USED],
            target: ((i % 5) as f32 - 2.0) * 0.5,
        })
        .collect()
}

type Loader = Arc<dyn DataLoader<Batch>>;

fn loaders() -> (Loader, Loader) {
    let train = DataLoaderBuilder::new(ItemBatcher)
        .batch_size(4)
        .build(InMemDataset::new(items()));
    let valid = DataLoaderBuilder::new(ItemBatcher)
        .batch_size(4)
        .build(InMemDataset::new(items()));
    (train, valid)
}

fn learner(device: &Device) -> Learner<Model> {
    let optim: ModuleOptimizer = SparseAdamConfig::new().init();
    Learner::new(Model::new(device), optim, ConstantLr::new(1e-2))
}

fn train(dir: &Path, epochs: usize, resume: Option<usize>, device: &Device) -> Model {
    let (train, valid) = loaders();
    let mut training = SupervisedTraining::new(dir, train, valid)
        .num_epochs(epochs)
        .with_default_checkpointers()
        .with_checkpointing_strategy(KeepLastNCheckpoints::new(4))
        .with_metric_logger(InMemoryMetricLogger::new())
        .metric_train_numeric(LossMetric::new())
        .metric_valid_numeric(LossMetric::new())
        .with_application_logger(None);
    if let Some(epoch) = resume {
        training = training.checkpoint(epoch);
    }
    let result = training.launch(learner(device));
    assert!(
        result.error.is_none(),
        "training failed: {:?}",
        result.error
    );
    result.model
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("bsa022-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn the_learner_trains_a_sparse_embedding_through_its_row_gradients() {
    let device = device();
    let dir = temp_dir("learner-trains");
    let initial = values(Model::new(&device).table.weight.val());
    let model = train(&dir, 2, None, &device);
    let trained = values(model.table.weight.val());
    let used = USED as usize * DIM;
    assert_ne!(trained[..used], initial[..used], "looked-up rows moved");
    assert_eq!(
        trained[used..]
            .iter()
            .map(|v| v.to_bits())
            .collect::<Vec<_>>(),
        initial[used..]
            .iter()
            .map(|v| v.to_bits())
            .collect::<Vec<_>>(),
        "rows never looked up are bit-identical"
    );

    // The checkpointed optimizer state: one SparseAdam state per parameter, the table's
    // moments zero on the rows never looked up (they never saw a gradient), and a step per
    // batch (24 items / 4 per batch, 2 epochs).
    let record = burn::optim::OptimizerRecord::load(dir.join("checkpoint/optim-2.bpk")).unwrap();
    let optim = ModuleOptimizer::from(SparseAdamConfig::new().build()).load_record(record);
    let states = module_optimizer_states(&optim);
    assert_eq!(states.len(), 2, "the table and the head's weight");
    let table_state = &states[&model.table.weight.id.val()];
    assert_eq!(table_state.0, 12);
    assert!(table_state.1[used..].iter().all(|&m| m == 0.0));
    assert!(table_state.2[..used].iter().any(|&v| v > 0.0));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_learner_resumes_from_its_checkpoint_where_it_left_off() {
    let device = device();
    let straight_dir = temp_dir("learner-straight");
    let straight = train(&straight_dir, 4, None, &device);

    let resumed_dir = temp_dir("learner-resumed");
    let _ = train(&resumed_dir, 2, None, &device);
    let resumed = train(&resumed_dir, 4, Some(2), &device);

    let close = |a: Vec<f32>, b: Vec<f32>| {
        a.iter()
            .zip(&b)
            .all(|(x, y)| (x - y).abs() <= 1e-6 + 1e-5 * y.abs())
    };
    assert!(close(
        values(straight.table.weight.val()),
        values(resumed.table.weight.val())
    ));
    assert!(close(
        values(straight.head.weight.val()),
        values(resumed.head.weight.val())
    ));
    // The resumed run's optimizer continued the saved one: 4 epochs of 6 steps.
    let record =
        burn::optim::OptimizerRecord::load(resumed_dir.join("checkpoint/optim-4.bpk")).unwrap();
    let optim = ModuleOptimizer::from(SparseAdamConfig::new().build()).load_record(record);
    assert_eq!(
        module_optimizer_states(&optim)[&resumed.table.weight.id.val()].0,
        24
    );
    std::fs::remove_dir_all(&straight_dir).unwrap();
    std::fs::remove_dir_all(&resumed_dir).unwrap();
}
