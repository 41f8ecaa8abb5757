//! Every error of the crate's fallible entry points: its message names the field or
//! parameter and the offending value, the infallible twin (`init`, `Optimizer::step`,
//! `forward`) panics with the same message, and nothing changed: the model and the optimizer
//! state are bit-identical to what they were, and the next valid step gives the result of a
//! run that never saw the error.

use burn::module::{Module, Param, ParamId};
use burn::optim::{GradientsParams, Optimizer};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Tensor;
use burn_sparse_adam::{
    collect_grads, Error, SparseAdamConfig, SparseAdamOptimizer, SparseEmbeddingConfig,
};
use burn_sparse_adam_tests::{
    assert_params_bits_eq, assert_states_bits_eq, copy_grads, expect_panic, indices,
    on_test_backend, param_values, snapshot, sparse_table, tensor, with_test_backend, Batch,
    DenseTower, Rng, Snapshot, SparseTower, TestBackend, TowerSpec,
};

/// Asserts that `message` names `field` and shows `value` as a word of its own.
#[track_caller]
fn assert_names(message: &str, field: &str, value: &str) {
    assert!(
        message.contains(field),
        "the message does not name {field:?}: {message}"
    );
    let words: Vec<&str> = message
        .split(|c: char| c.is_whitespace() || matches!(c, ':' | ',' | '(' | ')' | '[' | ']'))
        .collect();
    assert!(
        words.contains(&value),
        "the message does not show the value {value:?} as a word: {message}"
    );
}

/// The same float, NaN included.
fn same_f64(a: f64, b: f64) -> bool {
    a.to_bits() == b.to_bits()
}

const BAD_FLOATS: [f64; 5] = [0.0, -1e-3, f64::NAN, f64::INFINITY, f64::NEG_INFINITY];

// ---- the config --------------------------------------------------------------------------

/// Checks `config` fails with `check` in `validate`, `try_build` and `try_init`, all with one
/// message, and that `init` panics with it.
fn assert_config_rejected<B: AutodiffBackend>(
    _device: &B::Device,
    config: &SparseAdamConfig,
    check: &dyn Fn(&Error) -> bool,
) -> String {
    let err = config.validate().expect_err("validate rejects it");
    assert!(check(&err), "unexpected error: {err:?}");
    let message = err.to_string();
    let built = config.try_build().expect_err("try_build rejects it");
    assert!(check(&built), "try_build: {built:?}");
    assert_eq!(built.to_string(), message, "try_build's message");
    let init = config
        .try_init::<B, SparseTower<B>>()
        .err()
        .expect("try_init rejects it");
    assert!(check(&init), "try_init: {init:?}");
    assert_eq!(init.to_string(), message, "try_init's message");
    let panic = expect_panic(|| config.init::<B, SparseTower<B>>());
    assert_eq!(panic, message, "init panics with the same message");
    message
}

#[test]
fn invalid_epsilon_is_rejected_naming_the_field_and_the_value() {
    fn case<B: AutodiffBackend>(device: &B::Device) {
        for eps in [0.0, -0.0, -1e-8, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let config = SparseAdamConfig::new().with_epsilon(eps);
            let message = assert_config_rejected::<B>(
                device,
                &config,
                &|e| matches!(e, Error::InvalidEpsilon { value } if same_f64(*value, eps)),
            );
            assert_names(&message, "epsilon", &format!("{eps}"));
        }
        // Values that round to 0 in f32, the precision of the update, are rejected too
        // (PyTorch accepts them); the smallest positive f32 is valid.
        for eps in [f64::MIN_POSITIVE, 1e-50] {
            let config = SparseAdamConfig::new().with_epsilon(eps);
            let message = assert_config_rejected::<B>(
                device,
                &config,
                &|e| matches!(e, Error::EpsilonUnderflows { value } if same_f64(*value, eps)),
            );
            assert_names(&message, "epsilon", &format!("{eps:e}"));
        }
        for eps in [f32::from_bits(1) as f64, 1e-8] {
            assert!(
                SparseAdamConfig::new().with_epsilon(eps).validate().is_ok(),
                "{eps}"
            );
        }
    }
    on_test_backend!(case);
}

