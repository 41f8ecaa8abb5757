//! The command line of the WordNet example, `cargo run --release --example wordnet --
//! [OPTIONS]` on either Burn line, parsed by hand (the flags are few and all `--name value`, `--name=value` or a bare switch).

use std::path::PathBuf;
use std::str::FromStr;

use crate::error::Error;
use crate::graph::default_data_path;
use crate::line::Line;
// Defined beside `Line`, which they name; their 0.1 path stays here.
pub use crate::line::{BackendName, OptimizerName};
use crate::progress::ProgressMode;
use crate::train::TrainConfig;

/// The help text of `L`'s example.
pub fn usage<L: Line>() -> String {
    let cpu = L::CPU_BACKEND;
    let command = L::COMMAND;
    // Padded so that the descriptions line up whatever the CPU backend's name.
    let backends = format!("{cpu}|wgpu");
    format!(
        "\
Trains DeepWalk node embeddings (random walks + skip-gram with negative sampling) on the
WordNet 3.0 noun hierarchy with SparseAdam, and scores them by ROC AUC.

usage: {command} -- [OPTIONS]

run:
  --backend {backends:<20}backend of a new run (default: {cpu})
  --optimizer sparse-adam|adam  SparseAdam on SparseEmbedding tables (default), or
                                Burn's Adam on stock Embedding tables, for comparison;
                                sparse-adam-bf16|sparse-adam-f16: SparseAdam with its
                                moments stored in 16 bits (the 0.2 line only)
  --epochs N                    epochs to end at, counting resumed ones (default: 3)
  --seed N                      seed of every random choice (default: 0)
  --subgraph WORD[:N]           train on WORD's subtree only (its first N nodes)
  --data PATH                   the edge list (default: examples/data/wordnet-nouns.tsv.gz)
  --out DIR                     checkpoint and chart directory (default: target/wordnet)
  --resume                      continue the checkpoint in --out on its backend
  --resume-backend {backends:<13}continue the checkpoint in --out on this backend
  --neighbours W1,W2,...        words whose nearest neighbours are printed
                                (default: dog,car,music)
  --no-progress                 print a line per tenth of an epoch instead of a bar
  -h, --help                    this text

model and training (a resumed run keeps the checkpoint's values):
  --dim N                       vector width (default: 64)
  --walk-length N               nodes per walk (default: 20)
  --walks-per-node N            walks from each node per epoch (default: 1)
  --window N                    a centre and the next N-1 walk nodes (default: 5)
  --negatives N                 uniform negatives per centre (default: 5)
  --batch-size N                walks per optimizer step (default: 256)
  --lr X                        learning rate (default: 0.01)
  --init-std X                  std of the initial input vectors (default: 0.1)
  --eval-pairs N                pairs of each kind the AUCs score (default: 5000)

It prints the loss, time and AUCs of each epoch and the nearest neighbours of a few
words, writes DIR/curves.png and a checkpoint, and ends with one line
`final: epochs=E direct_auc=X grandparent_auc=Y secs_per_epoch=S`
(the AUCs after epoch E; S: mean training seconds of the epochs this invocation trained)."
    )
}

/// Training settings given on the command line; the rest come from the defaults or, when
/// resuming, from the checkpoint.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Overrides {
    /// `--dim`.
    pub dim: Option<usize>,
    /// `--walk-length`.
    pub walk_length: Option<usize>,
    /// `--walks-per-node`.
    pub walks_per_node: Option<usize>,
    /// `--window`.
    pub window: Option<usize>,
    /// `--negatives`.
    pub negatives: Option<usize>,
    /// `--batch-size`.
    pub batch_size: Option<usize>,
    /// `--lr`.
    pub lr: Option<f64>,
    /// `--init-std`.
    pub init_std: Option<f64>,
    /// `--seed`.
    pub seed: Option<u64>,
    /// `--eval-pairs`.
    pub eval_pairs: Option<usize>,
}

impl Overrides {
    /// `config` with the given settings applied.
    pub fn apply(&self, mut config: TrainConfig) -> TrainConfig {
        macro_rules! set {
            ($($field:ident).+ = $value:expr) => {
                if let Some(value) = $value {
                    config.$($field).+ = value;
                }
            };
        }
        set!(dim = self.dim);
        set!(skip_gram.walk_length = self.walk_length);
        set!(walks_per_node = self.walks_per_node);
        set!(skip_gram.window = self.window);
        set!(skip_gram.negatives = self.negatives);
        set!(batch_size = self.batch_size);
        set!(lr = self.lr);
        set!(init_std = self.init_std);
        set!(seed = self.seed);
        set!(eval_pairs = self.eval_pairs);
        config
    }

