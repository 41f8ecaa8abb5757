//! The WordNet example on Burn 0.22: short runs on subgraphs of the shipped graph, on the
//! backend `BURN_SPARSE_ADAM_BACKEND` selects (flex by default). The Burn-free pipeline is
//! tested in `wordnet-app`; these check what this line adds: the loss, the steps, the
//! records, and the whole command on top.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};
use burn_sparse_adam::SparseAdamConfig;
use burn_sparse_adam_examples_022::model::{
    DenseSkipGram, ModelShape, SkipGramModel, SparseSkipGram, skip_gram_loss,
};
use burn_sparse_adam_examples_022::train::{RECORD_EXTENSION, Training};
use burn_sparse_adam_examples_022::{Burn022, CHECKPOINT_FORMAT, adam};
use burn_sparse_adam_tests::{TestBackend, device};
use wordnet_app::app::{CHART_FILE, RunSummary, run};
use wordnet_app::checkpoint::{self, GraphSize, META_FILE};
use wordnet_app::cli::{Command, Options, parse_args};
use wordnet_app::graph::{self, default_data_path};
use wordnet_app::progress::ProgressMode;
use wordnet_app::skipgram::{SkipGramConfig, reference_loss};
use wordnet_app::train::{Silent, TrainConfig, TrainData, Trainer};
use wordnet_app::{Error, Line};
use wordnet_graph::NounGraph;

/// The shipped graph, loaded once per test binary.
fn wordnet() -> &'static NounGraph {
    static GRAPH: OnceLock<NounGraph> = OnceLock::new();
    GRAPH.get_or_init(|| graph::load(&default_data_path()).expect("the shipped graph loads"))
}

/// The first `nodes` nodes of the subtree of `mammal`.
fn mammals(nodes: usize) -> NounGraph {
    graph::subgraph(wordnet(), "mammal", nodes).expect("mammal is a noun")
}

/// A small configuration: short walks, narrow vectors, small batches.
fn small_config(batch_size: usize) -> TrainConfig {
    TrainConfig {
        dim: 16,
        skip_gram: SkipGramConfig {
            walk_length: 10,
            window: 5,
            negatives: 5,
        },
        batch_size,
        eval_pairs: 500,
        ..TrainConfig::default()
    }
}

/// A fresh, empty directory under the system's temporary directory.
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "burn-sparse-adam-examples-022-{}-{}-{name}",
        std::process::id(),
        TestBackend::selected().name()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn values(tensor: Tensor<2>) -> Vec<f32> {
    tensor
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap()
}

/// Both tables of a model, as host values.
fn tables(model: &SparseSkipGram) -> (Vec<f32>, Vec<f32>) {
    (
        values(model.input.weight.val()),
        values(model.context.weight.val()),
    )
}

fn dense_tables(model: &DenseSkipGram) -> (Vec<f32>, Vec<f32>) {
    (
        values(model.input.weight.val()),
        values(model.context.weight.val()),
    )
}

/// The tensor loss is the shared host reference, on random rows.
#[test]
fn loss_matches_the_reference() {
    let device = device();
    let config = SkipGramConfig {
        walk_length: 6,
        window: 3,
        negatives: 2,
    };
    let (walks, d) = (3, 4);
    let mut rng = wordnet_app::rng::Rng::new(5);
    let mut draw =
        |rows: usize| -> Vec<f32> { (0..walks * rows * d).map(|_| rng.normal() as f32).collect() };
    let (centre, context, negative) = (
        draw(config.centres()),
        draw(config.walk_length),
        draw(config.centres() * config.negatives),
    );
    let tensor = |values: &[f32], rows: usize| {
        Tensor::<3>::from_data(TensorData::new(values.to_vec(), [walks, rows, d]), &device)
    };
    let loss: f64 = skip_gram_loss(
        tensor(&centre, config.centres()),
        tensor(&context, config.walk_length),
        tensor(&negative, config.centres() * config.negatives),
        &config,
    )
    .into_scalar::<f64>();
    let expected = reference_loss(&centre, &context, &negative, walks, d, &config);
    assert!((loss - expected).abs() < 1e-5, "{loss} vs {expected}");
}

