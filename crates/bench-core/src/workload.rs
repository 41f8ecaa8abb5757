//! What is measured, and the host-side pieces of a measurement that need no Burn: the
//! sampler of the lookups, the median, the process's resident set and load, a measurement's
//! timings and its record.

use std::time::Instant;

use crate::record::Record;

/// The learning rate of every optimizer, as in bench_torch.py.
pub const LR: f64 = 1e-3;
/// The sampler's seed (bench_torch.py seeds its generator with 1).
pub const SAMPLER_SEED: u64 = 1;
/// The backend's seed: the table's and the upstream gradient's values.
pub const BACKEND_SEED: u64 = 0;

/// What is measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Impl {
    /// `SparseEmbedding` + SparseAdam: row gradients, the row path.
    Sparse,
    /// Burn's stock `Embedding` + SparseAdam: a table-sized gradient, the dense (masked) path.
    Dense,
    /// Burn's stock `Embedding` + Burn's `Adam` (epsilon 1e-8).
    Adam,
    /// [`Impl::Sparse`] with its moments stored in `bf16` (compact moments; not measured
    /// unless asked for, `--impls sparse,sparse-bf16`).
    SparseBf16,
    /// [`Impl::Sparse`] with its moments stored in `f16`.
    SparseF16,
    /// [`Impl::Sparse`] with the table's `check_indices` off (the 0.2 line): on wgpu its
    /// lookups are planned on the device and a step reads nothing back.
    SparseDevice,
}

impl Impl {
    /// The implementations measured by default, in the order reports list them.
    pub const ALL: [Impl; 3] = [Impl::Sparse, Impl::Dense, Impl::Adam];
    /// Every implementation `--impls` takes.
    pub const EVERY: [Impl; 6] = [
        Impl::Sparse,
        Impl::Dense,
        Impl::Adam,
        Impl::SparseBf16,
        Impl::SparseF16,
        Impl::SparseDevice,
    ];

    /// The name in JSON lines and tables.
    pub fn name(self) -> &'static str {
        match self {
            Impl::Sparse => "burn-sparse",
            Impl::Dense => "burn-dense",
            Impl::Adam => "burn-adam",
            Impl::SparseBf16 => "burn-sparse-bf16",
            Impl::SparseF16 => "burn-sparse-f16",
            Impl::SparseDevice => "burn-sparse-device",
        }
    }

    /// The short name on the command line (`--impls sparse,dense,adam`).
    pub fn short(self) -> &'static str {
        match self {
            Impl::Sparse => "sparse",
            Impl::Dense => "dense",
            Impl::Adam => "adam",
            Impl::SparseBf16 => "sparse-bf16",
            Impl::SparseF16 => "sparse-f16",
            Impl::SparseDevice => "sparse-device",
        }
    }

    /// Bytes of one stored moment value: 2 for compact moments, else the table's 4.
    pub fn moment_bytes(self) -> usize {
        match self {
            Impl::SparseBf16 | Impl::SparseF16 => 2,
            _ => 4,
        }
    }

    /// Parses a short or a full name.
    pub fn parse(name: &str) -> Result<Self, String> {
        Self::EVERY
            .into_iter()
            .find(|i| i.short() == name || i.name() == name)
            .ok_or_else(|| {
                format!(
                    "unknown impl {name:?}: expected sparse, dense, adam, sparse-bf16, sparse-f16 or sparse-device"
                )
            })
    }
}

