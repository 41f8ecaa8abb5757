//! `cargo xtask bench --wordnet [--line 0.1|0.2] [--epochs N] [--torch] [--torch-threads T]
//! [--python P]`: the crate's real task beside PyTorch's, in one invocation.
//!
//! Runs the WordNet example's default configuration (the README's main command; the 0.2
//! line unless `--line 0.1`) in release into a fresh `target/bench-wordnet/line-<L>`, reads
//! its per-epoch record from the checkpoint (`checkpoint.json`: seconds, loss, AUCs and the
//! seconds of each phase of a step), then, with `--torch`, runs
//! `crates/bench/wordnet_torch.py` (the same DeepWalk configuration with
//! `torch.optim.SparseAdam` on `nn.Embedding(sparse=True)` tables) and prints both side by
//! side with the ratios the performance issue sets targets for: seconds per epoch (≤ 0.5×
//! PyTorch's), the AUCs after each epoch (within 0.01 of PyTorch's), the first epoch against
//! the later ones (≤ 1.1×), and the milliseconds per step of each phase on both sides.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

/// The targets the report checks (issue "CPU performance").
const EPOCH_RATIO_TARGET: f64 = 0.5;
const AUC_GAP_TARGET: f64 = 0.01;
const FIRST_EPOCH_TARGET: f64 = 1.1;

/// The phases of a step, in the order both sides record them.
const PHASES: [&str; 6] = [
    "sampling",
    "lookup",
    "loss",
    "backward",
    "gradients",
    "optimizer",
];

#[derive(Debug, PartialEq)]
struct Options {
    line: String,
    epochs: usize,
    torch: bool,
    torch_threads: Option<usize>,
    python: String,
}

impl Options {
    fn parse(args: &[String]) -> Result<Self, String> {
        let mut options = Options {
            line: "0.2".into(),
            epochs: 3,
            torch: false,
            torch_threads: None,
            python: "python3".into(),
        };
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let mut value = |name: &str| {
                args.next()
                    .cloned()
                    .ok_or_else(|| format!("{name} needs a value"))
            };
            match arg.as_str() {
                "--wordnet" => {}
                "--torch" => options.torch = true,
                "--line" => options.line = value("--line")?,
                "--python" => options.python = value("--python")?,
                "--epochs" => options.epochs = count("--epochs", &value("--epochs")?)?,
                "--torch-threads" => {
                    options.torch_threads =
                        Some(count("--torch-threads", &value("--torch-threads")?)?)
                }
                other => {
                    return Err(format!(
                        "bench --wordnet: unknown argument {other:?} (expected --line 0.1|0.2, \
                         --epochs N, --torch, --torch-threads T, --python P)"
                    ));
                }
            }
        }
        if !matches!(options.line.as_str(), "0.1" | "0.2") {
            return Err(format!("--line {:?}: expected 0.1 or 0.2", options.line));
        }
        Ok(options)
    }
}

fn count(name: &str, text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{name} {text:?}: expected a whole number ≥ 1")),
    }
}

/// One epoch of one side.
#[derive(Clone, Debug, PartialEq)]
struct Epoch {
    train_secs: f64,
    loss: f64,
    direct_auc: f64,
    grandparent_auc: f64,
    steps: f64,
    /// Seconds per phase, in [`PHASES`] order.
    phases: [f64; 6],
}

impl Epoch {
    fn from_json(value: &Value) -> Result<Self, String> {
        let number = |v: &Value, key: &str| {
            v.get(key)
                .and_then(Value::as_f64)
                .ok_or_else(|| format!("an epoch record lacks the number {key:?}: {v}"))
        };
        let phases = value
            .get("phases")
            .ok_or_else(|| format!("an epoch record lacks \"phases\": {value}"))?;
        let mut seconds = [0.0; 6];
        for (slot, name) in seconds.iter_mut().zip(PHASES) {
            *slot = number(phases, name)?;
        }
        Ok(Epoch {
            train_secs: number(value, "train_secs")?,
            loss: number(value, "loss")?,
            direct_auc: number(value, "direct_auc")?,
            grandparent_auc: number(value, "grandparent_auc")?,
            steps: number(value, "steps")?,
            phases: seconds,
        })
    }
}

