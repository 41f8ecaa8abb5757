//! [`TcpPeer`]: an [`AllReduce`] over TCP, for peers that are processes, on one machine or
//! several (the standard library's sockets, no other dependency).
//!
//! Neither Burn line has an engine that reaches other processes and can all-reduce more than
//! once (burn-collective 0.21's global path hangs at its second all-reduce; Burn 0.22 has no
//! engine across machines), so this one carries [`exchange`](super::exchange) between
//! processes.
//!
//! # Topology and numbers
//!
//! A star: rank 0 (the hub) listens, every other rank connects to it. Each all-reduce, every
//! other rank sends its buffer to the hub, which adds the buffers **in rank order**
//! (`((b₀ + b₁) + b₂) + …`, as [`InProcessGroup`](super::InProcessGroup) does) and sends the
//! sum back: every peer gets the same bits, from run to run. The hub moves `2 · (P − 1)`
//! buffers a call, the others 2: fine for the exchange's buffers (rows, not tables) and a few
//! peers; a ring would spread the hub's traffic for many peers or dense tables.
//!
//! # All or none
//!
//! A call commits in two phases, so that the peers do not end it differently: the hub sends
//! the sum, every other peer acknowledges it, and only then does the hub send a commit, after
//! which each peer returns the sum. A failure before the commit ends the call with an error on
//! every peer (so [`exchange`](super::exchange) returns before any update, and every model and
//! optimizer state stays as it was). What remains is a link that breaks during the commit
//! itself: the peers that received it step, that one peer fails (at its timeout), and every
//! peer's next call fails; reload every peer from one checkpoint then.
//!
//! # Failures
//!
//! Every wait is bounded: by the peer's timeout for its own part of a call (a deadline per
//! call, checked between reads), and by twice that for the hub's answers (the hub may itself
//! wait its whole timeout on another peer, whose verdict should arrive first). A peer that
//! does not send within the timeout ends the call with [`ExchangeError::Timeout`] on the hub
//! and [`ExchangeError::PeerFailed`] naming it on the others (the hub tells them); a peer that
//! aborts, exits, crashes or closes its connection ends it with [`ExchangeError::PeerFailed`]
//! on every other peer as soon as the hub reads from it (the operating system closes a dead
//! process's sockets). A peer that fails tells the others and closes its links, and every
//! later call of any peer fails at once. A peer stopped (not dead) cannot be told apart from
//! a slow one: the others end at the timeout.
//!
//! # Wire format
//!
//! Frames of a tag byte, a little-endian `u64` length and the payload: `DATA` (that many
//! `f32`s, little-endian), `ABORT` (a peer gives up) and `ERROR` (the hub ends the call for
//! everyone), both with a UTF-8 reason, and the empty `READY`, `ACK` and `COMMIT`. A
//! connection opens with a hello of the protocol's magic and version, the rank and the peer
//! count; the hub checks it (a wrong count, a rank out of range or taken twice is refused)
//! and answers `READY` once every rank has joined. Nothing is authenticated or encrypted: use
//! it on a trusted network, as NCCL's or gloo's TCP transports are.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use super::{AllReduce, ExchangeError};

/// The hello's magic number and the protocol's version.
const MAGIC: u32 = u32::from_le_bytes(*b"SPAX");
const VERSION: u32 = 2;
/// Frame tags.
const DATA: u8 = 1;
const ABORT: u8 = 2;
const ERROR: u8 = 3;
const READY: u8 = 4;
const ACK: u8 = 5;
const COMMIT: u8 = 6;
/// The longest reason a frame may carry (a longer one is cut), and the longest accepted.
const MAX_REASON: usize = 64 * 1024;
/// How often a hub polls for connections, and a peer retries a hub that is not up yet.
const POLL: Duration = Duration::from_millis(5);
/// How long a peer that failed spends telling the others, per link.
const TELL: Duration = Duration::from_secs(1);

