//! Shared helpers of the 0.2 line's tests: the conformance runner, which replays training
//! runs recorded from `torch.optim.SparseAdam` (the repository's one copy of the fixtures,
//! `crates/conformance/fixtures/`, format in its `README.md`) through this line's optimizers
//! and compares every recorded table and the final optimizer state with PyTorch's.
//!
//! - `mode: "lookup"` fixtures go through [`SparseEmbedding`] and its row gradients
//!   ([`collect_grads`]);
//! - `mode: "dense"` fixtures go through a stock `burn::nn::Embedding`, Burn's own
//!   `GradientsParams::from_grads`, and the dense path of the same rule.
//!
//! Each replays through either whole-model optimizer ([`Runner`]): this crate's
//! [`SparseAdamOptimizer`], or Burn's `ModuleOptimizer` over the [`SparseAdam`] rule (what
//! burn-train's `Learner` steps with), whose final state is read back from its burnpack
//! record.
//!
//! A value passes when `|ours − torch| ≤ 1e-5 + 1e-4·|torch|`; a fixture's *score* is its
//! worst `|ours − torch|` divided by that bound, so it passes when the score is at most 1.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use burn::module::{Module, Param};
use burn::nn::{Embedding, EmbeddingConfig};
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Gradients, Int, Tensor, TensorData};
use burn_sparse_adam::{
    SparseAdamConfig, SparseAdamOptimizer, SparseEmbedding, SparseEmbeddingConfig, collect_grads,
};
use serde::Deserialize;

/// Absolute part of the tolerance.
pub const ATOL: f64 = 1e-5;
/// Relative part of the tolerance.
pub const RTOL: f64 = 1e-4;

/// The backends the 0.2 line's tests run on, selected by [`TestBackend::ENV`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestBackend {
    /// burn-flex, Burn 0.22's CPU backend: the default.
    Flex,
    /// wgpu through CubeCL, with Burn's default features (fusion on).
    Wgpu,
}

impl TestBackend {
    /// The environment variable that selects the backend of a test run, the same as the
    /// 0.1 line's (`cargo xtask test-backends` sets it).
    pub const ENV: &'static str = "BURN_SPARSE_ADAM_BACKEND";

    /// Every backend, in the order reports list them.
    pub const ALL: [TestBackend; 2] = [TestBackend::Flex, TestBackend::Wgpu];

    /// The backend's name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            TestBackend::Flex => "flex",
            TestBackend::Wgpu => "wgpu",
        }
    }

    /// Parses a backend name.
    ///
    /// # Errors
    ///
    /// A message naming the unknown value and the known ones.
    pub fn parse(name: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|b| b.name() == name)
            .ok_or_else(|| format!("unknown backend {name:?}: expected \"flex\" or \"wgpu\""))
    }

    /// The backend selected by [`TestBackend::ENV`], `flex` when it is unset or empty.
    ///
    /// # Panics
    ///
    /// On an unknown value, naming it.
    pub fn selected() -> Self {
        match std::env::var(Self::ENV) {
            Ok(name) if !name.is_empty() => {
                Self::parse(&name).unwrap_or_else(|e| panic!("{}: {e}", Self::ENV))
            }
            _ => TestBackend::Flex,
        }
    }

    /// Whether the backend can run here; for wgpu, whether an adapter exists.
    ///
    /// # Errors
    ///
    /// Why it cannot, and how to fix it.
    pub fn probe(self) -> Result<(), String> {
        match self {
            TestBackend::Flex => Ok(()),
            TestBackend::Wgpu => probe_wgpu(),
        }
    }

    /// The backend's device, without autodiff.
    pub fn inner_device(self) -> Device {
        match self {
            TestBackend::Flex => Device::flex(),
            TestBackend::Wgpu => Device::wgpu(burn::tensor::DeviceKind::DefaultDevice),
        }
    }
}

/// Runs one tiny wgpu operation, catching the panic Burn raises when no adapter exists.
fn probe_wgpu() -> Result<(), String> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = std::panic::catch_unwind(|| {
        Tensor::<1>::ones([2], &TestBackend::Wgpu.inner_device())
            .sum()
            .into_scalar::<f32>()
    });
    std::panic::set_hook(hook);
    match result {
        Ok(2.0) => Ok(()),
        Ok(sum) => Err(format!("the wgpu adapter computed 1 + 1 = {sum}")),
        Err(panic) => {
            let why = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("wgpu panicked while starting");
            Err(format!(
                "no wgpu adapter ({why}); without a GPU, install Mesa's software Vulkan driver: apt-get install mesa-vulkan-drivers"
            ))
        }
    }
}

/// The device the tests train on: the backend [`TestBackend::selected`] (burn-flex by
/// default, wgpu with `BURN_SPARSE_ADAM_BACKEND=wgpu`), with autodiff.
pub fn device() -> Device {
    TestBackend::selected().inner_device().autodiff()
}

