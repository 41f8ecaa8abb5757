//! Shared pieces of the integration tests in `tests/suite`: the conformance tolerance, small
//! models, and a plain reference implementation of SparseAdam to compare against.
//!
//! Every test body is generic over `B: AutodiffBackend` and runs on the backend that
//! `BURN_SPARSE_ADAM_BACKEND` selects (`cargo xtask test-backends` runs both), through
//! [`burn_sparse_adam::on_test_backend!`] (or [`with_test_backend!`] for a body that takes
//! arguments besides the device).

use std::any::Any;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use burn::module::{AutodiffModule, Module, ModuleVisitor, Param};
use burn::nn::{Embedding, EmbeddingConfig, EmbeddingRecord, Linear};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData};
use burn_sparse_adam::{
    collect_grads, SparseAdamConfig, SparseAdamOptimizer, SparseEmbedding, SparseEmbeddingConfig,
};

pub mod data_parallel;

pub use burn_sparse_adam::on_test_backend;
pub use burn_sparse_adam::testing::{NdArrayAutodiff, TestBackend, WgpuAutodiff};
pub use sparse_adam_conformance::{ATOL, RTOL};

/// Runs `f::<B>(&device, args…)` on the backend [`TestBackend::selected`]: the
/// [`on_test_backend!`] of a body that takes arguments besides the device.
#[macro_export]
macro_rules! with_test_backend {
    ($f:ident ( $($arg:expr),* $(,)? )) => {
        match $crate::TestBackend::selected() {
            $crate::TestBackend::NdArray => {
                $f::<$crate::NdArrayAutodiff>(&Default::default() $(, $arg)*)
            }
            $crate::TestBackend::Wgpu => {
                $f::<$crate::WgpuAutodiff>(&Default::default() $(, $arg)*)
            }
        }
    };
}

/// Asserts `|actual − expected| ≤ ATOL + RTOL·|expected|` element-wise, the conformance
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

/// Asserts that two float slices are bit-identical (so `-0.0 ≠ 0.0` and `NaN = NaN`), naming
/// the first offending position.
#[track_caller]
pub fn assert_bits_eq(actual: &[f32], expected: &[f32], what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: lengths differ");
    for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        assert!(
            a.to_bits() == e.to_bits(),
            "{what}[{i}]: {a:e} ({:#010x}) is not bit-identical to {e:e} ({:#010x})",
            a.to_bits(),
            e.to_bits()
        );
    }
}

/// The values of a float tensor, row-major, read back to the host.
pub fn values<B: Backend, const D: usize>(tensor: Tensor<B, D>) -> Vec<f32> {
    tensor
        .into_data()
        .convert::<f32>()
        .into_vec()
        .expect("float data")
}

/// Row `r` of a row-major `[n, d]` buffer.
pub fn row(values: &[f32], d: usize, r: usize) -> &[f32] {
    &values[r * d..(r + 1) * d]
}

/// A float tensor of `shape` from host values.
pub fn tensor<B: Backend, const D: usize>(
    values: &[f32],
    shape: [usize; D],
    device: &B::Device,
) -> Tensor<B, D> {
    Tensor::from_data(TensorData::new(values.to_vec(), shape), device)
}

/// An index tensor `[batch, seq]` from host indices.
pub fn indices<B: Backend>(
    values: &[i64],
    shape: [usize; 2],
    device: &B::Device,
) -> Tensor<B, 2, Int> {
    Tensor::from_data(TensorData::new(values.to_vec(), shape), device)
}

/// The summed row gradients of lookups into an `[n, d]` table: what the host knows the
/// table's gradient to be, for comparing the optimizer with a reference.
///
/// Lookup `j` looks up row `indices[j]` with the loss coefficients
/// `upstream[j·d..(j + 1)·d]` (the loss is `sum(table(indices) · upstream)`, so `upstream` is
/// row-major `[indices.len(), d]`, whatever the shape the lookups had in the model). Each
/// row's gradient is the sum of the coefficients of its lookups, duplicates summed in `f32`
/// in lookup order starting from `0.0`, as the optimizer's row path and PyTorch sum them
/// (with multiples of 1/8, see [`Rng::dyadic`], the sum is exact whatever the order).
/// Lookups of `padding_idx` add nothing and do not count as looking the row up.
///
/// Returns the gradient `[n, d]`, row-major (zero on rows not looked up), and per row
/// whether it was looked up (`padding_idx` excluded): the rows the row path touches, even
/// when their lookups cancel to zero.
///
/// # Panics
///
/// When `upstream.len() ≠ indices.len() · d`, or an index is outside `0..n`.
pub fn summed_row_grads(
    n: usize,
    d: usize,
    indices: &[i64],
    upstream: &[f32],
    padding_idx: Option<usize>,
) -> (Vec<f32>, Vec<bool>) {
    assert_eq!(
        upstream.len(),
        indices.len() * d,
        "upstream must be [indices.len(), d]"
    );
    let mut grad = vec![0.0f32; n * d];
    let mut looked_up = vec![false; n];
    for (j, &index) in indices.iter().enumerate() {
        let coefficients = &upstream[j * d..(j + 1) * d];
        let r = usize::try_from(index).expect("a non-negative index");
        assert!(r < n, "index {index} outside a table of {n} rows");
        if Some(r) == padding_idx {
            continue;
        }
        looked_up[r] = true;
        for (g, &c) in grad[r * d..(r + 1) * d].iter_mut().zip(coefficients) {
            *g += c;
        }
    }
    (grad, looked_up)
}

