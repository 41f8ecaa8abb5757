//! Data-parallel training: every peer's gradients reduced before each step, a
//! [`SparseEmbedding`](crate::SparseEmbedding)'s as rows, never as a table-sized all-reduce.
//!
//! Each peer (a thread with its device, or a process) runs its own copy of the model on its
//! share of a batch. After [`collect_grads`](crate::collect_grads), [`all_reduce_grads`]
//! exchanges the gradients with the other peers through an engine's sum all-reduce
//! ([`AllReduce`]) and returns the reduced `GradientsParams`, the same on every peer; the
//! optimizer's step ([`SparseAdamOptimizer`](crate::SparseAdamOptimizer) or Burn's
//! `ModuleOptimizer`) then gives every peer the same tables and optimizer states, those of
//! one process on the whole batch (up to the order in which `f32` sums are taken).
//!
//! - A table's row gradients are gathered as rows (each peer's touched rows and their `[k, d]`
//!   values), coalesced in rank order and reduced: see [`sparse_adam_core::exchange`] for the
//!   protocol and the bytes it moves (`4 · Σk · (d + 2)` per table against `4 · n · d` for a
//!   dense all-reduce).
//! - Dense gradients (stock modules, a table that also got a dense gradient on some peer)
//!   are summed by the engine as a dense all-reduce would.
//! - A failure (a peer that errors, leaves, or does not arrive within the engine's timeout)
//!   is an error on every peer before any step, so every peer keeps the model and optimizer
//!   state it had before that step.
//!
//! # What Burn 0.22's own engine does with row gradients
//!
//! Burn 0.22 moved collectives into the backends: `DistributedContext::init(devices,
//! DistributedConfig { all_reduce_op })` registers parameters for synchronization, and the
//! autodiff backend all-reduces their gradients during the backward pass, between devices
//! of one process (burn-train's DDP strategy runs on it); there is no engine across
//! machines. A table's weight is not in the autodiff graph of its lookups (that is how no
//! table-sized gradient arises), so that engine never sees the rows: each device would
//! apply only its own. So [`collect_grads`](crate::collect_grads) refuses a table whose
//! weight is registered for that sync (`Tensor::is_distributed`; burn-train's DDP strategy
//! registers every parameter), panicking with the message of
//! [`Error::TableUnderDistributedSync`] at the first
//! step, instead of letting each device apply its own rows. Its all-reduce is implemented
//! only by the CubeCL backends, and only CUDA's runtime (NCCL) has one (burn-flex's and
//! wgpu's panic); it has not been run with this crate, for want of a machine with several
//! GPUs. Use [`all_reduce_grads`] with an engine of your own ([`InProcessGroup`] for threads
//! of one process, [`TcpPeer`] for processes on one machine or several, over plain TCP
//! sockets), and leave the tables out of the parameters that Burn's context synchronizes.
//!
//! Every peer needs a model of its own: clones of a `SparseEmbedding` share their row
//! gradients (so that multi-device steps can merge them), which two peers stepping at once
//! would mix. Build each peer's model from its config and load one record into all of them.
//! A table is bound to the first thread that exchanges it; another thread exchanging it is
//! an error ([`Error::SharedTable`]).
//!
//! # Across processes and machines: [`TcpPeer`]
//!
//! Every process runs the same program with its rank; rank 0 listens at an address the others
//! know (a star: see [`TcpPeer`] for the protocol, its timeouts and what a dead peer does).
//! The 0.1 line's suite runs 2 and 3 such processes on the loopback against one process;
//! this line's tests run 2 and 3 of them as threads on the loopback (the same sockets).
//!
//! ```no_run
//! use std::time::Duration;
//! use burn::module::Initializer;
//! use burn::tensor::{Device, Int, Tensor};
//! use burn_sparse_adam::distributed::{all_reduce_grads, Reduction, TcpPeer};
//! use burn_sparse_adam::{collect_grads, SparseAdamConfig, SparseEmbeddingConfig};
//!
//! // `train RANK PEERS HOST:PORT` in every process; rank 0 listens on HOST:PORT.
//! let args: Vec<String> = std::env::args().collect();
//! let (rank, peers): (usize, usize) = (args[1].parse()?, args[2].parse()?);
//! let mut peer = TcpPeer::connect(rank, peers, args[3].as_str(), Duration::from_secs(60))?;
//! let device = Device::default().autodiff();
//! // Every process starts from the same table (or loads one record).
//! let mut table = SparseEmbeddingConfig::new(1000, 16)
//!     .with_initializer(Initializer::Constant { value: 0.1 })
//!     .init(&device);
//! let mut optim = SparseAdamConfig::new().init_optimizer();
//! for step in 0..10 {
//!     // This process's shard of the step's batch.
//!     let shard = Tensor::<2, Int>::from_data([[step + rank as i64]], &device);
//!     let grads = collect_grads(table.forward(shard).sum().backward(), &table);
//!     let (grads, _stats) = all_reduce_grads(grads, &table, &mut peer, Reduction::Mean)?;
//!     table = optim.step(1e-2, table, grads);
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::{Tensor, TensorData};

