//! The result of one measurement, and its JSON line.
//!
//! The line has bench_torch.py's fields (`impl`, `rows`, `dim`, `batch`,
//! `median_ms_per_step`, `median_ms_optimizer_step`) plus the backend, the peak resident set
//! and the sizes it consists of. Sizes are MiB (2^20 bytes). Times and sizes are written
//! rounded to 3 decimals (microseconds, KiB): the parent process reads the children's lines,
//! so the report shows the figures the lines hold.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

/// One measurement: one implementation, one table size, one backend. Its JSON line is this
/// struct, field for field.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// `burn-sparse`, `burn-dense`, `burn-adam`, `burn-sparse-bf16` or `burn-sparse-f16`.
    #[serde(rename = "impl")]
    pub imp: String,
    /// `ndarray` or `wgpu` (the 0.1 line), `flex` or `wgpu` (the 0.2 line).
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
    #[serde(serialize_with = "round3")]
    pub median_ms_per_step: f64,
    /// Median of the optimizer step alone.
    #[serde(serialize_with = "round3")]
    pub median_ms_optimizer_step: f64,
    /// Median of lookup + loss + backward + gradient collection.
    #[serde(serialize_with = "round3")]
    pub median_ms_forward_backward: f64,
    /// Median of the lookup (`forward`), when the phases were timed ([`Record::phases`]).
    #[serde(default, serialize_with = "round3_opt")]
    pub median_ms_lookup: Option<f64>,
    /// Median of the loss (`* upstream`, `sum`), when the phases were timed.
    #[serde(default, serialize_with = "round3_opt")]
    pub median_ms_loss: Option<f64>,
    /// Median of `backward()`, when the phases were timed.
    #[serde(default, serialize_with = "round3_opt")]
    pub median_ms_backward: Option<f64>,
    /// Median of the gradient collection (`collect_grads` or `GradientsParams::from_grads`),
    /// when the phases were timed.
    #[serde(default, serialize_with = "round3_opt")]
    pub median_ms_gradients: Option<f64>,
    /// Fastest training step.
    #[serde(serialize_with = "round3")]
    pub min_ms_per_step: f64,
    /// Peak resident set of the process (`VmHWM`), MiB.
    #[serde(default, serialize_with = "round3_opt")]
    pub peak_rss_mb: Option<f64>,
    /// Resident set before the table was created, MiB.
    #[serde(default, serialize_with = "round3_opt")]
    pub baseline_rss_mb: Option<f64>,
    /// The table's size, `rows · dim · 4` bytes, MiB.
    #[serde(serialize_with = "round3")]
    pub table_mb: f64,
    /// The table plus its two moment tensors, MiB.
    #[serde(serialize_with = "round3")]
    pub table_and_moments_mb: f64,
    /// Median number of distinct rows a batch looks up (`k`).
    pub median_unique_rows: f64,
    /// The loss of the last step (a sanity check: the SparseAdam paths agree). Not finite:
    /// `null` in JSON, as a missing value reads.
    #[serde(default = "nan", deserialize_with = "null_as_nan")]
    pub final_loss: f64,
    /// Whether the timings mean nothing (wgpu on a software adapter).
    #[serde(default)]
    pub functional_only: bool,
    /// The 1-minute load average when the measurement ended (this process counts ~1).
    #[serde(default)]
    pub load_1m: Option<f64>,
    /// `GLIBC_TUNABLES` of the measuring process (`--malloc-keep`), if any.
    #[serde(default)]
    pub glibc_tunables: Option<String>,
    /// Whether SparseAdam's row path could take burn-sparse-adam's fused CPU kernels rather
    /// than the composed tensor path: burn-ndarray's on the 0.1 line, burn-flex's on the 0.2
    /// line (the field keeps the name the 0.1 line's lines have).
    #[serde(default)]
    pub fused_ndarray: bool,
    /// The Burn line measured, `0.2` (Burn 0.22); absent on the 0.1 line (Burn 0.21), whose
    /// lines keep the fields they always had.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<String>,
    /// Threads of rayon's global pool in the measuring process: the pool burn-flex and the
    /// core's CPU kernels split their work across (the 0.2 line).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<usize>,
    /// The CPU backend's features that decide its speed, as built (`flex: rayon, simd`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<String>,
    /// The row update and its memory floor on this table size ([`Floor`]): `burn-sparse` on
    /// a CPU backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub floor: Option<Floor>,
}