/// The workload's sizes and the measurement's length, on a line's backend `B`.
#[derive(Clone, Debug)]
pub struct Workload<B> {
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
    /// The backend: one of the line's test suite's.
    pub backend: B,
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

/// The number of distinct indices of a batch (`k`).
pub fn unique_count(indices: &[i64]) -> usize {
    let mut rows = indices.to_vec();
    rows.sort_unstable();
    rows.dedup();
    rows.len()
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

/// Threads of rayon's global pool: the pool burn-flex and the core's CPU kernels split
/// their work across.
pub fn pool_threads() -> usize {
    rayon::current_num_threads()
}

/// The 1-minute load average (`/proc/loadavg`); `None` off Linux.
pub fn load_average() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// When one step's phases ended: `[start, lookup, loss, backward, gradients, optimizer]`.
/// The middle four are only taken when phases are timed (each after a synchronization).
pub type Marks = [Option<Instant>; 6];

/// Per-step figures of the timed steps.
#[derive(Default)]
pub struct Timings {
    step_ms: Vec<f64>,
    optimizer_ms: Vec<f64>,
    forward_backward_ms: Vec<f64>,
    /// Lookup, loss, backward, gradient collection: only when phases are timed.
    phase_ms: [Vec<f64>; 4],
    unique_rows: Vec<usize>,
    /// The loss of the last step (a sanity check that every path trains).
    pub final_loss: f64,
}

impl Timings {
    /// Adds a timed step: its marks and its number of distinct rows.
    ///
    /// # Panics
    ///
    /// If the start, the gradients' or the optimizer's mark is missing.
    pub fn push(&mut self, marks: &Marks, unique_rows: usize) {
        let ms = |a: Option<Instant>, b: Option<Instant>| match (a, b) {
            (Some(a), Some(b)) => Some((b - a).as_secs_f64() * 1e3),
            _ => None,
        };
        let whole = |i: usize, j: usize| ms(marks[i], marks[j]).expect("always marked");
        self.step_ms.push(whole(0, 5));
        self.optimizer_ms.push(whole(4, 5));
        self.forward_backward_ms.push(whole(0, 4));
        for (phase, times) in self.phase_ms.iter_mut().enumerate() {
            if let Some(x) = ms(marks[phase], marks[phase + 1]) {
                times.push(x);
            }
        }
        self.unique_rows.push(unique_rows);
    }
}

/// How a line's measurement ran, besides its timings.
pub struct RunInfo<'a> {
    /// The backend's name.
    pub backend: &'a str,
    /// `VmRSS` before the table was created, KiB.
    pub baseline_kib: Option<u64>,
    /// `VmHWM` after the last step, KiB.
    pub peak_kib: Option<u64>,
    /// Whether the timings mean nothing (wgpu on a software adapter).
    pub functional_only: bool,
    /// Whether SparseAdam's row path could take the fused CPU kernels.
    pub fused_cpu: bool,
    /// The Burn line, when it is not 0.1 (see [`Record::line`]).
    pub line: Option<&'static str>,
    /// Threads of the pool the CPU backend runs on, when the line knows it.
    pub threads: Option<usize>,
    /// The CPU backend's speed-relevant features as built, when the line knows them.
    pub features: Option<&'a str>,
}

impl<B> Workload<B> {
    /// The record of a measurement of `imp` on this workload.
    pub fn record(&self, imp: Impl, t: &Timings, info: &RunInfo<'_>) -> Record {
        let mib = |kib: Option<u64>| kib.map(|k| k as f64 / 1024.0);
        let table_mib = (self.rows * self.dim * 4) as f64 / (1024.0 * 1024.0);
        let unique = t.unique_rows.iter().map(|&u| u as f64).collect::<Vec<_>>();
        let phases = self
            .phases
            .then(|| t.phase_ms.each_ref().map(|v| median(v)));
        Record {
            imp: imp.name().to_string(),
            backend: info.backend.to_string(),
            rows: self.rows,
            dim: self.dim,
            batch: self.batch,
            steps: self.steps,
            median_ms_per_step: median(&t.step_ms),
            median_ms_optimizer_step: median(&t.optimizer_ms),
            median_ms_forward_backward: median(&t.forward_backward_ms),
            median_ms_lookup: phases.map(|p| p[0]),
            median_ms_loss: phases.map(|p| p[1]),
            median_ms_backward: phases.map(|p| p[2]),
            median_ms_gradients: phases.map(|p| p[3]),
            min_ms_per_step: t.step_ms.iter().copied().fold(f64::INFINITY, f64::min),
            peak_rss_mb: mib(info.peak_kib),
            baseline_rss_mb: mib(info.baseline_kib),
            table_mb: table_mib,
            table_and_moments_mb: table_mib * (1.0 + 2.0 * imp.moment_bytes() as f64 / 4.0),
            median_unique_rows: median(&unique),
            final_loss: t.final_loss,
            functional_only: info.functional_only,
            load_1m: load_average(),
            glibc_tunables: glibc_tunables(),
            fused_ndarray: info.fused_cpu,
            line: info.line.map(str::to_string),
            threads: info.threads,
            features: info.features.map(str::to_string),
            floor: None,
        }
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

    #[test]
    fn unique_count_counts_distinct_rows() {
        assert_eq!(unique_count(&[3, 1, 3, 0, 1]), 3);
        assert_eq!(unique_count(&[]), 0);
    }
}
