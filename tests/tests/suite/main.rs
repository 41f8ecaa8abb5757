//! The integration suite: one test binary (one link of Burn), one module per topic.
//!
//! A test runs on the backend `BURN_SPARSE_ADAM_BACKEND` selects (`on_test_backend!`,
//! `with_test_backend!`), once per backend under `cargo xtask test-backends`. A test that
//! never touches a backend (it reads files, or checks the host reference) lives in a `host`
//! module of its topic instead: test-backends runs those once, skipping `host::` in its
//! wgpu pass.

mod clipping;
mod conformance;
mod distributed;
mod errors;
mod groups;
mod hooks;
mod learner;
mod new_user;
mod randomized;
mod robustness;
mod sparse_path;
mod state;
