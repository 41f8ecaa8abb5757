//! Data-parallel training: every peer's gradients reduced before each step, a
//! [`SparseEmbedding`](crate::SparseEmbedding)'s as rows, never as a table-sized all-reduce.
//!
//! Each peer (a thread with its device, or a process) runs its own copy of the model on its
//! share of a batch. After [`collect_grads`](crate::collect_grads), [`all_reduce_grads`]
//! exchanges the gradients with the other peers through an engine's sum all-reduce
//! ([`AllReduce`]) and returns the reduced `GradientsParams`, the same on every peer; the
//! optimizer's step then gives every peer the same tables and optimizer states, those of one
//! process on the whole batch (up to the order in which `f32` sums are taken).
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
//! # What Burn 0.21's own engine does with row gradients
//!
//! `GradientsParams::all_reduce` (burn-optim's `collective` feature) all-reduces each
//! registered tensor: for a table it sums the crate's markers, which carry no rows, so each
//! peer would apply its own rows only, and a peer whose shard did not touch a table registers
//! nothing for it, so the peers' all-reduces pair up out of order. Each table tags its
//! markers, so the step after such an all-reduce fails with
//! [`Error::RowGradientsReducedAsDense`] instead
//! of applying this peer's rows alone (`try_step` returns it, Burn's `Optimizer::step`
//! panics with its message). Use [`all_reduce_grads`] instead of it; an engine is anything
//! that implements [`AllReduce`]: [`InProcessGroup`] for threads of one process,
//! `CollectivePeer` (feature `collective`) for burn-collective's local peers, [`TcpPeer`] for
//! processes on one machine or several. burn-collective 0.21 cannot carry a training step
//! across processes or machines (its global sync lets a node all-reduce only once; see
//! `CollectivePeer`): [`TcpPeer`] does, over plain TCP sockets, or implement [`AllReduce`]
//! over another transport (MPI, NCCL).
//!
//! # Across processes and machines: [`TcpPeer`]
//!
//! Every process runs the same program with its rank; rank 0 listens at an address the others
//! know (a star: see [`TcpPeer`] for the protocol, its timeouts and what a dead peer does).
//! The suite runs 2 and 3 such processes on the loopback against one process.
//!
//! ```no_run
//! use std::time::Duration;
//! use burn::backend::{Autodiff, NdArray};
//! use burn::module::Initializer;
//! use burn::optim::Optimizer;
//! use burn::tensor::{Int, Tensor};
//! use burn_sparse_adam::distributed::{all_reduce_grads, Reduction, TcpPeer};
//! use burn_sparse_adam::{collect_grads, SparseAdamConfig, SparseEmbeddingConfig};
//!
//! type B = Autodiff<NdArray>;
//! // `train RANK PEERS HOST:PORT` in every process; rank 0 listens on HOST:PORT.
//! let args: Vec<String> = std::env::args().collect();
//! let (rank, peers): (usize, usize) = (args[1].parse()?, args[2].parse()?);
//! let mut peer = TcpPeer::connect(rank, peers, args[3].as_str(), Duration::from_secs(60))?;
//! let device = Default::default();
//! // Every process starts from the same table (or loads one record).
//! let mut table = SparseEmbeddingConfig::new(1000, 16)
//!     .with_initializer(Initializer::Constant { value: 0.1 })
//!     .init::<B>(&device);
//! let mut optim = SparseAdamConfig::new().init();
//! for step in 0..10 {
//!     // This process's shard of the step's batch.
//!     let shard = Tensor::<B, 2, Int>::from_data([[step + rank as i64]], &device);
//!     let grads = collect_grads(table.forward(shard).sum().backward(), &table);
//!     let (grads, _stats) = all_reduce_grads(grads, &table, &mut peer, Reduction::Mean)?;
//!     table = optim.step(1e-2, table, grads);
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! burn-train 0.21's DDP strategy is another matter, and is not supported: it marks every
//! parameter for Burn's distributed sync (`set_distributed`), which all-reduces gradients
//! inside the backward pass, where a table's rows never are, and gives its workers clones of
//! one model, which share each table's row gradients. Each worker marks its model with
//! burn-train's `ModuleSharder` before its first step (`Learner::grad_sharded`); a
//! `SparseEmbedding` mapped by it panics with the message of
//! [`Error::TableUnderDistributedSync`], before any step, instead of letting each device
//! apply its own rows. (The type of that mapper is what the table recognizes:
//! `Tensor::is_distributed` exists only under Burn's `distributed` feature, which this crate
//! does not turn on. Burn 0.21's `distributed` feature makes only CubeCL backends autodiff
//! backends, so it cannot be built beside burn-ndarray in this workspace, and the refusal is
//! tested by the mapper's name, not with burn-train's DDP itself.)
//!
//! Every peer needs a model of its own: clones of a `SparseEmbedding` share their row
//! gradients (so that burn-train's multi-device step can merge them), which two peers
//! stepping at once would mix. Build each peer's model from its config and load one
//! record into all of them. A table is bound to the first thread that exchanges it; another
//! thread exchanging it is an error ([`Error::SharedTable`]).

use std::marker::PhantomData;

use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Tensor, TensorData};

