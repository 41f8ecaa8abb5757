//! Every fixture again, with the fused kernels turned off: the composed paths (Burn tensor
//! operations, what other backends run) on the selected backend, through both whole-model
//! optimizers. A test binary of its own, since the switch is process-wide.

use burn_sparse_adam_tests::{Fixture, Runner, device, fixture_dir, fixture_files, replay};

fn replay_all(runner: Runner) {
    burn_sparse_adam::use_fused_kernels(false);
    let files = fixture_files(&fixture_dir()).unwrap();
    assert!(files.len() >= 20);
    let device = device();
    let mut failed = Vec::new();
    for file in &files {
        let fixture = Fixture::load(file).unwrap();
        let report = replay(&fixture, runner, &device).unwrap();
        if !report.passed() {
            failed.push(format!("{}: {report}", fixture.name));
        }
    }
    assert!(failed.is_empty(), "fixtures failed:\n{}", failed.join("\n"));
}

#[test]
fn every_fixture_passes_composed_through_sparse_adam_optimizer() {
    replay_all(Runner::SparseAdamOptimizer);
}

#[test]
fn every_fixture_passes_composed_through_burns_module_optimizer() {
    replay_all(Runner::ModuleOptimizer);
}
