//! [`SparseAdamConfig`]: the hyperparameters of `torch.optim.SparseAdam`, as a Burn `Config`,
//! and [`NonFinite`], the policy for gradients holding NaN or ±inf.
//!
//! This is the bottom layer with [`error`](crate::error) and [`state`](crate::state): it
//! imports nothing else of this crate. What a config builds (`build`, `init`, `try_init`)
//! is defined beside what it builds, in the optimizer layer, as Burn's own `adam.rs` does.

use burn::config::Config;
use burn::optim::grad_clipping::GradientClippingConfig;
use serde::{Deserialize, Serialize};
use sparse_adam_core::{Hyperparameters, MomentDtype};

/// Configuration of SparseAdam, PyTorch's `torch.optim.SparseAdam`.
///
/// The learning rate is not part of the config: as everywhere in Burn, it is the step's, so
/// that a learning-rate scheduler drives it.
///
/// Hyperparameters are `f64`, as PyTorch's are Python floats: the step's scalars
/// (`1 − β`, the bias-corrected step size) are computed in double precision and rounded to
/// `f32` once (the core's [`StepScalars`](sparse_adam_core::StepScalars)), which is what
/// keeps this crate's float32 numbers next to PyTorch's.
///
/// # Example
///
/// ```
/// use burn_sparse_adam::SparseAdamConfig;
///
/// let config = SparseAdamConfig::new().with_beta_2(0.98);
/// assert!(config.validate().is_ok());
///
/// // "SparseAdamW": the rows a step touches decay by 1 − lr·λ before their update.
/// let adamw = SparseAdamConfig::new().with_weight_decay(Some(0.01));
/// assert!(adamw.validate().is_ok());
/// assert!(SparseAdamConfig::new().with_weight_decay(Some(-1.0)).validate().is_err());
///
/// // Moments stored in bfloat16: half the optimizer's memory on an `f32` table.
/// use burn_sparse_adam::MomentDtype;
/// let compact = SparseAdamConfig::new().with_moment_dtype(Some(MomentDtype::Bf16));
/// assert!(compact.validate().is_ok());
///
/// let bad = SparseAdamConfig::new().with_epsilon(0.0);
/// assert_eq!(
///     bad.validate().unwrap_err().to_string(),
///     "invalid epsilon value: 0 (SparseAdamConfig.epsilon must be finite and > 0)"
/// );
/// ```
#[derive(Config, Debug)]
pub struct SparseAdamConfig {
    /// Decay rate of the first moment, PyTorch's `betas[0]`. Must lie in `[0, 1)`.
    /// Default: `0.9`.
    #[config(default = 0.9)]
    pub beta_1: f64,
    /// Decay rate of the second moment, PyTorch's `betas[1]`. Must lie in `[0, 1)`.
    /// Default: `0.999`.
    #[config(default = 0.999)]
    pub beta_2: f64,
    /// Added to `sqrt(v)` *before* the bias correction of the step size ("epsilon hat"),
    /// unlike Burn's `Adam`, which scales it. Must be finite, `> 0`, and not round to `0` in
    /// `f32`. Default: `1e-8`.
    #[config(default = 1e-8)]
    pub epsilon: f64,
    /// Ascend the objective instead of descending it: the gradient is negated before it
    /// enters the moments. Default: `false`.
    #[config(default = false)]
    pub maximize: bool,
    /// Lazy decoupled weight decay `λ` ("SparseAdamW"; not in PyTorch's SparseAdam): each
    /// row a step touches is first multiplied by `1 − lr·λ`, as AdamW does, then takes its
    /// SparseAdam update. Rows the step does not touch are not decayed, so a row that is
    /// rarely looked up is rarely decayed (the decay counts the row's updates, not the
    /// optimizer's steps). A dense gradient touches the rows with a non-zero entry, and only
    /// those decay. Must be finite and `>= 0`, and each step's `1 − lr·λ` lie in
    /// `[0.5, 1]`. Default: `None` (no decay, PyTorch's numbers; `Some(0.0)` is the same).
    /// An `Option`, as Burn's `AdamConfig::weight_decay` is, so that a config saved before
    /// it existed still loads.
    pub weight_decay: Option<f64>,
    /// What a step does with a gradient holding NaN or ±inf. Default:
    /// [`NonFinite::Propagate`], PyTorch's behaviour.
    #[config(default = "NonFinite::Propagate")]
    pub non_finite: NonFinite,
    /// Gradient clipping, as Burn's optimizers offer it (`AdamConfig::grad_clipping`), per
    /// parameter and before the update: `Value(t)` clamps every entry to `[−t, t]`,
    /// `Norm(t)` scales the gradient by `min(1, t / (‖g‖₂ + m))`, `m` the float type's
    /// smallest positive normal value (Burn's
    /// `GradientClipping`, on the device, no read-back). A table's row gradient is clipped
    /// as the sparse gradient it stands for: its norm is that of its touched rows
    /// (duplicates summed), which is the norm of the table-sized gradient, never built.
    /// The threshold must be finite and `> 0`. Default: none.
    ///
    /// Clip here rather than with `ModuleOptimizer::with_grad_clipping`: Burn's optimizer
    /// sees a table's marker, not its rows, and leaves the rows unclipped.
    pub grad_clipping: Option<GradientClippingConfig>,
    /// The float type the moments are stored in (compact moments; not in PyTorch's
    /// SparseAdam, which keeps them in the parameter's type; DGL's sparse optimizers offer
    /// it). `Some(MomentDtype::Bf16)` or `Some(MomentDtype::F16)` store an `f32` table's
    /// moments in 16 bits, halving the optimizer's memory: each step widens a touched row's
    /// moments, updates them in the parameter's precision by the same formula, and rounds
    /// them once to nearest when storing them (see
    /// [`sparse_adam_core::moments`]). The moments may not be wider than the parameter
    /// ([`Error::MomentsWiderThanParam`](crate::Error::MomentsWiderThanParam)), and the
    /// parameter's device must hold the type
    /// ([`Error::MomentDtypeUnsupported`](crate::Error::MomentDtypeUnsupported); wgpu has no
    /// `bf16`). A state saved in one type continues under another only through
    /// [`SparseAdamOptimizer::convert_moments`](crate::SparseAdamOptimizer::convert_moments)
    /// ([`Error::StateMomentDtype`](crate::Error::StateMomentDtype) otherwise).
    /// Prefer `Bf16`: `f16`'s range breaks Adam for gradients below about `10⁻²` (their
    /// `(1 − β₂)·g²` rounds to 0, so `v` never accumulates and steps grow about 30-fold);
    /// the WordNet example diverges with `F16` and keeps its AUCs with `Bf16`.
    /// Default: `None`, the parameter's own type (PyTorch's numbers).
    pub moment_dtype: Option<MomentDtype>,
}

