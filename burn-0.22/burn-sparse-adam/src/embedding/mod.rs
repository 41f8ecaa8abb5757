//! The embedding layer: [`SparseEmbedding`], a drop-in for `burn::nn::Embedding` whose
//! gradient is the rows a batch looked up, and the row gradients that carry it
//! ([`row_grads`]: the tape, the marker protocol, [`collect_grads`](row_grads::collect_grads)).

pub mod row_grads;
pub mod sharded;

use std::fmt;

use burn::config::Config;
use burn::module::{
    Content, Devices, DisplaySettings, Initializer, Module, ModuleDisplay, ModuleDisplayDefault,
    ModuleMapper, ModuleVisitor, Param,
};
use burn::tensor::{DType, Device, Int, Tensor};
use sparse_adam_core::{LookupPlan, check_indices, check_padding_idx, check_table_size};

use crate::kernels;
use row_grads::{LookupRows, RowGradTape, scope};

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
    /// Whether each lookup's indices are read to the host and checked before it runs
    /// (`true`, the default: an index outside the table is
    /// [`Error::IndexOutOfRange`](crate::Error::IndexOutOfRange), before anything runs or is
    /// recorded).
    ///
    /// `false` (with the crate's `wgpu` feature, on a `Cube` device: wgpu) keeps them on
    /// the device: a lookup is Burn's `embedding` gather, and the optimizer sorts the
    /// lookups, sums each row's gradients and updates the row on the device
    /// ([`SparseAdam::step_lookups`](crate::SparseAdam::step_lookups)'s fused path), so a
    /// training step reads nothing back to the host. **An index outside the table is then
    /// not reported**: its lookup gives a row of zeros, and it gets no gradient (the
    /// indices are masked on the device before Burn's gather, which does not check them on
    /// wgpu). On every other device the indices are read anyway (the rows are planned on
    /// the host there) and checked as with `true`, as they are for a table of no rows (it
    /// has no row to stand in for an index outside it).
    #[config(default = true)]
    pub check_indices: bool,
}

impl SparseEmbeddingConfig {
    /// Creates the table on `device`, checking `padding_idx`.
    ///
    /// # Errors
    ///
    /// [`Error::PaddingIdxOutOfRange`](crate::Error::PaddingIdxOutOfRange) when
    /// `padding_idx >= n_embedding`;
    /// [`Error::TableOverBindingLimit`](crate::Error::TableOverBindingLimit) when the table
    /// (in the device's default float type) is larger than one buffer binding of the device
    /// (128 MiB on lavapipe), before anything is allocated.
    pub fn try_init(&self, device: &Device) -> crate::Result<SparseEmbedding> {
        check_padding_idx(self.padding_idx, self.n_embedding)?;
        let dtype = DType::from(device.settings().float_dtype);
        check_binding_limit([self.n_embedding, self.d_model], dtype, device)?;
        let weight = self
            .initializer
            .init([self.n_embedding, self.d_model], device);
        let d_model = self.d_model;
        let weight = match self.padding_idx {
            // As PyTorch's `reset_parameters`: the padding row starts at zero. A mapper of
            // the initialization keeps Burn's lazy initialization lazy; Burn 0.22's
            // `init_mapper` hands it the untracked value and makes the result a tracked leaf
            // again (`burn-core-0.22.1/src/module/param/base.rs`), so the weight stays a
            // parameter that an optimizer can train.
            Some(p) if d_model > 0 => weight.init_mapper(move |w: Tensor<2>| {
                let zero_row = Tensor::zeros([1, d_model], &w.device());
                w.slice_assign([p..p + 1, 0..d_model], zero_row)
            }),
            _ => weight,
        };
        Ok(SparseEmbedding {
            weight,
            padding_idx: self.padding_idx,
            check_indices: self.check_indices,
            tape: RowGradTape::default(),
        })
    }

