//! Every fixture recorded from `torch.optim.SparseAdam` (the repository's one copy, shared
//! with the 0.1 line; the `weight_decay_*` ones are a float32 emulation of PyTorch's
//! operations with lazy weight decay, see their README), replayed on the selected backend (`BURN_SPARSE_ADAM_BACKEND`: flex or
//! wgpu, fused kernels on) through both whole-model optimizers of the 0.2 line,
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
fn every_fixture_passes_through_sparse_adam_optimizer() {
    replay_all(Runner::SparseAdamOptimizer);
}

#[test]
fn every_fixture_passes_through_burns_module_optimizer() {
    replay_all(Runner::ModuleOptimizer);
}

/// The runner takes fixtures it has never seen, from any directory, and names what is wrong
/// with a broken one.
#[test]
fn fixtures_from_another_directory_replay_and_broken_ones_are_named() {
    let dir = std::env::temp_dir().join(format!("bsa022-fixtures-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let original = std::fs::read_to_string(fixture_dir().join("single_step.json")).unwrap();
    let mut unseen: serde_json::Value = serde_json::from_str(&original).unwrap();
    unseen["name"] = "never_seen_before".into();
    std::fs::write(dir.join("unseen.json"), unseen.to_string()).unwrap();
    let mut broken = unseen.clone();
    broken["tables"][0]["init"] = serde_json::json!([1.0, 2.0]);
    std::fs::write(dir.join("broken.json"), broken.to_string()).unwrap();

    let files = fixture_files(&dir).unwrap();
    assert_eq!(files.len(), 2);
    let device = device();
    let unseen = Fixture::load(&dir.join("unseen.json")).unwrap();
    let report = replay(&unseen, Runner::SparseAdamOptimizer, &device).unwrap();
    assert!(report.passed(), "{report}");
    let broken = Fixture::load(&dir.join("broken.json")).unwrap();
    let err = replay(&broken, Runner::ModuleOptimizer, &device).unwrap_err();
    assert!(err.contains("table 0"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
