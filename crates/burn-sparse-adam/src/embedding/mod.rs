//! The sparse-lookup layer: [`SparseEmbedding`], a drop-in for `burn::nn::Embedding` whose
//! gradient is the rows a batch looked up, and how those rows reach the optimizer.
//!
//! - `row_grad`: [`RowGrad`](row_grads::RowGrad), sorted unique rows and their `[k, d]`
//!   gradients;
//! - `tape`: each table's lookups and collected row gradients, and the marker protocol
//!   between [`collect_grads`](row_grads::collect_grads) and the optimizer, owned by one
//!   type;
//! - `collect`: [`collect_grads`](row_grads::collect_grads).

use std::fmt;

use burn::config::Config;
use burn::module::{
    AutodiffModule, Content, Devices, DisplaySettings, HasAutodiffModule, Initializer, Module,
    ModuleDisplay, ModuleDisplayDefault, ModuleMapper, ModuleVisitor, Param, ParamId,
};
use burn::nn::EmbeddingRecord;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::module::embedding;
use burn::tensor::{Int, Tensor};
use sparse_adam_core::{check_indices, check_padding_idx, check_table_size, LookupPlan};

use crate::kernels;
use tape::{scope, RowGradTape};

mod collect;
mod row_grad;
pub(crate) mod tape;

/// Row gradients: how a [`SparseEmbedding`]'s gradient travels from the backward pass to the
/// optimizer as rows, never as a table-sized tensor.
///
/// Burn's `GradientsParams` can only hold one float tensor per parameter, shaped like the
/// parameter, and its plumbing (`GradientsAccumulator`, the Learner's multi-device merge)
/// adds those tensors. A gradient made of rows (sorted unique indices plus a `[k, d]`
/// block) fits neither. So, as PyTorch keeps a sparse embedding's gradient in
/// `weight.grad` until the optimizer consumes it, each `SparseEmbedding` keeps its row
/// gradients itself, on a tape that its clones share:
///
/// 1. a lookup under autodiff records the looked-up rows and its output, a copy of those
///    rows that is a leaf of the autodiff graph of its own (the table itself is not part of
///    that graph, so no table-sized gradient can arise); the tape keeps only the output's
///    autodiff identity, not its values, and forgets lookups autodiff has released;
/// 2. [`collect_grads`], the one line that replaces `GradientsParams::from_grads`, takes
///    each output's gradient, sums it per distinct row onto the tape, and puts a small
///    *marker* in the `GradientsParams` under the weight's id, so that Burn's plumbing
///    carries "this table has a gradient" (accumulating markers, moving them between
///    devices) like any other gradient;
/// 3. the optimizer, finding a marker for a table, applies the row gradients of the
///    backward passes that marker covers, summed, and clears the tape. A marker's value
///    counts its backward passes, so several passes before one step add up (as in
///    PyTorch), and the row gradients of a `GradientsParams` dropped without a step are
///    dropped too, as the dense gradients in it are.
///
/// The tape of a table is reached while a visitor or mapper visits that table's weight:
/// `SparseEmbedding::visit`/`map` open a scope for the duration of that one call. No
/// registry outlives it.
pub mod row_grads {
    pub use super::collect::collect_grads;
    pub use super::row_grad::RowGrad;
}

/// Configuration of a [`SparseEmbedding`]: `burn::nn::EmbeddingConfig` plus PyTorch's
/// `padding_idx`.
#[derive(Config, Debug)]
pub struct SparseEmbeddingConfig {
    /// The number of rows of the table.
    pub n_embedding: usize,
    /// The width of each row.
    pub d_model: usize,
    /// How the table is initialized. Default: `N(0, 1)`, as Burn's and PyTorch's embeddings.
    #[config(default = "Initializer::Normal{mean:0.0, std:1.0}")]
    pub initializer: Initializer,
    /// PyTorch's `padding_idx`: lookups of this row return it but give it no gradient, and
    /// it starts at zero. Default: none.
    #[config(default = "None")]
    pub padding_idx: Option<usize>,
}

