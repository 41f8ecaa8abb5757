//! The hyperparameters of `torch.optim.SparseAdam` and their validation.
//!
//! The checks are PyTorch's constructor's, plus the ones that `f32` needs: the update runs
//! in `f32` (see the `update` module), so an epsilon or a learning rate that PyTorch
//! accepts but that `f32` rounds to `0` or to infinity is rejected here, before it turns the
//! touched rows into NaN or ±inf.

use serde::{Deserialize, Serialize};

use crate::error::{CoreError, CoreResult};

/// The hyperparameters of `torch.optim.SparseAdam`, without the learning rate (which is the
/// step's, so that a scheduler can drive it).
///
/// They are `f64`, as PyTorch's are Python floats: the step's scalars (`1 − β`, the
/// bias-corrected step size) are computed in double precision and rounded to `f32` once,
/// which is what keeps the `f32` results next to PyTorch's (see
/// `StepScalars`).
///
/// [`Default`] gives PyTorch's defaults: `betas = (0.9, 0.999)`, `eps = 1e-8`,
/// `maximize = False`, and no weight decay (PyTorch's SparseAdam has none). Deserializing
/// fills missing fields with them.
///
/// # Example
///
/// ```
/// use sparse_adam_core::Hyperparameters;
///
/// let hyper = Hyperparameters { beta_2: 0.98, ..Default::default() };
/// assert!(hyper.validate().is_ok());
///
/// let bad = Hyperparameters { epsilon: 0.0, ..Default::default() };
/// assert_eq!(
///     bad.validate().unwrap_err().to_string(),
///     "invalid epsilon value: 0 (SparseAdamConfig.epsilon must be finite and > 0)"
/// );
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Hyperparameters {
    /// Decay rate of the first moment, PyTorch's `betas[0]`. Must lie in `[0, 1)`.
    /// Default: `0.9`.
    pub beta_1: f64,
    /// Decay rate of the second moment, PyTorch's `betas[1]`. Must lie in `[0, 1)`.
    /// Default: `0.999`.
    pub beta_2: f64,
    /// Added to `sqrt(v)` *before* the bias correction of the step size ("epsilon hat"),
    /// unlike Burn's `Adam`, which scales it. Must be finite, `> 0`, and not round to `0`
    /// in `f32`. Default: `1e-8`.
    pub epsilon: f64,
    /// Ascend the objective instead of descending it: the gradient is negated before it
    /// enters the moments. Default: `false`.
    pub maximize: bool,
    /// Lazy decoupled weight decay `λ` (AdamW's, applied to touched rows only): each touched
    /// row is multiplied by `1 − lr·λ` before its SparseAdam update; untouched rows are not
    /// decayed. Must be finite and `>= 0`. Default: `0.0` (none: PyTorch's SparseAdam).
    pub weight_decay: f64,
}

impl Default for Hyperparameters {
    /// PyTorch's defaults: `beta_1 = 0.9`, `beta_2 = 0.999`, `epsilon = 1e-8`,
    /// `maximize = false`.
    fn default() -> Self {
        Self {
            beta_1: 0.9,
            beta_2: 0.999,
            epsilon: 1e-8,
            maximize: false,
            weight_decay: 0.0,
        }
    }
}

impl From<&Hyperparameters> for Hyperparameters {
    fn from(hyper: &Hyperparameters) -> Self {
        *hyper
    }
}

