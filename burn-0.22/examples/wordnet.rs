//! DeepWalk on the WordNet 3.0 noun hierarchy, trained with SparseAdam (Burn 0.22).
//!
//! ```sh
//! cargo run --release --manifest-path burn-0.22/Cargo.toml --example wordnet   # flex, 3 epochs
//! cargo run --release --manifest-path burn-0.22/Cargo.toml --example wordnet -- --backend wgpu
//! cargo run --release --manifest-path burn-0.22/Cargo.toml --example wordnet -- --help
//! ```
//!
//! The pipeline is the shared `wordnet-app` crate (the 0.1 line's example runs the same)
//! with this line's Burn code from the `burn-sparse-adam-examples-022` library.

use std::process::ExitCode;

use burn_sparse_adam_examples_022::Burn022;

fn main() -> ExitCode {
    wordnet_app::app::main::<Burn022>()
}
