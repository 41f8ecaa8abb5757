//! The 0.2 line's conformance runner: replays every fixture of a directory (by default the
//! repository's one copy, `crates/conformance/fixtures/`) on the backend that
//! `BURN_SPARSE_ADAM_BACKEND` selects (`flex`, the default, or `wgpu`) and prints one line per
//! fixture and path, then a summary; exits with status 1 when any fixture fails.
//!
//! ```text
//! [BURN_SPARSE_ADAM_BACKEND=flex|wgpu] cargo run -p burn-sparse-adam-tests --bin conformance --
//!     [--fixtures DIR] [--optimizer sparse-adam|module|both] [--kernels fused|composed|both]
//! ```
//!
//! `--kernels both` (the default) replays each fixture through the fused paths (flex's
//! loops; on wgpu the CubeCL row update under burn-fusion) and again through the composed
//! ones.

use std::path::PathBuf;
use std::process::ExitCode;

use burn_sparse_adam_tests::{
    Fixture, Runner, TestBackend, device, fixture_dir, fixture_files, replay,
};

fn usage() -> ExitCode {
    eprintln!(
        "usage: [BURN_SPARSE_ADAM_BACKEND=flex|wgpu] conformance [--fixtures DIR] [--optimizer sparse-adam|module|both] [--kernels fused|composed|both]\n\
         (BURN_SPARSE_ADAM_BACKEND picks the backend, flex by default; --kernels both is the default)"
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let backend = match std::env::var(TestBackend::ENV) {
        Ok(name) if !name.is_empty() => match TestBackend::parse(&name) {
            Ok(backend) => backend,
            Err(err) => {
                eprintln!("{}: {err}", TestBackend::ENV);
                return usage();
            }
        },
        _ => TestBackend::Flex,
    };
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
            ("--kernels", "both") => kernels = vec![true, false],
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
    let name = backend.name();
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
                    Ok((fixture, report)) if report.passed() => {
                        passed += 1;
                        println!("pass  {name} {path:8} {runner:?} {fixture}: {report}");
                    }
                    Ok((fixture, report)) => {
                        failed += 1;
                        println!("FAIL  {name} {path:8} {runner:?} {fixture}: {report}");
                    }
                    Err(err) => {
                        failed += 1;
                        println!("FAIL  {name} {path:8} {runner:?} {}: {err}", file.display());
                    }
                }
            }
        }
    }
    println!("burn 0.22 line, {name}: {passed} passed, {failed} failed");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
