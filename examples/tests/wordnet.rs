//! The DeepWalk example's pipeline on subgraphs of the shipped WordNet graph, on the
//! backend `BURN_SPARSE_ADAM_BACKEND` selects (`ndarray`, the default, or `wgpu`).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use burn::module::AutodiffModule;
use burn::optim::{AdamConfig, Optimizer};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Tensor;
use burn_sparse_adam::on_test_backend;
use burn_sparse_adam::testing::{NdArrayAutodiff, TestBackend};
use burn_sparse_adam::SparseAdamConfig;
use burn_sparse_adam_examples::app::{run, RunSummary, CHART_FILE};
use burn_sparse_adam_examples::checkpoint::{self, GraphSize, META_FILE};
use burn_sparse_adam_examples::cli::{parse_args, BackendName, Command, Options};
use burn_sparse_adam_examples::graph::{self, default_data_path};
use burn_sparse_adam_examples::model::{DenseSkipGram, SkipGramModel, SparseSkipGram};
use burn_sparse_adam_examples::progress::ProgressMode;
use burn_sparse_adam_examples::skipgram::SkipGramConfig;
use burn_sparse_adam_examples::train::{Silent, TrainConfig, TrainData, Trainer, Training};
use burn_sparse_adam_examples::Error;
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
        "burn-sparse-adam-examples-{}-{}-{name}",
        std::process::id(),
        TestBackend::selected().name()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn values<B: burn::tensor::backend::Backend>(tensor: Tensor<B, 2>) -> Vec<f32> {
    tensor.into_data().convert::<f32>().to_vec::<f32>().unwrap()
}

/// Both tables of a model, as host values.
fn tables<B: AutodiffBackend>(model: &SparseSkipGram<B>) -> (Vec<f32>, Vec<f32>) {
    let model = model.valid();
    (
        values(model.input.weight.val()),
        values(model.context.weight.val()),
    )
}

fn dense_tables<B: AutodiffBackend>(model: &DenseSkipGram<B>) -> (Vec<f32>, Vec<f32>) {
    let model = model.valid();
    (
        values(model.input.weight.val()),
        values(model.context.weight.val()),
    )
}

