//! DeepWalk on the WordNet 3.0 noun hierarchy, trained with SparseAdam (Burn 0.21).
//!
//! ```sh
//! cargo run --release --example wordnet                       # ndarray, 3 epochs
//! cargo run --release --example wordnet -- --backend wgpu
//! cargo run --release --example wordnet -- --optimizer adam   # Burn's Adam, dense
//! cargo run --release --example wordnet -- --resume --epochs 5
//! cargo run --release --example wordnet -- --help
//! ```
//!
//! The pipeline is the shared `wordnet-app` crate with this line's Burn code from the
//! `burn-sparse-adam-examples` library; this is its command line.

use std::process::ExitCode;

use burn_sparse_adam_examples::app::Burn021;

fn main() -> ExitCode {
    wordnet_app::app::main::<Burn021>()
}
