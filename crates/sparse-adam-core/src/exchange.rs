//! Data-parallel training: gradients exchanged between peers, row gradients as rows.
//!
//! In data-parallel training each peer (a device, a thread, a process) runs the same model on
//! its share of a batch, and the peers' gradients are reduced (summed, or averaged) so that
//! every peer takes the same step. An engine reduces *dense* gradients with an all-reduce of
//! tensors shaped like the parameters. A sparse embedding's gradient is the rows its peer's
//! lookups touched, which differ from peer to peer: reducing it as a table-sized tensor would
//! move the whole table every step, and reducing only what Burn's plumbing carries (the
//! crate's markers) would leave each peer applying its own rows only.
//!
//! [`exchange`] reduces both kinds over any engine that offers a sum all-reduce of `f32`
//! buffers ([`AllReduce`]):
//!
//! 1. a **header** all-reduce of `peers × params × 7` numbers, where each peer writes, in its
//!    own slot, what it has for each parameter: nothing, rows (`k`, the table's `[n, d]`), or
//!    a dense gradient (its length). After it every peer knows every peer's `k`s, checks that
//!    the peers agree on each parameter's shape (all of them reach the same verdict, so a
//!    mismatch is an error on every peer, never a hang), and lays out the payload;
//! 2. a **payload** all-reduce. A row gradient is gathered: each peer writes its `k` rows,
//!    `[id, d values]` each, in its own segment of a `Σk · (d + 2)` block and zeros elsewhere,
//!    so the sum is an exact all-gather (every number is written by one peer and added to
//!    zeros, and `x + 0 = x` in any order: the engine's summation order cannot change it).
//!    A dense gradient (a stock module's, or a table that also got a dense gradient on some
//!    peer) is summed by the engine as it always is.
//!
//! Then every peer coalesces the gathered rows the same way ([`coalesce`]: the union of the
//! rows, sorted, each row's parts added in rank order), so the reduced row gradient is the
//! same bit for bit on every peer, and applies the [`Reduction`]. Numbers travel as `f32`: row
//! ids and counts as two 24-bit limbs each (an `f32` holds every integer below 2²⁴ exactly),
//! so ids up to 2⁴⁸ are exact.
//!
//! The bytes a peer puts into the all-reduce are `4 · (7 · peers · params + Σ_tables Σk (d + 2)
//! + Σ_dense len)`, against `4 · n · d` per table for a dense all-reduce of the tables
//! ([`ExchangeStats`]).
//!
//! Nothing here changes a model or an optimizer: a failed exchange (a peer that errors,
//! disappears or times out) returns an error on every peer before any update, so each peer's
//! state stays as it was before the step (with [`TcpPeer`], up to a link that breaks during a
//! call's commit: the peers that received the commit step, see its docs). [`InProcessGroup`] is
//! an engine for peers that are threads of one process, [`TcpPeer`] one for peers that are
//! processes (on one machine or several), both with a timeout and failure propagation.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::lookup::coalesce;

mod tcp;
pub use tcp::TcpPeer;

/// What an exchange rejected or what broke it, on this peer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ExchangeError {
    /// Some peers did not join an all-reduce within the engine's timeout.
    #[error(
        "peer {rank}: peers {missing:?} did not join the all-reduce within {waited:?} (a peer crashed, hung or stopped calling the exchange)"
    )]
    Timeout {
        /// This peer's rank.
        rank: usize,
        /// How long this peer waited.
        waited: Duration,
        /// The ranks that had not arrived.
        missing: Vec<usize>,
    },
    /// Another peer failed, aborted or left the group; the exchange is over for everyone.
    #[error("peer {rank}: the exchange failed on another peer: {reason}")]
    PeerFailed {
        /// This peer's rank.
        rank: usize,
        /// What the failing peer reported.
        reason: String,
    },
    /// Peers passed all-reduce buffers of different lengths (their models differ).
    #[error(
        "peer {rank}: all-reduce buffers differ in length: {len} here, {expected} on another peer (do all peers run the same model?)"
    )]
    LengthMismatch {
        /// This peer's rank.
        rank: usize,
        /// This peer's length.
        len: usize,
        /// The length another peer passed first.
        expected: usize,
    },
    /// Peers disagree about the shape of a parameter's gradient.
    #[error("parameter {param}: the peers' gradients disagree: {detail}")]
    ShapeMismatch {
        /// The parameter's place in the list given to [`exchange`].
        param: usize,
        /// Each peer's shape.
        detail: String,
    },
    /// A row id, a count or a length is beyond what the exchange carries (2⁴⁸), or negative.
    #[error("parameter {param}: {what} {value} cannot be exchanged (must be in 0..2^48)")]
    OutOfRange {
        /// The parameter's place in the list given to [`exchange`].
        param: usize,
        /// What the number is.
        what: &'static str,
        /// The number.
        value: i64,
    },
    /// A gradient given to [`exchange`] is malformed (values not `k · d` long, rows not
    /// sorted and unique).
    #[error("parameter {param}: {detail}")]
    Malformed {
        /// The parameter's place in the list given to [`exchange`].
        param: usize,
        /// What is wrong.
        detail: String,
    },
    /// The engine reported an error of its own.
    #[error("peer {rank}: the collective engine failed: {reason}")]
    Engine {
        /// This peer's rank.
        rank: usize,
        /// The engine's message.
        reason: String,
    },
}

