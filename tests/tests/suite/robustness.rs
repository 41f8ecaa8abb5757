//! Bad input: non-finite gradients under each `NonFinite` choice, on both paths, and
//! records that do not fit the model.
//!
//! Every error variant of `burn_sparse_adam::Error` has a test that checks its message and
//! that nothing changed:
//!
//! | variant | test |
//! |---|---|
//! | `InvalidEpsilon`, `InvalidBeta` | `errors.rs` (config); `groups.rs` (in a group) |
//! | `InvalidLearningRate` | `errors.rs` (step); `groups.rs` (a group's rate, at add and at the step) |
//! | `IndexOutOfRange`, `PaddingIdxOutOfRange`, `GradientShape`, `RowGradientsNotCollected` | `errors.rs` |
//! | `StateShape` | `errors.rs` (a state with a gradient); here (a state without one) |
//! | `StateRank`, `RecordParamNotInModel`, `NonFiniteGradient` | here |
//! | `InGroup`, `ParamInTwoGroups`, `DuplicateGroupName`, `RecordGroupsMismatch`, `GroupParamNotInModel` | `groups.rs` |

use burn::module::{Module, Param, ParamId};
use burn::nn::Linear;
use burn::optim::{GradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::Tensor;
use burn_sparse_adam::{
    collect_grads, Error, NonFinite, Rejected, SparseAdamConfig, SparseAdamOptimizer,
};
use burn_sparse_adam_tests::{
    assert_bits_eq, assert_close, assert_params_bits_eq, assert_params_close,
    assert_saved_states_bits_eq, assert_states_bits_eq, assert_states_close, expect_panic,
    on_test_backend, param_values, row, saved_states, sparse_table, state_values, tensor, twin,
    weighted_sum, DenseTower, RefSparseAdam, RefTower, Rng, SparseTower, SplitBatch, SplitTower,
    StateValues, Tower, TowerSpec,
};

const LR: f64 = 0.05;

fn config(non_finite: NonFinite) -> SparseAdamConfig {
    SparseAdamConfig::new()
        .with_beta_2(0.99)
        .with_non_finite(non_finite)
}

fn reference() -> RefSparseAdam {
    RefSparseAdam {
        beta_2: 0.99,
        ..RefSparseAdam::default()
    }
}

/// Which table a tower has.
trait Path {
    type Model<B: AutodiffBackend>: SplitTower<B>;
    /// Whether the table takes the row path.
    const ROWS: bool;
    fn build<B: AutodiffBackend>(spec: &TowerSpec, device: &B::Device) -> Self::Model<B>;
}

struct Rows;
struct Dense;

impl Path for Rows {
    type Model<B: AutodiffBackend> = SparseTower<B>;
    const ROWS: bool = true;
    fn build<B: AutodiffBackend>(spec: &TowerSpec, device: &B::Device) -> SparseTower<B> {
        spec.sparse(device)
    }
}

impl Path for Dense {
    type Model<B: AutodiffBackend> = DenseTower<B>;
    const ROWS: bool = false;
    fn build<B: AutodiffBackend>(spec: &TowerSpec, device: &B::Device) -> DenseTower<B> {
        spec.dense(device)
    }
}

fn spec() -> TowerSpec {
    TowerSpec::random(6, 3, 2, 51)
}

/// Two clean batches (looking up rows 0..5) around a bad one: rows 1 and 3 (twice), with
/// `bad` in the gradient of row 1, column 1. Rows 0, 2, 4 and 5 are untouched by it.
fn batches(bad: f32) -> [SplitBatch; 3] {
    let spec = spec();
    let mut rng = Rng::new(52);
    let clean_0 = SplitBatch::random(&mut rng, &spec, 4, 5);
    let clean_2 = SplitBatch::random(&mut rng, &spec, 4, 5);
    let mut bad_1 = SplitBatch::random(&mut rng, &spec, 3, 5);
    bad_1.indices = vec![1, 3, 3];
    bad_1.table_coefficients = vec![0.5, bad, -0.25, 0.125, 0.25, 0.5, 0.25, 0.25, 0.25];
    [clean_0, bad_1, clean_2]
}

/// Entries where `expected` is NaN or ±inf must be the same in `actual`; the others within
/// the conformance tolerance.
#[track_caller]
fn assert_close_or_same_non_finite(actual: &[f32], expected: &[f32], what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: lengths");
    for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        if e.is_nan() {
            assert!(a.is_nan(), "{what}[{i}]: {a}, expected NaN");
        } else if e.is_infinite() {
            assert_eq!(a, e, "{what}[{i}]");
        } else {
            assert_close(&[a], &[e], &format!("{what}[{i}]"));
        }
    }
}

