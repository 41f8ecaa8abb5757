//! The whole run behind the CLI: load the graph, start or resume a run on the chosen
//! backend and optimizer, train and evaluate epoch by epoch with checkpoints and a chart,
//! print the nearest neighbours of a few words and the final machine-readable line.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use wordnet_graph::NounGraph;

use crate::checkpoint::{self, CheckpointMeta, GraphSize};
use crate::cli::{parse_args, usage, BackendName, Command, OptimizerName, Options};
use crate::error::Error;
use crate::graph;
use crate::line::Line;
use crate::plot::plot_history;
use crate::progress::{Progress, ProgressMode};
use crate::train::{TrainConfig, TrainData, Trainer};

/// The chart's file name in the output directory.
pub const CHART_FILE: &str = "curves.png";

/// What a run ends with.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RunSummary {
    /// Epochs trained, resumed ones included.
    pub epochs: usize,
    /// The last epoch's direct AUC.
    pub direct_auc: f64,
    /// The last epoch's grandparent AUC.
    pub grandparent_auc: f64,
    /// Mean training seconds per epoch of the epochs this run trained (a resumed run's
    /// earlier epochs may come from another backend); of all epochs when it trained none.
    pub secs_per_epoch: f64,
}

impl RunSummary {
    /// `final: epochs=E direct_auc=X grandparent_auc=Y secs_per_epoch=S`.
    pub fn final_line(&self) -> String {
        format!(
            "final: epochs={} direct_auc={:.4} grandparent_auc={:.4} secs_per_epoch={:.1}",
            self.epochs, self.direct_auc, self.grandparent_auc, self.secs_per_epoch
        )
    }
}

/// Everything decided before the backend is: the run's settings and where they came from.
struct Plan<'a, L> {
    options: &'a Options<L>,
    graph: NounGraph,
    config: TrainConfig,
    backend: BackendName<L>,
    optimizer: OptimizerName,
    resume: Option<CheckpointMeta>,
}