/// A collective engine's sum all-reduce of `f32` buffers, the one primitive [`exchange`] needs.
pub trait AllReduce {
    /// How many peers take part.
    fn peers(&self) -> usize;
    /// This peer's rank, in `0..peers()`.
    fn rank(&self) -> usize;
    /// Replaces `buffer` by the element-wise sum of every peer's `buffer`. Every peer calls it
    /// the same number of times, with buffers of one length per call.
    fn all_reduce_sum(&mut self, buffer: &mut [f32]) -> Result<(), ExchangeError>;
    /// Tells the other peers that this one gives up (it failed before or during an exchange),
    /// so that their pending and next all-reduces fail instead of waiting.
    fn abort(&mut self, reason: &str);
}

/// How the peers' gradients are combined: the engine's operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Reduction {
    /// The sum of the peers' gradients: one process on the whole batch of a summed loss.
    #[default]
    Sum,
    /// The sum divided by the number of peers (a row that one peer touched is divided too, as
    /// a dense all-reduce of the table would): one process on the whole batch of a loss
    /// averaged over the peers' shards.
    Mean,
}

/// One parameter's gradient on one peer, before the exchange.
#[derive(Debug, Clone, PartialEq)]
pub enum Gradient {
    /// No gradient this step (the parameter was not used, or this peer's shard was empty).
    None,
    /// A row gradient of a `[table_rows, width]` table: sorted, unique `rows` and their
    /// row-major `[rows.len(), width]` `values`. An empty `rows` is a gradient all the same
    /// (a lookup of nothing, or only of `padding_idx`).
    Rows {
        /// The table's number of rows.
        table_rows: usize,
        /// The table's row width.
        width: usize,
        /// The touched rows, sorted and unique.
        rows: Vec<i64>,
        /// Their values.
        values: Vec<f32>,
    },
    /// A dense gradient, row-major, as long as the parameter.
    Dense(Vec<f32>),
}

/// One parameter's reduced gradient, the same on every peer.
#[derive(Debug, Clone, PartialEq)]
pub enum Reduced {
    /// No peer had a gradient.
    None,
    /// The union of the peers' rows, sorted and unique, and their reduced `[k, width]` values.
    Rows {
        /// The touched rows.
        rows: Vec<i64>,
        /// Their values, row-major.
        values: Vec<f32>,
    },
    /// A dense gradient: every peer's, reduced. A table takes this form when some peer had a
    /// dense gradient for it; the peers with rows only added them into zeros.
    Dense(Vec<f32>),
}

/// What one [`exchange`] moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExchangeStats {
    /// All-reduce calls (0 with one peer, else 1 or 2).
    pub calls: usize,
    /// `f32`s this peer put into all-reduces, header included.
    pub floats: usize,
}

impl ExchangeStats {
    /// The bytes this peer put into all-reduces.
    pub fn bytes(&self) -> usize {
        self.floats * 4
    }
}

/// Numbers per peer and parameter in the header: kind, then three numbers of two limbs each.
const HEADER: usize = 7;
const LIMB: i64 = 1 << 24;
/// The exclusive bound of a row id, count or length the exchange carries.
const MAX_EXCHANGED: i64 = 1 << 48;

const KIND_NONE: f32 = 0.0;
const KIND_ROWS: f32 = 1.0;
const KIND_DENSE: f32 = 2.0;

fn limbs(value: i64) -> [f32; 2] {
    [(value % LIMB) as f32, (value / LIMB) as f32]
}

fn unlimb(limbs: &[f32]) -> i64 {
    limbs[0] as i64 + limbs[1] as i64 * LIMB
}

/// One peer's entry for one parameter, read back from the header.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Entry {
    None,
    Rows {
        k: usize,
        table_rows: usize,
        width: usize,
    },
    Dense {
        len: usize,
    },
}

/// What the peers agreed a parameter's exchange is.
#[derive(Debug, Clone, PartialEq)]
enum Plan {
    None,
    /// Rows gathered: each peer's `k`.
    Rows {
        width: usize,
        ks: Vec<usize>,
    },
    /// A dense sum of `len` numbers; `table` is `(n, d)` when some peers gave rows of an
    /// `[n, d]` table.
    Dense {
        len: usize,
        table: Option<(usize, usize)>,
    },
}

impl Plan {
    fn payload_len(&self) -> usize {
        match self {
            Plan::None => 0,
            Plan::Rows { width, ks } => ks.iter().sum::<usize>() * (width + 2),
            Plan::Dense { len, .. } => *len,
        }
    }
}

