//! `cargo xtask bench --peers 1,2,3`: data-parallel training of the micro-benchmark's table,
//! its row gradients exchanged as rows (issue 14's figures).
//!
//! Each peer is a thread with its own `[V, 64]` table and moments. Every step, all peers
//! draw the same batch of Zipf lookups (the micro-benchmark's sampler) and each takes its
//! contiguous share of it: it plans its lookups, sums an upstream gradient per row
//! (`sum_per_row`), exchanges its row gradient with the others ([`exchange`]: a header and a
//! `Σk · (d + 2)` payload) over an [`InProcessGroup`] or, with `--engines tcp`, over
//! [`TcpPeer`]s on the loopback, and applies the reduced rows with the core's `update_rows`. This is the Burn-free part of a data-parallel step, the part that
//! data parallelism adds or changes: a model's forward and backward passes are not in it.
//!
//! Printed per `V` and peer count: the median step, steps per second, the bytes one peer put
//! into all-reduces per step (median) against a dense all-reduce of the table (`4 · V · d`)
//! and their ratio, and whether every peer ended with the same table bit for bit.

use std::time::{Duration, Instant};

use sparse_adam_core::exchange::{exchange, Gradient, InProcessGroup, Reduced, Reduction, TcpPeer};
use sparse_adam_core::{
    sum_per_row, update_rows, AllReduce, Hyperparameters, LookupPlan, StepScalars,
};

use crate::workload::{median, ZipfSampler, SAMPLER_SEED};

/// One measurement: `peers` peers training a `[rows, dim]` table.
#[derive(Debug, Clone, PartialEq)]
pub struct PeersRecord {
    /// Rows of the table.
    pub rows: usize,
    /// Width of a row.
    pub dim: usize,
    /// Lookups per step, over all peers.
    pub batch: usize,
    /// The number of peers.
    pub peers: usize,
    /// The engine they exchanged through.
    pub engine: Engine,
    /// The median step of peer 0, in milliseconds (the peers wait for each other in the
    /// exchange, so every peer's step takes as long).
    pub median_ms_step: f64,
    /// The median bytes peer 0 put into all-reduces per step.
    pub median_bytes: f64,
    /// The bytes of a dense all-reduce of the table's gradient, `4 · rows · dim`.
    pub dense_bytes: f64,
    /// Whether every peer ended with the same table, bit for bit.
    pub peers_agree: bool,
    /// A digest of peer 0's final table and moments (FNV-1a over their bits).
    pub digest: u64,
}

/// The engine the peers exchange through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// [`InProcessGroup`]: shared memory between the peers' threads.
    InProcess,
    /// [`TcpPeer`]s on the loopback (each peer a thread here, talking through sockets as
    /// processes would).
    Tcp,
}

impl Engine {
    /// The name `--engines` takes and the report prints.
    pub fn name(self) -> &'static str {
        match self {
            Engine::InProcess => "in-process",
            Engine::Tcp => "tcp",
        }
    }

    fn from_name(name: &str) -> Result<Self, String> {
        match name {
            "in-process" => Ok(Engine::InProcess),
            "tcp" => Ok(Engine::Tcp),
            _ => Err(format!("unknown engine {name:?} (in-process, tcp)")),
        }
    }
}