pub use sparse_adam_core::exchange::{
    AllReduce, ExchangeError, ExchangeStats, InProcessGroup, InProcessPeer, Reduction, TcpPeer,
};
use sparse_adam_core::exchange::{Gradient, Reduced, exchange};

use crate::embedding::row_grads::{RowGrad, marker_shape, scope};
use crate::error::{Error, Result};

/// Reduces a backward pass's gradients across the data-parallel peers of `engine`: call it
/// on every peer, between [`collect_grads`](crate::collect_grads) and the optimizer's step,
/// with the same `reduction` everywhere.
///
/// `module` is this peer's model (the one `grads` was collected from); every peer's model
/// must have the same parameters in the same order. Returns the reduced gradients (the same
/// on every peer) and what the exchange moved. With one peer, `grads` comes back as it was.
///
/// Under [`Reduction::Sum`] the peers take the step of one process on the whole batch of a
/// summed loss; under [`Reduction::Mean`] that of a loss averaged over the peers' shards
/// (each peer's gradients divided by the peer count, rows one peer touched included).
///
/// # Errors
///
/// [`Error::Exchange`] when the exchange fails on this peer or another one (a peer that
/// errors, leaves, or times out; peers whose gradients disagree in shape); then no peer
/// steps, and each keeps its state. [`Error::SharedTable`] when this peer's table is shared
/// with another peer (the other peers then fail with [`Error::Exchange`]).
///
/// # Example: two peers as threads of one process
///
/// ```
/// use std::time::Duration;
/// use burn::module::Initializer;
/// use burn::tensor::{Device, Int, Tensor};
/// use burn_sparse_adam::distributed::{all_reduce_grads, AllReduce, InProcessGroup, Reduction};
/// use burn_sparse_adam::{collect_grads, SparseAdamConfig, SparseEmbeddingConfig};
///
/// // Every peer's table starts the same (or load one record into each).
/// let config = SparseEmbeddingConfig::new(100, 4)
///     .with_initializer(Initializer::Constant { value: 0.1 });
/// let peers = InProcessGroup::new(2, Duration::from_secs(30));
/// let tables = std::sync::Mutex::new(Vec::new());
/// std::thread::scope(|s| {
///     for mut peer in peers {
///         let (config, tables) = (&config, &tables);
///         s.spawn(move || {
///             let device = Device::default().autodiff();
///             // A model of its own per peer (clones would share their row gradients).
///             let mut table = config.init(&device);
///             let mut optim = SparseAdamConfig::new().init_optimizer();
///             let r = peer.rank() as i64;
///             let shard = Tensor::<2, Int>::from_data([[1 + r, 2 + r]], &device);
///             let grads = collect_grads(table.forward(shard).sum().backward(), &table);
///             let (grads, _stats) = all_reduce_grads(grads, &table, &mut peer, Reduction::Sum)
///                 .expect("no peer failed");
///             table = optim.step(1e-2, table, grads); // rows 1, 2 and 3 on both peers
///             peer.finish();
///             tables.lock().unwrap().push(table.weight.val().into_data());
///         });
///     }
/// });
/// let tables = tables.into_inner().unwrap();
/// assert_eq!(tables[0], tables[1]); // every peer took the same step
/// ```
pub fn all_reduce_grads<M, E>(
    mut grads: GradientsParams,
    module: &M,
    engine: &mut E,
    reduction: Reduction,
) -> Result<(GradientsParams, ExchangeStats)>
where
    M: Module,
    E: AllReduce + ?Sized,
{
    let mut gather = Gather {
        grads: &mut grads,
        params: Vec::new(),
        shared: None,
    };
    module.visit(&mut gather);
    let Gather { params, shared, .. } = gather;
    if let Some(param) = shared {
        let error = Error::SharedTable { param };
        engine.abort(&error.to_string());
        return Err(error);
    }
    let (gradients, installs): (Vec<Gradient>, Vec<Install>) = params.into_iter().unzip();
    let (reduced, stats) = exchange(engine, gradients, reduction)?;
    for (reduced, install) in reduced.into_iter().zip(installs) {
        install(reduced, &mut grads);
    }
    Ok((grads, stats))
}

