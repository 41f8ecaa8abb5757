//! The result of one measurement, and its JSON line.
//!
//! The line has bench_torch.py's fields (`impl`, `rows`, `dim`, `batch`,
//! `median_ms_per_step`, `median_ms_optimizer_step`) plus the backend, the peak resident set
//! and the sizes it consists of. Sizes are MiB (2^20 bytes).

use serde_json::{json, Value};

/// One measurement: one implementation, one table size, one backend.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    /// `burn-sparse`, `burn-dense` or `burn-adam`.
    pub imp: String,
    /// `ndarray` or `wgpu`.
    pub backend: String,
    /// Rows of the table.
    pub rows: usize,
    /// Width of a row.
    pub dim: usize,
    /// Lookups per step.
    pub batch: usize,
    /// Timed steps.
    pub steps: usize,
    /// Median of the whole training step: lookup, loss, backward, gradients, optimizer step.
    pub median_ms_per_step: f64,
    /// Median of the optimizer step alone.
    pub median_ms_optimizer_step: f64,
    /// Median of lookup + loss + backward + gradient collection.
    pub median_ms_forward_backward: f64,
    /// Medians of the step's phases when they were timed: lookup (`forward`), loss
    /// (`* upstream`, `sum`), `backward()`, gradient collection (`collect_grads` or
    /// `GradientsParams::from_grads`).
    pub median_ms_phases: Option<[f64; 4]>,
    /// Fastest training step.
    pub min_ms_per_step: f64,
    /// Peak resident set of the process (`VmHWM`), MiB.
    pub peak_rss_mb: Option<f64>,
    /// Resident set before the table was created, MiB.
    pub baseline_rss_mb: Option<f64>,
    /// The table's size, `rows · dim · 4` bytes, MiB.
    pub table_mb: f64,
    /// The table plus its two moment tensors, MiB.
    pub table_and_moments_mb: f64,
    /// Median number of distinct rows a batch looks up (`k`).
    pub median_unique_rows: f64,
    /// The loss of the last step (a sanity check: the SparseAdam paths agree).
    pub final_loss: f64,
    /// Whether the timings mean nothing (wgpu on a software adapter).
    pub functional_only: bool,
    /// The 1-minute load average when the measurement ended (this process counts ~1).
    pub load_1m: Option<f64>,
    /// `GLIBC_TUNABLES` of the measuring process (`--malloc-keep`), if any.
    pub glibc_tunables: Option<String>,
    /// Whether SparseAdam's row path could take burn-sparse-adam's fused burn-ndarray update
    /// (this benchmark's feature `fused`, on ndarray) rather than the composed tensor path.
    pub fused_ndarray: bool,
}

/// The JSON fields of [`Record::median_ms_phases`].
const PHASE_FIELDS: [&str; 4] = [
    "median_ms_lookup",
    "median_ms_loss",
    "median_ms_backward",
    "median_ms_gradients",
];

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

impl Record {
    /// The JSON line.
    pub fn to_json(&self) -> Value {
        let mb = |x: Option<f64>| x.map(round3);
        json!({
            "impl": self.imp,
            "backend": self.backend,
            "rows": self.rows,
            "dim": self.dim,
            "batch": self.batch,
            "steps": self.steps,
            "median_ms_per_step": round3(self.median_ms_per_step),
            "median_ms_optimizer_step": round3(self.median_ms_optimizer_step),
            "median_ms_forward_backward": round3(self.median_ms_forward_backward),
            "median_ms_lookup": self.median_ms_phases.map(|p| round3(p[0])),
            "median_ms_loss": self.median_ms_phases.map(|p| round3(p[1])),
            "median_ms_backward": self.median_ms_phases.map(|p| round3(p[2])),
            "median_ms_gradients": self.median_ms_phases.map(|p| round3(p[3])),
            "min_ms_per_step": round3(self.min_ms_per_step),
            "peak_rss_mb": mb(self.peak_rss_mb),
            "baseline_rss_mb": mb(self.baseline_rss_mb),
            "table_mb": round3(self.table_mb),
            "table_and_moments_mb": round3(self.table_and_moments_mb),
            "median_unique_rows": self.median_unique_rows,
            "final_loss": self.final_loss,
            "functional_only": self.functional_only,
            "load_1m": self.load_1m,
            "glibc_tunables": self.glibc_tunables,
            "fused_ndarray": self.fused_ndarray,
        })
    }

