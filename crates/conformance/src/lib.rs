//! Replays training runs recorded from `torch.optim.SparseAdam` (the fixtures of
//! `fixtures/`, format in `fixtures/README.md`) through this project's optimizer, and
//! compares every recorded table and the final optimizer state with PyTorch's.
//!
//! - `mode: "lookup"` fixtures go through [`SparseEmbedding`] and its row gradients;
//! - `mode: "dense"` fixtures go through a stock `burn::nn::Embedding`, Burn's own
//!   `GradientsParams::from_grads`, and the dense path of the same optimizer.
//!
//! A value passes when `|ours − torch| ≤ 1e-5 + 1e-4·|torch|`; a fixture's *score* is its
//! worst `|ours − torch|` divided by that bound, so it passes when the score is at most 1.
//!
//! Every compared value is also measured in units in the last place ([`ulp_distance`]): a
//! replay's [`Report::ulps`] counts the distances of the weights and of both moments per
//! bucket ([`UlpDistribution`]), and [`ulp_distances`] replays a whole set of fixtures for
//! their distribution.

use std::fmt;
use std::path::{Path, PathBuf};

use burn::module::{Module, Param};
use burn::nn::{Embedding, EmbeddingConfig, EmbeddingRecord};
use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Int, Tensor, TensorData};
use burn_sparse_adam::{
    collect_grads, SparseAdamConfig, SparseAdamOptimizer, SparseEmbedding, SparseEmbeddingConfig,
};
use serde::Deserialize;

/// Absolute part of the tolerance.
pub const ATOL: f64 = 1e-5;
/// Relative part of the tolerance.
pub const RTOL: f64 = 1e-4;

/// One recorded training run.
#[derive(Debug, Clone, Deserialize)]
pub struct Fixture {
    /// What the case is called.
    pub name: String,
    /// What it is about.
    #[serde(default)]
    pub description: String,
    /// `"lookup"` or `"dense"`.
    pub mode: String,
    /// The optimizer's hyperparameters.
    pub config: FixtureConfig,
    /// The row whose lookups give no gradient, if any.
    #[serde(default)]
    pub padding_idx: Option<usize>,
    /// The tables and their initial weights.
    pub tables: Vec<FixtureTable>,
    /// The steps, in order.
    pub steps: Vec<FixtureStep>,
    /// Every table after some steps.
    pub expected: Vec<Expected>,
    /// Each table's optimizer state after the last step (`null`: never had a gradient).
    pub final_state: Vec<Option<FinalState>>,
}

/// PyTorch's SparseAdam hyperparameters.
#[derive(Debug, Clone, Deserialize)]
pub struct FixtureConfig {
    /// `betas[0]`.
    pub beta_1: f64,
    /// `betas[1]`.
    pub beta_2: f64,
    /// `eps`.
    pub epsilon: f64,
    /// `maximize`.
    pub maximize: bool,
    /// Lazy decoupled weight decay (not PyTorch's SparseAdam: see the fixtures' README);
    /// absent from PyTorch's fixtures, which have none.
    #[serde(default)]
    pub weight_decay: f64,
}

/// A table and its initial weights.
#[derive(Debug, Clone, Deserialize)]
pub struct FixtureTable {
    /// Number of rows.
    pub rows: usize,
    /// Width of a row.
    pub dim: usize,
    /// `rows · dim` initial weights, row-major.
    pub init: Vec<f32>,
}

/// One optimizer step.
#[derive(Debug, Clone, Deserialize)]
pub struct FixtureStep {
    /// The step's learning rate.
    pub lr: f64,
    /// The lookups whose loss terms are summed before the backward pass.
    pub lookups: Vec<FixtureLookup>,
}

/// One lookup: the loss gets `sum(embedding(indices) · upstream)`.
#[derive(Debug, Clone, Deserialize)]
pub struct FixtureLookup {
    /// Which table.
    pub table: usize,
    /// Looked-up rows, repeats allowed.
    pub indices: Vec<i64>,
    /// `[len(indices), dim]`, row-major.
    pub upstream: Vec<f32>,
}

/// The tables after a step.
#[derive(Debug, Clone, Deserialize)]
pub struct Expected {
    /// 1-based count of steps done.
    pub after_step: usize,
    /// Every table, row-major.
    pub tables: Vec<Vec<f32>>,
}