fn step<B: AutodiffBackend, T: SplitTower<B>>(
    optim: &mut SparseAdamOptimizer<T, B>,
    model: T,
    batch: &SplitBatch,
    device: &B::Device,
) -> T {
    let grads = batch.grads(&model, device);
    optim.try_step(LR, model, grads).expect("a valid step")
}

fn steps_of(states: &[Option<StateValues>]) -> Vec<Option<usize>> {
    states.iter().map(|s| s.as_ref().map(|s| s.0)).collect()
}

// ---- non-finite gradients -------------------------------------------------------------------

fn non_finite<B: AutodiffBackend, P: Path>(device: &B::Device, mode: NonFinite, bad: f32) {
    let spec = spec();
    let [clean_0, bad_1, clean_2] = batches(bad);
    let hyper = reference();
    let h = [(&hyper, LR); 3];
    let d = spec.d;
    let what = |s: &str| {
        format!(
            "{s} ({}, {bad}, {mode:?})",
            if P::ROWS { "row path" } else { "dense path" }
        )
    };

    let mut optim: SparseAdamOptimizer<P::Model<B>, B> = config(mode).init();
    let model = step(&mut optim, P::build::<B>(&spec, device), &clean_0, device);
    let table_id = model.table_weight().id;
    let before = (param_values(&model), state_values(&optim, &model));
    let mut expected = RefTower::new(&spec, None, P::ROWS);
    expected.step(&clean_0, h);

    match mode {
        NonFinite::Propagate => {
            // PyTorch's behaviour: the value reaches the moments and the parameter of the
            // touched row (NaN there), and nothing else.
            let model = step(&mut optim, model, &bad_1, device);
            expected.step(&bad_1, h);
            let params = param_values(&model);
            let states = state_values(&optim, &model);
            for (i, (p, e)) in params.iter().zip(expected.params()).enumerate() {
                assert_close_or_same_non_finite(p, &e, &what(&format!("parameter {i}")));
            }
            for (i, (s, e)) in states.iter().zip(expected.states()).enumerate() {
                let (s, e) = (s.as_ref().unwrap(), e.unwrap());
                assert_eq!(s.0, e.0, "{}", what("step count"));
                assert_close_or_same_non_finite(&s.1, &e.1, &what(&format!("exp_avg {i}")));
                assert_close_or_same_non_finite(&s.2, &e.2, &what(&format!("exp_avg_sq {i}")));
            }
            let table = &params[2];
            let nan: Vec<usize> = (0..table.len()).filter(|&i| table[i].is_nan()).collect();
            assert_eq!(nan, [d + 1], "{}", what("NaN only in the bad entry"));
            for r in [0, 2, 4, 5] {
                assert_bits_eq(
                    row(table, d, r),
                    row(&before.0[2], d, r),
                    &what(&format!("untouched row {r}")),
                );
                let (now, then) = (states[2].as_ref().unwrap(), before.1[2].as_ref().unwrap());
                assert_bits_eq(
                    row(&now.1, d, r),
                    row(&then.1, d, r),
                    &what(&format!("exp_avg row {r}")),
                );
                assert_bits_eq(
                    row(&now.2, d, r),
                    row(&then.2, d, r),
                    &what(&format!("exp_avg_sq row {r}")),
                );
            }
        }
        NonFinite::Skip => {
            // The table keeps its values, moments and count; the head steps.
            let model = step(&mut optim, model, &bad_1, device);
            let table = expected.table.clone();
            expected.step(&bad_1, h);
            expected.table = table;
            let params = param_values(&model);
            let states = state_values(&optim, &model);
            assert_bits_eq(&params[2], &before.0[2], &what("the skipped table"));
            assert_states_bits_eq(
                &states[2..],
                &before.1[2..],
                &what("the skipped table's state"),
            );
            assert_params_close(&params, &expected.params(), &what("after the skipped step"));
            assert_states_close(
                &states,
                &expected.states(),
                &what("states after the skipped step"),
            );
            assert_eq!(steps_of(&states), [Some(2), Some(2), Some(1)]);
            // The next clean step is not affected by the dropped gradient.
            let model = step(&mut optim, model, &clean_2, device);
            expected.step(&clean_2, h);
            let states = state_values(&optim, &model);
            assert_params_close(
                &param_values(&model),
                &expected.params(),
                &what("the next clean step"),
            );
            assert_states_close(
                &states,
                &expected.states(),
                &what("the next clean step's states"),
            );
            assert_eq!(steps_of(&states), [Some(3), Some(3), Some(2)]);
        }
        NonFinite::Error => {
            let grads = bad_1.grads(&model, device);
            // Refused, with the model and the gradients handed back.
            let Rejected {
                error: err,
                module: model,
                grads,
            } = optim.try_step(LR, model, grads).unwrap_err();
            assert_eq!(
                err,
                Error::NonFiniteGradient { param: table_id },
                "{}",
                what("the error")
            );
            let message = format!(
                "the gradient of parameter {table_id} holds non-finite values (NaN or ±inf); nothing was changed (SparseAdamConfig.non_finite = Error)"
            );
            assert_eq!(err.to_string(), message);
            let unchanged =
                |optim: &SparseAdamOptimizer<P::Model<B>, B>, model: &P::Model<B>, when: &str| {
                    assert_params_bits_eq(
                        &param_values(model),
                        &before.0,
                        &what(&format!("the model {when}")),
                    );
                    assert_states_bits_eq(
                        &state_values(optim, model),
                        &before.1,
                        &what(&format!("the states {when}")),
                    );
                };
            unchanged(&optim, &model, "after the error");
            // Nothing changed, the table's pending rows included: the same gradients are
            // refused again, and `Optimizer::step` panics with the same message.
            let Rejected {
                error: again,
                module: model,
                grads,
            } = optim.try_step(LR, model, grads).unwrap_err();
            assert_eq!(again, err, "{}", what("the same gradients again"));
            unchanged(&optim, &model, "after the second error");
            let panic = expect_panic(|| optim.step(LR, model.clone(), grads));
            assert_eq!(
                panic, message,
                "Optimizer::step panics with the same message"
            );
            unchanged(&optim, &model, "after the panic");
            // The next clean step is the uninterrupted run's.
            let model = step(&mut optim, model, &clean_2, device);
            let mut uninterrupted: SparseAdamOptimizer<P::Model<B>, B> = config(mode).init();
            let other = step(
                &mut uninterrupted,
                P::build::<B>(&spec, device),
                &clean_0,
                device,
            );
            let other = step(&mut uninterrupted, other, &clean_2, device);
            assert_params_bits_eq(
                &param_values(&model),
                &param_values(&other),
                &what("vs the uninterrupted run"),
            );
            assert_states_bits_eq(
                &state_values(&optim, &model),
                &state_values(&uninterrupted, &other),
                &what("states vs the uninterrupted run"),
            );
        }
    }
}