    /// Creates the table on `device`.
    ///
    /// # Panics
    ///
    /// Where [`SparseEmbeddingConfig::try_init`] returns an error, with its message.
    pub fn init(&self, device: &Device) -> SparseEmbedding {
        self.try_init(device).unwrap_or_else(|err| panic!("{err}"))
    }
}

/// The values of `indices`, read to the host (they are batch-sized).
fn host_indices<const D: usize>(indices: &Tensor<D, Int>) -> Vec<i64> {
    indices
        .to_data()
        .convert::<i64>()
        .try_into_vec::<i64>()
        .expect("an Int tensor converts to i64")
}

/// Refuses a `[rows, width]` table of `dtype` that is larger than the largest buffer
/// `device` allocates ([`kernels::binding_limit`]).
fn check_binding_limit(shape: [usize; 2], dtype: DType, device: &Device) -> crate::Result<()> {
    Ok(check_table_size(
        shape,
        dtype.size(),
        kernels::binding_limit(device),
    )?)
}

/// An embedding table whose lookups, under autodiff, produce a *row gradient*: the sorted
/// unique rows looked up and a `[k, d]` block of their gradients, duplicates summed. No
/// tensor of the table's size is made for the gradient, and nothing of the table's size is
/// read back to the host.
///
/// It is a drop-in for `burn::nn::Embedding`: the same forward (`[batch, seq]` indices →
/// `[batch, seq, d_model]`), the same weight, saved under the same name (`weight`), so a
/// stock `Embedding`'s record (or burnpack file) loads into it, and its record into a stock
/// `Embedding`.
///
/// Its row gradients reach the optimizer through
/// [`collect_grads`](crate::collect_grads), used where `GradientsParams::from_grads` was.
/// Without autodiff (inference, a module after `valid()`), or with a frozen weight, a
/// lookup is plain and records nothing. See [`row_grads`] for how the rows travel.
pub struct SparseEmbedding {
    /// The table, `[n_embedding, d_model]`.
    pub weight: Param<Tensor<2>>,
    padding_idx: Option<usize>,
    /// [`SparseEmbeddingConfig::check_indices`].
    check_indices: bool,
    tape: RowGradTape,
}

impl SparseEmbedding {
    /// Looks up `indices` (`[batch, seq]`), giving `[batch, seq, d_model]`.
    ///
    /// # Panics
    ///
    /// Where [`SparseEmbedding::try_forward`] returns an error, with its message.
    pub fn forward(&self, indices: Tensor<2, Int>) -> Tensor<3> {
        self.try_forward(indices)
            .unwrap_or_else(|err| panic!("{err}"))
    }

    /// Looks up `indices` (`[batch, seq]`), giving `[batch, seq, d_model]`.
    ///
    /// Under autodiff the output is a copy of the looked-up rows that autodiff treats as a
    /// leaf of its own, with the weight's gradient-checkpointing strategy: its gradient,
    /// summed per distinct row by [`collect_grads`](crate::collect_grads), becomes the
    /// table's row gradient. Lookups of `padding_idx` return its row and add no gradient.
    /// Indices are read to the host: they are batch-sized, the table is not.
    ///
    /// # Errors
    ///
    /// [`Error::IndexOutOfRange`](crate::Error::IndexOutOfRange) for an index `< 0` or
    /// `>= n_embedding`, and
    /// [`Error::TableOverBindingLimit`](crate::Error::TableOverBindingLimit) for a table
    /// larger than one buffer binding of its device (one loaded or moved there), before
    /// anything runs or is recorded.
    pub fn try_forward(&self, indices: Tensor<2, Int>) -> crate::Result<Tensor<3>> {
        // A table of no rows has no row 0 for an index outside it to read: checked.
        let rows = self.weight.lazy_shape().dims::<2>()[0];
        if !self.check_indices && rows > 0 && kernels::plans_on_device(&self.weight.val()) {
            return self.lookup_on_device(indices);
        }
        let host = host_indices(&indices);
        self.forward_host(indices, &host)
    }