/// SplitMix64: a tiny deterministic generator, so that every model and batch of the suite
/// is reproducible without Burn's global RNG.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[lo, hi)`.
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        let unit = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        lo + (hi - lo) * unit
    }

    /// `len` values uniform in `[lo, hi)`.
    pub fn uniform_vec(&mut self, len: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..len).map(|_| self.uniform(lo, hi)).collect()
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// A non-zero multiple of 1/8 in `[-1, 1]`: sums of a few of them are exact in `f32`
    /// whatever the order, so gradients built from them are the same on every path.
    pub fn dyadic(&mut self) -> f32 {
        let k = self.below(16) as i32 - 8;
        let k = if k >= 0 { k + 1 } else { k };
        k as f32 / 8.0
    }

    /// `len` values of [`Rng::dyadic`].
    pub fn dyadic_vec(&mut self, len: usize) -> Vec<f32> {
        (0..len).map(|_| self.dyadic()).collect()
    }
}

/// A `SparseEmbedding` `[n, d]` holding exactly `init` (row-major).
pub fn sparse_table<B: Backend>(
    n: usize,
    d: usize,
    init: &[f32],
    padding_idx: Option<usize>,
    device: &B::Device,
) -> SparseEmbedding<B> {
    SparseEmbeddingConfig::new(n, d)
        .with_padding_idx(padding_idx)
        .init(device)
        .load_record(EmbeddingRecord {
            weight: Param::from_tensor(tensor(init, [n, d], device)),
        })
}

/// A stock `burn::nn::Embedding` `[n, d]` holding exactly `init` (row-major).
pub fn stock_table<B: Backend>(
    n: usize,
    d: usize,
    init: &[f32],
    device: &B::Device,
) -> Embedding<B> {
    EmbeddingConfig::new(n, d)
        .init(device)
        .load_record(EmbeddingRecord {
            weight: Param::from_tensor(tensor(init, [n, d], device)),
        })
}

/// A `burn::nn::Linear` `[d_in, d_out]` with bias, holding exactly `weight` and `bias`.
pub fn linear<B: Backend>(
    d_in: usize,
    d_out: usize,
    weight: &[f32],
    bias: &[f32],
    device: &B::Device,
) -> Linear<B> {
    Linear {
        weight: Param::from_tensor(tensor(weight, [d_in, d_out], device)),
        bias: Some(Param::from_tensor(tensor(bias, [d_out], device))),
    }
}

/// `sum(output · coefficients)`: a loss whose gradient with respect to `output` is exactly
/// `coefficients` (same shape as `output`, row-major).
pub fn weighted_sum<B: Backend, const D: usize>(
    output: Tensor<B, D>,
    coefficients: &[f32],
) -> Tensor<B, 1> {
    let shape = output.shape();
    let device = output.device();
    let c = Tensor::<B, D>::from_data(TensorData::new(coefficients.to_vec(), shape), &device);
    (output * c).sum()
}

/// A small model with an embedding table and a dense layer after it (the dense layer comes
/// first in the model, so that an error in the table is found after the dense layer was
/// planned): `head(table(indices))`, `[batch, seq, d_out]`.
#[derive(Module, Debug)]
pub struct SparseTower<B: Backend> {
    /// The dense layer, `[d, d_out]`.
    pub head: Linear<B>,
    /// The table, `[n, d]`.
    pub table: SparseEmbedding<B>,
}

/// [`SparseTower`] with a stock `burn::nn::Embedding`: the dense-gradient path.
#[derive(Module, Debug)]
pub struct DenseTower<B: Backend> {
    /// The dense layer, `[d, d_out]`.
    pub head: Linear<B>,
    /// The table, `[n, d]`.
    pub table: Embedding<B>,
}

/// What the tests need of a tower, whichever its table.
pub trait Tower<B: AutodiffBackend>: AutodiffModule<B> + 'static {
    /// `head(table(indices))`.
    fn forward(&self, indices: Tensor<B, 2, Int>) -> Tensor<B, 3>;
    /// The `GradientsParams` of a backward pass, the way this tower's path needs them.
    fn grads(&self, grads: B::Gradients) -> GradientsParams;
    /// The table's weight.
    fn table_weight(&self) -> &Param<Tensor<B, 2>>;
    /// The dense layer.
    fn head(&self) -> &Linear<B>;
}