/// One peer of a TCP all-reduce group (see the [module docs](self)).
///
/// # Example: three processes
///
/// Every process runs the same program with its rank; rank 0's address is known to all.
/// Here three threads stand for the processes, on the loopback:
///
/// ```
/// use std::net::TcpListener;
/// use std::time::Duration;
/// use sparse_adam_core::exchange::{AllReduce, TcpPeer};
///
/// // Rank 0 may bind port 0 and tell the others the port it got.
/// let listener = TcpListener::bind("127.0.0.1:0").unwrap();
/// let hub = listener.local_addr().unwrap();
/// let timeout = Duration::from_secs(30);
/// let sums: Vec<Vec<f32>> = std::thread::scope(|s| {
///     let mut handles = vec![s.spawn(move || {
///         let mut peer = TcpPeer::hub(listener, 3, timeout).unwrap();
///         let mut buffer = vec![1.0, 0.5];
///         peer.all_reduce_sum(&mut buffer).unwrap();
///         buffer
///     })];
///     for rank in 1..3 {
///         handles.push(s.spawn(move || {
///             let mut peer = TcpPeer::connect(rank, 3, hub, timeout).unwrap();
///             let mut buffer = vec![rank as f32, 0.5];
///             peer.all_reduce_sum(&mut buffer).unwrap();
///             buffer
///         }));
///     }
///     handles.into_iter().map(|h| h.join().unwrap()).collect()
/// });
/// assert!(sums.iter().all(|sum| sum == &[4.0, 1.5]));
/// ```
#[derive(Debug)]
pub struct TcpPeer {
    rank: usize,
    peers: usize,
    timeout: Duration,
    /// The hub's connections to ranks `1..peers` (in rank order), or a peer's to the hub.
    links: Vec<TcpStream>,
    /// Set once a call failed: the group is over for this peer.
    broken: Option<String>,
}