/// A table's optimizer state after the last step.
#[derive(Debug, Clone, Deserialize)]
pub struct FinalState {
    /// Steps the table took.
    pub step: usize,
    /// First moments, row-major.
    pub exp_avg: Vec<f32>,
    /// Second moments, row-major.
    pub exp_avg_sq: Vec<f32>,
}

/// How a mode replays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Through `SparseEmbedding` and row gradients.
    Lookup,
    /// Through a stock `Embedding` and dense gradients.
    Dense,
}

/// Why a fixture could not be replayed at all.
#[derive(Debug, Clone, PartialEq)]
pub enum FixtureError {
    /// The file could not be read or parsed.
    Load {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The fixture is internally inconsistent.
    Invalid(String),
    /// The fixture asks for something this runner does not replay.
    Unsupported(String),
}

impl fmt::Display for FixtureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FixtureError::Load { path, reason } => {
                write!(f, "cannot load {}: {reason}", path.display())
            }
            FixtureError::Invalid(why) => write!(f, "invalid fixture: {why}"),
            FixtureError::Unsupported(why) => write!(f, "not supported: {why}"),
        }
    }
}

impl std::error::Error for FixtureError {}

impl Fixture {
    /// Reads a fixture file.
    ///
    /// # Errors
    ///
    /// [`FixtureError::Load`] naming the file.
    pub fn load(path: &Path) -> Result<Self, FixtureError> {
        let text = std::fs::read_to_string(path).map_err(|e| FixtureError::Load {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        serde_json::from_str(&text).map_err(|e| FixtureError::Load {
            path: path.to_owned(),
            reason: e.to_string(),
        })
    }

    /// The replay mode.
    ///
    /// # Errors
    ///
    /// [`FixtureError::Unsupported`] for an unknown mode.
    pub fn mode(&self) -> Result<Mode, FixtureError> {
        match self.mode.as_str() {
            "lookup" => Ok(Mode::Lookup),
            "dense" => Ok(Mode::Dense),
            other => Err(FixtureError::Unsupported(format!("mode {other:?}"))),
        }
    }

    /// Checks that every array has the size its shape implies.
    ///
    /// # Errors
    ///
    /// [`FixtureError::Invalid`] naming the first inconsistency.
    pub fn validate(&self) -> Result<(), FixtureError> {
        let invalid = |why: String| Err(FixtureError::Invalid(why));
        for (t, table) in self.tables.iter().enumerate() {
            if table.init.len() != table.rows * table.dim {
                return invalid(format!(
                    "table {t}: init has {} values, not rows·dim = {}",
                    table.init.len(),
                    table.rows * table.dim
                ));
            }
        }
        for (s, step) in self.steps.iter().enumerate() {
            for lookup in &step.lookups {
                let Some(table) = self.tables.get(lookup.table) else {
                    return invalid(format!("step {}: no table {}", s + 1, lookup.table));
                };
                if lookup.upstream.len() != lookup.indices.len() * table.dim {
                    return invalid(format!(
                        "step {}: table {}: upstream has {} values, not len(indices)·dim = {}",
                        s + 1,
                        lookup.table,
                        lookup.upstream.len(),
                        lookup.indices.len() * table.dim
                    ));
                }
            }
        }
        for expected in &self.expected {
            if expected.after_step == 0 || expected.after_step > self.steps.len() {
                return invalid(format!(
                    "expected after step {} of {}",
                    expected.after_step,
                    self.steps.len()
                ));
            }
            if expected.tables.len() != self.tables.len() {
                return invalid(format!(
                    "expected after step {} lists {} tables, not {}",
                    expected.after_step,
                    expected.tables.len(),
                    self.tables.len()
                ));
            }
        }
        if self.final_state.len() != self.tables.len() {
            return invalid(format!(
                "final_state lists {} tables, not {}",
                self.final_state.len(),
                self.tables.len()
            ));
        }
        Ok(())
    }

    fn optimizer_config(&self) -> SparseAdamConfig {
        SparseAdamConfig::new()
            .with_beta_1(self.config.beta_1)
            .with_beta_2(self.config.beta_2)
            .with_epsilon(self.config.epsilon)
            .with_maximize(self.config.maximize)
            .with_weight_decay(Some(self.config.weight_decay))
    }
}

/// The worst disagreement found, and where.
#[derive(Debug, Clone, PartialEq)]
pub struct Worst {
    /// `|ours − torch| / (ATOL + RTOL·|torch|)`.
    pub score: f64,
    /// Which value.
    pub place: String,
    /// Ours.
    pub ours: f64,
    /// PyTorch's.
    pub torch: f64,
}

/// The outcome of one fixture on one backend.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The worst value compared; `None` when nothing was compared.
    pub worst: Option<Worst>,
    /// Values compared.
    pub values: usize,
    /// Exact disagreements that no tolerance excuses (a step count, a missing state).
    pub mismatches: Vec<String>,
    /// The distances of the compared values in units in the last place.
    pub ulps: Ulps,
}

impl Report {
    /// Whether every comparison passed.
    pub fn passed(&self) -> bool {
        self.mismatches.is_empty()
            && self.values > 0
            && self.worst.as_ref().is_none_or(|w| w.score <= 1.0)
    }