impl Hyperparameters {
    /// Checks the hyperparameters as PyTorch's constructor does, and that `epsilon` survives
    /// the rounding to `f32`.
    ///
    /// # Errors
    ///
    /// - [`CoreError::InvalidEpsilon`] when `epsilon` is not finite or `<= 0` (PyTorch
    ///   rejects it too);
    /// - [`CoreError::EpsilonUnderflows`] when `epsilon` is positive but rounds to `0` in
    ///   `f32` (below about `7e-46`). PyTorch accepts it and computes in `f64` only what its
    ///   Python floats hold; here `sqrt(v) + ε` would be `0` for a touched row whose moments
    ///   are zero, and `0 / 0` would make that row NaN;
    /// - [`CoreError::InvalidBeta`] when a beta is outside `[0, 1)`, NaN included (PyTorch
    ///   rejects it too);
    /// - [`CoreError::InvalidWeightDecay`] when `weight_decay` is not finite or `< 0`
    ///   (PyTorch's `AdamW` rejects a negative one too).
    pub fn validate(&self) -> CoreResult<()> {
        if !(self.epsilon.is_finite() && self.epsilon > 0.0) {
            return Err(CoreError::InvalidEpsilon {
                value: self.epsilon,
            });
        }
        if self.epsilon as f32 <= 0.0 {
            return Err(CoreError::EpsilonUnderflows {
                value: self.epsilon,
            });
        }
        for (index, field, value) in [(0, "beta_1", self.beta_1), (1, "beta_2", self.beta_2)] {
            if !(0.0..1.0).contains(&value) {
                return Err(CoreError::InvalidBeta {
                    field,
                    index,
                    value,
                });
            }
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(CoreError::InvalidWeightDecay {
                value: self.weight_decay,
            });
        }
        Ok(())
    }
}