macro_rules! non_finite_tests {
    ($($name:ident: $path:ident, $mode:ident, $bad:expr;)*) => {$(
        #[test]
        fn $name() {
            fn case<B: AutodiffBackend>(device: &B::Device) {
                non_finite::<B, $path>(device, NonFinite::$mode, $bad);
            }
            on_test_backend!(case);
        }
    )*};
}

non_finite_tests! {
    propagate_nan_on_the_row_path: Rows, Propagate, f32::NAN;
    propagate_inf_on_the_row_path: Rows, Propagate, f32::INFINITY;
    propagate_neg_inf_on_the_row_path: Rows, Propagate, f32::NEG_INFINITY;
    propagate_nan_on_the_dense_path: Dense, Propagate, f32::NAN;
    propagate_inf_on_the_dense_path: Dense, Propagate, f32::INFINITY;
    propagate_neg_inf_on_the_dense_path: Dense, Propagate, f32::NEG_INFINITY;
    skip_nan_on_the_row_path: Rows, Skip, f32::NAN;
    skip_inf_on_the_row_path: Rows, Skip, f32::INFINITY;
    skip_neg_inf_on_the_row_path: Rows, Skip, f32::NEG_INFINITY;
    skip_nan_on_the_dense_path: Dense, Skip, f32::NAN;
    skip_inf_on_the_dense_path: Dense, Skip, f32::INFINITY;
    skip_neg_inf_on_the_dense_path: Dense, Skip, f32::NEG_INFINITY;
    error_nan_on_the_row_path: Rows, Error, f32::NAN;
    error_inf_on_the_row_path: Rows, Error, f32::INFINITY;
    error_neg_inf_on_the_row_path: Rows, Error, f32::NEG_INFINITY;
    error_nan_on_the_dense_path: Dense, Error, f32::NAN;
    error_inf_on_the_dense_path: Dense, Error, f32::INFINITY;
    error_neg_inf_on_the_dense_path: Dense, Error, f32::NEG_INFINITY;
}