fn check(param: usize, gradient: &Gradient) -> Result<(), ExchangeError> {
    let range = |what, value: usize| {
        let value = i64::try_from(value).unwrap_or(i64::MAX);
        match value < MAX_EXCHANGED {
            true => Ok(()),
            false => Err(ExchangeError::OutOfRange { param, what, value }),
        }
    };
    match gradient {
        Gradient::None => Ok(()),
        Gradient::Dense(values) => range("a dense gradient's length", values.len()),
        Gradient::Rows {
            table_rows,
            width,
            rows,
            values,
        } => {
            range("a table's row count", *table_rows)?;
            range("a table's width", *width)?;
            range("a row gradient's row count", rows.len())?;
            if values.len() != rows.len() * width {
                return Err(ExchangeError::Malformed {
                    param,
                    detail: format!(
                        "a row gradient of {} rows of width {width} has {} values, not {}",
                        rows.len(),
                        values.len(),
                        rows.len() * width
                    ),
                });
            }
            if !rows.windows(2).all(|w| w[0] < w[1]) {
                return Err(ExchangeError::Malformed {
                    param,
                    detail: "a row gradient's rows must be sorted and unique".into(),
                });
            }
            for &row in rows {
                if row < 0 || row as u64 >= *table_rows as u64 {
                    return Err(ExchangeError::OutOfRange {
                        param,
                        what: "a row id of a table of that many rows",
                        value: row,
                    });
                }
            }
            Ok(())
        }
    }
}

fn write_header(slot: &mut [f32], gradient: &Gradient) {
    let (kind, numbers) = match gradient {
        Gradient::None => (KIND_NONE, [0, 0, 0]),
        Gradient::Rows {
            table_rows,
            width,
            rows,
            ..
        } => (KIND_ROWS, [rows.len(), *table_rows, *width]),
        Gradient::Dense(values) => (KIND_DENSE, [values.len(), 0, 0]),
    };
    slot[0] = kind;
    for (i, number) in numbers.into_iter().enumerate() {
        slot[1 + 2 * i..3 + 2 * i].copy_from_slice(&limbs(number as i64));
    }
}

fn read_header(slot: &[f32]) -> Entry {
    let number = |i: usize| unlimb(&slot[1 + 2 * i..3 + 2 * i]) as usize;
    if slot[0] == KIND_ROWS {
        Entry::Rows {
            k: number(0),
            table_rows: number(1),
            width: number(2),
        }
    } else if slot[0] == KIND_DENSE {
        Entry::Dense { len: number(0) }
    } else {
        Entry::None
    }
}

/// The exchange of one parameter that every peer derives from the same header.
fn plan(param: usize, entries: &[Entry]) -> Result<Plan, ExchangeError> {
    let mismatch = || ExchangeError::ShapeMismatch {
        param,
        detail: entries
            .iter()
            .enumerate()
            .map(|(rank, entry)| match entry {
                Entry::None => format!("peer {rank}: none"),
                Entry::Rows {
                    k,
                    table_rows,
                    width,
                } => format!("peer {rank}: {k} rows of a [{table_rows}, {width}] table"),
                Entry::Dense { len } => format!("peer {rank}: dense, {len} values"),
            })
            .collect::<Vec<_>>()
            .join("; "),
    };
    let mut table = None;
    let mut dense_len = None;
    for entry in entries {
        match *entry {
            Entry::None => {}
            Entry::Rows {
                table_rows, width, ..
            } => {
                if *table.get_or_insert((table_rows, width)) != (table_rows, width) {
                    return Err(mismatch());
                }
            }
            Entry::Dense { len } => {
                if *dense_len.get_or_insert(len) != len {
                    return Err(mismatch());
                }
            }
        }
    }
    Ok(match (table, dense_len) {
        (None, None) => Plan::None,
        (Some((_, width)), None) => Plan::Rows {
            width,
            ks: entries
                .iter()
                .map(|entry| match entry {
                    Entry::Rows { k, .. } => *k,
                    _ => 0,
                })
                .collect(),
        },
        (None, Some(len)) => Plan::Dense { len, table: None },
        (Some((n, d)), Some(len)) => {
            if n.checked_mul(d) != Some(len) {
                return Err(mismatch());
            }
            Plan::Dense {
                len,
                table: Some((n, d)),
            }
        }
    })
}