impl TcpPeer {
    /// Joins the group of `peers` whose hub (rank 0) is at `hub`: rank 0 binds that address
    /// and waits for the others ([`TcpPeer::hub`]); another rank connects to it, retrying
    /// until the hub is up, and returns once every rank has joined. Each rank waits at most
    /// `timeout` for its own part (twice that for the hub's answer), as every later
    /// all-reduce does.
    ///
    /// # Errors
    ///
    /// [`ExchangeError::Engine`] when `rank` is not below `peers`, the address cannot be
    /// bound or reached within `timeout`, or the hub refuses this peer (another peer count,
    /// a rank taken twice) or gives up on the group (a rank did not join in its timeout);
    /// [`ExchangeError::Timeout`] when the hub does not answer in time.
    pub fn connect(
        rank: usize,
        peers: usize,
        hub: impl ToSocketAddrs,
        timeout: Duration,
    ) -> Result<Self, ExchangeError> {
        let engine = |reason: String| ExchangeError::Engine { rank, reason };
        if rank >= peers {
            return Err(engine(format!(
                "rank {rank} is not below the peer count {peers}"
            )));
        }
        let addrs: Vec<SocketAddr> = hub
            .to_socket_addrs()
            .map_err(|e| engine(format!("the hub's address does not resolve: {e}")))?
            .collect();
        if rank == 0 {
            let listener = TcpListener::bind(&addrs[..])
                .map_err(|e| engine(format!("cannot listen on {addrs:?}: {e}")))?;
            return Self::hub(listener, peers, timeout);
        }
        let start = Instant::now();
        let deadline = start + timeout;
        let mut stream = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let attempt = addrs
                .iter()
                .map(|addr| TcpStream::connect_timeout(addr, left.max(POLL)))
                .find_map(Result::ok);
            if let Some(stream) = attempt {
                break stream;
            }
            if Instant::now() >= deadline {
                return Err(engine(format!(
                    "the hub at {addrs:?} did not accept a connection within {timeout:?}"
                )));
            }
            std::thread::sleep(POLL);
        };
        let mut peer = Self {
            rank,
            peers,
            timeout,
            links: Vec::new(),
            broken: None,
        };
        let hello = [MAGIC, VERSION, rank as u32, peers as u32];
        let result = configure(&stream)
            .and_then(|()| write_words(&mut stream, &hello, deadline))
            .and_then(|()| read_frame(&mut stream, 0, deadline + timeout));
        peer.links.push(stream);
        match result {
            Ok(Frame::Signal(READY)) => Ok(peer),
            Ok(Frame::Reason(reason)) => {
                let error = engine(format!("the hub did not take this peer: {reason}"));
                Err(peer.fail(error, None))
            }
            Ok(other) => {
                let error = engine(format!("the hub answered the hello with {other:?}"));
                Err(peer.fail(error, None))
            }
            Err(error) => {
                let error = peer.io_error(&error, 0, start, "joining the group");
                Err(peer.fail(error, None))
            }
        }
    }

    /// Rank 0 of a group of `peers`, on an already bound `listener` (bind port 0 and tell the
    /// others the port it got, where ports are not fixed in advance). Waits at most `timeout`
    /// for the other `peers − 1` to connect, then tells them that the group is complete;
    /// every later all-reduce waits at most `timeout` too.
    ///
    /// # Errors
    ///
    /// [`ExchangeError::Timeout`] naming the ranks that did not connect within `timeout`
    /// (the ranks that did are told why); [`ExchangeError::Engine`] when `peers` is 0 or the
    /// listener fails; [`ExchangeError::PeerFailed`] when a rank that joined leaves before
    /// the group is complete.
    pub fn hub(
        listener: TcpListener,
        peers: usize,
        timeout: Duration,
    ) -> Result<Self, ExchangeError> {
        let engine = |reason: String| ExchangeError::Engine { rank: 0, reason };
        if peers == 0 {
            return Err(engine("a group needs at least one peer".to_string()));
        }
        let start = Instant::now();
        let deadline = start + timeout;
        listener
            .set_nonblocking(true)
            .map_err(|e| engine(format!("the listener cannot poll: {e}")))?;
        let mut joined: Vec<Option<TcpStream>> = (1..peers).map(|_| None).collect();
        while joined.iter().any(Option::is_none) {
            let (mut stream, from) = match listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    if Instant::now() < deadline {
                        std::thread::sleep(POLL);
                        continue;
                    }
                    let missing: Vec<usize> =
                        (1..peers).filter(|&r| joined[r - 1].is_none()).collect();
                    let error = ExchangeError::Timeout {
                        rank: 0,
                        waited: start.elapsed(),
                        missing: missing.clone(),
                    };
                    let reason = format!(
                        "ranks {missing:?} did not join the group within the hub's {timeout:?}"
                    );
                    let mut hub = Self::with_links(peers, timeout, joined.into_iter().flatten());
                    return Err(hub.fail(error, Some(reason)));
                }
                Err(e) => return Err(engine(format!("accepting a peer failed: {e}"))),
            };
            // A stranger or a peer that gives up half-way is dropped; the group waits on. A
            // peer sends its hello as it connects: a second is plenty.
            let hello_by = deadline.min(Instant::now() + TELL);
            let Ok(hello) = stream
                .set_nonblocking(false)
                .and_then(|()| configure(&stream))
                .and_then(|()| read_words::<4>(&mut stream, hello_by))
            else {
                continue;
            };
            let [magic, version, rank, count] = hello.map(|w| w as usize);
            let refusal = if magic != MAGIC as usize || version != VERSION as usize {
                Some(format!(
                    "{from} does not speak this protocol (magic {magic:#x}, version {version}; expected {MAGIC:#x}, {VERSION})"
                ))
            } else if count != peers {
                Some(format!(
                    "rank {rank} at {from} expects {count} peers, the hub {peers}"
                ))
            } else if rank == 0 || rank >= peers {
                Some(format!("rank {rank} at {from} is not in 1..{peers}"))
            } else if joined[rank - 1].is_some() {
                Some(format!("rank {rank} joined twice (again from {from})"))
            } else {
                None
            };
            match refusal {
                Some(reason) => {
                    let by = Instant::now() + TELL;
                    let _ = write_frame(&mut stream, ERROR, reason.as_bytes(), by);
                }
                None => joined[rank - 1] = Some(stream),
            }
        }
        let mut hub = Self::with_links(peers, timeout, joined.into_iter().flatten());
        for other in 1..peers {
            if let Err(error) = write_frame(&mut hub.links[other - 1], READY, &[], deadline + TELL)
            {
                let error = hub.io_error(&error, other, start, "joining the group");
                return Err(hub.fail(error, None));
            }
        }
        Ok(hub)
    }

    /// The peers of a group on the loopback, in rank order, each joined on a thread of its own
    /// (for tests and benchmarks in one process; the links are real sockets).
    ///
    /// # Errors
    ///
    /// The first rank's error, when a rank cannot join.
    pub fn loopback(peers: usize, timeout: Duration) -> Result<Vec<Self>, ExchangeError> {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| ExchangeError::Engine {
            rank: 0,
            reason: format!("cannot listen on the loopback: {e}"),
        })?;
        let hub = listener.local_addr().map_err(|e| ExchangeError::Engine {
            rank: 0,
            reason: format!("the loopback listener has no address: {e}"),
        })?;
        std::thread::scope(|s| {
            let others: Vec<_> = (1..peers)
                .map(|rank| s.spawn(move || Self::connect(rank, peers, hub, timeout)))
                .collect();
            let first = Self::hub(listener, peers, timeout);
            std::iter::once(first)
                .chain(
                    others
                        .into_iter()
                        .map(|h| h.join().expect("a joining thread")),
                )
                .collect()
        })
    }

    /// Sets how long each later call waits for the other peers (a first step, which waits for
    /// the slowest peer's start, may need a longer one than the steps after it).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    fn with_links(peers: usize, timeout: Duration, links: impl Iterator<Item = TcpStream>) -> Self {
        Self {
            rank: 0,
            peers,
            timeout,
            links: links.collect(),
            broken: None,
        }
    }

    /// Ends the group for this peer: remembers `error`, tells the others why (`reason`, or
    /// the error's own message; best effort, a peer already gone needs no telling), and
    /// closes every link, so that a peer blocked on this one fails at once. Returns `error`.
    fn fail(&mut self, error: ExchangeError, reason: Option<String>) -> ExchangeError {
        if self.broken.is_none() {
            let reason = reason.unwrap_or_else(|| error.to_string());
            let by = Instant::now() + TELL;
            let tag = if self.rank == 0 { ERROR } else { ABORT };
            for link in &mut self.links {
                let _ = write_frame(link, tag, reason.as_bytes(), by);
                let _ = link.shutdown(Shutdown::Both);
            }
            self.broken = Some(error.to_string());
        }
        error
    }

    /// What an I/O error on the link to `other` means for this peer.
    fn io_error(
        &self,
        error: &io::Error,
        other: usize,
        start: Instant,
        doing: &str,
    ) -> ExchangeError {
        let rank = self.rank;
        match error.kind() {
            ErrorKind::TimedOut | ErrorKind::WouldBlock => ExchangeError::Timeout {
                rank,
                waited: start.elapsed(),
                missing: vec![other],
            },
            ErrorKind::InvalidData => ExchangeError::Engine {
                rank,
                reason: format!("peer {other} broke the protocol ({doing}: {error})"),
            },
            _ => ExchangeError::PeerFailed {
                rank,
                reason: format!("peer {other} left the group ({doing}: {error})"),
            },
        }
    }

    /// The message the hub sends the others for `error`: its cause, without the hub's rank.
    fn cause(error: &ExchangeError) -> String {
        match error {
            ExchangeError::PeerFailed { reason, .. } | ExchangeError::Engine { reason, .. } => {
                reason.clone()
            }
            ExchangeError::Timeout {
                waited, missing, ..
            } => format!(
                "peers {missing:?} did not join the all-reduce within {waited:?} (the hub waited)"
            ),
            other => other.to_string(),
        }
    }

    /// The hub's side of a call: every buffer in, the rank-order sum out, acknowledged, then
    /// committed.
    fn hub_all_reduce(&mut self, buffer: &mut [f32], start: Instant) -> Result<(), ExchangeError> {
        let deadline = start + self.timeout;
        let mut sum = buffer.to_vec();
        for other in 1..self.peers {
            let (error, reason) = match read_frame(&mut self.links[other - 1], buffer.len(), deadline)
            {
                Ok(Frame::Data(values)) => {
                    sum.iter_mut().zip(&values).for_each(|(s, v)| *s += v);
                    continue;
                }
                Ok(Frame::Length(len)) => (
                    ExchangeError::LengthMismatch {
                        rank: 0,
                        len: buffer.len(),
                        expected: len as usize,
                    },
                    format!(
                        "all-reduce buffers differ in length: {len} on peer {other}, {} on peer 0 (do all peers run the same model?)",
                        buffer.len()
                    ),
                ),
                // The reason names its peer (`abort`).
                Ok(Frame::Reason(reason)) => (
                    ExchangeError::PeerFailed {
                        rank: 0,
                        reason: reason.clone(),
                    },
                    reason,
                ),
                Ok(Frame::Signal(tag)) => {
                    let error = self.protocol_error(other, tag, "its buffer");
                    (error.clone(), Self::cause(&error))
                }
                Err(error) => {
                    let error = self.io_error(&error, other, start, "sending its buffer");
                    (error.clone(), Self::cause(&error))
                }
            };
            return Err(self.fail(error, Some(reason)));
        }
        let bytes = to_bytes(&sum);
        for other in 1..self.peers {
            if let Err(error) = write_frame(&mut self.links[other - 1], DATA, &bytes, deadline) {
                let error = self.io_error(&error, other, start, "receiving the sum");
                let reason = Self::cause(&error);
                return Err(self.fail(error, Some(reason)));
            }
        }
        for other in 1..self.peers {
            let error = match read_frame(&mut self.links[other - 1], 0, deadline) {
                Ok(Frame::Signal(ACK)) => continue,
                Ok(Frame::Reason(reason)) => ExchangeError::PeerFailed { rank: 0, reason },
                Ok(frame) => self.protocol_error(other, frame.tag(), "an acknowledgement"),
                Err(error) => self.io_error(&error, other, start, "acknowledging the sum"),
            };
            let reason = Self::cause(&error);
            return Err(self.fail(error, Some(reason)));
        }
        // Every peer holds the sum: the call commits. A link that breaks now fails that peer
        // alone (and every peer's next call).
        let mut lost = None;
        for other in 1..self.peers {
            let by = deadline.max(Instant::now()) + TELL;
            if let Err(error) = write_frame(&mut self.links[other - 1], COMMIT, &[], by) {
                lost.get_or_insert(self.io_error(&error, other, start, "receiving the commit"));
            }
        }
        buffer.copy_from_slice(&sum);
        if let Some(error) = lost {
            let reason = Self::cause(&error);
            self.fail(error, Some(reason));
        }
        Ok(())
    }

    /// Another peer's side of a call: its buffer out, the sum in, acknowledged, committed.
    fn spoke_all_reduce(
        &mut self,
        buffer: &mut [f32],
        start: Instant,
    ) -> Result<(), ExchangeError> {
        // The hub's answers may take its own timeout on a silent third peer: waiting twice as
        // long lets its verdict (naming that peer) arrive before this peer would blame it.
        let deadline = start + self.timeout;
        let answer_by = deadline + self.timeout;
        let rank = self.rank;
        let link = &mut self.links[0];
        let sent = write_frame(link, DATA, &to_bytes(buffer), deadline);
        let sum = match sent.and_then(|()| read_frame(link, buffer.len(), answer_by)) {
            Ok(Frame::Data(sum)) => sum,
            Ok(frame) => return Err(self.unexpected(frame, "the sum")),
            Err(error) => {
                // A hub that failed may have said why before closing the link.
                let pending = read_frame(&mut self.links[0], 0, Instant::now() + POLL * 20);
                let error = match pending {
                    Ok(Frame::Reason(reason)) => ExchangeError::PeerFailed { rank, reason },
                    _ => self.io_error(&error, 0, start, "all-reducing"),
                };
                return Err(self.fail(error, None));
            }
        };
        let link = &mut self.links[0];
        let acknowledged = write_frame(link, ACK, &[], answer_by);
        match acknowledged.and_then(|()| read_frame(link, 0, answer_by)) {
            Ok(Frame::Signal(COMMIT)) => {
                buffer.copy_from_slice(&sum);
                Ok(())
            }
            Ok(frame) => Err(self.unexpected(frame, "the commit")),
            Err(error) => {
                let error = self.io_error(&error, 0, start, "awaiting the commit");
                Err(self.fail(error, None))
            }
        }
    }

    /// A peer's error for a frame from the hub that is not `expected`: the hub's verdict, or
    /// a protocol error.
    fn unexpected(&mut self, frame: Frame, expected: &str) -> ExchangeError {
        let error = match frame {
            Frame::Reason(reason) => ExchangeError::PeerFailed {
                rank: self.rank,
                reason,
            },
            frame => self.protocol_error(0, frame.tag(), expected),
        };
        self.fail(error, None)
    }

    fn protocol_error(&self, other: usize, tag: u8, expected: &str) -> ExchangeError {
        ExchangeError::Engine {
            rank: self.rank,
            reason: format!(
                "peer {other} broke the protocol (a frame of tag {tag} where {expected} was due)"
            ),
        }
    }
}

