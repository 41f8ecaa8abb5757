//! Compact moments: the float types the moments `m` and `v` may be stored in, and how a
//! stored moment becomes an `f32` for the update and back.
//!
//! PyTorch's SparseAdam keeps both moments in the parameter's type, so they take twice the
//! table's memory. Stored in `bf16` or `f16` they take as much as the table alone (DGL's
//! sparse optimizers offer this). The update itself does not change: each touched lane's
//! moments are widened to `f32` ([`MomentElement::load`], exact), updated by the same formula
//! as with `f32` moments, and rounded once, to nearest, ties to even, on the way back
//! ([`MomentElement::store`]). The parameter's delta is computed from the widened moments
//! before that rounding, so within one step it is the `f32` delta; what differs is the
//! moments carried to the next step, each off by at most half a unit in the last place of
//! the stored type (relative `2⁻⁸` for `bf16`, `2⁻¹¹` for `f16` in its normal range).
//!
//! `bf16` has `f32`'s range and 8 bits of significand, the usual choice. Its one weakness:
//! a step that moves a moment by less than half its spacing (`2⁻⁹` to `2⁻⁸` relative)
//! leaves it where it was, so with `β₂ = 0.999` (0.1 % a step) the second moment `v` stops
//! following gradients whose square stays near it (measured on the fixtures: within 250×
//! their tolerance, and 2,400× where gradients are ~10³). The WordNet example's AUCs are
//! unchanged.
//!
//! `f16` holds values from about `6·10⁻⁸` (subnormal) to `65504`, and that range breaks
//! Adam for small gradients: a step's `(1 − β₂)·g²` rounds to 0 in `f16` when `|g|` is
//! below about `5·10⁻³` (with `β₂ = 0.999`), so `v` never accumulates: each step divides by
//! `sqrt((1 − β₂)·g²) ≈ 0.03·|g|` instead of the gradients' root mean square, a step about
//! 30 times Adam's. The WordNet example diverges with `f16` moments for this reason. Use
//! `f16` only where gradients stay between about `10⁻²` and `256` (above it `v` overflows to
//! infinity).

use serde::{Deserialize, Serialize};

/// The float type a parameter's moments are stored in.
///
/// The Burn crates' `SparseAdamConfig::moment_dtype` takes one; without it the moments
/// have the parameter's own type, as in PyTorch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MomentDtype {
    /// IEEE single precision, 32 bits.
    F32,
    /// bfloat16: `f32`'s exponent, 8 bits of significand; 16 bits.
    Bf16,
    /// IEEE half precision: 5 exponent bits, 11 bits of significand; 16 bits.
    F16,
}

impl MomentDtype {
    /// The width of one stored value, in bits.
    pub fn bits(self) -> u32 {
        match self {
            MomentDtype::F32 => 32,
            MomentDtype::Bf16 | MomentDtype::F16 => 16,
        }
    }

    /// The name users write: `"f32"`, `"bf16"` or `"f16"`.
    pub fn name(self) -> &'static str {
        match self {
            MomentDtype::F32 => "f32",
            MomentDtype::Bf16 => "bf16",
            MomentDtype::F16 => "f16",
        }
    }

    /// The type named `name` (as [`MomentDtype::name`] writes it).
    pub fn from_name(name: &str) -> Option<Self> {
        [MomentDtype::F32, MomentDtype::Bf16, MomentDtype::F16]
            .into_iter()
            .find(|dtype| dtype.name() == name)
    }
}

impl core::fmt::Display for MomentDtype {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// A stored moment: widened to `f32` for the update, rounded back after it.
pub trait MomentElement: Copy + Send + Sync + 'static {
    /// The type's name in a [`MomentDtype`].
    const DTYPE: MomentDtype;
    /// The stored value as an `f32` (exact for every implementor).
    fn load(self) -> f32;
    /// `x` rounded to this type: to nearest, ties to even; NaN stays NaN, overflow is ±inf.
    fn store(x: f32) -> Self;
}

impl MomentElement for f32 {
    const DTYPE: MomentDtype = MomentDtype::F32;
    #[inline(always)]
    fn load(self) -> f32 {
        self
    }
    #[inline(always)]
    fn store(x: f32) -> Self {
        x
    }
}

impl MomentElement for half::bf16 {
    const DTYPE: MomentDtype = MomentDtype::Bf16;
    #[inline(always)]
    fn load(self) -> f32 {
        self.to_f32()
    }
    #[inline(always)]
    fn store(x: f32) -> Self {
        half::bf16::from_f32(x)
    }
}

impl MomentElement for half::f16 {
    const DTYPE: MomentDtype = MomentDtype::F16;
    #[inline(always)]
    fn load(self) -> f32 {
        self.to_f32()
    }
    #[inline(always)]
    fn store(x: f32) -> Self {
        half::f16::from_f32(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_widths() {
        for dtype in [MomentDtype::F32, MomentDtype::Bf16, MomentDtype::F16] {
            assert_eq!(MomentDtype::from_name(dtype.name()), Some(dtype));
            assert_eq!(dtype.to_string(), dtype.name());
        }
        assert_eq!(MomentDtype::from_name("f64"), None);
        assert_eq!(
            [
                MomentDtype::F32.bits(),
                MomentDtype::Bf16.bits(),
                MomentDtype::F16.bits()
            ],
            [32, 16, 16]
        );
        assert_eq!(
            serde_json::to_string(&MomentDtype::Bf16).unwrap(),
            "\"Bf16\""
        );
    }

    /// Storing rounds to nearest, ties to even, and loading is exact.
    #[test]
    fn store_rounds_to_nearest_even() {
        // 1 + 2⁻⁸ lies halfway between bf16's 1 and 1 + 2⁻⁷: ties to even, 1.
        assert_eq!(half::bf16::store(1.0 + 2f32.powi(-8)).load(), 1.0);
        // A little above halfway rounds up.
        let above = 1.0 + 2f32.powi(-8) + 2f32.powi(-20);
        assert_eq!(half::bf16::store(above).load(), 1.0 + 2f32.powi(-7));
        // 1 + 2⁻¹¹ lies halfway between f16's 1 and 1 + 2⁻¹⁰: ties to even, 1.
        assert_eq!(half::f16::store(1.0 + 2f32.powi(-11)).load(), 1.0);
        assert_eq!(half::f16::store(1e6).load(), f32::INFINITY);
        assert!(half::bf16::store(f32::NAN).load().is_nan());
        let x = 0.123_456_79f32;
        assert_eq!(f32::store(x).load().to_bits(), x.to_bits());
        for stored in [half::bf16::from_f32(x), half::bf16::from_f32(-3.5e-30)] {
            assert_eq!(half::bf16::store(stored.load()), stored);
        }
    }
}
