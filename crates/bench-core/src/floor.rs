//! The memory floor of the row update: what the sparse optimizer step cannot go below.
//!
//! What grows with the table is memory latency, not work: the touched rows are scattered
//! over tables far larger than the caches. The floor is measured as a loop over the same
//! touched rows, in the same order, on the same pool of threads split the same way, that
//! reads and writes the bytes the update reads and writes (the parameter's and both
//! moments' lanes of each touched row, and the `[k, d]` row gradient) with no arithmetic.
//! Beside it, the core's [`update_rows`], the loop the fused CPU paths of both lines run,
//! on the same rows: the difference between the two is the update's arithmetic, and the
//! difference between the optimizer step and the update is the optimizer's bookkeeping.
//!
//! Both run on host tables of the measured table's size, filled (so that every page is
//! resident), that the measurement allocates after the training run: the same sizes and
//! access pattern, not the training run's own buffers (the Burn lines do not lend those
//! out between steps). Tables that `is_huge_table` accepts are advised onto huge pages
//! before they are filled, as both lines' fused CPU paths make theirs
//! (`sparse_adam_core::pages`).

use std::time::Instant;

use sparse_adam_core::kernels::PARALLEL_LANES;
use sparse_adam_core::pages::{advise_huge_pages, is_huge_table};
use sparse_adam_core::{update_rows, Hyperparameters, LookupPlan, StepScalars};

pub use crate::record::Floor;
use crate::workload::{median, Workload, ZipfSampler, SAMPLER_SEED};

/// Measures the row update and its floor on a `[rows, dim]` table and its two moments for
/// `steps` batches of `batch` lookups drawn as the benchmark draws them (`seed`), after
/// `warmup` untimed ones: both on each batch's rows, each after the caches were flushed.
pub fn measure(
    rows: usize,
    dim: usize,
    batch: usize,
    warmup: usize,
    steps: usize,
    seed: u64,
) -> Floor {
    let len = rows * dim;
    // On huge pages where the kernel gives them and the Burn lines' fused paths would put
    // them (`sparse_adam_core::pages`), with non-zero values: every page is written, hence
    // resident, before the timings.
    let table = |value: f32| {
        let mut values = vec![0f32; len];
        if is_huge_table(len) {
            let _ = advise_huge_pages(&mut values);
        }
        values.fill(value);
        values
    };
    let (mut p, mut m, mut v) = (table(0.5), table(0.01), table(0.001));
    let mut sampler = ZipfSampler::new(rows, seed);
    let hyper = Hyperparameters::default();
    let (mut update_ms, mut floor_ms) = (Vec::new(), Vec::new());
    let mut grad = Vec::new();
    let mut flush = vec![0u64; FLUSH_BYTES / 8];
    for step in 0..warmup + steps {
        let plan = LookupPlan::new(&sampler.sample(batch), None);
        grad.clear();
        grad.extend((0..plan.rows.len() * dim).map(|i| ((i % 17) as f32 - 8.0) * 1e-3));
        let scalars = StepScalars::new(hyper, 1e-3, step + 1);
        // The same rows for both, each after the caches were flushed of them (the second
        // would find the first's rows there), taking turns at running first.
        let mut timed = |update: bool| {
            evict(&mut flush);
            let start = Instant::now();
            if update {
                update_rows(&mut p, &mut m, &mut v, &grad, &plan.rows, dim, &scalars);
            } else {
                touch_rows(&mut p, &mut m, &mut v, &grad, &plan.rows, dim);
            }
            start.elapsed().as_secs_f64() * 1e3
        };
        let first = step % 2 == 0;
        let (a, b) = (timed(first), timed(!first));
        let (update, floor) = if first { (a, b) } else { (b, a) };
        if step >= warmup {
            update_ms.push(update);
            floor_ms.push(floor);
        }
    }
    Floor {
        median_ms_update: median(&update_ms),
        median_ms_floor: median(&floor_ms),
        threads: rayon::current_num_threads(),
    }
}

/// Bytes written between two timed loops to push the previous loop's rows out of the
/// caches: several times the last-level cache of the machines measured.
const FLUSH_BYTES: usize = 128 << 20;

/// Writes every line of `flush`, evicting what the caches held.
fn evict(flush: &mut [u64]) {
    for (i, x) in flush.iter_mut().step_by(8).enumerate() {
        *x = x.wrapping_add(i as u64);
    }
    std::hint::black_box(&flush);
}

