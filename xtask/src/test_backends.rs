//! `cargo xtask test-backends [--require wgpu] [--line 0.1|0.2]`: runs each Burn line's tests
//! once per backend and prints one table of passed, failed and skipped tests per line and
//! backend.
//!
//! The two lines are two workspaces: the 0.1 line (Burn 0.21) at the repository root, with
//! backends ndarray and wgpu, and the 0.2 line (Burn 0.22) in `burn-0.22/`, with backends
//! flex and wgpu (Burn's default wgpu features, fusion on). Each line's tests are built
//! once; each pass sets `BURN_SPARSE_ADAM_BACKEND` and runs them. Where no wgpu adapter
//! exists, wgpu is reported as skipped, with the reason and the fix, unless `--require wgpu`
//! makes that a failure (as CI does) — on every line that runs.
//!
//! What runs in which pass: a test runs once per backend only when its outcome depends on
//! the backend `BURN_SPARSE_ADAM_BACKEND` selects; everything else runs once, in the line's
//! first pass (ndarray on the 0.1 line, flex on the 0.2 line).
//!
//! - The **first pass** runs everything: every package's unit and integration tests, and
//!   the doctests (documentation examples, on ndarray or flex).
//! - The **wgpu pass** runs the integration tests (`--test '*'`: the suite in `tests/` and
//!   the example's `examples/tests`; on the 0.2 line, `burn-0.22/tests/tests`), the only
//!   targets that read the selection (on the 0.1 line through `on_test_backend!` or
//!   `with_test_backend!`, on the 0.2 line through its tests' `device()`; the unit test
//!   `the_backend_selection_is_read_by_integration_tests_only` keeps it so). Unit tests run
//!   on the host or on a backend they name themselves (burn-sparse-adam's wgpu kernel tests
//!   ask for wgpu), so a second run would repeat the first.
//! - Of those, it leaves out the packages whose tests never touch a Burn backend
//!   ([`HOST_ONLY_PACKAGES`], `--exclude`, on the 0.1 line), and skips by name the tests that
//!   run in the first pass only: inside the suite those that run on the host only (fixture
//!   listings, the reference's self-checks), which live in a `host` module of their topic
//!   ([`HOST_ONLY_TESTS`]), and on the 0.2 line its WordNet example's, which live in a
//!   `flex_only` module ([`FLEX_ONLY_TESTS_022`]: slow on lavapipe, nothing new on wgpu).
//!   The 0.2 line leaves no package out: `--exclude` resolves features without that
//!   package, and leaving out the example and the benchmark changed the features of crates
//!   deep under Burn (`portable-atomic`, `serde_json`), so the wgpu pass rebuilt Burn and
//!   CubeCL for 16 minutes of a cold CI run.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use crate::workspace_root;

/// Every backend some line runs on (what `--require` takes).
const BACKENDS: [&str; 3] = ["ndarray", "flex", "wgpu"];
const ENV: &str = "BURN_SPARSE_ADAM_BACKEND";

/// Packages whose tests never touch a Burn backend: the Burn-free core, the WordNet graph
/// and the WordNet example's Burn-free pipeline, these chores, and the benchmark with its
/// Burn-free part (whose tests check its sampler, its medians, its command line and its JSON
/// lines). The wgpu pass leaves them out.
const HOST_ONLY_PACKAGES: [&str; 6] = [
    "sparse-adam-core",
    "wordnet-graph",
    "wordnet-app",
    "xtask",
    "sparse-adam-bench",
    "sparse-adam-bench-core",
];

/// The part of a test's name that marks the 0.2 line's WordNet example's tests
/// (`burn-0.22/examples/tests/wordnet/flex_only.rs`). They train hundreds of steps end to
/// end, slow on Mesa's lavapipe, and add nothing on wgpu that the suite in
/// `burn-0.22/tests` does not check; they run in the flex pass. (The 0.2 benchmark has no
/// integration tests, so `--test '*'` runs none of its tests.)
const FLEX_ONLY_TESTS_022: &str = "flex_only::";