    fn compare(
        &mut self,
        kind: ValueKind,
        place: impl Fn(usize) -> String,
        ours: &[f32],
        torch: &[f32],
    ) {
        if ours.len() != torch.len() {
            self.mismatches.push(format!(
                "{}: {} values, PyTorch has {}",
                place(0),
                ours.len(),
                torch.len()
            ));
            return;
        }
        for (i, (&o, &t)) in ours.iter().zip(torch).enumerate() {
            self.ulps.of(kind).add(o, t, || place(i));
            let (o, t) = (o as f64, t as f64);
            let score = if o == t {
                0.0
            } else {
                (o - t).abs() / (ATOL + RTOL * t.abs())
            };
            let score = if score.is_nan() { f64::INFINITY } else { score };
            self.values += 1;
            if self.worst.as_ref().is_none_or(|w| score > w.score) {
                self.worst = Some(Worst {
                    score,
                    place: place(i),
                    ours: o,
                    torch: t,
                });
            }
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.worst {
            Some(w) => write!(
                f,
                "worst {:.3} of tolerance at {} (ours {:e}, torch {:e}) over {} values",
                w.score, w.place, w.ours, w.torch, self.values
            )?,
            None => write!(f, "no values compared")?,
        }
        for m in &self.mismatches {
            write!(f, "; {m}")?;
        }
        Ok(())
    }
}

/// The distance between two `f32` in units in the last place: how many representable `f32`
/// lie between them, plus one (`0` when they are equal, `1` for neighbours).
///
/// Each value's bits are mapped to an integer whose order is the values' order (the
/// negative values' magnitudes negated), so the distance counts across zero too; `+0` and
/// `−0` are the same point, 0 apart. A NaN is 0 from another NaN and `u64::MAX` from any
/// number; the infinities are one step beyond the largest finite values.
pub fn ulp_distance(a: f32, b: f32) -> u64 {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => 0,
        (false, false) => ordered(a).abs_diff(ordered(b)),
        _ => u64::MAX,
    }
}

/// The position of `x` on the line of `f32` values: `0` for both zeros, `n` for the `n`-th
/// representable value above zero and `−n` for the `n`-th below.
fn ordered(x: f32) -> i64 {
    let magnitude = i64::from(x.to_bits() & 0x7fff_ffff);
    if x.is_sign_negative() {
        -magnitude
    } else {
        magnitude
    }
}

/// Which recorded values a distance is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    /// A table's weights after a step (`expected`).
    Weight,
    /// A table's first moments after the last step (`final_state`).
    ExpAvg,
    /// A table's second moments after the last step (`final_state`).
    ExpAvgSq,
}

/// Where the largest distance of a [`UlpDistribution`] is.
#[derive(Debug, Clone, PartialEq)]
pub struct UlpPlace {
    /// The value, as the conformance report names it (prefixed by the fixture's name in a
    /// distribution over several fixtures).
    pub place: String,
    /// Ours.
    pub ours: f32,
    /// PyTorch's.
    pub torch: f32,
}

/// How many values lie how many units in the last place from PyTorch's.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct UlpDistribution {
    /// Values per bucket of [`UlpDistribution::BUCKETS`].
    pub counts: [u64; 8],
    /// Values measured.
    pub values: u64,
    /// The largest distance.
    pub max: u64,
    /// Where the (first) largest distance is; `None` when no value is 1 ulp or more apart.
    pub max_at: Option<UlpPlace>,
}

