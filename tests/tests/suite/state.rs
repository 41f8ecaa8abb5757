//! Saving and restoring the optimizer: a training interrupted by a save and a load (into a
//! fresh model and a fresh optimizer) continues exactly as if it had not been interrupted,
//! and a training moved from ndarray to the selected backend through its records continues
//! as it would have on ndarray. Both on the dense path (stock `Embedding` + `Linear`) and on
//! the row path (`SparseEmbedding` + `Linear`).

use burn::module::Module;
use burn::nn::{EmbeddingConfig, LinearConfig};
use burn::optim::Optimizer;
use burn::record::{BinBytesRecorder, BinFileRecorder, FullPrecisionSettings, Recorder};
use burn::tensor::backend::AutodiffBackend;
use burn_sparse_adam::{SparseAdamConfig, SparseAdamOptimizer, SparseEmbeddingConfig};
use burn_sparse_adam_tests::{
    assert_bits_eq, assert_params_bits_eq, assert_params_close, assert_states_bits_eq,
    assert_states_close, on_test_backend, param_values, state_values, Batch, DenseTower,
    NdArrayAutodiff, Rng, SparseTower, TempDir, Tower, TowerSpec,
};

/// Which table a tower has.
trait Kind {
    type Model<B: AutodiffBackend>: Tower<B>;
    const NAME: &'static str;
    /// The tower with the spec's values.
    fn build<B: AutodiffBackend>(spec: &TowerSpec, device: &B::Device) -> Self::Model<B>;
    /// A tower of the spec's sizes with other (random, lazily initialized) values and
    /// parameter ids: what a program that loads a checkpoint starts from.
    fn fresh<B: AutodiffBackend>(spec: &TowerSpec, device: &B::Device) -> Self::Model<B>;
}

struct Sparse;
struct Dense;

impl Kind for Sparse {
    type Model<B: AutodiffBackend> = SparseTower<B>;
    const NAME: &'static str = "sparse";
    fn build<B: AutodiffBackend>(spec: &TowerSpec, device: &B::Device) -> SparseTower<B> {
        spec.sparse(device)
    }
    fn fresh<B: AutodiffBackend>(spec: &TowerSpec, device: &B::Device) -> SparseTower<B> {
        SparseTower {
            head: LinearConfig::new(spec.d, spec.d_out).init(device),
            table: SparseEmbeddingConfig::new(spec.n, spec.d).init(device),
        }
    }
}

impl Kind for Dense {
    type Model<B: AutodiffBackend> = DenseTower<B>;
    const NAME: &'static str = "dense";
    fn build<B: AutodiffBackend>(spec: &TowerSpec, device: &B::Device) -> DenseTower<B> {
        spec.dense(device)
    }
    fn fresh<B: AutodiffBackend>(spec: &TowerSpec, device: &B::Device) -> DenseTower<B> {
        DenseTower {
            head: LinearConfig::new(spec.d, spec.d_out).init(device),
            table: EmbeddingConfig::new(spec.n, spec.d).init(device),
        }
    }
}

fn config() -> SparseAdamConfig {
    SparseAdamConfig::new().with_beta_2(0.99).with_epsilon(1e-6)
}

/// The spec, and per step a batch and a learning rate. The last two rows of the table are
/// never looked up.
fn scenario(seed: u64, steps: usize) -> (TowerSpec, Vec<(Batch, f64)>) {
    let spec = TowerSpec::random(7, 3, 2, seed);
    let mut rng = Rng::new(seed ^ 0x5eed);
    let batches = (0..steps)
        .map(|s| {
            (
                Batch::random(&mut rng, spec.n - 2, 2, 3, spec.d_out),
                0.05 / (1.0 + s as f64),
            )
        })
        .collect();
    (spec, batches)
}

fn train<B: AutodiffBackend, T: Tower<B>>(
    mut model: T,
    optim: &mut SparseAdamOptimizer<T, B>,
    batches: &[(Batch, f64)],
    device: &B::Device,
) -> T {
    for (batch, lr) in batches {
        let grads = batch.grads(&model, device);
        model = optim.step(*lr, model, grads);
    }
    model
}

// ---- (a) save, load into fresh objects, continue: bit-identical --------------------------

