//! The SparseAdam row update: the one written statement of the formula.
//!
//! For a parameter's `t`-th step (`t` counts the steps in which *this parameter* had a
//! gradient, 1-based) and a touched row with gradient `g`, first moment `m` and second
//! moment `v`:
//!
//! ```text
//! p  = p·(1 − lr·λ)                            (only with weight decay λ > 0, first)
//! g  = −g                                      (only when maximizing)
//! Δm = (g − m)·(1 − β1)                        m ← m + Δm
//! Δv = (g·g − v)·(1 − β2)                      v ← v + Δv
//! Δp = −α_t · (m + Δm) / (sqrt(v + Δv) + ε)    p ← p + Δp
//! α_t = lr · sqrt(1 − β2^t) / (1 − β1^t)
//! ```
//!
//! # Edge cases
//!
//! - **Untouched rows** (rows the gradient does not name) change in nothing: neither the
//!   parameter nor the moments decay. This is what makes the optimizer sparse ("lazy").
//! - **An empty gradient** (no touched row: a lookup of nothing, or only of `padding_idx`)
//!   is a gradient all the same: the parameter's step count `t` still advances, nothing else
//!   changes.
//! - **Duplicate indices** (a row looked up several times) are summed into one row gradient
//!   *before* the update ([`lookup::coalesce`](crate::lookup::coalesce),
//!   `kernels::sum_per_row`): the row takes one step with the
//!   sum, never one step per lookup. A touched row whose sum is exactly zero is still
//!   touched: its moments decay and it moves.
//! - **`maximize`** negates the gradient first, before it enters either moment.
//! - **Weight decay** (`λ > 0`, off by default: PyTorch's SparseAdam has none) is AdamW's
//!   decoupled decay made lazy: a touched row is multiplied by `1 − lr·λ` ([`decayed`])
//!   before its delta is added, an untouched row is not decayed at all. A row looked up
//!   rarely is therefore decayed rarely: the decay acts per update of the row, not per
//!   step of the optimizer. The delta itself does not depend on the parameter, so the order
//!   is AdamW's (`p·(1 − lr·λ)`, then `+ Δp`) whichever comes first in code.
//!
//! # Why this operation order
//!
//! This is `torch.optim.SparseAdam` operation for operation (`_functional.sparse_adam` in
//! `torch/optim/_functional.py`), so most `f32` results are PyTorch's bit for bit, not only
//! within a tolerance (over the conformance fixtures: every moment but those of one fixture,
//! whose duplicate gradients PyTorch sums in another order, and 92% of the weights; the
//! suite's `conformance::ulp_distances_to_pytorch_on_ndarray` measures and bounds the rest):
//!
//! - the moments are updated through their *deltas* (`m + (g − m)(1 − β1)`, not
//!   `β1·m + (1 − β1)·g`), which round differently;
//! - `ε` is added to `sqrt(v)` before the bias correction ("epsilon hat", unlike Burn's
//!   `Adam`, which corrects `v` first);
//! - the scalars (`1 − β1`, `1 − β2`, `α_t`) are computed in `f64` and rounded to `f32` once,
//!   as PyTorch does with its Python floats ([`StepScalars`]).
//!
//! Being written over [`Elementwise`], the same function runs on whole tensors (the Burn
//! crates implement the trait for a newtype around their tensors) and on single `f32` lanes
//! (`kernels::update_rows`). Returning deltas rather than new
//! values is what lets a sparse path write rows back with an additive scatter, which is
//! exactly PyTorch's `param.add_(sparse_update)`.

use crate::error::{CoreError, CoreResult};
use crate::hyper::{validate_lr, Hyperparameters};

/// The scalars of one step of one parameter, resolved from the hyperparameters, the step's
/// learning rate and the parameter's step count.
///
/// # Example
///
/// ```
/// use sparse_adam_core::{sparse_adam_delta, Hyperparameters, StepScalars};
///
/// // PyTorch's defaults, lr 0.5, the parameter's first step.
/// let scalars = StepScalars::try_new(&Hyperparameters::default(), 0.5, 1).unwrap();
/// // One lane with gradient 2 and zero moments.
/// let delta = sparse_adam_delta(2.0f32, 0.0, 0.0, &scalars);
/// assert_eq!(delta.exp_avg, 0.2); // (2 − 0)·(1 − 0.9)
/// // The first bias-corrected step moves the lane by about lr, against the gradient.
/// assert!((delta.param + 0.5).abs() < 1e-6);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepScalars {
    /// `1 − β1`, computed in `f64` and rounded to `f32` once.
    pub one_minus_beta_1: f32,
    /// `1 − β2`, computed in `f64` and rounded to `f32` once.
    pub one_minus_beta_2: f32,
    /// `ε`, rounded to `f32`.
    pub epsilon: f32,
    /// `−α_t = −lr · sqrt(1 − β2^t) / (1 − β1^t)`, computed in `f64` and rounded to `f32`
    /// once: the factor of the parameter's delta.
    pub neg_step_size: f32,
    /// Whether the gradient is negated first.
    pub maximize: bool,
    /// `1 − lr·λ`, computed in `f64` and rounded to `f32` once (as PyTorch's
    /// `param.mul_(1 - lr * weight_decay)` rounds its Python float): the factor a touched
    /// row's parameter takes before its delta. Exactly `1.0` without weight decay.
    pub decay: f32,
}

