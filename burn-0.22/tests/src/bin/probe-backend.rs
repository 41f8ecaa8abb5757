//! `probe-backend flex|wgpu`: exits 0 when the backend runs here; otherwise prints why
//! (and how to fix it) and exits 1. `cargo xtask test-backends` asks it before each pass of
//! the 0.2 line, as the 0.1 line's probe of the same name does for that line.

use burn_sparse_adam_tests::TestBackend;

fn main() {
    let name = std::env::args().nth(1).unwrap_or_default();
    let result = TestBackend::parse(&name).and_then(TestBackend::probe);
    if let Err(why) = result {
        println!("{why}");
        std::process::exit(1);
    }
}
