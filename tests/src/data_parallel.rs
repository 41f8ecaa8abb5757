//! The data-parallel equivalence scenario of the suite's `distributed` tests, whatever the
//! engine: a small tower trained on three batches, each split into one shard per peer,
//! against one process on the whole batches.

use burn::optim::{GradientsParams, Optimizer};
use burn::tensor::backend::AutodiffBackend;
use burn_sparse_adam::distributed::{all_reduce_grads, AllReduce, Reduction};
use burn_sparse_adam::SparseAdamConfig;

use crate::{
    assert_params_bits_eq, assert_params_close, assert_states_bits_eq, assert_states_close,
    snapshot, Batch, Rng, Snapshot, SparseTower, Tower, TowerSpec,
};

/// The table's rows.
pub const N: usize = 12;
/// The table's `padding_idx`.
pub const PADDING: usize = 0;
/// A row every non-empty shard looks up.
pub const SHARED_ROW: i64 = 5;
/// The learning rate of every step.
pub const LR: f64 = 0.05;

/// The tower every peer and the single process start from.
pub fn spec() -> TowerSpec {
    TowerSpec::random(N, 3, 2, 11)
}

/// A model of its own (clones would share the table's row gradients).
pub fn tower<B: AutodiffBackend>(spec: &TowerSpec, device: &B::Device) -> SparseTower<B> {
    spec.sparse_padded(Some(PADDING), device)
}

/// Rows `lo..hi` of a batch.
pub fn shard(batch: &Batch, (lo, hi): (usize, usize)) -> Batch {
    let seq = batch.shape[1];
    let d_out = batch.coefficients.len() / batch.indices.len();
    Batch {
        indices: batch.indices[lo * seq..hi * seq].to_vec(),
        shape: [hi - lo, seq],
        coefficients: batch.coefficients[lo * seq * d_out..hi * seq * d_out].to_vec(),
    }
}

/// Each peer's rows of a 6-row batch: with 3 peers the last shard is empty.
///
/// # Panics
///
/// For other peer counts than 2 and 3.
pub fn bounds(peers: usize) -> Vec<(usize, usize)> {
    match peers {
        2 => vec![(0, 3), (3, 6)],
        3 => vec![(0, 4), (4, 6), (6, 6)],
        _ => panic!("the scenario has shards for 2 or 3 peers, not {peers}"),
    }
}

/// Three batches of 6 × 2 lookups, each with `padding_idx` and a row every non-empty shard
/// looks up (the others are random: rows one peer touches, rows several do).
pub fn batches(spec: &TowerSpec, peers: usize) -> Vec<Batch> {
    let mut rng = Rng::new(7 + peers as u64);
    (0..3)
        .map(|_| {
            let mut batch = Batch::random(&mut rng, N, 6, 2, spec.d_out);
            for (lo, hi) in bounds(peers) {
                if lo < hi {
                    batch.indices[lo * 2] = SHARED_ROW;
                }
            }
            batch.indices[3] = PADDING as i64;
            batch
        })
        .collect()
}

/// The gradients of a shard scaled by `scale` (none for an empty shard: it runs no backward
/// pass).
pub fn shard_grads<B: AutodiffBackend>(
    model: &SparseTower<B>,
    batch: &Batch,
    scale: f32,
    device: &B::Device,
) -> GradientsParams {
    if batch.indices.is_empty() {
        return GradientsParams::new();
    }
    let loss = batch.loss(model, device).mul_scalar(scale);
    model.grads(loss.backward())
}

/// One process on the whole batches, the loss scaled as `reduction` over `peers` shards
/// implies: the model and optimizer state after each step.
pub fn one_process<B: AutodiffBackend>(
    spec: &TowerSpec,
    peers: usize,
    reduction: Reduction,
    device: &B::Device,
) -> Vec<Snapshot> {
    let scale = match reduction {
        Reduction::Sum => 1.0,
        Reduction::Mean => 1.0 / peers as f32,
    };
    let mut model = tower::<B>(spec, device);
    let mut optim = SparseAdamConfig::new().init::<B, SparseTower<B>>();
    let mut snapshots = Vec::new();
    for batch in &batches(spec, peers) {
        let grads = shard_grads(&model, batch, scale, device);
        model = optim.step(LR, model, grads);
        snapshots.push(snapshot(&optim, &model));
    }
    snapshots
}

/// One peer's run: its shard of each batch, its gradients reduced through `peer`, the model
/// and optimizer state after each step.
///
/// # Panics
///
/// When an exchange fails.
pub fn peer_run<B: AutodiffBackend, P: AllReduce + ?Sized>(
    peer: &mut P,
    spec: &TowerSpec,
    reduction: Reduction,
    device: &B::Device,
) -> Vec<Snapshot> {
    let run = peer_run_until::<B, P>(peer, spec, reduction, device, |_| {});
    if let Some((error, _)) = run.failed {
        panic!("no peer fails: {error}");
    }
    run.snapshots
}

