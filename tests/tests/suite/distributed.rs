//! Data-parallel training: P peers (threads of one process, or processes over TCP, each with
//! a model of its own) on shards of each batch, their gradients reduced by
//! `all_reduce_grads`, against one process on the whole batch.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use burn::module::Module;
use burn::optim::Optimizer;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::backend::Backend;
use burn_sparse_adam::distributed::burn_collective::{
    finish_collective, register, reset_collective, CollectiveConfig, PeerId, ReduceOperation,
};
use burn_sparse_adam::distributed::{
    all_reduce_grads, AllReduce, CollectivePeer, ExchangeError, InProcessGroup, InProcessPeer,
    Reduction, TcpPeer,
};
use burn_sparse_adam::{on_test_backend, Error, SparseAdamConfig};
use burn_sparse_adam_tests::data_parallel::{
    assert_runs_match, batches, bounds, one_process, peer_run, shard, shard_grads, spec, tower,
    PeerRun, LR,
};
use burn_sparse_adam_tests::{
    assert_params_bits_eq, assert_states_bits_eq, param_values, snapshot, with_test_backend,
    Snapshot, SparseTower,
};

/// A peer's engine, as the tests build and end it.
trait Peer: AllReduce + Send {
    /// Leaves the group once its exchanges are done.
    fn done(self);
    /// Waits at most `timeout` from now on, where the engine's timeout can change.
    fn set_timeout(&mut self, _timeout: Duration) {}
}

impl Peer for InProcessPeer {
    fn done(self) {
        self.finish();
    }
}

/// What makes each rank's engine, on that rank's thread: a closure `Fn(usize) -> impl Peer`.
trait Engines: Sync {
    type Peer: Peer;
    fn peer(&self, rank: usize) -> Self::Peer;
}

impl<P: Peer, F: Fn(usize) -> P + Sync> Engines for F {
    type Peer = P;
    fn peer(&self, rank: usize) -> P {
        self(rank)
    }
}

/// The peers of a new in-process group, each taken once by its rank's thread.
fn in_process(peers: usize) -> impl Engines<Peer = InProcessPeer> {
    let group: Vec<_> = InProcessGroup::new(peers, Duration::from_secs(120))
        .into_iter()
        .map(Some)
        .collect();
    let group = Mutex::new(group);
    move |rank: usize| -> InProcessPeer {
        group.lock().unwrap()[rank]
            .take()
            .expect("one thread per rank")
    }
}

/// Runs `f(peer, device)` for each of `peers` ranks on a thread of its own, its engine made
/// there by `engines`.
fn on_peers<B: AutodiffBackend, E: Engines, T: Send>(
    peers: usize,
    engines: E,
    device: &B::Device,
    f: impl Fn(E::Peer, &B::Device) -> T + Sync,
) -> Vec<std::thread::Result<T>> {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..peers)
            .map(|rank| {
                let (f, engines, device) = (&f, &engines, device.clone());
                s.spawn(move || f(engines.peer(rank), &device))
            })
            .collect();
        handles.into_iter().map(|h| h.join()).collect()
    })
}

/// P = 2 and 3 peers, under both reductions, after every step: every peer holds the same
/// model and optimizer state bit for bit, and those of one process on the whole batch within
/// the fixtures' tolerance (not bit for bit: one process sums each row's lookups in batch
/// order, the peers sum their shards' sums in rank order). Covers a row every peer touches,
/// rows one peer touches, `padding_idx` (never updated) and, with 3 peers, an empty shard.
/// `engines` gives each peer its engine, on the peer's own thread.
fn peers_match_one_process<B: AutodiffBackend>(
    device: &B::Device,
    peers: usize,
    reduction: Reduction,
    engines: impl Engines,
) {
    let spec = spec();
    let expected = one_process::<B>(&spec, peers, reduction, device);
    let runs = on_peers::<B, _, _>(peers, engines, device, |mut peer, device| {
        let run = peer_run::<B, _>(&mut peer, &spec, reduction, device);
        peer.done();
        run
    });
    let runs: Vec<Vec<Snapshot>> = runs.into_iter().map(|r| r.unwrap()).collect();
    assert_runs_match(
        &runs,
        &expected,
        &spec,
        &format!("{peers} peers, {reduction:?}"),
    );
}

