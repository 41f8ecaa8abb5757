//! The core's error type: what a check of this crate rejects, with the offending value.
//!
//! The five errors that PyTorch also raises ([`CoreError::InvalidEpsilon`],
//! [`CoreError::InvalidBeta`], [`CoreError::InvalidLearningRate`],
//! [`CoreError::IndexOutOfRange`], [`CoreError::PaddingIdxOutOfRange`]) keep the messages
//! `burn-sparse-adam` has always shown. The other three reject values PyTorch accepts but
//! that this crate cannot honour, because its update runs in `f32`: an epsilon, a learning
//! rate or a bias-corrected step size that `f32` rounds to zero or to infinity would turn the
//! touched rows into NaN or ±inf.

/// What a check rejected, with the offending field and value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum CoreError {
    /// `epsilon` must be finite and strictly positive (PyTorch: "Invalid epsilon value").
    #[error("invalid epsilon value: {value} (SparseAdamConfig.epsilon must be finite and > 0)")]
    InvalidEpsilon {
        /// The rejected value.
        value: f64,
    },

    /// `epsilon` is positive in `f64` but rounds to `0` in `f32`, the precision of the update.
    ///
    /// PyTorch accepts it; here the denominator `sqrt(v) + ε` of a touched row whose moments
    /// are zero (a row whose summed gradient is zero) would be `0`, and the row would become
    /// NaN.
    #[error(
        "invalid epsilon value: {value:e} rounds to 0 in f32, the precision the update runs in (SparseAdamConfig.epsilon must be at least about 1.4e-45, the smallest positive f32)"
    )]
    EpsilonUnderflows {
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

    /// The learning rate is finite and positive in `f64`, but `f32`, the precision of the
    /// update, rounds it to `0` or to infinity.
    ///
    /// PyTorch accepts it; here an infinite step size would turn every touched row into
    /// ±inf or NaN.
    #[error(
        "invalid learning rate: {value:e} is not a finite, non-zero f32, the precision the update runs in (the step's learning rate must lie between about 1.4e-45 and 3.4e38)"
    )]
    LearningRateOutOfRange {
        /// The rejected value.
        value: f64,
    },

    /// `weight_decay` must be finite and `>= 0` (PyTorch's `AdamW`: "Invalid weight_decay
    /// value").
    #[error(
        "invalid weight_decay value: {value} (SparseAdamConfig.weight_decay must be finite and >= 0)"
    )]
    InvalidWeightDecay {
        /// The rejected value.
        value: f64,
    },

    /// The weight-decay factor `1 − lr·λ` of a step lies outside `[0.5, 1]`: the step would
    /// remove more than half of each touched row (or flip its sign), which is almost surely
    /// a misconfigured learning rate or decay; within the range every path computes
    /// `p·(1 − lr·λ)` exactly as the fused loops do.
    #[error(
        "the weight-decay factor 1 − lr·weight_decay = {factor} at learning rate {lr:e} and weight_decay {weight_decay:e} is outside [0.5, 1] (lower the learning rate or the weight decay: lr·weight_decay must be at most 0.5)"
    )]
    DecayOutOfRange {
        /// `1 − lr·λ`, rounded to `f32`.
        factor: f32,
        /// The step's learning rate.
        lr: f64,
        /// The weight decay `λ`.
        weight_decay: f64,
    },

    /// The bias-corrected step size `lr · sqrt(1 − β2^t) / (1 − β1^t)` of step `t` is not
    /// finite in `f32`, the precision of the update (a large learning rate with `β1` close
    /// to 1).
    #[error(
        "the bias-corrected step size lr·sqrt(1 − beta_2^t)/(1 − beta_1^t) at learning rate {lr:e} and step t = {step} is not finite in f32, the precision the update runs in (lower the learning rate, or move beta_1 away from 1)"
    )]
    StepSizeOverflow {
        /// The step's learning rate.
        lr: f64,
        /// The parameter's step count `t` (1-based).
        step: usize,
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

    /// A table is larger than the largest buffer its device allocates at once, which on wgpu
    /// is the largest buffer one kernel can bind (the storage-binding limit: 128 MiB on Mesa's
    /// lavapipe, at most 2 GiB on Vulkan and DX12 without 64-bit indexing). Every kernel that
    /// binds the whole table (the lookup, Burn's own `Embedding` included, the update) would
    /// fail on the device's thread.
    #[error(
        "a [{rows}, {width}] table takes {bytes} bytes, over the {limit}-byte limit of one \
         buffer (one binding, on wgpu) of its device: every kernel that binds it would fail. \
         Hold it as shards of at most {max_rows} rows (the 0.2 line's ShardedEmbedding), or \
         train it on a device without this limit (the CPU)",
        max_rows = .limit / (.bytes / .rows)
    )]
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
}

