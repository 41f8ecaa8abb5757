//! The SparseAdam rule and both whole-model optimizers on Burn 0.22: untouched rows stay bit
//! for bit, a model mixing a `SparseEmbedding` and stock modules trains through both paths,
//! and refused steps change nothing.

use burn::module::{Module, Param};
use burn::nn::{Linear, LinearConfig};
use burn::optim::{GradientsParams, ModuleOptimizer, Optimizer};
use burn::tensor::{Device, Int, Tensor};
use burn_sparse_adam::{
    Error, NonFinite, SparseAdamConfig, SparseAdamOptimizer, SparseEmbedding,
    SparseEmbeddingConfig, collect_grads,
};
use burn_sparse_adam_tests::{device, module_optimizer_states, plain_device, values};

#[derive(Module, Debug)]
struct Model {
    table: SparseEmbedding,
    head: Linear,
}

impl Model {
    fn new(device: &Device) -> Self {
        Self {
            table: SparseEmbeddingConfig::new(50, 4).init(device),
            head: LinearConfig::new(4, 1).init(device),
        }
    }

    fn loss(&self, rows: &[i64], device: &Device) -> Tensor<1> {
        let ids = Tensor::<1, Int>::from_data(rows, device).reshape([1, rows.len()]);
        self.head
            .forward(self.table.forward(ids))
            .powi_scalar(2)
            .sum()
    }
}

fn rows_of(table: &Param<Tensor<2>>, rows: std::ops::Range<usize>) -> Vec<u32> {
    let d = table.val().dims()[1];
    values(table.val())[rows.start * d..rows.end * d]
        .iter()
        .map(|v| v.to_bits())
        .collect()
}

/// Trains `steps` steps with either optimizer; returns the model.
fn train(
    model: Model,
    steps: usize,
    mut step: impl FnMut(Model, GradientsParams) -> Model,
) -> Model {
    let device = device();
    let mut model = model;
    for _ in 0..steps {
        let grads = collect_grads(model.loss(&[1, 7, 7, 3], &device).backward(), &model);
        model = step(model, grads);
    }
    model
}

#[test]
fn untouched_rows_are_bit_identical_and_both_paths_train() {
    let device = device();
    for runner in ["SparseAdamOptimizer", "ModuleOptimizer"] {
        let model = Model::new(&device);
        let before_untouched = rows_of(&model.table.weight, 10..50);
        let before_row_0 = rows_of(&model.table.weight, 0..1);
        let before_row_1 = rows_of(&model.table.weight, 1..2);
        let before_head = values(model.head.weight.val());
        let model = match runner {
            "SparseAdamOptimizer" => {
                let mut optim = SparseAdamConfig::new().init_optimizer();
                train(model, 3, |m, g| optim.try_step(1e-2, m, g).unwrap())
            }
            _ => {
                let mut optim: ModuleOptimizer = SparseAdamConfig::new().init();
                train(model, 3, |m, g| optim.step(1e-2, m, g))
            }
        };
        assert_eq!(
            rows_of(&model.table.weight, 10..50),
            before_untouched,
            "{runner}"
        );
        assert_eq!(rows_of(&model.table.weight, 0..1), before_row_0, "{runner}");
        assert_ne!(
            rows_of(&model.table.weight, 1..2),
            before_row_1,
            "{runner}: row 1 moved"
        );
        assert_ne!(
            values(model.head.weight.val()),
            before_head,
            "{runner}: the head moved"
        );
        assert!(model.table.weight.val().is_require_grad(), "{runner}");
        assert_eq!(
            model.table.collected_row_grads(),
            0,
            "{runner}: the step consumed the rows"
        );
    }
}

#[test]
fn both_optimizers_compute_the_same_numbers() {
    let device = device();
    let model = Model::new(&device);
    let mut ours = SparseAdamConfig::new().with_beta_2(0.99).init_optimizer();
    let mut burns: ModuleOptimizer = SparseAdamConfig::new().with_beta_2(0.99).init();
    let a = train(model.clone(), 4, |m, g| ours.step(3e-2, m, g));
    let b = train(model.clone(), 4, |m, g| burns.step(3e-2, m, g));
    assert_eq!(values(a.table.weight.val()), values(b.table.weight.val()));
    assert_eq!(values(a.head.weight.val()), values(b.head.weight.val()));
    let state = ours.state::<2>(a.table.weight.id).unwrap();
    let burn_state = &module_optimizer_states(&burns)[&a.table.weight.id.val()];
    assert_eq!(state.step, 4);
    assert_eq!(burn_state.0, 4);
    assert_eq!(values(state.exp_avg), burn_state.1);
    assert_eq!(values(state.exp_avg_sq), burn_state.2);
}