impl AllReduce for TcpPeer {
    fn peers(&self) -> usize {
        self.peers
    }

    fn rank(&self) -> usize {
        self.rank
    }

    fn all_reduce_sum(&mut self, buffer: &mut [f32]) -> Result<(), ExchangeError> {
        if let Some(reason) = &self.broken {
            return Err(ExchangeError::PeerFailed {
                rank: self.rank,
                reason: format!("an earlier call failed ({reason})"),
            });
        }
        let start = Instant::now();
        match self.rank {
            _ if self.peers == 1 => Ok(()),
            0 => self.hub_all_reduce(buffer, start),
            _ => self.spoke_all_reduce(buffer, start),
        }
    }

    /// Tells the hub (or, on the hub, every other peer) that this peer gives up, and closes
    /// its links: the others' pending and next calls fail with [`ExchangeError::PeerFailed`]
    /// naming `reason`.
    fn abort(&mut self, reason: &str) {
        let reason = format!("peer {} aborted: {reason}", self.rank);
        let error = ExchangeError::PeerFailed {
            rank: self.rank,
            reason: reason.clone(),
        };
        self.fail(error, Some(reason));
    }
}

/// No Nagle delay: a call is a few requests and answers.
fn configure(stream: &TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)
}

fn to_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Bounds the next read or write of `stream` by `deadline`.
fn bound(stream: &TcpStream, deadline: Instant, read: bool) -> io::Result<()> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(io::Error::new(ErrorKind::TimedOut, "the deadline passed"));
    }
    match read {
        true => stream.set_read_timeout(Some(left)),
        false => stream.set_write_timeout(Some(left)),
    }
}