/// Trains `peers` copies of a `[rows, dim]` table for `warmup + steps` steps of `batch`
/// lookups split across them, exchanging through `engine`; times the last `steps`.
pub fn measure(
    rows: usize,
    dim: usize,
    batch: usize,
    peers: usize,
    engine: Engine,
    warmup: usize,
    steps: usize,
) -> PeersRecord {
    let timeout = Duration::from_secs(600);
    let train = |peer: &mut dyn AllReduce| train_peer(peer, rows, dim, batch, warmup, steps);
    let results: Vec<(Vec<f64>, Vec<f64>, u64)> = match engine {
        Engine::InProcess => std::thread::scope(|s| {
            let handles: Vec<_> = InProcessGroup::new(peers, timeout)
                .into_iter()
                .map(|mut peer| {
                    s.spawn(move || {
                        let result = train(&mut peer);
                        peer.finish();
                        result
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("a peer panicked"))
                .collect()
        }),
        Engine::Tcp => {
            let group = TcpPeer::loopback(peers, timeout).expect("a group on the loopback");
            std::thread::scope(|s| {
                let handles: Vec<_> = group
                    .into_iter()
                    .map(|mut peer| s.spawn(move || train(&mut peer)))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("a peer panicked"))
                    .collect()
            })
        }
    };
    let (times, bytes, digest) = &results[0];
    PeersRecord {
        rows,
        dim,
        batch,
        peers,
        engine,
        median_ms_step: median(times),
        median_bytes: median(bytes),
        dense_bytes: 4.0 * rows as f64 * dim as f64,
        peers_agree: results.iter().all(|r| r.2 == *digest),
        digest: *digest,
    }
}

/// One peer's run: its step times (ms) and bytes exchanged, and a digest of its final table
/// and moments.
fn train_peer(
    peer: &mut dyn AllReduce,
    rows: usize,
    dim: usize,
    batch: usize,
    warmup: usize,
    steps: usize,
) -> (Vec<f64>, Vec<f64>, u64) {
    let (rank, peers) = (peer.rank(), peer.peers());
    let len = rows * dim;
    // Non-zero values: every page is written, hence resident, before the timings (zeroed
    // pages would be faulted in by the steps, which several peers' threads of one process do
    // one at a time).
    let (mut p, mut m, mut v) = (vec![0.5f32; len], vec![0.01f32; len], vec![0.001f32; len]);
    let mut sampler = ZipfSampler::new(rows, SAMPLER_SEED);
    let hyper = Hyperparameters::default();
    let (mut times, mut bytes) = (Vec::new(), Vec::new());
    let mut grad = Vec::new();
    for step in 0..warmup + steps {
        let indices = sampler.sample(batch);
        let start = Instant::now();
        let share = batch.div_ceil(peers);
        let lo = (rank * share).min(batch);
        let hi = ((rank + 1) * share).min(batch);
        let mine = &indices[lo..hi];
        let plan = LookupPlan::new(mine, None);
        let upstream: Vec<f32> = (0..mine.len() * dim)
            .map(|i| ((i % 17) as f32 - 8.0) * 1e-3)
            .collect();
        grad.clear();
        sum_per_row(&upstream, dim, &plan.slots, plan.rows.len(), &mut grad);
        let gradient = Gradient::Rows {
            table_rows: rows,
            width: dim,
            rows: plan.rows,
            values: std::mem::take(&mut grad),
        };
        let (reduced, stats) = exchange(peer, vec![gradient], Reduction::Sum)
            .expect("an exchange of equal shapes between live peers");
        let Some(Reduced::Rows {
            rows: touched,
            values,
        }) = reduced.into_iter().next()
        else {
            unreachable!("every step has lookups")
        };
        let scalars = StepScalars::new(hyper, 1e-3, step + 1);
        update_rows(&mut p, &mut m, &mut v, &values, &touched, dim, &scalars);
        grad = values;
        if step >= warmup {
            times.push(start.elapsed().as_secs_f64() * 1e3);
            bytes.push(stats.bytes() as f64);
        }
    }
    let digest = p
        .iter()
        .chain(&m)
        .chain(&v)
        .fold(0xcbf2_9ce4_8422_2325u64, |h, x| {
            (h ^ x.to_bits() as u64).wrapping_mul(0x100_0000_01b3)
        });
    (times, bytes, digest)
}

/// The report's table, one line per record.
pub fn report(records: &[PeersRecord]) -> String {
    let mut out = String::from(
        "| V | peers | engine | step ms (median) | steps/s | bytes per peer per step (median) | dense all-reduce bytes | ratio | peers agree |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in records {
        out += &format!(
            "| {:.0e} | {} | {} | {:.3} | {:.0} | {:.0} | {:.0} | {:.5} | {} |\n",
            r.rows as f64,
            r.peers,
            r.engine.name(),
            r.median_ms_step,
            1e3 / r.median_ms_step,
            r.median_bytes,
            r.dense_bytes,
            r.median_bytes / r.dense_bytes,
            if r.peers_agree { "yes" } else { "NO" },
        );
    }
    out
}

/// The command line: `--peers 1,2,3 [--rows 1e6,…] [--engines in-process,tcp] [--steps N]
/// [--warmup N] [--batch N]`.
pub fn main(args: &[String]) -> Result<String, String> {
    let mut peers = vec![1, 2, 3];
    let mut rows = vec![1_000_000usize];
    let mut engines = vec![Engine::InProcess];
    let (mut steps, mut warmup, mut batch) = (50usize, 5usize, 4096usize);
    let number = |s: &str| -> Result<usize, String> {
        s.parse::<f64>()
            .ok()
            .filter(|v| *v >= 1.0 && v.fract() == 0.0)
            .map(|v| v as usize)
            .ok_or_else(|| format!("{s:?} is not a positive whole number"))
    };
    let list = |s: &str| -> Result<Vec<usize>, String> { s.split(',').map(number).collect() };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--peers" => peers = list(value()?)?,
            "--rows" => rows = list(value()?)?,
            "--engines" => {
                engines = value()?
                    .split(',')
                    .map(Engine::from_name)
                    .collect::<Result<_, _>>()?
            }
            "--steps" => steps = number(value()?)?,
            "--warmup" => warmup = number(value()?)?,
            "--batch" => batch = number(value()?)?,
            other => {
                return Err(format!(
                    "unknown argument {other:?}; usage: cargo xtask bench --peers 1,2,3 [--rows 1e6] [--engines in-process,tcp] [--steps 50] [--warmup 5] [--batch 4096]"
                ))
            }
        }
    }
    let mut records = Vec::new();
    for &v in &rows {
        for &engine in &engines {
            for &p in &peers {
                records.push(measure(v, 64, batch, p, engine, warmup, steps));
            }
        }
    }
    Ok(report(&records))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small run: the peers agree, one peer exchanges nothing, and two peers put a header
    /// and about `k · (d + 2)` floats per step in, far below the dense table.
    #[test]
    fn peers_agree_and_exchange_rows_only() {
        let one = measure(10_000, 8, 256, 1, Engine::InProcess, 1, 3);
        assert!(one.peers_agree);
        assert_eq!(one.median_bytes, 0.0);
        let two = measure(10_000, 8, 256, 2, Engine::InProcess, 1, 3);
        assert!(two.peers_agree);
        assert!(two.median_bytes > 0.0);
        assert!(two.median_bytes <= 4.0 * (2.0 * 7.0 + 256.0 * 10.0));
        // Over TCP: the same bytes, and the same table as the in-process peers.
        let tcp = measure(10_000, 8, 256, 2, Engine::Tcp, 1, 3);
        assert!(tcp.peers_agree);
        assert_eq!(tcp.median_bytes, two.median_bytes);
        assert_eq!(
            tcp.digest, two.digest,
            "the same training over either engine"
        );
        let table = report(&[one, two, tcp]);
        assert!(table.contains("| 1e4 | 2 | in-process |"), "{table}");
        assert!(table.contains("| 1e4 | 2 | tcp |"), "{table}");
    }

    #[test]
    fn bad_arguments_are_named() {
        let err = main(&["--peers".into(), "0".into()]).unwrap_err();
        assert!(
            err.contains("\"0\" is not a positive whole number"),
            "{err}"
        );
        let err = main(&["--engines".into(), "mpi".into()]).unwrap_err();
        assert!(err.contains("unknown engine \"mpi\""), "{err}");
        let err = main(&["--frobnicate".into()]).unwrap_err();
        assert!(err.contains("unknown argument \"--frobnicate\""), "{err}");
    }
}
