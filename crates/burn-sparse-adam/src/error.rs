//! The crate's error type.
//!
//! Every fallible entry point (`try_init`, `try_step`, `try_forward`, …) returns [`Error`]
//! *before* it changes anything: a rejected call leaves the module, the optimizer state and
//! the collected row gradients exactly as they were. The infallible twins that Burn's traits
//! require (`init`, `Optimizer::step`, `forward`) panic with the same message.

use burn::module::ParamId;

/// What went wrong, with the offending field and value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `epsilon` must be finite and strictly positive (PyTorch: "Invalid epsilon value").
    #[error("invalid epsilon value: {value} (SparseAdamConfig.epsilon must be finite and > 0)")]
    InvalidEpsilon {
        /// The rejected value.
        value: f64,
    },

    /// A beta must lie in `[0, 1)` (PyTorch: "Invalid beta parameter at index i").
    #[error(
        "invalid beta parameter at index {index}: {value} (SparseAdamConfig.{field} must be in [0, 1))"
    )]
    InvalidBeta {
        /// `beta_1` or `beta_2`.
        field: &'static str,
        /// PyTorch's index in `betas`: 0 for `beta_1`, 1 for `beta_2`.
        index: usize,
        /// The rejected value.
        value: f64,
    },

    /// The learning rate of a step must be finite and strictly positive
    /// (PyTorch: "Invalid learning rate").
    #[error("invalid learning rate: {value} (the step's learning rate must be finite and > 0)")]
    InvalidLearningRate {
        /// The rejected value.
        value: f64,
    },

    /// An embedding lookup used an index outside `0..n_embedding`
    /// (PyTorch: "index out of range in self").
    #[error(
        "index out of range in self: index {index} is not in 0..{n_embedding} (the table has {n_embedding} rows)"
    )]
    IndexOutOfRange {
        /// The first offending index, as given.
        index: i64,
        /// The number of rows of the table.
        n_embedding: usize,
    },

    /// `padding_idx` must be a row of the table (PyTorch: "Padding_idx must be within
    /// num_embeddings").
    #[error("padding_idx {padding_idx} is not a row of the table: it must be in 0..{n_embedding}")]
    PaddingIdxOutOfRange {
        /// The rejected `padding_idx`.
        padding_idx: usize,
        /// The number of rows of the table.
        n_embedding: usize,
    },

    /// A gradient's shape differs from its parameter's.
    #[error("gradient of parameter {param} has shape {found:?}, but the parameter has shape {expected:?}")]
    GradientShape {
        /// The parameter.
        param: ParamId,
        /// The parameter's shape.
        expected: Vec<usize>,
        /// The gradient's shape.
        found: Vec<usize>,
    },

    /// A saved optimizer state does not fit its parameter.
    #[error("optimizer state of parameter {param} has shape {found:?}, but the parameter has shape {expected:?}")]
    StateShape {
        /// The parameter.
        param: ParamId,
        /// The parameter's shape.
        expected: Vec<usize>,
        /// The shape of the state's moments.
        found: Vec<usize>,
    },

    /// A `SparseEmbedding` was looked up under autodiff, but its row gradients never reached
    /// the optimizer: the `GradientsParams` were built with Burn's
    /// `GradientsParams::from_grads` instead of [`crate::collect_grads`].
    #[error(
        "parameter {param} (a SparseEmbedding weight) was looked up under autodiff, but its row gradients were never collected: build the GradientsParams with burn_sparse_adam::collect_grads(grads, &model) instead of GradientsParams::from_grads"
    )]
    RowGradientsNotCollected {
        /// The embedding's weight.
        param: ParamId,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = core::result::Result<T, Error>;
