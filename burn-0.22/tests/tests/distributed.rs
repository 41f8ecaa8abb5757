//! Data-parallel training on the 0.2 line: P peers (threads of one process, each with a model
//! of its own) on shards of each batch, their gradients reduced by `all_reduce_grads`, against
//! one process on the whole batch; Burn 0.22's `ModuleOptimizer` and this crate's
//! `SparseAdamOptimizer` both take the reduced gradients.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::nn::{Linear, LinearConfig};
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Int, Tensor, TensorData};
use burn_sparse_adam::distributed::{
    AllReduce, ExchangeError, InProcessGroup, InProcessPeer, Reduction, TcpPeer, all_reduce_grads,
};
use burn_sparse_adam::{
    Error, SparseAdamConfig, SparseAdamOptimizer, SparseEmbedding, SparseEmbeddingConfig,
    collect_grads,
};
use burn_sparse_adam_tests::{
    Runner, assert_close, device, module_optimizer_states, on_flex, set_params, values,
};

const N: usize = 12;
const D: usize = 3;
const D_OUT: usize = 2;
const SEQ: usize = 2;
const PADDING: usize = 0;
/// A row every non-empty shard looks up.
const SHARED_ROW: i64 = 5;
const LR: f64 = 0.05;

#[derive(Module, Debug)]
struct Tower {
    table: SparseEmbedding,
    head: Linear,
}

impl Tower {
    /// A model with the given parameters (table, head weight, head bias): each peer builds
    /// its own, as clones would share the table's row gradients.
    fn new(params: &[Vec<f32>], device: &Device) -> Self {
        let tower = Tower {
            table: SparseEmbeddingConfig::new(N, D)
                .with_padding_idx(Some(PADDING))
                .init(device),
            head: LinearConfig::new(D, D_OUT).init(device),
        };
        set_params(tower, params.to_vec())
    }

    /// `scale · Σ head(table(ids)) · coefficients`.
    fn loss(&self, batch: &Batch, scale: f32, device: &Device) -> Tensor<1> {
        let rows = batch.rows();
        let ids =
            Tensor::<2, Int>::from_data(TensorData::new(batch.ids.clone(), [rows, SEQ]), device);
        let coefficients = Tensor::<3>::from_data(
            TensorData::new(batch.coefficients.clone(), [rows, SEQ, D_OUT]),
            device,
        );
        (self.head.forward(self.table.forward(ids)) * coefficients)
            .sum()
            .mul_scalar(scale)
    }
}

/// A small deterministic generator (xorshift), so that every peer sees the same batches.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Uniform in `[-1, 1)`.
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

/// The initial parameters: a random table whose `padding_idx` row is zero (as its config
/// makes it), a random head.
fn initial_params() -> Vec<Vec<f32>> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut table: Vec<f32> = (0..N * D).map(|_| rng.unit()).collect();
    table[PADDING * D..(PADDING + 1) * D].fill(0.0);
    let weight = (0..D * D_OUT).map(|_| rng.unit()).collect();
    let bias = (0..D_OUT).map(|_| rng.unit()).collect();
    vec![table, weight, bias]
}

/// `rows × SEQ` lookups and their `[rows, SEQ, D_OUT]` coefficients.
#[derive(Clone, Debug)]
struct Batch {
    ids: Vec<i64>,
    coefficients: Vec<f32>,
}

impl Batch {
    fn rows(&self) -> usize {
        self.ids.len() / SEQ
    }

    /// Rows `lo..hi`.
    fn shard(&self, (lo, hi): (usize, usize)) -> Batch {
        Batch {
            ids: self.ids[lo * SEQ..hi * SEQ].to_vec(),
            coefficients: self.coefficients[lo * SEQ * D_OUT..hi * SEQ * D_OUT].to_vec(),
        }
    }
}

