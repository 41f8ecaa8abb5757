//! `cargo xtask bench --line 0.2`: issue 4's benchmark on the 0.2 line (Burn 0.22; see
//! BENCHMARKS.md at the repository root).
//!
//! The driver, the JSON lines, PyTorch and the report are the Burn-free
//! `sparse-adam-bench-core`, shared with the 0.1 line's bench (`crates/bench`); this binary
//! supplies the 0.2 line's backends (its test suite's, flex and wgpu) and the measurement.
//!
//! The workload is bench_torch.py's: a `[rows, dim]` embedding table, `batch` Zipf-distributed
//! lookups a step, loss `sum(lookup * upstream)` with `upstream` drawn once per run, backward,
//! optimizer step (learning rate 1e-3). The index tensor is built before the step's timer
//! starts, as the script samples before `t0`; the timer of the optimizer step starts after the
//! gradients are collected and the device synchronized, as the script's `t1` follows
//! `loss.backward()`. Every optimizer is Burn 0.22's `ModuleOptimizer`: SparseAdam's
//! (`SparseAdamConfig::init`, what burn-train's `Learner` takes) or Adam's.

use std::process::ExitCode;
use std::time::Instant;

use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig};
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Distribution, Gradients, Int, Tensor, TensorData};
use burn_sparse_adam::{
    MomentDtype, SparseAdamConfig, SparseEmbedding, SparseEmbeddingConfig, collect_grads,
};
use burn_sparse_adam_tests::TestBackend;
use sparse_adam_bench_core::driver::{self, Line};
use sparse_adam_bench_core::record::Record;
use sparse_adam_bench_core::workload::{
    BACKEND_SEED, Impl, LR, Marks, RunInfo, SAMPLER_SEED, Timings, ZipfSampler, pool_threads,
    proc_status_kib, unique_count,
};

/// The 0.2 line's workload: on one of its test suite's backends.
type Workload = sparse_adam_bench_core::workload::Workload<TestBackend>;

/// The 0.2 line: burn-sparse-adam 0.2 on Burn 0.22, on flex or wgpu.
struct Line02;

impl Line for Line02 {
    type Backend = TestBackend;
    const PROGRAM: &'static str = "sparse-adam-bench-022";
    const TITLE: &'static str = "burn-sparse-adam 0.2 (Burn 0.22)";
    const XTASK_ARGS: &'static str = " --line 0.2";
    const CARGO_ARGS: &'static str =
        "--manifest-path burn-0.22/Cargo.toml -p sparse-adam-bench-022";
    const CPU: TestBackend = TestBackend::Flex;

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
        match backend {
            TestBackend::Flex => {
                "fused lookup, row sum and row update (burn-sparse-adam feature `flex`)"
            }
            TestBackend::Wgpu => {
                "row update as one CubeCL kernel (burn-sparse-adam feature `wgpu`, under \
                 burn-fusion); sparse-device: lookups sorted, summed and applied on the device"
            }
        }
    }
    fn run_single(imp: Impl, work: &Workload) -> Record {
        run_single(imp, work)
    }
    /// Compact moments where the backend holds their type (wgpu has no bf16; f16 needs
    /// the adapter's shader-f16).
    fn supports(imp: Impl, backend: TestBackend) -> bool {
        let Some(moments) = compact_moments(imp) else {
            return true;
        };
        let dtype = burn_sparse_adam::state::burn_dtype(moments);
        match backend {
            TestBackend::Flex => true,
            // Without an adapter this panics; the probe then says why.
            TestBackend::Wgpu => {
                std::panic::catch_unwind(|| TestBackend::Wgpu.inner_device().supports_dtype(dtype))
                    .unwrap_or(false)
            }
        }
    }
}

fn main() -> ExitCode {
    driver::main::<Line02>()
}

/// The two kinds of embedding table, behind one interface.
trait Table: Module + 'static {
    fn lookup(&self, indices: Tensor<2, Int>) -> Tensor<3>;
    fn gradients(&self, grads: Gradients) -> GradientsParams;
}

impl Table for SparseEmbedding {
    fn lookup(&self, indices: Tensor<2, Int>) -> Tensor<3> {
        self.forward(indices)
    }
    fn gradients(&self, grads: Gradients) -> GradientsParams {
        collect_grads(grads, self)
    }
}

impl Table for Embedding {
    fn lookup(&self, indices: Tensor<2, Int>) -> Tensor<3> {
        self.forward(indices)
    }
    fn gradients(&self, grads: Gradients) -> GradientsParams {
        GradientsParams::from_grads(grads, self)
    }
}

fn sync(device: &Device) {
    device.sync().expect("the device synchronizes");
}

/// What a training step needs besides the model.
struct Context<'a> {
    upstream: &'a Tensor<3>,
    device: &'a Device,
    phases: bool,
}