impl StepScalars {
    /// Scalars for step `step` (1-based: the first step of a parameter is `1`), unchecked.
    ///
    /// `step` must be at least 1, and `hyper` and `lr` valid
    /// ([`Hyperparameters::validate`], [`validate_lr`]); [`StepScalars::try_new`] checks
    /// the learning rate and the step size.
    pub fn new(hyper: impl Into<Hyperparameters>, lr: f64, step: usize) -> Self {
        let hyper = hyper.into();
        debug_assert!(step >= 1, "SparseAdam steps are counted from 1");
        // `powf`, not `powi`: Python's `beta ** step` is C's `pow`, and `powi` can differ in
        // the last bit.
        let t = step as f64;
        let bias_correction_1 = 1.0 - hyper.beta_1.powf(t);
        let bias_correction_2 = 1.0 - hyper.beta_2.powf(t);
        let step_size = lr * bias_correction_2.sqrt() / bias_correction_1;
        Self {
            one_minus_beta_1: (1.0 - hyper.beta_1) as f32,
            one_minus_beta_2: (1.0 - hyper.beta_2) as f32,
            epsilon: hyper.epsilon as f32,
            neg_step_size: (-step_size) as f32,
            maximize: hyper.maximize,
            decay: (1.0 - lr * hyper.weight_decay) as f32,
        }
    }

    /// Scalars for step `step` (1-based), after checking the learning rate and that the
    /// step size is finite in `f32`. `hyper` must be valid ([`Hyperparameters::validate`]).
    ///
    /// # Errors
    ///
    /// As [`validate_lr`]; then [`CoreError::StepSizeOverflow`] when the bias-corrected step
    /// size is not finite in `f32` (a large learning rate with `β1` close to 1), which
    /// would turn every touched row into ±inf or NaN; [`CoreError::DecayOutOfRange`] when
    /// the weight-decay factor `1 − lr·λ` lies outside `[0.5, 1]`.
    ///
    /// # Panics
    ///
    /// When `step` is 0: steps are counted from 1.
    pub fn try_new(hyper: impl Into<Hyperparameters>, lr: f64, step: usize) -> CoreResult<Self> {
        assert!(step >= 1, "SparseAdam steps are counted from 1");
        validate_lr(lr)?;
        let hyper = hyper.into();
        let scalars = Self::new(hyper, lr, step);
        if !scalars.neg_step_size.is_finite() {
            Err(CoreError::StepSizeOverflow { lr, step })
        } else if !(0.5..=1.0).contains(&scalars.decay) {
            Err(CoreError::DecayOutOfRange {
                factor: scalars.decay,
                lr,
                weight_decay: hyper.weight_decay,
            })
        } else {
            Ok(scalars)
        }
    }
}

/// The arithmetic [`sparse_adam_delta`] needs: implemented for `f32` lanes here, and by the
/// Burn crates for (a newtype around) their tensors, so one definition of the update serves
/// every path.
pub trait Elementwise: Clone {
    /// `self + rhs`.
    fn add(self, rhs: Self) -> Self;
    /// `self − rhs`.
    fn sub(self, rhs: Self) -> Self;
    /// `self · rhs`.
    fn mul(self, rhs: Self) -> Self;
    /// `self / rhs`.
    fn div(self, rhs: Self) -> Self;
    /// `self · s`.
    fn scale(self, s: f32) -> Self;
    /// `self + s`.
    fn shift(self, s: f32) -> Self;
    /// `sqrt(self)`.
    fn sqrt(self) -> Self;
    /// `−self`.
    fn neg(self) -> Self;
}

impl Elementwise for f32 {
    #[inline(always)]
    fn add(self, rhs: Self) -> Self {
        self + rhs
    }
    #[inline(always)]
    fn sub(self, rhs: Self) -> Self {
        self - rhs
    }
    #[inline(always)]
    fn mul(self, rhs: Self) -> Self {
        self * rhs
    }
    #[inline(always)]
    fn div(self, rhs: Self) -> Self {
        self / rhs
    }
    #[inline(always)]
    fn scale(self, s: f32) -> Self {
        self * s
    }
    #[inline(always)]
    fn shift(self, s: f32) -> Self {
        self + s
    }
    #[inline(always)]
    fn sqrt(self) -> Self {
        f32::sqrt(self)
    }
    #[inline(always)]
    fn neg(self) -> Self {
        -self
    }
}

