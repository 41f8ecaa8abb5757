//! `SparseEmbeddingConfig::check_indices(false)`: on wgpu a lookup's indices stay on the
//! device, and the optimizer plans and applies its rows there (a sort and one fused
//! kernel); on flex the indices are read and checked as by default. Either way training
//! gives the numbers of a checked table, bit for bit. One test per behaviour; the fused
//! paths are never switched off here.

use std::sync::{Arc, Mutex};

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::optim::grad_clipping::GradientClippingConfig;
use burn::optim::{GradientsAccumulator, GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Int, Tensor, TensorData};
use burn_sparse_adam::{
    Error, Kernel, SparseAdamConfig, SparseEmbedding, SparseEmbeddingConfig, collect_grads,
};
use burn_sparse_adam_tests::{TestBackend, device, module_optimizer_states, set_params, values};

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

/// Lookups with duplicates and `padding_idx` (9); the second step also accumulates a pass of
/// [`SECOND_PASS`].
const LOOKUPS: [[i64; 4]; 4] = [[3, 9, 3, 12], [49, 0, 9, 9], [1, 2, 3, 4], [12, 12, 40, 3]];

/// The second step's second pass: row 0 again, twice (so the order in which a row's sums
/// nest, lookup by lookup and pass by pass, shows in its bits), and rows 5 and 6.
const SECOND_PASS: [i64; 4] = [0, 6, 0, 5];

/// Two lookups of the table per pass (the ids, then the ids reversed), as a model that
/// looks up one table twice (say, a context and a target) does. Each looked-up value is
/// also weighted by its own factor, so that every position's gradient differs and the
/// order in which a row's gradients are added shows in its bits.
fn loss(model: &Model, ids: [i64; 4], device: &Device) -> Tensor<1> {
    let lookup = |ids: [i64; 4], salt: usize| {
        let ids = Tensor::<1, Int>::from_data(ids, device).reshape([2, 2]);
        let rows = model.table.forward(ids);
        let weights: Vec<f32> = (0..24)
            .map(|i| ((i * 7919 + salt * 104_729) % 1000) as f32 / 317.0 - 1.3)
            .collect();
        let weights = Tensor::<3>::from_data(TensorData::new(weights, [2, 2, 6]), device);
        model.head.forward(rows.clone()).powi_scalar(2).sum() + (rows * weights).sum()
    };
    let mut reversed = ids;
    reversed.reverse();
    lookup(ids, 1) + lookup(reversed, 2)
}

/// A step's table path and touched rows, as a post-hook saw them.
type Seen = (Option<Kernel>, usize);

/// What a run ends with, as bits: the table, its two moments, the head.
type Trained = [Vec<u32>; 4];