/// The part of a test's name that marks it host-only: the suite keeps such tests in a `host`
/// module of their topic (`conformance::host::every_fixture_is_listed`). The wgpu pass
/// skips them.
const HOST_ONLY_TESTS: &str = "host::";

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

/// A Burn line of this repository: its workspace and the backends its tests run on.
struct Line {
    /// The crate version's line and the Burn it builds on, as the table shows them.
    name: &'static str,
    /// The workspace, relative to the repository root.
    dir: &'static str,
    /// The backends of its passes, in order: the first runs everything, the others the
    /// integration tests ([`pass_args`]).
    backends: &'static [&'static str],
    /// The packages its wgpu pass leaves out (their tests never touch a Burn backend). Only
    /// where leaving them out keeps the other packages' features, or the pass rebuilds.
    first_pass_only_packages: &'static [&'static str],
    /// The name parts of the tests its wgpu pass skips (`--skip`): they run in the first
    /// pass only.
    first_pass_only_tests: &'static [&'static str],
}

const LINES: [Line; 2] = [
    Line {
        name: "0.1 (Burn 0.21)",
        dir: ".",
        backends: &["ndarray", "wgpu"],
        first_pass_only_packages: &HOST_ONLY_PACKAGES,
        first_pass_only_tests: &[HOST_ONLY_TESTS],
    },
    Line {
        name: "0.2 (Burn 0.22)",
        dir: "burn-0.22",
        backends: &["flex", "wgpu"],
        first_pass_only_packages: &[],
        first_pass_only_tests: &[HOST_ONLY_TESTS, FLEX_ONLY_TESTS_022],
    },
];