#[test]
fn betas_outside_zero_one_are_rejected_naming_the_field_and_the_value() {
    fn case<B: AutodiffBackend>(device: &B::Device) {
        for (field, index) in [("beta_1", 0usize), ("beta_2", 1usize)] {
            for beta in [
                -0.1,
                -f64::MIN_POSITIVE,
                1.0,
                1.5,
                f64::NAN,
                f64::INFINITY,
                f64::NEG_INFINITY,
            ] {
                let config = match index {
                    0 => SparseAdamConfig::new().with_beta_1(beta),
                    _ => SparseAdamConfig::new().with_beta_2(beta),
                };
                let message = assert_config_rejected::<B>(device, &config, &|e| {
                    matches!(e, Error::InvalidBeta { field: f, index: i, value }
                        if *f == field && *i == index && same_f64(*value, beta))
                });
                assert_names(&message, field, &format!("{beta}"));
            }
            // The bounds of [0, 1).
            for beta in [0.0, 1.0 - f64::EPSILON] {
                let config = match index {
                    0 => SparseAdamConfig::new().with_beta_1(beta),
                    _ => SparseAdamConfig::new().with_beta_2(beta),
                };
                assert!(config.validate().is_ok(), "{field} = {beta} is valid");
            }
        }
    }
    on_test_backend!(case);
}

// ---- a training scenario -------------------------------------------------------------------

const LR: f64 = 0.05;

fn spec() -> TowerSpec {
    TowerSpec::random(8, 3, 2, 31)
}

fn batches() -> Vec<Batch> {
    let mut rng = Rng::new(32);
    // Rows 6 and 7 are never looked up.
    (0..2)
        .map(|_| Batch::random(&mut rng, 6, 2, 3, 2))
        .collect()
}

#[track_caller]
fn assert_unchanged(now: &Snapshot, before: &Snapshot, what: &str) {
    assert_params_bits_eq(&now.0, &before.0, &format!("{what}: the model"));
    assert_states_bits_eq(&now.1, &before.1, &format!("{what}: the optimizer state"));
}

/// Two valid steps, never interrupted.
fn uninterrupted<B: AutodiffBackend>(device: &B::Device) -> Snapshot {
    let mut model = spec().sparse::<B>(device);
    let mut optim: SparseAdamOptimizer<SparseTower<B>, B> = SparseAdamConfig::new().init();
    for batch in batches() {
        let grads = batch.grads(&model, device);
        model = optim.step(LR, model, grads);
    }
    snapshot(&optim, &model)
}

/// The first valid step, and the gradients of the second batch (row gradients collected on
/// the table, waiting for the step).
fn after_one_step<B: AutodiffBackend>(
    device: &B::Device,
) -> (
    SparseTower<B>,
    SparseAdamOptimizer<SparseTower<B>, B>,
    GradientsParams,
) {
    let batches = batches();
    let model = spec().sparse::<B>(device);
    let mut optim: SparseAdamOptimizer<SparseTower<B>, B> = SparseAdamConfig::new().init();
    let grads = batches[0].grads(&model, device);
    let model = optim.step(LR, model, grads);
    let grads = batches[1].grads(&model, device);
    (model, optim, grads)
}

// ---- the learning rate ---------------------------------------------------------------------

fn invalid_learning_rate<B: AutodiffBackend>(device: &B::Device, lr: f64) {
    let expected = uninterrupted::<B>(device);
    let (model, mut optim, grads) = after_one_step::<B>(device);
    let spare = copy_grads(&grads, &model);
    let before = snapshot(&optim, &model);

    let err = optim
        .try_step(lr, model.clone(), grads)
        .expect_err("try_step rejects it")
        .error;
    assert!(
        matches!(err, Error::InvalidLearningRate { value } if same_f64(value, lr)),
        "{err:?}"
    );
    let message = err.to_string();
    assert_names(&message, "learning rate", &format!("{lr}"));
    assert_unchanged(&snapshot(&optim, &model), &before, "after try_step");

    let again = copy_grads(&spare, &model);
    let panic = expect_panic(|| optim.step(lr, model.clone(), again));
    assert_eq!(
        panic, message,
        "Optimizer::step panics with the same message"
    );
    assert_unchanged(&snapshot(&optim, &model), &before, "after Optimizer::step");

    // The row gradients still wait on the table: the next valid step applies them.
    let model = optim.try_step(LR, model, spare).expect("a valid step");
    assert_unchanged(
        &snapshot(&optim, &model),
        &expected,
        "the next valid step vs the uninterrupted run",
    );
}

#[test]
fn invalid_learning_rates_change_nothing() {
    for lr in BAD_FLOATS {
        with_test_backend!(invalid_learning_rate(lr));
    }
}