/// `NonFinite::Error` for a dense parameter (the head's weight) while the table's row
/// gradients are clean: the step is refused naming the weight, and hands back the model and
/// the gradients with nothing changed, the table's collected rows included. With the bad
/// gradient taken out, the handed-back gradients step exactly as the same gradients would
/// have without the refused attempt (the table's rows are applied).
#[test]
fn a_refused_step_hands_back_the_gradients_and_keeps_the_pending_rows() {
    fn case<B: AutodiffBackend>(device: &B::Device) {
        let spec = spec();
        let [clean_0, mut bad_head, _] = batches(0.75);
        bad_head.head_input[2] = f32::INFINITY;

        let mut optim: SparseAdamOptimizer<SparseTower<B>, B> = config(NonFinite::Error).init();
        let model = step(&mut optim, spec.sparse::<B>(device), &clean_0, device);
        let weight = model.head.weight.id;

        // Without a refused attempt: the same gradients, the weight's taken out.
        let mut uninterrupted = optim.clone();
        let other = twin(&model);
        let mut grads = bad_head.grads(&other, device);
        grads
            .remove::<B::InnerBackend, 2>(weight)
            .expect("the weight's gradient");
        let other = uninterrupted
            .try_step(LR, other, grads)
            .expect("finite gradients");

        let before = (param_values(&model), state_values(&optim, &model));
        let grads = bad_head.grads(&model, device);
        let Rejected {
            error,
            module: model,
            mut grads,
        } = optim.try_step(LR, model, grads).unwrap_err();
        assert_eq!(error, Error::NonFiniteGradient { param: weight });
        assert_params_bits_eq(
            &param_values(&model),
            &before.0,
            "the model after the error",
        );
        assert_states_bits_eq(
            &state_values(&optim, &model),
            &before.1,
            "the states after the error",
        );

        grads
            .remove::<B::InnerBackend, 2>(weight)
            .expect("the weight's gradient was handed back");
        let model = optim.try_step(LR, model, grads).expect("finite gradients");
        let states = state_values(&optim, &model);
        assert_eq!(
            steps_of(&states),
            [Some(1), Some(2), Some(2)],
            "the table's rows were applied"
        );
        assert_params_bits_eq(
            &param_values(&model),
            &param_values(&other),
            "vs the uninterrupted run",
        );
        assert_states_bits_eq(
            &states,
            &state_values(&uninterrupted, &other),
            "states vs the uninterrupted run",
        );
    }
    on_test_backend!(case);
}

// ---- records that do not fit the model ------------------------------------------------------

type Optim<B> = SparseAdamOptimizer<SparseTower<B>, B>;