impl SparseEmbeddingConfig {
    /// Creates the table on `device`, checking `padding_idx`.
    ///
    /// # Errors
    ///
    /// [`Error::PaddingIdxOutOfRange`](crate::Error::PaddingIdxOutOfRange) when
    /// `padding_idx >= n_embedding`;
    /// [`Error::TableOverBindingLimit`](crate::Error::TableOverBindingLimit) when the table
    /// is larger than the largest buffer the device allocates (burn-wgpu, with this crate's
    /// `wgpu` feature: one storage binding, 128 MiB on lavapipe), before anything is
    /// allocated.
    pub fn try_init<B: Backend>(&self, device: &B::Device) -> crate::Result<SparseEmbedding<B>> {
        check_padding_idx(self.padding_idx, self.n_embedding)?;
        let bytes = core::mem::size_of::<B::FloatElem>();
        check_allocation_limit([self.n_embedding, self.d_model], bytes, device)?;
        let weight = self
            .initializer
            .init([self.n_embedding, self.d_model], device);
        let d_model = self.d_model;
        let weight = match self.padding_idx {
            // As PyTorch's `reset_parameters`: the padding row starts at zero. A mapper of
            // the initialization keeps Burn's lazy initialization lazy. The initializer
            // hands over a tracked leaf; writing the zero row into it directly would make
            // the weight the result of an operation, which autodiff does not track as a
            // parameter (its lookups would take the inference path and never train). So
            // the row is written into the untracked values and the result made a leaf again.
            Some(p) if d_model > 0 => weight.init_mapper(move |w: Tensor<B, 2>| {
                let tracked = w.is_require_grad();
                let zero_row = Tensor::zeros([1, d_model], &w.device());
                // `set_require_grad(false)`, not `detach`: Burn's `detach` keeps the
                // tensor tracked, and the write would make it a non-leaf again.
                w.set_require_grad(false)
                    .slice_assign([p..p + 1, 0..d_model], zero_row)
                    .set_require_grad(tracked)
            }),
            _ => weight,
        };
        Ok(SparseEmbedding {
            weight,
            padding_idx: self.padding_idx,
            tape: RowGradTape::default(),
        })
    }

    /// Creates the table on `device`.
    ///
    /// # Panics
    ///
    /// Where [`SparseEmbeddingConfig::try_init`] returns an error, with its message.
    pub fn init<B: Backend>(&self, device: &B::Device) -> SparseEmbedding<B> {
        self.try_init(device).unwrap_or_else(|err| panic!("{err}"))
    }
}

/// Refuses a `[rows, width]` table of `element`-byte values that is larger than the largest
/// buffer `device` allocates ([`kernels::allocation_limit`]).
fn check_allocation_limit<D: 'static>(
    shape: [usize; 2],
    element: usize,
    device: &D,
) -> crate::Result<()> {
    Ok(check_table_size(
        shape,
        element,
        kernels::allocation_limit(device),
    )?)
}