// ---- lookups -------------------------------------------------------------------------------

fn index_out_of_range<B: AutodiffBackend>(device: &B::Device, bad: i64) {
    let n = spec().n;
    let expected = uninterrupted::<B>(device);
    let batches = batches();
    let model = spec().sparse::<B>(device);
    let mut optim: SparseAdamOptimizer<SparseTower<B>, B> = SparseAdamConfig::new().init();
    let grads = batches[0].grads(&model, device);
    let model = optim.step(LR, model, grads);
    let before = snapshot(&optim, &model);

    let lookup = || indices::<B>(&[1, bad, 2, 1], [2, 2], device);
    let err = model
        .table
        .try_forward(lookup())
        .expect_err("try_forward rejects it");
    assert!(
        matches!(err, Error::IndexOutOfRange { index, n_embedding } if index == bad && n_embedding == n),
        "{err:?}"
    );
    let message = err.to_string();
    assert_names(&message, "index", &format!("{bad}"));
    assert_names(&message, "rows", &format!("{n}"));
    let panic = expect_panic(|| model.table.forward(lookup()));
    assert_eq!(panic, message, "forward panics with the same message");

    // Nothing was recorded: nothing waits for collect_grads (a step with Burn's own
    // from_grads, which fails when a lookup waits, goes through), and the model is unchanged.
    assert_eq!(model.table.pending_lookups(), 0, "no lookup recorded");
    assert_unchanged(
        &snapshot(&optim, &model),
        &before,
        "after the rejected lookups",
    );
    let mut probe: SparseAdamOptimizer<SparseTower<B>, B> = SparseAdamConfig::new().init();
    let head_only = model
        .head
        .forward(Tensor::<B, 2>::ones([1, spec().d], device))
        .sum();
    let grads = GradientsParams::from_grads(head_only.backward(), &model);
    let _ = probe
        .try_step(LR, model.clone(), grads)
        .expect("nothing waits for collect_grads");

    // The next valid step is the uninterrupted one.
    let grads = batches[1].grads(&model, device);
    let model = optim.try_step(LR, model, grads).expect("a valid step");
    assert_unchanged(
        &snapshot(&optim, &model),
        &expected,
        "the next valid step vs the uninterrupted run",
    );

    // Without autodiff too.
    let inner = sparse_table::<B::InnerBackend>(n, spec().d, &spec().table, None, device);
    let err = inner
        .try_forward(indices::<B::InnerBackend>(&[bad], [1, 1], device))
        .expect_err("try_forward rejects it without autodiff");
    assert_eq!(err.to_string(), message);
}

#[test]
fn indices_out_of_range_record_nothing() {
    let n = spec().n as i64;
    for bad in [-1, n, n + 5, i32::MIN as i64] {
        with_test_backend!(index_out_of_range(bad));
    }
}

#[test]
fn padding_idx_outside_the_table_is_rejected() {
    fn case<B: AutodiffBackend>(device: &B::Device) {
        let (n, d) = (5, 2);
        for p in [n, n + 3] {
            let config = SparseEmbeddingConfig::new(n, d).with_padding_idx(Some(p));
            let err = config
                .try_init::<B>(device)
                .expect_err("try_init rejects it");
            assert!(
                matches!(err, Error::PaddingIdxOutOfRange { padding_idx, n_embedding } if padding_idx == p && n_embedding == n),
                "{err:?}"
            );
            let message = err.to_string();
            assert_names(&message, "padding_idx", &format!("{p}"));
            let panic = expect_panic(|| config.init::<B>(device));
            assert_eq!(panic, message, "init panics with the same message");
        }
        let last = SparseEmbeddingConfig::new(n, d)
            .with_padding_idx(Some(n - 1))
            .try_init::<B>(device);
        assert_eq!(
            last.expect("the last row is a valid padding_idx")
                .padding_idx(),
            Some(n - 1)
        );
    }
    on_test_backend!(case);
}

// ---- gradients of the wrong shape ----------------------------------------------------------

