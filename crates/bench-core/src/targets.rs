//! Issues 4's and 15's targets: the thresholds, in one place, and their verdicts on a run's
//! figures.
//! The report prints the verdicts (`report::targets_text`).

use crate::record::{find, find_torch, Record, TorchRecord};

/// The sparse path is flat in the table size: the sparse optimizer step, and the sparse
/// training step, at the largest table take at most this many times their time at the
/// smallest.
pub const MAX_GROWTH_WITH_TABLE_SIZE: f64 = 1.3;

/// The sparse optimizer step is at least this many times faster than Burn's `Adam` on a
/// stock `Embedding` at the largest table.
pub const MIN_SPEEDUP_OVER_BURN_ADAM: f64 = 50.0;

/// The whole sparse training step takes at most this many times PyTorch's
/// (`nn.Embedding(sparse=True)` + `SparseAdam`, both on the machine's threads), at every
/// table size (issue 15; issue 4 asked for 1.0).
pub const MAX_STEP_RATIO_TO_TORCH: f64 = 0.5;

/// The sparse optimizer step takes at most this many times PyTorch's `SparseAdam.step`, at
/// every table size.
pub const MAX_OPTIMIZER_RATIO_TO_TORCH: f64 = 0.5;

/// Memory: at the largest table, the peak resident set above the baseline and the table with
/// its two moments (the *excess*) stays under this fraction of one table: any buffer of the
/// table's size (a dense gradient, a copy of the table or of a moment) would exceed it...
pub const MAX_EXCESS_TABLES: f64 = 0.5;

/// ... or under this many `[batch, d]` `f32` blocks, when that is more: O(batch) memory,
/// which also covers tables smaller than a batch's temporaries.
pub const MAX_EXCESS_BATCH_BLOCKS: f64 = 16.0;

/// Issue 15's flatness, where the caches no longer hide the table size: the sparse
/// optimizer step *per touched row* at the largest table (10^7 rows) takes at most this
/// many times the same at the smallest table of at least [`FLAT_FROM_ROWS`] rows (10^5).
pub const MAX_GROWTH_PER_TOUCHED_ROW: f64 = 1.3;

/// The smallest table judged by [`MAX_GROWTH_PER_TOUCHED_ROW`]: `[10^5, 64]` and its moments
/// (73 MiB) are already far beyond the caches.
pub const FLAT_FROM_ROWS: usize = 100_000;

/// The sparse optimizer step takes at most this many times its memory floor (a loop that
/// only reads and writes the bytes the update does, `floor.rs`) at tables of at least
/// [`FLOOR_FROM_ROWS`] rows.
pub const MAX_OPTIMIZER_OVER_FLOOR: f64 = 1.5;

/// Tables judged against the floor: 10^6 rows and more, where the floor is memory latency.
pub const FLOOR_FROM_ROWS: usize = 1_000_000;

/// The dense path's optimizer step (a stock `Embedding`'s table-sized gradient) takes at
/// most this many times PyTorch's dense `Adam.step` at the largest table.
pub const MAX_DENSE_RATIO_TO_TORCH_ADAM: f64 = 1.0;

/// The backends whose tensors live in host memory, where the resident set measures them: the
/// 0.1 line's burn-ndarray and the 0.2 line's burn-flex.
pub const CPU_BACKENDS: [&str; 2] = ["ndarray", "flex"];

/// One of issue 4's targets, judged on the figures at hand.
pub struct Target {
    /// What is required.
    pub name: String,
    /// The figure it is judged on.
    pub value: String,
    /// `None`: not judged (missing figures, or functional-only timings).
    pub pass: Option<bool>,
}