/// An embedding table whose lookups, under autodiff, produce a *row gradient*: the sorted
/// unique rows looked up and a `[k, d]` block of their gradients, duplicates summed. No
/// tensor of the table's size is made for the gradient, and nothing of the table's size is
/// read back to the host.
///
/// It is a drop-in for `burn::nn::Embedding`: the same forward (`[batch, seq]` indices →
/// `[batch, seq, d_model]`), the same weight layout and the same record type, so a stock
/// `Embedding`'s record (or file) loads into it, and its record into a stock `Embedding`.
///
/// Its row gradients reach [`SparseAdam`](crate::SparseAdamConfig) through
/// [`collect_grads`](crate::collect_grads), used where `GradientsParams::from_grads` was.
/// Without autodiff (inference, validation through `valid()`) a lookup is plain and records
/// nothing. See [the row-gradient module](crate::row_grads) for how the rows travel.
///
/// # Example
///
/// ```
/// use burn::backend::NdArray;
/// use burn::nn::EmbeddingConfig;
/// use burn::module::Module;
/// use burn::tensor::{Int, Tensor};
/// use burn_sparse_adam::SparseEmbeddingConfig;
///
/// let device = Default::default();
/// let stock = EmbeddingConfig::new(10, 4).init::<NdArray>(&device);
/// let _ = stock.weight.val(); // Burn initializes lazily: fix the values before cloning
/// let sparse = SparseEmbeddingConfig::new(10, 4)
///     .init::<NdArray>(&device)
///     .load_record(stock.clone().into_record());
///
/// let indices = Tensor::<NdArray, 2, Int>::from_data([[1, 9, 1]], &device);
/// let same = sparse.forward(indices.clone()).equal(stock.forward(indices)).all();
/// assert!(same.into_scalar());
///
/// // An index out of range is an error naming it, before anything happens.
/// let bad = Tensor::<NdArray, 2, Int>::from_data([[1, 10]], &device);
/// assert_eq!(
///     sparse.try_forward(bad).unwrap_err().to_string(),
///     "index out of range in self: index 10 is not in 0..10 (the table has 10 rows)"
/// );
/// ```
pub struct SparseEmbedding<B: Backend> {
    /// The table, `[n_embedding, d_model]`.
    pub weight: Param<Tensor<B, 2>>,
    padding_idx: Option<usize>,
    tape: RowGradTape<B>,
}

impl<B: Backend> SparseEmbedding<B> {
    /// Looks up `indices` (`[batch, seq]`), giving `[batch, seq, d_model]`.
    ///
    /// # Panics
    ///
    /// Where [`SparseEmbedding::try_forward`] returns an error, with its message.
    pub fn forward(&self, indices: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        self.try_forward(indices)
            .unwrap_or_else(|err| panic!("{err}"))
    }

    /// Looks up `indices` (`[batch, seq]`), giving `[batch, seq, d_model]`.
    ///
    /// Under autodiff the output is a copy of the looked-up rows that autodiff treats as a
    /// leaf of its own: its gradient, summed per distinct row by
    /// [`collect_grads`](crate::collect_grads), becomes the table's row gradient. Lookups of `padding_idx` return its row and add no
    /// gradient. Indices are read to the host: they are batch-sized, the table is not.
    ///
    /// # Errors
    ///
    /// [`Error::IndexOutOfRange`](crate::Error::IndexOutOfRange) for an index `< 0` or
    /// `>= n_embedding`, and
    /// [`Error::TableOverBindingLimit`](crate::Error::TableOverBindingLimit) for a table
    /// larger than the largest buffer its device allocates (one loaded or moved there),
    /// before anything runs or is recorded.
    pub fn try_forward(&self, indices: Tensor<B, 2, Int>) -> crate::Result<Tensor<B, 3>> {
        let [n_embedding, d_model] = self.weight.dims();
        let [batch, seq] = indices.dims();
        let bytes = self.weight.val().dtype().size();
        check_allocation_limit([n_embedding, d_model], bytes, &self.weight.device())?;
        let host: Vec<i64> = indices
            .to_data()
            .convert::<i64>()
            .into_vec()
            .expect("an Int tensor converts to i64");
        check_indices(&host, n_embedding)?;
        let weight = self.weight.val();
        if !weight.is_require_grad() {
            return Ok(embedding(weight, indices));
        }

        let lookup = LookupPlan::for_table(&host, self.padding_idx, n_embedding);
        if host.is_empty() || d_model == 0 {
            // A lookup with no values has a leaf too, so that, as in PyTorch, the table
            // takes a step only if the lookup reached the loss. Where the backend cannot
            // differentiate through an empty tensor, the output stays untracked and the
            // lookup counts as an (empty) gradient at the next collection on this thread.
            let output = Tensor::zeros([batch, seq, d_model], &weight.device());
            if !kernels::differentiates_empty(&weight) {
                self.tape.record_untracked(lookup.rows, lookup.slots);
                return Ok(output);
            }
            let output = output.require_grad();
            self.tape.record(lookup.rows, lookup.slots, output.clone());
            return Ok(output);
        }
        // The output is a leaf of its own, outside the table's autodiff graph: its gradient
        // is batch-sized, and `collect_grads` sums it per touched row.
        let output = kernels::gather(&weight, indices, &host).require_grad();
        self.tape.record(lookup.rows, lookup.slots, output.clone());
        Ok(output)
    }