/// The selected backend's device without autodiff (for inference-only checks, or to add
/// autodiff with options such as gradient checkpointing).
pub fn plain_device() -> Device {
    TestBackend::selected().inner_device()
}

/// Whether the tests run on burn-flex: tests of the fused flex kernels (which only flex
/// has) return early elsewhere, saying so.
pub fn on_flex() -> bool {
    TestBackend::selected() == TestBackend::Flex
}

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

/// Which whole-model optimizer steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runner {
    /// This crate's `SparseAdamOptimizer` (`SparseAdamConfig::init_optimizer`).
    SparseAdamOptimizer,
    /// Burn's `ModuleOptimizer` over the `SparseAdam` rule (`SparseAdamConfig::init`).
    ModuleOptimizer,
}

impl Fixture {
    /// Reads a fixture file.
    ///
    /// # Errors
    ///
    /// A message naming the file.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot load {}: {e}", path.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("cannot load {}: {e}", path.display()))
    }

    /// The replay mode.
    ///
    /// # Errors
    ///
    /// For an unknown mode.
    pub fn mode(&self) -> Result<Mode, String> {
        match self.mode.as_str() {
            "lookup" => Ok(Mode::Lookup),
            "dense" => Ok(Mode::Dense),
            other => Err(format!("not supported: mode {other:?}")),
        }
    }

    /// Checks that every array has the size its shape implies.
    ///
    /// # Errors
    ///
    /// The first inconsistency.
    pub fn validate(&self) -> Result<(), String> {
        for (t, table) in self.tables.iter().enumerate() {
            if table.init.len() != table.rows * table.dim {
                return Err(format!("table {t}: init has {} values", table.init.len()));
            }
        }
        for (s, step) in self.steps.iter().enumerate() {
            for lookup in &step.lookups {
                let Some(table) = self.tables.get(lookup.table) else {
                    return Err(format!("step {}: no table {}", s + 1, lookup.table));
                };
                if lookup.upstream.len() != lookup.indices.len() * table.dim {
                    return Err(format!("step {}: upstream of the wrong size", s + 1));
                }
            }
        }
        for expected in &self.expected {
            if expected.after_step == 0
                || expected.after_step > self.steps.len()
                || expected.tables.len() != self.tables.len()
            {
                return Err(format!("expected after step {}", expected.after_step));
            }
        }
        if self.final_state.len() != self.tables.len() {
            return Err("final_state does not list every table".into());
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

/// The outcome of one fixture.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Report {
    /// The worst value compared; `None` when nothing was compared.
    pub worst: Option<Worst>,
    /// Values compared.
    pub values: usize,
    /// Exact disagreements that no tolerance excuses (a step count, a missing state).
    pub mismatches: Vec<String>,
}

impl Report {
    /// Whether every comparison passed.
    pub fn passed(&self) -> bool {
        self.mismatches.is_empty()
            && self.values > 0
            && self.worst.as_ref().is_none_or(|w| w.score <= 1.0)
    }

    fn compare(&mut self, place: impl Fn(usize) -> String, ours: &[f32], torch: &[f32]) {
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

/// Replays `fixture` on `device` through `runner` and compares with PyTorch.
///
/// # Errors
///
/// When the fixture is inconsistent or asks for an unknown mode.
pub fn replay(fixture: &Fixture, runner: Runner, device: &Device) -> Result<Report, String> {
    replay_as(fixture, runner, device, |config| config)
}

/// [`replay`] with the fixture's optimizer config changed by `adjust` (compact moments,
/// say), compared with the same PyTorch values.
///
/// # Errors
///
/// As [`replay`].
pub fn replay_as(
    fixture: &Fixture,
    runner: Runner,
    device: &Device,
    adjust: impl FnOnce(SparseAdamConfig) -> SparseAdamConfig,
) -> Result<Report, String> {
    fixture.validate()?;
    let config = adjust(fixture.optimizer_config());
    Ok(match fixture.mode()? {
        Mode::Lookup => replay_with::<SparseEmbedding>(fixture, config, runner, device),
        Mode::Dense => replay_with::<Embedding>(fixture, config, runner, device),
    })
}

/// A table under test.
trait Table: Module + 'static {
    const MODE: Mode;
    fn create(fixture: &Fixture, table: &FixtureTable, device: &Device) -> Self;
    fn lookup(&self, indices: Tensor<2, Int>) -> Tensor<3>;
    fn weight(&self) -> &Param<Tensor<2>>;
    /// The model is the `Vec` itself (a Burn module), not a slice.
    #[allow(clippy::ptr_arg)]
    fn grads(grads: Gradients, tables: &Vec<Self>) -> GradientsParams;
}

impl Table for SparseEmbedding {
    const MODE: Mode = Mode::Lookup;
    fn create(fixture: &Fixture, table: &FixtureTable, device: &Device) -> Self {
        SparseEmbeddingConfig::new(table.rows, table.dim)
            .with_padding_idx(fixture.padding_idx)
            .init(device)
    }
    fn lookup(&self, indices: Tensor<2, Int>) -> Tensor<3> {
        self.forward(indices)
    }
    fn weight(&self) -> &Param<Tensor<2>> {
        &self.weight
    }
    fn grads(grads: Gradients, tables: &Vec<Self>) -> GradientsParams {
        collect_grads(grads, tables)
    }
}

impl Table for Embedding {
    const MODE: Mode = Mode::Dense;
    fn create(_: &Fixture, table: &FixtureTable, device: &Device) -> Self {
        EmbeddingConfig::new(table.rows, table.dim).init(device)
    }
    fn lookup(&self, indices: Tensor<2, Int>) -> Tensor<3> {
        self.forward(indices)
    }
    fn weight(&self) -> &Param<Tensor<2>> {
        &self.weight
    }
    fn grads(grads: Gradients, tables: &Vec<Self>) -> GradientsParams {
        GradientsParams::from_grads(grads, tables)
    }
}

/// The whole-model optimizer of a replay.
enum Optim {
    Ours(SparseAdamOptimizer),
    Burn(ModuleOptimizer),
}

/// A table's final state: step count and moments, row-major.
type StateValues = (usize, Vec<f32>, Vec<f32>);

impl Optim {
    fn state(&self, table: &Param<Tensor<2>>) -> Option<StateValues> {
        match self {
            Optim::Ours(optim) => optim
                .state::<2>(table.id)
                .map(|s| (s.step, values(s.exp_avg), values(s.exp_avg_sq))),
            Optim::Burn(optim) => module_optimizer_states(optim).remove(&table.id.val()),
        }
    }
}

/// Every parameter's state in a `ModuleOptimizer` over the `SparseAdam` rule, read back from
/// its burnpack record (`OptimizerRecord`'s fields are crate-private in burn-optim 0.22):
/// entries `"{param_id}.step"`, `"{param_id}.exp_avg"`, `"{param_id}.exp_avg_sq"`.
pub fn module_optimizer_states(optim: &ModuleOptimizer) -> HashMap<u64, StateValues> {
    let bytes = optim.into_bytes().expect("the record serializes");
    let reader = burn_pack::Reader::from_bytes(bytes).expect("the record reads back");
    let steps: HashMap<u64, usize> = reader
        .scalars()
        .iter()
        .filter_map(|(name, value)| {
            let id = name.strip_suffix(".step")?.parse().ok()?;
            Some((id, usize::try_from(*value).ok()?))
        })
        .collect();
    let mut moments: HashMap<u64, (Vec<f32>, Vec<f32>)> = HashMap::new();
    for tensor in reader.into_tensors().expect("the tensors read back") {
        let (name, dtype, shape, _, bytes) = tensor.into_parts().expect("a tensor");
        let data = TensorData::from_bytes(bytes, shape, dtype);
        let data = data
            .convert::<f32>()
            .try_into_vec::<f32>()
            .expect("f32 moments");
        let (id, field) = name.split_once('.').expect("named {id}.{field}");
        let entry = moments.entry(id.parse().expect("an id")).or_default();
        match field {
            "exp_avg" => entry.0 = data,
            "exp_avg_sq" => entry.1 = data,
            other => panic!("unexpected state entry {other}"),
        }
    }
    steps
        .into_iter()
        .map(|(id, step)| {
            let (m, v) = moments.remove(&id).unwrap_or_default();
            (id, (step, m, v))
        })
        .collect()
}

fn replay_with<T: Table>(
    fixture: &Fixture,
    config: SparseAdamConfig,
    runner: Runner,
    device: &Device,
) -> Report {
    let mut tables: Vec<T> = fixture
        .tables
        .iter()
        .map(|spec| {
            // The fixture's weights replace the initial ones, the table staying a leaf that
            // requires its gradient.
            set_params(T::create(fixture, spec, device), vec![spec.init.clone()])
        })
        .collect();
    let mut optim = match runner {
        Runner::SparseAdamOptimizer => Optim::Ours(config.init_optimizer()),
        Runner::ModuleOptimizer => Optim::Burn(config.init()),
    };
    let mut report = Report::default();

    for (s, step) in fixture.steps.iter().enumerate() {
        let mut loss: Option<Tensor<1>> = None;
        for lookup in &step.lookups {
            let table = &tables[lookup.table];
            let dim = fixture.tables[lookup.table].dim;
            let term = loss_term(table, lookup, dim, fixture.padding_idx, device);
            loss = Some(match loss {
                Some(loss) => loss + term,
                None => term,
            });
        }
        let grads = match loss {
            Some(loss) => T::grads(loss.backward(), &tables),
            None => GradientsParams::new(),
        };
        tables = match &mut optim {
            Optim::Ours(optim) => match optim.try_step(step.lr, tables, grads) {
                Ok(tables) => tables,
                Err(err) => {
                    report
                        .mismatches
                        .push(format!("step {}: the optimizer refused it: {err}", s + 1));
                    return report;
                }
            },
            Optim::Burn(optim) => optim.step(step.lr, tables, grads),
        };
        for expected in fixture.expected.iter().filter(|e| e.after_step == s + 1) {
            for (t, (table, torch)) in tables.iter().zip(&expected.tables).enumerate() {
                let ours = values(table.weight().val());
                report.compare(
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
        match (optim.state(table.weight()), torch) {
            (None, None) => {}
            (Some((step, ..)), None) => report.mismatches.push(format!(
                "table {t}: we have a state after {step} steps, PyTorch has none"
            )),
            (None, Some(torch)) => report.mismatches.push(format!(
                "table {t}: PyTorch has a state after {} steps, we have none",
                torch.step
            )),
            (Some((step, exp_avg, exp_avg_sq)), Some(torch)) => {
                if step != torch.step {
                    report.mismatches.push(format!(
                        "table {t}: {step} steps taken, PyTorch took {}",
                        torch.step
                    ));
                }
                let dim = fixture.tables[t].dim;
                report.compare(
                    |i| format!("table {t} exp_avg[{}]", index_2d(i, dim)),
                    &exp_avg,
                    &torch.exp_avg,
                );
                report.compare(
                    |i| format!("table {t} exp_avg_sq[{}]", index_2d(i, dim)),
                    &exp_avg_sq,
                    &torch.exp_avg_sq,
                );
            }
        }
    }
    report
}

/// `module` with its float parameters replaced, in visiting order, by `values` (row-major,
/// one per parameter), each keeping its id and staying a leaf that requires its gradient.
///
/// # Panics
///
/// When `values` has fewer entries than `module` has float parameters, or an entry another
/// length than its parameter.
pub fn set_params<M: Module>(module: M, values: Vec<Vec<f32>>) -> M {
    struct SetParams(std::vec::IntoIter<Vec<f32>>);

    impl burn::module::ModuleMapper for SetParams {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let (id, value, mapper) = param.consume();
            let values = self.0.next().expect("values for every float parameter");
            let data = TensorData::new(values, value.shape());
            let values = Tensor::<D>::from_data(data, &value.device()).require_grad();
            Param::from_mapped_value(id, values, mapper)
        }
    }

    module.map(&mut SetParams(values.into_iter()))
}

/// `sum(table(indices) · upstream)`.
fn loss_term<T: Table>(
    table: &T,
    lookup: &FixtureLookup,
    dim: usize,
    padding_idx: Option<usize>,
    device: &Device,
) -> Tensor<1> {
    let n = lookup.indices.len();
    if n == 0 {
        // PyTorch's loss term of an empty lookup is an empty sum: zero, yet a gradient (an
        // empty one) for the table. For a lookup table, the sum of its empty output is that
        // term; for a dense table `0 · sum(weight)` gives its all-zero gradient.
        return match T::MODE {
            Mode::Lookup => table.lookup(Tensor::<2, Int>::empty([1, 0], device)).sum(),
            Mode::Dense => table.weight().val().sum().mul_scalar(0.0),
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
        Tensor::<2, Int>::from_data(TensorData::new(lookup.indices.clone(), [1, n]), device);
    let upstream = Tensor::<3>::from_data(TensorData::new(upstream, [1, n, dim]), device);
    (table.lookup(indices) * upstream).sum()
}

/// Asserts `|actual − expected| ≤ ATOL + RTOL·|expected|` element-wise, the fixtures'
/// tolerance, naming the first offending position.
#[track_caller]
pub fn assert_close(actual: &[f32], expected: &[f32], what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: lengths differ");
    for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        let bound = ATOL + RTOL * (e as f64).abs();
        assert!(
            ((a as f64) - (e as f64)).abs() <= bound,
            "{what}[{i}]: {a} vs {e} (tolerance {bound:e})"
        );
    }
}

/// A tensor's values, row-major.
pub fn values<const D: usize>(tensor: Tensor<D>) -> Vec<f32> {
    tensor
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
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

/// The repository's one copy of the fixtures, shared with the 0.1 line:
/// `crates/conformance/fixtures/` at the repository's root. `SPARSE_ADAM_FIXTURES` names
/// another directory (fixtures this runner has never seen).
pub fn fixture_dir() -> PathBuf {
    match std::env::var_os("SPARSE_ADAM_FIXTURES") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../crates/conformance/fixtures"),
    }
}