/// Issue 4's targets, judged on `records` (one backend) and `torch` (may be empty).
pub fn targets(records: &[Record], torch: &[TorchRecord]) -> Vec<Target> {
    let mut out = Vec::new();
    let functional = records.iter().any(|r| r.functional_only);
    let judge = |ok: bool| if functional { None } else { Some(ok) };
    let sparse: Vec<&Record> = records.iter().filter(|r| r.imp == "burn-sparse").collect();
    let smallest = sparse.iter().min_by_key(|r| r.rows);
    let largest = sparse.iter().max_by_key(|r| r.rows);

    match (smallest, largest) {
        (Some(s), Some(l)) if s.rows < l.rows => {
            for (what, a, b) in [
                (
                    "optimizer step",
                    l.median_ms_optimizer_step,
                    s.median_ms_optimizer_step,
                ),
                ("training step", l.median_ms_per_step, s.median_ms_per_step),
            ] {
                let r = a / b;
                // The sampler touches more distinct rows in a larger table: per touched row,
                // the cost that the table size alone adds.
                let per_row = |ms: f64, k: f64| ms * 1e3 / k.max(1.0);
                out.push(Target {
                    name: format!(
                        "sparse {what} flat in the table size: t({}) / t({}) <= {MAX_GROWTH_WITH_TABLE_SIZE}",
                        l.rows, s.rows
                    ),
                    value: format!(
                        "{a:.3} / {b:.3} ms = {r:.2} (k = {:.0} vs {:.0} rows; per touched row {:.3} vs {:.3} us)",
                        l.median_unique_rows,
                        s.median_unique_rows,
                        per_row(a, l.median_unique_rows),
                        per_row(b, s.median_unique_rows)
                    ),
                    pass: judge(r <= MAX_GROWTH_WITH_TABLE_SIZE),
                });
            }
        }
        _ => out.push(Target {
            name: "sparse step flat in the table size".into(),
            value: "needs burn-sparse at two table sizes".into(),
            pass: None,
        }),
    }

    if let Some(l) = largest {
        match find(records, "burn-adam", l.rows) {
            Some(adam) => {
                let r = adam.median_ms_optimizer_step / l.median_ms_optimizer_step;
                out.push(Target {
                    name: format!(
                        "sparse optimizer step >= {MIN_SPEEDUP_OVER_BURN_ADAM}x faster than Burn's Adam at {} rows",
                        l.rows
                    ),
                    value: format!(
                        "{:.3} / {:.3} ms = {r:.1}x (whole step: {:.1}x)",
                        adam.median_ms_optimizer_step,
                        l.median_ms_optimizer_step,
                        adam.median_ms_per_step / l.median_ms_per_step
                    ),
                    pass: judge(r >= MIN_SPEEDUP_OVER_BURN_ADAM),
                });
            }
            None => out.push(Target {
                name: format!(
                    "sparse step >= {MIN_SPEEDUP_OVER_BURN_ADAM}x faster than Burn's Adam"
                ),
                value: "needs burn-adam".into(),
                pass: None,
            }),
        }
    }

    for s in &sparse {
        let Some(t) = find_torch(torch, "torch-sparse", s.rows) else {
            continue;
        };
        let r = s.median_ms_per_step / t.median_ms_per_step;
        out.push(Target {
            name: format!(
                "sparse training step <= {MAX_STEP_RATIO_TO_TORCH:.1}x PyTorch's at {} rows",
                s.rows
            ),
            value: format!(
                "{:.3} / {:.3} ms = {r:.2}",
                s.median_ms_per_step, t.median_ms_per_step
            ),
            pass: judge(r <= MAX_STEP_RATIO_TO_TORCH),
        });
        let r = s.median_ms_optimizer_step / t.median_ms_optimizer_step;
        out.push(Target {
            name: format!(
                "sparse optimizer step <= {MAX_OPTIMIZER_RATIO_TO_TORCH}x PyTorch's SparseAdam.step at {} rows",
                s.rows
            ),
            value: format!(
                "{:.3} / {:.3} ms = {r:.2}",
                s.median_ms_optimizer_step, t.median_ms_optimizer_step
            ),
            pass: judge(r <= MAX_OPTIMIZER_RATIO_TO_TORCH),
        });
    }
    if torch.is_empty() {
        out.push(Target {
            name: "sparse step against PyTorch".into(),
            value: "not measured (run with --torch, which needs python3 with torch)".into(),
            pass: None,
        });
    }

    if let Some(l) = largest {
        if let (Some(peak), Some(base)) = (l.peak_rss_mb, l.baseline_rss_mb) {
            let excess = peak - base - l.table_and_moments_mb;
            let batch_block_mb = (l.batch * l.dim * 4) as f64 / (1024.0 * 1024.0);
            let allowed =
                (MAX_EXCESS_TABLES * l.table_mb).max(MAX_EXCESS_BATCH_BLOCKS * batch_block_mb);
            out.push(Target {
                name: format!(
                    "sparse peak RSS at {} rows = table + 2 moments + O(batch) (excess < {allowed:.1} MiB)",
                    l.rows
                ),
                value: format!(
                    "peak {peak:.1} - base {base:.1} - (table + 2 moments) {:.1} = {excess:.1} MiB (table {:.1})",
                    l.table_and_moments_mb, l.table_mb
                ),
                // RSS is host memory: on a GPU the tensors are elsewhere.
                pass: if CPU_BACKENDS.contains(&l.backend.as_str()) {
                    Some(excess < allowed)
                } else {
                    None
                },
            });
        }
    }
    flatness_and_floor(&sparse, judge, &mut out);

    let dense_largest = records
        .iter()
        .filter(|r| r.imp == "burn-dense")
        .max_by_key(|r| r.rows);
    if let Some(d) = dense_largest {
        match find_torch(torch, "torch-dense", d.rows) {
            Some(t) => {
                let r = d.median_ms_optimizer_step / t.median_ms_optimizer_step;
                out.push(Target {
                    name: format!(
                        "dense optimizer step <= {MAX_DENSE_RATIO_TO_TORCH_ADAM:.1}x PyTorch's dense Adam.step at {} rows",
                        d.rows
                    ),
                    value: format!(
                        "{:.3} / {:.3} ms = {r:.2}",
                        d.median_ms_optimizer_step, t.median_ms_optimizer_step
                    ),
                    pass: judge(r <= MAX_DENSE_RATIO_TO_TORCH_ADAM),
                });
            }
            None => out.push(Target {
                name: "dense optimizer step against PyTorch's dense Adam".into(),
                value: "needs torch-dense at the same size (--torch)".into(),
                pass: None,
            }),
        }
    }
    out
}

