//! The crate's error type (the bottom layer: it imports nothing of this crate).
//!
//! Every fallible entry point (`try_init`, `try_step`, `try_forward`, …) returns [`Error`]
//! *before* it changes anything: a rejected call leaves the module, the optimizer state and
//! the collected row gradients exactly as they were. The infallible twins that Burn's traits
//! require (`init`, `Optimizer::step`, `forward`) panic with the same message.
//!
//! The messages are the 0.1 line's (Burn 0.21), so that users who match on them keep
//! working after the move to 0.2.

use burn::module::ParamId;
use burn::tensor::DType;
use sparse_adam_core::{CoreError, MomentDtype};

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

    /// A gradient's shape differs from its parameter's.
    #[error(
        "gradient of parameter {param} has shape {found:?}, but the parameter has shape {expected:?}"
    )]
    GradientShape {
        /// The parameter.
        param: ParamId,
        /// The parameter's shape.
        expected: Vec<usize>,
        /// The gradient's shape.
        found: Vec<usize>,
    },

    /// A gradient's shape differs from its tensor's, in a step of the per-tensor rule (Burn's
    /// `ModuleOptimizer` does not tell the rule which parameter it steps).
    #[error("a gradient has shape {found:?}, but its tensor has shape {expected:?}")]
    TensorGradientShape {
        /// The tensor's shape.
        expected: Vec<usize>,
        /// The gradient's shape.
        found: Vec<usize>,
    },

    /// A saved optimizer state does not fit its parameter.
    #[error(
        "optimizer state of parameter {param} has shape {found:?}, but the parameter has shape {expected:?}"
    )]
    StateShape {
        /// The parameter.
        param: ParamId,
        /// The parameter's shape.
        expected: Vec<usize>,
        /// The shape of the state's moments.
        found: Vec<usize>,
    },

    /// The config's `moment_dtype` does not widen exactly to the parameter's float type
    /// (moments in `f32` for a `bf16` table, or `f16` moments for a `bf16` table): the
    /// update widens the moments to the parameter's type.
    #[error(
        "SparseAdamConfig.moment_dtype {moments} does not widen exactly to the parameter's \
         {param:?}: moments may be stored in the parameter's own type, or, for f32 and f64 \
         parameters, in a narrower one (leave moment_dtype None for the parameter's type)"
    )]
    MomentsWiderThanParam {
        /// The config's moment type.
        moments: MomentDtype,
        /// The parameter's float type.
        param: DType,
    },

    /// `epsilon` is below the smallest positive value of the parameter's float type, the
    /// precision its update runs in (the default 1e-8 in `f16`): it would round to 0 or to
    /// that value, and a touched row whose second moment is 0 would become NaN.
    #[error(
        "epsilon {value} is below the smallest positive value of the parameter's {param:?}, \
         the precision of its update: a touched row whose second moment is 0 would become \
         NaN (for f16 parameters, an epsilon of at least 6e-8; fp16 training commonly uses \
         1e-4)"
    )]
    EpsilonUnderflowsInParam {
        /// The config's epsilon.
        value: f64,
        /// The parameter's float type.
        param: DType,
    },

    /// A table is larger than the largest buffer its device allocates at once (wgpu: one
    /// storage binding, 128 MiB on lavapipe), so every kernel that binds it would fail; hold
    /// it as a [`ShardedEmbedding`](crate::ShardedEmbedding).
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

    /// `ShardedEmbeddingConfig::rows_per_shard` is `Some(0)`.
    #[error(
        "ShardedEmbeddingConfig.rows_per_shard must be at least 1 (or None for the most rows one buffer binding holds)"
    )]
    InvalidRowsPerShard,

    /// The parameter's device cannot hold the config's `moment_dtype` (wgpu has no `bf16`).
    #[error(
        "SparseAdamConfig.moment_dtype {moments} is not supported on device {device}: choose \
         a type the device holds (f16 where the adapter has shader-f16, or f32)"
    )]
    MomentDtypeUnsupported {
        /// The config's moment type.
        moments: MomentDtype,
        /// The device, as Burn prints it.
        device: String,
    },

    /// A saved optimizer state holds its moments in another type than the config stores them
    /// in: a record continues under another `moment_dtype` only through an explicit
    /// conversion.
    #[error(
        "an optimizer state holds its moments in {found:?}, but the config stores them in \
         {expected:?}: convert them explicitly with \
         SparseAdamOptimizer::convert_moments"
    )]
    StateMomentDtype {
        /// The type the config asks for (the parameter's own when `moment_dtype` is `None`).
        expected: DType,
        /// The type of the saved moments.
        found: DType,
    },

    /// A saved optimizer state has another rank than its parameter.
    #[error(
        "optimizer state of parameter {param} has rank {found}, but the parameter has rank {expected}"
    )]
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

    /// An optimizer record cannot be read as SparseAdam's.
    #[error("cannot read the optimizer record: {detail}")]
    Record {
        /// What is wrong with it.
        detail: String,
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
    #[error(
        "the gradient of parameter {param} holds non-finite values (NaN or ±inf); nothing was changed (SparseAdamConfig.non_finite = Error)"
    )]
    NonFiniteGradient {
        /// The parameter.
        param: ParamId,
    },

    /// A gradient holds NaN or ±inf and the config's `non_finite` is `Error`, in a step of the
    /// per-tensor rule (Burn's `ModuleOptimizer` does not tell the rule which parameter it
    /// steps; it panics with this message, and parameters it stepped before keep their step).
    #[error(
        "a gradient holds non-finite values (NaN or ±inf) (SparseAdamConfig.non_finite = Error)"
    )]
    NonFiniteTensorGradient,

    /// A `SparseEmbedding` was looked up under autodiff, the step found no gradient for it,
    /// and its lookups' row gradients were never collected: the `GradientsParams` were most
    /// likely built with Burn's `GradientsParams::from_grads` instead of
    /// [`crate::collect_grads`].
    #[error(
        "parameter {param} (a SparseEmbedding weight) has lookups made under autodiff whose row gradients were never collected: if a backward pass used them, build its GradientsParams with burn_sparse_adam::collect_grads(grads, &model) instead of GradientsParams::from_grads; lookups that no loss uses (evaluation) belong on model.valid(), which records nothing"
    )]
    RowGradientsNotCollected {
        /// The embedding's weight.
        param: ParamId,
    },

    /// A check of the Burn-free core that this crate has no variant of its own for.
    #[error(transparent)]
    Core(CoreError),

    /// A table's weight is registered for Burn 0.22's distributed gradient sync (burn-train's
    /// DDP strategy marks every parameter): that sync all-reduces gradients inside the
    /// backward pass, which a table's rows never reach, so each device would apply only its
    /// own rows. `collect_grads` panics with this message (it cannot return an error, nor can
    /// the `TrainStep` it runs in).
    #[error(
        "parameter {param} (a SparseEmbedding weight) is registered for Burn's distributed gradient sync (burn-train's DDP strategy, Tensor::set_distributed), which all-reduces gradients inside the backward pass; a table's row gradients never pass through it, so each device would apply only its own rows: leave the table out of the synchronized parameters and reduce with burn_sparse_adam::distributed::all_reduce_grads"
    )]
    TableUnderDistributedSync {
        /// The embedding's weight.
        param: ParamId,
    },

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
        param: ParamId,
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
