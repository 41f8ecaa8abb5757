//! One process of the suite's multi-process data-parallel tests (`suite::distributed`): a
//! peer of the data-parallel scenario (`burn_sparse_adam_tests::data_parallel`) whose engine
//! is a `TcpPeer` on the loopback, on the backend the suite runs on.
//!
//! `tcp-peer RANK PEERS HUB sum|mean [EXIT_AT_STEP]`: rank 0 listens on `HUB` (port 0 is
//! fine) and first prints `hub ADDRESS`; the others connect to `HUB`. Each prints its run
//! (`run JSON`, a `PeerRun`) when it ends. With `EXIT_AT_STEP`, rank 1 exits (status 3)
//! just before that step's exchange, as a crashed process would.

use std::io::Write;
use std::net::TcpListener;
use std::time::Duration;

use burn::tensor::backend::AutodiffBackend;
use burn_sparse_adam::distributed::{Reduction, TcpPeer};
use burn_sparse_adam_tests::data_parallel::{peer_run_until, spec};
use burn_sparse_adam_tests::with_test_backend;

const TIMEOUT: Duration = Duration::from_secs(60);

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = || -> ! {
        eprintln!("usage: tcp-peer RANK PEERS HUB sum|mean [EXIT_AT_STEP]");
        std::process::exit(2)
    };
    let (rank, peers, hub, reduction) = match args.as_slice() {
        [rank, peers, hub, reduction] | [rank, peers, hub, reduction, _] => {
            let reduction = match reduction.as_str() {
                "sum" => Reduction::Sum,
                "mean" => Reduction::Mean,
                _ => usage(),
            };
            let parse = |s: &str| s.parse::<usize>().unwrap_or_else(|_| usage());
            (parse(rank), parse(peers), hub.clone(), reduction)
        }
        _ => usage(),
    };
    let exit_at: Option<usize> = args.get(4).map(|s| s.parse().unwrap_or_else(|_| usage()));
    let peer = if rank == 0 {
        let listener = TcpListener::bind(&hub).expect("the hub's address binds");
        println!("hub {}", listener.local_addr().expect("an address"));
        std::io::stdout().flush().expect("stdout");
        TcpPeer::hub(listener, peers, TIMEOUT)
    } else {
        TcpPeer::connect(rank, peers, hub, TIMEOUT)
    };
    let mut peer = peer.unwrap_or_else(|e| panic!("rank {rank} joins: {e}"));
    with_test_backend!(run(&mut peer, reduction, exit_at));
}

fn run<B: AutodiffBackend>(
    device: &B::Device,
    peer: &mut TcpPeer,
    reduction: Reduction,
    exit_at: Option<usize>,
) {
    let rank = burn_sparse_adam::distributed::AllReduce::rank(peer);
    let run = peer_run_until::<B, _>(peer, &spec(), reduction, device, |step| {
        if rank == 1 && exit_at == Some(step) {
            std::process::exit(3);
        }
    });
    println!(
        "run {}",
        serde_json::to_string(&run).expect("a run as JSON")
    );
}