/// A few hundred SparseAdam steps on 1,182 mammals: the loss falls and the direct AUC
/// clearly beats chance.
#[test]
fn short_run_learns() {
    let config = small_config(32);
    let data = TrainData::new(mammals(usize::MAX), &config);
    let steps = config.steps_per_epoch(data.graph.num_nodes());
    let mut training = Training::<SparseSkipGram>::new(
        config,
        data.graph.num_nodes(),
        SparseAdamConfig::new().init(),
        &device(),
    );
    let (initial, _) = training.evaluate_initial(&data);
    let epochs = 300usize.div_ceil(steps);
    for _ in 0..epochs {
        training.run_epoch(&data, epochs, &mut Silent);
    }
    let history = training.history();
    let (first, last) = (&history.epochs[0], history.epochs.last().unwrap());
    eprintln!(
        "{} steps: loss {:.4} -> {:.4}, direct AUC {initial:.3} -> {:.3}, grandparent AUC {:.3}",
        steps * epochs,
        first.loss,
        last.loss,
        last.direct_auc,
        last.grandparent_auc
    );
    assert!(steps * epochs >= 300);
    assert!(
        last.loss < first.loss - 0.1,
        "the loss did not fall: {history:?}"
    );
    let curve = &history.loss_curve;
    assert!(curve.last().unwrap().1 < curve[0].1 - 0.1);
    assert!(
        (0.4..0.6).contains(&initial),
        "initial direct AUC {initial}"
    );
    assert!(last.direct_auc > 0.85, "direct AUC {}", last.direct_auc);
    assert!(
        last.grandparent_auc > 0.6,
        "grandparent AUC {}",
        last.grandparent_auc
    );
}

/// Trains `epochs` epochs, saving and restoring from a burnpack checkpoint after each
/// epoch in `split` (an empty `split`: uninterrupted).
fn train_with_restarts<M: SkipGramModel>(
    data: &TrainData,
    config: &TrainConfig,
    epochs: usize,
    split: &[usize],
    fresh_optim: impl Fn() -> burn::optim::ModuleOptimizer,
    dir: &Path,
) -> Training<M> {
    let size = GraphSize {
        nodes: data.graph.num_nodes(),
        edges: data.graph.num_edges(),
    };
    let device = device();
    let mut training = Training::<M>::new(config.clone(), size.nodes, fresh_optim(), &device);
    training.evaluate_initial(data);
    while training.epochs_done() < epochs {
        training.run_epoch(data, epochs, &mut Silent);
        if split.contains(&training.epochs_done()) {
            checkpoint::save(dir, &training, CHECKPOINT_FORMAT, "test", "test", size).unwrap();
            drop(training);
            let meta = checkpoint::load_meta(dir, CHECKPOINT_FORMAT).unwrap();
            training = Training::restore(dir, &meta, fresh_optim(), &device).unwrap();
        }
    }
    training
}

