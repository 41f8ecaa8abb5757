//! The DeepWalk model on Burn 0.22: an *input* and a *context* vector per node, in two
//! embedding tables, and the skip-gram loss on the rows a batch looks up.
//!
//! Two versions of the same model, for the two optimizers the example compares:
//!
//! - [`SparseSkipGram`]: two [`SparseEmbedding`] tables. A batch's backward pass yields the
//!   gradients of the rows it looked up, which [`collect_grads`] hands to SparseAdam.
//! - [`DenseSkipGram`]: two stock `burn::nn::Embedding` tables, for Burn's `Adam`: every
//!   step produces, and Adam updates, a gradient the size of each whole table.
//!
//! Both have the same record layout (a `weight` per table) and the same initial values:
//! input vectors `N(0, init_std)` drawn from the run's [`Rng`], context vectors zero
//! (word2vec's initialization, which the PyTorch reference uses), bit for bit the 0.1
//! line's.

use burn::module::{Initializer, Module, Param};
use burn::nn::{Embedding, EmbeddingConfig};
use burn::optim::GradientsParams;
use burn::tensor::activation::log_sigmoid;
use burn::tensor::{Device, Gradients, Int, Tensor, TensorData};
use burn_sparse_adam::{SparseEmbedding, SparseEmbeddingConfig, collect_grads};
use wordnet_app::rng::{Rng, Stream};
use wordnet_app::skipgram::{SkipGramBatch, SkipGramConfig};

/// The table sizes and the spread of the initial input vectors.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ModelShape {
    /// Rows per table: the number of nodes.
    pub nodes: usize,
    /// Width of each vector.
    pub dim: usize,
    /// Standard deviation of the initial input vectors (mean 0).
    pub init_std: f64,
}

/// A skip-gram model the training loop can drive, whatever its tables.
pub trait SkipGramModel: Module + Clone + Send + 'static {
    /// Creates the model on `device`, its input vectors drawn from the [`Stream::Init`]
    /// stream of `seed`.
    fn init(shape: ModelShape, seed: u64, device: &Device) -> Self;

    /// Input vectors of `ids` (`[batch, n]` → `[batch, n, dim]`).
    fn input(&self, ids: Tensor<2, Int>) -> Tensor<3>;

    /// Context vectors of `ids` (`[batch, n]` → `[batch, n, dim]`).
    fn context(&self, ids: Tensor<2, Int>) -> Tensor<3>;

    /// Turns a backward pass into the gradients the optimizer takes.
    fn gradients(&self, grads: Gradients) -> GradientsParams;

    /// The input vectors, `[nodes, dim]`, off the autodiff graph (for evaluation).
    fn input_vectors(&self) -> Tensor<2>;

    /// The rows `batch` looks up: the centres' input vectors, the walks' and the
    /// negatives' context vectors, as [`skip_gram_loss`] takes them.
    fn lookup(&self, batch: &SkipGramBatch, device: &Device) -> [Tensor<3>; 3] {
        let ids = BatchTensors::new(batch, device);
        [
            self.input(ids.centres),
            self.context(ids.walks),
            self.context(ids.negatives),
        ]
    }

    /// The skip-gram loss of `batch` (see [`skip_gram_loss`]).
    fn loss(&self, batch: &SkipGramBatch, config: &SkipGramConfig, device: &Device) -> Tensor<1> {
        let [centre, context, negative] = self.lookup(batch, device);
        skip_gram_loss(centre, context, negative, config)
    }
}

/// The index tensors of a [`SkipGramBatch`].
#[derive(Clone, Debug)]
pub struct BatchTensors {
    /// `[walks, centres]`: the nodes whose input vectors are trained.
    pub centres: Tensor<2, Int>,
    /// `[walks, walk_length]`: the nodes whose context vectors the positive pairs use.
    pub walks: Tensor<2, Int>,
    /// `[walks, centres * negatives]`: the nodes whose context vectors the negative pairs use.
    pub negatives: Tensor<2, Int>,
}

impl BatchTensors {
    /// The index tensors of the lookups of `batch`.
    pub fn new(batch: &SkipGramBatch, device: &Device) -> Self {
        let config = &batch.config;
        let tensor = |data: Vec<i64>, width: usize| {
            Tensor::<2, Int>::from_data(TensorData::new(data, [batch.walks, width]), device)
        };
        Self {
            centres: tensor(batch.centre_ids(), config.centres()),
            walks: tensor(batch.nodes.clone(), config.walk_length),
            negatives: tensor(batch.negatives.clone(), config.centres() * config.negatives),
        }
    }
}