/// Checks a step's learning rate as PyTorch does, and that it survives the rounding to
/// `f32`.
///
/// # Errors
///
/// - [`CoreError::InvalidLearningRate`] when `lr` is not finite or `<= 0` (PyTorch rejects
///   it too);
/// - [`CoreError::LearningRateOutOfRange`] when `lr` is finite and positive but rounds to
///   `0` or to infinity in `f32` (below about `7e-46`, or above about `3.4e38`). PyTorch
///   accepts it; here the step size is rounded to `f32` and an infinite one turns every
///   touched row into ±inf or NaN (a zero one would silently do nothing).
///
/// # Example
///
/// ```
/// use sparse_adam_core::validate_lr;
///
/// assert!(validate_lr(1e-3).is_ok());
/// assert_eq!(
///     validate_lr(-1.0).unwrap_err().to_string(),
///     "invalid learning rate: -1 (the step's learning rate must be finite and > 0)"
/// );
/// assert!(validate_lr(1e300).is_err()); // finite in f64, infinite in f32
/// ```
pub fn validate_lr(lr: f64) -> CoreResult<()> {
    if !(lr.is_finite() && lr > 0.0) {
        return Err(CoreError::InvalidLearningRate { value: lr });
    }
    let rounded = lr as f32;
    if !(rounded.is_finite() && rounded > 0.0) {
        return Err(CoreError::LearningRateOutOfRange { value: lr });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(result: CoreResult<()>) -> String {
        result.unwrap_err().to_string()
    }

    #[test]
    fn defaults_are_pytorchs() {
        let hyper = Hyperparameters::default();
        assert_eq!(hyper.beta_1, 0.9);
        assert_eq!(hyper.beta_2, 0.999);
        assert_eq!(hyper.epsilon, 1e-8);
        assert!(!hyper.maximize);
        assert_eq!(hyper.validate(), Ok(()));
    }

    #[test]
    fn epsilon_must_be_finite_positive_and_an_f32() {
        let with = |epsilon| Hyperparameters {
            epsilon,
            ..Default::default()
        };
        assert_eq!(
            message(with(0.0).validate()),
            "invalid epsilon value: 0 (SparseAdamConfig.epsilon must be finite and > 0)"
        );
        assert_eq!(
            message(with(f64::NAN).validate()),
            "invalid epsilon value: NaN (SparseAdamConfig.epsilon must be finite and > 0)"
        );
        assert_eq!(
            with(f64::INFINITY).validate(),
            Err(CoreError::InvalidEpsilon {
                value: f64::INFINITY
            })
        );
        assert_eq!(
            message(with(1e-50).validate()),
            "invalid epsilon value: 1e-50 rounds to 0 in f32, the precision the update runs in (SparseAdamConfig.epsilon must be at least about 1.4e-45, the smallest positive f32)"
        );
        // The smallest positive f32 (a subnormal) is accepted: `0 / ε` is `0`, not NaN.
        assert_eq!(with(1.4e-45).validate(), Ok(()));
    }

    #[test]
    fn betas_must_lie_in_zero_one() {
        let nan = Hyperparameters {
            beta_1: f64::NAN,
            ..Default::default()
        };
        assert_eq!(
            message(nan.validate()),
            "invalid beta parameter at index 0: NaN (SparseAdamConfig.beta_1 must be in [0, 1))"
        );
        let one = Hyperparameters {
            beta_2: 1.0,
            ..Default::default()
        };
        assert_eq!(
            message(one.validate()),
            "invalid beta parameter at index 1: 1 (SparseAdamConfig.beta_2 must be in [0, 1))"
        );
        let negative = Hyperparameters {
            beta_2: -0.1,
            ..Default::default()
        };
        assert_eq!(
            negative.validate(),
            Err(CoreError::InvalidBeta {
                field: "beta_2",
                index: 1,
                value: -0.1
            })
        );
        let zero = Hyperparameters {
            beta_1: 0.0,
            beta_2: 0.0,
            ..Default::default()
        };
        assert_eq!(zero.validate(), Ok(()));
    }

    #[test]
    fn learning_rate_must_be_finite_positive_and_an_f32() {
        assert_eq!(
            message(validate_lr(-1.0)),
            "invalid learning rate: -1 (the step's learning rate must be finite and > 0)"
        );
        assert_eq!(
            validate_lr(0.0),
            Err(CoreError::InvalidLearningRate { value: 0.0 })
        );
        assert!(matches!(
            validate_lr(f64::NAN),
            Err(CoreError::InvalidLearningRate { value }) if value.is_nan()
        ));
        assert_eq!(
            message(validate_lr(1e300)),
            "invalid learning rate: 1e300 is not a finite, non-zero f32, the precision the update runs in (the step's learning rate must lie between about 1.4e-45 and 3.4e38)"
        );
        assert_eq!(
            message(validate_lr(1e-50)),
            "invalid learning rate: 1e-50 is not a finite, non-zero f32, the precision the update runs in (the step's learning rate must lie between about 1.4e-45 and 3.4e38)"
        );
        assert_eq!(validate_lr(0.01), Ok(()));
        assert_eq!(validate_lr(f32::MAX as f64), Ok(()));
    }

    #[test]
    fn serde_round_trips_and_fills_defaults() {
        let hyper = Hyperparameters {
            beta_1: 0.5,
            beta_2: 0.75,
            epsilon: 0.1,
            maximize: true,
            weight_decay: 0.01,
        };
        let json = serde_json::to_string(&hyper).unwrap();
        assert_eq!(
            json,
            r#"{"beta_1":0.5,"beta_2":0.75,"epsilon":0.1,"maximize":true,"weight_decay":0.01}"#
        );
        assert_eq!(
            serde_json::from_str::<Hyperparameters>(&json).unwrap(),
            hyper
        );
        let partial: Hyperparameters = serde_json::from_str(r#"{"maximize":true}"#).unwrap();
        assert_eq!(
            partial,
            Hyperparameters {
                maximize: true,
                ..Default::default()
            }
        );
    }

    #[test]
    fn weight_decay_must_be_finite_and_not_negative() {
        let with = |weight_decay| Hyperparameters {
            weight_decay,
            ..Default::default()
        };
        assert_eq!(with(0.0).validate(), Ok(()));
        assert_eq!(with(0.1).validate(), Ok(()));
        for bad in [-0.1, f64::NAN, f64::INFINITY] {
            let err = with(bad).validate().unwrap_err();
            assert!(
                matches!(err, CoreError::InvalidWeightDecay { value } if value.to_bits() == bad.to_bits())
            );
        }
        assert_eq!(
            with(-0.5).validate().unwrap_err().to_string(),
            "invalid weight_decay value: -0.5 (SparseAdamConfig.weight_decay must be finite and >= 0)"
        );
    }
}