/// The `main` of line `L`'s example: parses the arguments, runs, and exits with status 2
/// on a usage error (with the hint to `--help`), 1 on any other error.
pub fn main<L: Line>() -> ExitCode {
    let options = match parse_args::<L, _>(std::env::args().skip(1)) {
        Ok(Command::Help) => {
            println!("{}", usage::<L>());
            return ExitCode::SUCCESS;
        }
        Ok(Command::Run(options)) => options,
        Err(err) => {
            eprintln!("error: {err}\n(see --help)");
            return ExitCode::from(2);
        }
    };
    match run(&options, &mut std::io::stdout()) {
        Ok(_) => ExitCode::SUCCESS,
        Err(err @ Error::Usage(_)) => {
            eprintln!("error: {err}\n(see --help)");
            ExitCode::from(2)
        }
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Runs what `options` ask for on line `L`, writing the report to `out`.
///
/// # Errors
///
/// A malformed data file, a checkpoint that is missing or does not fit the options, a
/// file that cannot be written.
pub fn run<L: Line>(options: &Options<L>, out: &mut dyn Write) -> Result<RunSummary, Error> {
    let plan = plan(options)?;
    let graph_size = GraphSize {
        nodes: plan.graph.num_nodes(),
        edges: plan.graph.num_edges(),
    };
    if let Some(meta) = &plan.resume {
        if meta.graph != graph_size {
            return Err(Error::Checkpoint {
                dir: options.out.clone(),
                reason: format!(
                    "it was trained on a graph of {} nodes and {} edges, this one has {} and {} (same --data and --subgraph?)",
                    meta.graph.nodes, meta.graph.edges, graph_size.nodes, graph_size.edges
                ),
            });
        }
    }
    run_planned(plan, out)
}

fn plan<L: Line>(options: &Options<L>) -> Result<Plan<'_, L>, Error> {
    let graph = graph::load(&options.data)?;
    let graph = match &options.subgraph {
        Some((root, cap)) => graph::subgraph(&graph, root, *cap)
            .ok_or_else(|| Error::Usage(format!("--subgraph: no noun is labelled {root:?}")))?,
        None => graph,
    };
    let Some(meta) = options
        .resume
        .then(|| checkpoint::load_meta(&options.out, L::CHECKPOINT_FORMAT))
        .transpose()?
    else {
        return Ok(Plan {
            options,
            graph,
            config: options.overrides.apply(TrainConfig::default()),
            backend: options.backend.unwrap_or(BackendName::CPU),
            optimizer: options.optimizer.unwrap_or(OptimizerName::SparseAdam),
            resume: None,
        });
    };
    let mismatch = |reason: String| Error::Checkpoint {
        dir: options.out.clone(),
        reason,
    };
    let saved_backend: BackendName<L> = meta.backend.parse().map_err(mismatch)?;
    let backend = match (options.resume_backend, options.backend) {
        (Some(backend), _) => backend,
        (None, Some(backend)) if backend != saved_backend => {
            return Err(mismatch(format!(
            "it was trained on {}; continue it on {} with --resume-backend {} (the numbers then \
                 differ slightly from an uninterrupted run)",
            saved_backend.name(),
            backend.name(),
            backend.name()
        )))
        }
        (None, _) => saved_backend,
    };
    let saved_optimizer: OptimizerName = meta.optimizer.parse().map_err(mismatch)?;
    if let Some(optimizer) = options.optimizer.filter(|&o| o != saved_optimizer) {
        return Err(mismatch(format!(
            "it was trained with {}, not --optimizer {}",
            saved_optimizer.name(),
            optimizer.name()
        )));
    }
    let conflicts = options.overrides.conflicts(&meta.config);
    if !conflicts.is_empty() {
        return Err(mismatch(format!(
            "a resumed run keeps the checkpoint's settings: {}",
            conflicts.join(", ")
        )));
    }
    Ok(Plan {
        options,
        graph,
        config: meta.config.clone(),
        backend,
        optimizer: saved_optimizer,
        resume: Some(meta),
    })
}

fn optimizer_description(optimizer: OptimizerName) -> &'static str {
    match optimizer {
        OptimizerName::SparseAdam => "SparseAdam on two SparseEmbedding tables (row gradients)",
        OptimizerName::SparseAdamBf16 => {
            "SparseAdam, moments stored in bf16, on two SparseEmbedding tables (row gradients)"
        }
        OptimizerName::SparseAdamF16 => {
            "SparseAdam, moments stored in f16, on two SparseEmbedding tables (row gradients)"
        }
        OptimizerName::Adam => {
            "Burn's Adam (epsilon 1e-8) on two stock Embedding tables (dense gradients)"
        }
    }
}