impl<B: AutodiffBackend> Tower<B> for SparseTower<B> {
    fn forward(&self, indices: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        self.head.forward(self.table.forward(indices))
    }
    fn grads(&self, grads: B::Gradients) -> GradientsParams {
        collect_grads(grads, self)
    }
    fn table_weight(&self) -> &Param<Tensor<B, 2>> {
        &self.table.weight
    }
    fn head(&self) -> &Linear<B> {
        &self.head
    }
}

impl<B: AutodiffBackend> Tower<B> for DenseTower<B> {
    fn forward(&self, indices: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        self.head.forward(self.table.forward(indices))
    }
    fn grads(&self, grads: B::Gradients) -> GradientsParams {
        GradientsParams::from_grads(grads, self)
    }
    fn table_weight(&self) -> &Param<Tensor<B, 2>> {
        &self.table.weight
    }
    fn head(&self) -> &Linear<B> {
        &self.head
    }
}

/// The sizes and initial values of a tower, so that both kinds (and several backends) can be
/// built with the same numbers.
#[derive(Clone, Debug)]
pub struct TowerSpec {
    /// Rows of the table.
    pub n: usize,
    /// Width of the table.
    pub d: usize,
    /// Outputs of the head.
    pub d_out: usize,
    /// The table, `[n, d]`.
    pub table: Vec<f32>,
    /// The head's weight, `[d, d_out]`.
    pub head_weight: Vec<f32>,
    /// The head's bias, `[d_out]`.
    pub head_bias: Vec<f32>,
}

impl TowerSpec {
    /// Random values for the given sizes.
    pub fn random(n: usize, d: usize, d_out: usize, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        Self {
            n,
            d,
            d_out,
            table: rng.uniform_vec(n * d, -1.0, 1.0),
            head_weight: rng.uniform_vec(d * d_out, -1.0, 1.0),
            head_bias: rng.uniform_vec(d_out, -1.0, 1.0),
        }
    }

    /// The tower with a `SparseEmbedding`.
    pub fn sparse<B: Backend>(&self, device: &B::Device) -> SparseTower<B> {
        self.sparse_padded(None, device)
    }

    /// The tower with a `SparseEmbedding` whose `padding_idx` is `padding_idx`.
    pub fn sparse_padded<B: Backend>(
        &self,
        padding_idx: Option<usize>,
        device: &B::Device,
    ) -> SparseTower<B> {
        SparseTower {
            head: linear(
                self.d,
                self.d_out,
                &self.head_weight,
                &self.head_bias,
                device,
            ),
            table: sparse_table(self.n, self.d, &self.table, padding_idx, device),
        }
    }

    /// The tower with a stock `Embedding`.
    pub fn dense<B: Backend>(&self, device: &B::Device) -> DenseTower<B> {
        DenseTower {
            head: linear(
                self.d,
                self.d_out,
                &self.head_weight,
                &self.head_bias,
                device,
            ),
            table: stock_table(self.n, self.d, &self.table, device),
        }
    }
}

/// One training batch of a tower: indices `[batch, seq]` and the loss coefficients
/// `[batch, seq, d_out]` (the loss is `sum(tower(indices) · coefficients)`).
#[derive(Clone, Debug)]
pub struct Batch {
    /// The indices, row-major.
    pub indices: Vec<i64>,
    /// `[batch, seq]`.
    pub shape: [usize; 2],
    /// The loss coefficients, row-major.
    pub coefficients: Vec<f32>,
}

impl Batch {
    /// A random batch of `batch × seq` lookups among the first `rows` rows.
    pub fn random(rng: &mut Rng, rows: usize, batch: usize, seq: usize, d_out: usize) -> Self {
        Self {
            indices: (0..batch * seq).map(|_| rng.below(rows) as i64).collect(),
            shape: [batch, seq],
            coefficients: rng.uniform_vec(batch * seq * d_out, -1.0, 1.0),
        }
    }

    /// The loss of `tower` on this batch.
    pub fn loss<B: AutodiffBackend, T: Tower<B>>(
        &self,
        tower: &T,
        device: &B::Device,
    ) -> Tensor<B, 1> {
        let output = tower.forward(indices(&self.indices, self.shape, device));
        weighted_sum(output, &self.coefficients)
    }

    /// The gradients of `tower` on this batch.
    pub fn grads<B: AutodiffBackend, T: Tower<B>>(
        &self,
        tower: &T,
        device: &B::Device,
    ) -> GradientsParams {
        tower.grads(self.loss(tower, device).backward())
    }
}

/// A copy of the gradients of `module`'s parameters in `grads` (`GradientsParams` is not
/// `Clone`; its tensors are).
pub fn copy_grads<B: AutodiffBackend, M: AutodiffModule<B>>(
    grads: &GradientsParams,
    module: &M,
) -> GradientsParams {
    struct Copier<'a, B> {
        from: &'a GradientsParams,
        to: GradientsParams,
        backend: PhantomData<B>,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Copier<'_, B> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            if let Some(grad) = self.from.get::<B::InnerBackend, D>(param.id) {
                self.to.register(param.id, grad);
            }
        }
    }
    let mut copier = Copier::<B> {
        from: grads,
        to: GradientsParams::new(),
        backend: PhantomData,
    };
    module.visit(&mut copier);
    copier.to
}

