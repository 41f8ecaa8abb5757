//! DeepWalk on the WordNet 3.0 noun hierarchy, trained with SparseAdam.
//!
//! ```sh
//! cargo run --release --example wordnet                       # ndarray, 3 epochs
//! cargo run --release --example wordnet -- --backend wgpu
//! cargo run --release --example wordnet -- --optimizer adam   # Burn's Adam, dense
//! cargo run --release --example wordnet -- --resume --epochs 5
//! cargo run --release --example wordnet -- --help
//! ```
//!
//! The pipeline is in the `burn-sparse-adam-examples` library; this is its command line.

use std::process::ExitCode;

use burn_sparse_adam_examples::app::run;
use burn_sparse_adam_examples::cli::{parse_args, Command, USAGE};
use burn_sparse_adam_examples::Error;

fn main() -> ExitCode {
    let options = match parse_args(std::env::args().skip(1)) {
        Ok(Command::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Ok(Command::Run(options)) => options,
        Err(err) => {
            eprintln!("error: {err}\n(see --help)");
            return ExitCode::from(2);
        }
    };
    match run(&options, &mut std::io::stdout()) {
        Ok(_) => ExitCode::SUCCESS,
        Err(err @ Error::Usage(_)) => {
            eprintln!("error: {err}\n(see --help)");
            ExitCode::from(2)
        }
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}