fn run_planned<L: Line>(plan: Plan<'_, L>, out: &mut dyn Write) -> Result<RunSummary, Error> {
    let options = plan.options;
    let config = plan.config;
    let graph_size = GraphSize {
        nodes: plan.graph.num_nodes(),
        edges: plan.graph.num_edges(),
    };
    let data = TrainData::new(plan.graph, &config);
    let sg = &config.skip_gram;
    writeln!(
        out,
        "graph: {} nodes, {} edges{} (undirected for the walks)",
        graph_size.nodes,
        graph_size.edges,
        match &options.subgraph {
            Some((root, _)) => format!(", the subtree of {root:?}"),
            None => String::new(),
        }
    )?;
    writeln!(
        out,
        "evaluation: {} direct and {} grandparent pairs, each against as many random pairs",
        data.eval_pairs.direct.len(),
        data.eval_pairs.grandparent.len()
    )?;
    writeln!(
        out,
        "DeepWalk: dim {}, walks of {} nodes, {} per node per epoch, window {}, {} negatives, \
         batches of {} walks ({} steps per epoch), lr {}, seed {}",
        config.dim,
        sg.walk_length,
        config.walks_per_node,
        sg.window,
        sg.negatives,
        config.batch_size,
        config.steps_per_epoch(graph_size.nodes),
        config.lr,
        config.seed
    )?;
    writeln!(
        out,
        "optimizer: {}; backend: {}",
        optimizer_description(plan.optimizer),
        plan.backend.name()
    )?;

    let resume = plan
        .resume
        .as_ref()
        .map(|meta| (options.out.as_path(), meta));
    let mut training = L::start(
        plan.backend,
        plan.optimizer,
        &config,
        graph_size.nodes,
        resume,
    )?;
    match &plan.resume {
        Some(meta) => writeln!(
            out,
            "resumed after epoch {} from {} (saved on {})",
            meta.epochs_done(),
            shown(&options.out),
            meta.backend
        )?,
        None => {
            let (direct, grandparent) = training.evaluate_initial(&data);
            writeln!(
                out,
                "before training: direct AUC {direct:.4}, grandparent AUC {grandparent:.4}"
            )?;
        }
    }
    out.flush()?;

    let mode = options.progress.unwrap_or_else(ProgressMode::detect);
    let mut progress = Progress::new(mode);
    let chart = options.out.join(CHART_FILE);
    let title = format!(
        "DeepWalk on WordNet nouns · {} · {}",
        match plan.optimizer {
            OptimizerName::SparseAdam => "SparseAdam",
            OptimizerName::SparseAdamBf16 => "SparseAdam (bf16 moments)",
            OptimizerName::SparseAdamF16 => "SparseAdam (f16 moments)",
            OptimizerName::Adam => "Adam (dense)",
        },
        plan.backend.name()
    );
    if training.epochs_done() >= options.epochs {
        writeln!(
            out,
            "the checkpoint already has {} epochs: nothing to train (raise --epochs to continue)",
            training.epochs_done()
        )?;
    }
    let first_new_epoch = training.epochs_done() + 1;
    while training.epochs_done() < options.epochs {
        let record = training
            .run_epoch(&data, options.epochs, &mut progress)
            .clone();
        writeln!(
            out,
            "epoch {}/{}: loss {:.4}, {:.1} s ({:.1} steps/s), direct AUC {:.4}, grandparent AUC {:.4} (eval {:.2} s)",
            record.epoch,
            options.epochs,
            record.loss,
            record.train_secs,
            record.steps as f64 / record.train_secs,
            record.direct_auc,
            record.grandparent_auc,
            record.eval_secs
        )?;
        checkpoint::save(
            &options.out,
            training.as_ref(),
            L::CHECKPOINT_FORMAT,
            plan.backend.name(),
            plan.optimizer.name(),
            graph_size,
        )?;
        plot_history(training.history(), &title, &chart, (1200, 480))?;
        out.flush()?;
    }
    writeln!(
        out,
        "checkpoint: {} (model and optimizer records); chart: {}",
        shown(&options.out.join(checkpoint::META_FILE)),
        shown(&chart)
    )?;

    write_neighbours(out, training.as_ref(), &data.graph, &options.neighbours)?;

    let history = training.history();
    let last = history.epochs.last().expect("a run has at least one epoch");
    // The speed of this invocation: a resumed run may have trained its earlier epochs on
    // another backend or machine. With nothing left to train, the history's.
    let trained_now = &history.epochs[(first_new_epoch - 1).min(history.epochs.len())..];
    let secs_per_epoch = if trained_now.is_empty() {
        history.secs_per_epoch()
    } else {
        trained_now.iter().map(|e| e.train_secs).sum::<f64>() / trained_now.len() as f64
    };
    let summary = RunSummary {
        epochs: last.epoch,
        direct_auc: last.direct_auc,
        grandparent_auc: last.grandparent_auc,
        secs_per_epoch,
    };
    writeln!(out, "{}", summary.final_line())?;
    out.flush()?;
    Ok(summary)
}

/// `path` relative to the current directory when it lies below it.
fn shown(path: &Path) -> String {
    let relative = std::env::current_dir()
        .ok()
        .and_then(|cwd| path.strip_prefix(cwd).ok().map(Path::to_path_buf));
    relative
        .unwrap_or_else(|| path.to_path_buf())
        .display()
        .to_string()
}

fn write_neighbours(
    out: &mut dyn Write,
    training: &dyn Trainer,
    graph: &NounGraph,
    words: &[String],
) -> Result<(), Error> {
    if words.is_empty() {
        return Ok(());
    }
    writeln!(
        out,
        "nearest neighbours (cosine similarity of input vectors):"
    )?;
    for word in words {
        match graph.index_of(word) {
            None => writeln!(out, "  {word}: not a noun of this graph")?,
            Some(node) => {
                let neighbours: Vec<String> = training
                    .nearest_neighbours(node, 6)
                    .into_iter()
                    .map(|(n, s)| format!("{} {s:.2}", graph.labels()[n as usize]))
                    .collect();
                writeln!(out, "  {word}: {}", neighbours.join(", "))?;
            }
        }
    }
    Ok(())
}