/// One training step. Never inlined, nor are its two callers, so that a profiler can tell
/// the timed steps from the warm-up ones (`--toggle-collect='*timed_step*'`, see
/// BENCHMARKS.md).
#[inline(never)]
fn step<M: Table>(
    model: M,
    optim: &mut ModuleOptimizer,
    indices: Tensor<2, Int>,
    cx: &Context<'_>,
) -> (M, Tensor<1>, Marks) {
    let mut marks: Marks = [None; 6];
    let mark = |marks: &mut Marks, i: usize, always: bool| {
        if always || cx.phases {
            sync(cx.device);
            marks[i] = Some(Instant::now());
        }
    };
    marks[0] = Some(Instant::now());
    let output = model.lookup(indices);
    mark(&mut marks, 1, false);
    let loss = (output * cx.upstream.clone()).sum();
    mark(&mut marks, 2, false);
    let grads = loss.backward();
    mark(&mut marks, 3, false);
    let grads = model.gradients(grads);
    // Keep only the loss's value: nothing of the graph lives through the optimizer step.
    let loss = loss.inner();
    mark(&mut marks, 4, true);
    let model = optim.step(LR, model, grads);
    mark(&mut marks, 5, true);
    (model, loss, marks)
}

#[inline(never)]
fn timed_step<M: Table>(
    model: M,
    optim: &mut ModuleOptimizer,
    indices: Tensor<2, Int>,
    cx: &Context<'_>,
) -> (M, Tensor<1>, Marks) {
    // Distinct bodies: identical functions would be merged into one symbol by LLVM.
    std::hint::black_box(1u8);
    step(model, optim, indices, cx)
}

#[inline(never)]
fn warmup_step<M: Table>(
    model: M,
    optim: &mut ModuleOptimizer,
    indices: Tensor<2, Int>,
    cx: &Context<'_>,
) -> (M, Tensor<1>, Marks) {
    std::hint::black_box(2u8);
    step(model, optim, indices, cx)
}

fn train<M: Table>(
    mut model: M,
    mut optim: ModuleOptimizer,
    work: &Workload,
    cx: &Context<'_>,
) -> Timings {
    let mut sampler = ZipfSampler::new(work.rows, SAMPLER_SEED);
    let mut t = Timings::default();
    for step in 0..work.warmup + work.steps {
        let host = sampler.sample(work.batch);
        let unique = unique_count(&host);
        let indices =
            Tensor::<2, Int>::from_data(TensorData::new(host, [1, work.batch]), cx.device);
        sync(cx.device);

        let timed = step >= work.warmup;
        let (next, loss, marks) = if timed {
            timed_step(model, &mut optim, indices, cx)
        } else {
            warmup_step(model, &mut optim, indices, cx)
        };
        model = next;

        // Outside the timers: the loss of this step, a sanity check that every path trains.
        t.final_loss = f64::from(loss.into_scalar::<f32>());
        if timed {
            t.push(&marks, unique);
        }
    }
    t
}

/// The moments' type of a compact-moment implementation.
fn compact_moments(imp: Impl) -> Option<MomentDtype> {
    match imp {
        Impl::SparseBf16 => Some(MomentDtype::Bf16),
        Impl::SparseF16 => Some(MomentDtype::F16),
        _ => None,
    }
}

/// Runs one measurement in this process.
fn run_single(imp: Impl, work: &Workload) -> Record {
    let device = work.backend.inner_device().autodiff();
    device.seed(BACKEND_SEED);
    let upstream = Tensor::<3>::random(
        [1, work.batch, work.dim],
        Distribution::Normal(0.0, 1.0),
        &device,
    );
    // Start the backend (and its runtime, on wgpu) before the baseline is read.
    let _ = upstream.clone().sum().into_scalar::<f32>();
    let baseline_kib = proc_status_kib("VmRSS");

    let cx = Context {
        upstream: &upstream,
        device: &device,
        phases: work.phases,
    };
    let t = match imp {
        Impl::Sparse => train(
            SparseEmbeddingConfig::new(work.rows, work.dim).init(&device),
            SparseAdamConfig::new().init(),
            work,
            &cx,
        ),
        Impl::Dense => train(
            EmbeddingConfig::new(work.rows, work.dim).init(&device),
            SparseAdamConfig::new().init(),
            work,
            &cx,
        ),
        Impl::Adam => train(
            EmbeddingConfig::new(work.rows, work.dim).init(&device),
            AdamConfig::new().with_epsilon(1e-8).init(),
            work,
            &cx,
        ),
        Impl::SparseDevice => train(
            SparseEmbeddingConfig::new(work.rows, work.dim)
                .with_check_indices(false)
                .init(&device),
            SparseAdamConfig::new().init(),
            work,
            &cx,
        ),
        Impl::SparseBf16 | Impl::SparseF16 => {
            let moments = compact_moments(imp).expect("a compact-moment impl");
            train(
                SparseEmbeddingConfig::new(work.rows, work.dim).init(&device),
                SparseAdamConfig::new()
                    .with_moment_dtype(Some(moments))
                    .init(),
                work,
                &cx,
            )
        }
    };
    let info = RunInfo {
        backend: work.backend.name(),
        baseline_kib,
        peak_kib: proc_status_kib("VmHWM"),
        functional_only: work.backend == TestBackend::Wgpu && !work.gpu,
        // burn-sparse-adam's default feature `flex`: its fused kernels, on flex only.
        fused_cpu: work.backend == TestBackend::Flex,
        line: Some("0.2"),
        threads: Some(pool_threads()),
        // burn's `flex` feature takes burn-flex's defaults; the core's kernels split rows
        // across the same rayon pool (sparse-adam-core's default feature `parallel`).
        features: Some("flex: rayon, simd; sparse-adam-core: parallel"),
    };
    let mut record = work.record(imp, &t, &info);
    // After the peak was read: the floor's tables are its own.
    if imp == Impl::Sparse && work.backend == TestBackend::Flex {
        record.floor = Some(work.floor());
    }
    record
}
