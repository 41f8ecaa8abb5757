//! One measurement: one implementation, one table size, one backend, in this process.
//!
//! The workload is bench_torch.py's: a `[rows, dim]` embedding table, `batch` Zipf-distributed
//! lookups a step, loss `sum(lookup * upstream)` with `upstream` drawn once per run, backward,
//! optimizer step (learning rate 1e-3). The index tensor is built before the step's timer
//! starts, as the script samples before `t0`; the timer of the optimizer step starts after the
//! gradients are collected and the backend synchronized, as the script's `t1` follows
//! `loss.backward()`.

use std::time::Instant;

use burn::module::AutodiffModule;
use burn::nn::{Embedding, EmbeddingConfig};
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Distribution, ElementConversion, Int, Tensor, TensorData};
use burn_sparse_adam::testing::{NdArrayAutodiff, TestBackend, WgpuAutodiff};
use burn_sparse_adam::{collect_grads, SparseAdamConfig, SparseEmbedding, SparseEmbeddingConfig};
use sparse_adam_bench_core::record::Record;
use sparse_adam_bench_core::workload::{
    pool_threads, proc_status_kib, unique_count, Impl, Marks, RunInfo, Timings, ZipfSampler,
    BACKEND_SEED, LR, SAMPLER_SEED,
};

/// The 0.1 line's workload: on one of its test suite's backends.
type Workload = sparse_adam_bench_core::workload::Workload<TestBackend>;

/// The two kinds of embedding table, behind one interface.
trait Table<B: AutodiffBackend>: AutodiffModule<B> + 'static {
    fn lookup(&self, indices: Tensor<B, 2, Int>) -> Tensor<B, 3>;
    fn gradients(&self, grads: B::Gradients) -> GradientsParams;
}

impl<B: AutodiffBackend> Table<B> for SparseEmbedding<B> {
    fn lookup(&self, indices: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        self.forward(indices)
    }
    fn gradients(&self, grads: B::Gradients) -> GradientsParams {
        collect_grads(grads, self)
    }
}

impl<B: AutodiffBackend> Table<B> for Embedding<B> {
    fn lookup(&self, indices: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        self.forward(indices)
    }
    fn gradients(&self, grads: B::Gradients) -> GradientsParams {
        GradientsParams::from_grads(grads, self)
    }
}

fn sync<B: Backend>(device: &B::Device) {
    B::sync(device).expect("the backend synchronizes");
}

/// What a training step needs besides the model.
struct Context<'a, B: AutodiffBackend> {
    upstream: &'a Tensor<B, 3>,
    device: &'a B::Device,
    phases: bool,
}

