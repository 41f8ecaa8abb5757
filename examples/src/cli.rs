//! The command line of `cargo run --release --example wordnet -- [OPTIONS]`: the shared
//! parser ([`wordnet_app::cli`]) with this line's backend names (`ndarray`, `wgpu`).

use crate::app::Burn021;
use crate::Error;

pub use wordnet_app::cli::{OptimizerName, Overrides};

/// A backend this line's example runs on.
pub type BackendName = wordnet_app::cli::BackendName<Burn021>;
/// A parsed command line.
pub type Options = wordnet_app::cli::Options<Burn021>;
/// What the command line asks for.
pub type Command = wordnet_app::cli::Command<Burn021>;

/// The help text.
pub fn usage() -> String {
    wordnet_app::cli::usage::<Burn021>()
}

/// Parses the arguments after the program name.
///
/// # Errors
///
/// [`Error::Usage`] naming the flag and the problem.
pub fn parse_args<I: IntoIterator<Item = String>>(args: I) -> Result<Command, Error> {
    wordnet_app::cli::parse_args::<Burn021, I>(args)
}