use sparse_adam_core::exchange::{exchange, Gradient, Reduced};
pub use sparse_adam_core::exchange::{
    AllReduce, ExchangeError, ExchangeStats, InProcessGroup, InProcessPeer, Reduction, TcpPeer,
};

#[cfg(feature = "collective")]
pub mod collective;
/// Burn 0.21's collective engine (feature `collective`), for its config and orchestrator.
#[cfg(feature = "collective")]
pub use burn_collective;
#[cfg(feature = "collective")]
pub use collective::CollectivePeer;

use crate::embedding::row_grads::RowGrad;
use crate::embedding::tape::{is_marker, scope, ForeignMarker};
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
/// with another peer, [`Error::RowGradientsReducedAsDense`] when `grads` were already
/// all-reduced tensor by tensor (the other peers then fail with [`Error::Exchange`]).
///
/// # Example: two peers as threads of one process
///
/// ```
/// use std::time::Duration;
/// use burn::backend::{Autodiff, NdArray};
/// use burn::module::Initializer;
/// use burn::optim::Optimizer;
/// use burn::tensor::{Int, Tensor};
/// use burn_sparse_adam::distributed::{all_reduce_grads, AllReduce, InProcessGroup, Reduction};
/// use burn_sparse_adam::{collect_grads, SparseAdamConfig, SparseEmbeddingConfig};
///
/// type B = Autodiff<NdArray>;
/// // Every peer's table starts the same (or load one record into each).
/// let config = SparseEmbeddingConfig::new(100, 4)
///     .with_initializer(Initializer::Constant { value: 0.1 });
/// let peers = InProcessGroup::new(2, Duration::from_secs(30));
/// let tables = std::sync::Mutex::new(Vec::new());
/// std::thread::scope(|s| {
///     for mut peer in peers {
///         let (config, tables) = (&config, &tables);
///         s.spawn(move || {
///             let device = Default::default();
///             // A model of its own per peer (clones would share their row gradients).
///             let mut table = config.init::<B>(&device);
///             let mut optim = SparseAdamConfig::new().init();
///             let r = peer.rank() as i64;
///             let shard = Tensor::<B, 2, Int>::from_data([[1 + r, 2 + r]], &device);
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
pub fn all_reduce_grads<B, M, E>(
    mut grads: GradientsParams,
    module: &M,
    engine: &mut E,
    reduction: Reduction,
) -> Result<(GradientsParams, ExchangeStats)>
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
    E: AllReduce + ?Sized,
{
    let mut gather = Gather::<B> {
        grads: &mut grads,
        params: Vec::new(),
        refused: None,
        backend: PhantomData,
    };
    module.visit(&mut gather);
    let Gather {
        params, refused, ..
    } = gather;
    if let Some(error) = refused {
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
struct Gather<'a, B: AutodiffBackend> {
    grads: &'a mut GradientsParams,
    params: Vec<(Gradient, Install)>,
    /// What makes this peer refuse the exchange: a table whose tape another peer's thread
    /// exchanged, or whose marker an engine already all-reduced.
    refused: Option<Error>,
    backend: PhantomData<B>,
}

fn host<B: burn::tensor::backend::Backend, const D: usize>(tensor: Tensor<B, D>) -> Vec<f32> {
    tensor
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .expect("converted to f32")
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Gather<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let id = param.id;
        let value = param.val();
        let (shape, device) = (value.shape(), value.device());
        let table_device = device.clone();
        let grad = self.grads.remove::<B::InnerBackend, D>(id);
        let dense = {
            let shape = shape.clone();
            move |values: Vec<f32>, grads: &mut GradientsParams| {
                let data = TensorData::new(values, shape);
                grads.register(id, Tensor::<B::InnerBackend, D>::from_data(data, &device));
            }
        };
        let Some(tape) = scope::tape::<B>(id) else {
            let gradient = grad.map_or(Gradient::None, |g| Gradient::Dense(host(g)));
            let install: Install = Box::new(move |reduced, grads| {
                if let Reduced::Dense(values) = reduced {
                    dense(values, grads)
                }
            });
            self.params.push((gradient, install));
            return;
        };
        if !tape.join_as_peer() {
            self.refused.get_or_insert(Error::SharedTable {
                param: id.to_string(),
            });
        }
        let n = shape.as_slice().first().copied().unwrap_or(1);
        let width = shape.num_elements() / n.max(1);
        let gradient = match grad {
            None => Gradient::None,
            Some(marker) if is_marker(&shape, &marker.shape()) => {
                let device = marker.device();
                let announced = tape.announced(&[marker]).unwrap_or_else(|ForeignMarker| {
                    let error = Error::RowGradientsReducedAsDense { param: id };
                    self.refused.get_or_insert(error);
                    Vec::new()
                });
                let summed = RowGrad::sum(announced, &device);
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
            Reduced::Dense(values) => dense(values, grads),
            Reduced::Rows { rows, values } => {
                let rows = match rows.len() {
                    0 => RowGrad::empty(),
                    k => {
                        let data = TensorData::new(values, [k, width]);
                        let values = Tensor::<B::InnerBackend, 2>::from_data(data, &table_device);
                        RowGrad::new(rows, values)
                    }
                };
                let marker = tape.install::<D>(rows, &shape, &table_device);
                grads.register(id, marker);
            }
        });
        self.params.push((gradient, install));
    }
}