/// Issue 15's two memory targets: the optimizer step per touched row beyond the caches, and
/// against its floor.
fn flatness_and_floor(
    sparse: &[&Record],
    judge: impl Fn(bool) -> Option<bool>,
    out: &mut Vec<Target>,
) {
    let per_row = |r: &Record| r.median_ms_optimizer_step * 1e3 / r.median_unique_rows.max(1.0);
    let beyond: Vec<&&Record> = sparse.iter().filter(|r| r.rows >= FLAT_FROM_ROWS).collect();
    let smallest = beyond.iter().min_by_key(|r| r.rows);
    let largest = beyond.iter().max_by_key(|r| r.rows);
    match (smallest, largest) {
        (Some(s), Some(l)) if s.rows < l.rows => {
            let r = per_row(l) / per_row(s);
            out.push(Target {
                name: format!(
                    "sparse optimizer step per touched row flat beyond the caches: at {} / at {} rows <= {MAX_GROWTH_PER_TOUCHED_ROW}",
                    l.rows, s.rows
                ),
                value: format!(
                    "{:.3} / {:.3} us = {r:.2} (k = {:.0} vs {:.0})",
                    per_row(l),
                    per_row(s),
                    l.median_unique_rows,
                    s.median_unique_rows
                ),
                pass: judge(r <= MAX_GROWTH_PER_TOUCHED_ROW),
            });
        }
        _ => out.push(Target {
            name: "sparse optimizer step per touched row flat beyond the caches".into(),
            value: format!(
                "needs burn-sparse at two sizes of at least {FLAT_FROM_ROWS} rows (--rows 1e5,1e7)"
            ),
            pass: None,
        }),
    }
    for r in sparse.iter().filter(|r| r.rows >= FLOOR_FROM_ROWS) {
        let Some(floor) = r.floor else { continue };
        let ratio = r.median_ms_optimizer_step / floor.median_ms_floor;
        out.push(Target {
            name: format!(
                "sparse optimizer step <= {MAX_OPTIMIZER_OVER_FLOOR}x its memory floor at {} rows",
                r.rows
            ),
            value: format!(
                "{:.3} / {:.3} ms = {ratio:.2} (the core's row update alone: {:.2}x)",
                r.median_ms_optimizer_step,
                floor.median_ms_floor,
                floor.median_ms_update / floor.median_ms_floor
            ),
            pass: judge(ratio <= MAX_OPTIMIZER_OVER_FLOOR),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Floor;

    fn record(imp: &str, rows: usize, step: f64, optimizer: f64) -> Record {
        Record {
            imp: imp.into(),
            backend: "ndarray".into(),
            rows,
            dim: 64,
            batch: 4096,
            steps: 30,
            median_ms_per_step: step,
            median_ms_optimizer_step: optimizer,
            median_ms_forward_backward: step - optimizer,
            median_ms_lookup: None,
            median_ms_loss: None,
            median_ms_backward: None,
            median_ms_gradients: None,
            min_ms_per_step: step,
            peak_rss_mb: Some(100.0),
            baseline_rss_mb: Some(20.0),
            table_mb: 10.0,
            table_and_moments_mb: 30.0,
            median_unique_rows: 1000.0,
            final_loss: 0.0,
            functional_only: false,
            load_1m: None,
            glibc_tunables: None,
            fused_ndarray: true,
            line: None,
            threads: None,
            features: None,
            floor: None,
        }
    }

    /// Each threshold is judged at its edge and named in its target.
    #[test]
    fn thresholds_are_judged_and_named() {
        let records = [
            record("burn-sparse", 10_000, 2.0, 1.0),
            // Per touched row (k = 1000 everywhere): 1.0 us here, 1.31 us at 10^6.
            record("burn-sparse", 100_000, 2.0, 1.0),
            // Exactly 1.3× the small table's step; the optimizer step 1.31×, and 1.31× its
            // floor.
            Record {
                floor: Some(Floor {
                    median_ms_update: 1.2,
                    median_ms_floor: 1.0,
                    threads: 2,
                }),
                ..record("burn-sparse", 1_000_000, 2.6, 1.31)
            },
            // Exactly 50× the sparse optimizer step.
            record("burn-adam", 1_000_000, 100.0, 65.5),
            // Exactly PyTorch's dense Adam.step.
            record("burn-dense", 1_000_000, 30.0, 20.0),
        ];
        let torch: Vec<TorchRecord> = [
            ("torch-sparse", 10_000, 4.0, 2.0),
            ("torch-sparse", 1_000_000, 2.5, 2.62),
            ("torch-dense", 1_000_000, 25.0, 20.0),
        ]
        .into_iter()
        .map(|(imp, rows, step, optimizer)| TorchRecord {
            imp: imp.into(),
            version: "2.15.0".into(),
            threads: 2,
            rows,
            median_ms_per_step: step,
            median_ms_optimizer_step: optimizer,
            peak_rss_mb: None,
            rest: Default::default(),
        })
        .collect();
        let verdicts: Vec<(String, Option<bool>)> = targets(&records, &torch)
            .into_iter()
            .map(|t| (t.name, t.pass))
            .collect();
        let expected = [
            (
                "sparse optimizer step flat in the table size: t(1000000) / t(10000) <= 1.3",
                Some(false),
            ),
            (
                "sparse training step flat in the table size: t(1000000) / t(10000) <= 1.3",
                Some(true),
            ),
            (
                "sparse optimizer step >= 50x faster than Burn's Adam at 1000000 rows",
                Some(true),
            ),
            ("sparse training step <= 0.5x PyTorch's at 10000 rows", Some(true)),
            (
                "sparse optimizer step <= 0.5x PyTorch's SparseAdam.step at 10000 rows",
                Some(true),
            ),
            ("sparse training step <= 0.5x PyTorch's at 1000000 rows", Some(false)),
            (
                "sparse optimizer step <= 0.5x PyTorch's SparseAdam.step at 1000000 rows",
                Some(true),
            ),
            // Excess 100 − 20 − 30 = 50 MiB against max(0.5 · 10, 16 · 1) = 16 MiB.
            (
                "sparse peak RSS at 1000000 rows = table + 2 moments + O(batch) (excess < 16.0 MiB)",
                Some(false),
            ),
            (
                "sparse optimizer step per touched row flat beyond the caches: at 1000000 / at 100000 rows <= 1.3",
                Some(false),
            ),
            (
                "sparse optimizer step <= 1.5x its memory floor at 1000000 rows",
                Some(true),
            ),
            (
                "dense optimizer step <= 1.0x PyTorch's dense Adam.step at 1000000 rows",
                Some(true),
            ),
        ];
        let expected: Vec<(String, Option<bool>)> = expected
            .into_iter()
            .map(|(name, pass)| (name.to_string(), pass))
            .collect();
        assert_eq!(verdicts, expected);
    }
}