/// Each peer's rows of a 6-row batch: with 3 peers the last shard is empty.
fn bounds(peers: usize) -> Vec<(usize, usize)> {
    match peers {
        2 => vec![(0, 3), (3, 6)],
        3 => vec![(0, 4), (4, 6), (6, 6)],
        _ => unreachable!(),
    }
}

/// Three batches of 6 × 2 lookups, each with `padding_idx` and a row every non-empty shard
/// looks up (the others are random: rows one peer touches, rows several do).
fn batches(peers: usize) -> Vec<Batch> {
    let mut rng = Rng(7 + peers as u64);
    (0..3)
        .map(|_| {
            let mut ids: Vec<i64> = (0..6 * SEQ).map(|_| rng.below(N) as i64).collect();
            for (lo, hi) in bounds(peers) {
                if lo < hi {
                    ids[lo * SEQ] = SHARED_ROW;
                }
            }
            ids[3] = PADDING as i64;
            let coefficients = (0..6 * SEQ * D_OUT).map(|_| rng.unit()).collect();
            Batch { ids, coefficients }
        })
        .collect()
}

/// The gradients of a shard (none for an empty shard: it runs no backward pass).
fn shard_grads(model: &Tower, batch: &Batch, scale: f32, device: &Device) -> GradientsParams {
    if batch.ids.is_empty() {
        return GradientsParams::new();
    }
    collect_grads(model.loss(batch, scale, device).backward(), model)
}

/// A peer's whole-model optimizer: either of the crate's two.
enum Optim {
    Ours(SparseAdamOptimizer),
    Burn(ModuleOptimizer),
}

/// Every parameter's values, and its optimizer state `(step, exp_avg, exp_avg_sq)`.
type Snapshot = (Vec<Vec<f32>>, Vec<Option<(usize, Vec<f32>, Vec<f32>)>>);

impl Optim {
    fn new(runner: Runner) -> Self {
        match runner {
            Runner::SparseAdamOptimizer => Optim::Ours(SparseAdamConfig::new().init_optimizer()),
            Runner::ModuleOptimizer => Optim::Burn(SparseAdamConfig::new().init()),
        }
    }

    fn step(&mut self, model: Tower, grads: GradientsParams) -> Tower {
        match self {
            Optim::Ours(optim) => optim.step(LR, model, grads),
            Optim::Burn(optim) => optim.step(LR, model, grads),
        }
    }

    fn snapshot(&self, model: &Tower) -> Snapshot {
        let bias = model.head.bias.as_ref().expect("a bias");
        let params = vec![
            values(model.table.weight.val()),
            values(model.head.weight.val()),
            values(bias.val()),
        ];
        let states = match self {
            Optim::Ours(optim) => {
                let read = |s: burn_sparse_adam::SparseAdamState<2>| {
                    (s.step, values(s.exp_avg), values(s.exp_avg_sq))
                };
                vec![
                    optim.state::<2>(model.table.weight.id).map(read),
                    optim.state::<2>(model.head.weight.id).map(read),
                    optim
                        .state::<1>(bias.id)
                        .map(|s| (s.step, values(s.exp_avg), values(s.exp_avg_sq))),
                ]
            }
            Optim::Burn(optim) => {
                let mut states = module_optimizer_states(optim);
                [model.table.weight.id, model.head.weight.id, bias.id]
                    .into_iter()
                    .map(|id| states.remove(&id.val()))
                    .collect()
            }
        };
        (params, states)
    }
}

/// Runs `f(peer)` on every peer of a new group, each in its own thread.
fn on_peers<T: Send>(
    peers: usize,
    timeout: Duration,
    f: impl Fn(InProcessPeer) -> T + Sync,
) -> Vec<std::thread::Result<T>> {
    std::thread::scope(|s| {
        let handles: Vec<_> = InProcessGroup::new(peers, timeout)
            .into_iter()
            .map(|peer| {
                let f = &f;
                s.spawn(move || f(peer))
            })
            .collect();
        handles.into_iter().map(|h| h.join()).collect()
    })
}

