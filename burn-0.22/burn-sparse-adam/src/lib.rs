//! PyTorch's [`torch.optim.SparseAdam`] for [Burn] 0.22: an Adam whose step touches only the
//! rows of an embedding table that a batch looked up, with PyTorch's numerics.
//!
//! This is the 0.2 line of `burn-sparse-adam`, for Burn 0.22; the 0.1 line serves Burn 0.21.
//! Both run the same Burn-free core, [`sparse_adam_core`]: the formula, its validation, the
//! lookup planning.
//!
//! - [`SparseAdamConfig`] → [`SparseAdam`], Burn 0.22's per-tensor `Optimizer`;
//!   [`SparseAdamConfig::init`] wraps it in Burn's `ModuleOptimizer`, which burn-train's
//!   `Learner` takes; [`SparseAdamConfig::init_optimizer`] gives [`SparseAdamOptimizer`],
//!   whose steps are checked before anything changes.
//! - [`SparseEmbedding`], a drop-in for `burn::nn::Embedding` whose gradient is the rows a
//!   batch looked up (a `[k, d]` block), never a table-sized tensor.
//! - [`collect_grads`], the one line that replaces `GradientsParams::from_grads` so that
//!   those row gradients reach the optimizer.
//!
//! Parameters with ordinary dense gradients (stock Burn modules) are optimized too: a row
//! whose gradient is all zero counts as untouched, PyTorch's documented model for a dense
//! gradient handed to SparseAdam.
//!
//! The layers, each importing only those above it: [`error`], [`config`] and [`state`] at
//! the bottom; `kernels` (the tensor computations, one dispatcher); [`embedding`] (the
//! table, its row gradients, the marker protocol); [`optimizer`] (the surface, the rule,
//! the whole-model optimizer); [`distributed`] (data-parallel peers' gradients reduced, rows
//! as rows).
//!
//! # Features
//!
//! - `flex` (default): the fused CPU paths on burn-flex, the core's loops over its storage
//!   (the lookup's gather, the row sums, the row update).
//! - `wgpu`: the fused row update on wgpu (any cubecl runtime), one CubeCL kernel registered
//!   as a Burn backend extension for `CubeBackend` and for `Fusion<CubeBackend>`, so it also
//!   runs under burn-fusion, which Burn's default `wgpu` features turn on (this feature
//!   turns on Burn's `fusion` too). With a table's
//!   [`check_indices`](SparseEmbeddingConfig::check_indices) off, its lookups are also
//!   planned on the device (a sort, then one kernel that sums each row's gradients and
//!   updates it), so a training step reads nothing back to the host.
//!
//! Without them every backend takes the composed path (Burn tensor operations, the same
//! numbers bit for bit). [`StepInfo`] says which path each table's update took.
//!
//! [`torch.optim.SparseAdam`]: https://pytorch.org/docs/stable/generated/torch.optim.SparseAdam.html
//! [Burn]: https://burn.dev

#![warn(missing_docs)]

/// The package README's Rust snippets, compiled (and the runnable ones run) as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

pub mod config;
pub mod distributed;
pub mod embedding;
pub mod error;
mod kernels;
pub mod optimizer;
pub mod state;

pub use config::{NonFinite, SparseAdamConfig};
pub use embedding::row_grads::{RowGrad, collect_grads};
pub use embedding::sharded::{ShardedEmbedding, ShardedEmbeddingConfig};
pub use embedding::{SparseEmbedding, SparseEmbeddingConfig};
pub use error::{Error, Rejected, Result};
pub use kernels::{Kernel, use_fused_kernels};
pub use optimizer::SparseAdamOptimizer;
pub use optimizer::hooks::{HookHandle, ParamStep, StepInfo, StepPath};
pub use optimizer::rule::SparseAdam;
pub use sparse_adam_core;
pub use sparse_adam_core::MomentDtype;
pub use state::SparseAdamState;
