//! The backend-free core of `burn-sparse-adam`: PyTorch's `torch.optim.SparseAdam`, without
//! Burn.
//!
//! Everything here works on plain numbers and host slices, so both Burn lines of
//! `burn-sparse-adam` (one per Burn release they support) share one statement of the
//! optimizer's arithmetic and of its checks, and a test of this crate is a test of both.
//! What the Burn crates add is the Burn side: modules, records, autodiff, backends' tensors,
//! and the dispatch between the kernels here and their tensor compositions.
//!
//! The layers, each importing only those above it in this list:
//!
//! - [`error`]: [`CoreError`], what every check rejects, with the messages users see;
//! - [`hyper`]: [`Hyperparameters`] (PyTorch's defaults) and their validation, and
//!   [`validate_lr`] for a step's learning rate;
//! - [`moments`]: the float types moments may be stored in ([`MomentDtype`]), and how a
//!   stored moment becomes an `f32` and back ([`MomentElement`]);
//! - [`update`]: the formula. [`StepScalars`] resolves the scalars of one step in `f64`,
//!   [`sparse_adam_delta`] is the row update over any [`Elementwise`] values (`f32` lanes
//!   here, tensors in the Burn crates), operation for operation PyTorch's;
//! - [`lookup`]: host-side planning of an embedding lookup ([`LookupPlan`],
//!   [`check_indices`], [`check_padding_idx`], [`check_table_size`]) and the coalescing of
//!   row gradients ([`unique_sorted`], [`union_of_sorted`], [`coalesce`]);
//! - [`kernels`]: CPU loops over `f32` slices (moments in any [`MomentElement`])
//!   ([`gather_rows`], [`sum_per_row`], [`sum_lookups_per_row`], [`update_rows`],
//!   [`update_dense`]) for backends that lend their memory, and the reuse of their
//!   batch-sized buffers from step to step ([`recycle::Recycler`]);
//! - [`exchange`]: data-parallel training, the peers' gradients reduced over any engine's sum
//!   all-reduce, row gradients as rows ([`exchange::exchange`]), and two engines:
//!   [`InProcessGroup`] for peers that are threads of one process, [`TcpPeer`] for processes
//!   on one machine or several.
//!
//! # Example: one step of a lookup, end to end
//!
//! ```
//! use sparse_adam_core::{
//!     check_indices, sum_per_row, update_rows, Hyperparameters, LookupPlan, StepScalars,
//! };
//!
//! let (n, d) = (4, 2);
//! let mut param = vec![1.0f32; n * d];
//! let (mut exp_avg, mut exp_avg_sq) = (vec![0.0f32; n * d], vec![0.0f32; n * d]);
//! let hyper = Hyperparameters::default();
//! hyper.validate().unwrap();
//!
//! // A lookup of rows 3, 1, 3 and the gradient of its output, [3, d].
//! let indices = [3, 1, 3];
//! let upstream = [0.5, 0.5, 1.0, -1.0, 0.5, 0.5];
//! check_indices(&indices, n).unwrap();
//! let plan = LookupPlan::new(&indices, None);
//! let mut grad = Vec::new();
//! sum_per_row(&upstream, d, &plan.slots, plan.rows.len(), &mut grad);
//! assert_eq!(plan.rows, [1, 3]);
//! assert_eq!(grad, [1.0, -1.0, 1.0, 1.0]); // row 3's two lookups summed
//!
//! // The table's first step.
//! let scalars = StepScalars::try_new(&hyper, 0.01, 1).unwrap();
//! update_rows(&mut param, &mut exp_avg, &mut exp_avg_sq, &grad, &plan.rows, d, &scalars);
//! assert!(param[2] < 1.0 && param[3] > 1.0); // row 1 moved against its gradient
//! assert_eq!(&param[..2], [1.0, 1.0]); // row 0 was not looked up
//! ```

#![warn(missing_docs)]

pub mod error;
pub mod exchange;
pub mod hyper;
pub mod kernels;
pub mod lookup;
pub mod moments;
pub mod pages;
pub mod recycle;
pub mod update;

pub use error::{CoreError, CoreResult};
pub use exchange::{AllReduce, ExchangeError, InProcessGroup, Reduction, TcpPeer};
pub use hyper::{validate_lr, Hyperparameters};
pub use kernels::{gather_rows, sum_lookups_per_row, sum_per_row, update_dense, update_rows};
pub use lookup::{
    check_indices, check_padding_idx, check_table_size, coalesce, union_of_sorted, unique_sorted,
    LookupPlan,
};
pub use moments::{MomentDtype, MomentElement};
pub use update::{decayed, sparse_adam_delta, Elementwise, RowDelta, StepScalars};