impl UlpDistribution {
    /// The buckets: the distances from `.0` to `.1`, both included.
    pub const BUCKETS: [(u64, u64); 8] = [
        (0, 0),
        (1, 1),
        (2, 2),
        (3, 4),
        (5, 8),
        (9, 16),
        (17, 64),
        (65, u64::MAX),
    ];

    /// The buckets' names: `0`, `1`, `2`, `3-4`, `5-8`, `9-16`, `17-64`, `>64`.
    pub const LABELS: [&'static str; 8] = ["0", "1", "2", "3-4", "5-8", "9-16", "17-64", ">64"];

    /// Counts the distance between `ours` and `torch`; `place` names the value, asked for
    /// only when it is a new largest distance.
    pub fn add(&mut self, ours: f32, torch: f32, place: impl FnOnce() -> String) {
        let ulps = ulp_distance(ours, torch);
        let bucket = Self::BUCKETS
            .iter()
            .position(|&(lo, hi)| (lo..=hi).contains(&ulps))
            .expect("the buckets cover every u64");
        self.counts[bucket] += 1;
        self.values += 1;
        if ulps > self.max {
            self.max = ulps;
            self.max_at = Some(UlpPlace {
                place: place(),
                ours,
                torch,
            });
        }
    }

    /// Adds `other`'s counts to these; `prefix` goes before the name of its largest
    /// distance's place (a fixture's name).
    pub fn merge(&mut self, other: &UlpDistribution, prefix: &str) {
        for (count, other) in self.counts.iter_mut().zip(other.counts) {
            *count += other;
        }
        self.values += other.values;
        if other.max > self.max {
            self.max = other.max;
            self.max_at = other.max_at.clone().map(|at| UlpPlace {
                place: format!("{prefix}{}", at.place),
                ..at
            });
        }
    }

    /// The share of the values exactly equal to PyTorch's.
    pub fn exact_share(&self) -> f64 {
        if self.values == 0 {
            1.0
        } else {
            self.counts[0] as f64 / self.values as f64
        }
    }
}

impl fmt::Display for UlpDistribution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let counts: Vec<String> = Self::LABELS
            .iter()
            .zip(self.counts)
            .map(|(label, n)| format!("{label}: {n}"))
            .collect();
        write!(
            f,
            "{} values, ulps {}; max {}",
            self.values,
            counts.join(", "),
            self.max
        )?;
        if let Some(at) = &self.max_at {
            write!(
                f,
                " at {} (ours {:e}, torch {:e})",
                at.place, at.ours, at.torch
            )?;
        }
        Ok(())
    }
}

/// The [`UlpDistribution`]s of a replay, or of several: the weights and both moments.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Ulps {
    /// The weights after the recorded steps.
    pub weight: UlpDistribution,
    /// The first moments after the last step.
    pub exp_avg: UlpDistribution,
    /// The second moments after the last step.
    pub exp_avg_sq: UlpDistribution,
}

impl Ulps {
    /// The distribution of `kind`.
    pub fn of(&mut self, kind: ValueKind) -> &mut UlpDistribution {
        match kind {
            ValueKind::Weight => &mut self.weight,
            ValueKind::ExpAvg => &mut self.exp_avg,
            ValueKind::ExpAvgSq => &mut self.exp_avg_sq,
        }
    }

    /// Adds `other`'s distributions to these, naming its places with `prefix`.
    pub fn merge(&mut self, other: &Ulps, prefix: &str) {
        self.weight.merge(&other.weight, prefix);
        self.exp_avg.merge(&other.exp_avg, prefix);
        self.exp_avg_sq.merge(&other.exp_avg_sq, prefix);
    }

    /// Every value, whatever its kind.
    pub fn all(&self) -> UlpDistribution {
        let mut all = UlpDistribution::default();
        for part in [&self.weight, &self.exp_avg, &self.exp_avg_sq] {
            all.merge(part, "");
        }
        all
    }
}

impl fmt::Display for Ulps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "weight:     {}", self.weight)?;
        writeln!(f, "exp_avg:    {}", self.exp_avg)?;
        write!(f, "exp_avg_sq: {}", self.exp_avg_sq)
    }
}