/// Reduces one step's gradients across the peers of `engine`: `gradients` holds this peer's
/// gradient of each parameter, in an order that every peer shares (a model's visiting
/// order); the result holds each parameter's reduced gradient, the same on every peer.
///
/// A parameter that some peer gave rows for and none gave a dense gradient for comes back
/// as [`Reduced::Rows`]: the union of every peer's rows, each row's values added in rank
/// order, then reduced; a row only one peer touched comes back with that peer's values
/// (divided by the peer count under [`Reduction::Mean`]). A parameter without a gradient on
/// any peer comes back as [`Reduced::None`]; one that is `Gradient::Rows` on some peers with
/// empty `rows` and none elsewhere comes back as empty rows (a step that moves nothing but the
/// step count, as on one process). With one peer nothing is exchanged.
///
/// On error, [`AllReduce::abort`] has told the other peers (unless the engine itself
/// failed), and the caller should not step: every peer gets an error from the same
/// exchange, so all of them keep the state they had before it.
///
/// # Example: two peers as threads of one process
///
/// ```
/// use std::time::Duration;
/// use sparse_adam_core::exchange::{
///     exchange, AllReduce, Gradient, InProcessGroup, Reduced, Reduction,
/// };
///
/// let peers = InProcessGroup::new(2, Duration::from_secs(10));
/// let results: Vec<_> = std::thread::scope(|s| {
///     let handles: Vec<_> = peers
///         .into_iter()
///         .map(|mut peer| {
///             s.spawn(move || {
///                 // Peer 0 looked up rows 1 and 5 of a [10, 2] table, peer 1 rows 5 and 7.
///                 let rows = if peer.rank() == 0 { vec![1, 5] } else { vec![5, 7] };
///                 let values = vec![1.0; 4];
///                 let grad = Gradient::Rows { table_rows: 10, width: 2, rows, values };
///                 exchange(&mut peer, vec![grad], Reduction::Sum).unwrap().0
///             })
///         })
///         .collect();
///     handles.into_iter().map(|h| h.join().unwrap()).collect()
/// });
/// assert_eq!(results[0], results[1]);
/// let Reduced::Rows { rows, values } = &results[0][0] else { panic!() };
/// assert_eq!(rows, &[1, 5, 7]);
/// assert_eq!(values, &[1.0, 1.0, 2.0, 2.0, 1.0, 1.0]);
/// ```
pub fn exchange<E: AllReduce + ?Sized>(
    engine: &mut E,
    gradients: Vec<Gradient>,
    reduction: Reduction,
) -> Result<(Vec<Reduced>, ExchangeStats), ExchangeError> {
    let result = exchange_inner(engine, gradients, reduction);
    if let Err(error) = &result {
        if !matches!(
            error,
            ExchangeError::PeerFailed { .. } | ExchangeError::Timeout { .. }
        ) {
            engine.abort(&error.to_string());
        }
    }
    result
}

fn exchange_inner<E: AllReduce + ?Sized>(
    engine: &mut E,
    gradients: Vec<Gradient>,
    reduction: Reduction,
) -> Result<(Vec<Reduced>, ExchangeStats), ExchangeError> {
    for (param, gradient) in gradients.iter().enumerate() {
        check(param, gradient)?;
    }
    let (peers, rank) = (engine.peers(), engine.rank());
    let mut stats = ExchangeStats::default();
    if peers <= 1 {
        let reduced = gradients.into_iter().map(alone).collect();
        return Ok((reduced, stats));
    }
    let params = gradients.len();

    // 1. The header: every peer's entry for every parameter.
    let mut header = vec![0.0f32; peers * params * HEADER];
    for (param, gradient) in gradients.iter().enumerate() {
        let at = (rank * params + param) * HEADER;
        write_header(&mut header[at..at + HEADER], gradient);
    }
    engine.all_reduce_sum(&mut header)?;
    stats.calls += 1;
    stats.floats += header.len();
    let plans = (0..params)
        .map(|param| {
            let entries: Vec<Entry> = (0..peers)
                .map(|peer| {
                    let at = (peer * params + param) * HEADER;
                    read_header(&header[at..at + HEADER])
                })
                .collect();
            plan(param, &entries)
        })
        .collect::<Result<Vec<Plan>, _>>()?;
    // A gradient this peer sent that the header does not read back as sent means that
    // another peer wrote into this peer's slot: the peers disagree about their ranks.
    for (param, gradient) in gradients.iter().enumerate() {
        let at = (rank * params + param) * HEADER;
        let mut own = [0.0f32; HEADER];
        write_header(&mut own, gradient);
        if own[..] != header[at..at + HEADER] {
            return Err(ExchangeError::Engine {
                rank,
                reason: format!(
                    "another peer wrote into rank {rank}'s slot of the header: two peers share a rank"
                ),
            });
        }
    }

    // 2. The payload.
    let lens: Vec<usize> = plans.iter().map(Plan::payload_len).collect();
    let total: usize = lens.iter().sum();
    let mut payload = vec![0.0f32; total];
    let mut offset = 0;
    for ((plan, gradient), len) in plans.iter().zip(&gradients).zip(&lens) {
        let block = &mut payload[offset..offset + len];
        offset += len;
        match (plan, gradient) {
            (Plan::Rows { width, ks }, Gradient::Rows { rows, values, .. }) => {
                let start: usize = ks[..rank].iter().sum::<usize>() * (width + 2);
                let segment = &mut block[start..start + rows.len() * (width + 2)];
                for (i, &row) in rows.iter().enumerate() {
                    let out = &mut segment[i * (width + 2)..(i + 1) * (width + 2)];
                    out[..2].copy_from_slice(&limbs(row));
                    out[2..].copy_from_slice(&values[i * width..(i + 1) * width]);
                }
            }
            (Plan::Dense { .. }, Gradient::Dense(values)) => block.copy_from_slice(values),
            (
                Plan::Dense {
                    table: Some((_, d)),
                    ..
                },
                Gradient::Rows { rows, values, .. },
            ) => {
                for (i, &row) in rows.iter().enumerate() {
                    let at = row as usize * d;
                    block[at..at + d].copy_from_slice(&values[i * d..(i + 1) * d]);
                }
            }
            _ => {}
        }
    }
    if total > 0 {
        engine.all_reduce_sum(&mut payload)?;
        stats.calls += 1;
        stats.floats += payload.len();
    }

    // 3. Every peer reads the same payload the same way.
    let scale = |values: &mut [f32]| {
        if reduction == Reduction::Mean {
            let peers = peers as f32;
            values.iter_mut().for_each(|v| *v /= peers);
        }
    };
    let mut offset = 0;
    let reduced = plans
        .iter()
        .zip(&lens)
        .map(|(plan, len)| {
            let block = &payload[offset..offset + len];
            offset += len;
            match plan {
                Plan::None => Reduced::None,
                Plan::Dense { .. } => {
                    let mut values = block.to_vec();
                    scale(&mut values);
                    Reduced::Dense(values)
                }
                Plan::Rows { width, ks } => {
                    let mut parts = Vec::with_capacity(peers);
                    let mut start = 0;
                    for &k in ks {
                        let segment = &block[start * (width + 2)..(start + k) * (width + 2)];
                        start += k;
                        let mut rows = Vec::with_capacity(k);
                        let mut values = Vec::with_capacity(k * width);
                        for entry in segment.chunks_exact(width + 2) {
                            rows.push(unlimb(&entry[..2]));
                            values.extend_from_slice(&entry[2..]);
                        }
                        parts.push((rows, values));
                    }
                    let parts: Vec<(&[i64], &[f32])> = parts
                        .iter()
                        .map(|(rows, values)| (rows.as_slice(), values.as_slice()))
                        .collect();
                    let (rows, mut values) = coalesce(&parts, *width);
                    scale(&mut values);
                    Reduced::Rows { rows, values }
                }
            }
        })
        .collect();
    Ok((reduced, stats))
}

