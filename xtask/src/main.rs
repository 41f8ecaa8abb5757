//! `cargo xtask <command>`: the project's chores, each a thin wrapper around `cargo`.
//!
//! - `test-backends [--require wgpu] [--line 0.1|0.2]`: each Burn line's tests once per
//!   backend, then one table.
//! - `conformance [--line 0.1|0.2] [--fixtures DIR] [ARGS…]`: replays the PyTorch fixtures on
//!   a line (default 0.1: `--backend ndarray|wgpu`; 0.2: `--optimizer`, `--kernels`, on the
//!   backend `BURN_SPARSE_ADAM_BACKEND=flex|wgpu` selects, flex by default).
//! - `bench [--line 0.1|0.2] [ARGS…]`: the release benchmark of a line (default 0.1:
//!   `crates/bench`; 0.2: `burn-0.22/bench`), PyTorch beside it with `--torch`;
//!   `bench --wordnet [--torch]`: the WordNet example beside its PyTorch reference;
//!   `bench --peers 1,2,3 [--rows 1e6]`: data-parallel peers exchanging row gradients
//!   (Burn-free, `sparse-adam-bench-core`'s `sparse-adam-peers`).
//! - `quickstart [--wgpu]`: the 0.2 line's README quick start in a fresh project on
//!   `burn = "0.22.1"` (Burn's default features), as a new user runs it.
//! - `wordnet-data [--check]`: regenerates the shipped WordNet graph from `wordnet-base`.

mod quickstart;
#[cfg(test)]
mod readme_commands;
mod test_backends;
mod wordnet_bench;
mod wordnet_data;

use std::process::{Command, ExitCode};

const USAGE: &str = "usage: cargo xtask <command> [args]

commands:
  test-backends [--require wgpu] [--line 0.1|0.2]      run both lines' tests: 0.1 on ndarray and wgpu, 0.2 on flex and wgpu
  conformance [--line 0.1|0.2] [--fixtures DIR] [...] replay the torch.optim.SparseAdam fixtures
                                (0.1: --backend ndarray|wgpu; 0.2: --optimizer sparse-adam|module|both,
                                --kernels fused|composed|both, on the backend that
                                BURN_SPARSE_ADAM_BACKEND=flex|wgpu selects, flex by default)
  bench [--line 0.1|0.2] [--help | ARGS...]           benchmark a line against Burn's Adam and PyTorch
                                (0.1: --backend ndarray|wgpu; 0.2: --backend flex|wgpu)
  bench --wordnet [--line 0.1|0.2] [--epochs N] [--torch] [--torch-threads T]
                                the WordNet example (0.2 line by default) beside its PyTorch
                                reference (crates/bench/wordnet_torch.py): s per epoch, AUCs, phases
  bench --peers 1,2,3 [--rows 1e6] [--engines in-process,tcp] [--steps N]
                                data-parallel peers exchanging row gradients (Burn-free):
                                step, steps/s, bytes per step against a dense all-reduce of the table
  quickstart [--wgpu] [--dir DIR]                     run the 0.2 README's quick start in a fresh project
                                on burn = \"0.22.1\" (default features; --wgpu: its wgpu lines)
  wordnet-data [--wordnet-dir DIR] [--check]           regenerate examples/data/wordnet-nouns.tsv.gz";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((command, rest)) = args.split_first() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let result = match command.as_str() {
        "test-backends" => test_backends::run(rest),
        "conformance" => conformance(rest),
        "bench" => bench(rest),
        "quickstart" => quickstart::run(rest),
        "wordnet-data" => wordnet_data::run(rest),
        "-h" | "--help" | "help" => {
            println!("{USAGE}");
            Ok(())
        }
        other => Err(format!("unknown command {other:?}\n\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Splits a leading `--line L` off `args`: the line (default 0.1) and the rest.
fn line_arg(args: &[String]) -> (&str, Vec<String>) {
    match args {
        [flag, line, rest @ ..] if flag == "--line" => (line.as_str(), rest.to_vec()),
        _ => ("0.1", args.to_vec()),
    }
}

/// `bench [--line 0.1|0.2] ARGS…`: the line's release benchmark with `ARGS`.
fn bench(args: &[String]) -> Result<(), String> {
    if args.iter().any(|a| a == "--wordnet") {
        return wordnet_bench::run(args);
    }
    if args.iter().any(|a| a == "--peers") {
        // Burn-free (the core's exchange and row update), so not per line.
        let (_, rest) = line_arg(args);
        return cargo(
            &[
                "run",
                "--quiet",
                "--release",
                "--package",
                "sparse-adam-bench-core",
                "--bin",
                "sparse-adam-peers",
                "--",
            ],
            &rest,
        );
    }
    let (line, rest) = line_arg(args);
    match line {
        // burn-ndarray as users build it (the bench's feature `ndarray-defaults`); only this
        // binary, so the test builds keep their features.
        "0.1" => cargo(
            &[
                "run",
                "--quiet",
                "--release",
                "--package",
                "sparse-adam-bench",
                "--features",
                "ndarray-defaults",
                "--",
            ],
            &rest,
        ),
        "0.2" => cargo_in(
            &workspace_root().join("burn-0.22"),
            &[
                "run",
                "--quiet",
                "--release",
                "--package",
                "sparse-adam-bench-022",
                "--",
            ],
            &rest,
        ),
        other => Err(format!("--line {other:?}: expected 0.1 or 0.2")),
    }
}

/// `conformance [--line 0.1|0.2] ARGS…`: the line's conformance runner with `ARGS`.
fn conformance(args: &[String]) -> Result<(), String> {
    let (line, rest) = line_arg(args);
    match line {
        "0.1" => cargo(
            &[
                "run",
                "--quiet",
                "--package",
                "sparse-adam-conformance",
                "--",
            ],
            &rest,
        ),
        "0.2" => cargo_in(
            &workspace_root().join("burn-0.22"),
            &[
                "run",
                "--quiet",
                "--package",
                "burn-sparse-adam-tests",
                "--bin",
                "conformance",
                "--",
            ],
            &rest,
        ),
        other => Err(format!("--line {other:?}: expected 0.1 or 0.2")),
    }
}

/// Runs `cargo <fixed> <rest>` in the workspace, failing when it fails.
fn cargo(fixed: &[&str], rest: &[String]) -> Result<(), String> {
    cargo_in(&workspace_root(), fixed, rest)
}

/// Runs `cargo <fixed> <rest>` in `dir`, failing when it fails.
fn cargo_in(dir: &std::path::Path, fixed: &[&str], rest: &[String]) -> Result<(), String> {
    let status = Command::new(env!("CARGO"))
        .args(fixed)
        .args(rest)
        .current_dir(dir)
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`cargo {}` failed ({status})", fixed.join(" ")))
    }
}

/// The workspace root: the parent of this crate's directory.
fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace root")
        .to_path_buf()
}
