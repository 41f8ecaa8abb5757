//! The public API used as a new user would: every way of getting a table trains at every
//! step; the lookups a table keeps, and the errors that speak of them; tables of width 0;
//! which gradients count a step; records that say what they are; hyperparameters checked in
//! the precision the update runs in.

use burn::module::{AutodiffModule, Module};
use burn::nn::{EmbeddingConfig, Linear, LinearConfig};
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::record::{BinFileRecorder, FullPrecisionSettings, Recorder};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::Tensor;
use burn_sparse_adam::{
    collect_grads, Error, SparseAdamConfig, SparseAdamOptimizer, SparseAdamRecord, SparseEmbedding,
    SparseEmbeddingConfig,
};
use burn_sparse_adam_tests::{indices, on_test_backend, row, values, TempDir, TestBackend};

const N: usize = 10;
const D: usize = 4;
const PADDING: usize = 9;
const LR: f64 = 1e-2;

/// Four steps of `[[3, 9, 5]]` with the loss `sum(out²)`: at every step rows 3 and 5 move,
/// and every other row, the padding row included, keeps its values bit for bit.
fn trains_at_every_step<B: AutodiffBackend>(
    mut table: SparseEmbedding<B>,
    device: &B::Device,
    how: &str,
) {
    let mut optim: SparseAdamOptimizer<SparseEmbedding<B>, B> = SparseAdamConfig::new().init();
    for step in 1..=4 {
        let before = values(table.weight.val());
        let out = table.forward(indices::<B>(&[3, 9, 5], [1, 3], device));
        let grads = collect_grads(out.powi_scalar(2).sum().backward(), &table);
        table = optim.try_step(LR, table, grads).expect("a valid step");
        let after = values(table.weight.val());
        for r in 0..N {
            let moved = row(&before, D, r) != row(&after, D, r);
            let looked_up = r == 3 || r == 5 || (r == 9 && table.padding_idx() != Some(9));
            assert_eq!(
                moved,
                looked_up,
                "{how}, step {step}: row {r} {} although it was {}looked up",
                if moved { "moved" } else { "did not move" },
                if looked_up { "" } else { "not " }
            );
        }
        let state = optim.state::<2>(table.weight.id).expect("a state");
        assert_eq!(state.step, step, "{how}: the step count");
    }
}

fn config(padding: bool) -> SparseEmbeddingConfig {
    SparseEmbeddingConfig::new(N, D).with_padding_idx(padding.then_some(PADDING))
}

fn every_way_of_getting_a_table<B: AutodiffBackend>(device: &B::Device) {
    for padding in [false, true] {
        let how = |way: &str| format!("{way} (padding {padding})");
        let initialized = |table: SparseEmbedding<B>, way: &str| {
            if padding {
                let padding_row = values(table.weight.val().slice([PADDING..PADDING + 1, 0..D]));
                assert_eq!(
                    padding_row,
                    [0.0; D],
                    "{}: the padding row starts at zero",
                    how(way)
                );
            }
            trains_at_every_step(table, device, &how(way));
        };
        initialized(config(padding).init::<B>(device), "init");

        let table = config(padding).init::<B>(device);
        let reloaded = table.clone().load_record(table.into_record());
        initialized(reloaded, "init, then its own record loaded");

        let table = config(padding).init::<B>(device);
        initialized(
            SparseEmbedding::<B>::from_inner(table.valid()),
            "valid(), then from_inner",
        );

        initialized(config(padding).init::<B>(device).fork(device), "fork");
        initialized(
            config(padding).init::<B>(device).to_device(device),
            "to_device",
        );

        // A stock table's padding row is whatever it was: it is kept, never trained.
        let stock = EmbeddingConfig::new(N, D).init::<B>(device);
        let from_stock = config(padding)
            .init::<B>(device)
            .load_record(stock.into_record());
        trains_at_every_step(from_stock, device, &how("a stock Embedding's record"));
    }
}