pub fn run(args: &[String]) -> Result<(), String> {
    let options = Options::parse(args)?;
    let root = super::workspace_root();
    let out = root
        .join("target/bench-wordnet")
        .join(format!("line-{}", options.line));
    if out.exists() {
        std::fs::remove_dir_all(&out)
            .map_err(|e| format!("cannot clear {}: {e}", out.display()))?;
    }
    let torch = if options.torch {
        // PyTorch first: a missing PyTorch fails before the long Burn build.
        Some(run_torch(&root, &options)?)
    } else {
        None
    };
    let burn = run_example(&root, &out, &options)?;
    print!("{}", report(&options, &burn, torch.as_ref()));
    Ok(())
}

/// Runs the line's example in release into `out` and reads its epochs back.
fn run_example(root: &Path, out: &Path, options: &Options) -> Result<Vec<Epoch>, String> {
    let mut command = Command::new(env!("CARGO"));
    command
        .current_dir(root)
        .args(["run", "--quiet", "--release"]);
    if options.line == "0.2" {
        command.args(["--manifest-path", "burn-0.22/Cargo.toml"]);
    }
    command
        .args(["--example", "wordnet", "--", "--no-progress", "--epochs"])
        .arg(options.epochs.to_string())
        .arg("--out")
        .arg(out);
    println!(
        "== burn-sparse-adam, line {}: the example's default configuration",
        options.line
    );
    let status = command
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err(format!(
            "the {} line's WordNet example failed ({status})",
            options.line
        ));
    }
    let meta = out.join("checkpoint.json");
    let text = std::fs::read_to_string(&meta)
        .map_err(|e| format!("cannot read {}: {e}", meta.display()))?;
    let value: Value =
        serde_json::from_str(&text).map_err(|e| format!("{} is not JSON: {e}", meta.display()))?;
    let epochs = value
        .pointer("/history/epochs")
        .and_then(Value::as_array)
        .ok_or_else(|| format!("{} has no history.epochs", meta.display()))?;
    epochs.iter().map(Epoch::from_json).collect()
}

/// The PyTorch reference's epochs and the header it reports (version, threads).
struct Torch {
    epochs: Vec<Epoch>,
    version: String,
    threads: u64,
}

fn run_torch(root: &Path, options: &Options) -> Result<Torch, String> {
    let script: PathBuf = root.join("crates/bench/wordnet_torch.py");
    let data = root.join(wordnet_graph::EDGE_LIST_PATH);
    let mut command = Command::new(&options.python);
    command
        .arg(&script)
        .arg("--data")
        .arg(&data)
        .args(["--epochs", &options.epochs.to_string()])
        .stdout(Stdio::piped());
    if let Some(threads) = options.torch_threads {
        command.args(["--threads", &threads.to_string()]);
    }
    println!("== PyTorch: {} (same configuration)", script.display());
    let output = command.output().map_err(|e| {
        format!(
            "cannot run {}: {e}; install Python 3 with `pip install torch numpy`",
            options.python
        )
    })?;
    if !output.status.success() {
        return Err(format!(
            "{} failed ({}); it needs `pip install torch numpy`",
            script.display(),
            output.status
        ));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let mut torch = Torch {
        epochs: Vec::new(),
        version: String::new(),
        threads: 0,
    };
    for line in stdout.lines().filter(|l| l.trim_start().starts_with('{')) {
        let value: Value = serde_json::from_str(line)
            .map_err(|e| format!("bad line from the script ({e}): {line}"))?;
        torch.version = value["torch"].as_str().unwrap_or("?").to_string();
        torch.threads = value["threads"].as_u64().unwrap_or(0);
        torch.epochs.push(Epoch::from_json(&value)?);
    }
    if torch.epochs.len() != options.epochs {
        return Err(format!(
            "the PyTorch reference reported {} epochs, {} were asked for",
            torch.epochs.len(),
            options.epochs
        ));
    }
    Ok(torch)
}

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    if n == 0 {
        f64::NAN
    } else {
        sum / n as f64
    }
}