/// A touched row's parameter after the step's weight decay: `p·(1 − lr·λ)`, to which the
/// row's [`RowDelta::param`] is then added. Without weight decay the factor is exactly `1`
/// and the row keeps its bits; callers may skip the product then.
///
/// # Example
///
/// ```
/// use sparse_adam_core::{decayed, Hyperparameters, StepScalars};
///
/// let hyper = Hyperparameters { weight_decay: 0.1, ..Default::default() };
/// let scalars = StepScalars::new(&hyper, 0.5, 1);
/// assert_eq!(scalars.decay, 0.95); // 1 − 0.5·0.1
/// assert_eq!(decayed(2.0f32, &scalars), 1.9);
/// ```
#[inline(always)]
pub fn decayed<T: Elementwise>(param: T, scalars: &StepScalars) -> T {
    param.scale(scalars.decay)
}

/// What one step adds to a touched row's parameter and moments.
#[derive(Debug, Clone, PartialEq)]
pub struct RowDelta<T> {
    /// `Δp`, to add to the parameter.
    pub param: T,
    /// `Δm`, to add to the first moment (`exp_avg`).
    pub exp_avg: T,
    /// `Δv`, to add to the second moment (`exp_avg_sq`).
    pub exp_avg_sq: T,
}

/// The SparseAdam update of touched rows, as deltas (see the [module docs](self) for the
/// formula and its edge cases).
///
/// `grad`, `exp_avg` and `exp_avg_sq` have the same shape (whole rows, or single lanes) and
/// hold the gradient as the loss produced it (duplicates already summed): maximizing negates
/// it here. The result is meaningless for rows that were not touched; callers mask those
/// rows out or never gather them.
///
/// # Example
///
/// ```
/// use sparse_adam_core::{sparse_adam_delta, Hyperparameters, StepScalars};
///
/// let scalars = StepScalars::new(&Hyperparameters::default(), 0.01, 3);
/// let (mut p, mut m, mut v) = (1.0f32, 0.05f32, 0.01f32);
/// let delta = sparse_adam_delta(0.3f32, m, v, &scalars);
/// m += delta.exp_avg;
/// v += delta.exp_avg_sq;
/// p += delta.param;
/// assert!((m - 0.075).abs() < 1e-7); // 0.05 + (0.3 − 0.05)·0.1
/// assert!((v - 0.01008).abs() < 1e-9); // 0.01 + (0.3² − 0.01)·0.001
/// assert!(p < 1.0); // a positive gradient moves the parameter down
/// ```
#[inline(always)]
pub fn sparse_adam_delta<T: Elementwise>(
    grad: T,
    exp_avg: T,
    exp_avg_sq: T,
    scalars: &StepScalars,
) -> RowDelta<T> {
    let grad = if scalars.maximize { grad.neg() } else { grad };
    let exp_avg_delta = grad
        .clone()
        .sub(exp_avg.clone())
        .scale(scalars.one_minus_beta_1);
    let exp_avg_sq_delta = grad
        .clone()
        .mul(grad)
        .sub(exp_avg_sq.clone())
        .scale(scalars.one_minus_beta_2);
    let numer = exp_avg_delta.clone().add(exp_avg);
    let denom = exp_avg_sq_delta
        .clone()
        .add(exp_avg_sq)
        .sqrt()
        .shift(scalars.epsilon);
    RowDelta {
        param: numer.div(denom).scale(scalars.neg_step_size),
        exp_avg: exp_avg_delta,
        exp_avg_sq: exp_avg_sq_delta,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_scalars_of_step_3_at_lr_0_01() {
        let s = StepScalars::new(Hyperparameters::default(), 0.01, 3);
        // Python: 0.01 * math.sqrt(1 - 0.999**3) / (1 - 0.9**3) == 0.002020105974389679,
        // which rounds to the f32 0.002020105952396989 (bits 0x3b0463c1).
        assert_eq!(s.neg_step_size, -0.002_020_106_f32);
        assert_eq!(s.neg_step_size.to_bits(), 0xbb04_63c1);
        assert_eq!(s.neg_step_size, -0.002020105974389679f64 as f32);
        assert_eq!(s.one_minus_beta_1, 0.1);
        // Python: 1 - 0.999 == 0.0010000000000000009, the f32 0.0010000000474974513.
        assert_eq!(s.one_minus_beta_2, 0.001);
        assert_eq!(s.epsilon, 1e-8);
        assert!(!s.maximize);
        assert_eq!(
            StepScalars::try_new(Hyperparameters::default(), 0.01, 3),
            Ok(s)
        );
    }

    /// One row's first step, lane by lane, against PyTorch: fixture `single_step.json`
    /// (lr 0.01, PyTorch's defaults), table row 3, looked up once with upstream row 4 of
    /// `steps[0].lookups[0].upstream`. Expected: `expected[0].tables[0]` row 3 and
    /// `final_state[0].exp_avg`/`exp_avg_sq` row 3. Bit for bit.
    #[test]
    fn first_step_of_a_row_is_pytorchs_bit_for_bit() {
        let init = [0.4285423f32, 1.4760778, -1.7868679, 1.6103176];
        let grad = [0.9240058f32, 0.22552748, 0.7127706, -0.7438219];
        let param_after = [0.4185423f32, 1.4660778, -1.7968678, 1.6203176];
        let exp_avg_after = [0.09240058f32, 0.02255275, 0.07127706, -0.07438219];
        let exp_avg_sq_after = [0.00085378677f32, 5.0862647e-5, 0.00050804194, 0.0005532711];

        let s = StepScalars::new(Hyperparameters::default(), 0.01, 1);
        for lane in 0..4 {
            let delta = sparse_adam_delta(grad[lane], 0.0, 0.0, &s);
            assert_eq!(0.0 + delta.exp_avg, exp_avg_after[lane], "lane {lane}");
            assert_eq!(
                0.0 + delta.exp_avg_sq,
                exp_avg_sq_after[lane],
                "lane {lane}"
            );
            assert_eq!(init[lane] + delta.param, param_after[lane], "lane {lane}");
        }
    }

    #[test]
    fn try_new_rejects_what_would_make_rows_non_finite() {
        let hyper = Hyperparameters::default();
        assert_eq!(
            StepScalars::try_new(hyper, -1.0, 1),
            Err(CoreError::InvalidLearningRate { value: -1.0 })
        );
        assert_eq!(
            StepScalars::try_new(hyper, 1e300, 1),
            Err(CoreError::LearningRateOutOfRange { value: 1e300 })
        );
        // β1 close to 1: at t = 1 the step size is lr · sqrt(1 − β2) / (1 − β1) ≈ lr · 3.2e7.
        let close = Hyperparameters {
            beta_1: 0.999_999_999,
            ..hyper
        };
        assert_eq!(
            StepScalars::try_new(close, 1e32, 1),
            Err(CoreError::StepSizeOverflow { lr: 1e32, step: 1 })
        );
        assert!(StepScalars::try_new(close, 1e-3, 1).is_ok());
    }

    #[test]
    fn try_new_rejects_a_decay_factor_outside_half_to_one() {
        let hyper = |weight_decay| Hyperparameters {
            weight_decay,
            ..Default::default()
        };
        assert_eq!(StepScalars::try_new(hyper(5.0), 0.1, 1).unwrap().decay, 0.5);
        assert_eq!(
            StepScalars::try_new(hyper(0.0), 1e30, 1).unwrap().decay,
            1.0
        );
        for (weight_decay, lr) in [(6.0, 0.1), (1e300, 1e-3), (0.01, 100.0)] {
            let err = StepScalars::try_new(hyper(weight_decay), lr, 1).unwrap_err();
            assert!(
                matches!(err, CoreError::DecayOutOfRange { lr: l, .. } if l == lr),
                "{err:?}"
            );
        }
        assert_eq!(
            StepScalars::try_new(hyper(6.0), 0.1, 1).unwrap_err().to_string(),
            "the weight-decay factor 1 − lr·weight_decay = 0.4 at learning rate 1e-1 and weight_decay 6e0 is outside [0.5, 1] (lower the learning rate or the weight decay: lr·weight_decay must be at most 0.5)"
        );
    }

    #[test]
    #[should_panic(expected = "SparseAdam steps are counted from 1")]
    fn try_new_panics_on_step_zero() {
        let _ = StepScalars::try_new(Hyperparameters::default(), 0.01, 0);
    }

    #[test]
    fn maximize_negates_the_gradient() {
        let up = StepScalars::new(
            Hyperparameters {
                maximize: true,
                ..Default::default()
            },
            0.1,
            2,
        );
        let down = StepScalars::new(Hyperparameters::default(), 0.1, 2);
        assert_eq!(
            sparse_adam_delta(0.3f32, 0.05, 0.01, &up),
            sparse_adam_delta(-0.3f32, 0.05, 0.01, &down)
        );
    }
}