/// `Result` with the core's [`CoreError`].
pub type CoreResult<T> = core::result::Result<T, CoreError>;

#[cfg(test)]
mod tests {
    use super::*;

    /// The messages PyTorch's errors map to are the ones `burn-sparse-adam` has shown since
    /// its first release: users match on them.
    #[test]
    fn messages_of_pytorch_errors_are_unchanged() {
        let cases = [
            (
                CoreError::InvalidEpsilon { value: 0.0 },
                "invalid epsilon value: 0 (SparseAdamConfig.epsilon must be finite and > 0)",
            ),
            (
                CoreError::InvalidBeta {
                    field: "beta_2",
                    index: 1,
                    value: 1.0,
                },
                "invalid beta parameter at index 1: 1 (SparseAdamConfig.beta_2 must be in [0, 1))",
            ),
            (
                CoreError::InvalidLearningRate { value: -1.0 },
                "invalid learning rate: -1 (the step's learning rate must be finite and > 0)",
            ),
            (
                CoreError::IndexOutOfRange {
                    index: 10,
                    n_embedding: 10,
                },
                "index out of range in self: index 10 is not in 0..10 (the table has 10 rows)",
            ),
            (
                CoreError::PaddingIdxOutOfRange {
                    padding_idx: 3,
                    n_embedding: 3,
                },
                "padding_idx 3 is not a row of the table: it must be in 0..3",
            ),
        ];
        for (error, message) in cases {
            assert_eq!(error.to_string(), message);
        }
    }

    /// A table over its device's largest buffer is refused with its bytes, the limit and the
    /// most rows per shard; one that fits, or a device without a limit, passes.
    #[test]
    fn a_table_over_the_buffer_limit_names_the_most_rows_per_shard() {
        let limit = 128 << 20;
        let error = crate::check_table_size([600_000, 64], 4, Some(limit)).unwrap_err();
        assert_eq!(
            error,
            CoreError::TableOverBindingLimit {
                rows: 600_000,
                width: 64,
                bytes: 153_600_000,
                limit,
            }
        );
        let message = error.to_string();
        assert!(
            message.starts_with(
                "a [600000, 64] table takes 153600000 bytes, over the 134217728-byte limit"
            ) && message.contains("shards of at most 524288 rows"),
            "{message}"
        );
        assert_eq!(
            crate::check_table_size([524_288, 64], 4, Some(limit)),
            Ok(())
        );
        assert_eq!(crate::check_table_size([600_000, 64], 4, None), Ok(()));
        assert_eq!(crate::check_table_size([0, 64], 4, Some(0)), Ok(()));
    }

    #[test]
    fn step_size_overflow_names_the_learning_rate_and_step() {
        let message = CoreError::StepSizeOverflow { lr: 1e38, step: 2 }.to_string();
        assert_eq!(
            message,
            "the bias-corrected step size lr·sqrt(1 − beta_2^t)/(1 − beta_1^t) at learning rate 1e38 and step t = 2 is not finite in f32, the precision the update runs in (lower the learning rate, or move beta_1 away from 1)"
        );
    }
}