    /// The given settings that differ from `config`'s, as `--flag given (checkpoint: value)`.
    pub fn conflicts(&self, config: &TrainConfig) -> Vec<String> {
        let mut out = Vec::new();
        let mut check = |flag: &str, given: Option<String>, actual: String| {
            if let Some(given) = given.filter(|g| *g != actual) {
                out.push(format!("--{flag} {given} (the checkpoint's is {actual})"));
            }
        };
        let s = |v: Option<usize>| v.map(|v| v.to_string());
        check("dim", s(self.dim), config.dim.to_string());
        check(
            "walk-length",
            s(self.walk_length),
            config.skip_gram.walk_length.to_string(),
        );
        check(
            "walks-per-node",
            s(self.walks_per_node),
            config.walks_per_node.to_string(),
        );
        check(
            "window",
            s(self.window),
            config.skip_gram.window.to_string(),
        );
        check(
            "negatives",
            s(self.negatives),
            config.skip_gram.negatives.to_string(),
        );
        check(
            "batch-size",
            s(self.batch_size),
            config.batch_size.to_string(),
        );
        check("lr", self.lr.map(|v| v.to_string()), config.lr.to_string());
        check(
            "init-std",
            self.init_std.map(|v| v.to_string()),
            config.init_std.to_string(),
        );
        check(
            "seed",
            self.seed.map(|v| v.to_string()),
            config.seed.to_string(),
        );
        check(
            "eval-pairs",
            s(self.eval_pairs),
            config.eval_pairs.to_string(),
        );
        out
    }
}

/// A parsed command line of line `L`'s example.
#[derive(Clone, Debug, PartialEq)]
pub struct Options<L> {
    /// `--backend` (a new run's; `None`: the CPU backend, or the checkpoint's when resuming).
    pub backend: Option<BackendName<L>>,
    /// `--optimizer` (`None`: SparseAdam, or the checkpoint's when resuming).
    pub optimizer: Option<OptimizerName>,
    /// `--epochs`: the epoch to end at.
    pub epochs: usize,
    /// The training settings given.
    pub overrides: Overrides,
    /// `--resume` or `--resume-backend`.
    pub resume: bool,
    /// `--resume-backend`.
    pub resume_backend: Option<BackendName<L>>,
    /// `--neighbours`.
    pub neighbours: Vec<String>,
    /// `--subgraph WORD[:N]`: the root and the node cap.
    pub subgraph: Option<(String, usize)>,
    /// `--data`.
    pub data: PathBuf,
    /// `--out`.
    pub out: PathBuf,
    /// `--no-progress` gives `Some(Lines)`; `None`: detect.
    pub progress: Option<ProgressMode>,
}

impl<L: Line> Default for Options<L> {
    fn default() -> Self {
        Self {
            backend: None,
            optimizer: None,
            epochs: 3,
            overrides: Overrides::default(),
            resume: false,
            resume_backend: None,
            neighbours: ["dog", "car", "music"].map(String::from).to_vec(),
            subgraph: None,
            data: default_data_path(),
            out: default_out_dir::<L>(),
            progress: None,
        }
    }
}

/// `target/wordnet` in the line's workspace root, whatever the current directory.
pub fn default_out_dir<L: Line>() -> PathBuf {
    L::workspace_root().join("target").join("wordnet")
}

/// What the command line asks for.
#[derive(Clone, Debug, PartialEq)]
pub enum Command<L> {
    /// Print [`usage`].
    Help,
    /// Train.
    Run(Box<Options<L>>),
}

fn usage_error(message: impl Into<String>) -> Error {
    Error::Usage(message.into())
}

fn number<T: FromStr>(flag: &str, value: &str) -> Result<T, Error>
where
    T::Err: std::fmt::Display,
{
    value
        .parse()
        .map_err(|e| usage_error(format!("--{flag} {value:?}: {e}")))
}

fn positive(flag: &str, value: &str) -> Result<usize, Error> {
    match number::<usize>(flag, value)? {
        0 => Err(usage_error(format!("--{flag} must be at least 1"))),
        n => Ok(n),
    }
}

/// The options that take a value.
const VALUE_FLAGS: &[&str] = &[
    "backend",
    "resume-backend",
    "optimizer",
    "epochs",
    "dim",
    "walk-length",
    "walks-per-node",
    "window",
    "negatives",
    "batch-size",
    "lr",
    "init-std",
    "seed",
    "eval-pairs",
    "neighbours",
    "neighbors",
    "subgraph",
    "data",
    "out",
];

