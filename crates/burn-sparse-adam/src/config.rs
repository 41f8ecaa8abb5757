//! [`SparseAdamConfig`]: the hyperparameters of `torch.optim.SparseAdam`, as a Burn `Config`.
//!
//! What the config builds is built beside what it builds: `try_build` in the optimizer's
//! per-parameter rule, `try_init`/`init` in the whole-model optimizer.

use burn::config::Config;
use burn::optim::grad_clipping::GradientClippingConfig;
use serde::{Deserialize, Serialize};

/// Configuration of [`SparseAdam`](crate::SparseAdam), PyTorch's `torch.optim.SparseAdam`.
///
/// The learning rate is not part of the config: as everywhere in Burn, it is the step's
/// (`Optimizer::step(lr, …)`), so a learning-rate scheduler drives it.
///
/// Hyperparameters are `f64`, as PyTorch's are Python floats: the step's scalars
/// (`1 − β`, the bias-corrected step size) are computed in double precision and rounded to
/// the tensor's precision once, which is what keeps this crate's float32 numbers next to
/// PyTorch's.
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
    /// unlike Burn's `Adam`, which scales it. Must be finite and `> 0`. Default: `1e-8`.
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
    /// Clip here rather than with `OptimizerAdaptor::with_grad_clipping`: Burn's adaptor
    /// sees a table's marker, not its rows, and leaves the rows unclipped.
    pub grad_clipping: Option<GradientClippingConfig>,
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

impl SparseAdamConfig {
    /// Checks the hyperparameters as PyTorch's constructor does.
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
        sparse_adam_core::Hyperparameters::from(self)
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