fn wrong_gradient_shape<B: AutodiffBackend>(device: &B::Device) {
    let expected = uninterrupted::<B>(device);
    let (model, mut optim, grads) = after_one_step::<B>(device);
    let spare = copy_grads(&grads, &model);
    drop(grads);
    let before = snapshot(&optim, &model);
    let (n, d, d_out) = (spec().n, spec().d, spec().d_out);
    let table_id = model.table.weight.id;
    let head_id = model.head.weight.id;
    let bias_id = model.head.bias.as_ref().expect("a bias").id;

    /// Registers a gradient of the wrong shape.
    type Wrong<B> = Box<dyn Fn(&mut GradientsParams, &burn::tensor::Device<B>)>;
    /// The parameter, its shape, the wrong shape, and how to register it.
    type Case<B> = (ParamId, Vec<usize>, Vec<usize>, Wrong<B>);
    let cases: Vec<Case<B::InnerBackend>> = vec![
        // The table, which comes after the head in the model: the head's valid gradient
        // must not have been applied either.
        (
            table_id,
            vec![n, d],
            vec![n + 1, d],
            Box::new(move |g, dev| {
                g.register(
                    table_id,
                    Tensor::<B::InnerBackend, 2>::zeros([n + 1, d], dev),
                )
            }),
        ),
        (
            table_id,
            vec![n, d],
            vec![1, d + 2],
            Box::new(move |g, dev| {
                g.register(
                    table_id,
                    Tensor::<B::InnerBackend, 2>::ones([1, d + 2], dev),
                )
            }),
        ),
        (
            head_id,
            vec![d, d_out],
            vec![d, d_out + 1],
            Box::new(move |g, dev| {
                g.register(
                    head_id,
                    Tensor::<B::InnerBackend, 2>::ones([d, d_out + 1], dev),
                )
            }),
        ),
        (
            bias_id,
            vec![d_out],
            vec![d_out + 3],
            Box::new(move |g, dev| {
                g.register(
                    bias_id,
                    Tensor::<B::InnerBackend, 1>::ones([d_out + 3], dev),
                )
            }),
        ),
    ];
    for (param, expected_shape, found, wrong) in &cases {
        let mut grads = copy_grads(&spare, &model);
        wrong(&mut grads, device);
        let err = optim
            .try_step(LR, model.clone(), grads)
            .expect_err("try_step rejects it")
            .error;
        assert!(
            matches!(&err, Error::GradientShape { param: p, expected: e, found: f }
                if p == param && e == expected_shape && f == found),
            "{err:?}"
        );
        let message = err.to_string();
        assert_names(&message, "gradient", &param.to_string());
        assert!(
            message.contains(&format!("{found:?}")),
            "the found shape: {message}"
        );
        assert!(
            message.contains(&format!("{expected_shape:?}")),
            "the expected shape: {message}"
        );
        assert_unchanged(
            &snapshot(&optim, &model),
            &before,
            &format!("after the gradient {found:?}"),
        );

        let mut grads = copy_grads(&spare, &model);
        wrong(&mut grads, device);
        let panic = expect_panic(|| optim.step(LR, model.clone(), grads));
        assert_eq!(
            panic, message,
            "Optimizer::step panics with the same message"
        );
        assert_unchanged(
            &snapshot(&optim, &model),
            &before,
            &format!("after the panic on {found:?}"),
        );
    }

    let model = optim.try_step(LR, model, spare).expect("a valid step");
    assert_unchanged(
        &snapshot(&optim, &model),
        &expected,
        "the next valid step vs the uninterrupted run",
    );
}

#[test]
fn gradients_of_the_wrong_shape_change_nothing() {
    on_test_backend!(wrong_gradient_shape);
}

/// A stock `Embedding` has no row gradients: a gradient shaped like the marker is just the
/// wrong shape.
#[test]
fn a_marker_shaped_gradient_for_a_stock_embedding_is_the_wrong_shape() {
    fn case<B: AutodiffBackend>(device: &B::Device) {
        let spec = spec();
        let model: DenseTower<B> = spec.dense(device);
        let mut optim: SparseAdamOptimizer<DenseTower<B>, B> = SparseAdamConfig::new().init();
        let id = model.table.weight.id;
        let mut grads = GradientsParams::new();
        grads.register(
            id,
            Tensor::<B::InnerBackend, 2>::ones([1, spec.d + 1], device),
        );
        let before = param_values(&model);
        let err = optim
            .try_step(LR, model.clone(), grads)
            .expect_err("rejected")
            .error;
        assert!(
            matches!(&err, Error::GradientShape { param, found, .. } if *param == id && *found == vec![1, spec.d + 1]),
            "{err:?}"
        );
        assert_params_bits_eq(&param_values(&model), &before, "the model");
        assert!(optim.state::<2>(id).is_none(), "no state was created");
    }
    on_test_backend!(case);
}

