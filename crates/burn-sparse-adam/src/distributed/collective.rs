//! [`CollectivePeer`]: the [`AllReduce`] of [`all_reduce_grads`](super::all_reduce_grads)
//! over Burn 0.21's own collective engine, burn-collective (feature `collective`), for local
//! peers: threads of one process with a device each.
//!
//! burn-collective all-reduces tensors of one backend; the exchange's buffers are `f32`
//! vectors, so each all-reduce puts the buffer in a 1-d tensor of the engine's backend, calls
//! `burn_collective::all_reduce` with `ReduceOperation::Sum`, and reads the result back. The
//! exchange only ever adds a value to zeros (rows are gathered into each peer's own segment)
//! or adds integers below 2²⁴, so any summation order burn-collective's strategies take gives
//! the same bits on every peer.
//!
//! # What burn-collective does not allow
//!
//! - **Several nodes.** burn-collective 0.21 reaches other processes and machines through its
//!   global orchestrator, but a node can all-reduce through it only once: its global sync
//!   (`burn-collective-0.21.0/src/global/node/sync.rs`, `SyncService::sync`) clears a copy of
//!   the list of nodes that synced instead of the list, so every later all-reduce waits
//!   forever for a sync that already happened (the suite shows it with two processes on the
//!   loopback: the first all-reduce is exact, the second never completes). A training step
//!   needs two all-reduces, so [`CollectivePeer::register`] refuses a config with nodes,
//!   naming this, instead of hanging at the first step. Re-registering around each
//!   all-reduce does not get round it: the orchestrator numbers nodes by how many are
//!   registered, so a node that re-registers before the others finished takes a number in
//!   use. Across processes, use [`TcpPeer`](super::TcpPeer), or implement [`AllReduce`]
//!   over another engine (MPI, NCCL, gloo).
//! - **No timeout, no abort.** Its calls block until every registered peer has called too. A
//!   peer that crashes or stops calling leaves the others waiting forever; so each call here
//!   runs on a helper thread and gives up after the peer's timeout with
//!   [`ExchangeError::Engine`] naming the timeout (the helper thread stays blocked inside
//!   burn-collective, and the session cannot be used again: every later call fails at once;
//!   `burn_collective::reset_collective` starts a new session on this process). `abort` cannot
//!   tell the other peers: they end at their own timeout. The peers' timeouts run
//!   independently, so a peer whose all-reduce completes just after another peer gave up
//!   steps while that one does not: after a timeout, reload every peer from one checkpoint.
//! - **One session per process and backend.** Its local server is process-wide state keyed by
//!   the backend type: the peers of one group register with the same config and distinct
//!   ranks, and two groups of one backend cannot run at once in one process.

use std::fmt;
use std::sync::mpsc;
use std::time::Duration;

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData, TensorPrimitive};
use burn_collective::{CollectiveConfig, PeerId, ReduceOperation};

use super::{AllReduce, ExchangeError};

/// Why a config with nodes is refused (see the module docs).
const MULTI_NODE: &str = "burn-collective 0.21 cannot all-reduce across nodes more than once per process (its global sync, SyncService::sync in src/global/node/sync.rs, never clears the nodes that synced, so the second all-reduce waits forever), and a data-parallel step needs two: use local peers, or distributed::TcpPeer (or your own AllReduce) to reach other processes";

/// One peer of a burn-collective group, as an [`AllReduce`] for
/// [`all_reduce_grads`](super::all_reduce_grads): see the [module docs](self) for what the
/// engine allows.
///
/// `E` is the backend burn-collective sums on (its local server is per backend type); it need
/// not be the model's backend. With an autodiff model, name the inner backend, as
/// burn-collective asks.
///
/// # Example: two local peers
///
/// ```
/// use std::time::Duration;
/// use burn::backend::NdArray;
/// use burn_sparse_adam::distributed::burn_collective::CollectiveConfig;
/// use burn_sparse_adam::distributed::{AllReduce, CollectivePeer};
///
/// let config = CollectiveConfig::default().with_num_devices(2);
/// let sums: Vec<Vec<f32>> = std::thread::scope(|s| {
///     let peers: Vec<_> = (0..2)
///         .map(|rank| {
///             let config = config.clone();
///             s.spawn(move || {
///                 let device = Default::default();
///                 let timeout = Duration::from_secs(30);
///                 let mut peer =
///                     CollectivePeer::<NdArray>::register(rank, 2, device, config, timeout)
///                         .expect("registered");
///                 let mut buffer = vec![rank as f32, 1.0];
///                 peer.all_reduce_sum(&mut buffer).expect("summed");
///                 peer.finish().expect("finished");
///                 buffer
///             })
///         })
///         .collect();
///     peers.into_iter().map(|p| p.join().unwrap()).collect()
/// });
/// assert_eq!(sums, vec![vec![1.0, 2.0], vec![1.0, 2.0]]);
/// ```
pub struct CollectivePeer<E: Backend> {
    id: PeerId,
    rank: usize,
    peers: usize,
    device: E::Device,
    timeout: Duration,
    /// Set once a call failed or timed out: the session is over for this peer.
    broken: Option<String>,
}

impl<E: Backend> fmt::Debug for CollectivePeer<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CollectivePeer")
            .field("rank", &self.rank)
            .field("peers", &self.peers)
            .field("timeout", &self.timeout)
            .field("broken", &self.broken)
            .finish()
    }
}

