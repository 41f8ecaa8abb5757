//! PyTorch's [`torch.optim.SparseAdam`] for [Burn]: an Adam whose step touches only the
//! rows of an embedding table that a batch looked up, with PyTorch's numerics.
//!
//! - [`SparseAdamConfig`] → [`SparseAdamOptimizer`], a Burn `Optimizer` for a whole model:
//!   manual loops and burn-train's `Learner` alike.
//! - [`SparseEmbedding`], a drop-in for `burn::nn::Embedding` whose gradient is the rows a
//!   batch looked up (a `[k, d]` block), never a table-sized tensor.
//! - [`collect_grads`], the one line that replaces `GradientsParams::from_grads` so that
//!   those row gradients reach the optimizer.
//!
//! Parameters with ordinary dense gradients (stock Burn modules) are optimized too: a row
//! whose gradient is all zero counts as untouched, PyTorch's documented model for a dense
//! gradient handed to SparseAdam.
//!
//! # Example: a manual training loop
//!
//! ```
//! use burn::backend::{Autodiff, NdArray};
//! use burn::optim::Optimizer;
//! use burn::tensor::{Int, Tensor};
//! use burn_sparse_adam::{collect_grads, SparseAdamConfig, SparseEmbeddingConfig};
//!
//! type B = Autodiff<NdArray>;
//! let device = Default::default();
//! let mut table = SparseEmbeddingConfig::new(100_000, 16).init::<B>(&device);
//! let mut optim = SparseAdamConfig::new().init();
//! let before = table.weight.val().slice([50..51, 0..16]).into_data();
//!
//! for _ in 0..3 {
//!     let batch = Tensor::<B, 2, Int>::from_data([[1, 42, 42, 7]], &device);
//!     let loss = table.forward(batch).powi_scalar(2).sum();
//!     let grads = collect_grads(loss.backward(), &table);
//!     table = optim.step(1e-2, table, grads);
//! }
//! // Row 50 was never looked up: it is bit-identical to what it was.
//! assert_eq!(table.weight.val().slice([50..51, 0..16]).into_data(), before);
//! ```
//!
//! [`torch.optim.SparseAdam`]: https://pytorch.org/docs/stable/generated/torch.optim.SparseAdam.html
//! [Burn]: https://burn.dev

#![warn(missing_docs)]

// The layers, each importing only those listed before it:
// the bottom (hyperparameters, errors, saved state, the formula on tensors) ...
pub mod config;
pub mod error;
pub mod formula;
pub mod state;
// ... the kernels (one dispatcher: fused burn-ndarray, fused wgpu, composed) ...
mod kernels;
// ... the sparse lookups (SparseEmbedding, row gradients, the marker protocol) ...
pub mod embedding;
// ... data-parallel training (row gradients exchanged as rows) ...
pub mod distributed;
// ... and the optimizer (public surface, rule, plan, apply, groups, hooks, record).
pub mod optimizer;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

// The module paths of 0.1.0, kept for its users.
pub use embedding::row_grads;
pub use formula as update;
pub use optimizer::rule as sparse_adam;
pub use optimizer::{groups, hooks, record};

pub use config::{NonFinite, SparseAdamConfig};
pub use embedding::{SparseEmbedding, SparseEmbeddingConfig};
pub use error::{Error, Rejected, Result};
pub use groups::{GroupLr, ParamGroup};
pub use hooks::{HookHandle, KernelPath, ParamStep, StepInfo, StepPath};
pub use optimizer::SparseAdamOptimizer;
pub use record::SparseAdamRecord;
pub use row_grads::{collect_grads, RowGrad};
pub use sparse_adam::SparseAdam;
pub use state::SparseAdamState;

/// The package README's Rust snippets, compiled (and the runnable ones run) as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