// ---- loaded records ------------------------------------------------------------------------

fn mismatched_record<B: AutodiffBackend>(device: &B::Device) {
    let spec = spec();
    let batches = batches();
    // Run A: two steps, uninterrupted.
    let model_a = spec.sparse::<B>(device);
    let mut optim_a: SparseAdamOptimizer<SparseTower<B>, B> = SparseAdamConfig::new().init();
    let grads = batches[0].grads(&model_a, device);
    let model_a = optim_a.step(LR, model_a, grads);
    let record = optim_a.to_record();
    let model_record = || model_a.clone().into_record();
    let (record_b, record_c) = (model_record(), model_record());
    let grads = batches[1].grads(&model_a, device);
    let model_a = optim_a.step(LR, model_a, grads);

    // A model whose table has the same parameter id but two more rows.
    let mut model_b = spec.sparse::<B>(device).load_record(record_b);
    let id = model_b.table.weight.id;
    let wider = Rng::new(33).uniform_vec((spec.n + 2) * spec.d, -1.0, 1.0);
    let mut table = sparse_table::<B>(spec.n + 2, spec.d, &wider, None, device);
    table.weight = Param::initialized(
        id,
        tensor::<B, 2>(&wider, [spec.n + 2, spec.d], device).require_grad(),
    );
    model_b.table = table;

    let mut optim_b: SparseAdamOptimizer<SparseTower<B>, B> = SparseAdamConfig::new().init();
    optim_b = optim_b.load_record(record);
    let before = snapshot(&optim_b, &model_b);
    let loaded = before.1.clone();
    let grads = batches[1].grads(&model_b, device);
    let spare = copy_grads(&grads, &model_b);
    let err = optim_b
        .try_step(LR, model_b.clone(), grads)
        .expect_err("the record does not fit")
        .error;
    assert!(
        matches!(&err, Error::StateShape { param, expected, found }
            if *param == id && *expected == vec![spec.n + 2, spec.d] && *found == vec![spec.n, spec.d]),
        "{err:?}"
    );
    let message = err.to_string();
    assert_names(&message, "state", &id.to_string());
    assert!(
        message.contains(&format!("{:?}", vec![spec.n, spec.d])),
        "{message}"
    );
    assert!(
        message.contains(&format!("{:?}", vec![spec.n + 2, spec.d])),
        "{message}"
    );
    assert_unchanged(
        &snapshot(&optim_b, &model_b),
        &before,
        "after the rejected step",
    );
    let panic = expect_panic(|| optim_b.step(LR, model_b.clone(), spare));
    assert_eq!(
        panic, message,
        "Optimizer::step panics with the same message"
    );
    assert_unchanged(&snapshot(&optim_b, &model_b), &before, "after the panic");

    // The loaded states are intact: with the model they belong to, the next valid step is
    // run A's second step.
    let model_c = spec.sparse::<B>(device).load_record(record_c);
    let grads = batches[1].grads(&model_c, device);
    let model_c = optim_b.try_step(LR, model_c, grads).expect("a valid step");
    assert_unchanged(
        &snapshot(&optim_b, &model_c),
        &snapshot(&optim_a, &model_a),
        "vs the uninterrupted run",
    );
    assert!(
        loaded.iter().all(|s| s.as_ref().map(|s| s.0) == Some(1)),
        "the loaded states had one step"
    );
}

#[test]
fn a_loaded_state_that_does_not_fit_the_model_changes_nothing() {
    on_test_backend!(mismatched_record);
}

// ---- GradientsParams::from_grads after a SparseEmbedding lookup ----------------------------