/// A few hundred SparseAdam steps on 1,182 mammals: the loss falls and the direct AUC
/// clearly beats chance.
#[test]
fn short_run_learns() {
    fn case<B: AutodiffBackend>(device: &B::Device) {
        let config = small_config(32);
        let data = TrainData::new(mammals(usize::MAX), &config);
        let steps = config.steps_per_epoch(data.graph.num_nodes());
        let mut training = Training::<B, SparseSkipGram<B>, _>::new(
            config,
            data.graph.num_nodes(),
            SparseAdamConfig::new().init(),
            device,
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
    on_test_backend!(case);
}

/// Trains `epochs` epochs, saving and restoring from a checkpoint after each epoch in
/// `split` (an empty `split`: uninterrupted).
fn train_with_restarts<B, M, O>(
    data: &TrainData,
    config: &TrainConfig,
    epochs: usize,
    split: &[usize],
    fresh_optim: impl Fn() -> O,
    dir: &Path,
    device: &B::Device,
) -> Training<B, M, O>
where
    B: AutodiffBackend,
    M: SkipGramModel<B>,
    O: Optimizer<M, B>,
{
    let size = GraphSize {
        nodes: data.graph.num_nodes(),
        edges: data.graph.num_edges(),
    };
    let mut training = Training::<B, M, O>::new(config.clone(), size.nodes, fresh_optim(), device);
    training.evaluate_initial(data);
    while training.epochs_done() < epochs {
        training.run_epoch(data, epochs, &mut Silent);
        if split.contains(&training.epochs_done()) {
            checkpoint::save(dir, &training, "test", "test", size).unwrap();
            drop(training);
            let meta = checkpoint::load_meta(dir).unwrap();
            training = checkpoint::restore(dir, &meta, fresh_optim(), device).unwrap();
        }
    }
    training
}

/// A run checkpointed and resumed after epochs 1 and 2 ends bit for bit where the
/// uninterrupted run does: tables, optimizer moments (they shape epochs 2 and 3), losses
/// and AUCs. For SparseAdam, and for Burn's Adam on stock tables.
#[test]
fn resume_equals_uninterrupted_run() {
    fn case<B: AutodiffBackend>(device: &B::Device) {
        let config = TrainConfig {
            dim: 8,
            batch_size: 64,
            ..small_config(64)
        };
        let data = TrainData::new(mammals(300), &config);
        let dir = temp_dir("resume");

        let sparse = || SparseAdamConfig::new().init();
        let straight = train_with_restarts::<B, SparseSkipGram<B>, _>(
            &data,
            &config,
            3,
            &[],
            sparse,
            &dir,
            device,
        );
        let resumed = train_with_restarts::<B, SparseSkipGram<B>, _>(
            &data,
            &config,
            3,
            &[1, 2],
            sparse,
            &dir,
            device,
        );
        assert_eq!(tables(straight.model()), tables(resumed.model()));
        assert_eq!(straight.history().epochs.len(), 3);
        let strip = |t: &Training<B, _, _>| t.history().without_timings();
        assert_eq!(strip(&straight), strip(&resumed));

        let adam = || AdamConfig::new().with_epsilon(1e-8).init();
        let straight = train_with_restarts::<B, DenseSkipGram<B>, _>(
            &data,
            &config,
            2,
            &[],
            adam,
            &dir,
            device,
        );
        let resumed = train_with_restarts::<B, DenseSkipGram<B>, _>(
            &data,
            &config,
            2,
            &[1],
            adam,
            &dir,
            device,
        );
        assert_eq!(
            dense_tables(straight.model()),
            dense_tables(resumed.model())
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
    on_test_backend!(case);
}

/// The same seed gives the same numbers; another seed others.
#[test]
fn same_seed_same_numbers() {
    fn case<B: AutodiffBackend>(device: &B::Device) {
        let run = |seed: u64| {
            let config = TrainConfig {
                seed,
                ..small_config(64)
            };
            let data = TrainData::new(mammals(300), &config);
            let mut training = Training::<B, SparseSkipGram<B>, _>::new(
                config,
                300,
                SparseAdamConfig::new().init(),
                device,
            );
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
    on_test_backend!(case);
}

/// A checkpoint saved on ndarray loads on the selected backend with the same values, and
/// training goes on there (`--resume-backend`); on ndarray itself it continues exactly.
#[test]
fn checkpoint_moves_between_backends() {
    fn case<B: AutodiffBackend>(device: &B::Device) {
        let config = small_config(64);
        let data = TrainData::new(mammals(300), &config);
        let size = GraphSize {
            nodes: 300,
            edges: data.graph.num_edges(),
        };
        let dir = temp_dir("cross");
        let cpu = Default::default();
        let mut saved = Training::<NdArrayAutodiff, SparseSkipGram<_>, _>::new(
            config.clone(),
            300,
            SparseAdamConfig::new().init(),
            &cpu,
        );
        saved.run_epoch(&data, 2, &mut Silent);
        checkpoint::save(&dir, &saved, "ndarray", "sparse-adam", size).unwrap();
        let meta = checkpoint::load_meta(&dir).unwrap();
        assert_eq!(meta.epochs_done(), 1);

        let mut moved: Training<B, SparseSkipGram<B>, _> =
            checkpoint::restore(&dir, &meta, SparseAdamConfig::new().init(), device).unwrap();
        assert_eq!(tables(saved.model()), tables(moved.model()));

        saved.run_epoch(&data, 2, &mut Silent);
        moved.run_epoch(&data, 2, &mut Silent);
        let (a, b) = (&saved.history().epochs[1], &moved.history().epochs[1]);
        if TestBackend::selected() == TestBackend::NdArray {
            assert_eq!(a.loss.to_bits(), b.loss.to_bits());
            assert_eq!(tables(saved.model()), tables(moved.model()));
        } else {
            assert!(
                (a.loss - b.loss).abs() < 1e-4 * a.loss,
                "{} vs {}",
                a.loss,
                b.loss
            );
            let (x, y) = (tables(saved.model()).0, tables(moved.model()).0);
            let worst = x
                .iter()
                .zip(&y)
                .map(|(p, q)| (p - q).abs())
                .fold(0.0f32, f32::max);
            assert!(worst < 1e-3, "tables differ by {worst}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
    on_test_backend!(case);
}

fn options<S: AsRef<str>>(args: &[S]) -> Options {
    match parse_args(args.iter().map(|s| s.as_ref().to_string())).unwrap() {
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

/// The whole command on a subgraph: report, final line, chart, checkpoint; `--resume`
/// ends where the uninterrupted run does, and refuses settings that differ.
#[test]
fn command_runs_and_resumes() {
    let backend = TestBackend::selected().name();
    let dir = temp_dir("cli");
    let straight_dir = dir.join("straight").to_str().unwrap().to_string();
    let resumed_dir = dir.join("resumed").to_str().unwrap().to_string();
    let none_dir = dir.join("none").to_str().unwrap().to_string();
    let (straight_dir, resumed_dir, none_dir) = (
        straight_dir.as_str(),
        resumed_dir.as_str(),
        none_dir.as_str(),
    );
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
    assert!(
        last.contains(" grandparent_auc=0.") && last.contains(" secs_per_epoch="),
        "{last}"
    );
    assert!(report.contains("graph: 400 nodes"), "{report}");
    assert!(report.contains("epoch 3/3: loss "), "{report}");
    assert!(report.contains("  dog: "), "{report}");
    assert!(
        report.contains("  car: not a noun of this graph"),
        "{report}"
    );
    let png = std::fs::read(Path::new(straight_dir).join(CHART_FILE)).unwrap();
    assert!(png.starts_with(b"\x89PNG"));
    assert!(Path::new(straight_dir).join(META_FILE).is_file());

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

    let err = run_cli(&with(&["--out", resumed_dir, "--resume", "--lr", "0.5"])).unwrap_err();
    assert!(
        err.to_string()
            .contains("--lr 0.5 (the checkpoint's is 0.01)"),
        "{err}"
    );
    let other = if backend == "ndarray" {
        "wgpu"
    } else {
        "ndarray"
    };
    let mut args = with(&["--out", resumed_dir, "--resume"]);
    args[1] = other.to_string();
    let err = run_cli(&args).unwrap_err();
    assert!(
        err.to_string()
            .contains(&format!("--resume-backend {other}")),
        "{err}"
    );
    let err = run_cli(&with(&["--out", none_dir, "--resume"])).unwrap_err();
    assert!(err.to_string().contains("nothing to resume"), "{err}");

    // A truncated optimizer file: the error names that file and the way out, not Burn's
    // nested decoder message and its format-version guess.
    let meta = checkpoint::load_meta(Path::new(resumed_dir)).unwrap();
    let optim_file = Path::new(resumed_dir)
        .join(&meta.optimizer_file)
        .with_extension("bin");
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
    assert!(!err.contains("Metadata has a different"), "{err}");
    assert!(!err.contains("\\n"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A small edge list written inline loads, trains, and gives the same graph as the
/// gzip-compressed form; malformed and truncated files are errors naming the line.
#[test]
fn data_files_inline_and_malformed() {
    let dir = temp_dir("data");
    let text = "# wordnet-graph edge list, format 1\n\
                nodes 4\n00000001\tentity\n00000002\tanimal\n00000003\tdog\n00000004\tcat\n\
                edges 3\n1\t0\t@\n2\t1\t@\n3\t1\t@\n";
    let plain = dir.join("toy.tsv");
    std::fs::write(&plain, text).unwrap();
    let graph = graph::load(&plain).unwrap();
    assert_eq!(graph.labels(), ["entity", "animal", "dog", "cat"]);
    assert_eq!(graph::direct_pairs(&graph), [(1, 0), (2, 1), (3, 1)]);
    assert_eq!(graph::grandparent_pairs(&graph), [(2, 0), (3, 0)]);
    let gz = dir.join("toy.tsv.gz");
    graph.save(&gz).unwrap();
    assert_eq!(graph::load(&gz).unwrap(), graph);

    // It trains: 4 nodes, batches of 2 walks.
    let config = TrainConfig {
        dim: 4,
        batch_size: 2,
        skip_gram: SkipGramConfig {
            walk_length: 6,
            window: 3,
            negatives: 2,
        },
        ..TrainConfig::default()
    };
    let data = TrainData::new(graph, &config);
    let mut training = Training::<NdArrayAutodiff, SparseSkipGram<_>, _>::new(
        config,
        4,
        SparseAdamConfig::new().init(),
        &Default::default(),
    );
    let record = training.run_epoch(&data, 1, &mut Silent);
    assert_eq!(record.steps, 2);
    assert!(record.loss.is_finite());

    let bad = dir.join("bad.tsv");
    std::fs::write(&bad, text.replace("2\t1\t@", "2\tx\t@")).unwrap();
    let err = graph::load(&bad).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!(
            "cannot load the graph from `{}`: line 9: ",
            bad.display()
        )),
        "{err}"
    );

    let short = dir.join("short.tsv");
    std::fs::write(&short, &text[..text.len() - "3\t1\t@\n".len()]).unwrap();
    let err = graph::load(&short).unwrap_err().to_string();
    assert!(err.contains("line "), "{err}");
    assert!(err.contains("wrong number of edge"), "{err}");

    let bytes = std::fs::read(&gz).unwrap();
    let cut = dir.join("cut.tsv.gz");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let err = graph::load(&cut).unwrap_err().to_string();
    assert!(err.contains("truncated or corrupt gzip data"), "{err}");

    // Through the command: a clean error, no panic.
    let err = run_cli(&[
        "--data",
        bad.to_str().unwrap(),
        "--out",
        dir.join("out").to_str().unwrap(),
    ])
    .unwrap_err();
    assert!(matches!(err, Error::Data { .. }));
    assert!(err.to_string().contains("line 9"), "{err}");
    let err = run_cli(&["--data", dir.join("missing.gz").to_str().unwrap()]).unwrap_err();
    assert!(err.to_string().contains("No such file"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Initial vectors come from the seed, not from Burn's global RNG: both models and both
/// backends start from the same numbers.
#[test]
fn initial_vectors_depend_only_on_the_seed() {
    fn case<B: AutodiffBackend>(device: &B::Device) {
        use burn_sparse_adam_examples::model::ModelShape;
        let shape = ModelShape {
            nodes: 50,
            dim: 4,
            init_std: 0.1,
        };
        let sparse = SparseSkipGram::<B>::init(shape, 9, device);
        let dense = DenseSkipGram::<B>::init(shape, 9, device);
        let cpu = SparseSkipGram::<NdArrayAutodiff>::init(shape, 9, &Default::default());
        assert_eq!(tables(&sparse), dense_tables(&dense));
        assert_eq!(tables(&sparse), tables(&cpu));
        let (input, context) = tables(&sparse);
        assert!(context.iter().all(|&v| v == 0.0));
        let std = (input.iter().map(|v| v * v).sum::<f32>() / input.len() as f32).sqrt();
        assert!((0.07..0.13).contains(&std), "{std}");
    }
    on_test_backend!(case);
}

#[test]
fn backend_names_match_the_test_backends() {
    for backend in TestBackend::ALL {
        let parsed: BackendName = backend.name().parse().unwrap();
        assert_eq!(parsed.name(), backend.name());
    }
}

/// Both models have the same record layout (`EmbeddingRecord` per table), so a model
/// checkpoint of one loads into the other.
#[test]
fn model_records_load_into_either_model() {
    use burn::module::Module;
    use burn::record::Recorder;
    use burn_sparse_adam_examples::checkpoint::CheckpointRecorder;
    use burn_sparse_adam_examples::model::ModelShape;

    let dir = temp_dir("records");
    let device = Default::default();
    let shape = ModelShape {
        nodes: 30,
        dim: 4,
        init_std: 0.1,
    };
    let sparse = SparseSkipGram::<NdArrayAutodiff>::init(shape, 1, &device);
    let recorder = CheckpointRecorder::new();
    recorder
        .record(sparse.clone().into_record(), dir.join("sparse"))
        .unwrap();
    let record = recorder.load(dir.join("sparse"), &device).unwrap();
    let dense = DenseSkipGram::<NdArrayAutodiff>::init(shape, 2, &device).load_record(record);
    assert_eq!(tables(&sparse), dense_tables(&dense));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Compact moments are the 0.2 line's: this line's example refuses them with a usage error
/// that names the optimizer and the line, before training.
#[test]
fn compact_moments_are_refused_on_this_line() {
    let dir = temp_dir("compact");
    let out = dir.to_str().unwrap();
    for optimizer in ["sparse-adam-bf16", "sparse-adam-f16"] {
        let args = [
            "--subgraph",
            "mammal:50",
            "--optimizer",
            optimizer,
            "--out",
            out,
        ];
        match run_cli(&args) {
            Err(Error::Usage(message)) => {
                assert!(
                    message.contains(optimizer) && message.contains("0.2 line"),
                    "{message}"
                )
            }
            Err(other) => panic!("{optimizer}: {other}"),
            Ok(_) => panic!("{optimizer} trained on the 0.1 line"),
        }
    }
}
