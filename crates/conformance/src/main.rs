//! `conformance [--fixtures DIR] [--backend ndarray|wgpu]`: replays every fixture of DIR
//! (default: the repository's copy) on every available backend (or the one named), prints
//! one line per fixture and backend, per backend the distribution of the distances to
//! PyTorch's values in units in the last place, and a summary, and exits non-zero on any
//! failure.

use std::path::PathBuf;
use std::process::ExitCode;

use burn_sparse_adam::testing::{NdArrayAutodiff, TestBackend, WgpuAutodiff};
use sparse_adam_conformance::{
    default_fixture_dir, fixture_files, replay, Fixture, FixtureError, Report, Ulps,
};

struct Args {
    fixtures: PathBuf,
    backends: Vec<TestBackend>,
    explicit_backend: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        fixtures: default_fixture_dir(),
        backends: TestBackend::ALL.to_vec(),
        explicit_backend: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--fixtures" => args.fixtures = it.next().ok_or("--fixtures needs a directory")?.into(),
            "--backend" => {
                let name = it.next().ok_or("--backend needs ndarray or wgpu")?;
                args.backends = vec![TestBackend::parse(&name)?];
                args.explicit_backend = true;
            }
            "-h" | "--help" => {
                println!("usage: conformance [--fixtures DIR] [--backend ndarray|wgpu]");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?} (usage: conformance [--fixtures DIR] [--backend ndarray|wgpu])")),
        }
    }
    Ok(args)
}

fn run(fixture: &Fixture, backend: TestBackend) -> Result<Report, FixtureError> {
    match backend {
        TestBackend::NdArray => replay::<NdArrayAutodiff>(fixture, &Default::default()),
        TestBackend::Wgpu => replay::<WgpuAutodiff>(fixture, &Default::default()),
    }
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(err) => {
            eprintln!("conformance: {err}");
            return ExitCode::from(2);
        }
    };
    let files = match fixture_files(&args.fixtures) {
        Ok(files) if files.is_empty() => {
            eprintln!(
                "conformance: no *.json fixture in {}",
                args.fixtures.display()
            );
            return ExitCode::from(2);
        }
        Ok(files) => files,
        Err(err) => {
            eprintln!("conformance: {err}");
            return ExitCode::from(2);
        }
    };

    let (mut passed, mut failed, mut skipped) = (0usize, 0usize, 0usize);
    for backend in &args.backends {
        if let Err(why) = backend.probe() {
            if args.explicit_backend {
                println!(
                    "FAIL  {:<24} {:<8} backend unavailable: {why}",
                    "*",
                    backend.name()
                );
                failed += files.len();
            } else {
                println!("SKIP  {:<24} {:<8} {why}", "*", backend.name());
                skipped += files.len();
            }
            continue;
        }
        let (mut ulps, mut replayed) = (Ulps::default(), 0);
        for file in &files {
            let name = file
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let outcome = Fixture::load(file).and_then(|fixture| run(&fixture, *backend));
            if let Ok(report) = &outcome {
                ulps.merge(&report.ulps, &format!("{name}: "));
                replayed += 1;
            }
            match outcome {
                Ok(report) if report.passed() => {
                    passed += 1;
                    println!("PASS  {name:<24} {:<8} {report}", backend.name());
                }
                Ok(report) => {
                    failed += 1;
                    println!("FAIL  {name:<24} {:<8} {report}", backend.name());
                }
                Err(err) => {
                    failed += 1;
                    println!("FAIL  {name:<24} {:<8} {err}", backend.name());
                }
            }
        }
        if replayed > 0 {
            println!(
                "ULPS  {:<24} {:<8} distances to PyTorch's values in units in the last place, {replayed} fixtures:",
                "*",
                backend.name()
            );
            for line in ulps.to_string().lines() {
                println!("      {line}");
            }
        }
    }
    println!(
        "conformance: {passed} passed, {failed} failed, {skipped} skipped ({} fixtures from {})",
        files.len(),
        args.fixtures.display()
    );
    if failed == 0 && passed > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