/// Every float parameter of a module, flattened, in the module's order: what "the model is
/// unchanged" compares.
pub fn param_values<B: Backend, M: Module<B>>(module: &M) -> Vec<Vec<f32>> {
    struct Reader<B> {
        values: Vec<Vec<f32>>,
        backend: PhantomData<B>,
    }
    impl<B: Backend> ModuleVisitor<B> for Reader<B> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            self.values.push(values(param.val()));
        }
    }
    let mut reader = Reader::<B> {
        values: Vec::new(),
        backend: PhantomData,
    };
    module.visit(&mut reader);
    reader.values
}

/// Asserts that two modules' parameters are bit-identical.
#[track_caller]
pub fn assert_params_bits_eq(actual: &[Vec<f32>], expected: &[Vec<f32>], what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: number of parameters");
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert_bits_eq(a, e, &format!("{what}: parameter {i}"));
    }
}

/// Asserts that two modules' parameters agree within the conformance tolerance.
#[track_caller]
pub fn assert_params_close(actual: &[Vec<f32>], expected: &[Vec<f32>], what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: number of parameters");
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert_close(a, e, &format!("{what}: parameter {i}"));
    }
}

/// The optimizer state of one parameter, read back: `(step, exp_avg, exp_avg_sq)`.
pub type StateValues = (usize, Vec<f32>, Vec<f32>);

/// A model's parameters and its optimizer's states, read back ([`param_values`],
/// [`state_values`]).
pub type Snapshot = (Vec<Vec<f32>>, Vec<Option<StateValues>>);

/// The [`Snapshot`] of `model` and `optim`.
pub fn snapshot<B: AutodiffBackend, M: AutodiffModule<B> + 'static>(
    optim: &SparseAdamOptimizer<M, B>,
    model: &M,
) -> Snapshot {
    (param_values(model), state_values(optim, model))
}

/// The optimizer state of every float parameter of `module`, in the module's order (`None`
/// for a parameter that has not stepped).
pub fn state_values<B: AutodiffBackend, M: AutodiffModule<B> + 'static>(
    optim: &SparseAdamOptimizer<M, B>,
    module: &M,
) -> Vec<Option<StateValues>> {
    struct Reader<'a, M, B: AutodiffBackend> {
        optim: &'a SparseAdamOptimizer<M, B>,
        states: Vec<Option<StateValues>>,
    }
    impl<M: AutodiffModule<B> + 'static, B: AutodiffBackend> ModuleVisitor<B> for Reader<'_, M, B> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let state = self
                .optim
                .state::<D>(param.id)
                .map(|s| (s.step, values(s.exp_avg), values(s.exp_avg_sq)));
            self.states.push(state);
        }
    }
    let mut reader = Reader {
        optim,
        states: Vec::new(),
    };
    module.visit(&mut reader);
    reader.states
}

/// Asserts that two lists of states are bit-identical (steps equal, moments bit for bit).
#[track_caller]
pub fn assert_states_bits_eq(
    actual: &[Option<StateValues>],
    expected: &[Option<StateValues>],
    what: &str,
) {
    assert_eq!(actual.len(), expected.len(), "{what}: number of parameters");
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        match (a, e) {
            (None, None) => {}
            (Some((sa, ma, va)), Some((se, me, ve))) => {
                assert_eq!(sa, se, "{what}: step count of parameter {i}");
                assert_bits_eq(ma, me, &format!("{what}: exp_avg of parameter {i}"));
                assert_bits_eq(va, ve, &format!("{what}: exp_avg_sq of parameter {i}"));
            }
            _ => panic!(
                "{what}: parameter {i} has a state on one side only ({} vs {})",
                a.is_some(),
                e.is_some()
            ),
        }
    }
}

/// Asserts that two lists of states agree: steps equal, moments within the conformance
/// tolerance.
#[track_caller]
pub fn assert_states_close(
    actual: &[Option<StateValues>],
    expected: &[Option<StateValues>],
    what: &str,
) {
    assert_eq!(actual.len(), expected.len(), "{what}: number of parameters");
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        match (a, e) {
            (None, None) => {}
            (Some((sa, ma, va)), Some((se, me, ve))) => {
                assert_eq!(sa, se, "{what}: step count of parameter {i}");
                assert_close(ma, me, &format!("{what}: exp_avg of parameter {i}"));
                assert_close(va, ve, &format!("{what}: exp_avg_sq of parameter {i}"));
            }
            _ => panic!(
                "{what}: parameter {i} has a state on one side only ({} vs {})",
                a.is_some(),
                e.is_some()
            ),
        }
    }
}

/// The message of a caught panic.
pub fn panic_message(payload: Box<dyn Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(message) => *message,
        Err(payload) => match payload.downcast::<&'static str>() {
            Ok(message) => message.to_string(),
            Err(_) => "<a panic without a message>".to_string(),
        },
    }
}