/// Parses the arguments after the program name.
///
/// # Errors
///
/// [`Error::Usage`] naming the flag and the problem.
pub fn parse_args<L: Line, I: IntoIterator<Item = String>>(args: I) -> Result<Command<L>, Error> {
    let mut options = Options::default();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        if arg == "-h" || arg == "--help" {
            return Ok(Command::Help);
        }
        let Some(flag) = arg.strip_prefix("--") else {
            return Err(usage_error(format!("unexpected argument {arg:?}")));
        };
        let (flag, inline) = match flag.split_once('=') {
            Some((flag, value)) => (flag, Some(value.to_string())),
            None => (flag, None),
        };
        match flag {
            "resume" | "no-progress" => {
                if inline.is_some() {
                    return Err(usage_error(format!("--{flag} takes no value")));
                }
                match flag {
                    "resume" => options.resume = true,
                    _ => options.progress = Some(ProgressMode::Lines),
                }
                continue;
            }
            _ => {}
        }
        if !VALUE_FLAGS.contains(&flag) {
            return Err(usage_error(format!("unknown option --{flag}")));
        }
        let value = match inline {
            Some(value) => value,
            None => args
                .next()
                .ok_or_else(|| usage_error(format!("--{flag} needs a value")))?,
        };
        let o = &mut options.overrides;
        match flag {
            "backend" => options.backend = Some(value.parse().map_err(usage_error)?),
            "resume-backend" => {
                options.resume_backend = Some(value.parse().map_err(usage_error)?);
                options.resume = true;
            }
            "optimizer" => options.optimizer = Some(value.parse().map_err(usage_error)?),
            "epochs" => options.epochs = positive(flag, &value)?,
            "dim" => o.dim = Some(positive(flag, &value)?),
            "walk-length" => o.walk_length = Some(positive(flag, &value)?),
            "walks-per-node" => o.walks_per_node = Some(positive(flag, &value)?),
            "window" => o.window = Some(number(flag, &value)?),
            "negatives" => o.negatives = Some(positive(flag, &value)?),
            "batch-size" => o.batch_size = Some(positive(flag, &value)?),
            "lr" => o.lr = Some(number(flag, &value)?),
            "init-std" => o.init_std = Some(number(flag, &value)?),
            "seed" => o.seed = Some(number(flag, &value)?),
            "eval-pairs" => o.eval_pairs = Some(positive(flag, &value)?),
            "neighbours" | "neighbors" => {
                options.neighbours = value
                    .split(',')
                    .map(str::trim)
                    .filter(|w| !w.is_empty())
                    .map(String::from)
                    .collect();
            }
            "subgraph" => {
                let (root, cap) = match value.split_once(':') {
                    Some((root, cap)) => (root, positive(flag, cap)?),
                    None => (value.as_str(), usize::MAX),
                };
                if root.is_empty() {
                    return Err(usage_error("--subgraph needs a word"));
                }
                options.subgraph = Some((root.to_string(), cap));
            }
            "data" => options.data = PathBuf::from(value),
            "out" => options.out = PathBuf::from(value),
            _ => unreachable!("every flag of VALUE_FLAGS is handled"),
        }
    }
    if let (Some(backend), Some(resume_backend)) = (options.backend, options.resume_backend) {
        if backend != resume_backend {
            return Err(usage_error(format!(
                "--backend {} and --resume-backend {} disagree",
                backend.name(),
                resume_backend.name()
            )));
        }
    }
    let config = options.overrides.apply(TrainConfig::default());
    config.validate().map_err(usage_error)?;
    Ok(Command::Run(Box::new(options)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::line::tests::{FlexLine, NdArrayLine};

    fn parse(args: &[&str]) -> Result<Command<NdArrayLine>, Error> {
        parse_args(args.iter().map(|s| s.to_string()))
    }

    fn options(args: &[&str]) -> Options<NdArrayLine> {
        match parse(args).unwrap() {
            Command::Run(options) => *options,
            Command::Help => panic!("help"),
        }
    }

    fn error(args: &[&str]) -> String {
        parse(args).unwrap_err().to_string()
    }

    #[test]
    fn defaults_are_the_issues() {
        let o = options(&[]);
        assert_eq!(o.epochs, 3);
        assert_eq!(o.backend, None);
        assert_eq!(o.optimizer, None);
        assert!(!o.resume);
        assert_eq!(o.neighbours, ["dog", "car", "music"]);
        assert_eq!(
            o.overrides.apply(TrainConfig::default()),
            TrainConfig::default()
        );
        assert!(o.out.ends_with("target/wordnet"));
    }

    #[test]
    fn flags_take_spaced_and_inline_values() {
        let o = options(&[
            "--backend",
            "wgpu",
            "--optimizer=adam",
            "--epochs",
            "5",
            "--dim=32",
            "--seed",
            "7",
            "--walk-length",
            "10",
            "--window",
            "3",
            "--negatives",
            "2",
            "--batch-size",
            "64",
            "--lr",
            "0.05",
            "--subgraph",
            "mammal:500",
            "--out",
            "/tmp/x",
            "--no-progress",
            "--neighbours",
            "cat, horse",
        ]);
        assert_eq!(o.backend, Some(BackendName::Wgpu));
        assert_eq!(o.optimizer, Some(OptimizerName::Adam));
        assert_eq!(o.epochs, 5);
        let config = o.overrides.apply(TrainConfig::default());
        assert_eq!((config.dim, config.seed, config.batch_size), (32, 7, 64));
        assert_eq!(config.skip_gram.walk_length, 10);
        assert_eq!(config.skip_gram.window, 3);
        assert_eq!(config.skip_gram.negatives, 2);
        assert_eq!(config.lr, 0.05);
        assert_eq!(o.subgraph, Some(("mammal".to_string(), 500)));
        assert_eq!(o.out, PathBuf::from("/tmp/x"));
        assert_eq!(o.progress, Some(ProgressMode::Lines));
        assert_eq!(o.neighbours, ["cat", "horse"]);
    }

    #[test]
    fn resume_backend_implies_resume() {
        let o = options(&["--resume-backend", "wgpu"]);
        assert!(o.resume);
        assert_eq!(o.resume_backend, Some(BackendName::Wgpu));
        assert!(options(&["--resume"]).resume);
        assert!(error(&["--backend", "ndarray", "--resume-backend", "wgpu"]).contains("disagree"));
    }

    #[test]
    fn help() {
        assert_eq!(parse(&["--help"]).unwrap(), Command::Help);
        assert_eq!(parse(&["--dim", "3", "-h"]).unwrap(), Command::Help);
    }

    #[test]
    fn bad_arguments_are_named() {
        assert_eq!(error(&["--frobnicate"]), "unknown option --frobnicate");
        assert_eq!(error(&["--epochs"]), "--epochs needs a value");
        assert_eq!(
            error(&["--dim", "x"]),
            "--dim \"x\": invalid digit found in string"
        );
        assert_eq!(error(&["--dim", "0"]), "--dim must be at least 1");
        assert_eq!(
            error(&["--backend", "cuda"]),
            "unknown backend \"cuda\": expected ndarray or wgpu"
        );
        assert_eq!(
            error(&["--optimizer", "sgd"]),
            "unknown optimizer \"sgd\": expected sparse-adam, sparse-adam-bf16, sparse-adam-f16 or adam"
        );
        assert_eq!(error(&["extra"]), "unexpected argument \"extra\"");
        assert_eq!(error(&["--resume=yes"]), "--resume takes no value");
        assert!(error(&["--lr", "-1"]).contains("learning rate"));
        assert!(error(&["--walk-length", "3"]).contains("walk length (3)"));
        assert_eq!(error(&["--subgraph", ":5"]), "--subgraph needs a word");
    }

    #[test]
    fn conflicts_name_flag_and_checkpoint_value() {
        let o = options(&["--dim", "32", "--seed", "0"]);
        let conflicts = o.overrides.conflicts(&TrainConfig::default());
        assert_eq!(conflicts, ["--dim 32 (the checkpoint's is 64)"]);
    }

    #[test]
    fn usage_names_the_lines_cpu_backend_and_stays_aligned() {
        fn description_columns<L: Line>() -> Vec<usize> {
            usage::<L>()
                .lines()
                .filter(|l| l.starts_with("  --backend") || l.starts_with("  --resume-backend"))
                .map(|l| l.find("backend of").or(l.find("continue")).unwrap())
                .collect()
        }
        assert_eq!(description_columns::<NdArrayLine>(), [32, 32]);
        assert_eq!(description_columns::<FlexLine>(), [32, 32]);
        assert!(usage::<FlexLine>().contains("--backend flex|wgpu"));
        assert!(usage::<FlexLine>().contains("(default: flex)"));
        assert_eq!(
            "flex".parse::<BackendName<FlexLine>>(),
            Ok(BackendName::CPU)
        );
        assert!("ndarray".parse::<BackendName<FlexLine>>().is_err());
    }
}