impl Record {
    /// The medians of the step's phases, when they were timed: lookup (`forward`), loss
    /// (`* upstream`, `sum`), `backward()`, gradient collection.
    pub fn phases(&self) -> Option<[f64; 4]> {
        Some([
            self.median_ms_lookup?,
            self.median_ms_loss?,
            self.median_ms_backward?,
            self.median_ms_gradients?,
        ])
    }

    /// The JSON line.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a record serializes")
    }

    /// Parses a JSON line written by [`Record::to_json`].
    pub fn from_json(line: &str) -> Result<Self, String> {
        serde_json::from_str(line).map_err(|e| format!("{e}: {line}"))
    }
}

fn round3_value(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn round3<S: Serializer>(x: &f64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(round3_value(*x))
}

fn round3_opt<S: Serializer>(x: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
    x.map(round3_value).serialize(s)
}

fn nan() -> f64 {
    f64::NAN
}

/// A number, or `null` (how serde_json writes a value that is not finite) as NaN.
fn null_as_nan<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// The memory floor's figures for one table size (measured by the `floor` module): medians
/// over the steps, ms.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Floor {
    /// The core's `update_rows` on the step's touched rows.
    pub median_ms_update: f64,
    /// The loop that only reads and writes the same bytes.
    pub median_ms_floor: f64,
    /// Threads of the pool both ran on.
    pub threads: usize,
}

/// One line of bench_torch.py, with the peak resident set of its process. Serialized, it is
/// the line as the script printed it, with `peak_rss_mb` added.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TorchRecord {
    /// `torch-sparse` or `torch-dense`.
    #[serde(rename = "impl", default = "unknown_impl")]
    pub imp: String,
    /// PyTorch's version.
    #[serde(rename = "torch", default = "unknown_version")]
    pub version: String,
    /// `torch.get_num_threads()`.
    #[serde(default)]
    pub threads: u64,
    /// Rows of the table.
    pub rows: usize,
    /// Median of the whole training step.
    pub median_ms_per_step: f64,
    /// Median of `opt.step()`.
    pub median_ms_optimizer_step: f64,
    /// Peak resident set of the Python process (`ru_maxrss`), MiB, this configuration only.
    #[serde(default, serialize_with = "round3_opt")]
    pub peak_rss_mb: Option<f64>,
    /// The script's other fields, passed through.
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

fn unknown_impl() -> String {
    "torch-?".into()
}

fn unknown_version() -> String {
    "?".into()
}

impl TorchRecord {
    /// Parses one of the script's lines; `peak_rss_mb` is its process's.
    pub fn from_json(line: &str, peak_rss_mb: Option<f64>) -> Result<Self, String> {
        let record: TorchRecord = serde_json::from_str(line).map_err(|e| format!("{e}: {line}"))?;
        Ok(TorchRecord {
            peak_rss_mb,
            ..record
        })
    }

    /// The line, with `peak_rss_mb`.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a record serializes")
    }
}

/// The record of `imp` at `rows` rows.
pub(crate) fn find<'a>(records: &'a [Record], imp: &str, rows: usize) -> Option<&'a Record> {
    records.iter().find(|r| r.imp == imp && r.rows == rows)
}