#[test]
fn two_peers_sum_as_one_process() {
    with_test_backend!(peers_match_one_process(2, Reduction::Sum, in_process(2)));
}

#[test]
fn three_peers_with_an_empty_shard_sum_as_one_process() {
    with_test_backend!(peers_match_one_process(3, Reduction::Sum, in_process(3)));
}

#[test]
fn two_peers_average_as_one_process() {
    with_test_backend!(peers_match_one_process(2, Reduction::Mean, in_process(2)));
}

#[test]
fn three_peers_average_as_one_process() {
    with_test_backend!(peers_match_one_process(3, Reduction::Mean, in_process(3)));
}

impl Peer for TcpPeer {
    fn done(self) {}
    fn set_timeout(&mut self, timeout: Duration) {
        TcpPeer::set_timeout(self, timeout);
    }
}

/// The peers of a new TCP group on the loopback (real sockets), each taken once by its rank's
/// thread.
fn tcp(peers: usize) -> impl Engines<Peer = TcpPeer> {
    let group: Vec<_> = TcpPeer::loopback(peers, Duration::from_secs(120))
        .expect("the group forms")
        .into_iter()
        .map(Some)
        .collect();
    let group = Mutex::new(group);
    move |rank: usize| -> TcpPeer {
        group.lock().unwrap()[rank]
            .take()
            .expect("one thread per rank")
    }
}

#[test]
fn two_tcp_peers_sum_as_one_process() {
    with_test_backend!(peers_match_one_process(2, Reduction::Sum, tcp(2)));
}

#[test]
fn three_tcp_peers_with_an_empty_shard_average_as_one_process() {
    with_test_backend!(peers_match_one_process(3, Reduction::Mean, tcp(3)));
}

