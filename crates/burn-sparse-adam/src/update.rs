//! The SparseAdam row update: one pure function, written once.
//!
//! For a parameter's `t`-th step (`t` counts the steps in which *this parameter* had a
//! gradient) and a touched row with gradient `g` (negated when maximizing), with moments
//! `m`, `v` of that row:
//!
//! ```text
//! Δm = (g − m)·(1 − β1)                        m ← m + Δm
//! Δv = (g·g − v)·(1 − β2)                      v ← v + Δv
//! Δp = −α_t · (m + Δm) / (sqrt(v + Δv) + ε)    p ← p + Δp
//! α_t = lr · sqrt(1 − β2^t) / (1 − β1^t)
//! ```
//!
//! This is `torch.optim.SparseAdam` operation for operation (`torch/optim/_functional.py`),
//! so float32 results agree with PyTorch's to the last bits, not only to a tolerance: the
//! moments are updated through their *deltas* (`m + (g − m)(1 − β1)`, not
//! `β1·m + (1 − β1)·g`), `ε` is added to `sqrt(v)` before the bias correction ("epsilon
//! hat", unlike Burn's `Adam`), and the scalars are computed in `f64` and rounded once, as
//! PyTorch does with its Python floats.
//!
//! Being written over [`Elementwise`], the same function runs on whole tensors (the dense
//! path masks it to the touched rows, the sparse path applies it to the gathered rows) and
//! on single `f32` lanes (the fused CPU kernel). Returning deltas rather than new values is
//! what lets the sparse path write rows back with Burn's additive `select_assign`, which is
//! exactly PyTorch's `param.add_(sparse_update)`.

use burn::tensor::{backend::Backend, Tensor};

use crate::config::SparseAdamConfig;

/// The scalars of one step of one parameter, resolved from the config, the learning rate and
/// the parameter's step count.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepScalars {
    /// `1 − β1`, rounded to `f32` once.
    pub one_minus_beta_1: f32,
    /// `1 − β2`, rounded to `f32` once.
    pub one_minus_beta_2: f32,
    /// `ε`.
    pub epsilon: f32,
    /// `−α_t = −lr · sqrt(1 − β2^t) / (1 − β1^t)`, the factor of the parameter's delta.
    pub neg_step_size: f32,
    /// Whether the gradient is negated first.
    pub maximize: bool,
}

impl StepScalars {
    /// Scalars for step `step` (1-based: the first step of a parameter is `1`).
    ///
    /// `step` must be at least 1; `lr` is taken as given (validation happens before).
    pub fn new(config: &SparseAdamConfig, lr: f64, step: usize) -> Self {
        debug_assert!(step >= 1, "SparseAdam steps are counted from 1");
        // `powf`, not `powi`: Python's `beta ** step` is C's `pow`, and `powi` can differ in
        // the last bit.
        let t = step as f64;
        let bias_correction_1 = 1.0 - config.beta_1.powf(t);
        let bias_correction_2 = 1.0 - config.beta_2.powf(t);
        let step_size = lr * bias_correction_2.sqrt() / bias_correction_1;
        Self {
            one_minus_beta_1: (1.0 - config.beta_1) as f32,
            one_minus_beta_2: (1.0 - config.beta_2) as f32,
            epsilon: config.epsilon as f32,
            neg_step_size: (-step_size) as f32,
            maximize: config.maximize,
        }
    }
}

/// The arithmetic [`sparse_adam_delta`] needs: implemented by whole tensors and by `f32`
/// lanes, so one definition of the update serves every path.
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

impl<B: Backend, const D: usize> Elementwise for Tensor<B, D> {
    fn add(self, rhs: Self) -> Self {
        Tensor::add(self, rhs)
    }
    fn sub(self, rhs: Self) -> Self {
        Tensor::sub(self, rhs)
    }
    fn mul(self, rhs: Self) -> Self {
        Tensor::mul(self, rhs)
    }
    fn div(self, rhs: Self) -> Self {
        Tensor::div(self, rhs)
    }
    fn scale(self, s: f32) -> Self {
        self.mul_scalar(s)
    }
    fn shift(self, s: f32) -> Self {
        self.add_scalar(s)
    }
    fn sqrt(self) -> Self {
        Tensor::sqrt(self)
    }
    fn neg(self) -> Self {
        Tensor::neg(self)
    }
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
/// formula).
///
/// `grad`, `exp_avg` and `exp_avg_sq` have the same shape (whole rows, or single lanes) and
/// hold the gradient as the loss produced it: maximizing negates it here. The result is
/// meaningless for rows that were not touched; callers mask those rows out or never gather
/// them.
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
    fn step_size_matches_pytorch_formula() {
        let config = SparseAdamConfig::new();
        let s = StepScalars::new(&config, 0.01, 3);
        // lr * sqrt(1 - 0.999**3) / (1 - 0.9**3), evaluated in Python.
        let expected = 0.01 * (1.0f64 - 0.999f64.powf(3.0)).sqrt() / (1.0 - 0.9f64.powf(3.0));
        assert_eq!(s.neg_step_size, (-expected) as f32);
        assert_eq!(s.one_minus_beta_1, 0.1);
        assert_eq!(s.one_minus_beta_2, (1.0f64 - 0.999) as f32);
    }

    #[test]
    fn first_step_from_zero_moments_moves_by_lr() {
        // With zero moments, the first bias-corrected step is lr * g / (|g| + ε·…) ≈ lr.
        let config = SparseAdamConfig::new();
        let s = StepScalars::new(&config, 0.5, 1);
        let d = sparse_adam_delta(2.0f32, 0.0, 0.0, &s);
        assert_eq!(d.exp_avg, 0.2);
        assert!((d.exp_avg_sq - 0.004).abs() < 1e-9);
        assert!((d.param + 0.5).abs() < 1e-6, "{}", d.param);
    }

    #[test]
    fn maximize_negates_the_gradient() {
        let s = StepScalars::new(&SparseAdamConfig::new().with_maximize(true), 0.1, 2);
        let s_min = StepScalars::new(&SparseAdamConfig::new(), 0.1, 2);
        let up = sparse_adam_delta(0.3f32, 0.05, 0.01, &s);
        let down = sparse_adam_delta(-0.3f32, 0.05, 0.01, &s_min);
        assert_eq!(up, down);
    }
}
