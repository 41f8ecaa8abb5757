//! Every fixture recorded from `torch.optim.SparseAdam` replays within tolerance.

use burn::tensor::backend::AutodiffBackend;
use burn_sparse_adam_tests::on_test_backend;
use sparse_adam_conformance::{default_fixture_dir, replay, Fixture};

fn replay_fixture<B: AutodiffBackend>(name: &str, device: &B::Device) {
    let path = default_fixture_dir().join(format!("{name}.json"));
    let fixture = Fixture::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let report = replay::<B>(&fixture, device).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert!(report.passed(), "{name}: {report}");
}

macro_rules! fixtures {
    ($($name:ident),* $(,)?) => {
        /// Every fixture with a test of its own.
        const LISTED: &[&str] = &[$(stringify!($name)),*];
        $(
        #[test]
        fn $name() {
            fn case<B: AutodiffBackend>(device: &B::Device) {
                replay_fixture::<B>(stringify!($name), device);
            }
            on_test_backend!(case);
        }
    )*};
}

fixtures!(
    cancelling_duplicates,
    custom_hyper,
    dense_cancelling,
    dense_gradient,
    duplicate_indices,
    lazy_rows,
    lr_schedule,
    maximize,
    more_big_scale,
    more_dense_padding,
    more_dense_three,
    more_empty_dense,
    more_empty_lookup,
    more_no_lookup_step,
    more_pad_lookup_empty,
    more_three_tables,
    padding_idx,
    single_step,
    two_tables,
    zipf_long,
);

/// Tests that run on the host only: `cargo xtask test-backends` runs them in its ndarray
/// pass alone.
mod host {
    use super::*;

    /// No fixture in the directory is left out of the list above.
    #[test]
    fn every_fixture_is_listed() {
        let mut listed = LISTED.to_vec();
        listed.sort_unstable();
        let files = sparse_adam_conformance::fixture_files(&default_fixture_dir()).unwrap();
        let mut names: Vec<String> = files
            .iter()
            .map(|f| f.file_stem().unwrap().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, listed);
    }
}