    /// A lookup whose indices stay on the device (`check_indices` off, on a `Cube` device):
    /// the gather and, under autodiff, the lookup recorded with its indices, all as device
    /// operations. An index outside the table reads row 0 and gives a zero row (Burn's
    /// gather does not check its indices on wgpu, so it never sees one), and is recorded as
    /// it is: the optimizer skips it; `padding_idx` is recorded as `-1` (no gradient).
    fn lookup_on_device(&self, indices: Tensor<2, Int>) -> crate::Result<Tensor<3>> {
        let [n_embedding, d_model] = self.weight.lazy_shape().dims();
        let weight = self.weight.val();
        check_binding_limit([n_embedding, d_model], weight.dtype(), &weight.device())?;
        let gather = |weight: Tensor<2>, indices: Tensor<2, Int>| {
            let [batch, seq] = indices.dims();
            let outside = indices
                .clone()
                .lower_elem(0)
                .bool_or(indices.clone().greater_equal_elem(n_embedding as i64));
            let safe = indices.mask_fill(outside.clone(), 0);
            let rows = burn::tensor::module::embedding(weight, safe);
            let outside = outside.unsqueeze_dim::<3>(2).expand([batch, seq, d_model]);
            rows.mask_fill(outside, 0.0)
        };
        if !weight.is_require_grad() {
            return Ok(gather(weight, indices));
        }
        let strategy = weight
            .gradient_checkpointing_strategy()
            .expect("a tensor that requires its gradient has autodiff");
        let indices = indices.inner();
        let output = gather(weight.inner(), indices.clone())
            .autodiff()
            .with_gradient_checkpointing_strategy(strategy)
            .require_grad();
        let flat = indices.flatten::<1>(0, 1);
        let flat = match self.padding_idx {
            Some(p) => flat.clone().mask_fill(flat.equal_elem(p as i64), -1),
            None => flat,
        };
        let plan = LookupRows::Device {
            indices: flat,
            table_rows: n_embedding,
        };
        self.tape.record(plan, output.clone());
        Ok(output)
    }

    /// [`SparseEmbedding::try_forward`] with the indices already on the host (`host`, the
    /// values of `indices`).
    pub(crate) fn forward_host(
        &self,
        indices: Tensor<2, Int>,
        host: &[i64],
    ) -> crate::Result<Tensor<3>> {
        self.check_lookup(host)?;
        Ok(self.lookup_checked(indices, host))
    }

    /// Checks a lookup of `host` before anything runs: the table fits one buffer of its
    /// device, and every index is a row.
    pub(crate) fn check_lookup(&self, host: &[i64]) -> crate::Result<()> {
        let [n_embedding, d_model] = self.weight.lazy_shape().dims();
        let weight = self.weight.val();
        check_binding_limit([n_embedding, d_model], weight.dtype(), &weight.device())?;
        Ok(check_indices(host, n_embedding)?)
    }

