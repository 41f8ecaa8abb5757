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

use crate::record::Record;

/// The learning rate of every optimizer, as in bench_torch.py.
pub const LR: f64 = 1e-3;
/// The sampler's seed (bench_torch.py seeds its generator with 1).
const SAMPLER_SEED: u64 = 1;
/// The backend's seed: the table's and the upstream gradient's values.
const BACKEND_SEED: u64 = 0;

/// What is measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Impl {
    /// `SparseEmbedding` + SparseAdam: row gradients, the row path.
    Sparse,
    /// Burn's stock `Embedding` + SparseAdam: a table-sized gradient, the dense (masked) path.
    Dense,
    /// Burn's stock `Embedding` + Burn's `Adam` (epsilon 1e-8).
    Adam,
}

impl Impl {
    /// Every implementation, in the order reports list them.
    pub const ALL: [Impl; 3] = [Impl::Sparse, Impl::Dense, Impl::Adam];

    /// The name in JSON lines and tables.
    pub fn name(self) -> &'static str {
        match self {
            Impl::Sparse => "burn-sparse",
            Impl::Dense => "burn-dense",
            Impl::Adam => "burn-adam",
        }
    }

    /// The short name on the command line (`--impls sparse,dense,adam`).
    pub fn short(self) -> &'static str {
        match self {
            Impl::Sparse => "sparse",
            Impl::Dense => "dense",
            Impl::Adam => "adam",
        }
    }

    /// Parses a short or a full name.
    pub fn parse(name: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|i| i.short() == name || i.name() == name)
            .ok_or_else(|| format!("unknown impl {name:?}: expected sparse, dense or adam"))
    }
}

/// The workload's sizes and the measurement's length.
#[derive(Clone, Debug)]
pub struct Workload {
    /// Rows of the table (`V`).
    pub rows: usize,
    /// Width of a row (`d`).
    pub dim: usize,
    /// Lookups per step.
    pub batch: usize,
    /// Timed steps (the medians are over these).
    pub steps: usize,
    /// Untimed steps before them.
    pub warmup: usize,
    /// The backend: one of the test suite's.
    pub backend: TestBackend,
    /// Whether the wgpu adapter is a real GPU (`--gpu`): otherwise wgpu timings are recorded
    /// as functional only.
    pub gpu: bool,
    /// Whether the phases of a step are timed, each after a synchronization.
    pub phases: bool,
}

/// bench_torch.py's sampler: `u ~ U[0, 1)`, `index = floor(rows ** u) - 1`, clamped to the
/// table. Row `r` is drawn with probability `log((r + 2) / (r + 1)) / log(rows)`: a Zipf(1)
/// law. The uniforms come from SplitMix64 (PyTorch's generator cannot be reproduced here):
/// the same distribution, not the same draws.
pub struct ZipfSampler {
    rows: usize,
    state: u64,
}

impl ZipfSampler {
    /// A sampler over `0..rows` seeded with `seed`.
    pub fn new(rows: usize, seed: u64) -> Self {
        Self { rows, state: seed }
    }

    fn next_uniform(&mut self) -> f64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// One batch of indices.
    pub fn sample(&mut self, batch: usize) -> Vec<i64> {
        let max = self.rows as i64 - 1;
        (0..batch)
            .map(|_| {
                let u = self.next_uniform();
                ((self.rows as f64).powf(u).floor() as i64 - 1).clamp(0, max)
            })
            .collect()
    }
}

/// A value of `/proc/self/status` in KiB (`VmRSS`, `VmHWM`); `None` off Linux.
pub fn proc_status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// `GLIBC_TUNABLES` for `--malloc-keep`. glibc serves every block of 128 KiB or more (a
/// `[4096, 64]` f32 tensor is 1 MiB) with a fresh `mmap` and unmaps it on free, or trims the
/// heap's top once 2× that much is free, so each batch-sized temporary of a step is faulted
/// in page by page again the next step. These two settings keep blocks up to 32 MiB on the
/// heap and the heap untrimmed below 1 GiB.
pub const MALLOC_KEEP: &str =
    "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=1073741824";

/// `GLIBC_TUNABLES` of this process, as its measurements ran under it.
pub fn glibc_tunables() -> Option<String> {
    std::env::var("GLIBC_TUNABLES")
        .ok()
        .filter(|t| !t.is_empty())
}

/// The 1-minute load average (`/proc/loadavg`); `None` off Linux.
pub fn load_average() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

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