/// Runs `peers` processes of the `tcp-peer` binary on the loopback (rank 0 the hub, on a free
/// port it reports), with `args` after the rank, count and address, on the suite's backend;
/// returns each rank's exit status and run, and the seconds until all had ended. Their
/// output is read while they run (a full pipe would block them); a process still running
/// after 240 s is killed and fails the test.
fn tcp_processes(peers: usize, args: &[&str]) -> (Vec<(ExitStatus, Option<PeerRun>)>, f64) {
    let exe = env!("CARGO_BIN_EXE_tcp-peer");
    let spawn = |rank: usize, hub: &str| {
        Command::new(exe)
            .args([rank.to_string(), peers.to_string(), hub.to_string()])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("a peer process starts")
    };
    let drain = |pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = BufReader::new(pipe).read_to_string(&mut text);
            text
        })
    };
    let start = Instant::now();
    let mut hub = spawn(0, "127.0.0.1:0");
    let hub_stderr = drain(Box::new(hub.stderr.take().expect("rank 0's stderr")));
    let mut out = BufReader::new(hub.stdout.take().expect("rank 0's stdout"));
    let mut first = String::new();
    out.read_line(&mut first).expect("rank 0's first line");
    let address = first.trim().strip_prefix("hub ").map(str::to_string);
    let mut children = vec![(drain(Box::new(out)), hub_stderr, hub)];
    if let Some(address) = &address {
        for rank in 1..peers {
            let mut child = spawn(rank, address);
            let stdout = drain(Box::new(child.stdout.take().expect("a stdout")));
            let stderr = drain(Box::new(child.stderr.take().expect("a stderr")));
            children.push((stdout, stderr, child));
        }
    }
    let deadline = start + Duration::from_secs(240);
    while children
        .iter_mut()
        .any(|(_, _, child)| child.try_wait().expect("a child's status").is_none())
    {
        if Instant::now() > deadline {
            for (_, _, child) in &mut children {
                let _ = child.kill();
            }
            panic!("the peer processes did not finish within 240 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let ended: Vec<(ExitStatus, String, String)> = children
        .into_iter()
        .map(|(stdout, stderr, mut child)| {
            let status = child.wait().expect("a child's status");
            let stdout = stdout.join().expect("stdout");
            (status, stdout, stderr.join().expect("stderr"))
        })
        .collect();
    let seconds = start.elapsed().as_secs_f64();
    assert!(
        address.is_some(),
        "rank 0 did not report its address ({first:?}): {}",
        ended[0].2
    );
    let runs = ended
        .into_iter()
        .enumerate()
        .map(|(rank, (status, stdout, stderr))| {
            let run = stdout
                .lines()
                .find_map(|line| line.strip_prefix("run "))
                .map(|json| serde_json::from_str::<PeerRun>(json).expect("a run"));
            if run.is_none() && status.success() {
                panic!("rank {rank} reported no run: {stderr}");
            }
            (status, run)
        })
        .collect();
    (runs, seconds)
}

/// Two and three processes, each a model on its shard with a `TcpPeer` on the loopback, hold
/// after every step the model and optimizer state of one process on the whole batch (within
/// the fixtures' tolerance) and the same bits as each other: `Sum` with 2, `Mean` with 3 (one
/// shard empty), a row every peer touches, rows of one peer and `padding_idx`.
#[test]
fn two_and_three_processes_over_tcp_train_as_one_process() {
    with_test_backend!(processes_match_one_process());
}

fn processes_match_one_process<B: AutodiffBackend>(device: &B::Device) {
    let spec = spec();
    for (peers, reduction, name) in [(2, Reduction::Sum, "sum"), (3, Reduction::Mean, "mean")] {
        let (runs, _) = tcp_processes(peers, &[name]);
        let runs: Vec<Vec<Snapshot>> = runs
            .into_iter()
            .enumerate()
            .map(|(rank, (status, run))| {
                let run = run.unwrap_or_else(|| panic!("rank {rank} ended with {status}"));
                assert_eq!(run.failed, None, "rank {rank}");
                run.snapshots
            })
            .collect();
        let expected = one_process::<B>(&spec, peers, reduction, device);
        let what = format!("{peers} processes over TCP, {reduction:?}");
        assert_runs_match(&runs, &expected, &spec, &what);
    }
}

/// A process that dies in the middle of the second step (before its exchange) ends the
/// other two at once (`PeerFailed` naming it, not the 60 s timeout), and each keeps the
/// model and optimizer state it had after the first step.
#[test]
fn a_process_that_dies_mid_step_ends_the_others_unchanged() {
    with_test_backend!(process_dies_mid_step());
}

fn process_dies_mid_step<B: AutodiffBackend>(device: &B::Device) {
    let spec = spec();
    let (runs, seconds) = tcp_processes(3, &["sum", "1"]);
    let expected = one_process::<B>(&spec, 3, Reduction::Sum, device);
    assert_eq!(runs[1].0.code(), Some(3), "rank 1 exits at step 1");
    for rank in [0, 2] {
        let (status, run) = &runs[rank];
        let run = run
            .as_ref()
            .unwrap_or_else(|| panic!("rank {rank}: {status}"));
        let what = format!("rank {rank}");
        assert_eq!(run.snapshots.len(), 1, "{what}: the first step completed");
        assert_runs_match(
            std::slice::from_ref(&run.snapshots),
            &expected[..1],
            &spec,
            &what,
        );
        let (error, after) = run.failed.as_ref().expect("the second step failed");
        assert!(
            error.contains("the exchange failed on another peer")
                && error.contains("peer 1 left the group"),
            "{what}: {error}"
        );
        assert_params_bits_eq(&after.0, &run.snapshots[0].0, &what);
        assert_states_bits_eq(&after.1, &run.snapshots[0].1, &what);
    }
    // Three processes start and step in far less; a hang would reach the 60 s timeout.
    assert!(seconds < 60.0, "the peers ended after {seconds:.1} s");
}

impl<E: Backend> Peer for CollectivePeer<E> {
    fn done(self) {
        self.finish().expect("the peer leaves its group");
    }
    fn set_timeout(&mut self, timeout: Duration) {
        CollectivePeer::set_timeout(self, timeout);
    }
}

/// burn-collective's local server is one per process and backend: its tests take turns.
static COLLECTIVE: Mutex<()> = Mutex::new(());

/// The same equivalence over burn-collective 0.21, Burn's own engine: the peers are threads
/// of this process registered with its local server (summing on the test backend's inner
/// backend).
fn collective_peers_match_one_process<B: AutodiffBackend>(
    device: &B::Device,
    peers: usize,
    reduction: Reduction,
) {
    let _turn = COLLECTIVE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let engines = collective::<B>(peers, Duration::from_secs(120), device);
    peers_match_one_process::<B>(device, peers, reduction, engines);
}

/// The peers of a new burn-collective session of `peers` local peers (its server reset),
/// each registered on its own thread.
fn collective<B: AutodiffBackend>(
    peers: usize,
    timeout: Duration,
    device: &B::Device,
) -> impl Engines<Peer = CollectivePeer<B::InnerBackend>> + '_ {
    reset_collective::<B::InnerBackend>();
    let config = CollectiveConfig::default().with_num_devices(peers);
    move |rank: usize| {
        CollectivePeer::<B::InnerBackend>::register(
            rank,
            peers,
            device.clone(),
            config.clone(),
            timeout,
        )
        .expect("the peer registers")
    }
}

#[test]
fn two_collective_peers_sum_as_one_process() {
    with_test_backend!(collective_peers_match_one_process(2, Reduction::Sum));
}

#[test]
fn three_collective_peers_with_an_empty_shard_average_as_one_process() {
    with_test_backend!(collective_peers_match_one_process(3, Reduction::Mean));
}

/// Why `CollectivePeer` refuses several nodes, shown on burn-collective itself: two
/// processes on the loopback, each a node of one peer, registered with its global
/// orchestrator (a third process). The first all-reduce is exact; the second never
/// completes, on either node (burn-collective 0.21's global sync never forgets the nodes
/// that synced). If an upgrade fixes it, this test fails, and `CollectivePeer` can take
/// nodes.
#[test]
fn burn_collective_across_two_processes_all_reduces_only_once() {
    let exe = env!("CARGO_BIN_EXE_collective-node");
    let [orchestrator, data_0, data_1] = free_ports();
    let mut orchestrator_process = Command::new(exe)
        .args(["orchestrator", &orchestrator.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the orchestrator starts");
    let listening = wait_listening(orchestrator, Duration::from_secs(30));
    let nodes: Vec<_> = [data_0, data_1]
        .iter()
        .enumerate()
        .filter(|_| listening)
        .map(|(rank, data)| {
            Command::new(exe)
                .args(["node", &rank.to_string(), "2"])
                .args([orchestrator.to_string(), data.to_string()])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("a node starts")
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(180);
    let outputs: Vec<_> = nodes
        .into_iter()
        .map(|node| wait_until(node, deadline))
        .collect();
    let _ = orchestrator_process.kill();
    let _ = orchestrator_process.wait();
    assert!(listening, "the orchestrator listens on port {orchestrator}");
    for (rank, output) in outputs.iter().enumerate() {
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "node {rank} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        // burn-communication logs to stdout too.
        let lines: Vec<&str> = stdout
            .lines()
            .filter(|line| line.starts_with("all_reduce "))
            .collect();
        assert_eq!(
            lines,
            [
                "all_reduce 1: [3.0, 3.0, 3.0, 3.0]",
                "all_reduce 2: no answer within 5s"
            ],
            "node {rank}"
        );
    }
}

/// `CollectivePeer` refuses a config with nodes at registration, naming why, before
/// burn-collective is called.
#[test]
fn a_collective_peer_refuses_several_nodes() {
    let config = CollectiveConfig::default()
        .with_num_devices(1)
        .with_num_nodes(2)
        .with_global_address("ws://127.0.0.1:1".parse().unwrap())
        .with_node_address("ws://127.0.0.1:2".parse().unwrap())
        .with_data_service_port(2);
    let error = CollectivePeer::<burn::backend::NdArray>::register(
        0,
        2,
        Default::default(),
        config,
        Duration::from_secs(1),
    )
    .expect_err("refused");
    assert!(
        matches!(error, ExchangeError::Engine { rank: 0, .. })
            && error
                .to_string()
                .contains("cannot all-reduce across nodes more than once"),
        "{error}"
    );
}

/// Three distinct ports free on the loopback now.
fn free_ports() -> [u16; 3] {
    let listeners: Vec<_> = (0..3)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("a free port"))
        .collect();
    let port = |i: usize| listeners[i].local_addr().expect("an address").port();
    [port(0), port(1), port(2)]
}

/// Whether something accepts connections on `port` within `timeout`.
fn wait_listening(port: u16, timeout: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// The child's output once it exits; killed (and reported) at `deadline`.
fn wait_until(mut child: std::process::Child, deadline: Instant) -> std::process::Output {
    while child.try_wait().expect("the child's status").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let output = child.wait_with_output().expect("the child's output");
            panic!(
                "a node did not finish in time: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("the child's output")
}

/// Burn 0.21's own reduction of gradients, `GradientsParams::all_reduce` over burn-collective
/// (what burn-train's DDP strategy calls), all-reduces a table's marker, which carries no
/// rows: left alone, each peer would apply its own rows only, and the peers' tables would
/// drift apart. The step after it names the problem on every peer instead, and changes
/// nothing.
#[test]
fn burn_all_reduce_of_gradients_params_is_refused_at_the_step() {
    on_test_backend!(gradients_params_all_reduce);
}

fn gradients_params_all_reduce<B: AutodiffBackend>(device: &B::Device) {
    let _turn = COLLECTIVE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    reset_collective::<B::InnerBackend>();
    let spec = spec();
    let batch = batches(&spec, 2).remove(0);
    // burn-optim all-reduces in parameter id order: the peers' ids must agree, so every
    // peer loads one record into a model of its own. Their weights are then the same
    // autodiff leaves, through which Burn 0.21's autodiff does not support concurrent
    // backward passes: both run here, one after the other; the peers' threads all-reduce
    // and step.
    let base = tower::<B>(&spec, device);
    let work: Vec<_> = (0..2)
        .map(|rank| {
            let model = tower::<B>(&spec, device).load_record(base.clone().into_record());
            let grads = shard_grads(&model, &shard(&batch, bounds(2)[rank]), 1.0, device);
            (model, grads)
        })
        .collect();
    let config = CollectiveConfig::default().with_num_devices(2);
    let results = std::thread::scope(|s| {
        let peers: Vec<_> = (0..2u32)
            .zip(work)
            .map(|(rank, (model, grads))| {
                let config = config.clone();
                s.spawn(move || {
                    let id = PeerId(rank);
                    register::<B::InnerBackend>(id, device.clone(), config).expect("registered");
                    let grads = grads
                        .all_reduce::<B::InnerBackend>(id, ReduceOperation::Sum)
                        .expect("burn-collective all-reduces every gradient");
                    finish_collective::<B::InnerBackend>(id).expect("finished");
                    let mut optim = SparseAdamConfig::new().init::<B, SparseTower<B>>();
                    let before = param_values(&model);
                    let rejected = optim.try_step(LR, model, grads).expect_err("refused");
                    assert_eq!(param_values(&rejected.module), before, "nothing changed");
                    (rejected.error, rejected.module.table.weight.id)
                })
            })
            .collect();
        peers
            .into_iter()
            .map(|p| p.join().unwrap())
            .collect::<Vec<_>>()
    });
    for (error, table) in results {
        assert!(
            matches!(error, Error::RowGradientsReducedAsDense { param } if param == table),
            "{error}"
        );
        assert!(error.to_string().contains("all_reduce_grads"), "{error}");
    }
}

/// A peer that dies mid-step (its thread panics after its backward pass, before the
/// exchange) ends the others' step at once with an error naming it, and leaves their models
/// and optimizer states as they were after the last good step.
#[test]
fn a_peer_that_dies_mid_step_fails_the_others_without_a_change() {
    on_test_backend!(peer_dies_in_process);
}

fn peer_dies_in_process<B: AutodiffBackend>(device: &B::Device) {
    peer_dies::<B>(device, in_process(3), |error| {
        matches!(error, Error::Exchange(ExchangeError::PeerFailed { .. }))
            && error.to_string().contains("peer 1 panicked")
    });
}

/// Under burn-collective, which has no timeout nor abort of its own, the others' step ends
/// at their timeout (2 s here) with an error saying so, unchanged.
#[test]
fn a_collective_peer_that_dies_mid_step_times_the_others_out_without_a_change() {
    on_test_backend!(peer_dies_collective);
}

fn peer_dies_collective<B: AutodiffBackend>(device: &B::Device) {
    let _turn = COLLECTIVE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let start = Instant::now();
    peer_dies::<B>(
        device,
        // Registration and step 0 wait for the slowest peer's start: a long timeout for
        // them, 2 s from step 1 on.
        collective::<B>(3, Duration::from_secs(120), device),
        |error| {
            matches!(error, Error::Exchange(ExchangeError::Engine { .. }))
                && error.to_string().contains("did not complete within 2s")
        },
    );
    assert!(
        start.elapsed() >= Duration::from_secs(2),
        "the others waited for their timeout"
    );
    reset_collective::<B::InnerBackend>();
}

/// Peer 1 of 3 panics at step 1; the others' errors must satisfy `expected`, and leave
/// their models and optimizer states as they were, within 60 s. After step 0 each engine
/// waits at most 2 s where its timeout can change.
fn peer_dies<B: AutodiffBackend>(
    device: &B::Device,
    engines: impl Engines,
    expected: impl Fn(&Error) -> bool,
) {
    let spec = spec();
    let batches = batches(&spec, 3);
    let start = Instant::now();
    let results = on_peers::<B, _, _>(3, engines, device, |mut peer, device| {
        let mut model = tower::<B>(&spec, device);
        let mut optim = SparseAdamConfig::new().init::<B, SparseTower<B>>();
        let bounds = bounds(3)[peer.rank()];
        for (step, batch) in batches.iter().enumerate() {
            let grads = shard_grads(&model, &shard(batch, bounds), 1.0, device);
            if step == 1 && peer.rank() == 1 {
                panic!("peer 1 dies");
            }
            let before = snapshot(&optim, &model);
            match all_reduce_grads(grads, &model, &mut peer, Reduction::Sum) {
                Ok((grads, _)) => model = optim.step(LR, model, grads),
                Err(error) => return (step, error, before, snapshot(&optim, &model)),
            }
            peer.set_timeout(Duration::from_secs(2));
        }
        unreachable!("the exchange of step 1 fails")
    });
    assert!(
        start.elapsed() < Duration::from_secs(60),
        "the others' step ended in bounded time"
    );
    assert!(results[1].is_err(), "peer 1 panicked");
    for rank in [0, 2] {
        let (step, error, before, after) = results[rank].as_ref().unwrap();
        assert_eq!(*step, 1);
        assert!(expected(error), "{error}");
        assert_params_bits_eq(&after.0, &before.0, "the model is unchanged");
        assert_states_bits_eq(&after.1, &before.1, "the optimizer state is unchanged");
    }
}

/// Two peers that share a table (one model cloned into both threads) are refused: one peer
/// names the shared table, the other fails its exchange; neither steps.
#[test]
fn peers_sharing_a_table_are_refused() {
    on_test_backend!(shared_table);
}

fn shared_table<B: AutodiffBackend>(device: &B::Device) {
    {
        let spec = spec();
        let batch = batches(&spec, 2).remove(0);
        // Both clones' backward passes run here, one after the other: Burn's autodiff does
        // not support concurrent backward passes through shared parameters, and what is
        // tested is the exchange.
        let model = tower::<B>(&spec, device);
        let work: Vec<_> = bounds(2)
            .into_iter()
            .map(|bounds| {
                let clone = model.clone();
                let grads = shard_grads(&clone, &shard(&batch, bounds), 1.0, device);
                Some((clone, grads))
            })
            .collect();
        let work = Mutex::new(work);
        let results = on_peers::<B, _, _>(2, in_process(2), device, |mut peer, _| {
            let (model, grads) = work.lock().unwrap()[peer.rank()].take().unwrap();
            all_reduce_grads(grads, &model, &mut peer, Reduction::Sum).map(|_| ())
        });
        let errors: Vec<Error> = results
            .into_iter()
            .map(|r| r.unwrap().expect_err("refused"))
            .collect();
        let shared_errors = errors
            .iter()
            .filter(|e| matches!(e, Error::SharedTable { .. }))
            .count();
        assert_eq!(shared_errors, 1, "{errors:?}");
        assert!(
            errors.iter().any(|e| e
                .to_string()
                .contains("shared with another data-parallel peer")),
            "{errors:?}"
        );
    }
}