    /// PyTorch's `padding_idx`, if any.
    pub fn padding_idx(&self) -> Option<usize> {
        self.padding_idx
    }

    /// How many lookups under autodiff wait for [`collect_grads`](crate::collect_grads)
    /// (their gradients are still in the backward pass's `Gradients`).
    pub fn pending_lookups(&self) -> usize {
        self.tape.counts().0
    }

    /// How many collected row gradients (one per `collect_grads` call that found lookups of
    /// this table) wait for the optimizer's next step.
    pub fn collected_row_grads(&self) -> usize {
        self.tape.counts().1
    }

    /// Drops the row gradients recorded or collected since the optimizer's last step:
    /// PyTorch's `zero_grad()` for this table. Burn's gradients are consumed by each step,
    /// so a training loop only needs this after it decides to skip a step.
    pub fn clear_row_grads(&self) {
        self.tape.clear();
    }
}

const CONTAINER: &str = "Struct:SparseEmbedding";

/// The mapper with which burn-train 0.21's DDP strategy marks every parameter for Burn's
/// distributed gradient sync (`Learner::grad_sharded`). Its type is the one sign of that
/// strategy this crate can see: `Tensor::is_distributed` exists only under Burn's
/// `distributed` feature, which this crate does not need or turn on. Best effort: a type's
/// name is meant for diagnostics, so it is matched loosely (burn-train's crate, the type's
/// own name), not as a whole path that a compiler or a burn-train release could spell
/// otherwise.
const DDP_SHARDER: (&str, &str) = ("burn_train::", "::ModuleSharder");

/// Panics with [`Error::TableUnderDistributedSync`](crate::Error)'s message when `mapper`
/// (a mapper's type name) is burn-train's DDP sharder ([`DDP_SHARDER`]).
fn refuse_ddp_sharder(mapper: &str, weight: &ParamId) {
    if mapper.starts_with(DDP_SHARDER.0) && mapper.ends_with(DDP_SHARDER.1) {
        let param = weight.to_string();
        panic!("{}", crate::Error::TableUnderDistributedSync { param });
    }
}

impl<B: Backend> Module<B> for SparseEmbedding<B> {
    /// The record of `burn::nn::Embedding`, so records and files move freely between both.
    type Record = EmbeddingRecord<B>;

    fn collect_devices(&self, devices: Devices<B>) -> Devices<B> {
        self.weight.collect_devices(devices)
    }

    fn fork(self, device: &B::Device) -> Self {
        Self {
            weight: self.weight.fork(device),
            ..self
        }
    }

    /// Moves the table to `device`. Unlike Burn's `Param::to_device`, which makes a tracked
    /// weight the result of a move (a non-leaf, which no optimizer can train), the weight
    /// stays a leaf, as `fork` leaves it: a table's lookups never differentiate through the
    /// table itself, so nothing is lost.
    fn to_device(self, device: &B::Device) -> Self {
        Self {
            weight: self.weight.fork(device),
            ..self
        }
    }

    fn visit<V: ModuleVisitor<B>>(&self, visitor: &mut V) {
        visitor.enter_module("weight", CONTAINER);
        {
            let _scope = scope::enter(self.weight.id, &self.tape);
            self.weight.visit(visitor);
        }
        visitor.exit_module("weight", CONTAINER);
    }