/// The engine of a test's peers.
#[derive(Debug, Clone, Copy)]
enum Engine {
    /// [`InProcessGroup`].
    InProcess,
    /// [`TcpPeer`]s on the loopback, one per thread (the same sockets and protocol as
    /// between processes).
    Tcp,
}

/// A peer of either engine.
enum Peer {
    InProcess(InProcessPeer),
    Tcp(TcpPeer),
}

impl Peer {
    fn engine(&mut self) -> &mut dyn AllReduce {
        match self {
            Peer::InProcess(peer) => peer,
            Peer::Tcp(peer) => peer,
        }
    }

    fn finish(self) {
        if let Peer::InProcess(peer) = self {
            peer.finish();
        }
    }
}

/// Runs `f(peer)` on every peer of a new group of `engine`, each in its own thread (where a
/// TCP peer joins its group).
fn on_engine_peers<T: Send>(
    engine: Engine,
    peers: usize,
    timeout: Duration,
    f: impl Fn(Peer) -> T + Sync,
) -> Vec<std::thread::Result<T>> {
    if let Engine::InProcess = engine {
        return on_peers(peers, timeout, |peer| f(Peer::InProcess(peer)));
    }
    let group = TcpPeer::loopback(peers, timeout).expect("the group forms");
    std::thread::scope(|s| {
        let handles: Vec<_> = group
            .into_iter()
            .map(|peer| {
                let f = &f;
                s.spawn(move || f(Peer::Tcp(peer)))
            })
            .collect();
        handles.into_iter().map(|h| h.join()).collect()
    })
}

fn assert_snapshots_close(actual: &Snapshot, expected: &Snapshot, what: &str) {
    for (i, (a, e)) in actual.0.iter().zip(&expected.0).enumerate() {
        assert_close(a, e, &format!("{what}: parameter {i}"));
    }
    for (i, (a, e)) in actual.1.iter().zip(&expected.1).enumerate() {
        let (a, e) = (a.as_ref().expect("a state"), e.as_ref().expect("a state"));
        assert_eq!(a.0, e.0, "{what}: parameter {i}'s step count");
        assert_close(&a.1, &e.1, &format!("{what}: parameter {i}'s exp_avg"));
        assert_close(&a.2, &e.2, &format!("{what}: parameter {i}'s exp_avg_sq"));
    }
}

fn bits(snapshot: &Snapshot) -> Vec<Vec<u32>> {
    let params = snapshot.0.iter();
    let states = snapshot.1.iter().flatten().flat_map(|s| [&s.1, &s.2]);
    params
        .chain(states)
        .map(|v| v.iter().map(|x| x.to_bits()).collect())
        .collect()
}

