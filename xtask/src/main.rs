//! `cargo xtask <command>`: the project's chores, each a thin wrapper around `cargo`.
//!
//! - `test-backends [--require wgpu]`: the whole test suite once per backend, then a table.
//! - `conformance [--fixtures DIR] [--backend ndarray|wgpu]`: replays the PyTorch fixtures.
//! - `bench [ARGS…]`: the release benchmark (see `crates/bench`).
//! - `wordnet-data [--check]`: regenerates the shipped WordNet graph from `wordnet-base`.

mod test_backends;
mod wordnet_data;

use std::process::{Command, ExitCode};

const USAGE: &str = "usage: cargo xtask <command> [args]

commands:
  test-backends [--require wgpu]                       run the test suite on ndarray and on wgpu
  conformance [--fixtures DIR] [--backend ndarray|wgpu] replay the torch.optim.SparseAdam fixtures
  bench [--help | ARGS...]                             benchmark against Burn's Adam and PyTorch
  wordnet-data [--wordnet-dir DIR] [--check]           regenerate examples/data/wordnet-nouns.tsv.gz";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((command, rest)) = args.split_first() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let result = match command.as_str() {
        "test-backends" => test_backends::run(rest),
        "conformance" => cargo(
            &[
                "run",
                "--quiet",
                "--package",
                "sparse-adam-conformance",
                "--",
            ],
            rest,
        ),
        "bench" => cargo(
            &[
                "run",
                "--quiet",
                "--release",
                "--package",
                "sparse-adam-bench",
                "--",
            ],
            rest,
        ),
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

/// Runs `cargo <fixed> <rest>` in the workspace, failing when it fails.
fn cargo(fixed: &[&str], rest: &[String]) -> Result<(), String> {
    let status = Command::new(env!("CARGO"))
        .args(fixed)
        .args(rest)
        .current_dir(workspace_root())
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
