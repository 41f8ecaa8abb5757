//! The 0.2 line's conformance runner: replays every fixture of a directory (by default the
//! repository's one copy, `crates/conformance/fixtures/`) on flex and prints one line per
//! fixture and path, then a summary; exits with status 1 when any fixture fails.
//!
//! ```text
//! cargo run -p burn-sparse-adam-tests --bin conformance -- [--fixtures DIR]
//!     [--optimizer sparse-adam|module|both] [--kernels fused|composed|both]
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use burn_sparse_adam_tests::{Fixture, Runner, device, fixture_dir, fixture_files, replay};

fn usage() -> ExitCode {
    eprintln!(
        "usage: conformance [--fixtures DIR] [--optimizer sparse-adam|module|both] [--kernels fused|composed|both]"
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let mut dir: PathBuf = fixture_dir();
    let mut runners = vec![Runner::SparseAdamOptimizer, Runner::ModuleOptimizer];
    let mut kernels = vec![true, false];
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let Some(value) = args.next() else {
            return usage();
        };
        match (arg.as_str(), value.as_str()) {
            ("--fixtures", dir_arg) => dir = PathBuf::from(dir_arg),
            ("--optimizer", "sparse-adam") => runners = vec![Runner::SparseAdamOptimizer],
            ("--optimizer", "module") => runners = vec![Runner::ModuleOptimizer],
            ("--optimizer", "both") => {}
            ("--kernels", "fused") => kernels = vec![true],
            ("--kernels", "composed") => kernels = vec![false],
            ("--kernels", "both") => {}
            _ => return usage(),
        }
    }
    let files = match fixture_files(&dir) {
        Ok(files) if !files.is_empty() => files,
        Ok(_) => {
            eprintln!("no fixtures (*.json) in {}", dir.display());
            return ExitCode::FAILURE;
        }
        Err(err) => {
            eprintln!("{err}");
            return ExitCode::FAILURE;
        }
    };
    let device = device();
    let (mut passed, mut failed) = (0, 0);
    for &fused in &kernels {
        burn_sparse_adam::use_fused_kernels(fused);
        let path = if fused { "fused" } else { "composed" };
        for &runner in &runners {
            for file in &files {
                let outcome = Fixture::load(file).and_then(|f| {
                    let report = replay(&f, runner, &device)?;
                    Ok((f.name, report))
                });
                match outcome {
                    Ok((name, report)) if report.passed() => {
                        passed += 1;
                        println!("pass  flex {path:8} {runner:?} {name}: {report}");
                    }
                    Ok((name, report)) => {
                        failed += 1;
                        println!("FAIL  flex {path:8} {runner:?} {name}: {report}");
                    }
                    Err(err) => {
                        failed += 1;
                        println!("FAIL  flex {path:8} {runner:?} {}: {err}", file.display());
                    }
                }
            }
        }
    }
    println!("burn 0.22 line, flex: {passed} passed, {failed} failed");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
