//! `SparseEmbeddingConfig::check_indices(false)`: on wgpu a lookup's indices stay on the
//! device, and the optimizer plans and applies its rows there (a sort and one fused
//! kernel); on flex the indices are read and checked as by default. Either way training
//! gives the numbers of a checked table, bit for bit. One test per behaviour; the fused
//! paths are never switched off here.

use std::sync::{Arc, Mutex};

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::optim::{GradientsAccumulator, GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Int, Tensor, TensorData};
use burn_sparse_adam::{
    Error, Kernel, SparseAdamConfig, SparseEmbedding, SparseEmbeddingConfig, collect_grads,
};
use burn_sparse_adam_tests::{TestBackend, device, set_params, values};

#[derive(Module, Debug)]
struct Model {
    table: SparseEmbedding,
    head: Linear,
}

/// A model whose table (50 × 6, `padding_idx` 9) checks its indices or not, with the same
/// values either way.
fn model(check_indices: bool, device: &Device) -> Model {
    let table = SparseEmbeddingConfig::new(50, 6)
        .with_padding_idx(Some(9))
        .with_check_indices(check_indices);
    let model = Model {
        table: table.init(device),
        head: LinearConfig::new(6, 2).init(device),
    };
    let params: Vec<Vec<f32>> = [300usize, 12, 2]
        .iter()
        .enumerate()
        .map(|(p, &len)| {
            (0..len)
                .map(|i| ((i * 37 + p * 11) % 101) as f32 / 50.0 - 1.0)
                .collect()
        })
        .collect();
    set_params(model, params)
}

fn bits(t: Tensor<2>) -> Vec<u32> {
    values(t).into_iter().map(f32::to_bits).collect()
}

/// Lookups with duplicates and `padding_idx` (9).
const LOOKUPS: [[i64; 4]; 4] = [[3, 9, 3, 12], [49, 0, 9, 9], [1, 2, 3, 4], [12, 12, 40, 3]];

fn loss(model: &Model, ids: [i64; 4], device: &Device) -> Tensor<1> {
    let ids = Tensor::<1, Int>::from_data(ids, device).reshape([2, 2]);
    model
        .head
        .forward(model.table.forward(ids))
        .powi_scalar(2)
        .sum()
}

/// A step's table path and touched rows, as a post-hook saw them.
type Seen = (Option<Kernel>, usize);

/// Four steps with this crate's optimizer (the second from two accumulated passes); the
/// table's and head's bits, and each step's table path and touched rows as a post-hook saw
/// them.
fn train(mut model: Model, device: &Device) -> (Vec<u32>, Vec<u32>, Vec<Seen>) {
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let mut optim = SparseAdamConfig::new()
        .with_maximize(true)
        .with_weight_decay(Some(0.5))
        .init_optimizer();
    {
        let seen = seen.clone();
        let _ = optim.register_step_post_hook(move |info| {
            let table = &info.params[0];
            seen.lock()
                .unwrap()
                .push((table.kernel, table.touched_rows));
        });
    }
    for (step, ids) in LOOKUPS.into_iter().enumerate() {
        let grads = if step == 1 {
            let mut accumulator = GradientsAccumulator::new();
            for ids in [ids, [5, 6, 5, 0]] {
                let grads = collect_grads(loss(&model, ids, device).backward(), &model);
                accumulator.accumulate(&model, grads);
            }
            accumulator.grads()
        } else {
            collect_grads(loss(&model, ids, device).backward(), &model)
        };
        model = optim.step(1e-2, model, grads);
    }
    let seen = seen.lock().unwrap().clone();
    (
        bits(model.table.weight.val()),
        bits(model.head.weight.val()),
        seen,
    )
}