/// A tower trained for one step (every parameter has a state) and its optimizer's record.
fn trained<B: AutodiffBackend>(device: &B::Device) -> (SparseTower<B>, Optim<B>) {
    let spec = spec();
    let [clean_0, _, _] = batches(0.0);
    let mut optim: Optim<B> = config(NonFinite::Propagate).init();
    let model = step(&mut optim, spec.sparse::<B>(device), &clean_0, device);
    (model, optim)
}

/// The gradients of the head alone (`sum(head(x) · e)`): the table has none.
fn head_only_grads<B: AutodiffBackend, M: burn::module::AutodiffModule<B>>(
    head: &Linear<B>,
    model: &M,
    device: &B::Device,
) -> GradientsParams {
    let [_, batch, _] = batches(0.0);
    let x = tensor::<B, 2>(&batch.head_input, [2, 3], device);
    let loss = weighted_sum(head.forward(x), &batch.head_coefficients);
    collect_grads(loss.backward(), model)
}

/// Asserts that a step of `model` with `grads` is refused with `expected` and changes
/// nothing (the model handed back, the optimizer's states), and that `Optimizer::step` with
/// the gradients handed back panics with the same message.
fn assert_rejected<B: AutodiffBackend, M: burn::module::AutodiffModule<B> + 'static>(
    optim: &mut SparseAdamOptimizer<M, B>,
    model: &M,
    grads: GradientsParams,
    expected: &Error,
    message: &str,
) {
    let before = (param_values(model), saved_states(&optim.to_record().states));
    let Rejected {
        error,
        module,
        grads,
    } = optim.try_step(LR, model.clone(), grads).unwrap_err();
    assert_eq!(&error, expected);
    assert_eq!(error.to_string(), message);
    assert_params_bits_eq(&param_values(&module), &before.0, "the model handed back");
    assert_saved_states_bits_eq(
        &saved_states(&optim.to_record().states),
        &before.1,
        "the states after the error",
    );
    let panic = expect_panic(|| optim.step(LR, module, grads));
    assert_eq!(
        panic, message,
        "Optimizer::step panics with the same message"
    );
    assert_params_bits_eq(&param_values(model), &before.0, "the model after the panic");
    assert_saved_states_bits_eq(
        &saved_states(&optim.to_record().states),
        &before.1,
        "the states after the panic",
    );
}

/// A model whose "table" has rank 3.
#[derive(Module, Debug)]
struct Cube<B: Backend> {
    head: Linear<B>,
    table: Param<Tensor<B, 3>>,
}

/// A record whose state for the table has rank 2, loaded for a model whose parameter of that
/// id has rank 3: `StateRank` naming it at the next step, whether or not the parameter has a
/// gradient in that step; nothing changes.
#[test]
fn a_record_state_of_another_rank_is_an_error_naming_the_parameter() {
    fn case<B: AutodiffBackend>(device: &B::Device) {
        let (model, optim) = trained::<B>(device);
        let id = model.table.weight.id;
        let values = Rng::new(53).uniform_vec(18, -1.0, 1.0);
        let cube = Cube {
            head: twin(&model).head,
            table: Param::initialized(
                id,
                tensor::<B, 3>(&values, [6, 3, 1], device).require_grad(),
            ),
        };
        let mut loaded: SparseAdamOptimizer<Cube<B>, B> = config(NonFinite::Propagate).init();
        loaded
            .try_load_record(optim.to_record())
            .expect("checked at the step");

        let expected = Error::StateRank {
            param: id,
            expected: 3,
            found: 2,
        };
        let message =
            format!("optimizer state of parameter {id} has rank 2, but the parameter has rank 3");
        // Without a gradient for it.
        assert_rejected(
            &mut loaded,
            &cube,
            head_only_grads(&cube.head, &cube, device),
            &expected,
            &message,
        );
        // With one.
        let with_table = || {
            let coefficients = Rng::new(54).dyadic_vec(18);
            let loss = weighted_sum(cube.table.val(), &coefficients);
            GradientsParams::from_grads(loss.backward(), &cube)
        };
        assert_rejected(&mut loaded, &cube, with_table(), &expected, &message);
    }
    on_test_backend!(case);
}