/// P = 2 and 3 peers, under both reductions, after every step: every peer holds the same
/// model and optimizer state bit for bit, and those of one process on the whole batch within
/// the fixtures' tolerance (not bit for bit: one process sums each row's lookups in batch
/// order, the peers sum their shards' sums in rank order). Covers a row every peer touches,
/// rows one peer touches, `padding_idx` (never updated) and, with 3 peers, an empty shard.
fn peers_match_one_process(peers: usize, reduction: Reduction, runner: Runner, engine: Engine) {
    let device = device();
    let init = initial_params();
    let batches = batches(peers);
    let scale = match reduction {
        Reduction::Sum => 1.0,
        Reduction::Mean => 1.0 / peers as f32,
    };

    let mut model = Tower::new(&init, &device);
    let mut optim = Optim::new(runner);
    let mut expected = Vec::new();
    for batch in &batches {
        let grads = shard_grads(&model, batch, scale, &device);
        model = optim.step(model, grads);
        expected.push(optim.snapshot(&model));
    }

    let results = on_engine_peers(engine, peers, Duration::from_secs(120), |mut peer| {
        let mut model = Tower::new(&init, &device);
        let mut optim = Optim::new(runner);
        let bounds = bounds(peers)[peer.engine().rank()];
        let mut snapshots = Vec::new();
        for batch in &batches {
            let grads = shard_grads(&model, &batch.shard(bounds), 1.0, &device);
            let (grads, stats) =
                all_reduce_grads(grads, &model, peer.engine(), reduction).expect("no peer fails");
            assert_eq!(stats.calls, 2, "a header and a payload");
            model = optim.step(model, grads);
            snapshots.push(optim.snapshot(&model));
        }
        peer.finish();
        snapshots
    });
    let results: Vec<Vec<Snapshot>> = results.into_iter().map(|r| r.unwrap()).collect();
    for (step, expected) in expected.iter().enumerate() {
        for (rank, snapshots) in results.iter().enumerate() {
            let what = format!(
                "{peers} peers ({engine:?}), {reduction:?}, {runner:?}, peer {rank}, step {step}"
            );
            assert_snapshots_close(&snapshots[step], expected, &what);
            assert_eq!(
                bits(&snapshots[step]),
                bits(&results[0][step]),
                "{what}: peers differ"
            );
        }
        let table = &results[0][step].0[0];
        assert_eq!(
            &table[PADDING * D..(PADDING + 1) * D],
            &init[0][PADDING * D..(PADDING + 1) * D],
            "padding_idx never moves"
        );
        let shared = SHARED_ROW as usize * D;
        assert_ne!(&table[shared..shared + D], &init[0][shared..shared + D]);
    }
}

#[test]
fn two_peers_sum_as_one_process() {
    peers_match_one_process(
        2,
        Reduction::Sum,
        Runner::SparseAdamOptimizer,
        Engine::InProcess,
    );
}

#[test]
fn three_peers_with_an_empty_shard_sum_as_one_process() {
    peers_match_one_process(
        3,
        Reduction::Sum,
        Runner::SparseAdamOptimizer,
        Engine::InProcess,
    );
}

#[test]
fn two_peers_average_as_one_process_under_module_optimizer() {
    peers_match_one_process(
        2,
        Reduction::Mean,
        Runner::ModuleOptimizer,
        Engine::InProcess,
    );
}

#[test]
fn three_peers_average_as_one_process_under_module_optimizer() {
    peers_match_one_process(
        3,
        Reduction::Mean,
        Runner::ModuleOptimizer,
        Engine::InProcess,
    );
}

/// The same over `TcpPeer`s (the engine for processes) on the loopback.
#[test]
fn two_tcp_peers_sum_as_one_process() {
    peers_match_one_process(2, Reduction::Sum, Runner::SparseAdamOptimizer, Engine::Tcp);
}

#[test]
fn three_tcp_peers_with_an_empty_shard_average_as_one_process_under_module_optimizer() {
    peers_match_one_process(3, Reduction::Mean, Runner::ModuleOptimizer, Engine::Tcp);
}

/// What a hand-written engine that all-reduces each registered gradient of a
/// `GradientsParams` as a dense tensor does (Burn 0.21's `GradientsParams::all_reduce`; Burn
/// 0.22 has none), over the same in-process group: a table's gradient is a marker, so
/// summing it only counts backward passes, and each peer applies its own rows. The peers'
/// tables drift apart; `all_reduce_grads` is why they don't. (The 0.1 line tags its markers
/// and refuses such a step; this line does not yet.)
#[test]
fn reducing_markers_leaves_each_peer_with_its_own_rows() {
    let device = device();
    let init = initial_params();
    let batch = batches(2).remove(0);
    let results = on_peers(2, Duration::from_secs(120), |mut peer| {
        let mut model = Tower::new(&init, &device);
        let mut optim = Optim::new(Runner::SparseAdamOptimizer);
        let shard = batch.shard(bounds(2)[peer.rank()]);
        let mut grads = shard_grads(&model, &shard, 1.0, &device);
        model.visit(&mut DenseAllReduce {
            grads: &mut grads,
            peer: &mut peer,
        });
        model = optim.step(model, grads);
        peer.finish();
        values(model.table.weight.val())
    });
    let tables: Vec<Vec<f32>> = results.into_iter().map(|r| r.unwrap()).collect();
    assert_ne!(tables[0], tables[1], "each peer stepped its own rows only");
}