    /// # Panics
    ///
    /// With the message of [`Error::TableUnderDistributedSync`](crate::Error) when `mapper` is
    /// burn-train's DDP sharder (see [`DDP_SHARDER`]).
    fn map<M: ModuleMapper<B>>(self, mapper: &mut M) -> Self {
        refuse_ddp_sharder(std::any::type_name::<M>(), &self.weight.id);
        mapper.enter_module("weight", CONTAINER);
        let weight = {
            let _scope = scope::enter(self.weight.id, &self.tape);
            Module::map(self.weight, mapper)
        };
        mapper.exit_module("weight", CONTAINER);
        Self { weight, ..self }
    }

    /// Loads the table; on the fused burn-ndarray path a table of 64 MiB and more is then
    /// copied once onto huge pages, where a new table's first optimizer step puts it
    /// (`kernels::loaded_table`), so that a resumed run's row updates do not miss the TLB.
    fn load_record(self, record: Self::Record) -> Self {
        Self {
            weight: self
                .weight
                .load_record(record.weight)
                .map(kernels::loaded_table),
            ..self
        }
    }

    fn into_record(self) -> Self::Record {
        EmbeddingRecord {
            weight: self.weight.into_record(),
        }
    }
}

impl<B: AutodiffBackend> AutodiffModule<B> for SparseEmbedding<B> {
    type InnerModule = SparseEmbedding<B::InnerBackend>;

    fn valid(&self) -> Self::InnerModule {
        self.tape.knows_autodiff();
        SparseEmbedding {
            weight: self.weight.valid(),
            padding_idx: self.padding_idx,
            tape: RowGradTape::default(),
        }
    }

    fn from_inner(module: Self::InnerModule) -> Self {
        SparseEmbedding {
            weight: Param::from_inner(module.weight),
            padding_idx: module.padding_idx,
            tape: RowGradTape::tracked(),
        }
    }
}

impl<B: AutodiffBackend> HasAutodiffModule<B> for SparseEmbedding<B::InnerBackend> {
    type TrainModule = SparseEmbedding<B>;
}

impl<B: Backend> Clone for SparseEmbedding<B> {
    /// Clones share their row gradients, as the copies of a model that Burn's training
    /// loops pass around must.
    fn clone(&self) -> Self {
        Self {
            weight: self.weight.clone(),
            padding_idx: self.padding_idx,
            tape: self.tape.clone(),
        }
    }
}

impl<B: Backend> fmt::Debug for SparseEmbedding<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SparseEmbedding")
            .field("weight", &self.weight)
            .field("padding_idx", &self.padding_idx)
            .field("row_grads", &self.tape)
            .finish()
    }
}

impl<B: Backend> ModuleDisplayDefault for SparseEmbedding<B> {
    fn content(&self, content: Content) -> Option<Content> {
        content.set_top_level_type("SparseEmbedding").optional()
    }

    fn num_params(&self) -> usize {
        Module::num_params(self)
    }
}

impl<B: Backend> ModuleDisplay for SparseEmbedding<B> {
    fn custom_settings(&self) -> Option<DisplaySettings> {
        DisplaySettings::new()
            .with_new_line_after_attribute(false)
            .optional()
    }

    fn custom_content(&self, content: Content) -> Option<Content> {
        let [n_embedding, d_model] = self.weight.dims();
        content
            .add("n_embedding", &n_embedding)
            .add("d_model", &d_model)
            .add_debug_attribute("padding_idx", &self.padding_idx)
            .optional()
    }
}