/// Replays every fixture of `files` on backend `B` and returns the distances of our values
/// from PyTorch's in units in the last place: per fixture (named by its file's stem), and
/// over all of them (each largest distance's place prefixed by its fixture's name).
///
/// # Errors
///
/// The first fixture that cannot be loaded or replayed, or that fails beyond the tolerance
/// (its distances would measure a bug, not rounding), naming it.
pub fn ulp_distances<B: AutodiffBackend>(
    files: &[PathBuf],
    device: &B::Device,
) -> Result<(Vec<(String, Ulps)>, Ulps), String> {
    let mut per_fixture = Vec::new();
    let mut all = Ulps::default();
    for file in files {
        let name = file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let report = Fixture::load(file)
            .and_then(|fixture| replay::<B>(&fixture, device))
            .map_err(|e| format!("{name}: {e}"))?;
        if !report.passed() {
            return Err(format!("{name}: {report}"));
        }
        all.merge(&report.ulps, &format!("{name}: "));
        per_fixture.push((name, report.ulps));
    }
    Ok((per_fixture, all))
}

/// Replays `fixture` on backend `B` and compares with PyTorch.
///
/// # Errors
///
/// [`FixtureError`] when the fixture is inconsistent or asks for an unknown mode.
pub fn replay<B: AutodiffBackend>(
    fixture: &Fixture,
    device: &B::Device,
) -> Result<Report, FixtureError> {
    fixture.validate()?;
    match fixture.mode()? {
        Mode::Lookup => Ok(replay_with::<B, SparseEmbedding<B>>(fixture, device)),
        Mode::Dense => Ok(replay_with::<B, Embedding<B>>(fixture, device)),
    }
}

/// A table under test: a module whose record is `burn::nn::Embedding`'s.
trait Table<B: AutodiffBackend>:
    Module<B, Record = EmbeddingRecord<B>> + burn::module::AutodiffModule<B> + 'static
{
    const MODE: Mode;
    fn create(fixture: &Fixture, table: &FixtureTable, device: &B::Device) -> Self;
    fn lookup(&self, indices: Tensor<B, 2, Int>) -> Tensor<B, 3>;
    fn weight(&self) -> &Param<Tensor<B, 2>>;
    /// The model is the `Vec` itself (a Burn module), not a slice.
    #[allow(clippy::ptr_arg)]
    fn grads(grads: B::Gradients, tables: &Vec<Self>) -> GradientsParams;
}

impl<B: AutodiffBackend> Table<B> for SparseEmbedding<B> {
    const MODE: Mode = Mode::Lookup;
    fn create(fixture: &Fixture, table: &FixtureTable, device: &B::Device) -> Self {
        SparseEmbeddingConfig::new(table.rows, table.dim)
            .with_padding_idx(fixture.padding_idx)
            .init(device)
    }
    fn lookup(&self, indices: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        self.forward(indices)
    }
    fn weight(&self) -> &Param<Tensor<B, 2>> {
        &self.weight
    }
    fn grads(grads: B::Gradients, tables: &Vec<Self>) -> GradientsParams {
        collect_grads(grads, tables)
    }
}

impl<B: AutodiffBackend> Table<B> for Embedding<B> {
    const MODE: Mode = Mode::Dense;
    fn create(_: &Fixture, table: &FixtureTable, device: &B::Device) -> Self {
        EmbeddingConfig::new(table.rows, table.dim).init(device)
    }
    fn lookup(&self, indices: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        self.forward(indices)
    }
    fn weight(&self) -> &Param<Tensor<B, 2>> {
        &self.weight
    }
    fn grads(grads: B::Gradients, tables: &Vec<Self>) -> GradientsParams {
        GradientsParams::from_grads(grads, tables)
    }
}