/// One training step. Never inlined, nor are its two callers, so that a profiler can tell
/// the timed steps from the warm-up ones (`valgrind --tool=callgrind
/// --toggle-collect='*timed_step*'`, see BENCHMARKS.md).
#[inline(never)]
fn step<B: AutodiffBackend, M: Table<B>, O: Optimizer<M, B>>(
    model: M,
    optim: &mut O,
    indices: Tensor<B, 2, Int>,
    cx: &Context<'_, B>,
) -> (M, Tensor<B::InnerBackend, 1>, Marks) {
    let mut marks: Marks = [None; 6];
    let mark = |marks: &mut Marks, i: usize, always: bool| {
        if always || cx.phases {
            sync::<B>(cx.device);
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
fn timed_step<B: AutodiffBackend, M: Table<B>, O: Optimizer<M, B>>(
    model: M,
    optim: &mut O,
    indices: Tensor<B, 2, Int>,
    cx: &Context<'_, B>,
) -> (M, Tensor<B::InnerBackend, 1>, Marks) {
    // Distinct bodies: identical functions would be merged into one symbol by LLVM.
    std::hint::black_box(1u8);
    step(model, optim, indices, cx)
}

#[inline(never)]
fn warmup_step<B: AutodiffBackend, M: Table<B>, O: Optimizer<M, B>>(
    model: M,
    optim: &mut O,
    indices: Tensor<B, 2, Int>,
    cx: &Context<'_, B>,
) -> (M, Tensor<B::InnerBackend, 1>, Marks) {
    std::hint::black_box(2u8);
    step(model, optim, indices, cx)
}

fn train<B: AutodiffBackend, M: Table<B>, O: Optimizer<M, B>>(
    mut model: M,
    mut optim: O,
    work: &Workload,
    cx: &Context<'_, B>,
) -> Timings {
    let mut sampler = ZipfSampler::new(work.rows, SAMPLER_SEED);
    let mut t = Timings::default();
    for step in 0..work.warmup + work.steps {
        let host = sampler.sample(work.batch);
        let unique = unique_count(&host);
        let indices =
            Tensor::<B, 2, Int>::from_data(TensorData::new(host, [1, work.batch]), cx.device);
        sync::<B>(cx.device);

        let timed = step >= work.warmup;
        let (next, loss, marks) = if timed {
            timed_step(model, &mut optim, indices, cx)
        } else {
            warmup_step(model, &mut optim, indices, cx)
        };
        model = next;

        // Outside the timers: the loss of this step, a sanity check that every path trains.
        t.final_loss = loss.into_scalar().elem::<f64>();
        if timed {
            t.push(&marks, unique);
        }
    }
    t
}

fn run_on<B: AutodiffBackend>(imp: Impl, work: &Workload, device: &B::Device) -> Record {
    B::seed(device, BACKEND_SEED);
    let upstream = Tensor::<B, 3>::random(
        [1, work.batch, work.dim],
        Distribution::Normal(0.0, 1.0),
        device,
    );
    // Start the backend (and its runtime, on wgpu) before the baseline is read.
    let _ = upstream.clone().sum().into_scalar();
    let baseline_kib = proc_status_kib("VmRSS");

    let cx = Context {
        upstream: &upstream,
        device,
        phases: work.phases,
    };
    let t = match imp {
        Impl::Sparse => train(
            SparseEmbeddingConfig::new(work.rows, work.dim).init::<B>(device),
            SparseAdamConfig::new().init(),
            work,
            &cx,
        ),
        Impl::Dense => train(
            EmbeddingConfig::new(work.rows, work.dim).init::<B>(device),
            SparseAdamConfig::new().init(),
            work,
            &cx,
        ),
        Impl::Adam => train(
            EmbeddingConfig::new(work.rows, work.dim).init::<B>(device),
            AdamConfig::new().with_epsilon(1e-8).init(),
            work,
            &cx,
        ),
        // `Line01::supports` refuses them before a measurement starts.
        Impl::SparseBf16 | Impl::SparseF16 | Impl::SparseDevice => {
            unreachable!("compact moments and unchecked lookups are not on the 0.1 line")
        }
    };
    let info = RunInfo {
        backend: work.backend.name(),
        baseline_kib,
        peak_kib: proc_status_kib("VmHWM"),
        functional_only: work.backend == TestBackend::Wgpu && !work.gpu,
        // burn-sparse-adam's feature `testing` includes its feature `ndarray`.
        fused_cpu: cfg!(feature = "fused") && work.backend == TestBackend::NdArray,
        line: None,
        threads: Some(pool_threads()),
        // burn-ndarray's default features as a user's build has them (`ndarray-defaults`,
        // what `cargo xtask bench` runs) or off, as the library's tests build it; the core's
        // kernels split rows across rayon's pool (sparse-adam-core's feature `parallel`).
        features: Some(if cfg!(feature = "ndarray-defaults") {
            "ndarray: simd, multi-threads (its defaults); sparse-adam-core: parallel"
        } else {
            "ndarray: no simd, no multi-threads; sparse-adam-core: parallel"
        }),
    };
    let mut record = work.record(imp, &t, &info);
    // After the peak was read: the floor's tables are its own.
    if imp == Impl::Sparse && work.backend == TestBackend::NdArray {
        record.floor = Some(work.floor());
    }
    record
}

/// Runs one measurement in this process.
pub fn run_single(imp: Impl, work: &Workload) -> Record {
    match work.backend {
        TestBackend::NdArray => run_on::<NdArrayAutodiff>(imp, work, &Default::default()),
        TestBackend::Wgpu => run_on::<WgpuAutodiff>(imp, work, &Default::default()),
    }
}