/// Every registered gradient all-reduced as it is, the way a dense engine does.
struct DenseAllReduce<'a> {
    grads: &'a mut GradientsParams,
    peer: &'a mut InProcessPeer,
}

impl ModuleVisitor for DenseAllReduce<'_> {
    fn visit_float<const R: usize>(&mut self, param: &Param<Tensor<R>>) {
        let Some(grad) = self.grads.remove::<R>(param.id) else {
            return;
        };
        let (shape, device) = (grad.shape(), grad.device());
        let mut sum = values(grad);
        self.peer.all_reduce_sum(&mut sum).expect("same shapes");
        let sum = Tensor::<R>::from_data(TensorData::new(sum, shape), &device);
        self.grads.register(param.id, sum);
    }
}

/// A peer that dies mid-step (its thread panics after its backward pass, before the
/// exchange) ends the others' step at once with an error naming it, and leaves their models
/// and optimizer states as they were after the last good step.
#[test]
fn a_peer_that_dies_mid_step_fails_the_others_without_a_change() {
    let device = device();
    let init = initial_params();
    let batches = batches(3);
    let start = Instant::now();
    let results = on_peers(3, Duration::from_secs(120), |mut peer| {
        let mut model = Tower::new(&init, &device);
        let mut optim = Optim::new(Runner::SparseAdamOptimizer);
        let bounds = bounds(3)[peer.rank()];
        for (step, batch) in batches.iter().enumerate() {
            let grads = shard_grads(&model, &batch.shard(bounds), 1.0, &device);
            if step == 1 && peer.rank() == 1 {
                panic!("peer 1 dies");
            }
            let before = optim.snapshot(&model);
            match all_reduce_grads(grads, &model, &mut peer, Reduction::Sum) {
                Ok((grads, _)) => model = optim.step(model, grads),
                Err(error) => return (step, error, before, optim.snapshot(&model)),
            }
        }
        unreachable!("the exchange of step 1 fails")
    });
    assert!(
        start.elapsed() < Duration::from_secs(60),
        "no peer waited for its timeout"
    );
    assert!(results[1].is_err(), "peer 1 panicked");
    for rank in [0, 2] {
        let (step, error, before, after) = results[rank].as_ref().unwrap();
        assert_eq!(*step, 1);
        assert!(
            matches!(error, Error::Exchange(ExchangeError::PeerFailed { .. }))
                && error.to_string().contains("peer 1 panicked"),
            "{error}"
        );
        assert_eq!(bits(after), bits(before), "peer {rank}: nothing changed");
    }
}

/// A peer that stops answering (it neither exchanges nor fails) ends the others' step with
/// a timeout error after the group's timeout, not a hang, and nothing changes.
#[test]
fn a_peer_that_stops_answering_times_the_others_out_without_a_change() {
    let device = device();
    let init = initial_params();
    let batch = batches(2).remove(0);
    let timeout = Duration::from_millis(500);
    let (release, parked) = std::sync::mpsc::channel::<()>();
    let parked = Mutex::new(parked);
    let start = Instant::now();
    let results = on_peers(2, timeout, |mut peer| {
        if peer.rank() == 1 {
            // Silent until peer 0 has given up, then gone.
            let _ = parked.lock().unwrap().recv_timeout(Duration::from_secs(60));
            return None;
        }
        let model = Tower::new(&init, &device);
        let optim = Optim::new(Runner::SparseAdamOptimizer);
        let grads = shard_grads(&model, &batch.shard(bounds(2)[0]), 1.0, &device);
        let before = optim.snapshot(&model);
        let error = all_reduce_grads(grads, &model, &mut peer, Reduction::Sum)
            .map(|_| ())
            .expect_err("peer 1 never answers");
        let waited = start.elapsed();
        release.send(()).unwrap();
        Some((error, waited, before, optim.snapshot(&model)))
    });
    let (error, waited, before, after) = results[0].as_ref().unwrap().as_ref().unwrap();
    assert!(
        matches!(error, Error::Exchange(ExchangeError::Timeout { .. })),
        "{error}"
    );
    assert!(
        *waited >= timeout && *waited < Duration::from_secs(60),
        "gave up after {waited:?}"
    );
    assert_eq!(bits(after), bits(before), "nothing changed");
}