    /// Parses a JSON line written by [`Record::to_json`].
    pub fn from_json(line: &str) -> Result<Self, String> {
        let v: Value = serde_json::from_str(line).map_err(|e| format!("{e}: {line}"))?;
        let f = |k: &str| {
            v[k].as_f64()
                .ok_or_else(|| format!("field {k:?} missing in {line}"))
        };
        let u = |k: &str| f(k).map(|x| x as usize);
        let s = |k: &str| {
            v[k].as_str()
                .map(str::to_string)
                .ok_or_else(|| format!("field {k:?} missing in {line}"))
        };
        Ok(Record {
            imp: s("impl")?,
            backend: s("backend")?,
            rows: u("rows")?,
            dim: u("dim")?,
            batch: u("batch")?,
            steps: u("steps")?,
            median_ms_per_step: f("median_ms_per_step")?,
            median_ms_optimizer_step: f("median_ms_optimizer_step")?,
            median_ms_forward_backward: f("median_ms_forward_backward")?,
            median_ms_phases: PHASE_FIELDS
                .iter()
                .map(|k| v[*k].as_f64())
                .collect::<Option<Vec<_>>>()
                .map(|p| [p[0], p[1], p[2], p[3]]),
            min_ms_per_step: f("min_ms_per_step")?,
            peak_rss_mb: v["peak_rss_mb"].as_f64(),
            baseline_rss_mb: v["baseline_rss_mb"].as_f64(),
            table_mb: f("table_mb")?,
            table_and_moments_mb: f("table_and_moments_mb")?,
            median_unique_rows: f("median_unique_rows")?,
            final_loss: v["final_loss"].as_f64().unwrap_or(f64::NAN),
            functional_only: v["functional_only"].as_bool().unwrap_or(false),
            load_1m: v["load_1m"].as_f64(),
            glibc_tunables: v["glibc_tunables"].as_str().map(str::to_string),
            fused_ndarray: v["fused_ndarray"].as_bool().unwrap_or(false),
        })
    }
}

/// One line of bench_torch.py, with the peak resident set of its process.
#[derive(Clone, Debug, PartialEq)]
pub struct TorchRecord {
    /// `torch-sparse` or `torch-dense`.
    pub imp: String,
    /// PyTorch's version.
    pub version: String,
    /// `torch.get_num_threads()`.
    pub threads: u64,
    /// Rows of the table.
    pub rows: usize,
    /// Median of the whole training step.
    pub median_ms_per_step: f64,
    /// Median of `opt.step()`.
    pub median_ms_optimizer_step: f64,
    /// Peak resident set of the Python process (`ru_maxrss`), MiB, this configuration only.
    pub peak_rss_mb: Option<f64>,
    /// The line as the script printed it, with `peak_rss_mb` added.
    pub json: Value,
}

impl TorchRecord {
    /// Parses one of the script's lines.
    pub fn from_json(line: &str, peak_rss_mb: Option<f64>) -> Result<Self, String> {
        let mut v: Value = serde_json::from_str(line).map_err(|e| format!("{e}: {line}"))?;
        let f = |k: &str| {
            v[k].as_f64()
                .ok_or_else(|| format!("field {k:?} missing in {line}"))
        };
        let rec = TorchRecord {
            imp: v["impl"].as_str().unwrap_or("torch-?").to_string(),
            version: v["torch"].as_str().unwrap_or("?").to_string(),
            threads: v["threads"].as_u64().unwrap_or(0),
            rows: f("rows")? as usize,
            median_ms_per_step: f("median_ms_per_step")?,
            median_ms_optimizer_step: f("median_ms_optimizer_step")?,
            peak_rss_mb,
            json: Value::Null,
        };
        if let Some(obj) = v.as_object_mut() {
            obj.insert("peak_rss_mb".into(), json!(peak_rss_mb.map(round3)));
        }
        Ok(TorchRecord { json: v, ..rec })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trips_through_json() {
        let r = Record {
            imp: "burn-sparse".into(),
            backend: "ndarray".into(),
            rows: 10,
            dim: 4,
            batch: 8,
            steps: 20,
            median_ms_per_step: 1.5,
            median_ms_optimizer_step: 0.25,
            median_ms_forward_backward: 1.25,
            median_ms_phases: Some([0.5, 0.25, 0.375, 0.125]),
            min_ms_per_step: 1.0,
            peak_rss_mb: Some(12.5),
            baseline_rss_mb: None,
            table_mb: 0.125,
            table_and_moments_mb: 0.375,
            median_unique_rows: 7.0,
            final_loss: -3.5,
            functional_only: false,
            load_1m: Some(1.25),
            glibc_tunables: None,
            fused_ndarray: true,
        };
        assert_eq!(Record::from_json(&r.to_json().to_string()).unwrap(), r);
    }

    #[test]
    fn torch_line_parses() {
        let line = r#"{"impl": "torch-sparse", "torch": "2.5.0", "threads": 2, "rows": 10000, "dim": 64, "batch": 4096, "median_ms_per_step": 1.2, "median_ms_optimizer_step": 0.4}"#;
        let t = TorchRecord::from_json(line, Some(300.0)).unwrap();
        assert_eq!(t.imp, "torch-sparse");
        assert_eq!(t.threads, 2);
        assert_eq!(t.json["peak_rss_mb"], json!(300.0));
    }
}