/// Runs `f`, which must panic, and returns its panic message.
#[track_caller]
pub fn expect_panic<R>(f: impl FnOnce() -> R) -> String {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(_) => panic!("expected a panic, but the call returned"),
        Err(payload) => panic_message(payload),
    }
}

/// A fresh directory under the system's temporary directory, removed when dropped.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates `…/burn-sparse-adam-tests-<tag>-<pid>-<n>`.
    pub fn new(tag: &str) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = std::env::temp_dir().join(format!(
            "burn-sparse-adam-tests-{tag}-{}-{n}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&path).expect("create a temporary directory");
        Self(path)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A plain host implementation of `torch.optim.SparseAdam` in `f64`, written from PyTorch's
/// `_functional.sparse_adam`, to compare the optimizer against.
#[derive(Clone, Debug)]
pub struct RefSparseAdam {
    /// `betas[0]`.
    pub beta_1: f64,
    /// `betas[1]`.
    pub beta_2: f64,
    /// `eps`.
    pub epsilon: f64,
    /// `maximize`.
    pub maximize: bool,
    /// Lazy decoupled weight decay (not PyTorch's SparseAdam): a touched row is multiplied
    /// by `1 − lr·weight_decay` before its update.
    pub weight_decay: f64,
}

impl Default for RefSparseAdam {
    fn default() -> Self {
        Self {
            beta_1: 0.9,
            beta_2: 0.999,
            epsilon: 1e-8,
            maximize: false,
            weight_decay: 0.0,
        }
    }
}

impl RefSparseAdam {
    /// The crate's configuration with these hyperparameters.
    pub fn config(&self) -> SparseAdamConfig {
        SparseAdamConfig::new()
            .with_beta_1(self.beta_1)
            .with_beta_2(self.beta_2)
            .with_epsilon(self.epsilon)
            .with_maximize(self.maximize)
            .with_weight_decay(Some(self.weight_decay))
    }
}

/// The state of one parameter of [`RefSparseAdam`], with the parameter itself.
#[derive(Clone, Debug)]
pub struct RefParam {
    /// Row width: the parameter is `[values.len() / d, d]`.
    pub d: usize,
    /// The parameter.
    pub values: Vec<f64>,
    /// `state["step"]`.
    pub step: usize,
    /// `exp_avg`.
    pub exp_avg: Vec<f64>,
    /// `exp_avg_sq`.
    pub exp_avg_sq: Vec<f64>,
}

impl RefParam {
    /// A parameter of rows of width `d`, with zero moments and no step.
    pub fn new(values: &[f32], d: usize) -> Self {
        Self {
            d,
            values: values.iter().map(|&v| v as f64).collect(),
            step: 0,
            exp_avg: vec![0.0; values.len()],
            exp_avg_sq: vec![0.0; values.len()],
        }
    }

    /// The parameter in `f32`.
    pub fn values_f32(&self) -> Vec<f32> {
        self.values.iter().map(|&v| v as f32).collect()
    }

    /// `exp_avg` in `f32`.
    pub fn exp_avg_f32(&self) -> Vec<f32> {
        self.exp_avg.iter().map(|&v| v as f32).collect()
    }

    /// `exp_avg_sq` in `f32`.
    pub fn exp_avg_sq_f32(&self) -> Vec<f32> {
        self.exp_avg_sq.iter().map(|&v| v as f32).collect()
    }
}

impl RefSparseAdam {
    /// One step with `grad` (the parameter's shape) whose touched rows are `touched`.
    pub fn step_rows(&self, lr: f64, param: &mut RefParam, grad: &[f32], touched: &[bool]) {
        let d = param.d;
        assert_eq!(grad.len(), param.values.len());
        assert_eq!(touched.len() * d, grad.len());
        param.step += 1;
        let t = param.step as f64;
        let bias_correction_1 = 1.0 - self.beta_1.powf(t);
        let bias_correction_2 = 1.0 - self.beta_2.powf(t);
        let step_size = lr * bias_correction_2.sqrt() / bias_correction_1;
        for (r, _) in touched.iter().enumerate().filter(|(_, &t)| t) {
            let lanes = r * d..(r + 1) * d;
            let rows = param.values[lanes.clone()]
                .iter_mut()
                .zip(&mut param.exp_avg[lanes.clone()])
                .zip(&mut param.exp_avg_sq[lanes.clone()])
                .zip(&grad[lanes]);
            for (((p, m), v), &g) in rows {
                *p *= 1.0 - lr * self.weight_decay;
                let g = if self.maximize { -g as f64 } else { g as f64 };
                *m += (g - *m) * (1.0 - self.beta_1);
                *v += (g * g - *v) * (1.0 - self.beta_2);
                *p -= step_size * *m / (v.sqrt() + self.epsilon);
            }
        }
    }

    /// One step with a dense gradient: a row is touched iff any entry of its gradient is
    /// non-zero (PyTorch's `grad.to_sparse(1)`).
    pub fn step_dense(&self, lr: f64, param: &mut RefParam, grad: &[f32]) {
        let touched = touched_rows(grad, param.d);
        self.step_rows(lr, param, grad, &touched);
    }
}

/// The state of one parameter of [`RefSparseAdam`]'s `float32` steps: everything in
/// `float32`, as PyTorch keeps it.
#[derive(Clone, Debug)]
pub struct RefParam32 {
    /// Row width.
    pub d: usize,
    /// The parameter.
    pub values: Vec<f32>,
    /// `state["step"]`.
    pub step: usize,
    /// `exp_avg`.
    pub exp_avg: Vec<f32>,
    /// `exp_avg_sq`.
    pub exp_avg_sq: Vec<f32>,
}

impl RefParam32 {
    /// A parameter of rows of width `d`, with zero moments and no step.
    pub fn new(values: &[f32], d: usize) -> Self {
        Self {
            d,
            values: values.to_vec(),
            step: 0,
            exp_avg: vec![0.0; values.len()],
            exp_avg_sq: vec![0.0; values.len()],
        }
    }

    /// The parameter.
    pub fn values_f32(&self) -> Vec<f32> {
        self.values.clone()
    }

    /// `exp_avg`.
    pub fn exp_avg_f32(&self) -> Vec<f32> {
        self.exp_avg.clone()
    }

    /// `exp_avg_sq`.
    pub fn exp_avg_sq_f32(&self) -> Vec<f32> {
        self.exp_avg_sq.clone()
    }
}

impl RefSparseAdam {
    /// One step of `torch.optim.SparseAdam` on the touched rows in PyTorch's own `float32`
    /// arithmetic, written from `torch/optim/_functional.py::sparse_adam`: the Python floats
    /// (`1 − β`, `eps`, the bias-corrected step size) are computed in double precision and
    /// meet the tensors as `float32`; every tensor operation rounds to `float32`.
    ///
    /// The `f64` [`RefSparseAdam::step_rows`] is the exact formula; this one is what PyTorch
    /// computes, which is what random configurations must be held to: with `β2 = 0` and a
    /// gradient falling from 0.9 to 0.004, `v + (g² − v)(1 − β2)` cancels in `float32`, and
    /// PyTorch (and this crate) land 1.7e-4 away from the exact value.
    pub fn step_rows_f32(&self, lr: f64, p: &mut RefParam32, grad: &[f32], touched: &[bool]) {
        let d = p.d;
        p.step += 1;
        let t = p.step as f64;
        let step_size = lr * (1.0 - self.beta_2.powf(t)).sqrt() / (1.0 - self.beta_1.powf(t));
        let (one_minus_beta_1, one_minus_beta_2) =
            ((1.0 - self.beta_1) as f32, (1.0 - self.beta_2) as f32);
        let (eps, neg_step_size) = (self.epsilon as f32, (-step_size) as f32);
        let decay = (1.0 - lr * self.weight_decay) as f32;
        let entries = (0..touched.len())
            .filter(|&r| touched[r])
            .flat_map(|r| r * d..(r + 1) * d);
        for i in entries {
            let g = if self.maximize { -grad[i] } else { grad[i] };
            let (m, v) = (p.exp_avg[i], p.exp_avg_sq[i]);
            let exp_avg_update = (g - m) * one_minus_beta_1;
            let exp_avg_sq_update = (g * g - v) * one_minus_beta_2;
            let numer = exp_avg_update + m;
            let denom = (exp_avg_sq_update + v).sqrt() + eps;
            p.exp_avg[i] = m + exp_avg_update;
            p.exp_avg_sq[i] = v + exp_avg_sq_update;
            // PyTorch's AdamW: `param.mul_(1 - lr * weight_decay)`, then the update.
            p.values[i] = p.values[i] * decay + neg_step_size * (numer / denom);
        }
    }

    /// [`RefSparseAdam::step_rows_f32`] with a dense gradient: a row is touched iff any
    /// entry is non-zero.
    pub fn step_dense_f32(&self, lr: f64, p: &mut RefParam32, grad: &[f32]) {
        let touched = touched_rows(grad, p.d);
        self.step_rows_f32(lr, p, grad, &touched);
    }
}

/// For each row of width `d`, whether any entry is non-zero.
pub fn touched_rows(grad: &[f32], d: usize) -> Vec<bool> {
    grad.chunks(d)
        .map(|r| r.iter().any(|&g| g != 0.0))
        .collect()
}

// ---- Split losses, references of a whole tower, record snapshots ---------------------------
// (shared by the suite's groups, hooks and robustness modules)

/// A tower whose table can be looked up on its own.
pub trait SplitTower<B: AutodiffBackend>: Tower<B> {
    /// `table(indices)`, `[batch, seq, d]`.
    fn table_forward(&self, indices: Tensor<B, 2, Int>) -> Tensor<B, 3>;
}

impl<B: AutodiffBackend> SplitTower<B> for SparseTower<B> {
    fn table_forward(&self, indices: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        self.table.forward(indices)
    }
}

impl<B: AutodiffBackend> SplitTower<B> for DenseTower<B> {
    fn table_forward(&self, indices: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        self.table.forward(indices)
    }
}

/// A batch whose loss keeps a tower's table and head apart, so that the host knows every
/// gradient exactly: `sum(table(indices) · c) + sum(head(x) · e)`, with `indices` `[1, k]`,
/// `c` `[1, k, d]`, `x` `[r, d]` and `e` `[r, d_out]`. The head's part is left out when
/// `x` is empty (the head then has no gradient). With values that are multiples of 1/8
/// (see [`Rng::dyadic`]) every gradient is exact in `f32`, whatever the order of the sums.
#[derive(Clone, Debug)]
pub struct SplitBatch {
    /// The table's lookups, `[1, k]`.
    pub indices: Vec<i64>,
    /// The coefficients of the table's output, `[1, k, d]`.
    pub table_coefficients: Vec<f32>,
    /// The head's input, `[r, d]`, row-major.
    pub head_input: Vec<f32>,
    /// The coefficients of the head's output, `[r, d_out]`.
    pub head_coefficients: Vec<f32>,
}

impl SplitBatch {
    /// `k` random lookups among the first `rows` rows of `spec`'s table and two random rows
    /// of head input, all dyadic.
    pub fn random(rng: &mut Rng, spec: &TowerSpec, k: usize, rows: usize) -> Self {
        Self {
            indices: (0..k).map(|_| rng.below(rows) as i64).collect(),
            table_coefficients: rng.dyadic_vec(k * spec.d),
            head_input: rng.dyadic_vec(2 * spec.d),
            head_coefficients: rng.dyadic_vec(2 * spec.d_out),
        }
    }

    /// The same batch without the head's part: only the table has a gradient.
    pub fn table_only(mut self) -> Self {
        self.head_input.clear();
        self.head_coefficients.clear();
        self
    }

    /// The loss of `tower` on this batch.
    pub fn loss<B: AutodiffBackend, T: SplitTower<B>>(
        &self,
        tower: &T,
        device: &B::Device,
    ) -> Tensor<B, 1> {
        let k = self.indices.len();
        let table = weighted_sum(
            tower.table_forward(indices(&self.indices, [1, k], device)),
            &self.table_coefficients,
        );
        if self.head_input.is_empty() {
            return table;
        }
        let head = tower.head();
        let d = head.weight.dims()[0];
        let x = tensor::<B, 2>(&self.head_input, [self.head_input.len() / d, d], device);
        table + weighted_sum(head.forward(x), &self.head_coefficients)
    }

    /// The gradients of `tower` on this batch, the way its path needs them.
    pub fn grads<B: AutodiffBackend, T: SplitTower<B>>(
        &self,
        tower: &T,
        device: &B::Device,
    ) -> GradientsParams {
        tower.grads(self.loss(tower, device).backward())
    }

    /// The table's summed gradient `[n, d]` and, per row, whether it was looked up
    /// (`padding_idx` excluded: it gets no gradient).
    pub fn table_grad(
        &self,
        n: usize,
        d: usize,
        padding_idx: Option<usize>,
    ) -> (Vec<f32>, Vec<bool>) {
        summed_row_grads(n, d, &self.indices, &self.table_coefficients, padding_idx)
    }

    /// The head's gradients: the weight's `xᵀ·e` (`[d, d_out]`) and the bias' `Σ e`.
    pub fn head_grads(&self, d: usize, d_out: usize) -> (Vec<f32>, Vec<f32>) {
        let r = self.head_input.len() / d;
        let mut weight = vec![0.0f32; d * d_out];
        let mut bias = vec![0.0f32; d_out];
        for s in 0..r {
            for j in 0..d_out {
                let e = self.head_coefficients[s * d_out + j];
                bias[j] += e;
                for i in 0..d {
                    weight[i * d_out + j] += self.head_input[s * d + i] * e;
                }
            }
        }
        (weight, bias)
    }
}

/// A twin of `module`: the same parameter ids and values, but row-gradient tapes of its own
/// (a clone shares them), so that two runs can be stepped side by side.
pub fn twin<B: AutodiffBackend, M: AutodiffModule<B>>(module: &M) -> M {
    M::from_inner(module.valid())
}

/// The hyperparameters and learning rate one parameter steps with in [`RefTower::step`].
pub type RefHyper<'a> = (&'a RefSparseAdam, f64);

/// [`RefSparseAdam`] over a whole [`TowerSpec`] tower: the head's weight and bias (dense
/// gradients) and the table, in the model's order.
#[derive(Clone, Debug)]
pub struct RefTower {
    /// The head's weight, rows of width `d_out`.
    pub head_weight: RefParam,
    /// The head's bias, rows of width 1.
    pub head_bias: RefParam,
    /// The table, rows of width `d`.
    pub table: RefParam,
    /// The table's `padding_idx`.
    pub padding_idx: Option<usize>,
    /// Whether the table takes the row path (a looked-up row is touched) or the dense path
    /// (a row with a non-zero gradient is).
    pub table_rows: bool,
    spec: TowerSpec,
}

impl RefTower {
    /// The reference of `spec`'s tower; `table_rows` as [`RefTower::table_rows`].
    pub fn new(spec: &TowerSpec, padding_idx: Option<usize>, table_rows: bool) -> Self {
        let mut table = spec.table.clone();
        if let Some(p) = padding_idx {
            table[p * spec.d..(p + 1) * spec.d].fill(0.0);
        }
        Self {
            head_weight: RefParam::new(&spec.head_weight, spec.d_out),
            head_bias: RefParam::new(&spec.head_bias, 1),
            table: RefParam::new(&table, spec.d),
            padding_idx,
            table_rows,
            spec: spec.clone(),
        }
    }

    /// One step on `batch`, each parameter with its own hyperparameters and learning rate
    /// (`[head weight, head bias, table]`); the head only steps when the batch has a head part.
    pub fn step(&mut self, batch: &SplitBatch, hyper: [RefHyper<'_>; 3]) {
        let TowerSpec { n, d, d_out, .. } = self.spec;
        if !batch.head_input.is_empty() {
            let (gw, gb) = batch.head_grads(d, d_out);
            hyper[0]
                .0
                .step_dense(hyper[0].1, &mut self.head_weight, &gw);
            hyper[1].0.step_dense(hyper[1].1, &mut self.head_bias, &gb);
        }
        let (grad, looked_up) = batch.table_grad(n, d, self.padding_idx);
        if self.table_rows {
            hyper[2]
                .0
                .step_rows(hyper[2].1, &mut self.table, &grad, &looked_up);
        } else {
            hyper[2].0.step_dense(hyper[2].1, &mut self.table, &grad);
        }
    }

    /// The parameters, in the model's order (as [`param_values`] reads them).
    pub fn params(&self) -> Vec<Vec<f32>> {
        [&self.head_weight, &self.head_bias, &self.table]
            .iter()
            .map(|p| p.values_f32())
            .collect()
    }

    /// The states, in the model's order (as [`state_values`] reads them).
    pub fn states(&self) -> Vec<Option<StateValues>> {
        [&self.head_weight, &self.head_bias, &self.table]
            .iter()
            .map(|p| (p.step > 0).then(|| (p.step, p.exp_avg_f32(), p.exp_avg_sq_f32())))
            .collect()
    }
}

/// One saved state, read back: `(step, shape, exp_avg, exp_avg_sq)`.
pub type SavedState = (usize, Vec<usize>, Vec<f32>, Vec<f32>);

/// Every state of a record (or of an optimizer, through `to_record`), by parameter id,
/// whatever its rank: what "the optimizer state is unchanged" compares, including states of
/// parameters that the model does not have.
pub fn saved_states<B: AutodiffBackend>(
    states: &burn_sparse_adam::record::ParamStates<B>,
) -> std::collections::BTreeMap<burn::module::ParamId, SavedState> {
    use burn::optim::record::{AdaptorRecord, AdaptorRecordV1};
    fn read<B: Backend, const D: usize>(s: &burn_sparse_adam::SparseAdamState<B, D>) -> SavedState {
        (
            s.step,
            s.shape(),
            values(s.exp_avg.clone()),
            values(s.exp_avg_sq.clone()),
        )
    }
    states
        .iter()
        .map(|(id, record)| {
            let AdaptorRecord::V1(record) = record;
            let state = match record {
                AdaptorRecordV1::Rank0(s) => read(s),
                AdaptorRecordV1::Rank1(s) => read(s),
                AdaptorRecordV1::Rank2(s) => read(s),
                AdaptorRecordV1::Rank3(s) => read(s),
                AdaptorRecordV1::Rank4(s) => read(s),
                AdaptorRecordV1::Rank5(s) => read(s),
                AdaptorRecordV1::Rank6(s) => read(s),
                AdaptorRecordV1::Rank7(s) => read(s),
                AdaptorRecordV1::Rank8(s) => read(s),
            };
            (*id, state)
        })
        .collect()
}

/// Asserts that two [`saved_states`] snapshots are bit-identical.
#[track_caller]
pub fn assert_saved_states_bits_eq(
    actual: &std::collections::BTreeMap<burn::module::ParamId, SavedState>,
    expected: &std::collections::BTreeMap<burn::module::ParamId, SavedState>,
    what: &str,
) {
    let ids = |m: &std::collections::BTreeMap<burn::module::ParamId, SavedState>| {
        m.keys().copied().collect::<Vec<_>>()
    };
    assert_eq!(
        ids(actual),
        ids(expected),
        "{what}: the parameters with a state"
    );
    for (id, (step, shape, m, v)) in actual {
        let (e_step, e_shape, e_m, e_v) = &expected[id];
        assert_eq!(
            (step, shape),
            (e_step, e_shape),
            "{what}: step and shape of {id}"
        );
        assert_bits_eq(m, e_m, &format!("{what}: exp_avg of {id}"));
        assert_bits_eq(v, e_v, &format!("{what}: exp_avg_sq of {id}"));
    }
}

/// The root README's Rust snippets, compiled (and the runnable ones run) as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct RootReadmeDoctests;