/// The skip-gram loss of a batch from its looked-up rows: the mean of `-log σ(u·v)` over
/// the positive pairs plus the mean of `-log σ(-u·v')` over the negative pairs
/// (PyTorch Geometric's), [`wordnet_app::skipgram::reference_loss`] in tensors.
///
/// - `centre`: input vectors of the centres, `[walks, centres, d]`;
/// - `context`: context vectors of the walks, `[walks, walk_length, d]`;
/// - `negative`: context vectors of the negatives, `[walks, centres * negatives, d]`.
///
/// The positive pairs are dot products of `centre` with `window - 1` shifted slices of
/// `context`; nothing table-sized is involved, so under autodiff the gradient reaches only
/// the rows that were looked up.
pub fn skip_gram_loss(
    centre: Tensor<3>,
    context: Tensor<3>,
    negative: Tensor<3>,
    config: &SkipGramConfig,
) -> Tensor<1> {
    let [walks, centres, d] = centre.dims();
    let positive: Vec<Tensor<3>> = (1..config.window)
        .map(|shift| {
            let shifted = context
                .clone()
                .slice([0..walks, shift..shift + centres, 0..d]);
            (centre.clone() * shifted).sum_dim(2)
        })
        .collect();
    let positive = Tensor::cat(positive, 2); // [walks, centres, window - 1]
    let negative = negative.reshape([walks, centres, config.negatives, d]);
    let negative = (centre.unsqueeze_dim::<4>(2) * negative).sum_dim(3); // [.., negatives, 1]
    let positive_loss = log_sigmoid(positive).mean().neg();
    let negative_loss = log_sigmoid(negative.neg()).mean().neg();
    positive_loss + negative_loss
}

/// `N(0, init_std)` values for the input table, from the run's seed.
fn initial_input(shape: ModelShape, seed: u64, device: &Device) -> Param<Tensor<2>> {
    let mut rng = Rng::stream(seed, Stream::Init, 0);
    let values: Vec<f32> = (0..shape.nodes * shape.dim)
        .map(|_| (rng.normal() * shape.init_std) as f32)
        .collect();
    Param::from_data(TensorData::new(values, [shape.nodes, shape.dim]), device)
}

/// Input and context vectors in two [`SparseEmbedding`] tables, for SparseAdam.
#[derive(Module, Debug)]
pub struct SparseSkipGram {
    /// The input (centre) vectors: the node embeddings the evaluation scores.
    pub input: SparseEmbedding,
    /// The context vectors.
    pub context: SparseEmbedding,
}

impl SkipGramModel for SparseSkipGram {
    fn init(shape: ModelShape, seed: u64, device: &Device) -> Self {
        let table =
            SparseEmbeddingConfig::new(shape.nodes, shape.dim).with_initializer(Initializer::Zeros);
        let mut input = table.init(device);
        input.weight = initial_input(shape, seed, device);
        Self {
            input,
            context: table.init(device),
        }
    }

    fn input(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        self.input.forward(ids)
    }

    fn context(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        self.context.forward(ids)
    }

    /// [`collect_grads`]: the row gradients of both tables, never a table-sized tensor.
    fn gradients(&self, grads: Gradients) -> GradientsParams {
        collect_grads(grads, self)
    }

    fn input_vectors(&self) -> Tensor<2> {
        self.input.weight.val().inner()
    }
}

/// Input and context vectors in two stock `burn::nn::Embedding` tables, for Burn's `Adam`.
#[derive(Module, Debug)]
pub struct DenseSkipGram {
    /// The input (centre) vectors: the node embeddings the evaluation scores.
    pub input: Embedding,
    /// The context vectors.
    pub context: Embedding,
}

impl SkipGramModel for DenseSkipGram {
    fn init(shape: ModelShape, seed: u64, device: &Device) -> Self {
        let table =
            EmbeddingConfig::new(shape.nodes, shape.dim).with_initializer(Initializer::Zeros);
        let mut input = table.init(device);
        input.weight = initial_input(shape, seed, device);
        Self {
            input,
            context: table.init(device),
        }
    }

    fn input(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        self.input.forward(ids)
    }

    fn context(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        self.context.forward(ids)
    }

    /// Burn's own `GradientsParams::from_grads`: dense gradients of both whole tables.
    fn gradients(&self, grads: Gradients) -> GradientsParams {
        GradientsParams::from_grads(grads, self)
    }

    fn input_vectors(&self) -> Tensor<2> {
        self.input.weight.val().inner()
    }
}