fn replay_with<B: AutodiffBackend, T: Table<B>>(fixture: &Fixture, device: &B::Device) -> Report {
    let mut tables: Vec<T> = fixture
        .tables
        .iter()
        .map(|spec| {
            let init = Tensor::from_data(
                TensorData::new(spec.init.clone(), [spec.rows, spec.dim]),
                device,
            );
            let table = T::create(fixture, spec, device);
            table.load_record(EmbeddingRecord {
                weight: Param::from_tensor(init),
            })
        })
        .collect();
    let mut optim: SparseAdamOptimizer<Vec<T>, B> = fixture.optimizer_config().init();
    let mut report = Report {
        worst: None,
        values: 0,
        mismatches: Vec::new(),
        ulps: Ulps::default(),
    };

    for (s, step) in fixture.steps.iter().enumerate() {
        let mut loss: Option<Tensor<B, 1>> = None;
        let mut looked_up = false;
        for lookup in &step.lookups {
            looked_up = true;
            let table = &tables[lookup.table];
            let dim = fixture.tables[lookup.table].dim;
            let Some(term) = loss_term(table, lookup, dim, fixture.padding_idx, device) else {
                continue;
            };
            loss = Some(match loss {
                Some(loss) => loss + term,
                None => term,
            });
        }
        let grads = match loss {
            Some(loss) => T::grads(loss.backward(), &tables),
            // Only empty lookups: the loss is a constant, from which Burn cannot run a
            // backward pass, but the tables still got their (empty) gradients, which the
            // backward pass of any tracked scalar lets `collect_grads` pick up.
            None if looked_up => {
                let constant = Tensor::<B, 1>::zeros([1], device).require_grad();
                T::grads(constant.backward(), &tables)
            }
            None => GradientsParams::new(),
        };
        tables = match optim.try_step(step.lr, tables, grads) {
            Ok(tables) => tables,
            Err(err) => {
                report
                    .mismatches
                    .push(format!("step {}: the optimizer refused it: {err}", s + 1));
                return report;
            }
        };
        for expected in fixture.expected.iter().filter(|e| e.after_step == s + 1) {
            for (t, (table, torch)) in tables.iter().zip(&expected.tables).enumerate() {
                let ours = values(table.weight().val());
                report.compare(
                    ValueKind::Weight,
                    |i| {
                        format!(
                            "table {t} weight[{}] after step {}",
                            index_2d(i, fixture.tables[t].dim),
                            s + 1
                        )
                    },
                    &ours,
                    torch,
                );
            }
        }
    }

    for (t, (table, torch)) in tables.iter().zip(&fixture.final_state).enumerate() {
        let ours = optim.state::<2>(table.weight().id);
        match (ours, torch) {
            (None, None) => {}
            (Some(ours), None) => report.mismatches.push(format!(
                "table {t}: we have a state after {} steps, PyTorch has none",
                ours.step
            )),
            (None, Some(torch)) => report.mismatches.push(format!(
                "table {t}: PyTorch has a state after {} steps, we have none",
                torch.step
            )),
            (Some(ours), Some(torch)) => {
                if ours.step != torch.step {
                    report.mismatches.push(format!(
                        "table {t}: {} steps taken, PyTorch took {}",
                        ours.step, torch.step
                    ));
                }
                let dim = fixture.tables[t].dim;
                report.compare(
                    ValueKind::ExpAvg,
                    |i| format!("table {t} exp_avg[{}]", index_2d(i, dim)),
                    &values(ours.exp_avg),
                    &torch.exp_avg,
                );
                report.compare(
                    ValueKind::ExpAvgSq,
                    |i| format!("table {t} exp_avg_sq[{}]", index_2d(i, dim)),
                    &values(ours.exp_avg_sq),
                    &torch.exp_avg_sq,
                );
            }
        }
    }
    report
}

/// `sum(table(indices) · upstream)`, or `None` for an empty lookup of a lookup-mode table
/// whose output is not tracked (a constant zero, whose empty gradient the table recorded).
fn loss_term<B: AutodiffBackend, T: Table<B>>(
    table: &T,
    lookup: &FixtureLookup,
    dim: usize,
    padding_idx: Option<usize>,
    device: &B::Device,
) -> Option<Tensor<B, 1>> {
    let n = lookup.indices.len();
    if n == 0 {
        // PyTorch's loss term of an empty lookup is an empty sum: zero, yet a gradient (an
        // empty one) for the table. Where the lookup's output is tracked, that sum is the
        // term; Burn 0.21's wgpu cannot differentiate an empty sum, and there the table
        // leaves its empty output untracked and counts it as an empty row gradient by
        // itself. For a dense table `0 · sum(weight)` gives its all-zero gradient.
        return match T::MODE {
            Mode::Lookup => {
                let output = table.lookup(Tensor::<B, 2, Int>::empty([1, 0], device));
                output.is_require_grad().then(|| output.sum())
            }
            Mode::Dense => Some(table.weight().val().sum().mul_scalar(0.0)),
        };
    }
    let mut upstream = lookup.upstream.clone();
    if T::MODE == Mode::Dense {
        // A stock Embedding has no padding_idx: zeroing the upstream gradient of padding
        // lookups gives that row the zero gradient PyTorch's padding_idx gives it.
        if let Some(p) = padding_idx {
            for (i, &index) in lookup.indices.iter().enumerate() {
                if index == p as i64 {
                    upstream[i * dim..(i + 1) * dim].fill(0.0);
                }
            }
        }
    }
    let indices =
        Tensor::<B, 2, Int>::from_data(TensorData::new(lookup.indices.clone(), [1, n]), device);
    let upstream = Tensor::<B, 3>::from_data(TensorData::new(upstream, [1, n, dim]), device);
    Some((table.lookup(indices) * upstream).sum())
}