fn not_collected<B: AutodiffBackend>(device: &B::Device) {
    let expected = uninterrupted::<B>(device);
    let batches = batches();
    let model = spec().sparse::<B>(device);
    let mut optim: SparseAdamOptimizer<SparseTower<B>, B> = SparseAdamConfig::new().init();
    let grads = batches[0].grads(&model, device);
    let model = optim.step(LR, model, grads);
    let before = snapshot(&optim, &model);

    let loss = batches[1].loss(&model, device);
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    let spare = copy_grads(&grads, &model);
    let err = optim
        .try_step(LR, model.clone(), grads)
        .expect_err("rejected")
        .error;
    let id = model.table.weight.id;
    assert!(
        matches!(&err, Error::RowGradientsNotCollected { param } if *param == id),
        "{err:?}"
    );
    let message = err.to_string();
    assert_names(&message, "parameter", &id.to_string());
    assert!(
        message.contains("collect_grads"),
        "the message names the fix: {message}"
    );
    assert_unchanged(&snapshot(&optim, &model), &before, "after try_step");
    let panic = expect_panic(|| optim.step(LR, model.clone(), spare));
    assert_eq!(
        panic, message,
        "Optimizer::step panics with the same message"
    );
    assert_unchanged(&snapshot(&optim, &model), &before, "after Optimizer::step");

    // Done right, the step is the uninterrupted one: the lookup of the rejected pass is
    // dropped (its gradient was never collected), not applied twice.
    let grads = collect_grads(batches[1].loss(&model, device).backward(), &model);
    let model = optim.try_step(LR, model, grads).expect("a valid step");
    assert_unchanged(
        &snapshot(&optim, &model),
        &expected,
        "the next valid step vs the uninterrupted run",
    );
}

#[test]
fn from_grads_after_a_lookup_is_row_gradients_not_collected() {
    on_test_backend!(not_collected);
}

/// A table larger than the largest buffer its device allocates (burn-wgpu: one storage
/// binding, 128 MiB on lavapipe) is refused by `try_init` before anything is allocated, and
/// by `try_forward` for a table made elsewhere and moved there, naming the limit and the
/// table's bytes; a table of the most rows the limit allows trains. burn-ndarray has no such
/// limit: the large table is made (lazily, nothing allocated here).
#[test]
fn a_table_over_the_devices_buffer_limit_is_refused_before_training() {
    on_test_backend!(over_the_buffer_limit);
}

fn over_the_buffer_limit<B: AutodiffBackend>(device: &B::Device) {
    let (rows, width) = (600_000, 64);
    let config = SparseEmbeddingConfig::new(rows, width);
    let limit = match config.try_init::<B>(device) {
        // burn-ndarray, or an adapter whose binding holds the table: it trains.
        Ok(table) => {
            if TestBackend::selected() != TestBackend::NdArray {
                assert!(trains(table, rows as i64 - 1, device));
            }
            return;
        }
        Err(Error::TableOverBindingLimit {
            rows: r,
            width: w,
            bytes,
            limit,
        }) => {
            assert_eq!((r, w, bytes), (rows as u64, width as u64, 153_600_000));
            assert!(limit < bytes);
            limit
        }
        Err(other) => panic!("refused for another reason: {other}"),
    };
    let message = config.try_init::<B>(device).unwrap_err().to_string();
    let max_rows = limit / 256;
    assert!(
        message.contains(&format!(
            "takes 153600000 bytes, over the {limit}-byte limit"
        )) && message.contains(&format!("at most {max_rows} rows")),
        "{message}"
    );
    assert_eq!(expect_panic(|| config.init::<B>(device)), message);
    // A table loaded from a stock `Embedding`'s record: refused at its first lookup.
    let stock = burn::nn::EmbeddingConfig::new(rows, width).init::<B>(device);
    let loaded = SparseEmbeddingConfig::new(1, width)
        .init::<B>(device)
        .load_record(stock.into_record());
    let error = loaded
        .try_forward(indices::<B>(&[0, 1], [1, 2], device))
        .unwrap_err();
    assert!(
        matches!(
            error,
            Error::TableOverBindingLimit {
                bytes: 153_600_000,
                ..
            }
        ),
        "{error}"
    );
    // The most rows one buffer holds train, the last one included.
    let table = SparseEmbeddingConfig::new(max_rows as usize, width).init::<B>(device);
    assert!(trains(table, max_rows as i64 - 1, device));
}

/// Whether one step on a lookup of rows 0 and `last` changes both, with finite values.
fn trains<B: AutodiffBackend>(
    table: burn_sparse_adam::SparseEmbedding<B>,
    last: i64,
    device: &B::Device,
) -> bool {
    let ids = indices::<B>(&[0, last], [1, 2], device);
    let before = table
        .forward(ids.clone())
        .into_data()
        .to_vec::<f32>()
        .unwrap();
    let grads = collect_grads(table.forward(ids.clone()).sum().backward(), &table);
    let table = SparseAdamConfig::new().init().step(1e-2, table, grads);
    let after = table.forward(ids).into_data().to_vec::<f32>().unwrap();
    before
        .iter()
        .zip(&after)
        .all(|(b, a)| a.is_finite() && a != b)
}