/// A lone peer's gradient, as the exchange of one peer returns it.
fn alone(gradient: Gradient) -> Reduced {
    match gradient {
        Gradient::None => Reduced::None,
        Gradient::Rows { rows, values, .. } => Reduced::Rows { rows, values },
        Gradient::Dense(values) => Reduced::Dense(values),
    }
}

/// An engine for peers that are threads of one process: [`InProcessGroup::new`] gives one
/// [`InProcessPeer`] per peer, to move into its thread.
///
/// The sum of a call is taken in rank order once every peer has arrived, so it is the same
/// bit for bit on every peer and from run to run. A peer that does not arrive within the
/// timeout ends the call on every waiting peer with [`ExchangeError::Timeout`]; a peer that
/// aborts, or is dropped while others wait for it, ends it with
/// [`ExchangeError::PeerFailed`]; after either, every later call fails at once.
#[derive(Debug)]
pub struct InProcessGroup;

impl InProcessGroup {
    /// The `peers` handles of a new group whose calls wait at most `timeout` for the others.
    ///
    /// # Panics
    ///
    /// When `peers` is 0.
    #[allow(clippy::new_ret_no_self)]
    pub fn new(peers: usize, timeout: Duration) -> Vec<InProcessPeer> {
        assert!(peers > 0, "a group needs at least one peer");
        let shared = Arc::new(Shared {
            state: Mutex::new(Round {
                generation: 0,
                buffers: vec![None; peers],
                result: Vec::new(),
                unread: 0,
                broken: None,
            }),
            changed: Condvar::new(),
        });
        (0..peers)
            .map(|rank| InProcessPeer {
                rank,
                peers,
                timeout,
                shared: shared.clone(),
                finished: false,
            })
            .collect()
    }
}

/// One peer of an [`InProcessGroup`].
#[derive(Debug)]
pub struct InProcessPeer {
    rank: usize,
    peers: usize,
    timeout: Duration,
    shared: Arc<Shared>,
    /// Whether this peer left through [`InProcessPeer::finish`] (its drop then breaks nothing).
    finished: bool,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<Round>,
    changed: Condvar,
}

#[derive(Debug)]
struct Round {
    /// Counts completed calls.
    generation: u64,
    /// Each peer's buffer for the call in progress.
    buffers: Vec<Option<Vec<f32>>>,
    /// The last call's sum, until every peer has read it.
    result: Vec<f32>,
    /// Peers that have not read `result` yet.
    unread: usize,
    /// Why the group is broken, once it is.
    broken: Option<String>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Round> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl InProcessPeer {
    /// Leaves the group after the last exchange: unlike dropping a peer, this does not fail
    /// the others' later calls (there should be none).
    pub fn finish(mut self) {
        self.finished = true;
    }

    fn break_group(&self, reason: String) {
        let mut round = self.shared.lock();
        round.broken.get_or_insert(reason);
        self.shared.changed.notify_all();
    }
}

impl Drop for InProcessPeer {
    fn drop(&mut self) {
        if !self.finished {
            let reason = match std::thread::panicking() {
                true => format!("peer {} panicked", self.rank),
                false => format!("peer {} left the group", self.rank),
            };
            self.break_group(reason);
        }
    }
}

impl AllReduce for InProcessPeer {
    fn peers(&self) -> usize {
        self.peers
    }

