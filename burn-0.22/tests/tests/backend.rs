//! The backend selection: `BURN_SPARSE_ADAM_BACKEND` (`flex`, the default, or `wgpu`) picks
//! the device every other test trains on.

use burn_sparse_adam_tests::{TestBackend, device};

#[test]
fn the_tests_run_on_the_selected_backend() {
    let selected = TestBackend::selected();
    let device = format!("{:?}", device());
    println!("{}: {device}", selected.name());
    let expected = match selected {
        TestBackend::Flex => "flex",
        TestBackend::Wgpu => "wgpu",
    };
    assert!(
        device.to_lowercase().contains(expected),
        "{} selects {expected}, the tests' device is {device}",
        TestBackend::ENV
    );
    assert!(selected.probe().is_ok());
}