#[test]
fn the_rule_on_a_dense_gradient_touches_rows_with_a_non_zero_entry() {
    let device = plain_device();
    let rule = SparseAdamConfig::new().build();
    let param = Tensor::<2>::from_data([[1.0, 1.0], [2.0, 2.0]], &device);
    let grad = Tensor::<2>::from_data([[0.5, -0.5], [0.0, 0.0]], &device);
    let (param, state) = rule.step(0.1, param, grad, None);
    let v = values(param);
    assert!((v[0] - 0.9).abs() < 1e-6 && (v[1] - 1.1).abs() < 1e-6);
    assert_eq!(&v[2..], &[2.0, 2.0]);
    let state = state.unwrap();
    assert_eq!(state.step, 1);
    assert_eq!(values(state.exp_avg_sq)[2..], [0.0, 0.0]);
}

#[test]
fn a_refused_step_changes_nothing_and_gives_everything_back() {
    let device = device();
    let model = Model::new(&device);
    let mut optim = SparseAdamConfig::new().init_optimizer();
    let before = values(model.table.weight.val());
    let grads = collect_grads(model.loss(&[2], &device).backward(), &model);
    let rejected = optim.try_step(-1.0, model, grads).unwrap_err();
    assert_eq!(
        rejected.error.to_string(),
        "invalid learning rate: -1 (the step's learning rate must be finite and > 0)"
    );
    assert_eq!(values(rejected.module.table.weight.val()), before);
    assert_eq!(
        rejected.module.table.collected_row_grads(),
        1,
        "the rows wait"
    );
    // The same gradients, handed back, step at a valid learning rate.
    let model = optim
        .try_step(1e-2, rejected.module, rejected.grads)
        .unwrap();
    assert_ne!(values(model.table.weight.val()), before);
    assert_eq!(optim.state::<2>(model.table.weight.id).unwrap().step, 1);
}

