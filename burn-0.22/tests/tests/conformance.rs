//! Every fixture recorded from `torch.optim.SparseAdam` (the repository's one copy, shared
//! with the 0.1 line), replayed on flex through both whole-model optimizers of the 0.2 line,
//! within `|ours − torch| ≤ 1e-5 + 1e-4·|torch|`.

use burn_sparse_adam_tests::{Fixture, Runner, device, fixture_dir, fixture_files, replay};

fn replay_all(runner: Runner) {
    let dir = fixture_dir();
    let files = fixture_files(&dir).unwrap();
    assert!(
        files.len() >= 20,
        "expected the repository's fixtures in {}, found {}",
        dir.display(),
        files.len()
    );
    let device = device();
    let mut failed = Vec::new();
    for file in &files {
        let fixture = Fixture::load(file).unwrap();
        let report = replay(&fixture, runner, &device).unwrap();
        println!(
            "{runner:?} {}: {} ({report})",
            fixture.name,
            if report.passed() { "pass" } else { "FAIL" }
        );
        if !report.passed() {
            failed.push(format!("{}: {report}", fixture.name));
        }
    }
    assert!(failed.is_empty(), "fixtures failed:\n{}", failed.join("\n"));
}

#[test]
fn every_fixture_passes_through_sparse_adam_optimizer_on_flex() {
    replay_all(Runner::SparseAdamOptimizer);
}

#[test]
fn every_fixture_passes_through_burns_module_optimizer_on_flex() {
    replay_all(Runner::ModuleOptimizer);
}