#[test]
fn every_way_of_getting_a_table_trains_at_every_step() {
    on_test_backend!(every_way_of_getting_a_table);
}

#[derive(Module, Debug)]
struct WithHead<B: Backend> {
    table: SparseEmbedding<B>,
    head: Linear<B>,
}

/// A padded table inside a model trains from the first step, and a table frozen with
/// `no_grad` never moves and raises nothing.
fn padded_table_in_a_model<B: AutodiffBackend>(device: &B::Device) {
    let model = WithHead {
        table: config(true).init::<B>(device),
        head: LinearConfig::new(D, 1).init(device),
    };
    let mut optim: SparseAdamOptimizer<WithHead<B>, B> = SparseAdamConfig::new().init();
    let before = values(model.table.weight.val());
    let loss = |model: &WithHead<B>| {
        let out = model
            .table
            .forward(indices::<B>(&[3, 9, 5], [1, 3], device));
        model.head.forward(out).sum()
    };
    let grads = collect_grads(loss(&model).backward(), &model);
    let model = optim.try_step(LR, model, grads).expect("a valid step");
    let after = values(model.table.weight.val());
    assert_ne!(
        row(&after, D, 3),
        row(&before, D, 3),
        "row 3 at the first step"
    );
    assert_ne!(
        row(&after, D, 5),
        row(&before, D, 5),
        "row 5 at the first step"
    );
    assert_eq!(row(&after, D, PADDING), [0.0; D], "the padding row");

    let frozen = model.no_grad();
    let before = values(frozen.table.weight.val());
    let grads = collect_grads(loss(&frozen).backward(), &frozen);
    let frozen = optim.try_step(LR, frozen, grads).expect("a valid step");
    assert_eq!(values(frozen.table.weight.val()), before, "a frozen table");
}

#[test]
fn a_padded_table_in_a_model_trains_from_the_first_step() {
    on_test_backend!(padded_table_in_a_model);
}

// ---- The row gradients' bookkeeping -------------------------------------------------------

fn is_not_collected(err: &Error, table: &SparseEmbedding<impl Backend>) -> bool {
    matches!(err, Error::RowGradientsNotCollected { param } if *param == table.weight.id)
}

/// `GradientsParams::from_grads` used by mistake is an error at every step, also after a
/// `GradientsParams` from `collect_grads` was dropped without a step; and the lookups it
/// leaves behind do not pile up.
fn from_grads_after_a_dropped_collection<B: AutodiffBackend>(device: &B::Device) {
    let table = config(false).init::<B>(device);
    let mut optim: SparseAdamOptimizer<SparseEmbedding<B>, B> = SparseAdamConfig::new().init();
    let loss = |table: &SparseEmbedding<B>| {
        let out = table.forward(indices::<B>(&[1, 2, 2], [1, 3], device));
        out.powi_scalar(2).sum()
    };
    let grads = collect_grads(loss(&table).backward(), &table);
    let table = optim.try_step(LR, table, grads).expect("a valid step");
    drop(collect_grads(loss(&table).backward(), &table));
    assert_eq!(table.collected_row_grads(), 1);

    let before = values(table.weight.val());
    let mut table = table;
    for attempt in 0..100 {
        let grads = GradientsParams::from_grads(loss(&table).backward(), &table);
        let rejected = optim.try_step(LR, table, grads).expect_err("rejected");
        assert!(
            is_not_collected(&rejected.error, &rejected.module),
            "attempt {attempt}: {:?}",
            rejected.error
        );
        table = rejected.module;
    }
    assert_eq!(values(table.weight.val()), before, "nothing changed");
    assert!(
        table.pending_lookups() <= 65,
        "released lookups are not kept without bound: {}",
        table.pending_lookups()
    );
}

#[test]
fn from_grads_by_mistake_is_an_error_even_after_a_dropped_collection() {
    on_test_backend!(from_grads_after_a_dropped_collection);
}

