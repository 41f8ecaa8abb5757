//! The human-readable part: the results table, the side-by-side comparison with PyTorch and
//! the verdicts on issues 4's and 15's targets (judged in the `targets` module).

use crate::record::{find, find_torch, Record, TorchRecord};
use crate::targets::Target;

fn opt(x: Option<f64>, width: usize, precision: usize) -> String {
    match x {
        Some(x) if x.is_finite() => format!("{x:>width$.precision$}"),
        _ => format!("{:>width$}", "-"),
    }
}

/// The results table: one row per measurement.
pub fn results_table(records: &[Record]) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "{:>9} {:<18} {:>10} {:>10} {:>10} {:>6} {:>9} {:>9} {:>8} {:>11} {:>9} {:>5}\n",
        "rows",
        "impl",
        "step ms",
        "optim ms",
        "fwd+bwd ms",
        "k",
        "peak MiB",
        "base MiB",
        "table",
        "table+2mom",
        "excess",
        "load"
    ));
    for r in records {
        let excess = match (r.peak_rss_mb, r.baseline_rss_mb) {
            (Some(p), Some(b)) => Some(p - b - r.table_and_moments_mb),
            _ => None,
        };
        out.push_str(&format!(
            "{:>9} {:<18} {:>10.3} {:>10.3} {:>10.3} {:>6.0} {} {} {:>8.1} {:>11.1} {} {}{}\n",
            r.rows,
            r.imp,
            r.median_ms_per_step,
            r.median_ms_optimizer_step,
            r.median_ms_forward_backward,
            r.median_unique_rows,
            opt(r.peak_rss_mb, 9, 1),
            opt(r.baseline_rss_mb, 9, 1),
            r.table_mb,
            r.table_and_moments_mb,
            opt(excess, 9, 1),
            opt(r.load_1m, 5, 2),
            if r.functional_only {
                "  (functional only)"
            } else {
                ""
            },
        ));
    }
    out.push_str(
        "  k: distinct rows per batch (median); excess: peak - base - (table + 2 moments), MiB;\n  \
         load: 1-minute load average at the end (the benchmark itself counts ~1)\n",
    );
    out
}

/// The phases of the training step, for the records that timed them; empty if none did.
pub fn phases_table(records: &[Record]) -> String {
    let timed: Vec<(&Record, [f64; 4])> = records
        .iter()
        .filter_map(|r| r.phases().map(|p| (r, p)))
        .collect();
    if timed.is_empty() {
        return String::new();
    }
    let mut out = format!(
        "{:>9} {:<18} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}\n",
        "rows", "impl", "lookup", "loss", "backward", "gradients", "optimizer", "step"
    );
    for (r, p) in timed {
        out.push_str(&format!(
            "{:>9} {:<18} {:>10.3} {:>10.3} {:>10.3} {:>10.3} {:>10.3} {:>10.3}\n",
            r.rows, r.imp, p[0], p[1], p[2], p[3], r.median_ms_optimizer_step, r.median_ms_per_step
        ));
    }
    out.push_str(
        "  medians in ms of: lookup (forward: index read-back, sort/unique, gathers), loss (* upstream, sum),\n  \
         backward, gradients (collect_grads or GradientsParams::from_grads), optimizer (Optimizer::step)\n",
    );
    out
}

/// What the measuring processes ran on: threads and backend features, as the records say
/// (the first record that says; all measurements of a run share one build).
pub fn threads_line(records: &[Record]) -> Option<String> {
    let r = records
        .iter()
        .find(|r| r.threads.is_some() || r.features.is_some())?;
    Some(format!(
        "ours: {} threads in rayon's pool; {}",
        r.threads.map_or("?".into(), |t| t.to_string()),
        r.features.as_deref().unwrap_or("features unknown")
    ))
}