pub fn run(args: &[String]) -> Result<(), String> {
    const USAGE: &str = "usage: cargo xtask test-backends [--require wgpu] [--line 0.1|0.2]";
    let mut required: Vec<String> = Vec::new();
    let mut only_line: Option<String> = None;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--require" => {
                let backend = args
                    .next()
                    .ok_or("--require needs a backend: ndarray, flex or wgpu")?;
                if !BACKENDS.contains(&backend.as_str()) {
                    return Err(format!(
                        "--require {backend:?}: expected ndarray, flex or wgpu"
                    ));
                }
                required.push(backend.clone());
            }
            "--line" => {
                let line = args.next().ok_or("--line needs 0.1 or 0.2")?;
                if !LINES.iter().any(|l| l.name.starts_with(line.as_str())) {
                    return Err(format!("--line {line:?}: expected 0.1 or 0.2"));
                }
                only_line = Some(line.clone());
            }
            other => return Err(format!("unknown argument {other:?} ({USAGE})")),
        }
    }

    let mut rows = Vec::new();
    for line in &LINES {
        if only_line
            .as_ref()
            .is_some_and(|l| !line.name.starts_with(l.as_str()))
        {
            continue;
        }
        let dir = workspace_root().join(line.dir);
        // One build for all of the line's passes.
        let status = cargo_test(&dir, &["--no-run"], &[], None)
            .status()
            .map_err(|e| format!("cannot run cargo: {e}"))?;
        if !status.success() {
            return Err(format!("the {} line's tests do not build", line.name));
        }
        for (pass, &backend) in line.backends.iter().enumerate() {
            let outcome = match probe(&dir, backend) {
                Err(why) => Outcome::Unavailable {
                    why,
                    required: required.iter().any(|r| r == backend),
                },
                Ok(()) => {
                    println!("\n=== {} on {backend} ===", line.name);
                    let (cargo_args, test_args) = pass_args(line, pass);
                    run_suite(cargo_test(&dir, &cargo_args, &test_args, Some(backend)))?
                }
            };
            rows.push((line.name, backend, outcome));
        }
    }

    println!(
        "\n{:<18}{:<10}{:>8}{:>8}{:>9}",
        "line", "backend", "passed", "failed", "skipped"
    );
    let mut all_ok = true;
    for (line, backend, outcome) in &rows {
        match outcome {
            Outcome::Ran {
                passed,
                failed,
                skipped,
                ok,
            } => {
                println!("{line:<18}{backend:<10}{passed:>8}{failed:>8}{skipped:>9}");
                all_ok &= *ok && *failed == 0;
            }
            Outcome::Unavailable { why, required } => {
                println!(
                    "{line:<18}{backend:<10}{:>8}{:>8}{:>9}   {}: {why}",
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
        Err("some line or backend failed".into())
    }
}

/// The arguments of `line`'s pass number `pass` (0: the first, which runs everything):
/// cargo's, and the test binaries' (after `--`).
fn pass_args(line: &Line, pass: usize) -> (Vec<&'static str>, Vec<&'static str>) {
    if pass == 0 {
        return (Vec::new(), Vec::new());
    }
    let mut cargo_args = vec!["--test", "*"];
    for package in line.first_pass_only_packages {
        cargo_args.extend(["--exclude", package]);
    }
    let test_args = line
        .first_pass_only_tests
        .iter()
        .flat_map(|test| ["--skip", test])
        .collect();
    (cargo_args, test_args)
}

/// `cargo test --workspace --no-fail-fast <cargo_args> -- <test_args>` in the workspace
/// `dir`, on `backend` if given.
fn cargo_test(
    dir: &std::path::Path,
    cargo_args: &[&str],
    test_args: &[&str],
    backend: Option<&str>,
) -> Command {
    let mut cmd = Command::new(env!("CARGO"));
    cmd.current_dir(dir)
        .args(["test", "--workspace", "--no-fail-fast"])
        .args(cargo_args);
    if !test_args.is_empty() {
        cmd.arg("--").args(test_args);
    }
    if let Some(backend) = backend {
        cmd.env(ENV, backend);
    }
    cmd
}

/// Whether `backend` can run here, asked of the probe of the test crate of the line in `dir`
/// (each line's `burn-sparse-adam-tests` has a `probe-backend` bin).
///
/// The probe is the binary that the line's `cargo test --workspace --no-run` just built:
/// `cargo run --package burn-sparse-adam-tests` would resolve Burn's features for that one
/// package and rebuild Burn and CubeCL a second time (16 minutes of a cold CI run).
fn probe(dir: &std::path::Path, backend: &str) -> Result<(), String> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .map(|t| if t.is_absolute() { t } else { dir.join(t) })
        .unwrap_or_else(|| dir.join("target"));
    let built = target
        .join("debug")
        .join(format!("probe-backend{}", std::env::consts::EXE_SUFFIX));
    let mut cmd = if built.is_file() {
        Command::new(built)
    } else {
        let mut cargo = Command::new(env!("CARGO"));
        cargo.args([
            "run",
            "--quiet",
            "--package",
            "burn-sparse-adam-tests",
            "--bin",
            "probe-backend",
            "--",
        ]);
        cargo
    };
    let output = cmd
        .current_dir(dir)
        .arg(backend)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run the probe: {e}"))?;
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
    use std::path::Path;

    use super::{count, pass_args, HOST_ONLY_PACKAGES, LINES};
    use crate::workspace_root;

    #[test]
    fn counts_a_cargo_test_summary() {
        let line =
            "ok. 12 passed; 1 failed; 3 ignored; 0 measured; 0 filtered out; finished in 0.20s";
        assert_eq!(count(line, "passed"), 12);
        assert_eq!(count(line, "failed"), 1);
        assert_eq!(count(line, "ignored"), 3);
        assert_eq!(count("FAILED. 2 passed; 4 failed; 0 ignored", "failed"), 4);
    }

    #[test]
    fn the_wgpu_pass_runs_integration_tests_without_the_host_only_ones() {
        let [v01, v02] = &LINES;
        assert_eq!(v01.backends, ["ndarray", "wgpu"]);
        assert_eq!(pass_args(v01, 0), (vec![], vec![]));
        let (cargo_args, test_args) = pass_args(v01, 1);
        assert_eq!(cargo_args[..2], ["--test", "*"]);
        for package in HOST_ONLY_PACKAGES {
            assert!(cargo_args.windows(2).any(|w| w == ["--exclude", package]));
        }
        assert_eq!(test_args, ["--skip", "host::"]);
        // The 0.2 line: everything on flex, then its integration tests on wgpu, the
        // example's skipped by name, no package left out (which would change the features
        // Burn is built with and rebuild it).
        assert_eq!(v02.backends, ["flex", "wgpu"]);
        assert_eq!(pass_args(v02, 0), (vec![], vec![]));
        let (cargo_args, test_args) = pass_args(v02, 1);
        assert_eq!(cargo_args, ["--test", "*"]);
        assert_eq!(test_args, ["--skip", "host::", "--skip", "flex_only::"]);
    }

    /// The 0.2 wgpu pass skips the WordNet example's tests by the name of their module: a
    /// test of that package outside `flex_only` would run on lavapipe unnoticed.
    #[test]
    fn the_022_example_tests_live_in_flex_only() {
        let mut outside = Vec::new();
        sources(
            &workspace_root().join("burn-0.22/examples/tests"),
            &mut |file, text| {
                if text.contains("#[test]") && !file.ends_with("wordnet/flex_only.rs") {
                    outside.push(file.display().to_string());
                }
            },
        );
        assert!(outside.is_empty(), "tests outside flex_only: {outside:?}");
    }

    /// The wgpu pass runs integration tests only (`--test '*'`): a test that reads the backend
    /// selection anywhere else would silently run on ndarray alone. The selection is read
    /// through `on_test_backend!` and `with_test_backend!`; their invocations must be in
    /// integration tests (`tests/` directories), not in a package's `src/`. Binaries
    /// (`src/bin/`) are exempt: they are not tests, and the integration tests that spawn them
    /// (the multi-process data-parallel tests) pass the selection on in the environment, in
    /// both passes.
    #[test]
    fn the_backend_selection_is_read_by_integration_tests_only() {
        let macros = [
            concat!("on_test", "_backend!("),
            concat!("with_test", "_backend!("),
        ];
        let mut found = Vec::new();
        let root = workspace_root();
        let members = ["crates", "examples", "tests", "xtask"];
        for member in members.iter().map(|m| root.join(m)) {
            let packages: Vec<_> = if member.join("Cargo.toml").is_file() {
                vec![member]
            } else {
                std::fs::read_dir(&member)
                    .expect("a workspace directory")
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.join("Cargo.toml").is_file())
                    .collect()
            };
            for package in packages {
                let bins = package.join("src").join("bin");
                sources(&package.join("src"), &mut |file, text| {
                    if file.starts_with(&bins) {
                        return;
                    }
                    for (n, line) in text.lines().enumerate() {
                        let code = line.trim_start();
                        if !code.starts_with("//") && macros.iter().any(|m| code.contains(m)) {
                            found.push(format!("{}:{}", file.display(), n + 1));
                        }
                    }
                });
            }
        }
        assert!(
            found.is_empty(),
            "tests that read the backend selection outside integration tests, which the wgpu \
             pass does not run: {found:?}"
        );
    }

    /// Calls `f` on every `.rs` file under `dir`, with its text.
    fn sources(dir: &Path, f: &mut dyn FnMut(&Path, &str)) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for path in entries.filter_map(|e| e.ok().map(|e| e.path())) {
            if path.is_dir() {
                sources(&path, f);
            } else if path.extension().is_some_and(|x| x == "rs") {
                let text = std::fs::read_to_string(&path).expect("a readable source file");
                f(&path, &text);
            }
        }
    }
}