/// A record from a table 3 wide, for a model whose table (same id) is 4 wide and has no
/// gradient in the next step: `StateShape` naming it all the same (a loaded record is checked
/// whole); nothing changes.
#[test]
fn a_record_state_of_another_shape_is_an_error_even_without_a_gradient() {
    fn case<B: AutodiffBackend>(device: &B::Device) {
        let (model, optim) = trained::<B>(device);
        let id = model.table.weight.id;
        let values = Rng::new(55).uniform_vec(24, -1.0, 1.0);
        let mut table = sparse_table::<B>(6, 4, &values, None, device);
        table.weight =
            Param::initialized(id, tensor::<B, 2>(&values, [6, 4], device).require_grad());
        let wider = SparseTower {
            head: twin(&model).head,
            table,
        };
        let mut loaded: Optim<B> = config(NonFinite::Propagate).init();
        loaded
            .try_load_record(optim.to_record())
            .expect("checked at the step");

        let expected = Error::StateShape {
            param: id,
            expected: vec![6, 4],
            found: vec![6, 3],
        };
        let message =
            format!("optimizer state of parameter {id} has shape [6, 3], but the parameter has shape [6, 4]");
        assert_rejected(
            &mut loaded,
            &wider,
            head_only_grads(&wider.head, &wider, device),
            &expected,
            &message,
        );
    }
    on_test_backend!(case);
}

/// A record loaded for a model whose parameter ids differ (a fresh model, its record not
/// loaded): `RecordParamNotInModel` naming one of the record's parameters at the next step,
/// not a silently ignored state; nothing changes, and once the model's record is loaded
/// (restoring the ids) training continues exactly as the uninterrupted run.
#[test]
fn a_record_for_other_parameter_ids_is_an_error_naming_the_parameter() {
    fn case<B: AutodiffBackend>(device: &B::Device) {
        let spec = spec();
        let [_, batch, clean_2] = batches(0.5);
        let (model, mut optim) = trained::<B>(device);
        let record = optim.to_record();
        let record_ids: Vec<ParamId> = saved_states(&record.states).into_keys().collect();
        let fresh = spec.sparse::<B>(device);

        let mut loaded: Optim<B> = config(NonFinite::Propagate).init();
        loaded.try_load_record(record).expect("checked at the step");
        let err = optim_err(&mut loaded, &fresh, &batch, device);
        let Error::RecordParamNotInModel { param } = err else {
            panic!("expected RecordParamNotInModel, got {err:?}");
        };
        assert!(
            record_ids.contains(&param),
            "{param} is one of the record's parameters"
        );
        let message = format!(
            "the optimizer record holds a state for parameter {param}, which the model does not have (load the model's record before stepping: it restores the ids the optimizer record refers to)"
        );
        assert_rejected(
            &mut loaded,
            &fresh,
            batch.grads(&fresh, device),
            &err,
            &message,
        );

        // With the model's record (and the rejected row gradients cleared), the next steps are
        // the uninterrupted run's.
        fresh.table.clear_row_grads();
        let restored = fresh.load_record(model.clone().into_record());
        let restored = step(&mut loaded, restored, &batch, device);
        let restored = step(&mut loaded, restored, &clean_2, device);
        let model = step(&mut optim, model, &batch, device);
        let model = step(&mut optim, model, &clean_2, device);
        assert_params_bits_eq(
            &param_values(&restored),
            &param_values(&model),
            "vs the uninterrupted run",
        );
        assert_states_bits_eq(
            &state_values(&loaded, &restored),
            &state_values(&optim, &model),
            "states vs the uninterrupted run",
        );
    }
    on_test_backend!(case);
}

fn optim_err<B: AutodiffBackend>(
    optim: &mut Optim<B>,
    model: &SparseTower<B>,
    batch: &SplitBatch,
    device: &B::Device,
) -> Error {
    let grads = batch.grads(model, device);
    optim.try_step(LR, model.clone(), grads).unwrap_err().error
}