/// The first epoch's seconds over the mean of the later ones (NaN with one epoch).
fn first_epoch_ratio(epochs: &[Epoch]) -> f64 {
    match epochs {
        [first, later @ ..] if !later.is_empty() => {
            first.train_secs / mean(later.iter().map(|e| e.train_secs))
        }
        _ => f64::NAN,
    }
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "NOT met"
    }
}

fn report(options: &Options, burn: &[Epoch], torch: Option<&Torch>) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let backend = if options.line == "0.2" {
        "flex"
    } else {
        "ndarray"
    };
    let _ = writeln!(
        s,
        "\nWordNet DeepWalk, the example's defaults, {} epochs; {cores} cores; burn-sparse-adam line {} ({backend})",
        burn.len(),
        options.line,
    );
    if let Some(t) = torch {
        let _ = writeln!(
            s,
            "PyTorch {} on {} threads: torch.optim.SparseAdam, nn.Embedding(sparse=True)",
            t.version, t.threads
        );
    }
    let _ = writeln!(
        s,
        "\n{:>5} {:>8} {:>8} {:>6}  {:>7} {:>7}  {:>7} {:>7}  {:>7} {:>7}",
        "epoch", "burn s", "torch s", "ratio", "b loss", "t loss", "b dir", "t dir", "b gp", "t gp"
    );
    let dash = |v: Option<f64>, width: usize, precision: usize| match v {
        Some(v) => format!("{v:>width$.precision$}"),
        None => format!("{:>width$}", "-"),
    };
    for (i, b) in burn.iter().enumerate() {
        let t = torch.and_then(|t| t.epochs.get(i));
        let _ = writeln!(
            s,
            "{:>5} {:>8.2} {} {}  {:>7.4} {}  {:>7.4} {}  {:>7.4} {}",
            i + 1,
            b.train_secs,
            dash(t.map(|t| t.train_secs), 8, 2),
            dash(t.map(|t| b.train_secs / t.train_secs), 6, 2),
            b.loss,
            dash(t.map(|t| t.loss), 7, 4),
            b.direct_auc,
            dash(t.map(|t| t.direct_auc), 7, 4),
            b.grandparent_auc,
            dash(t.map(|t| t.grandparent_auc), 7, 4),
        );
    }
    let burn_mean = mean(burn.iter().map(|e| e.train_secs));
    let _ = writeln!(s, "{:>5} {burn_mean:>8.2}", "mean");
    let burn_first = first_epoch_ratio(burn);
    let _ = writeln!(
        s,
        "\nfirst epoch / mean of the later ones: burn {burn_first:.2} (target ≤ {FIRST_EPOCH_TARGET}: {})",
        verdict(burn_first <= FIRST_EPOCH_TARGET)
    );
    if let Some(t) = torch {
        let torch_mean = mean(t.epochs.iter().map(|e| e.train_secs));
        let ratio = burn_mean / torch_mean;
        let _ = writeln!(
            s,
            "                                     torch {:.2}",
            first_epoch_ratio(&t.epochs)
        );
        let _ = writeln!(
            s,
            "seconds per epoch, burn / torch: {burn_mean:.2} / {torch_mean:.2} = {ratio:.2} (target ≤ {EPOCH_RATIO_TARGET}: {})",
            verdict(ratio <= EPOCH_RATIO_TARGET)
        );
        let gap = |f: fn(&Epoch) -> f64| {
            burn.iter()
                .zip(&t.epochs)
                .map(|(b, t)| (f(b) - f(t)).abs())
                .fold(0.0, f64::max)
        };
        let (direct, grandparent) = (gap(|e| e.direct_auc), gap(|e| e.grandparent_auc));
        let _ = writeln!(
            s,
            "largest AUC gap after an epoch: direct {direct:.4}, grandparent {grandparent:.4} (target ≤ {AUC_GAP_TARGET}: {})",
            verdict(direct <= AUC_GAP_TARGET && grandparent <= AUC_GAP_TARGET)
        );
    }
    let per_step = |epochs: &[Epoch], phase: usize| {
        let steps: f64 = epochs.iter().map(|e| e.steps).sum();
        1e3 * epochs.iter().map(|e| e.phases[phase]).sum::<f64>() / steps
    };
    let total = |epochs: &[Epoch]| {
        let steps: f64 = epochs.iter().map(|e| e.steps).sum();
        1e3 * epochs.iter().map(|e| e.train_secs).sum::<f64>() / steps
    };
    let _ = writeln!(
        s,
        "\nms per step by phase over all epochs (wall clock between phase boundaries; torch's \"gradients\" is zero_grad)"
    );
    let _ = writeln!(s, "{:>10} {:>8} {:>8}", "phase", "burn", "torch");
    for (i, name) in PHASES.iter().enumerate() {
        let _ = writeln!(
            s,
            "{name:>10} {:>8.3} {}",
            per_step(burn, i),
            dash(torch.map(|t| per_step(&t.epochs, i)), 8, 3)
        );
    }
    let _ = writeln!(
        s,
        "{:>10} {:>8.3} {}",
        "step",
        total(burn),
        dash(torch.map(|t| total(&t.epochs)), 8, 3)
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn epoch(secs: f64, direct: f64) -> Epoch {
        Epoch {
            train_secs: secs,
            loss: 1.0,
            direct_auc: direct,
            grandparent_auc: 0.9,
            steps: 10.0,
            phases: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
        }
    }

    #[test]
    fn options_default_to_the_readme_line_and_refuse_strangers() {
        let o = Options::parse(&args(&["--wordnet"])).unwrap();
        assert_eq!((o.line.as_str(), o.epochs, o.torch), ("0.2", 3, false));
        let o = Options::parse(&args(&[
            "--wordnet",
            "--line",
            "0.1",
            "--torch",
            "--epochs",
            "2",
        ]))
        .unwrap();
        assert_eq!((o.line.as_str(), o.epochs, o.torch), ("0.1", 2, true));
        assert!(Options::parse(&args(&["--line", "0.3"]))
            .unwrap_err()
            .contains("0.3"));
        assert!(Options::parse(&args(&["--epochs", "0"]))
            .unwrap_err()
            .contains("--epochs"));
        assert!(Options::parse(&args(&["--steps"]))
            .unwrap_err()
            .contains("--steps"));
    }

    #[test]
    fn an_epoch_record_is_read_with_its_phases_or_refused() {
        let value: Value = serde_json::from_str(
            r#"{"epoch": 1, "loss": 1.12, "steps": 321, "train_secs": 4.5, "eval_secs": 0.01,
                "direct_auc": 0.98, "grandparent_auc": 0.92,
                "phases": {"sampling": 0.1, "lookup": 0.2, "loss": 0.3, "backward": 0.4,
                           "gradients": 0.5, "optimizer": 0.6}}"#,
        )
        .unwrap();
        let e = Epoch::from_json(&value).unwrap();
        assert_eq!((e.train_secs, e.steps, e.phases[5]), (4.5, 321.0, 0.6));
        let mut missing = value.clone();
        missing["phases"]
            .as_object_mut()
            .unwrap()
            .remove("backward");
        assert!(Epoch::from_json(&missing).unwrap_err().contains("backward"));
    }

    #[test]
    fn the_report_checks_each_target() {
        let options = Options::parse(&args(&["--torch"])).unwrap();
        let burn = [epoch(3.3, 0.985), epoch(3.0, 0.99)];
        let torch = Torch {
            epochs: vec![epoch(6.0, 0.99), epoch(6.0, 0.99)],
            version: "2.x".into(),
            threads: 2,
        };
        let text = report(&options, &burn, Some(&torch));
        assert!(text.contains("burn 1.10 (target ≤ 1.1: met)"), "{text}");
        assert!(
            text.contains("3.15 / 6.00 = 0.53 (target ≤ 0.5: NOT met)"),
            "{text}"
        );
        assert!(
            text.contains("direct 0.0050, grandparent 0.0000 (target ≤ 0.01: met)"),
            "{text}"
        );
        // 0.6 s of optimizer over 10 steps per epoch is 60 ms a step on both sides.
        assert!(text.contains(" optimizer   60.000   60.000"), "{text}");
        let alone = report(&options, &burn, None);
        assert!(!alone.contains("burn / torch"), "{alone}");
    }
}