/// Four steps with this crate's optimizer (the second from two accumulated passes), with a
/// post-hook that records each step's table path and touched rows, or without hooks. The
/// moments are compared as well as the table: a parameter's bits hide small differences
/// in a gradient (a first Adam step moves by about `lr·sign(g)`), the moments do not.
///
/// With `clip`, a gradient clipping that needs the summed rows (so unplanned lookups are
/// planned on the host, lookup by lookup and pass by pass) but never clips.
fn train(mut model: Model, hook: bool, clip: bool, device: &Device) -> (Trained, Vec<Seen>) {
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let clipping = clip.then_some(GradientClippingConfig::Norm(1e30));
    let mut optim = SparseAdamConfig::new()
        .with_maximize(true)
        .with_weight_decay(Some(0.5))
        .with_grad_clipping(clipping)
        .init_optimizer();
    if hook {
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
            for ids in [ids, SECOND_PASS] {
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
    let state = optim
        .state::<2>(model.table.weight.id)
        .expect("the table has a state");
    let trained = [
        bits(model.table.weight.val()),
        bits(state.exp_avg),
        bits(state.exp_avg_sq),
        bits(model.head.weight.val()),
    ];
    (trained, seen)
}

#[test]
fn unchecked_lookups_train_as_checked_ones_bit_for_bit() {
    let device = device();
    let (checked, checked_seen) = train(model(true, &device), true, false, &device);
    // Without hooks nothing is read back for the step (on wgpu); with one, its touched rows
    // are counted on the host. The numbers are the same.
    for hook in [false, true] {
        let (trained, seen) = train(model(false, &device), hook, false, &device);
        for (what, (ours, theirs)) in ["table", "exp_avg", "exp_avg_sq", "head"]
            .iter()
            .zip(trained.iter().zip(&checked))
        {
            assert_eq!(ours, theirs, "{what} after four steps (hook: {hook})");
        }
        if !hook {
            continue;
        }
        // Rows 3 and 12; 0, 49, 5 and 6; 1 to 4; 3, 12 and 40: `padding_idx` never.
        let touched: Vec<usize> = seen.iter().map(|s| s.1).collect();
        assert_eq!(touched, vec![2, 4, 4, 3], "touched rows");
        assert_eq!(
            touched,
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
    }
    assert!(
        checked_seen.iter().all(|s| s.0 == Some(Kernel::Fused)),
        "every checked row update took the fused row update: {checked_seen:?}"
    );
    let before = bits(model(true, &device).table.weight.val());
    let changed: Vec<usize> = (0..50)
        .filter(|r| before[r * 6..r * 6 + 6] != checked[0][r * 6..r * 6 + 6])
        .collect();
    assert_eq!(
        changed,
        vec![0, 1, 2, 3, 4, 5, 6, 12, 40, 49],
        "exactly the looked-up rows moved, padding_idx not"
    );
}

/// With gradient clipping the unplanned lookups are planned on the host (the norm needs the
/// summed rows): the same bits as a checked table's under the same clipping.
#[test]
fn unchecked_lookups_planned_on_the_host_nest_their_sums_as_checked_ones() {
    let device = device();
    let (trained, _) = train(model(false, &device), false, true, &device);
    let (checked, _) = train(model(true, &device), false, true, &device);
    for (what, (ours, theirs)) in ["table", "exp_avg", "exp_avg_sq", "head"]
        .iter()
        .zip(trained.iter().zip(&checked))
    {
        assert_eq!(ours, theirs, "{what} after four steps");
    }
}

/// Burn's `ModuleOptimizer` over the rule: the marker finds the unplanned lookups through
/// the table's scope, and the rule's row path runs them as this crate's optimizer does.
#[test]
fn unchecked_lookups_under_burns_module_optimizer() {
    let device = device();
    let run = |check_indices: bool| {
        let mut model = model(check_indices, &device);
        let mut optim: ModuleOptimizer = SparseAdamConfig::new()
            .with_maximize(true)
            .with_weight_decay(Some(0.5))
            .init();
        for ids in LOOKUPS.into_iter().chain([SECOND_PASS]) {
            let grads: GradientsParams =
                collect_grads(loss(&model, ids, &device).backward(), &model);
            model = optim.step(1e-2, model, grads);
        }
        let mut states = module_optimizer_states(&optim);
        let state = states
            .remove(&model.table.weight.id.val())
            .expect("the table has a state");
        (bits(model.table.weight.val()), state)
    };
    let (table, state) = run(false);
    let (checked_table, checked_state) = run(true);
    assert_eq!(table, checked_table);
    assert_eq!(state, checked_state, "the step and the moments");
}

/// Indices outside the table (77, −5): unchecked on wgpu, the lookup gives them rows of
/// zeros and they take no gradient (the other rows step as without them); on flex they are
/// `IndexOutOfRange`, as when checked.
#[test]
fn unchecked_indices_outside_the_table() {
    let device = device();
    let lookup = |ids: &[i64]| {
        let model = model(false, &device);
        let ids =
            Tensor::<2, Int>::from_data(TensorData::new(ids.to_vec(), [1, ids.len()]), &device);
        let output = model.table.try_forward(ids);
        (model, output)
    };
    let (model_out, output) = lookup(&[3, 77, 3, -5]);
    match TestBackend::selected() {
        TestBackend::Flex => match output {
            Err(Error::IndexOutOfRange { index, n_embedding }) => {
                assert_eq!((index, n_embedding), (77, 50));
                assert_eq!(model_out.table.pending_lookups(), 0, "nothing recorded");
            }
            other => panic!("expected IndexOutOfRange, got {other:?}"),
        },
        TestBackend::Wgpu => {
            let output = output.expect("unchecked");
            let rows = values(output.clone().reshape([4, 6]));
            let row_3 = values(model_out.table.weight.val().slice([3..4, 0..6]));
            assert_eq!(rows[0..6], row_3[..]);
            assert_eq!(rows[6..12], [0.0; 6], "index 77: a row of zeros");
            assert_eq!(rows[12..18], row_3[..]);
            assert_eq!(rows[18..24], [0.0; 6], "index -5: a row of zeros");
            // `sum`: every position's gradient is one, whatever its values.
            let grads = collect_grads(output.sum().backward(), &model_out);
            let mut optim = SparseAdamConfig::new().init_optimizer();
            let stepped = optim.step(1e-2, model_out, grads);
            let (model_in, output) = lookup(&[3, 3]);
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