#[derive(Module, Debug)]
struct TwoTables<B: Backend> {
    a: SparseEmbedding<B>,
    b: SparseEmbedding<B>,
}

fn two_tables<B: AutodiffBackend>(device: &B::Device) -> TwoTables<B> {
    TwoTables {
        a: config(false).init(device),
        b: config(false).init(device),
    }
}

/// One step that looks up and trains table `a` only.
fn train_a<B: AutodiffBackend>(
    model: TwoTables<B>,
    optim: &mut SparseAdamOptimizer<TwoTables<B>, B>,
    device: &B::Device,
) -> TwoTables<B> {
    let out = model.a.forward(indices::<B>(&[1, 4], [1, 2], device));
    let grads = collect_grads(out.powi_scalar(2).sum().backward(), &model);
    optim.try_step(LR, model, grads).expect("a valid step")
}

/// Lookups that no backward pass uses (evaluation under autodiff), on this thread or on
/// another one, neither block a step nor pile up.
fn unused_lookups<B: AutodiffBackend>(device: &B::Device) {
    let mut optim: SparseAdamOptimizer<TwoTables<B>, B> = SparseAdamConfig::new().init();
    let model = train_a(two_tables::<B>(device), &mut optim, device);

    for _ in 0..500 {
        drop(model.b.forward(indices::<B>(&[0, 2, 3, 7], [2, 2], device)));
    }
    let worker = {
        let b = model.b.clone();
        let device = device.clone();
        std::thread::spawn(move || {
            for _ in 0..100 {
                drop(b.forward(indices::<B>(&[5, 6], [1, 2], &device)));
            }
        })
    };
    worker.join().expect("the worker");
    let b_before = values(model.b.weight.val());
    let model = train_a(model, &mut optim, device);
    assert_eq!(
        values(model.b.weight.val()),
        b_before,
        "table b did not train"
    );
    assert!(
        optim.state::<2>(model.b.weight.id).is_none(),
        "table b had no gradient: no step"
    );
    assert!(
        model.b.pending_lookups() <= 64,
        "lookups no backward pass used are released: {} kept",
        model.b.pending_lookups()
    );
}

#[test]
fn unused_lookups_on_any_thread_neither_block_steps_nor_pile_up() {
    on_test_backend!(unused_lookups);
}

/// A forward pass on one thread, its backward pass and `collect_grads` on another: the rows
/// train.
fn forward_and_backward_on_two_threads<B: AutodiffBackend>(device: &B::Device) {
    let table = config(false).init::<B>(device);
    let mut optim: SparseAdamOptimizer<SparseEmbedding<B>, B> = SparseAdamConfig::new().init();
    let loss = table
        .forward(indices::<B>(&[2, 6], [1, 2], device))
        .powi_scalar(2)
        .sum();
    let grads = {
        let table = table.clone();
        std::thread::spawn(move || collect_grads(loss.backward(), &table))
            .join()
            .expect("the other thread")
    };
    let before = values(table.weight.val());
    let table = optim.try_step(LR, table, grads).expect("a valid step");
    let after = values(table.weight.val());
    for r in 0..N {
        assert_eq!(
            row(&before, D, r) != row(&after, D, r),
            r == 2 || r == 6,
            "row {r}"
        );
    }
}

#[test]
fn a_backward_pass_on_another_thread_collects_the_rows() {
    on_test_backend!(forward_and_backward_on_two_threads);
}

// ---- Which gradients count a step ---------------------------------------------------------

