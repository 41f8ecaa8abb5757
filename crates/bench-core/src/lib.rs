//! The Burn-free parts of issue 4's benchmark (see BENCHMARKS.md at the repository root),
//! shared by both Burn lines' bench binaries: `crates/bench` (the 0.1 line, Burn 0.21) and
//! `burn-0.22/bench` (the 0.2 line, Burn 0.22).
//!
//! A line's binary supplies the measurement of one (implementation, table size) in its own
//! process through [`driver::Line`]; this crate has the rest: the command line, the driver
//! that re-executes the binary once per measurement ([`driver::main`]), the JSON lines
//! ([`record`]), the PyTorch runner ([`torch`]), the report ([`report`]), issue 4's targets
//! ([`targets`]) and the workload's host-side pieces ([`workload`]: the Zipf sampler, the
//! median, the resident set). Apart from the lines' binaries, [`peers`] (`cargo xtask bench
//! --peers 1,2,3`, binary `sparse-adam-peers`) measures data-parallel peers exchanging row
//! gradients through the Burn-free core.

pub mod driver;
pub mod floor;
pub mod peers;
pub mod record;
pub mod report;
pub mod targets;
pub mod torch;
pub mod workload;