fn round_trip<B: AutodiffBackend, K: Kind>(device: &B::Device) {
    let (spec, batches) = scenario(11, 5);
    let (first, rest) = batches.split_at(3);

    let mut optim: SparseAdamOptimizer<K::Model<B>, B> = config().init();
    let model = train(K::build::<B>(&spec, device), &mut optim, first, device);

    let dir = TempDir::new(&format!("round-trip-{}", K::NAME));
    let recorder = BinFileRecorder::<FullPrecisionSettings>::new();
    recorder
        .record(model.clone().into_record(), dir.path().join("model"))
        .expect("save the model");
    recorder
        .record(optim.to_record(), dir.path().join("optim"))
        .expect("save the optimizer");

    let uninterrupted = train(model.clone(), &mut optim, rest, device);

    let loaded = K::fresh::<B>(&spec, device).load_record(
        recorder
            .load(dir.path().join("model"), device)
            .expect("load the model"),
    );
    let mut loaded_optim: SparseAdamOptimizer<K::Model<B>, B> =
        config().init::<B, K::Model<B>>().load_record(
            recorder
                .load(dir.path().join("optim"), device)
                .expect("load the optimizer"),
        );
    assert_params_bits_eq(
        &param_values(&loaded),
        &param_values(&model),
        "the loaded model",
    );
    let saved_states = state_values(&loaded_optim, &loaded);
    assert!(
        saved_states
            .iter()
            .all(|s| s.as_ref().map(|s| s.0) == Some(3)),
        "every parameter has a loaded state of 3 steps: {:?}",
        saved_states
            .iter()
            .map(|s| s.as_ref().map(|s| s.0))
            .collect::<Vec<_>>()
    );

    let resumed = train(loaded, &mut loaded_optim, rest, device);
    assert_params_bits_eq(
        &param_values(&resumed),
        &param_values(&uninterrupted),
        "the resumed model",
    );
    assert_states_bits_eq(
        &state_values(&loaded_optim, &resumed),
        &state_values(&optim, &uninterrupted),
        "the resumed optimizer",
    );
    // The rows never looked up are still the initial ones.
    let initial = &spec.table[(spec.n - 2) * spec.d..];
    let table = param_values(&resumed).pop().expect("the table comes last");
    assert_bits_eq(
        &table[(spec.n - 2) * spec.d..],
        initial,
        "rows never looked up",
    );
}

#[test]
fn round_trip_through_files_is_bit_identical_on_the_sparse_path() {
    fn case<B: AutodiffBackend>(device: &B::Device) {
        round_trip::<B, Sparse>(device);
    }
    on_test_backend!(case);
}

#[test]
fn round_trip_through_files_is_bit_identical_on_the_dense_path() {
    fn case<B: AutodiffBackend>(device: &B::Device) {
        round_trip::<B, Dense>(device);
    }
    on_test_backend!(case);
}

// ---- (b) ndarray → the selected backend ----------------------------------------------------

fn backend_swap<B: AutodiffBackend, K: Kind>(device: &B::Device) {
    let (spec, batches) = scenario(23, 5);
    let (first, rest) = batches.split_at(3);
    let cpu = Default::default();

    let mut optim_cpu: SparseAdamOptimizer<K::Model<NdArrayAutodiff>, NdArrayAutodiff> =
        config().init();
    let model_cpu = train(
        K::build::<NdArrayAutodiff>(&spec, &cpu),
        &mut optim_cpu,
        first,
        &cpu,
    );

    // The records, serialized (their items are backend-agnostic only once serialized: the
    // item types carry the backend as a type parameter).
    let recorder = BinBytesRecorder::<FullPrecisionSettings>::default();
    let model_bytes =
        Recorder::<NdArrayAutodiff>::record(&recorder, model_cpu.clone().into_record(), ())
            .expect("record the model");
    let optim_bytes = Recorder::<NdArrayAutodiff>::record(&recorder, optim_cpu.to_record(), ())
        .expect("record the optimizer");

    let stayed = train(model_cpu.clone(), &mut optim_cpu, rest, &cpu);

    let moved = K::fresh::<B>(&spec, device)
        .load_record(Recorder::<B>::load(&recorder, model_bytes, device).expect("load the model"));
    let mut optim_moved: SparseAdamOptimizer<K::Model<B>, B> =
        config().init::<B, K::Model<B>>().load_record(
            Recorder::<B>::load(&recorder, optim_bytes, device).expect("load the optimizer"),
        );
    // Moving is exact.
    assert_params_bits_eq(
        &param_values(&moved),
        &param_values(&model_cpu),
        "the moved model",
    );

    let moved = train(moved, &mut optim_moved, rest, device);
    assert_params_close(
        &param_values(&moved),
        &param_values(&stayed),
        "moved vs stayed on ndarray",
    );
    assert_states_close(
        &state_values(&optim_moved, &moved),
        &state_values(&optim_cpu, &stayed),
        "moved vs stayed on ndarray",
    );
    let steps: Vec<_> = state_values(&optim_moved, &moved)
        .iter()
        .map(|s| s.as_ref().map(|s| s.0))
        .collect();
    assert!(
        steps.iter().all(|&s| s == Some(5)),
        "the counts continued from 3: {steps:?}"
    );
}

#[test]
fn training_moves_from_ndarray_to_the_selected_backend_on_the_sparse_path() {
    fn case<B: AutodiffBackend>(device: &B::Device) {
        backend_swap::<B, Sparse>(device);
    }
    on_test_backend!(case);
}

#[test]
fn training_moves_from_ndarray_to_the_selected_backend_on_the_dense_path() {
    fn case<B: AutodiffBackend>(device: &B::Device) {
        backend_swap::<B, Dense>(device);
    }
    on_test_backend!(case);
}