/// As in PyTorch, only a gradient that reached the loss counts a step: an empty lookup
/// outside the loss does not, one inside it does; a marker whose rows were cleared does not.
fn step_counts<B: AutodiffBackend>(device: &B::Device) {
    let mut optim: SparseAdamOptimizer<TwoTables<B>, B> = SparseAdamConfig::new().init();
    let model = two_tables::<B>(device);
    let empty = || indices::<B>(&[], [1, 0], device);

    let unused = model.b.forward(empty());
    // burn-ndarray differentiates empty tensors; Burn 0.21's wgpu cannot (a size-0
    // dimension broadcasts as 1 there), so its empty outputs are untracked and count a step
    // whether or not they reach the loss.
    let tracked = unused.is_require_grad();
    assert_eq!(tracked, TestBackend::selected() == TestBackend::NdArray);
    let model = train_a(model, &mut optim, device);
    if tracked {
        assert!(
            optim.state::<2>(model.b.weight.id).is_none(),
            "an empty lookup outside the loss"
        );
    } else {
        assert_eq!(
            optim.state::<2>(model.b.weight.id).expect("a state").step,
            1
        );
    }
    let b_steps = usize::from(!tracked);

    let b_before = values(model.b.weight.val());
    let b_out = model.b.forward(empty());
    let mut loss = model.a.forward(indices::<B>(&[1], [1, 1], device)).sum();
    if tracked {
        loss = loss.add(b_out.sum());
    }
    let grads = collect_grads(loss.backward(), &model);
    let model = optim.try_step(LR, model, grads).expect("a valid step");
    let state = optim.state::<2>(model.b.weight.id).expect("a state");
    assert_eq!(
        state.step,
        b_steps + 1,
        "an empty lookup inside the loss counts a step"
    );
    assert_eq!(values(model.b.weight.val()), b_before);

    let loss = model.b.forward(indices::<B>(&[3], [1, 1], device)).sum();
    let grads = collect_grads(loss.backward(), &model);
    model.b.clear_row_grads();
    let b_before = values(model.b.weight.val());
    let model = optim.try_step(LR, model, grads).expect("a valid step");
    assert_eq!(
        optim.state::<2>(model.b.weight.id).expect("a state").step,
        b_steps + 1,
        "cleared row gradients count no step"
    );
    assert_eq!(values(model.b.weight.val()), b_before);
}

#[test]
fn only_a_gradient_that_reached_the_loss_counts_a_step() {
    on_test_backend!(step_counts);
}

// ---- Width 0 -------------------------------------------------------------------------------

/// A table of width 0 (an embedding of nothing, which PyTorch allows) looks up, collects
/// and steps without panicking: its step count advances when its lookup is in the loss.
fn zero_width<B: AutodiffBackend>(device: &B::Device) {
    let mut model = WithHead {
        table: SparseEmbeddingConfig::new(N, 0)
            .with_padding_idx(Some(2))
            .init::<B>(device),
        head: LinearConfig::new(2, 1).init(device),
    };
    let mut optim: SparseAdamOptimizer<WithHead<B>, B> = SparseAdamConfig::new().init();
    for step in 1..=2 {
        let out = model
            .table
            .forward(indices::<B>(&[1, 2, 1], [1, 3], device));
        assert_eq!(out.dims(), [1, 3, 0]);
        let mut loss = model
            .head
            .forward(Tensor::<B, 2>::ones([1, 2], device))
            .sum();
        if out.is_require_grad() {
            loss = loss.add(out.sum());
        }
        let grads = collect_grads(loss.backward(), &model);
        model = optim.try_step(LR, model, grads).expect("a valid step");
        let state = optim.state::<2>(model.table.weight.id).expect("a state");
        assert_eq!(state.step, step);
    }
    assert_eq!(model.table.weight.dims(), [N, 0]);
}

#[test]
fn a_table_of_width_zero_trains_without_panicking() {
    on_test_backend!(zero_width);
}

// ---- Records ------------------------------------------------------------------------------

