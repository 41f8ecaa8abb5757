//! Tables whose float type is `f64`: the selected backend's device is configured with `f64`
//! as its default float (Burn 0.22's `Device::configure`, once per process, hence a test
//! binary of its own), so every table, gradient and moment of the replay is `f64`. They
//! train through the composed path (the fused loops are `f32`'s) and must pass every PyTorch
//! fixture within its tolerance, through both whole-model optimizers. A backend that holds
//! no `f64` (wgpu) must refuse the configuration, and is checked so.

use burn::tensor::{DType, FloatDType, Tensor};
use burn_sparse_adam_tests::{Fixture, Runner, TestBackend, fixture_dir, fixture_files, replay};

#[test]
fn every_fixture_passes_with_f64_tables() {
    let mut inner = TestBackend::selected().inner_device();
    if !inner.supports_dtype(DType::F64) {
        assert!(inner.configure(FloatDType::F64).is_err());
        println!(
            "{:?} holds no f64: refused, as it should be",
            TestBackend::selected()
        );
        return;
    }
    inner
        .configure(FloatDType::F64)
        .expect("a fresh device takes f64");
    let device = inner.autodiff();
    assert_eq!(Tensor::<1>::zeros([2], &device).dtype(), DType::F64);
    let files = fixture_files(&fixture_dir()).unwrap();
    assert!(files.len() >= 20);
    let mut failed = Vec::new();
    for runner in [Runner::SparseAdamOptimizer, Runner::ModuleOptimizer] {
        for file in &files {
            let fixture = Fixture::load(file).unwrap();
            let report = replay(&fixture, runner, &device).unwrap();
            println!("f64 {runner:?} {}: {report}", fixture.name);
            if !report.passed() {
                failed.push(format!("{runner:?} {}: {report}", fixture.name));
            }
        }
    }
    assert!(
        failed.is_empty(),
        "fixtures failed with f64 tables:\n{}",
        failed.join("\n")
    );
}