/// The memory floor beside the row update and the optimizer step, for the records that
/// measured it; empty if none did.
pub fn floor_table(records: &[Record]) -> String {
    let measured: Vec<(&Record, crate::floor::Floor)> =
        records.iter().filter_map(|r| Some((r, r.floor?))).collect();
    if measured.is_empty() {
        return String::new();
    }
    let mut out = format!(
        "{:>9} {:>6} {:>10} {:>10} {:>10} {:>10} {:>10} {:>13}
",
        "rows", "k", "optim ms", "update ms", "floor ms", "optim/flr", "upd/flr", "optim us/row"
    );
    for (r, f) in measured {
        out.push_str(&format!(
            "{:>9} {:>6.0} {:>10.3} {:>10.3} {:>10.3} {:>10.2} {:>10.2} {:>13.3}\n",
            r.rows,
            r.median_unique_rows,
            r.median_ms_optimizer_step,
            f.median_ms_update,
            f.median_ms_floor,
            r.median_ms_optimizer_step / f.median_ms_floor,
            f.median_ms_update / f.median_ms_floor,
            r.median_ms_optimizer_step * 1e3 / r.median_unique_rows.max(1.0),
        ));
    }
    out.push_str(
        "  burn-sparse; update: the core's update_rows on the same batches' rows, floor: a loop that only\n  \
         reads and writes the same bytes (parameter, both moments, row gradient), both on host tables of the\n  \
         table's size after flushing the caches, on the same pool (see crates/bench-core/src/floor.rs)\n",
    );
    out
}

/// The side-by-side table: ours against PyTorch at each table size.
pub fn torch_table(records: &[Record], torch: &[TorchRecord]) -> String {
    let mut rows: Vec<usize> = records.iter().map(|r| r.rows).collect();
    rows.sort_unstable();
    rows.dedup();
    let mut out = String::new();
    if let Some(t) = torch.first() {
        out.push_str(&format!(
            "PyTorch {} ({} threads); ratios are ours / PyTorch's (< 1: we are faster)\n",
            t.version, t.threads
        ));
    }
    out.push_str(&format!(
        "{:>9} | {:>10} {:>10} {:>6} | {:>10} {:>10} {:>6} | {:>9} {:>9} | {:>10} {:>10} {:>9} | {:>11}\n",
        "rows",
        "sparse ms",
        "torch ms",
        "ratio",
        "sp optim",
        "torch opt",
        "ratio",
        "sp MiB",
        "torch MiB",
        "adam ms",
        "torch-dns",
        "adam/sp",
        "opt adam/sp"
    ));
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    };
    for v in rows {
        let sp = find(records, "burn-sparse", v);
        let adam = find(records, "burn-adam", v);
        let ts = find_torch(torch, "torch-sparse", v);
        let td = find_torch(torch, "torch-dense", v);
        let sp_step = sp.map(|r| r.median_ms_per_step);
        let sp_opt = sp.map(|r| r.median_ms_optimizer_step);
        let ts_step = ts.map(|t| t.median_ms_per_step);
        let ts_opt = ts.map(|t| t.median_ms_optimizer_step);
        let adam_step = adam.map(|r| r.median_ms_per_step);
        let adam_opt = adam.map(|r| r.median_ms_optimizer_step);
        out.push_str(&format!(
            "{:>9} | {} {} {} | {} {} {} | {} {} | {} {} {} | {}\n",
            v,
            opt(sp_step, 10, 3),
            opt(ts_step, 10, 3),
            opt(ratio(sp_step, ts_step), 6, 2),
            opt(sp_opt, 10, 3),
            opt(ts_opt, 10, 3),
            opt(ratio(sp_opt, ts_opt), 6, 2),
            opt(sp.and_then(|r| r.peak_rss_mb), 9, 1),
            opt(ts.and_then(|t| t.peak_rss_mb), 9, 1),
            opt(adam_step, 10, 1),
            opt(td.map(|t| t.median_ms_per_step), 10, 1),
            opt(ratio(adam_step, sp_step), 9, 1),
            opt(ratio(adam_opt, sp_opt), 11, 1),
        ));
    }
    out.push_str(
        "  sparse: burn-sparse; torch: torch-sparse (nn.Embedding(sparse=True) + SparseAdam); adam: burn-adam;\n  \
         torch-dns: torch-dense (nn.Embedding + Adam); MiB: peak resident set of the process\n",
    );
    out
}

/// The targets as lines.
pub fn targets_text(targets: &[Target]) -> String {
    targets
        .iter()
        .map(|t| {
            let verdict = match t.pass {
                Some(true) => "PASS",
                Some(false) => "FAIL",
                None => "n/a ",
            };
            format!("  [{verdict}] {}: {}\n", t.name, t.value)
        })
        .collect()
}
