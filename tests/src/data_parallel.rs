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
    let peers = peer.peers();
    let bounds = bounds(peers)[peer.rank()];
    let mut model = tower::<B>(spec, device);
    let mut optim = SparseAdamConfig::new().init::<B, SparseTower<B>>();
    let mut snapshots = Vec::new();
    for batch in &batches(spec, peers) {
        let grads = shard_grads(&model, &shard(batch, bounds), 1.0, device);
        let (grads, stats) =
            all_reduce_grads(grads, &model, peer, reduction).expect("no peer fails");
        assert_eq!(stats.calls, 2, "a header and a payload");
        model = optim.step(LR, model, grads);
        snapshots.push(snapshot(&optim, &model));
    }
    snapshots
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