    /// The lookup of `host` (the values of `indices`), checked by
    /// [`SparseEmbedding::check_lookup`].
    pub(crate) fn lookup_checked(&self, indices: Tensor<2, Int>, host: &[i64]) -> Tensor<3> {
        let [n_embedding, _] = self.weight.lazy_shape().dims();
        let weight = self.weight.val();
        if !weight.is_require_grad() {
            return burn::tensor::module::embedding(weight, indices);
        }
        let strategy = weight
            .gradient_checkpointing_strategy()
            .expect("a tensor that requires its gradient has autodiff");
        let plan = LookupPlan::for_table(host, self.padding_idx, n_embedding);
        // The output is a leaf of its own, outside the table's autodiff graph: its gradient
        // is batch-sized, and `collect_grads` sums it per touched row. It takes the weight's
        // checkpointing strategy, since operations mixing two strategies panic in Burn 0.22.
        let output = kernels::gather(weight.inner(), indices.inner(), host)
            .autodiff()
            .with_gradient_checkpointing_strategy(strategy)
            .require_grad();
        let plan = LookupRows::Host {
            rows: plan.rows,
            slots: plan.slots,
        };
        self.tape.record(plan, output.clone());
        output
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

/// The container type this module reports to visitors; Burn's stores key records by the
/// field names only (`weight`), not by it.
const CONTAINER: &str = "Struct:SparseEmbedding";

impl Module for SparseEmbedding {
    fn collect_devices(&self, devices: Devices) -> Devices {
        self.weight.collect_devices(devices)
    }

    fn fork(self, device: &Device) -> Self {
        Self {
            weight: self.weight.fork(device),
            ..self
        }
    }

    /// Moves the table to `device`. Unlike Burn's `Param::to_device`, which makes a tracked
    /// weight the result of a move (a non-leaf, which no optimizer can train), the weight
    /// stays a leaf, as `fork` leaves it: a table's lookups never differentiate through the
    /// table itself, so nothing is lost.
    fn to_device(self, device: &Device) -> Self {
        Self {
            weight: self.weight.fork(device),
            ..self
        }
    }

    fn train(self) -> Self {
        Self {
            weight: self.weight.train(),
            ..self
        }
    }

    /// A validation copy: its weight carries no autodiff, so its lookups record nothing, and
    /// it has a tape of its own.
    fn valid(&self) -> Self {
        Self {
            weight: self.weight.valid(),
            padding_idx: self.padding_idx,
            check_indices: self.check_indices,
            tape: RowGradTape::default(),
        }
    }

    fn materialize(self) -> Self {
        Self {
            weight: self.weight.materialize(),
            ..self
        }
    }

    fn visit<V: ModuleVisitor>(&self, visitor: &mut V) {
        visitor.enter_module("weight", CONTAINER);
        {
            let _scope = scope::enter(self.weight.id, &self.tape);
            self.weight.visit(visitor);
        }
        visitor.exit_module("weight", CONTAINER);
    }

    fn map<M: ModuleMapper>(self, mapper: &mut M) -> Self {
        mapper.enter_module("weight", CONTAINER);
        let weight = {
            let _scope = scope::enter(self.weight.id, &self.tape);
            Module::map(self.weight, mapper)
        };
        mapper.exit_module("weight", CONTAINER);
        Self { weight, ..self }
    }
}

impl Clone for SparseEmbedding {
    /// Clones share their row gradients, as the copies of a model that Burn's training
    /// loops pass around must.
    fn clone(&self) -> Self {
        Self {
            weight: self.weight.clone(),
            padding_idx: self.padding_idx,
            check_indices: self.check_indices,
            tape: self.tape.clone(),
        }
    }
}

impl fmt::Debug for SparseEmbedding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SparseEmbedding")
            .field("weight", &self.weight)
            .field("padding_idx", &self.padding_idx)
            .field("check_indices", &self.check_indices)
            .field("row_grads", &self.tape)
            .finish()
    }
}

impl ModuleDisplayDefault for SparseEmbedding {
    fn content(&self, content: Content) -> Option<Content> {
        content.set_top_level_type("SparseEmbedding").optional()
    }

    fn num_params(&self) -> usize {
        Module::num_params(self)
    }
}

impl ModuleDisplay for SparseEmbedding {
    fn custom_settings(&self) -> Option<DisplaySettings> {
        DisplaySettings::new()
            .with_new_line_after_attribute(false)
            .optional()
    }

    fn custom_content(&self, content: Content) -> Option<Content> {
        let [n_embedding, d_model] = self.weight.lazy_shape().dims();
        content
            .add("n_embedding", &n_embedding)
            .add("d_model", &d_model)
            .add_debug_attribute("padding_idx", &self.padding_idx)
            .optional()
    }
}

impl fmt::Display for SparseEmbedding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.format(DisplaySettings::new()))
    }
}
