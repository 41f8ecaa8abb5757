//! `cargo xtask test-backends [--require wgpu]`: runs the whole test suite once per backend
//! and prints a table of passed, failed and skipped tests.
//!
//! The suite is built once; each pass sets `BURN_SPARSE_ADAM_BACKEND` and runs it. Where no
//! wgpu adapter exists, wgpu is reported as skipped, with the reason and the fix, unless
//! `--require wgpu` makes that a failure (as CI does). Doctests are documentation examples
//! on ndarray, so they run in the ndarray pass only.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use crate::workspace_root;

const BACKENDS: [&str; 2] = ["ndarray", "wgpu"];
const ENV: &str = "BURN_SPARSE_ADAM_BACKEND";

/// One backend's outcome.
enum Outcome {
    Ran {
        passed: u64,
        failed: u64,
        skipped: u64,
        ok: bool,
    },
    Unavailable {
        why: String,
        required: bool,
    },
}

pub fn run(args: &[String]) -> Result<(), String> {
    let mut required: Vec<String> = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--require" => {
                let backend = args
                    .next()
                    .ok_or("--require needs a backend: ndarray or wgpu")?;
                if !BACKENDS.contains(&backend.as_str()) {
                    return Err(format!("--require {backend:?}: expected ndarray or wgpu"));
                }
                required.push(backend.clone());
            }
            other => {
                return Err(format!(
                "unknown argument {other:?} (usage: cargo xtask test-backends [--require wgpu])"
            ))
            }
        }
    }

    // One build for both passes.
    let status = cargo_test(&["--no-run"], None)
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err("the test suite does not build".into());
    }

    let mut rows = Vec::new();
    for backend in BACKENDS {
        let outcome = match probe(backend) {
            Err(why) => Outcome::Unavailable {
                why,
                required: required.iter().any(|r| r == backend),
            },
            Ok(()) => {
                println!("\n=== test suite on {backend} ===");
                let extra: &[&str] = if backend == "ndarray" {
                    &[]
                } else {
                    &["--lib", "--bins", "--tests"]
                };
                run_suite(cargo_test(extra, Some(backend)))?
            }
        };
        rows.push((backend, outcome));
    }

    println!(
        "\n{:<10}{:>8}{:>8}{:>9}",
        "backend", "passed", "failed", "skipped"
    );
    let mut all_ok = true;
    for (backend, outcome) in &rows {
        match outcome {
            Outcome::Ran {
                passed,
                failed,
                skipped,
                ok,
            } => {
                println!("{backend:<10}{passed:>8}{failed:>8}{skipped:>9}");
                all_ok &= *ok && *failed == 0;
            }
            Outcome::Unavailable { why, required } => {
                println!(
                    "{backend:<10}{:>8}{:>8}{:>9}   {}: {why}",
                    "-",
                    "-",
                    "all",
                    if *required {
                        "REQUIRED but unavailable"
                    } else {
                        "skipped"
                    }
                );
                all_ok &= !required;
            }
        }
    }
    if all_ok {
        Ok(())
    } else {
        Err("some backend failed".into())
    }
}

/// `cargo test --workspace --no-fail-fast <extra>`, on `backend` if given.
fn cargo_test(extra: &[&str], backend: Option<&str>) -> Command {
    let mut cmd = Command::new(env!("CARGO"));
    cmd.current_dir(workspace_root())
        .args(["test", "--workspace", "--no-fail-fast"])
        .args(extra);
    if let Some(backend) = backend {
        cmd.env(ENV, backend);
    }
    cmd
}

/// Whether `backend` can run here, asked of the test crate's probe (which shares the
/// suite's build).
fn probe(backend: &str) -> Result<(), String> {
    let output = Command::new(env!("CARGO"))
        .current_dir(workspace_root())
        .args([
            "run",
            "--quiet",
            "--package",
            "burn-sparse-adam-tests",
            "--bin",
            "probe-backend",
            "--",
            backend,
        ])
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stdout).trim().to_string())
    }
}

/// Runs the suite, echoing its output, and adds up its `test result:` lines.
fn run_suite(mut cmd: Command) -> Result<Outcome, String> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    let stdout = child.stdout.take().expect("piped stdout");
    for line in BufReader::new(stdout).lines() {
        let line = line.map_err(|e| format!("cannot read cargo's output: {e}"))?;
        println!("{line}");
        if let Some(counts) = line.trim().strip_prefix("test result: ") {
            passed += count(counts, "passed");
            failed += count(counts, "failed");
            skipped += count(counts, "ignored");
        }
    }
    let status = child
        .wait()
        .map_err(|e| format!("cannot wait for cargo: {e}"))?;
    Ok(Outcome::Ran {
        passed,
        failed,
        skipped,
        ok: status.success(),
    })
}

/// The number before `what` in `ok. 3 passed; 0 failed; 1 ignored; …`.
fn count(counts: &str, what: &str) -> u64 {
    counts
        .split(';')
        .filter_map(|part| {
            let mut words = part.split_whitespace().rev();
            let name = words.next()?;
            let number = words
                .next()?
                .trim_start_matches("ok.")
                .trim_start_matches("FAILED.");
            (name == what).then(|| number.parse::<u64>().ok()).flatten()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::count;

    #[test]
    fn counts_a_cargo_test_summary() {
        let line =
            "ok. 12 passed; 1 failed; 3 ignored; 0 measured; 0 filtered out; finished in 0.20s";
        assert_eq!(count(line, "passed"), 12);
        assert_eq!(count(line, "failed"), 1);
        assert_eq!(count(line, "ignored"), 3);
        assert_eq!(count("FAILED. 2 passed; 4 failed; 0 ignored", "failed"), 4);
    }
}
