//! `cargo xtask bench`: issue 4's benchmark on the 0.1 line (Burn 0.21; see BENCHMARKS.md at
//! the repository root).
//!
//! The driver, the JSON lines, PyTorch and the report are the Burn-free
//! `sparse-adam-bench-core`, shared with the 0.2 line's bench (`burn-0.22/bench`); this
//! binary supplies the 0.1 line's backends and measurement ([`measure`]).

mod measure;

use std::process::ExitCode;

use burn_sparse_adam::testing::TestBackend;
use sparse_adam_bench_core::driver::{self, Line};
use sparse_adam_bench_core::record::Record;
use sparse_adam_bench_core::workload::{Impl, Workload};

/// The 0.1 line: burn-sparse-adam 0.1 on Burn 0.21, on ndarray or wgpu.
struct Line01;

impl Line for Line01 {
    type Backend = TestBackend;
    const PROGRAM: &'static str = "sparse-adam-bench";
    const TITLE: &'static str = "burn-sparse-adam";
    const XTASK_ARGS: &'static str = "";
    const CARGO_ARGS: &'static str = "-p sparse-adam-bench";
    const CPU: TestBackend = TestBackend::NdArray;

    fn parse_backend(name: &str) -> Result<TestBackend, String> {
        TestBackend::parse(name)
    }
    fn selected_backend() -> TestBackend {
        TestBackend::selected()
    }
    fn backend_name(backend: TestBackend) -> &'static str {
        backend.name()
    }
    fn probe(backend: TestBackend) -> Result<(), String> {
        backend.probe()
    }
    fn row_update(backend: TestBackend) -> &'static str {
        // burn-sparse-adam's feature `testing` includes its kernels.
        match backend {
            TestBackend::NdArray => {
                "fused lookup, row sum and row update (burn-sparse-adam feature `ndarray`)"
            }
            TestBackend::Wgpu => {
                "fused row update, one CubeCL kernel (burn-sparse-adam feature `wgpu`); \
                 lookup and row sum composed"
            }
        }
    }
    fn run_single(imp: Impl, work: &Workload<TestBackend>) -> Record {
        measure::run_single(imp, work)
    }
    /// Compact moments (`SparseAdamConfig::moment_dtype`) and unchecked lookups
    /// (`check_indices`) are on the 0.2 line only.
    fn supports(imp: Impl, _: TestBackend) -> bool {
        !matches!(imp, Impl::SparseBf16 | Impl::SparseF16 | Impl::SparseDevice)
    }
}

fn main() -> ExitCode {
    driver::main::<Line01>()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The 0.1 line's usage text is the one it had before the driver moved to the core.
    #[test]
    fn usage_is_unchanged() {
        assert_eq!(
            driver::usage::<Line01>(),
            include_str!("../tests/usage.txt").trim_end()
        );
    }
}