fn read_exact(stream: &mut TcpStream, mut out: &mut [u8], deadline: Instant) -> io::Result<()> {
    while !out.is_empty() {
        bound(stream, deadline, true)?;
        match stream.read(out) {
            Ok(0) => {
                return Err(io::Error::new(
                    ErrorKind::UnexpectedEof,
                    "connection closed",
                ))
            }
            Ok(n) => out = &mut out[n..],
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn write_all(stream: &mut TcpStream, mut bytes: &[u8], deadline: Instant) -> io::Result<()> {
    while !bytes.is_empty() {
        bound(stream, deadline, false)?;
        match stream.write(bytes) {
            Ok(0) => return Err(io::Error::new(ErrorKind::WriteZero, "connection closed")),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn write_words(stream: &mut TcpStream, words: &[u32], deadline: Instant) -> io::Result<()> {
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    write_all(stream, &bytes, deadline)
}

fn read_words<const N: usize>(stream: &mut TcpStream, deadline: Instant) -> io::Result<[u32; N]> {
    let mut bytes = vec![0u8; 4 * N];
    read_exact(stream, &mut bytes, deadline)?;
    let mut words = [0u32; N];
    for (w, b) in words.iter_mut().zip(bytes.chunks_exact(4)) {
        *w = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
    Ok(words)
}

fn write_frame(
    stream: &mut TcpStream,
    tag: u8,
    payload: &[u8],
    deadline: Instant,
) -> io::Result<()> {
    let payload = match tag {
        DATA => payload,
        _ => &payload[..payload.len().min(MAX_REASON)],
    };
    let mut frame = Vec::with_capacity(9 + payload.len());
    frame.push(tag);
    frame.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    frame.extend_from_slice(payload);
    write_all(stream, &frame, deadline)
}

/// A frame. A `DATA` frame must hold `values` numbers: one of another length is returned as
/// `Frame::Length` without reading its payload (the call is over then). A malformed frame is
/// an `InvalidData` error.
fn read_frame(stream: &mut TcpStream, values: usize, deadline: Instant) -> io::Result<Frame> {
    let mut head = [0u8; 9];
    read_exact(stream, &mut head, deadline)?;
    let tag = head[0];
    let len = u64::from_le_bytes(head[1..].try_into().expect("8 bytes"));
    let invalid = |what: String| io::Error::new(ErrorKind::InvalidData, what);
    match tag {
        DATA if len != 4 * values as u64 => return Ok(Frame::Length(len / 4)),
        DATA => {}
        ABORT | ERROR if len <= MAX_REASON as u64 => {}
        ABORT | ERROR => return Err(invalid(format!("a reason of {len} bytes"))),
        READY | ACK | COMMIT if len == 0 => return Ok(Frame::Signal(tag)),
        _ => return Err(invalid(format!("a frame of tag {tag} and {len} bytes"))),
    }
    let mut payload = vec![0u8; len as usize];
    read_exact(stream, &mut payload, deadline)?;
    Ok(match tag {
        DATA => Frame::Data(
            payload
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
        ),
        _ => Frame::Reason(String::from_utf8_lossy(&payload).into_owned()),
    })
}

/// A frame read by [`read_frame`].
#[derive(Debug)]
enum Frame {
    /// The expected number of values.
    Data(Vec<f32>),
    /// A `DATA` frame of another number of values (its payload left unread).
    Length(u64),
    /// An `ABORT` or `ERROR` frame's reason.
    Reason(String),
    /// `READY`, `ACK` or `COMMIT`.
    Signal(u8),
}

impl Frame {
    fn tag(&self) -> u8 {
        match self {
            Frame::Data(_) | Frame::Length(_) => DATA,
            Frame::Reason(_) => ERROR,
            Frame::Signal(tag) => *tag,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exchange::{exchange, Gradient, InProcessGroup, Reduction};

    /// Runs `f(peer)` for each rank of a new group of `peers` on the loopback, each on its own
    /// thread, and returns the results in rank order.
    fn on_peers<T: Send>(
        peers: usize,
        timeout: Duration,
        f: impl Fn(TcpPeer) -> T + Sync,
    ) -> Vec<T> {
        let group = TcpPeer::loopback(peers, timeout).expect("the group forms");
        std::thread::scope(|s| {
            let handles: Vec<_> = group
                .into_iter()
                .map(|peer| {
                    let f = &f;
                    s.spawn(move || f(peer))
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        })
    }

    const TIMEOUT: Duration = Duration::from_secs(20);

    /// Repeated calls (the exchange needs two a step) give every peer the rank-order sum, bit
    /// for bit: `(1e8 + 1) − 1e8` is 0 in `f32`, another order would give 1.
    #[test]
    fn every_peer_gets_the_rank_order_sum_call_after_call() {
        for peers in [1, 2, 3] {
            let inputs = [[1e8f32, 0.5], [1.0, 0.25], [-1e8, 0.125]];
            let sums = on_peers(peers, TIMEOUT, |mut peer| {
                (0..4)
                    .map(|call| {
                        let mut buffer = inputs[peer.rank()].map(|v| v * (call + 1) as f32);
                        peer.all_reduce_sum(&mut buffer).unwrap();
                        buffer
                    })
                    .collect::<Vec<_>>()
            });
            for call in 0..4 {
                let scale = (call + 1) as f32;
                let mut expected = inputs[0].map(|v| v * scale);
                for input in &inputs[1..peers] {
                    for (e, v) in expected.iter_mut().zip(input) {
                        *e += v * scale;
                    }
                }
                for (rank, sum) in sums.iter().enumerate() {
                    assert_eq!(
                        sum[call].map(f32::to_bits),
                        expected.map(f32::to_bits),
                        "{peers} peers, call {call}, rank {rank}"
                    );
                }
            }
        }
    }

    /// The exchange over TCP gives what it gives over the in-process engine, bit for bit.
    #[test]
    fn exchanges_over_tcp_equal_in_process_ones() {
        let gradients = |rank: usize| {
            let rows: [&[i64]; 3] = [&[0, 4, 9], &[4, (1 << 30) + 7], &[]];
            let values = (0..rows[rank].len() * 2)
                .map(|i| rank as f32 * 0.3 + i as f32 * 0.1 - 0.2)
                .collect();
            vec![
                Gradient::Rows {
                    table_rows: 1 << 31,
                    width: 2,
                    rows: rows[rank].to_vec(),
                    values,
                },
                Gradient::Dense(vec![rank as f32 + 0.7; 3]),
            ]
        };
        let over_tcp = on_peers(3, TIMEOUT, |mut peer| {
            let rank = peer.rank();
            exchange(&mut peer, gradients(rank), Reduction::Mean).unwrap()
        });
        let in_process: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = InProcessGroup::new(3, TIMEOUT)
                .into_iter()
                .map(|mut peer| {
                    s.spawn(move || {
                        let rank = peer.rank();
                        let out = exchange(&mut peer, gradients(rank), Reduction::Mean).unwrap();
                        peer.finish();
                        out
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(over_tcp, in_process);
    }

    /// A peer that closes its connection (a process that exits or crashes) ends the call on
    /// every other peer at once with `PeerFailed` naming it, long before the timeout; every
    /// later call fails at once.
    #[test]
    fn a_peer_that_leaves_ends_the_call_on_every_other_peer() {
        for leaving in [0, 2] {
            let results = on_peers(3, TIMEOUT, |mut peer| {
                let mut buffer = [1.0f32; 3];
                peer.all_reduce_sum(&mut buffer).unwrap();
                if peer.rank() == leaving {
                    drop(peer);
                    return None;
                }
                let start = Instant::now();
                let error = peer.all_reduce_sum(&mut buffer).unwrap_err();
                let again = peer.all_reduce_sum(&mut buffer).unwrap_err();
                Some((error, again, start.elapsed()))
            });
            for (rank, result) in results.into_iter().enumerate() {
                let Some((error, again, waited)) = result else {
                    continue;
                };
                assert!(
                    matches!(&error, ExchangeError::PeerFailed { rank: r, reason }
                        if *r == rank && reason.contains(&format!("peer {leaving} left the group"))),
                    "rank {rank}: {error}"
                );
                assert!(waited < TIMEOUT / 4, "rank {rank} waited {waited:?}");
                assert!(
                    again.to_string().contains("an earlier call failed"),
                    "{again}"
                );
            }
        }
    }

    /// A peer that stops calling (alive, connected, silent) ends the call at the timeout:
    /// `Timeout` naming it on the hub, `PeerFailed` saying so on the others.
    #[test]
    fn a_silent_peer_ends_the_call_at_the_timeout() {
        let timeout = Duration::from_millis(400);
        let results = on_peers(3, TIMEOUT, |mut peer| {
            peer.set_timeout(timeout);
            let mut buffer = [1.0f32; 2];
            let start = Instant::now();
            if peer.rank() == 2 {
                std::thread::sleep(timeout * 3);
                return None;
            }
            let error = peer.all_reduce_sum(&mut buffer).unwrap_err();
            Some((error, start.elapsed()))
        });
        let (hub, waited) = results[0].clone().unwrap();
        assert!(
            matches!(&hub, ExchangeError::Timeout { rank: 0, missing, .. } if missing == &[2]),
            "{hub}"
        );
        assert!(waited >= timeout && waited < timeout * 3, "{waited:?}");
        let (other, _) = results[1].clone().unwrap();
        assert!(
            matches!(&other, ExchangeError::PeerFailed { rank: 1, reason }
                if reason.contains("peers [2] did not join")),
            "{other}"
        );
    }

    /// All or none: a peer that dies after sending its buffer and receiving the sum, but
    /// before acknowledging it, leaves every other peer with an error (none returns the sum,
    /// so none steps). The dying peer is played by a raw socket speaking the protocol.
    #[test]
    fn a_peer_lost_before_the_commit_fails_every_other_peer() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let hub = listener.local_addr().unwrap();
        std::thread::scope(|s| {
            let hub_peer = s.spawn(move || {
                let mut peer = TcpPeer::hub(listener, 3, TIMEOUT).unwrap();
                peer.all_reduce_sum(&mut [1.0f32; 2])
            });
            let other = s.spawn(move || {
                let mut peer = TcpPeer::connect(1, 3, hub, TIMEOUT).unwrap();
                peer.all_reduce_sum(&mut [1.0f32; 2])
            });
            let deadline = Instant::now() + TIMEOUT;
            let mut raw = TcpStream::connect(hub).unwrap();
            write_words(&mut raw, &[MAGIC, VERSION, 2, 3], deadline).unwrap();
            assert!(matches!(
                read_frame(&mut raw, 0, deadline),
                Ok(Frame::Signal(READY))
            ));
            write_frame(&mut raw, DATA, &to_bytes(&[1.0, 1.0]), deadline).unwrap();
            let sum = read_frame(&mut raw, 2, deadline).unwrap();
            assert!(
                matches!(sum, Frame::Data(ref v) if v == &[3.0, 3.0]),
                "{sum:?}"
            );
            drop(raw);
            for (rank, result) in [(0, hub_peer.join()), (1, other.join())] {
                let error = result.unwrap().expect_err("no commit");
                assert!(
                    error.to_string().contains("peer 2 left the group"),
                    "rank {rank}: {error}"
                );
            }
        });
    }

    /// Buffers of different lengths end the call on every peer; an abort reaches the others
    /// with its reason.
    #[test]
    fn mismatched_lengths_and_aborts_fail_every_peer() {
        let results = on_peers(3, TIMEOUT, |mut peer| {
            let mut buffer = vec![1.0f32; 2 + usize::from(peer.rank() == 1)];
            peer.all_reduce_sum(&mut buffer).unwrap_err()
        });
        assert!(
            matches!(
                results[0],
                ExchangeError::LengthMismatch {
                    rank: 0,
                    len: 2,
                    expected: 3
                }
            ),
            "{}",
            results[0]
        );
        for error in &results[1..] {
            assert!(
                error.to_string().contains("3 on peer 1, 2 on peer 0"),
                "{error}"
            );
        }

        let results = on_peers(3, TIMEOUT, |mut peer| {
            let mut buffer = [1.0f32; 2];
            if peer.rank() == 1 {
                peer.abort("out of memory");
                return None;
            }
            Some(peer.all_reduce_sum(&mut buffer).unwrap_err())
        });
        for error in results.iter().flatten() {
            assert!(
                matches!(error, ExchangeError::PeerFailed { reason, .. }
                    if reason == "peer 1 aborted: out of memory"),
                "{error}"
            );
        }
    }

    /// The hub refuses a peer that expects another group (naming both counts) or takes a rank
    /// already taken; a peer returns only once the group is complete, and when it never is,
    /// the hub times out naming the ranks that never joined and tells the ones that did.
    #[test]
    fn the_hub_refuses_strangers_and_names_the_missing() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let hub = listener.local_addr().unwrap();
        let timeout = Duration::from_secs(3);
        std::thread::scope(|s| {
            let hub_peer = s.spawn(move || TcpPeer::hub(listener, 3, timeout));
            let wrong = TcpPeer::connect(1, 4, hub, timeout).unwrap_err();
            assert!(
                wrong.to_string().contains("rank 1 at")
                    && wrong.to_string().contains("expects 4 peers, the hub 3"),
                "{wrong}"
            );
            let first = s.spawn(move || TcpPeer::connect(1, 3, hub, timeout));
            std::thread::sleep(Duration::from_millis(300));
            let twice = TcpPeer::connect(1, 3, hub, timeout).unwrap_err();
            assert!(twice.to_string().contains("rank 1 joined twice"), "{twice}");
            let error = hub_peer.join().unwrap().unwrap_err();
            assert!(
                matches!(&error, ExchangeError::Timeout { rank: 0, missing, .. } if missing == &[2]),
                "{error}"
            );
            let told = first.join().unwrap().unwrap_err();
            assert!(
                told.to_string()
                    .contains("ranks [2] did not join the group"),
                "{told}"
            );
        });
        let error = TcpPeer::connect(3, 3, hub, timeout).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("rank 3 is not below the peer count 3"),
            "{error}"
        );
    }
}