/// Two peers that share a table (one model cloned into both threads) are refused: one peer
/// names the shared table, the other fails its exchange; neither steps.
#[test]
fn peers_sharing_a_table_are_refused() {
    let device = device();
    let model = Tower::new(&initial_params(), &device);
    let batch = batches(2).remove(0);
    // Both clones' backward passes run here, one after the other: what is tested is the
    // exchange.
    let work: Vec<_> = bounds(2)
        .into_iter()
        .map(|bounds| {
            let clone = model.clone();
            let grads = shard_grads(&clone, &batch.shard(bounds), 1.0, &device);
            Some((clone, grads))
        })
        .collect();
    let work = Mutex::new(work);
    let results = on_peers(2, Duration::from_secs(120), |mut peer| {
        let (model, grads) = work.lock().unwrap()[peer.rank()].take().unwrap();
        all_reduce_grads(grads, &model, &mut peer, Reduction::Sum).map(|_| ())
    });
    let errors: Vec<Error> = results
        .into_iter()
        .map(|r| r.unwrap().expect_err("refused"))
        .collect();
    let shared: Vec<&Error> = errors
        .iter()
        .filter(|e| matches!(e, Error::SharedTable { param } if *param == model.table.weight.id))
        .collect();
    assert_eq!(shared.len(), 1, "{errors:?}");
    assert!(
        shared[0]
            .to_string()
            .contains("shared with another data-parallel peer"),
        "{errors:?}"
    );
}

/// burn-train 0.22's DDP strategy registers every parameter for Burn's distributed gradient
/// sync (its `ModuleSharder` calls `Tensor::set_distributed`), which all-reduces gradients
/// inside the backward pass, where a table's rows never are. The first `collect_grads` names
/// the problem instead of letting each device apply its own rows.
#[test]
fn a_table_under_burn_distributed_sync_is_refused_at_the_first_collection() {
    struct Sharder;
    impl ModuleMapper for Sharder {
        fn map_float<const R: usize>(&mut self, param: Param<Tensor<R>>) -> Param<Tensor<R>> {
            let (id, tensor, mapper) = param.consume();
            Param::from_mapped_value(id, tensor.set_distributed(id), mapper)
        }
    }

    if on_flex() {
        // burn-dispatch marks only Cube and Remote tensors (`set_distributed` panics on
        // flex), so there is no distributed sync to refuse on flex: this runs in the wgpu pass.
        eprintln!("skipped on flex: Burn 0.22 cannot mark flex tensors for distributed sync");
        return;
    }
    let device = device();
    let model = Tower::new(&initial_params(), &device).map(&mut Sharder);
    assert!(model.table.weight.val().is_distributed());
    let batch = batches(2).remove(0);
    let grads = model.loss(&batch, 1.0, &device).backward();
    let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        collect_grads(grads, &model)
    }))
    .expect_err("refused");
    let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    let expected = Error::TableUnderDistributedSync {
        param: model.table.weight.id,
    };
    assert_eq!(message, expected.to_string());
    assert!(message.contains("all_reduce_grads"), "{message}");
}
