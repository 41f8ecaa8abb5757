//! One process of the suite's two-process burn-collective test (`suite::distributed`), on the
//! loopback:
//!
//! - `collective-node orchestrator PORT`: runs burn-collective's global orchestrator on
//!   `PORT` until killed;
//! - `collective-node node RANK NODES ORCHESTRATOR_PORT DATA_PORT`: node `RANK` of `NODES`,
//!   one peer each, registers with the orchestrator through burn-collective's own API (not
//!   `CollectivePeer`, which refuses several nodes) and all-reduces `[RANK + 1; 4]` twice,
//!   printing for each either `all_reduce N: [values]` or `all_reduce N: no answer within
//!   Ts`. Exits 0 once it has said what happened; non-zero only when it cannot register.

use std::sync::mpsc;
use std::time::Duration;

use burn::backend::NdArray;
use burn::tensor::{Tensor, TensorPrimitive};
use burn_collective::{CollectiveConfig, PeerId, ReduceOperation};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["orchestrator", port] => {
            let port: u16 = port.parse().expect("a port");
            tokio::runtime::Runtime::new()
                .expect("a tokio runtime")
                .block_on(burn_collective::start_global_orchestrator(port));
        }
        ["node", rank, nodes, orchestrator, data] => {
            let parse = |s: &str| s.parse::<u16>().expect("a number");
            node(
                parse(rank).into(),
                parse(nodes).into(),
                parse(orchestrator),
                parse(data),
            );
            // A call that never completed keeps a thread blocked inside burn-collective.
            std::process::exit(0);
        }
        _ => {
            eprintln!(
                "usage: collective-node orchestrator PORT | collective-node node RANK NODES ORCHESTRATOR_PORT DATA_PORT"
            );
            std::process::exit(2);
        }
    }
}

fn node(rank: u32, nodes: u32, orchestrator: u16, data: u16) {
    let config = CollectiveConfig::default()
        .with_num_devices(1)
        .with_num_nodes(nodes)
        .with_global_address(format!("ws://127.0.0.1:{orchestrator}").parse().unwrap())
        .with_node_address(format!("ws://127.0.0.1:{data}").parse().unwrap())
        .with_data_service_port(data);
    let id = PeerId(rank);
    let registered = within(Duration::from_secs(60), move || {
        burn_collective::register::<NdArray>(id, Default::default(), config)
    });
    match registered {
        Some(Ok(())) => {}
        other => {
            eprintln!("node {rank} could not register: {other:?}");
            std::process::exit(1);
        }
    }
    for call in 1..=2 {
        let timeout = Duration::from_secs(if call == 1 { 60 } else { 5 });
        let input = Tensor::<NdArray, 1>::from_data([rank as f32 + 1.0; 4], &Default::default());
        let primitive = input.into_primitive().tensor();
        let summed = within(timeout, move || {
            burn_collective::all_reduce::<NdArray>(id, primitive, ReduceOperation::Sum)
        });
        match summed {
            Some(Ok(summed)) => {
                let values = Tensor::<NdArray, 1>::from_primitive(TensorPrimitive::Float(summed))
                    .into_data()
                    .to_vec::<f32>()
                    .expect("f32 values");
                println!("all_reduce {call}: {values:?}");
            }
            Some(Err(error)) => println!("all_reduce {call}: error {error:?}"),
            None => {
                println!("all_reduce {call}: no answer within {timeout:?}");
                return;
            }
        }
    }
}

/// `op`'s result, or `None` when it has not returned within `timeout` (burn-collective's
/// calls have no timeout of their own).
fn within<T: Send + 'static>(
    timeout: Duration,
    op: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let (done, result) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(op());
    });
    result.recv_timeout(timeout).ok()
}
