//! The DeepWalk model: an *input* and a *context* vector per node, in two embedding tables.
//!
//! Two versions of the same model, for the two optimizers the example compares:
//!
//! - [`SparseSkipGram`]: two [`SparseEmbedding`] tables. A batch's backward pass yields the
//!   gradients of the rows it looked up, which [`collect_grads`] hands to SparseAdam.
//! - [`DenseSkipGram`]: two stock `burn::nn::Embedding` tables, for Burn's `Adam`: every
//!   step produces, and Adam updates, a gradient the size of each whole table.
//!
//! Both share the record type (`burn::nn::EmbeddingRecord` per table) and the initial
//! values: input vectors `N(0, init_std)` drawn from the run's [`Rng`], context vectors zero
//! (word2vec's initialization, which the PyTorch reference uses).

use burn::module::{AutodiffModule, Initializer, Module, Param};
use burn::nn::{Embedding, EmbeddingConfig};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use burn_sparse_adam::{collect_grads, SparseEmbedding, SparseEmbeddingConfig};

use crate::skipgram::{skip_gram_loss, BatchTensors, SkipGramBatch, SkipGramConfig};
use wordnet_app::rng::{Rng, Stream};

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
pub trait SkipGramModel<B: AutodiffBackend>: AutodiffModule<B> + Clone + Send + 'static {
    /// Creates the model, its input vectors drawn from the [`Stream::Init`] stream of `seed`.
    fn init(shape: ModelShape, seed: u64, device: &B::Device) -> Self;

    /// Input vectors of `ids` (`[batch, n]` → `[batch, n, dim]`).
    fn input(&self, ids: Tensor<B, 2, burn::tensor::Int>) -> Tensor<B, 3>;

    /// Context vectors of `ids` (`[batch, n]` → `[batch, n, dim]`).
    fn context(&self, ids: Tensor<B, 2, burn::tensor::Int>) -> Tensor<B, 3>;

    /// Turns a backward pass into the gradients the optimizer takes.
    fn gradients(&self, grads: B::Gradients) -> GradientsParams;

    /// The input vectors, `[nodes, dim]`, off the autodiff graph (for evaluation).
    fn input_vectors(&self) -> Tensor<B::InnerBackend, 2>;

    /// The rows `batch` looks up: the centres' input vectors, the walks' and the
    /// negatives' context vectors, as [`skip_gram_loss`] takes them.
    fn lookup(&self, batch: &SkipGramBatch, device: &B::Device) -> [Tensor<B, 3>; 3] {
        let ids = BatchTensors::<B>::new(batch, device);
        [
            self.input(ids.centres),
            self.context(ids.walks),
            self.context(ids.negatives),
        ]
    }

    /// The skip-gram loss of `batch` (see [`skip_gram_loss`]).
    fn loss(
        &self,
        batch: &SkipGramBatch,
        config: &SkipGramConfig,
        device: &B::Device,
    ) -> Tensor<B, 1> {
        let [centre, context, negative] = self.lookup(batch, device);
        skip_gram_loss(centre, context, negative, config)
    }
}

/// `N(0, init_std)` values for the input table, from the run's seed.
fn initial_input<B: Backend>(
    shape: ModelShape,
    seed: u64,
    device: &B::Device,
) -> Param<Tensor<B, 2>> {
    let mut rng = Rng::stream(seed, Stream::Init, 0);
    let values: Vec<f32> = (0..shape.nodes * shape.dim)
        .map(|_| (rng.normal() * shape.init_std) as f32)
        .collect();
    Param::from_data(TensorData::new(values, [shape.nodes, shape.dim]), device)
}

/// Input and context vectors in two [`SparseEmbedding`] tables, for SparseAdam.
#[derive(Module, Debug)]
pub struct SparseSkipGram<B: Backend> {
    /// The input (centre) vectors: the node embeddings the evaluation scores.
    pub input: SparseEmbedding<B>,
    /// The context vectors.
    pub context: SparseEmbedding<B>,
}

impl<B: AutodiffBackend> SkipGramModel<B> for SparseSkipGram<B> {
    fn init(shape: ModelShape, seed: u64, device: &B::Device) -> Self {
        let table =
            SparseEmbeddingConfig::new(shape.nodes, shape.dim).with_initializer(Initializer::Zeros);
        let mut input = table.init(device);
        input.weight = initial_input(shape, seed, device);
        Self {
            input,
            context: table.init(device),
        }
    }

    fn input(&self, ids: Tensor<B, 2, burn::tensor::Int>) -> Tensor<B, 3> {
        self.input.forward(ids)
    }

    fn context(&self, ids: Tensor<B, 2, burn::tensor::Int>) -> Tensor<B, 3> {
        self.context.forward(ids)
    }

    /// [`collect_grads`]: the row gradients of both tables, never a table-sized tensor.
    fn gradients(&self, grads: B::Gradients) -> GradientsParams {
        collect_grads(grads, self)
    }

    fn input_vectors(&self) -> Tensor<B::InnerBackend, 2> {
        self.input.weight.val().inner()
    }
}

/// Input and context vectors in two stock `burn::nn::Embedding` tables, for Burn's `Adam`.
#[derive(Module, Debug)]
pub struct DenseSkipGram<B: Backend> {
    /// The input (centre) vectors: the node embeddings the evaluation scores.
    pub input: Embedding<B>,
    /// The context vectors.
    pub context: Embedding<B>,
}

impl<B: AutodiffBackend> SkipGramModel<B> for DenseSkipGram<B> {
    fn init(shape: ModelShape, seed: u64, device: &B::Device) -> Self {
        let table =
            EmbeddingConfig::new(shape.nodes, shape.dim).with_initializer(Initializer::Zeros);
        let mut input = table.init(device);
        input.weight = initial_input(shape, seed, device);
        Self {
            input,
            context: table.init(device),
        }
    }

    fn input(&self, ids: Tensor<B, 2, burn::tensor::Int>) -> Tensor<B, 3> {
        self.input.forward(ids)
    }

    fn context(&self, ids: Tensor<B, 2, burn::tensor::Int>) -> Tensor<B, 3> {
        self.context.forward(ids)
    }

    /// Burn's own `GradientsParams::from_grads`: dense gradients of both whole tables.
    fn gradients(&self, grads: B::Gradients) -> GradientsParams {
        GradientsParams::from_grads(grads, self)
    }

    fn input_vectors(&self) -> Tensor<B::InnerBackend, 2> {
        self.input.weight.val().inner()
    }
}
