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
//! # Wire format
//!
//! Frames of a tag byte, a little-endian `u64` length and the payload: `DATA` (that many
//! `f32`s, little-endian), `ABORT` (a peer gives up; a UTF-8 reason), `ERROR` (the hub ends
//! the call for everyone; a UTF-8 reason). A connection opens with a hello of the protocol's
//! magic and version, the rank and the peer count, checked by the hub (a wrong count, a rank
//! out of range or taken twice is refused on both sides). Nothing is authenticated or
//! encrypted: use it on a trusted network, as NCCL's or gloo's TCP transports are.
//!
//! # Failures
//!
//! Every wait is bounded by the peer's timeout (a deadline per call, checked between reads;
//! the hub's answer is awaited twice as long, so that the hub's verdict arrives first). A
//! peer that does not send within it ends the call with [`ExchangeError::Timeout`] on the
//! hub and [`ExchangeError::PeerFailed`] naming it on the others (the hub tells them); a peer that
//! aborts, exits, crashes or closes its connection ends it with
//! [`ExchangeError::PeerFailed`] on every other peer at once (the operating system closes a
//! dead process's sockets). After either, every later call of this peer fails at once: the
//! exchange returns the error before any update, so every model and optimizer state stays as
//! it was before the step. A peer stopped (not dead) while the hub is inside a call cannot be
//! told apart from a slow one: the others end at the hub's timeout.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use super::{AllReduce, ExchangeError};

/// The hello's magic number and the protocol's version.
const MAGIC: u32 = u32::from_le_bytes(*b"SPAX");
const VERSION: u32 = 1;
/// Frame tags.
const DATA: u8 = 1;
const ABORT: u8 = 2;
const ERROR: u8 = 3;
/// The longest reason a frame may carry (a longer one is cut), and the longest accepted.
const MAX_REASON: usize = 64 * 1024;
/// How often a hub polls for connections, and a peer retries a hub that is not up yet.
const POLL: Duration = Duration::from_millis(5);

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
    /// until the hub is up. Waits at most `timeout` for the whole group, as every later
    /// all-reduce does.
    ///
    /// # Errors
    ///
    /// [`ExchangeError::Engine`] when `rank` is not below `peers`, the address cannot be
    /// bound or reached within `timeout`, or the hub refuses this peer (another peer count,
    /// a rank taken twice); [`ExchangeError::Timeout`] when the group is not complete within
    /// `timeout`.
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
            .and_then(|()| read_frame(&mut stream, 0, deadline));
        match result {
            Ok(Frame::Data(_)) => {
                peer.links.push(stream);
                Ok(peer)
            }
            Ok(Frame::Reason(reason)) => {
                Err(peer.fail(engine(format!("the hub refused this peer: {reason}"))))
            }
            Ok(Frame::Length(len)) => Err(peer.fail(engine(format!(
                "the hub answered the hello with {len} values"
            )))),
            Err(error) => Err(peer.fail(peer.io_error(error, 0, start, "joining the group"))),
        }
    }

    /// Rank 0 of a group of `peers`, on an already bound `listener` (bind port 0 and tell the
    /// others the port it got, where ports are not fixed in advance). Waits at most `timeout`
    /// for the other `peers − 1` to connect, and for every later all-reduce.
    ///
    /// # Errors
    ///
    /// [`ExchangeError::Timeout`] naming the ranks that did not connect within `timeout`;
    /// [`ExchangeError::Engine`] when `peers` is 0 or the listener fails.
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
                    if Instant::now() >= deadline {
                        let missing = (1..peers).filter(|&r| joined[r - 1].is_none()).collect();
                        return Err(ExchangeError::Timeout {
                            rank: 0,
                            waited: start.elapsed(),
                            missing,
                        });
                    }
                    std::thread::sleep(POLL);
                    continue;
                }
                Err(e) => return Err(engine(format!("accepting a peer failed: {e}"))),
            };
            // A stranger or a peer that gives up half-way is dropped; the group waits on. A
            // peer sends its hello as it connects: a second is plenty.
            let hello_by = deadline.min(Instant::now() + Duration::from_secs(1));
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
                    let _ = write_frame(&mut stream, ERROR, reason.as_bytes(), deadline);
                }
                None => {
                    if write_frame(&mut stream, DATA, &[], deadline).is_ok() {
                        joined[rank - 1] = Some(stream);
                    }
                }
            }
        }
        Ok(Self {
            rank: 0,
            peers,
            timeout,
            links: joined.into_iter().flatten().collect(),
            broken: None,
        })
    }

    /// Sets how long each later call waits for the other peers (a first step, which waits for
    /// the slowest peer's start, may need a longer one than the steps after it).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Sends `reason` to every linked peer, best effort: the call's deadline may have passed,
    /// so each write gets a fresh, short one; a peer already gone needs no telling.
    fn tell_all(&mut self, tag: u8, reason: &str) {
        let deadline = Instant::now() + self.timeout.min(Duration::from_secs(1));
        for link in &mut self.links {
            let _ = write_frame(link, tag, reason.as_bytes(), deadline);
        }
    }

    /// Remembers `error` as the reason this peer is broken, and returns it.
    fn fail(&mut self, error: ExchangeError) -> ExchangeError {
        self.broken.get_or_insert_with(|| error.to_string());
        error
    }

    /// What an I/O error on the link to `other` means for this peer.
    fn io_error(
        &self,
        error: io::Error,
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
            _ => ExchangeError::PeerFailed {
                rank,
                reason: format!("peer {other} left the group ({doing}: {error})"),
            },
        }
    }

    /// The hub's side of a call: every buffer in, the rank-order sum out.
    fn hub_all_reduce(&mut self, buffer: &mut [f32], start: Instant) -> Result<(), ExchangeError> {
        let deadline = start + self.timeout;
        let mut sum = buffer.to_vec();
        let mut failure = None;
        for other in 1..self.peers {
            let link = &mut self.links[other - 1];
            match read_frame(link, buffer.len(), deadline) {
                Ok(Frame::Data(values)) => {
                    sum.iter_mut().zip(&values).for_each(|(s, v)| *s += v);
                }
                Ok(Frame::Length(len)) => {
                    failure = Some((
                        ExchangeError::LengthMismatch {
                            rank: 0,
                            len: buffer.len(),
                            expected: len as usize,
                        },
                        format!(
                            "all-reduce buffers differ in length: {len} on peer {other}, {} on peer 0 (do all peers run the same model?)",
                            buffer.len()
                        ),
                    ));
                }
                Ok(Frame::Reason(reason)) => {
                    // The reason names its peer (`abort`).
                    let error = ExchangeError::PeerFailed {
                        rank: 0,
                        reason: reason.clone(),
                    };
                    failure = Some((error, reason));
                }
                Err(error) => {
                    let error = self.io_error(error, other, start, "sending its buffer");
                    let reason = error.to_string();
                    failure = Some((error, reason));
                }
            }
            if failure.is_some() {
                break;
            }
        }
        if let Some((error, reason)) = failure {
            self.tell_all(ERROR, &reason);
            return Err(self.fail(error));
        }
        let bytes = to_bytes(&sum);
        for other in 1..self.peers {
            if let Err(error) = write_frame(&mut self.links[other - 1], DATA, &bytes, deadline) {
                let error = self.io_error(error, other, start, "receiving the sum");
                self.tell_all(ERROR, &error.to_string());
                return Err(self.fail(error));
            }
        }
        buffer.copy_from_slice(&sum);
        Ok(())
    }

    /// Another peer's side of a call: its buffer out, the sum in.
    fn spoke_all_reduce(
        &mut self,
        buffer: &mut [f32],
        start: Instant,
    ) -> Result<(), ExchangeError> {
        // The answer may take the hub's own timeout on a silent third peer: waiting twice as
        // long lets its verdict (naming that peer) arrive before this peer would blame the hub.
        let deadline = start + self.timeout;
        let rank = self.rank;
        let link = &mut self.links[0];
        let result = write_frame(link, DATA, &to_bytes(buffer), deadline)
            .and_then(|()| read_frame(link, buffer.len(), deadline + self.timeout));
        let error = match result {
            Ok(Frame::Data(values)) => {
                buffer.copy_from_slice(&values);
                return Ok(());
            }
            Ok(Frame::Length(len)) => ExchangeError::Engine {
                rank,
                reason: format!("the hub returned {len} values for {}", buffer.len()),
            },
            Ok(Frame::Reason(reason)) => ExchangeError::PeerFailed { rank, reason },
            Err(error) => self.io_error(error, 0, start, "all-reducing"),
        };
        Err(self.fail(error))
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

    /// Tells the hub (or, on the hub, every other peer) that this peer gives up; the others'
    /// pending and next calls fail with [`ExchangeError::PeerFailed`] naming `reason`.
    fn abort(&mut self, reason: &str) {
        let reason = format!("peer {} aborted: {reason}", self.rank);
        self.tell_all(if self.rank == 0 { ERROR } else { ABORT }, &reason);
        self.broken.get_or_insert(reason);
    }
}