/// What [`peer_run_until`] saw.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PeerRun {
    /// The model and optimizer state after each step that completed.
    #[serde(with = "bits")]
    pub snapshots: Vec<Snapshot>,
    /// The exchange's error that ended the run, and the model and optimizer state this peer
    /// held after it.
    #[serde(with = "bits::failed")]
    pub failed: Option<(String, Snapshot)>,
}

/// [`peer_run`] that calls `before_exchange(step)` before each step's exchange (a test can
/// end the process there) and stops at the first failed exchange, keeping its error.
pub fn peer_run_until<B: AutodiffBackend, P: AllReduce + ?Sized>(
    peer: &mut P,
    spec: &TowerSpec,
    reduction: Reduction,
    device: &B::Device,
    mut before_exchange: impl FnMut(usize),
) -> PeerRun {
    let peers = peer.peers();
    let bounds = bounds(peers)[peer.rank()];
    let mut model = tower::<B>(spec, device);
    let mut optim = SparseAdamConfig::new().init::<B, SparseTower<B>>();
    let mut snapshots = Vec::new();
    for (step, batch) in batches(spec, peers).iter().enumerate() {
        let grads = shard_grads(&model, &shard(batch, bounds), 1.0, device);
        before_exchange(step);
        let (grads, stats) = match all_reduce_grads(grads, &model, peer, reduction) {
            Ok(reduced) => reduced,
            Err(error) => {
                let failed = Some((error.to_string(), snapshot(&optim, &model)));
                return PeerRun { snapshots, failed };
            }
        };
        assert_eq!(stats.calls, 2, "a header and a payload");
        model = optim.step(LR, model, grads);
        snapshots.push(snapshot(&optim, &model));
    }
    PeerRun {
        snapshots,
        failed: None,
    }
}

/// Snapshots through serde as the bits of their numbers (a decimal `f32` read back through
/// `f64` could round twice).
mod bits {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::Snapshot;

    type Bits = (Vec<Vec<u32>>, Vec<Option<(usize, Vec<u32>, Vec<u32>)>>);

    fn to_bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    fn from_bits(v: Vec<u32>) -> Vec<f32> {
        v.into_iter().map(f32::from_bits).collect()
    }

    pub fn encode((params, states): &Snapshot) -> Bits {
        let params = params.iter().map(|p| to_bits(p)).collect();
        let states = states
            .iter()
            .map(|s| s.as_ref().map(|(t, m, v)| (*t, to_bits(m), to_bits(v))))
            .collect();
        (params, states)
    }

    pub fn decode((params, states): Bits) -> Snapshot {
        let params = params.into_iter().map(from_bits).collect();
        let states = states
            .into_iter()
            .map(|s| s.map(|(t, m, v)| (t, from_bits(m), from_bits(v))))
            .collect();
        (params, states)
    }

    pub fn serialize<S: Serializer>(snapshots: &[Snapshot], s: S) -> Result<S::Ok, S::Error> {
        snapshots
            .iter()
            .map(encode)
            .collect::<Vec<_>>()
            .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Snapshot>, D::Error> {
        let bits = Vec::<Bits>::deserialize(d)?;
        Ok(bits.into_iter().map(decode).collect())
    }

    pub mod failed {
        use super::*;

        pub fn serialize<S: Serializer>(
            failed: &Option<(String, Snapshot)>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            failed
                .as_ref()
                .map(|(e, snap)| (e, encode(snap)))
                .serialize(s)
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<(String, Snapshot)>, D::Error> {
            let failed = Option::<(String, Bits)>::deserialize(d)?;
            Ok(failed.map(|(e, bits)| (e, decode(bits))))
        }
    }
}

/// Asserts that every peer's run (`runs[rank]`) holds, after every step, the model and
/// optimizer state of one process (`expected`) within the fixtures' tolerance, and the same
/// bits as peer 0's; that `padding_idx` never moves and the shared row does.
///
/// Not bit for bit against one process: it sums each row's lookups in batch order, the
/// peers sum their shards' sums in rank order.
pub fn assert_runs_match(
    runs: &[Vec<Snapshot>],
    expected: &[Snapshot],
    spec: &TowerSpec,
    what: &str,
) {
    for (step, expected) in expected.iter().enumerate() {
        for (rank, run) in runs.iter().enumerate() {
            let (params, states) = &run[step];
            let what = format!("{what}, peer {rank}, step {step}");
            assert_params_close(params, &expected.0, &what);
            assert_states_close(states, &expected.1, &what);
            assert_params_bits_eq(params, &runs[0][step].0, &what);
            assert_states_bits_eq(states, &runs[0][step].1, &what);
        }
        let table = &runs[0][step].0[2];
        let d = spec.d;
        let padding = PADDING * d;
        assert_eq!(
            &table[padding..padding + d],
            &spec.table[padding..padding + d],
            "{what}: padding_idx never moves"
        );
        let shared = SHARED_ROW as usize * d;
        assert_ne!(&table[shared..shared + d], &spec.table[shared..shared + d]);
    }
}
