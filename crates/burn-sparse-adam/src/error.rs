//! The crate's error type.
//!
//! Every fallible entry point (`try_init`, `try_step`, `try_forward`, …) returns [`Error`]
//! *before* it changes anything: a rejected call leaves the module, the optimizer state and
//! the collected row gradients exactly as they were. The infallible twins that Burn's traits
//! require (`init`, `Optimizer::step`, `forward`) panic with the same message.

use burn::module::ParamId;
use sparse_adam_core::CoreError;

/// What went wrong, with the offending field and value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `epsilon` must be finite and strictly positive (PyTorch: "Invalid epsilon value").
    #[error("{}", CoreError::InvalidEpsilon { value: *value })]
    InvalidEpsilon {
        /// The rejected value.
        value: f64,
    },

    /// `epsilon` is positive but rounds to 0 in `f32`, the precision of the update (PyTorch
    /// accepts it; here a touched row whose moments are zero would become NaN).
    #[error("{}", CoreError::EpsilonUnderflows { value: *value })]
    EpsilonUnderflows {
        /// The rejected value.
        value: f64,
    },

    /// A beta must lie in `[0, 1)` (PyTorch: "Invalid beta parameter at index i").
    #[error("{}", CoreError::InvalidBeta { field, index: *index, value: *value })]
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
    #[error("{}", CoreError::InvalidLearningRate { value: *value })]
    InvalidLearningRate {
        /// The rejected value.
        value: f64,
    },

    /// The learning rate of a step is finite but not a finite, non-zero `f32`, the
    /// precision of the update (PyTorch accepts it; here it would turn touched rows into
    /// ±inf or NaN, or leave them unchanged).
    #[error("{}", CoreError::LearningRateOutOfRange { value: *value })]
    LearningRateOutOfRange {
        /// The rejected value.
        value: f64,
    },

    /// A gradient-clipping threshold must be finite and `> 0` (`Value(0)` would zero every
    /// gradient, `Norm(inf)` clip nothing).
    #[error(
        "invalid gradient clipping threshold: GradientClippingConfig::{kind}({value}) (SparseAdamConfig.grad_clipping's threshold must be finite and > 0)"
    )]
    InvalidGradClipping {
        /// `"Value"` or `"Norm"`.
        kind: &'static str,
        /// The rejected threshold.
        value: f32,
    },

    /// `weight_decay` must be finite and `>= 0` (PyTorch's `AdamW`: "Invalid weight_decay
    /// value").
    #[error("{}", CoreError::InvalidWeightDecay { value: *value })]
    InvalidWeightDecay {
        /// The rejected value.
        value: f64,
    },

    /// The bias-corrected step size `lr·sqrt(1 − β2^t)/(1 − β1^t)` of a parameter's step is
    /// not finite in `f32` (a large learning rate with `β1` close to 1).
    #[error("{}", CoreError::StepSizeOverflow { lr: *lr, step: *step })]
    StepSizeOverflow {
        /// The step's learning rate (its group's, if any).
        lr: f64,
        /// The parameter's step count `t`, this step included.
        step: usize,
    },

    /// An embedding lookup used an index outside `0..n_embedding`
    /// (PyTorch: "index out of range in self").
    #[error("{}", CoreError::IndexOutOfRange { index: *index, n_embedding: *n_embedding })]
    IndexOutOfRange {
        /// The first offending index, as given.
        index: i64,
        /// The number of rows of the table.
        n_embedding: usize,
    },

    /// `padding_idx` must be a row of the table (PyTorch: "Padding_idx must be within
    /// num_embeddings").
    #[error("{}", CoreError::PaddingIdxOutOfRange { padding_idx: *padding_idx, n_embedding: *n_embedding })]
    PaddingIdxOutOfRange {
        /// The rejected `padding_idx`.
        padding_idx: usize,
        /// The number of rows of the table.
        n_embedding: usize,
    },

    /// A table is larger than the largest buffer its device allocates at once (burn-wgpu:
    /// one storage binding, 128 MiB on lavapipe), so every kernel that binds it would fail.
    #[error("{}", CoreError::TableOverBindingLimit { rows: *rows, width: *width, bytes: *bytes, limit: *limit })]
    TableOverBindingLimit {
        /// The table's rows.
        rows: u64,
        /// The table's row width.
        width: u64,
        /// The table's bytes (in its float type).
        bytes: u64,
        /// The device's limit, in bytes.
        limit: u64,
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

    /// A saved optimizer state has another rank than its parameter.
    #[error("optimizer state of parameter {param} has rank {found}, but the parameter has rank {expected}")]
    StateRank {
        /// The parameter.
        param: ParamId,
        /// The parameter's rank.
        expected: usize,
        /// The state's rank.
        found: usize,
    },

    /// A loaded record holds the state of a parameter that the model does not have.
    #[error(
        "the optimizer record holds a state for parameter {param}, which the model does not have (load the model's record before stepping: it restores the ids the optimizer record refers to)"
    )]
    RecordParamNotInModel {
        /// The parameter of the record.
        param: ParamId,
    },

    /// A parameter group names a parameter that the model does not have.
    #[error(
        "parameter group {group:?} names parameter {param}, which the model does not have (loading a module record replaces its parameter ids: create groups after loading)"
    )]
    GroupParamNotInModel {
        /// The group.
        group: String,
        /// The parameter.
        param: ParamId,
    },

    /// A record's parameter groups differ from the optimizer's.
    #[error("the optimizer record's parameter groups differ from this optimizer's: {detail}")]
    RecordGroupsMismatch {
        /// The first difference.
        detail: String,
    },

    /// A parameter was added to a second group (PyTorch: "some parameters appear in more
    /// than one parameter group").
    #[error(
        "parameter {param} is already in group {group:?}; it cannot also be in group {other:?}"
    )]
    ParamInTwoGroups {
        /// The parameter.
        param: ParamId,
        /// The group it is in.
        group: String,
        /// The group it was added to.
        other: String,
    },

    /// Two groups with one name.
    #[error("a parameter group named {group:?} already exists")]
    DuplicateGroupName {
        /// The name.
        group: String,
    },

    /// A group's hyperparameter is invalid.
    #[error("in parameter group {group:?}: {source}")]
    InGroup {
        /// The group.
        group: String,
        /// What is wrong with it.
        source: Box<Error>,
    },

    /// A gradient holds NaN or ±inf and the config's `non_finite` is `Error`.
    #[error("the gradient of parameter {param} holds non-finite values (NaN or ±inf); nothing was changed (SparseAdamConfig.non_finite = Error)")]
    NonFiniteGradient {
        /// The parameter.
        param: ParamId,
    },

    /// A `SparseEmbedding` was looked up under autodiff on this thread, autodiff has since
    /// released those lookups (a backward pass consumed them, or dropped their unused graph),
    /// and their row gradients never reached the optimizer: the `GradientsParams` were most
    /// likely built with Burn's `GradientsParams::from_grads` instead of
    /// [`crate::collect_grads`].
    #[error(
        "parameter {param} (a SparseEmbedding weight) has lookups made under autodiff on this thread that autodiff has released without their row gradients being collected: if a backward pass used them, build its GradientsParams with burn_sparse_adam::collect_grads(grads, &model) instead of GradientsParams::from_grads; lookups that no loss uses (evaluation) belong on model.valid(), which records nothing"
    )]
    RowGradientsNotCollected {
        /// The embedding's weight.
        param: ParamId,
    },

    /// A table's gradient (its marker) was added to another process's by an engine that
    /// all-reduces `GradientsParams` tensor by tensor (Burn 0.21's `GradientsParams::
    /// all_reduce`): the marker carries no rows, so each peer would apply its own rows only.
    #[error(
        "parameter {param} (a SparseEmbedding weight) had its gradient marker all-reduced with other processes' by an engine that reduces GradientsParams tensor by tensor (GradientsParams::all_reduce): that carries no row gradients, so each peer would apply only its own rows; reduce with burn_sparse_adam::distributed::all_reduce_grads instead"
    )]
    RowGradientsReducedAsDense {
        /// The embedding's weight.
        param: ParamId,
    },

    /// A check of the Burn-free core that this crate has no variant of its own for.
    #[error(transparent)]
    Core(CoreError),

    /// A data-parallel exchange of gradients failed on this peer or another one
    /// (`distributed::all_reduce_grads`); no peer steps.
    #[error(transparent)]
    Exchange(#[from] sparse_adam_core::ExchangeError),

    /// Two data-parallel peers share a table (one's model is a clone of the other's), so
    /// their row gradients would mix.
    #[error(
        "the SparseEmbedding with weight {param} is shared with another data-parallel peer (a clone or fork of its model); give each peer a model of its own (init it from the config and load one record into all of them)"
    )]
    SharedTable {
        /// The weight's parameter id.
        param: String,
    },

    /// A table was handed to burn-train 0.21's DDP strategy, which marks every parameter for
    /// Burn's distributed gradient sync (`Learner::grad_sharded`, burn-train's
    /// `ModuleSharder`): that sync all-reduces gradients inside the backward pass, which a
    /// table's rows never reach, so each device would apply only its own rows (and the
    /// strategy's workers share one model's tables). `SparseEmbedding`'s `Module::map`
    /// panics with this message when that mapper reaches it, before the first step (Burn's
    /// `Module::map` cannot return an error).
    #[error(
        "parameter {param} (a SparseEmbedding weight) is being registered for Burn's distributed gradient sync (burn-train's DDP strategy, ModuleSharder / Tensor::set_distributed), which all-reduces gradients inside the backward pass; a table's row gradients never pass through it, so each device would apply only its own rows: train data-parallel with a model per peer and burn_sparse_adam::distributed::all_reduce_grads instead"
    )]
    TableUnderDistributedSync {
        /// The weight's parameter id.
        param: String,
    },
}