/// PyTorch's record of `imp` at `rows` rows.
pub(crate) fn find_torch<'a>(
    torch: &'a [TorchRecord],
    imp: &str,
    rows: usize,
) -> Option<&'a TorchRecord> {
    torch.iter().find(|t| t.imp == imp && t.rows == rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        Record {
            imp: "burn-sparse".into(),
            backend: "ndarray".into(),
            rows: 10,
            dim: 4,
            batch: 8,
            steps: 20,
            median_ms_per_step: 1.5,
            median_ms_optimizer_step: 0.25,
            median_ms_forward_backward: 1.25,
            median_ms_lookup: Some(0.5),
            median_ms_loss: Some(0.25),
            median_ms_backward: Some(0.375),
            median_ms_gradients: Some(0.125),
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
            line: None,
            threads: None,
            features: None,
            floor: None,
        }
    }

    #[test]
    fn record_round_trips_through_json() {
        let r = record();
        assert_eq!(Record::from_json(&r.to_json()).unwrap(), r);
        let r = Record {
            threads: Some(2),
            features: Some("flex: rayon, simd".into()),
            floor: Some(Floor {
                median_ms_update: 0.5,
                median_ms_floor: 0.25,
                threads: 2,
            }),
            ..record()
        };
        assert_eq!(Record::from_json(&r.to_json()).unwrap(), r);
        assert_eq!(r.phases(), Some([0.5, 0.25, 0.375, 0.125]));
    }

    /// Times and sizes are written to 3 decimals; the other figures as they are.
    #[test]
    fn record_rounds_times_and_sizes() {
        let r = Record {
            median_ms_per_step: 1.23456,
            median_ms_lookup: Some(0.0004),
            peak_rss_mb: Some(12.3456),
            median_unique_rows: 7.5,
            final_loss: -3.123456,
            load_1m: Some(1.23456),
            ..record()
        };
        let v: Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(v["median_ms_per_step"], 1.235);
        assert_eq!(v["median_ms_lookup"], 0.0);
        assert_eq!(v["peak_rss_mb"], 12.346);
        assert_eq!(v["baseline_rss_mb"], Value::Null);
        assert_eq!(v["median_unique_rows"], 7.5);
        assert_eq!(v["final_loss"], -3.123456);
        assert_eq!(v["load_1m"], 1.23456);
    }

    /// A line of the hand-written mapping this struct replaced (its keys in serde_json's
    /// sorted order, phases `null`, a NaN loss as `null`) parses; fields it lacked take
    /// their defaults.
    #[test]
    fn lines_of_the_earlier_format_parse() {
        let line = r#"{"backend":"wgpu","baseline_rss_mb":13.34,"batch":256,"dim":64,"final_loss":null,"functional_only":true,"fused_ndarray":false,"glibc_tunables":null,"impl":"burn-sparse","load_1m":4.72,"median_ms_backward":null,"median_ms_forward_backward":1.037,"median_ms_gradients":null,"median_ms_lookup":null,"median_ms_loss":null,"median_ms_optimizer_step":0.256,"median_ms_per_step":1.289,"median_unique_rows":133.0,"min_ms_per_step":1.216,"peak_rss_mb":17.715,"rows":1000,"steps":20,"table_and_moments_mb":0.732,"table_mb":0.244}"#;
        let r = Record::from_json(line).unwrap();
        assert_eq!(
            (r.imp.as_str(), r.rows, r.phases()),
            ("burn-sparse", 1000, None)
        );
        assert!(r.final_loss.is_nan() && r.functional_only);
        let older = r#"{"impl":"burn-adam","backend":"ndarray","rows":10,"dim":4,"batch":8,"steps":20,"median_ms_per_step":1.5,"median_ms_optimizer_step":0.25,"median_ms_forward_backward":1.25,"min_ms_per_step":1.0,"table_mb":0.1,"table_and_moments_mb":0.3,"median_unique_rows":7.0}"#;
        let r = Record::from_json(older).unwrap();
        assert!(r.final_loss.is_nan() && !r.fused_ndarray && r.peak_rss_mb.is_none());
    }

    /// The 0.2 line's records say so; the 0.1 line's lines have no `line` field.
    #[test]
    fn only_the_0_2_line_writes_its_line() {
        let v: Value = serde_json::from_str(&record().to_json()).unwrap();
        assert!(v.get("line").is_none());
        let r = Record {
            line: Some("0.2".into()),
            backend: "flex".into(),
            ..record()
        };
        assert!(r.to_json().contains(r#""line":"0.2""#));
        assert_eq!(Record::from_json(&r.to_json()).unwrap(), r);
    }

    #[test]
    fn torch_line_parses() {
        let line = r#"{"impl": "torch-sparse", "torch": "2.5.0", "threads": 2, "rows": 10000, "dim": 64, "batch": 4096, "median_ms_per_step": 1.2, "median_ms_optimizer_step": 0.4}"#;
        let t = TorchRecord::from_json(line, Some(300.0)).unwrap();
        assert_eq!(t.imp, "torch-sparse");
        assert_eq!(t.threads, 2);
        let v: Value = serde_json::from_str(&t.to_json()).unwrap();
        assert_eq!(v["peak_rss_mb"], 300.0);
        // The script's other fields pass through.
        assert_eq!(
            (v["dim"].clone(), v["torch"].clone()),
            (64.into(), "2.5.0".into())
        );
    }
}
