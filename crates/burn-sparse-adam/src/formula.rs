//! The SparseAdam row update on Burn tensors: the core's formula, applied to whole tensors.
//!
//! The formula itself is written once, in [`sparse_adam_core::update`] (its documentation
//! states it, its edge cases, and why its operation order is PyTorch's):
//!
//! ```text
//! Δm = (g − m)·(1 − β1)                        m ← m + Δm
//! Δv = (g·g − v)·(1 − β2)                      v ← v + Δv
//! Δp = −α_t · (m + Δm) / (sqrt(v + Δv) + ε)    p ← p + Δp
//! α_t = lr · sqrt(1 − β2^t) / (1 − β1^t)
//! ```
//!
//! This module lets that one statement run on Burn tensors as well as on `f32` lanes: the
//! dense path masks it to the touched rows, the composed row path applies it to the
//! gathered `[k, d]` rows, and the fused CPU kernels run it lane by lane. Returning deltas
//! rather than new values is what lets the row path write rows back with Burn's additive
//! `select_assign`, which is exactly PyTorch's `param.add_(sparse_update)`.

use burn::tensor::{backend::Backend, Tensor};

pub use sparse_adam_core::update::{RowDelta, StepScalars};

use crate::config::SparseAdamConfig;

impl From<&SparseAdamConfig> for sparse_adam_core::Hyperparameters {
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

/// Carries any [`Elementwise`] value of this crate into the core's formula (Rust's orphan
/// rule keeps the core's trait off Burn's tensors).
#[derive(Clone)]
struct Via<T>(T);

impl<T: Elementwise> sparse_adam_core::Elementwise for Via<T> {
    #[inline(always)]
    fn add(self, rhs: Self) -> Self {
        Via(self.0.add(rhs.0))
    }
    #[inline(always)]
    fn sub(self, rhs: Self) -> Self {
        Via(self.0.sub(rhs.0))
    }
    #[inline(always)]
    fn mul(self, rhs: Self) -> Self {
        Via(self.0.mul(rhs.0))
    }
    #[inline(always)]
    fn div(self, rhs: Self) -> Self {
        Via(self.0.div(rhs.0))
    }
    #[inline(always)]
    fn scale(self, s: f32) -> Self {
        Via(self.0.scale(s))
    }
    #[inline(always)]
    fn shift(self, s: f32) -> Self {
        Via(self.0.shift(s))
    }
    #[inline(always)]
    fn sqrt(self) -> Self {
        Via(self.0.sqrt())
    }
    #[inline(always)]
    fn neg(self) -> Self {
        Via(self.0.neg())
    }
}

/// The SparseAdam update of touched rows, as deltas: [`sparse_adam_core::sparse_adam_delta`]
/// on whole tensors or `f32` lanes (see the [module docs](self) for the formula).
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
    let delta =
        sparse_adam_core::sparse_adam_delta(Via(grad), Via(exp_avg), Via(exp_avg_sq), scalars);
    RowDelta {
        param: delta.param.0,
        exp_avg: delta.exp_avg.0,
        exp_avg_sq: delta.exp_avg_sq.0,
    }
}

/// A touched row's parameter after the step's weight decay, `p·(1 − lr·λ)`:
/// [`sparse_adam_core::decayed`] on whole tensors or `f32` lanes. Its delta is added after.
pub fn decayed<T: Elementwise>(param: T, scalars: &StepScalars) -> T {
    sparse_adam_core::decayed(Via(param), scalars).0
}

#[cfg(test)]
mod tests {
    use burn::backend::NdArray;

    use super::*;

    /// The tensor form of the update is the core's lane form, bit for bit, lane by lane:
    /// the dense and composed paths compute exactly what the fused kernels compute.
    #[test]
    fn tensors_compute_what_lanes_compute() {
        let device = Default::default();
        let scalars = StepScalars::new(
            &SparseAdamConfig::new()
                .with_beta_2(0.99)
                .with_maximize(true),
            0.03,
            4,
        );
        let (g, m, v) = (
            [0.5f32, -2.0, 0.0],
            [0.1f32, 0.0, -0.3],
            [0.2f32, 1e-8, 0.0],
        );
        let tensor = |x: [f32; 3]| Tensor::<NdArray, 1>::from_floats(x, &device);
        let whole = sparse_adam_delta(tensor(g), tensor(m), tensor(v), &scalars);
        let bits = |t: Tensor<NdArray, 1>| {
            let values = t.into_data().to_vec::<f32>().unwrap();
            values.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        };
        let lanes: Vec<RowDelta<f32>> = (0..3)
            .map(|i| sparse_adam_core::sparse_adam_delta(g[i], m[i], v[i], &scalars))
            .collect();
        let lane_bits =
            |f: fn(&RowDelta<f32>) -> f32| lanes.iter().map(|d| f(d).to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(whole.param), lane_bits(|d| d.param));
        assert_eq!(bits(whole.exp_avg), lane_bits(|d| d.exp_avg));
        assert_eq!(bits(whole.exp_avg_sq), lane_bits(|d| d.exp_avg_sq));
    }
}