/// Puts a parameter's reduced gradient where the optimizer finds it.
type Install = Box<dyn FnOnce(Reduced, &mut GradientsParams)>;

/// Takes each parameter's gradient out of `grads` to the host, in the module's visiting order,
/// with how to put its reduced gradient back.
struct Gather<'a> {
    grads: &'a mut GradientsParams,
    params: Vec<(Gradient, Install)>,
    /// A table whose tape another peer's thread exchanged.
    shared: Option<ParamId>,
}

fn host<const D: usize>(tensor: Tensor<D>) -> Vec<f32> {
    tensor
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("converted to f32")
}

impl ModuleVisitor for Gather<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let id = param.id;
        let value = param.val();
        let (shape, dtype) = (value.shape(), value.dtype());
        // Gradients live on the inner (non-autodiff) device.
        let device = value.device().inner();
        let grad = self.grads.remove::<D>(id);
        // Reduced values come back as `f32`; the optimizer gets them in the parameter's type.
        let to_tensor = {
            let device = device.clone();
            move |values: Vec<f32>, dims: Vec<usize>| {
                Tensor::<D>::from_data(TensorData::new(values, dims), &device).cast(dtype)
            }
        };
        let Some(tape) = scope::tape(id) else {
            let gradient = grad.map_or(Gradient::None, |g| Gradient::Dense(host(g)));
            let dims = shape.to_vec();
            let install: Install = Box::new(move |reduced, grads| {
                if let Reduced::Dense(values) = reduced {
                    grads.register(id, to_tensor(values, dims));
                }
            });
            self.params.push((gradient, install));
            return;
        };
        if !tape.join_as_peer() {
            self.shared.get_or_insert(id);
        }
        let n = shape.as_slice().first().copied().unwrap_or(1);
        let width = shape.num_elements() / n.max(1);
        let gradient = match grad {
            None => Gradient::None,
            Some(marker) if marker.shape() != shape && marker.shape() == marker_shape(&shape) => {
                let summed = RowGrad::sum(tape.announced(&[marker]), &device);
                let rows = summed.rows().to_vec();
                let values = summed.values().cloned().map_or_else(Vec::new, host);
                Gradient::Rows {
                    table_rows: n,
                    width,
                    rows,
                    values,
                }
            }
            Some(grad) => Gradient::Dense(host(grad)),
        };
        let install: Install = Box::new(move |reduced, grads| match reduced {
            Reduced::None => {}
            Reduced::Dense(values) => grads.register(id, to_tensor(values, shape.to_vec())),
            Reduced::Rows { rows, values } => {
                let rows = match rows.len() {
                    0 => RowGrad::empty(),
                    k => {
                        let data = TensorData::new(values, [k, width]);
                        let values = Tensor::<2>::from_data(data, &device).cast(dtype);
                        RowGrad::new(rows, values)
                    }
                };
                let marker = tape.install::<D>(rows, &shape, &device);
                grads.register(id, marker);
            }
        });
        self.params.push((gradient, install));
    }
}
