//! Gradient clipping (`SparseAdamConfig::grad_clipping`, Burn's `GradientClipping`): a
//! table's row gradient is clipped as the sparse gradient it stands for, so the row path
//! equals the dense path, whose table-sized gradient Burn clips.

use burn::optim::grad_clipping::GradientClippingConfig;
use burn::optim::Optimizer;
use burn::tensor::backend::AutodiffBackend;
use burn_sparse_adam::{Error, SparseAdamConfig, SparseAdamOptimizer};
use burn_sparse_adam_tests::{
    assert_params_close, on_test_backend, param_values, Batch, DenseTower, Rng, SparseTower,
    TowerSpec,
};

const N: usize = 12;
const D: usize = 4;

/// A model's parameters after each step.
type Steps = Vec<Vec<Vec<f32>>>;

/// Three steps of the sparse and the dense tower under `config`, on the same batches
/// (duplicate lookups included): their parameters after each step.
fn train<B: AutodiffBackend>(config: &SparseAdamConfig, device: &B::Device) -> (Steps, Steps) {
    let spec = TowerSpec::random(N, D, 3, 31);
    let mut rng = Rng::new(32);
    let mut sparse = spec.sparse::<B>(device);
    let mut sparse_optim: SparseAdamOptimizer<SparseTower<B>, B> = config.init();
    let mut dense = spec.dense::<B>(device);
    let mut dense_optim: SparseAdamOptimizer<DenseTower<B>, B> = config.init();
    let (mut sparse_steps, mut dense_steps) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let batch = Batch::random(&mut rng, N - 3, 3, 4, 3);
        sparse = sparse_optim.step(0.05, sparse.clone(), batch.grads(&sparse, device));
        dense = dense_optim.step(0.05, dense.clone(), batch.grads(&dense, device));
        sparse_steps.push(param_values(&sparse));
        dense_steps.push(param_values(&dense));
    }
    (sparse_steps, dense_steps)
}

#[test]
fn row_gradients_are_clipped_as_the_dense_gradient_they_stand_for() {
    fn case<B: AutodiffBackend>(device: &B::Device) {
        let (unclipped, _) = train::<B>(&SparseAdamConfig::new(), device);
        for clipping in [
            GradientClippingConfig::Value(0.3),
            GradientClippingConfig::Norm(0.5),
        ] {
            let what = format!("{clipping:?}");
            let config = SparseAdamConfig::new().with_grad_clipping(Some(clipping));
            let (sparse, dense) = train::<B>(&config, device);
            for (step, (s, d)) in sparse.iter().zip(&dense).enumerate() {
                assert_params_close(s, d, &format!("{what}, step {}: rows vs dense", step + 1));
            }
            // The clipping mattered, for the table (index 2) and the head.
            let last = sparse.len() - 1;
            for (i, param) in [(0, "head weight"), (2, "table")] {
                let moved = sparse[last][i]
                    .iter()
                    .zip(&unclipped[last][i])
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0f32, f32::max);
                assert!(
                    moved > 1e-4,
                    "{what}: clipping changed nothing of the {param}"
                );
            }
        }
    }
    on_test_backend!(case);
}

mod host {
    use super::*;

    #[test]
    fn a_clipping_threshold_must_be_finite_and_positive() {
        for (clipping, message) in [
            (
                GradientClippingConfig::Value(0.0),
                "invalid gradient clipping threshold: GradientClippingConfig::Value(0) (SparseAdamConfig.grad_clipping's threshold must be finite and > 0)",
            ),
            (
                GradientClippingConfig::Norm(f32::INFINITY),
                "invalid gradient clipping threshold: GradientClippingConfig::Norm(inf) (SparseAdamConfig.grad_clipping's threshold must be finite and > 0)",
            ),
        ] {
            let config = SparseAdamConfig::new().with_grad_clipping(Some(clipping));
            let err = config.validate().unwrap_err();
            assert!(matches!(err, Error::InvalidGradClipping { .. }), "{err:?}");
            assert_eq!(err.to_string(), message);
        }
        let fine =
            SparseAdamConfig::new().with_grad_clipping(Some(GradientClippingConfig::Norm(1.0)));
        assert!(fine.validate().is_ok());
        assert_ne!(fine, SparseAdamConfig::new());
        assert_eq!(fine.clone(), fine);
    }
}