/// A record of Burn's `Adam` does not load as a `SparseAdamRecord`, nor the reverse: each
/// is an error of the recorder that says what the file is not.
fn foreign_records<B: AutodiffBackend>(device: &B::Device) {
    let dir = TempDir::new("foreign-records");
    let recorder = BinFileRecorder::<FullPrecisionSettings>::new();
    let model: Linear<B> = LinearConfig::new(3, 1).with_bias(false).init(device);
    let step = |model: &Linear<B>| {
        let loss = model.forward(Tensor::<B, 2>::ones([2, 3], device)).sum();
        GradientsParams::from_grads(loss.backward(), model)
    };

    let mut adam = AdamConfig::new().init::<B, Linear<B>>();
    let model = adam.step(LR, model.clone(), step(&model));
    let adam_path = dir.path().join("adam");
    recorder
        .record(adam.to_record(), adam_path.clone())
        .unwrap();
    let Err(err) = recorder.load::<SparseAdamRecord<B>>(adam_path, device) else {
        panic!("an Adam record is not a SparseAdamRecord");
    };
    assert!(
        err.to_string()
            .contains("is not a burn-sparse-adam SparseAdamRecord"),
        "{err}"
    );

    let mut sparse: SparseAdamOptimizer<Linear<B>, B> = SparseAdamConfig::new().init();
    let model = sparse.step(LR, model.clone(), step(&model));
    let sparse_path = dir.path().join("sparse");
    recorder
        .record(sparse.to_record(), sparse_path.clone())
        .unwrap();
    let adam_record = recorder.load::<<burn::optim::adaptor::OptimizerAdaptor<
        burn::optim::Adam,
        Linear<B>,
        B,
    > as Optimizer<Linear<B>, B>>::Record>(sparse_path.clone(), device);
    assert!(
        adam_record.is_err(),
        "a SparseAdamRecord is not an Adam record"
    );

    let ours = recorder
        .load::<SparseAdamRecord<B>>(sparse_path, device)
        .expect("its own record loads");
    assert_eq!(ours.states.len(), 1);
    let _ = model;
}

#[test]
fn records_of_other_optimizers_are_refused() {
    on_test_backend!(foreign_records);
}

// ---- Hyperparameters in f32 ---------------------------------------------------------------

/// Values finite in `f64` that are not in `f32`, the precision of the update: refused with
/// a typed error naming the value, before anything changes (PyTorch accepts them).
fn f32_hyperparameters<B: AutodiffBackend>(device: &B::Device) {
    let err = SparseAdamConfig::new()
        .with_epsilon(1e-50)
        .try_init::<B, SparseEmbedding<B>>()
        .err()
        .expect("rejected");
    assert_eq!(err, Error::EpsilonUnderflows { value: 1e-50 });
    assert!(err.to_string().contains("1e-50"), "{err}");

    let table = config(false).init::<B>(device);
    let loss = |table: &SparseEmbedding<B>| {
        let out = table.forward(indices::<B>(&[1], [1, 1], device));
        collect_grads(out.sum().backward(), table)
    };
    let before = values(table.weight.val());
    let mut optim: SparseAdamOptimizer<SparseEmbedding<B>, B> = SparseAdamConfig::new().init();
    let mut table = table;
    for lr in [1e300, 1e-50] {
        let grads = loss(&table);
        let rejected = optim.try_step(lr, table, grads).expect_err("rejected");
        assert_eq!(rejected.error, Error::LearningRateOutOfRange { value: lr });
        assert!(rejected.error.to_string().contains(&format!("{lr:e}")));
        table = rejected.module;
    }

    let mut optim: SparseAdamOptimizer<SparseEmbedding<B>, B> =
        SparseAdamConfig::new().with_beta_1(1.0 - 1e-15).init();
    let grads = loss(&table);
    let rejected = optim.try_step(1e30, table, grads).expect_err("rejected");
    assert_eq!(
        rejected.error,
        Error::StepSizeOverflow { lr: 1e30, step: 1 }
    );
    assert_eq!(
        values(rejected.module.weight.val()),
        before,
        "nothing changed"
    );
    assert!(optim.state::<2>(rejected.module.weight.id).is_none());
}

#[test]
fn hyperparameters_are_checked_in_f32() {
    on_test_backend!(f32_hyperparameters);
}