fn values<B: burn::tensor::backend::Backend>(tensor: Tensor<B, 2>) -> Vec<f32> {
    tensor
        .into_data()
        .convert::<f32>()
        .into_vec()
        .expect("float data")
}

fn index_2d(i: usize, dim: usize) -> String {
    format!("{}, {}", i / dim.max(1), i % dim.max(1))
}

/// The fixture files of `dir`, sorted by name.
///
/// # Errors
///
/// When the directory cannot be read, naming it.
pub fn fixture_files(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read fixture directory {}: {e}", dir.display()))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    Ok(files)
}

/// The repository's copy of the fixtures.
pub fn default_fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulp_distance_counts_representable_values() {
        assert_eq!(ulp_distance(1.0, 1.0), 0);
        assert_eq!(ulp_distance(1.0, f32::from_bits(1.0f32.to_bits() + 1)), 1);
        assert_eq!(ulp_distance(f32::from_bits(1.0f32.to_bits() + 3), 1.0), 3);
        assert_eq!(
            ulp_distance(-1.0, f32::from_bits((-1.0f32).to_bits() + 2)),
            2
        );
        // Across a power of two: 1.0's lower neighbour is half an ulp of 1.0 away.
        assert_eq!(ulp_distance(1.0, f32::from_bits(1.0f32.to_bits() - 1)), 1);
    }

    #[test]
    fn ulp_distance_across_zero() {
        assert_eq!(ulp_distance(0.0, -0.0), 0);
        let tiny = f32::from_bits(1);
        assert_eq!(ulp_distance(tiny, -tiny), 2);
        assert_eq!(ulp_distance(tiny, 0.0), 1);
        assert_eq!(ulp_distance(-tiny, -0.0), 1);
        assert_eq!(
            ulp_distance(f32::MIN_POSITIVE, -f32::MIN_POSITIVE),
            2 * u64::from(f32::MIN_POSITIVE.to_bits())
        );
    }

    #[test]
    fn ulp_distance_of_nan_and_infinities() {
        assert_eq!(ulp_distance(f32::NAN, f32::NAN), 0);
        assert_eq!(ulp_distance(f32::NAN, 1.0), u64::MAX);
        assert_eq!(ulp_distance(f32::INFINITY, f32::MAX), 1);
        assert_eq!(ulp_distance(f32::NEG_INFINITY, f32::MIN), 1);
    }

    #[test]
    fn distributions_bucket_merge_and_name_the_largest() {
        let mut d = UlpDistribution::default();
        let up = |x: f32, n: u32| f32::from_bits(x.to_bits() + n);
        for (n, place) in [(0, "a"), (1, "b"), (4, "c"), (70, "d"), (9, "e")] {
            d.add(up(1.0, n), 1.0, || place.to_string());
        }
        assert_eq!(d.counts, [1, 1, 0, 1, 0, 1, 0, 1]);
        assert_eq!((d.values, d.max), (5, 70));
        assert_eq!(d.max_at.as_ref().unwrap().place, "d");

        let mut e = UlpDistribution::default();
        e.add(up(2.0, 100), 2.0, || "f".to_string());
        d.merge(&e, "fixture: ");
        assert_eq!(d.counts, [1, 1, 0, 1, 0, 1, 0, 2]);
        assert_eq!((d.values, d.max), (6, 100));
        assert_eq!(d.max_at.as_ref().unwrap().place, "fixture: f");
        assert!((d.exact_share() - 1.0 / 6.0).abs() < 1e-12);
    }
}