impl From<CoreError> for Error {
    fn from(error: CoreError) -> Self {
        match error {
            CoreError::InvalidEpsilon { value } => Error::InvalidEpsilon { value },
            CoreError::EpsilonUnderflows { value } => Error::EpsilonUnderflows { value },
            CoreError::InvalidBeta {
                field,
                index,
                value,
            } => Error::InvalidBeta {
                field,
                index,
                value,
            },
            CoreError::InvalidLearningRate { value } => Error::InvalidLearningRate { value },
            CoreError::LearningRateOutOfRange { value } => Error::LearningRateOutOfRange { value },
            CoreError::StepSizeOverflow { lr, step } => Error::StepSizeOverflow { lr, step },
            CoreError::InvalidWeightDecay { value } => Error::InvalidWeightDecay { value },
            CoreError::IndexOutOfRange { index, n_embedding } => {
                Error::IndexOutOfRange { index, n_embedding }
            }
            CoreError::PaddingIdxOutOfRange {
                padding_idx,
                n_embedding,
            } => Error::PaddingIdxOutOfRange {
                padding_idx,
                n_embedding,
            },
            CoreError::TableOverBindingLimit {
                rows,
                width,
                bytes,
                limit,
            } => Error::TableOverBindingLimit {
                rows,
                width,
                bytes,
                limit,
            },
            // The core's error is non-exhaustive: a variant this crate does not know yet
            // keeps its message.
            other => Error::Core(other),
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = core::result::Result<T, Error>;

/// A step the optimizer refused: why, and the model and gradients it was given, unchanged,
/// so that nothing is lost (Burn's `Optimizer::step` takes both by value).
pub struct Rejected<M, G> {
    /// Why the step was refused.
    pub error: Error,
    /// The model, as it was.
    pub module: M,
    /// The gradients, as they were.
    pub grads: G,
}

impl<M, G> core::fmt::Debug for Rejected<M, G> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Rejected")
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

impl<M, G> core::fmt::Display for Rejected<M, G> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        core::fmt::Display::fmt(&self.error, f)
    }
}

impl<M, G> std::error::Error for Rejected<M, G> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

impl<M, G> From<Rejected<M, G>> for Error {
    fn from(rejected: Rejected<M, G>) -> Self {
        rejected.error
    }
}