/// No Nagle delay: a call is a request and an answer.
fn configure(stream: &TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)
}

fn to_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Waits for the socket to be readable or writable at most until `deadline`.
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

/// A frame's tag and payload. A `DATA` frame must hold `values` numbers: one of another
/// length is returned as `Frame::Length` without reading its payload (the call is over). A
/// malformed frame is an `InvalidData` error.
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
        _ => return Err(invalid(format!("unknown frame tag {tag}"))),
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
enum Frame {
    /// The expected number of values.
    Data(Vec<f32>),
    /// A `DATA` frame of another number of values (its payload left unread).
    Length(u64),
    /// An `ABORT` or `ERROR` frame's reason.
    Reason(String),
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
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let hub = listener.local_addr().unwrap();
        let mut listener = Some(listener);
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..peers)
                .map(|rank| {
                    let (f, listener) = (&f, listener.take().filter(|_| rank == 0));
                    s.spawn(move || {
                        let peer = match listener {
                            Some(listener) => TcpPeer::hub(listener, peers, timeout),
                            None => TcpPeer::connect(rank, peers, hub, timeout),
                        };
                        f(peer.expect("the peer joins"))
                    })
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
        let results = on_peers(3, timeout, |mut peer| {
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
    /// already taken, and times out naming the ranks that never joined.
    #[test]
    fn the_hub_refuses_strangers_and_names_the_missing() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let hub = listener.local_addr().unwrap();
        let timeout = Duration::from_secs(2);
        std::thread::scope(|s| {
            let hub_peer = s.spawn(move || TcpPeer::hub(listener, 3, timeout));
            let wrong = TcpPeer::connect(1, 4, hub, timeout).unwrap_err();
            assert!(
                wrong.to_string().contains("rank 1 at")
                    && wrong.to_string().contains("expects 4 peers, the hub 3"),
                "{wrong}"
            );
            let first = TcpPeer::connect(1, 3, hub, timeout).unwrap();
            let twice = TcpPeer::connect(1, 3, hub, timeout).unwrap_err();
            assert!(twice.to_string().contains("rank 1 joined twice"), "{twice}");
            let error = hub_peer.join().unwrap().unwrap_err();
            assert!(
                matches!(&error, ExchangeError::Timeout { rank: 0, missing, .. } if missing == &[2]),
                "{error}"
            );
            drop(first);
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
