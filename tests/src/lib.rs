//! Shared pieces of the integration tests in `tests/suite`: the conformance tolerance, small
//! models, and a plain reference implementation of SparseAdam to compare against.
//!
//! Every test body is generic over `B: AutodiffBackend` and runs on the backend that
//! `BURN_SPARSE_ADAM_BACKEND` selects (`cargo xtask test-backends` runs both), through
//! [`burn_sparse_adam::on_test_backend!`].

pub use burn_sparse_adam::on_test_backend;
pub use sparse_adam_conformance::{ATOL, RTOL};

/// Asserts `|actual − expected| ≤ ATOL + RTOL·|expected|` element-wise, the conformance
/// tolerance, naming the first offending position.
#[track_caller]
pub fn assert_close(actual: &[f32], expected: &[f32], what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: lengths differ");
    for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        let bound = ATOL + RTOL * (e as f64).abs();
        assert!(
            ((a as f64) - (e as f64)).abs() <= bound,
            "{what}[{i}]: {a} vs {e} (tolerance {bound:e})"
        );
    }
}