impl<B: Backend> fmt::Display for SparseEmbedding<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.format(DisplaySettings::new()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;

    /// A table of 64 MiB and more loaded from a record keeps its values, its id and its
    /// tracking; on the fused burn-ndarray path it lands in memory of its own (huge pages).
    #[test]
    fn a_large_loaded_table_keeps_its_values_and_id() {
        use burn::backend::Autodiff;
        use burn::tensor::TensorData;
        type Ad = Autodiff<NdArray>;
        let (n, d) = (sparse_adam_core::pages::HUGE_TABLE_BYTES / 4 / 64, 64);
        let device = Default::default();
        let values: Vec<f32> = (0..n * d).map(|i| (i as f32 * 0.37).sin()).collect();
        let mut saved = SparseEmbeddingConfig::new(n, d)
            .with_initializer(Initializer::Zeros)
            .init::<Ad>(&device);
        saved.weight = Param::from_data(TensorData::new(values.clone(), [n, d]), &device);
        let id = saved.weight.id;
        let loaded = SparseEmbeddingConfig::new(n, d)
            .with_initializer(Initializer::Zeros)
            .init::<Ad>(&device)
            .load_record(saved.clone().into_record());
        assert_eq!(loaded.weight.id, id);
        assert!(loaded.weight.val().is_require_grad());
        let got = loaded.weight.val().into_data().to_vec::<f32>().unwrap();
        assert!(got
            .iter()
            .zip(&values)
            .all(|(a, b)| a.to_bits() == b.to_bits()));
        #[cfg(feature = "ndarray")]
        {
            let ptr = |t: &SparseEmbedding<Ad>| {
                let data = t.weight.val().inner().into_primitive().tensor();
                match data {
                    burn::backend::ndarray::NdArrayTensor::F32(s) => s.view().as_ptr(),
                    _ => panic!("an f32 table"),
                }
            };
            assert_ne!(ptr(&loaded), ptr(&saved), "the loaded table was not moved");
        }
    }

    /// burn-train's DDP sharder is refused with the error's message, naming the weight; any
    /// other mapper maps the table. (The sharder itself cannot be built here: burn-train's
    /// `ddp` feature turns on Burn's `distributed`, under which only CubeCL backends are
    /// autodiff backends, so this workspace's burn-ndarray tests would not compile.)
    #[test]
    fn burn_train_ddp_sharder_is_refused() {
        let id = ParamId::new();
        // burn-train 0.21.0's path, and the same type where a release might move it.
        for name in [
            "burn_train::learner::sharder::ModuleSharder",
            "burn_train::learner::ModuleSharder",
        ] {
            assert!(
                std::panic::catch_unwind(|| refuse_ddp_sharder(name, &id)).is_err(),
                "{name}"
            );
        }
        for name in [
            "my_crate::ModuleSharder",
            "burn_train::learner::sharder::Other",
        ] {
            refuse_ddp_sharder(name, &id);
        }
        let name = "burn_train::learner::sharder::ModuleSharder";
        let refused = std::panic::catch_unwind(|| refuse_ddp_sharder(name, &id));
        let message = refused.expect_err("refused");
        let message = message.downcast_ref::<String>().expect("a message");
        assert!(
            message.contains(&format!("parameter {id} (a SparseEmbedding weight)"))
                && message.contains("distributed gradient sync")
                && message.contains("all_reduce_grads"),
            "{message}"
        );

        struct Doubler;
        impl<B: Backend> ModuleMapper<B> for Doubler {
            fn map_float<const D: usize>(
                &mut self,
                param: Param<Tensor<B, D>>,
            ) -> Param<Tensor<B, D>> {
                param.map(|t| t.mul_scalar(2.0))
            }
        }
        let device = Default::default();
        let table = SparseEmbeddingConfig::new(3, 2)
            .with_initializer(Initializer::Constant { value: 0.5 })
            .init::<NdArray>(&device);
        let doubled = table.map(&mut Doubler);
        let values = doubled.weight.val().into_data().to_vec::<f32>().unwrap();
        assert_eq!(values, vec![1.0; 6]);
    }
}