/// Per-step figures of the timed steps.
#[derive(Default)]
struct Timings {
    step_ms: Vec<f64>,
    optimizer_ms: Vec<f64>,
    forward_backward_ms: Vec<f64>,
    /// Lookup, loss, backward, gradient collection: only when phases are timed.
    phase_ms: [Vec<f64>; 4],
    unique_rows: Vec<usize>,
    final_loss: f64,
}

fn sync<B: Backend>(device: &B::Device) {
    B::sync(device).expect("the backend synchronizes");
}

/// When one step's phases ended: `[start, lookup, loss, backward, gradients, optimizer]`.
/// The middle four are only taken when phases are timed (each after a synchronization).
type Marks = [Option<Instant>; 6];

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
    let ms = |a: Option<Instant>, b: Option<Instant>| match (a, b) {
        (Some(a), Some(b)) => Some((b - a).as_secs_f64() * 1e3),
        _ => None,
    };
    for step in 0..work.warmup + work.steps {
        let host = sampler.sample(work.batch);
        let unique = {
            let mut rows = host.clone();
            rows.sort_unstable();
            rows.dedup();
            rows.len()
        };
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
            let whole = |i, j| ms(marks[i], marks[j]).expect("always marked");
            t.step_ms.push(whole(0, 5));
            t.optimizer_ms.push(whole(4, 5));
            t.forward_backward_ms.push(whole(0, 4));
            for (phase, times) in t.phase_ms.iter_mut().enumerate() {
                if let Some(x) = ms(marks[phase], marks[phase + 1]) {
                    times.push(x);
                }
            }
            t.unique_rows.push(unique);
        }
    }
    t
}

/// The median, as Python's `statistics.median` (the mean of the middle two of an even count).
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
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
    };
    let peak_kib = proc_status_kib("VmHWM");

    let mib = |kib: Option<u64>| kib.map(|k| k as f64 / 1024.0);
    let table_mib = (work.rows * work.dim * 4) as f64 / (1024.0 * 1024.0);
    let mut unique = t.unique_rows.iter().map(|&u| u as f64).collect::<Vec<_>>();
    unique.sort_by(f64::total_cmp);
    let phases = work
        .phases
        .then(|| t.phase_ms.each_ref().map(|v| median(v)));
    Record {
        imp: imp.name().to_string(),
        backend: work.backend.name().to_string(),
        rows: work.rows,
        dim: work.dim,
        batch: work.batch,
        steps: work.steps,
        median_ms_per_step: median(&t.step_ms),
        median_ms_optimizer_step: median(&t.optimizer_ms),
        median_ms_forward_backward: median(&t.forward_backward_ms),
        median_ms_lookup: phases.map(|p| p[0]),
        median_ms_loss: phases.map(|p| p[1]),
        median_ms_backward: phases.map(|p| p[2]),
        median_ms_gradients: phases.map(|p| p[3]),
        min_ms_per_step: t.step_ms.iter().copied().fold(f64::INFINITY, f64::min),
        peak_rss_mb: mib(peak_kib),
        baseline_rss_mb: mib(baseline_kib),
        table_mb: table_mib,
        table_and_moments_mb: 3.0 * table_mib,
        median_unique_rows: median(&unique),
        final_loss: t.final_loss,
        functional_only: work.backend == TestBackend::Wgpu && !work.gpu,
        load_1m: load_average(),
        glibc_tunables: glibc_tunables(),
        // burn-sparse-adam's feature `testing` includes its feature `ndarray`.
        fused_ndarray: cfg!(feature = "fused") && work.backend == TestBackend::NdArray,
    }
}

/// Runs one measurement in this process.
pub fn run_single(imp: Impl, work: &Workload) -> Record {
    match work.backend {
        TestBackend::NdArray => run_on::<NdArrayAutodiff>(imp, work, &Default::default()),
        TestBackend::Wgpu => run_on::<WgpuAutodiff>(imp, work, &Default::default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampler_stays_in_range_and_favours_small_rows() {
        let mut s = ZipfSampler::new(1000, 1);
        let batch = s.sample(100_000);
        assert!(batch.iter().all(|&i| (0..1000).contains(&i)));
        // P(index 0) = log(2) / log(1000) ≈ 0.100.
        let zeros = batch.iter().filter(|&&i| i == 0).count() as f64 / 1e5;
        assert!((zeros - 0.1003).abs() < 0.005, "{zeros}");
    }

    #[test]
    fn median_is_pythons() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