#[test]
fn gradients_built_with_from_grads_are_an_error_naming_collect_grads() {
    let device = device();
    let model = Model::new(&device);
    let mut optim = SparseAdamConfig::new().init_optimizer();
    let grads = GradientsParams::from_grads(model.loss(&[2], &device).backward(), &model);
    let err = optim.try_step(1e-2, model, grads).unwrap_err().error;
    assert!(
        matches!(err, Error::RowGradientsNotCollected { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("collect_grads"));
}

#[test]
fn non_finite_gradients_follow_the_policy() {
    let device = device();
    let model = Model::new(&device);
    let poison = |model: &Model| {
        let ids = Tensor::<1, Int>::from_data([4], &device).reshape([1, 1]);
        let loss = model.table.forward(ids).sum().mul_scalar(f32::NAN);
        collect_grads(loss.backward(), model)
    };
    let mut error = SparseAdamConfig::new()
        .with_non_finite(NonFinite::Error)
        .init_optimizer();
    let err = error
        .try_step(1e-2, model.clone(), poison(&model))
        .unwrap_err();
    assert!(matches!(err.error, Error::NonFiniteGradient { .. }));
    model.table.clear_row_grads();

    let before = values(model.table.weight.val());
    let mut skip = SparseAdamConfig::new()
        .with_non_finite(NonFinite::Skip)
        .init_optimizer();
    let model = skip.try_step(1e-2, model.clone(), poison(&model)).unwrap();
    assert_eq!(values(model.table.weight.val()), before);
    assert!(skip.state::<2>(model.table.weight.id).is_none());

    let mut skip_burn: ModuleOptimizer = SparseAdamConfig::new()
        .with_non_finite(NonFinite::Skip)
        .init();
    let model = skip_burn.step(1e-2, model.clone(), poison(&model));
    assert_eq!(values(model.table.weight.val()), before);
}

#[test]
fn optimizers_keep_the_gradient_checkpointing_strategy() {
    let device = plain_device().autodiff().gradient_checkpointing();
    let model = Model::new(&device);
    let strategy = model.table.weight.val().gradient_checkpointing_strategy();
    let mut ours = SparseAdamConfig::new().init_optimizer();
    let mut burns: ModuleOptimizer = SparseAdamConfig::new().init();
    let mut model = model;
    for _ in 0..2 {
        let grads = collect_grads(model.loss(&[1, 2], &device).backward(), &model);
        model = ours.step(1e-2, model, grads);
        let grads = collect_grads(model.loss(&[1, 2], &device).backward(), &model);
        model = burns.step(1e-2, model, grads);
    }
    assert_eq!(
        model.table.weight.val().gradient_checkpointing_strategy(),
        strategy
    );
    assert_eq!(
        model.head.weight.val().gradient_checkpointing_strategy(),
        strategy
    );
}

#[test]
fn accumulated_passes_add_up_and_dropped_ones_are_dropped() {
    use burn::optim::GradientsAccumulator;
    let device = device();
    let model = Model::new(&device);
    // Two passes accumulated, one step: the rows of both count.
    let mut accumulator = GradientsAccumulator::new();
    for rows in [[1i64], [2]] {
        accumulator.accumulate(
            &model,
            collect_grads(model.loss(&rows, &device).backward(), &model),
        );
    }
    let mut optim: SparseAdamOptimizer = SparseAdamConfig::new().init_optimizer();
    let before = values(model.table.weight.val());
    let stepped = optim.step(1e-2, model.clone(), accumulator.grads());
    let after = values(stepped.table.weight.val());
    assert_ne!(after[4..8], before[4..8], "row 1 moved");
    assert_ne!(after[8..12], before[8..12], "row 2 moved");

    // A pass whose gradients are dropped without a step: its rows do not reach the next one.
    let model = stepped;
    let dropped = collect_grads(model.loss(&[5], &device).backward(), &model);
    drop(dropped);
    let grads = collect_grads(model.loss(&[6], &device).backward(), &model);
    let before = values(model.table.weight.val());
    let model = optim.step(1e-2, model, grads);
    let after = values(model.table.weight.val());
    assert_eq!(
        after[20..24],
        before[20..24],
        "row 5's dropped pass is not applied"
    );
    assert_ne!(after[24..28], before[24..28], "row 6 moved");
}

/// What code that inspects `GradientsParams` sees of a table: its marker (`[1, d + 1]`, its
/// value the count of backward passes), never the rows. Burn's gradient clipping in
/// `ModuleOptimizer` clips that marker, not the row gradients: a clipped marker still
/// announces its rows, which step unclipped.
#[test]
fn gradient_clipping_sees_the_marker_and_leaves_the_rows_alone() {
    use burn::grad_clipping::GradientClipping;
    let device = device();
    let model = Model::new(&device);
    let grads = || collect_grads(model.loss(&[1, 7], &device).backward(), &model);

    let g = grads();
    let marker = g.get::<2>(model.table.weight.id).unwrap();
    assert_eq!(marker.dims(), [1, 5]);
    assert_eq!(values(marker), vec![1.0; 5]);

    let mut clipped: ModuleOptimizer = SparseAdamConfig::new()
        .init()
        .with_grad_clipping(GradientClipping::Value(1e-3));
    let mut plain: ModuleOptimizer = SparseAdamConfig::new().init();
    let a = clipped.step(1e-2, model.clone(), g);
    let b = plain.step(1e-2, model.clone(), grads());
    assert_eq!(
        values(a.table.weight.val()),
        values(b.table.weight.val()),
        "the rows are not clipped"
    );
}

/// Gradients of several devices (here two passes on flex, as burn-train's multi-device
/// strategy hands them over) step as their sum: markers add up, rows of both count.
#[test]
fn step_multi_sums_the_devices_gradients_rows_included() {
    use burn::optim::{GradientsAccumulator, MultiGradientsParams};
    let device = device();
    let model = Model::new(&device);
    let pass = |rows: &[i64]| collect_grads(model.loss(rows, &device).backward(), &model);

    let multi = MultiGradientsParams {
        grads: vec![
            (pass(&[1, 2]), device.clone()),
            (pass(&[2, 9]), device.clone()),
        ],
    };
    let mut ours = SparseAdamConfig::new().init_optimizer();
    let a = ours.step_multi(1e-2, model.clone(), multi);

    let mut accumulator = GradientsAccumulator::new();
    accumulator.accumulate(&model, pass(&[1, 2]));
    accumulator.accumulate(&model, pass(&[2, 9]));
    let mut single = SparseAdamConfig::new().init_optimizer();
    let b = single.step(1e-2, model.clone(), accumulator.grads());
    assert_eq!(values(a.table.weight.val()), values(b.table.weight.val()));
    assert_eq!(values(a.head.weight.val()), values(b.head.weight.val()));

    let multi = MultiGradientsParams {
        grads: vec![
            (pass(&[1, 2]), device.clone()),
            (pass(&[2, 9]), device.clone()),
        ],
    };
    let mut burns: ModuleOptimizer = SparseAdamConfig::new().init();
    let c = burns.step_multi(1e-2, model.clone(), multi);
    assert_eq!(values(c.table.weight.val()), values(b.table.weight.val()));
}

/// A table moved with `to_device` or `fork` keeps its weight a leaf that trains.
#[test]
fn a_moved_table_still_trains() {
    let device = device();
    let model = Model::new(&device).to_device(&device).fork(&device);
    assert!(model.table.weight.val().is_require_grad());
    let before = values(model.table.weight.val());
    let grads = collect_grads(model.loss(&[4], &device).backward(), &model);
    let mut optim = SparseAdamConfig::new().init_optimizer();
    let model = optim.try_step(1e-2, model, grads).unwrap();
    assert_ne!(values(model.table.weight.val()), before);
}

/// `Model` with a stock `burn::nn::Embedding`: its table gets the table-sized gradient.
#[derive(Module, Debug)]
struct DenseModel {
    table: burn::nn::Embedding,
    head: Linear,
}

/// `SparseAdamConfig::grad_clipping` clips a table's row gradient as the sparse gradient it
/// stands for: three steps of the row path equal the dense path (a stock `Embedding`, whose
/// table-sized gradient Burn's `GradientClipping` clips), by value and by norm, and the
/// clipping changes the result.
#[test]
fn row_gradients_are_clipped_as_the_dense_gradient_they_stand_for() {
    use burn::optim::grad_clipping::GradientClippingConfig;
    let device = device();
    let model = Model::new(&device);
    let mut table = burn::nn::EmbeddingConfig::new(50, 4).init(&device);
    table.weight = Param::from_tensor(model.table.weight.val());
    let dense = DenseModel {
        table,
        head: model.head.clone(),
    };
    let rows: [i64; 5] = [1, 7, 7, 3, 40];
    let run_sparse = |config: &SparseAdamConfig| {
        let mut optim = config.init_optimizer();
        let mut model = model.clone();
        for _ in 0..3 {
            let grads = collect_grads(model.loss(&rows, &device).backward(), &model);
            model = optim.try_step(1e-2, model, grads).unwrap();
        }
        (
            values(model.table.weight.val()),
            values(model.head.weight.val()),
        )
    };
    let run_dense = |config: &SparseAdamConfig| {
        let mut optim = config.init_optimizer();
        let mut model = dense.clone();
        for _ in 0..3 {
            let ids = Tensor::<1, Int>::from_data(rows, &device).reshape([1, rows.len()]);
            let loss = model
                .head
                .forward(model.table.forward(ids))
                .powi_scalar(2)
                .sum();
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.try_step(1e-2, model, grads).unwrap();
        }
        (
            values(model.table.weight.val()),
            values(model.head.weight.val()),
        )
    };
    let close = |a: &[f32], b: &[f32], what: &str| {
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!(
                (x - y).abs() <= 1e-5 + 1e-4 * y.abs(),
                "{what}[{i}]: {x} vs {y}"
            );
        }
    };
    let unclipped = run_sparse(&SparseAdamConfig::new());
    for clipping in [
        GradientClippingConfig::Value(0.05),
        GradientClippingConfig::Norm(0.1),
    ] {
        let what = format!("{clipping:?}");
        let config = SparseAdamConfig::new().with_grad_clipping(Some(clipping));
        let (sparse_table, sparse_head) = run_sparse(&config);
        let (dense_table, dense_head) = run_dense(&config);
        close(&sparse_table, &dense_table, &format!("{what}: table"));
        close(&sparse_head, &dense_head, &format!("{what}: head"));
        let moved = sparse_table
            .iter()
            .zip(&unclipped.0)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(
            moved > 1e-4,
            "{what}: clipping changed nothing of the table"
        );
    }
}

#[test]
fn a_clipping_threshold_must_be_finite_and_positive() {
    use burn::optim::grad_clipping::GradientClippingConfig;
    let err = SparseAdamConfig::new()
        .with_grad_clipping(Some(GradientClippingConfig::Norm(-1.0)))
        .try_init_optimizer()
        .err()
        .unwrap();
    assert!(matches!(err, Error::InvalidGradClipping { kind: "Norm", value } if value == -1.0));
    assert_eq!(
        err.to_string(),
        "invalid gradient clipping threshold: GradientClippingConfig::Norm(-1) (SparseAdamConfig.grad_clipping's threshold must be finite and > 0)"
    );
}