impl PartialEq for SparseAdamConfig {
    fn eq(&self, other: &Self) -> bool {
        // Burn's `GradientClippingConfig` has no `PartialEq`.
        let clipping = |c: &Option<GradientClippingConfig>| {
            c.as_ref().map(|c| match c {
                GradientClippingConfig::Value(t) => (0, t.to_bits()),
                GradientClippingConfig::Norm(t) => (1, t.to_bits()),
            })
        };
        self.beta_1 == other.beta_1
            && self.beta_2 == other.beta_2
            && self.epsilon == other.epsilon
            && self.maximize == other.maximize
            && self.weight_decay.unwrap_or(0.0) == other.weight_decay.unwrap_or(0.0)
            && self.non_finite == other.non_finite
            && clipping(&self.grad_clipping) == clipping(&other.grad_clipping)
            && self.moment_dtype == other.moment_dtype
    }
}

/// What a step does with a parameter whose gradient holds NaN or ±inf.
///
/// Detecting it costs one small reduction per parameter on the device and a one-value read
/// back; nothing table-sized leaves the device. `Propagate` does not look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum NonFinite {
    /// Use the gradient as it is, as PyTorch does: the NaN or inf reaches the moments and
    /// the parameter of the touched rows.
    #[default]
    Propagate,
    /// Skip that parameter's step: its values, moments and step count stay as they were,
    /// and its row gradients are dropped. Other parameters step as usual.
    Skip,
    /// Reject the whole step with [`Error::NonFiniteGradient`](crate::Error::NonFiniteGradient)
    /// before anything changes.
    Error,
}

impl From<&SparseAdamConfig> for Hyperparameters {
    fn from(config: &SparseAdamConfig) -> Self {
        Self {
            beta_1: config.beta_1,
            beta_2: config.beta_2,
            epsilon: config.epsilon,
            maximize: config.maximize,
            weight_decay: config.weight_decay.unwrap_or(0.0),
        }
    }
}

impl SparseAdamConfig {
    /// Checks the hyperparameters as PyTorch's constructor does (the core's
    /// [`Hyperparameters::validate`]).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidEpsilon`](crate::Error::InvalidEpsilon) when `epsilon` is not finite
    /// or `<= 0`; [`Error::EpsilonUnderflows`](crate::Error::EpsilonUnderflows) when it rounds
    /// to 0 in `f32`, the precision of the update (PyTorch accepts such an epsilon; here a
    /// touched row with zero moments would become NaN);
    /// [`Error::InvalidBeta`](crate::Error::InvalidBeta) when a beta is outside `[0, 1)` (NaN
    /// included); [`Error::InvalidWeightDecay`](crate::Error::InvalidWeightDecay) when
    /// `weight_decay` is not finite or `< 0`;
    /// [`Error::InvalidGradClipping`](crate::Error::InvalidGradClipping) when a clipping
    /// threshold is not finite or `<= 0`.
    pub fn validate(&self) -> crate::Result<()> {
        Hyperparameters::from(self)
            .validate()
            .map_err(crate::Error::from)?;
        if let Some(clipping) = &self.grad_clipping {
            let (kind, value) = match clipping {
                GradientClippingConfig::Value(t) => ("Value", *t),
                GradientClippingConfig::Norm(t) => ("Norm", *t),
            };
            if !(value.is_finite() && value > 0.0) {
                return Err(crate::Error::InvalidGradClipping { kind, value });
            }
        }
        Ok(())
    }
}