impl<E: Backend> CollectivePeer<E> {
    /// Registers the local peer of rank `rank` (its burn-collective `PeerId`) out of `peers`,
    /// on `device`, with burn-collective's `config` (the same on every peer, with
    /// `with_num_devices(peers)`; its strategies are the caller's choice). Blocks until every
    /// peer has registered, or `timeout` runs out. Every later all-reduce waits at most
    /// `timeout` too.
    ///
    /// # Errors
    ///
    /// [`ExchangeError::Engine`] when `rank` is not below `peers`, when `config` names
    /// several nodes (see the [module docs](self): burn-collective 0.21 cannot all-reduce
    /// twice across nodes), when burn-collective refuses the registration (an invalid or
    /// mismatched config, a rank registered twice), or when the other peers do not register
    /// within `timeout`.
    pub fn register(
        rank: usize,
        peers: usize,
        device: E::Device,
        config: CollectiveConfig,
        timeout: Duration,
    ) -> Result<Self, ExchangeError> {
        let mut peer = Self {
            id: PeerId(u32::try_from(rank).unwrap_or(u32::MAX)),
            rank,
            peers,
            device,
            timeout,
            broken: None,
        };
        if rank >= peers {
            return Err(peer.fail(format!("rank {rank} is not below the peer count {peers}")));
        }
        // The config keeps its fields to itself; its `Display` (burn-collective 0.21.0, the
        // pinned version) names them.
        if config.to_string().contains("num_nodes: Some(") {
            return Err(peer.fail(MULTI_NODE.to_string()));
        }
        let (id, device) = (peer.id, peer.device.clone());
        peer.call("register", move || {
            burn_collective::register::<E>(id, device, config)
        })?;
        Ok(peer)
    }

    /// Sets how long each later call waits for the other peers (a first step, which waits
    /// for the slowest peer's start, may need a longer one than the steps after it).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Leaves the group (`burn_collective::finish_collective`), once this peer's exchanges are
    /// done.
    ///
    /// # Errors
    ///
    /// [`ExchangeError::Engine`] when burn-collective reports an error or does not answer
    /// within the timeout.
    pub fn finish(mut self) -> Result<(), ExchangeError> {
        let id = self.id;
        self.call("finish", move || {
            burn_collective::finish_collective::<E>(id)
        })
    }

    /// The error of this peer, which is then broken.
    fn fail(&mut self, reason: String) -> ExchangeError {
        self.broken = Some(reason.clone());
        ExchangeError::Engine {
            rank: self.rank,
            reason,
        }
    }

    /// Runs `op`, a blocking burn-collective call, on a helper thread, waiting for it at most
    /// the timeout (burn-collective itself never times out).
    fn call<T: Send + 'static, C: fmt::Debug + Send + 'static>(
        &mut self,
        what: &str,
        op: impl FnOnce() -> Result<T, C> + Send + 'static,
    ) -> Result<T, ExchangeError> {
        if let Some(reason) = &self.broken {
            let reason = format!("an earlier call failed ({reason})");
            return Err(ExchangeError::Engine {
                rank: self.rank,
                reason,
            });
        }
        let (done, result) = mpsc::channel();
        std::thread::spawn(move || {
            // The receiver is gone once the wait below timed out.
            let _ = done.send(op());
        });
        match result.recv_timeout(self.timeout) {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(self.fail(format!("burn-collective's {what}: {error:?}"))),
            Err(mpsc::RecvTimeoutError::Timeout) => Err(self.fail(format!(
                "burn-collective's {what} did not complete within {:?} (a peer crashed, hung or stopped calling the exchange; burn-collective has no timeout of its own, and this session cannot be used again)",
                self.timeout
            ))),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                Err(self.fail(format!("burn-collective's {what} panicked")))
            }
        }
    }
}

impl<E: Backend> AllReduce for CollectivePeer<E> {
    fn peers(&self) -> usize {
        self.peers
    }

    fn rank(&self) -> usize {
        self.rank
    }

    fn all_reduce_sum(&mut self, buffer: &mut [f32]) -> Result<(), ExchangeError> {
        // Every peer passes the same length (the exchange's header fixes it), so every peer
        // skips an empty buffer alike.
        if buffer.is_empty() {
            return Ok(());
        }
        let data = TensorData::new(buffer.to_vec(), [buffer.len()]);
        let tensor = Tensor::<E, 1>::from_data(data, &self.device)
            .into_primitive()
            .tensor();
        let id = self.id;
        let summed = self.call("all_reduce", move || {
            burn_collective::all_reduce::<E>(id, tensor, ReduceOperation::Sum)
        })?;
        let summed = Tensor::<E, 1>::from_primitive(TensorPrimitive::Float(summed))
            .into_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .map_err(|e| ExchangeError::Engine {
                rank: self.rank,
                reason: format!("the all-reduced tensor cannot be read: {e:?}"),
            })?;
        if summed.len() != buffer.len() {
            let reason = format!(
                "burn-collective returned {} values for {}",
                summed.len(),
                buffer.len()
            );
            return Err(self.fail(reason));
        }
        buffer.copy_from_slice(&summed);
        Ok(())
    }

    /// burn-collective cannot be told: the other peers end at their timeout. This peer makes
    /// no further call.
    fn abort(&mut self, reason: &str) {
        self.broken
            .get_or_insert_with(|| format!("aborted: {reason}"));
    }
}