#[test]
fn unchecked_lookups_train_as_checked_ones_bit_for_bit() {
    let device = device();
    let (table, head, seen) = train(model(false, &device), &device);
    let (checked_table, checked_head, checked_seen) = train(model(true, &device), &device);
    assert_eq!(table, checked_table, "the table after four steps");
    assert_eq!(
        head, checked_head,
        "the head, trained on the lookups' values"
    );
    // With a step hook registered, the touched rows of unplanned lookups are counted (on
    // the host); rows 3 and 12, 0 and 49, …, `padding_idx` never.
    assert_eq!(
        seen.iter().map(|s| s.1).collect::<Vec<_>>(),
        vec![2, 4, 4, 3],
        "touched rows"
    );
    assert_eq!(
        seen.iter().map(|s| s.1).collect::<Vec<_>>(),
        checked_seen.iter().map(|s| s.1).collect::<Vec<_>>()
    );
    // On wgpu the unchecked table's rows are planned on the device; on flex both tables
    // plan on the host and take flex's fused row update.
    let device_path = match TestBackend::selected() {
        TestBackend::Wgpu => Kernel::FusedLookups,
        TestBackend::Flex => Kernel::Fused,
    };
    assert!(
        seen.iter().all(|s| s.0 == Some(device_path)),
        "every unchecked row update took {device_path:?}: {seen:?}"
    );
    assert!(
        checked_seen.iter().all(|s| s.0 == Some(Kernel::Fused)),
        "every checked row update took the fused row update: {checked_seen:?}"
    );
    let changed = |after: &[u32]| -> Vec<usize> {
        let before = bits(model(true, &device).table.weight.val());
        (0..50)
            .filter(|r| before[r * 6..r * 6 + 6] != after[r * 6..r * 6 + 6])
            .collect()
    };
    assert_eq!(
        changed(&table),
        vec![0, 1, 2, 3, 4, 5, 6, 12, 40, 49],
        "exactly the looked-up rows moved, padding_idx not"
    );
}

/// Burn's `ModuleOptimizer` over the rule: the marker finds the unplanned lookups through
/// the table's scope, and the rule's row path runs them as this crate's optimizer does.
#[test]
fn unchecked_lookups_under_burns_module_optimizer() {
    let device = device();
    let run = |check_indices: bool| {
        let mut model = model(check_indices, &device);
        let mut optim: ModuleOptimizer = SparseAdamConfig::new().init();
        for ids in LOOKUPS {
            let grads: GradientsParams =
                collect_grads(loss(&model, ids, &device).backward(), &model);
            model = optim.step(1e-2, model, grads);
        }
        bits(model.table.weight.val())
    };
    assert_eq!(run(false), run(true));
}

/// An index outside the table: unchecked on wgpu, its lookup runs and it takes no gradient
/// (the other rows step as without it); on flex it is `IndexOutOfRange` as when checked.
#[test]
fn an_unchecked_index_outside_the_table() {
    let device = device();
    let table = |ids: &[i64]| {
        let model = model(false, &device);
        let ids =
            Tensor::<2, Int>::from_data(TensorData::new(ids.to_vec(), [1, ids.len()]), &device);
        let output = model.table.try_forward(ids);
        (model, output)
    };
    let (model_out, output) = table(&[3, 77, 3]);
    match TestBackend::selected() {
        TestBackend::Flex => match output {
            Err(Error::IndexOutOfRange { index, n_embedding }) => {
                assert_eq!((index, n_embedding), (77, 50));
                assert_eq!(model_out.table.pending_lookups(), 0, "nothing recorded");
            }
            other => panic!("expected IndexOutOfRange, got {other:?}"),
        },
        TestBackend::Wgpu => {
            // `sum`: every position's gradient is one, whatever its values.
            let grads = collect_grads(output.expect("unchecked").sum().backward(), &model_out);
            let mut optim = SparseAdamConfig::new().init_optimizer();
            let stepped = optim.step(1e-2, model_out, grads);
            let (model_in, output) = table(&[3, 3]);
            let grads = collect_grads(output.unwrap().sum().backward(), &model_in);
            let expected = SparseAdamConfig::new()
                .init_optimizer()
                .step(1e-2, model_in, grads);
            assert_eq!(
                bits(stepped.table.weight.val()),
                bits(expected.table.weight.val())
            );
        }
    }
}