/// The floor loop: copies each of rows `rows` of the three tables out and back and reads
/// the row gradient, in order, prefetching as the update does, split across the current
/// pool as `update_rows` splits (contiguous runs of the sorted rows, at least
/// [`PARALLEL_LANES`] lanes each).
fn touch_rows(p: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32], rows: &[i64], d: usize) {
    if d == 0 || rows.is_empty() {
        return;
    }
    let threads = rayon::current_num_threads();
    let pieces = ((rows.len() * d) / PARALLEL_LANES).clamp(1, 4 * threads.max(1));
    let per_piece = rows.len().div_ceil(pieces);
    let tables = Tables([p.as_mut_ptr(), m.as_mut_ptr(), v.as_mut_ptr()], p.len());
    rayon::scope(|scope| {
        for (chunk, grad) in rows.chunks(per_piece).zip(g.chunks(per_piece * d)) {
            let tables = &tables;
            scope.spawn(move |_| {
                let mut lanes = vec![0f32; d];
                for (n, (row, grad_row)) in chunk.iter().zip(grad.chunks_exact(d)).enumerate() {
                    // The update's prefetch, the same distance ahead: the floor is what the
                    // update's access pattern costs, not a slower one.
                    if let Some(&ahead) = chunk.get(n + AHEAD) {
                        tables.prefetch(ahead as usize * d, d);
                    }
                    let start = *row as usize * d;
                    assert!(start + d <= tables.1, "row {row} is in the table");
                    for table in tables.0 {
                        // SAFETY: the lanes are in bounds (asserted above), and the rows are
                        // unique and split into disjoint runs: no other piece touches them.
                        let row = unsafe { std::slice::from_raw_parts_mut(table.add(start), d) };
                        // A copy out and back, vectorised like the update's loads and
                        // stores; `black_box` keeps both.
                        lanes.copy_from_slice(row);
                        std::hint::black_box(&mut lanes);
                        row.copy_from_slice(&lanes);
                    }
                    lanes.copy_from_slice(grad_row);
                    std::hint::black_box(&mut lanes);
                }
            });
        }
    });
}

impl<B> Workload<B> {
    /// The row update and its memory floor on this workload's table size and batches, on
    /// the current rayon pool.
    pub fn floor(&self) -> Floor {
        measure(
            self.rows,
            self.dim,
            self.batch,
            self.warmup,
            self.steps,
            SAMPLER_SEED,
        )
    }
}

/// How many rows ahead the update prefetches (`sparse-adam-core`'s `update_range`).
const AHEAD: usize = 4;

/// The three tables' base pointers and their length, shared by the pieces of
/// [`touch_rows`], which write disjoint lanes.
struct Tables([*mut f32; 3], usize);

impl Tables {
    /// Asks the CPU to bring lanes `start..start + d` of the three tables into its caches,
    /// as the update does; no effect off x86_64 or past the end.
    fn prefetch(&self, start: usize, d: usize) {
        if start + d > self.1 {
            return;
        }
        #[cfg(target_arch = "x86_64")]
        for table in self.0 {
            for line in (start..start + d).step_by(16) {
                // SAFETY: a prefetch reads nothing and cannot fault; the address is inside
                // the table (checked above). SSE is part of the x86_64 baseline.
                unsafe {
                    core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(
                        table.add(line).cast(),
                    )
                };
            }
        }
    }
}

// SAFETY: the pieces write disjoint lanes (see `touch_rows`) while the scope borrows the
// tables mutably; nothing else reads or writes them meanwhile.
unsafe impl Sync for Tables {}

#[cfg(test)]
mod tests {
    use super::*;

    /// The floor loop leaves the tables as they were: it moves bytes, not values.
    #[test]
    fn the_floor_changes_nothing() {
        let (n, d) = (200, 5);
        let values: Vec<f32> = (0..n * d).map(|i| i as f32 * 0.25).collect();
        let (mut p, mut m, mut v) = (values.clone(), values.clone(), values.clone());
        let rows: Vec<i64> = (0..n as i64).step_by(3).collect();
        let g = vec![1.0; rows.len() * d];
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        pool.install(|| touch_rows(&mut p, &mut m, &mut v, &g, &rows, d));
        assert!(p == values && m == values && v == values);
    }

    /// A small measurement runs and gives positive medians.
    #[test]
    fn a_measurement_gives_both_medians() {
        let floor = measure(1_000, 8, 256, 1, 3, 7);
        assert!(floor.median_ms_update > 0.0 && floor.median_ms_floor > 0.0);
        assert!(floor.threads >= 1);
    }
}