/// A run checkpointed and resumed after epochs 1 and 2 ends bit for bit where the
/// uninterrupted run does: tables, optimizer moments (they shape epochs 2 and 3), losses
/// and AUCs. For SparseAdam, and for Burn's Adam on stock tables.
#[test]
fn resume_equals_uninterrupted_run() {
    let config = TrainConfig {
        dim: 8,
        ..small_config(64)
    };
    let data = TrainData::new(mammals(300), &config);
    let dir = temp_dir("resume");

    let sparse = || SparseAdamConfig::new().init();
    let straight = train_with_restarts::<SparseSkipGram>(&data, &config, 3, &[], sparse, &dir);
    let resumed = train_with_restarts::<SparseSkipGram>(&data, &config, 3, &[1, 2], sparse, &dir);
    assert_eq!(tables(straight.model()), tables(resumed.model()));
    assert_eq!(straight.history().epochs.len(), 3);
    let strip = |t: &dyn Trainer| t.history().without_timings();
    assert_eq!(strip(&straight), strip(&resumed));

    let straight = train_with_restarts::<DenseSkipGram>(&data, &config, 2, &[], adam, &dir);
    let resumed = train_with_restarts::<DenseSkipGram>(&data, &config, 2, &[1], adam, &dir);
    assert_eq!(
        dense_tables(straight.model()),
        dense_tables(resumed.model())
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The same seed gives the same numbers; another seed others.
#[test]
fn same_seed_same_numbers() {
    let run = |seed: u64| {
        let config = TrainConfig {
            seed,
            ..small_config(64)
        };
        let data = TrainData::new(mammals(300), &config);
        let mut training =
            Training::<SparseSkipGram>::new(config, 300, SparseAdamConfig::new().init(), &device());
        training.run_epoch(&data, 1, &mut Silent);
        let loss = training.history().epochs[0].loss;
        (loss, tables(training.model()))
    };
    let (loss, tables) = run(3);
    let (again_loss, again_tables) = run(3);
    assert_eq!(loss.to_bits(), again_loss.to_bits());
    assert!(
        tables == again_tables,
        "the same seed gave different tables"
    );
    let (other_loss, other_tables) = run(4);
    assert_ne!(loss, other_loss);
    assert!(tables != other_tables);
}

/// Initial vectors come from the seed, not from Burn's global RNG: both models start from
/// the same numbers, on any backend.
#[test]
fn initial_vectors_depend_only_on_the_seed() {
    let shape = ModelShape {
        nodes: 50,
        dim: 4,
        init_std: 0.1,
    };
    let sparse = SparseSkipGram::init(shape, 9, &device());
    let dense = DenseSkipGram::init(shape, 9, &device());
    let cpu = SparseSkipGram::init(shape, 9, &Device::flex().autodiff());
    assert_eq!(tables(&sparse), dense_tables(&dense));
    assert_eq!(tables(&sparse), tables(&cpu));
    let (input, context) = tables(&sparse);
    assert!(context.iter().all(|&v| v == 0.0));
    let std = (input.iter().map(|v| v * v).sum::<f32>() / input.len() as f32).sqrt();
    assert!((0.07..0.13).contains(&std), "{std}");
}

/// Both models have the same record layout (a `weight` per table), so a model checkpoint
/// of one loads into the other.
#[test]
fn model_records_load_into_either_model() {
    let dir = temp_dir("records");
    let device = device();
    let shape = ModelShape {
        nodes: 30,
        dim: 4,
        init_std: 0.1,
    };
    let sparse = SparseSkipGram::init(shape, 1, &device);
    let file = dir.join("sparse").with_extension(RECORD_EXTENSION);
    sparse.clone().save_file(&file).unwrap();
    let dense = DenseSkipGram::init(shape, 2, &device).load_file(&file);
    assert_eq!(tables(&sparse), dense_tables(&dense));
    let _ = std::fs::remove_dir_all(&dir);
}

fn options<S: AsRef<str>>(args: &[S]) -> Options<Burn022> {
    match parse_args::<Burn022, _>(args.iter().map(|s| s.as_ref().to_string())).unwrap() {
        Command::Run(mut options) => {
            options.progress = Some(ProgressMode::Hidden);
            *options
        }
        Command::Help => panic!("help"),
    }
}

fn run_cli<S: AsRef<str>>(args: &[S]) -> Result<(RunSummary, String), Error> {
    let mut out = Vec::new();
    let summary = run(&options(args), &mut out)?;
    Ok((summary, String::from_utf8(out).unwrap()))
}

/// The whole command on a subgraph: report, final line, chart, burnpack checkpoint;
/// `--resume` ends where the uninterrupted run does, and a damaged record is named.
#[test]
fn command_runs_and_resumes() {
    let backend = TestBackend::selected().name();
    let dir = temp_dir("cli");
    let straight_dir = dir.join("straight").to_str().unwrap().to_string();
    let resumed_dir = dir.join("resumed").to_str().unwrap().to_string();
    let (straight_dir, resumed_dir) = (straight_dir.as_str(), resumed_dir.as_str());
    let common = [
        "--backend",
        backend,
        "--subgraph",
        "mammal:400",
        "--dim",
        "8",
        "--walk-length",
        "8",
        "--batch-size",
        "64",
        "--eval-pairs",
        "300",
        "--neighbours",
        "dog,car",
    ];
    let with = |extra: &[&str]| -> Vec<String> {
        common.iter().chain(extra).map(|s| s.to_string()).collect()
    };

    let (summary, report) = run_cli(&with(&["--epochs", "3", "--out", straight_dir])).unwrap();
    let last = report.lines().last().unwrap();
    assert_eq!(last, summary.final_line());
    assert!(last.starts_with("final: epochs=3 direct_auc=0."), "{last}");
    assert!(report.contains("graph: 400 nodes"), "{report}");
    assert!(
        report.contains(&format!("; backend: {backend}")),
        "{report}"
    );
    assert!(report.contains("epoch 3/3: loss "), "{report}");
    assert!(report.contains("  dog: "), "{report}");
    assert!(
        report.contains("  car: not a noun of this graph"),
        "{report}"
    );
    let png = std::fs::read(Path::new(straight_dir).join(CHART_FILE)).unwrap();
    assert!(png.starts_with(b"\x89PNG"));
    assert!(Path::new(straight_dir).join(META_FILE).is_file());
    // One checkpoint: the previous epochs' record files are gone.
    let records = std::fs::read_dir(straight_dir)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension() == Some(RECORD_EXTENSION.as_ref()))
        .count();
    assert_eq!(records, 2);

    let (first, _) = run_cli(&with(&["--epochs", "1", "--out", resumed_dir])).unwrap();
    assert_eq!(first.epochs, 1);
    let (resumed, report) =
        run_cli(&with(&["--epochs", "3", "--out", resumed_dir, "--resume"])).unwrap();
    assert!(report.contains("resumed after epoch 1"), "{report}");
    assert!(!report.contains("epoch 1/3"), "{report}");
    assert_eq!(
        (resumed.direct_auc, resumed.grandparent_auc),
        (summary.direct_auc, summary.grandparent_auc)
    );
    assert_eq!(resumed.epochs, 3);

    // A checkpoint of the 0.1 line (format 1, BinFileRecorder records) is refused by number.
    let meta_path = Path::new(resumed_dir).join(META_FILE);
    let json = std::fs::read_to_string(&meta_path).unwrap();
    let meta = checkpoint::load_meta(Path::new(resumed_dir), Burn022::CHECKPOINT_FORMAT).unwrap();
    std::fs::write(
        &meta_path,
        json.replace(&format!("\"format\": {CHECKPOINT_FORMAT}"), "\"format\": 1"),
    )
    .unwrap();
    let err = run_cli(&with(&["--out", resumed_dir, "--resume"]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("format 1 is not the supported format 2"),
        "{err}"
    );
    std::fs::write(&meta_path, json).unwrap();

    // A truncated optimizer file: the error names that file and the way out.
    let optim_file = Path::new(resumed_dir)
        .join(&meta.optimizer_file)
        .with_extension(RECORD_EXTENSION);
    let bytes = std::fs::read(&optim_file).unwrap();
    std::fs::write(&optim_file, &bytes[..bytes.len() / 2]).unwrap();
    let err = run_cli(&with(&["--out", resumed_dir, "--resume"]))
        .unwrap_err()
        .to_string();
    let named = format!(
        "the optimizer record {} is damaged or incomplete",
        optim_file.display()
    );
    assert!(err.contains(&named), "{err}");
    assert!(err.contains("cannot be resumed"), "{err}");
    std::fs::remove_file(&optim_file).unwrap();
    let err = run_cli(&with(&["--out", resumed_dir, "--resume"]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("is missing"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--optimizer sparse-adam-bf16`: SparseAdam with bf16 moments trains the example, and a
/// checkpoint resumes with its moments still bf16 (the optimizer record keeps the type), to
/// the uninterrupted run's numbers.
#[test]
fn bf16_moments_train_and_resume() {
    let backend = TestBackend::selected().name();
    let dir = temp_dir("bf16");
    let straight = dir.join("straight").to_str().unwrap().to_string();
    let resumed = dir.join("resumed").to_str().unwrap().to_string();
    let common = [
        "--backend",
        backend,
        "--optimizer",
        "sparse-adam-bf16",
        "--subgraph",
        "mammal:300",
        "--dim",
        "8",
        "--walk-length",
        "8",
        "--batch-size",
        "64",
        "--eval-pairs",
        "200",
        "--neighbours",
        "dog",
    ];
    let with = |extra: &[&str]| -> Vec<String> {
        common.iter().chain(extra).map(|s| s.to_string()).collect()
    };
    let (summary, report) = run_cli(&with(&["--epochs", "2", "--out", &straight])).unwrap();
    assert!(report.contains("moments stored in bf16"), "{report}");
    assert!(
        summary.final_line().starts_with("final: epochs=2"),
        "{report}"
    );
    run_cli(&with(&["--epochs", "1", "--out", &resumed])).unwrap();
    let (again, report) =
        run_cli(&with(&["--epochs", "2", "--out", &resumed, "--resume"])).unwrap();
    assert!(report.contains("resumed after epoch 1"), "{report}");
    assert_eq!(
        (again.epochs, again.direct_auc, again.grandparent_auc),
        (2, summary.direct_auc, summary.grandparent_auc)
    );
}