    fn rank(&self) -> usize {
        self.rank
    }

    fn abort(&mut self, reason: &str) {
        self.break_group(format!("peer {} aborted: {reason}", self.rank));
    }

    fn all_reduce_sum(&mut self, buffer: &mut [f32]) -> Result<(), ExchangeError> {
        let rank = self.rank;
        let start = Instant::now();
        let deadline = start + self.timeout;
        let failed = |reason: &String| ExchangeError::PeerFailed {
            rank,
            reason: reason.clone(),
        };
        let shared = self.shared.clone();
        let mut round = shared.lock();
        // Wait until every peer has read the previous call's sum.
        while round.unread > 0 && round.broken.is_none() {
            round = self.wait(round, deadline, start)?;
        }
        if let Some(reason) = &round.broken {
            return Err(failed(reason));
        }
        if let Some(expected) = round.buffers.iter().flatten().map(Vec::len).next() {
            if expected != buffer.len() {
                let error = ExchangeError::LengthMismatch {
                    rank,
                    len: buffer.len(),
                    expected,
                };
                round.broken.get_or_insert(error.to_string());
                shared.changed.notify_all();
                return Err(error);
            }
        }
        round.buffers[rank] = Some(buffer.to_vec());
        let generation = round.generation;
        if round.buffers.iter().all(Option::is_some) {
            let mut sum = vec![0.0f32; buffer.len()];
            for part in round.buffers.iter_mut().map(|b| b.take().expect("arrived")) {
                sum.iter_mut().zip(&part).for_each(|(s, p)| *s += p);
            }
            round.result = sum;
            round.unread = self.peers;
            round.generation += 1;
            shared.changed.notify_all();
        }
        while round.generation == generation {
            if let Some(reason) = &round.broken {
                let reason = reason.clone();
                round.buffers[rank] = None;
                return Err(failed(&reason));
            }
            round = match self.wait(round, deadline, start) {
                Ok(round) => round,
                Err(error) => {
                    let mut round = shared.lock();
                    round.buffers[rank] = None;
                    return Err(error);
                }
            };
        }
        buffer.copy_from_slice(&round.result);
        round.unread -= 1;
        if round.unread == 0 {
            round.result = Vec::new();
            shared.changed.notify_all();
        }
        Ok(())
    }
}

impl InProcessPeer {
    /// Waits for a change until `deadline`; at the deadline, breaks the group and names the
    /// peers that had not arrived.
    fn wait<'a>(
        &self,
        round: MutexGuard<'a, Round>,
        deadline: Instant,
        start: Instant,
    ) -> Result<MutexGuard<'a, Round>, ExchangeError> {
        let now = Instant::now();
        if now < deadline {
            let (round, _) = self
                .shared
                .changed
                .wait_timeout(round, deadline - now)
                .unwrap_or_else(|p| p.into_inner());
            return Ok(round);
        }
        let mut round = round;
        let missing: Vec<usize> = match round.unread > 0 {
            // Still waiting for the previous call's readers.
            true => Vec::new(),
            false => (0..self.peers)
                .filter(|&peer| peer != self.rank && round.buffers[peer].is_none())
                .collect(),
        };
        let error = ExchangeError::Timeout {
            rank: self.rank,
            waited: start.elapsed(),
            missing,
        };
        round.broken.get_or_insert(error.to_string());
        self.shared.changed.notify_all();
        Err(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `f` on every peer of a new group of `peers`, each in its own thread, and returns
    /// their results in rank order.
    fn on_peers<T: Send>(
        peers: usize,
        timeout: Duration,
        f: impl Fn(&mut InProcessPeer) -> T + Sync,
    ) -> Vec<T> {
        std::thread::scope(|s| {
            let handles: Vec<_> = InProcessGroup::new(peers, timeout)
                .into_iter()
                .map(|mut peer| {
                    let f = &f;
                    s.spawn(move || {
                        let out = f(&mut peer);
                        peer.finish();
                        out
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        })
    }

    fn rows(table_rows: usize, width: usize, rows: &[i64], seed: f32) -> Gradient {
        let values = (0..rows.len() * width)
            .map(|i| seed + i as f32 * 0.25 - 1.0)
            .collect();
        Gradient::Rows {
            table_rows,
            width,
            rows: rows.to_vec(),
            values,
        }
    }

    const SECOND: Duration = Duration::from_secs(10);

    /// The reduction of P peers' row and dense gradients is the coalesced union every peer
    /// agrees on, bit for bit, for P = 2 and 3, with a shared row, rows of one peer only, an
    /// empty shard, a parameter only one peer has, and ids beyond 2²⁴ (two limbs).
    #[test]
    fn peers_agree_on_the_coalesced_union() {
        for peers in [2usize, 3] {
            let shards: Vec<Vec<i64>> = vec![vec![0, 4, 9], vec![4, (1 << 30) + 7], vec![]];
            let results = on_peers(peers, SECOND, |peer| {
                let r = peer.rank();
                let grads = vec![
                    rows(1 << 31, 2, &shards[r], r as f32),
                    Gradient::Dense(vec![r as f32 + 0.5; 3]),
                    if r == 1 {
                        rows(5, 1, &[2], 3.0)
                    } else {
                        Gradient::None
                    },
                    Gradient::None,
                ];
                exchange(peer, grads, Reduction::Sum).unwrap()
            });
            for other in &results[1..] {
                assert_eq!(other.0, results[0].0, "every peer has the same result");
            }
            let (reduced, stats) = &results[0];
            let parts: Vec<Gradient> = (0..peers)
                .map(|r| rows(1 << 31, 2, &shards[r], r as f32))
                .collect();
            let parts: Vec<(&[i64], &[f32])> = parts
                .iter()
                .map(|g| match g {
                    Gradient::Rows { rows, values, .. } => (rows.as_slice(), values.as_slice()),
                    _ => unreachable!(),
                })
                .collect();
            let (rows_expected, values_expected) = coalesce(&parts, 2);
            assert_eq!(
                reduced[0],
                Reduced::Rows {
                    rows: rows_expected,
                    values: values_expected
                }
            );
            let dense: f32 = (0..peers).map(|r| r as f32 + 0.5).sum();
            assert_eq!(reduced[1], Reduced::Dense(vec![dense; 3]));
            assert_eq!(
                reduced[2],
                Reduced::Rows {
                    rows: vec![2],
                    values: vec![2.0]
                }
            );
            assert_eq!(reduced[3], Reduced::None);
            let k: usize = shards[..peers].iter().map(Vec::len).sum();
            assert_eq!(stats.calls, 2);
            assert_eq!(
                stats.floats,
                peers * 4 * HEADER + k * (2 + 2) + (2 + 1) + 3,
                "the header, each row's id and values, the dense gradient"
            );
        }
    }

    #[test]
    fn mean_divides_by_the_peer_count() {
        let results = on_peers(3, SECOND, |peer| {
            let grads = vec![
                rows(8, 1, &[peer.rank() as i64], 3.0),
                Gradient::Dense(vec![3.0, 6.0]),
            ];
            exchange(peer, grads, Reduction::Mean).unwrap().0
        });
        assert_eq!(
            results[2],
            vec![
                Reduced::Rows {
                    rows: vec![0, 1, 2],
                    values: vec![0.666_666_7; 3]
                },
                Reduced::Dense(vec![3.0, 6.0])
            ]
        );
    }

    /// A table some peer gave a dense gradient for is reduced densely on every peer, the rows
    /// of the others added in their places.
    #[test]
    fn a_dense_gradient_of_a_table_makes_its_exchange_dense() {
        let results = on_peers(2, SECOND, |peer| {
            let grad = match peer.rank() {
                0 => Gradient::Rows {
                    table_rows: 3,
                    width: 2,
                    rows: vec![1],
                    values: vec![1.0, 2.0],
                },
                _ => Gradient::Dense(vec![10.0; 6]),
            };
            exchange(peer, vec![grad], Reduction::Sum).unwrap().0
        });
        let expected = Reduced::Dense(vec![10.0, 10.0, 11.0, 12.0, 10.0, 10.0]);
        assert_eq!(results, vec![vec![expected.clone()], vec![expected]]);
    }

    #[test]
    fn empty_rows_stay_a_gradient() {
        let results = on_peers(2, SECOND, |peer| {
            exchange(peer, vec![rows(4, 3, &[], 0.0)], Reduction::Sum).unwrap()
        });
        assert_eq!(
            results[0].0,
            vec![Reduced::Rows {
                rows: vec![],
                values: vec![]
            }]
        );
        assert_eq!(results[0].1.calls, 1, "no payload to exchange");
    }

    #[test]
    fn one_peer_exchanges_nothing() {
        let mut peer = InProcessGroup::new(1, SECOND).pop().unwrap();
        let (reduced, stats) =
            exchange(&mut peer, vec![rows(4, 1, &[3], 1.0)], Reduction::Mean).unwrap();
        assert_eq!(
            reduced,
            vec![Reduced::Rows {
                rows: vec![3],
                values: vec![0.0]
            }]
        );
        assert_eq!(stats, ExchangeStats::default());
    }

    /// Peers that disagree on a table's shape all get the same error, naming each peer's shape.
    #[test]
    fn a_shape_mismatch_fails_every_peer() {
        let results = on_peers(2, SECOND, |peer| {
            let width = 2 + peer.rank();
            exchange(peer, vec![rows(4, width, &[1], 0.0)], Reduction::Sum)
        });
        for result in results {
            let error = result.unwrap_err();
            assert_eq!(
                error.to_string(),
                "parameter 0: the peers' gradients disagree: peer 0: 1 rows of a [4, 2] table; peer 1: 1 rows of a [4, 3] table"
            );
        }
    }

    #[test]
    fn malformed_gradients_are_named() {
        let mut peer = InProcessGroup::new(1, SECOND).pop().unwrap();
        let unsorted = Gradient::Rows {
            table_rows: 4,
            width: 1,
            rows: vec![2, 1],
            values: vec![0.0; 2],
        };
        let error = exchange(&mut peer, vec![unsorted], Reduction::Sum).unwrap_err();
        assert!(error.to_string().contains("sorted and unique"), "{error}");
        let outside = rows(4, 1, &[4], 0.0);
        let error = exchange(&mut peer, vec![outside], Reduction::Sum).unwrap_err();
        assert_eq!(
            error,
            ExchangeError::OutOfRange {
                param: 0,
                what: "a row id of a table of that many rows",
                value: 4
            }
        );
    }

    /// A peer that fails before the exchange (its own gradient is malformed) aborts it: the
    /// others fail at once, naming it, instead of waiting for their timeout.
    #[test]
    fn a_failing_peer_ends_the_others_at_once() {
        let start = Instant::now();
        let results = on_peers(3, Duration::from_secs(60), |peer| {
            let grad = match peer.rank() {
                1 => rows(4, 1, &[9], 0.0),
                _ => rows(4, 1, &[1], 0.0),
            };
            exchange(peer, vec![grad], Reduction::Sum)
        });
        assert!(start.elapsed() < Duration::from_secs(30), "nobody waited");
        assert!(matches!(results[1], Err(ExchangeError::OutOfRange { .. })));
        for rank in [0, 2] {
            let error = results[rank].as_ref().unwrap_err();
            assert!(
                matches!(error, ExchangeError::PeerFailed { .. })
                    && error.to_string().contains("peer 1 aborted"),
                "{error}"
            );
        }
    }

    /// A peer that never calls ends the others with a timeout naming it; one that is dropped
    /// (a thread that exits or panics) ends them at once.
    #[test]
    fn a_missing_peer_ends_the_others_in_bounded_time() {
        let timeout = Duration::from_millis(300);
        let mut peers = InProcessGroup::new(3, timeout);
        let absent = peers.pop().unwrap();
        let results: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = peers
                .into_iter()
                .map(|mut peer| {
                    s.spawn(move || {
                        exchange(&mut peer, vec![rows(4, 1, &[1], 0.0)], Reduction::Sum)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for result in results {
            let error = result.unwrap_err();
            match &error {
                ExchangeError::Timeout {
                    missing, waited, ..
                } => {
                    assert!(*waited < Duration::from_secs(20));
                    assert!(missing.is_empty() || missing.contains(&2), "{error}");
                }
                ExchangeError::PeerFailed { reason, .. } => {
                    assert!(reason.contains("did not join"), "{error}")
                }
                _ => panic!("unexpected {error}"),
            }
        }
        drop(absent);

        let mut peers = InProcessGroup::new(2, Duration::from_secs(60));
        let leaver = peers.pop().unwrap();
        let mut stayer = peers.pop().unwrap();
        let start = Instant::now();
        std::thread::scope(|s| {
            s.spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                drop(leaver);
            });
            let error = exchange(
                &mut stayer,
                vec![Gradient::Dense(vec![1.0])],
                Reduction::Sum,
            )
            .unwrap_err();
            assert!(
                error.to_string().contains("peer 1 left the group"),
                "{error}"
            );
        });
        assert!(start.elapsed() < Duration::from_secs(30));
    }

    /// Many calls in a row, with peers arriving in different orders, each see their own
    /// call's sum (a slow reader of one call is not overwritten by the next).
    #[test]
    fn consecutive_calls_do_not_mix() {
        let results = on_peers(3, SECOND, |peer| {
            let mut sums = Vec::new();
            for call in 0..200u32 {
                if (call + peer.rank() as u32).is_multiple_of(7) {
                    std::thread::yield_now();
                }
                let mut buffer = vec![(call * 3 + peer.rank() as u32) as f32; 2];
                peer.all_reduce_sum(&mut buffer).unwrap();
                sums.push(buffer[0]);
            }
            sums
        });
        let expected: Vec<f32> = (0..200u32).map(|call| (call * 9 + 3) as f32).collect();
        for sums in results {
            assert_eq!(sums, expected);
        }
    }

    #[test]
    fn buffers_of_different_lengths_are_an_error() {
        let results = on_peers(2, SECOND, |peer| {
            let mut buffer = vec![0.0; 2 + peer.rank()];
            peer.all_reduce_sum(&mut buffer)
        });
        assert!(results.iter().all(Result::is_err));
        assert!(results
            .iter()
            .any(|r| matches!(r, Err(ExchangeError::LengthMismatch { .. }))));
    }

    #[test]
    fn limbs_round_trip() {
        for value in [
            0,
            1,
            (1 << 24) - 1,
            1 << 24,
            (1 << 24) + 1,
            MAX_EXCHANGED - 1,
        ] {
            assert_eq!(unlimb(&limbs(value)), value);
        }
    }
}
