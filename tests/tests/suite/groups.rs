//! Parameter groups (`add_param_group`): each hyperparameter override, groups by id and by
//! sub-module, `Scale` and `Fixed` learning rates, groups added during training, the
//! errors of `add_param_group` (each with its message, and nothing changed), groups in the
//! saved record (a file round trip, an optimizer without groups adopting them, and a
//! mismatch being an error), and a group naming a parameter that the model does not have.
//!
//! The model is a [`SparseTower`] (`head`: a `Linear`, dense path; `table`: a
//! `SparseEmbedding`, row path) trained on [`SplitBatch`]es, whose gradients the host knows
//! exactly, so that every run is compared with [`RefTower`], PyTorch's formula in `f64`,
//! within the conformance tolerance; runs that must be identical are compared bit for bit.

use burn::module::{list_param_ids, Module, ParamId};
use burn::optim::Optimizer;
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder, Recorder};
use burn::tensor::backend::AutodiffBackend;
use burn_sparse_adam::{
    Error, GroupLr, ParamGroup, Rejected, SparseAdamConfig, SparseAdamOptimizer,
    SparseEmbeddingConfig,
};
use burn_sparse_adam_tests::{
    assert_params_bits_eq, assert_params_close, assert_saved_states_bits_eq, assert_states_bits_eq,
    assert_states_close, expect_panic, on_test_backend, param_values, saved_states, state_values,
    twin, RefSparseAdam, RefTower, Rng, SparseTower, SplitBatch, TempDir, TowerSpec,
};

type Optim<B> = SparseAdamOptimizer<SparseTower<B>, B>;

/// The config of parameters in no group: not PyTorch's defaults, so that a group that
/// silently fell back to the defaults would show.
fn config() -> SparseAdamConfig {
    SparseAdamConfig::new()
        .with_beta_1(0.8)
        .with_beta_2(0.95)
        .with_epsilon(1e-6)
}

fn reference(config: &SparseAdamConfig) -> RefSparseAdam {
    RefSparseAdam {
        beta_1: config.beta_1,
        beta_2: config.beta_2,
        epsilon: config.epsilon,
        maximize: config.maximize,
        weight_decay: config.weight_decay.unwrap_or(0.0),
    }
}

/// A 6×3 table (row 5 is never looked up) and a 3→2 head.
fn spec(seed: u64) -> TowerSpec {
    TowerSpec::random(6, 3, 2, seed)
}

fn batches(spec: &TowerSpec, seed: u64, steps: usize) -> Vec<SplitBatch> {
    let mut rng = Rng::new(seed);
    (0..steps)
        .map(|_| SplitBatch::random(&mut rng, spec, 5, spec.n - 1))
        .collect()
}

/// Steps `model` once per batch, at the given learning rates.
fn train<B: AutodiffBackend>(
    mut model: SparseTower<B>,
    optim: &mut Optim<B>,
    batches: &[SplitBatch],
    lrs: &[f64],
    device: &B::Device,
) -> SparseTower<B> {
    assert_eq!(batches.len(), lrs.len());
    for (batch, &lr) in batches.iter().zip(lrs) {
        let grads = batch.grads(&model, device);
        model = optim.try_step(lr, model, grads).expect("a valid step");
    }
    model
}

/// The largest difference between two lists of parameters.
fn max_difference(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    a.iter()
        .flatten()
        .zip(b.iter().flatten())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

// ---- each override ------------------------------------------------------------------------

/// One hyperparameter override: how a group sets it, and what the reference does with it.
struct Override {
    apply: fn(ParamGroup) -> ParamGroup,
    hyper: fn(RefSparseAdam) -> RefSparseAdam,
    lr: fn(f64) -> f64,
}

/// Group `g` holds the table and the head's weight with `o`'s override; the head's bias is in
/// no group. Every parameter follows the reference with its own hyperparameters, and the
/// grouped ones differ from what the config alone would give.
fn override_follows_the_reference<B: AutodiffBackend>(device: &B::Device, o: &Override) {
    let spec = spec(1);
    let batches = batches(&spec, 2, 4);
    let lrs = [0.05, 0.02, 0.08, 0.01];
    let model = spec.sparse::<B>(device);
    let mut optim: Optim<B> = config().init();
    let group = ParamGroup::new("g").with_params([model.table.weight.id, model.head.weight.id]);
    optim
        .add_param_group((o.apply)(group))
        .expect("a valid group");
    let model = train(model, &mut optim, &batches, &lrs, device);

    let plain = reference(&config());
    let grouped = (o.hyper)(plain.clone());
    let mut expected = RefTower::new(&spec, None, true);
    let mut config_only = RefTower::new(&spec, None, true);
    for (batch, &lr) in batches.iter().zip(&lrs) {
        let g = (&grouped, (o.lr)(lr));
        expected.step(batch, [g, (&plain, lr), g]);
        config_only.step(batch, [(&plain, lr); 3]);
    }
    let params = param_values(&model);
    assert_params_close(
        &params,
        &expected.params(),
        "the grouped run vs the reference",
    );
    assert_states_close(
        &state_values(&optim, &model),
        &expected.states(),
        "the grouped run's states",
    );
    // The override mattered: the grouped parameters are far from the config-only numbers.
    for (i, what) in [(0, "the head's weight"), (2, "the table")] {
        let diff = max_difference(&params[i..=i], &config_only.params()[i..=i]);
        assert!(diff > 1e-3, "{what}: the override changed nothing ({diff})");
    }
}

macro_rules! override_tests {
    ($($name:ident: $apply:expr, $hyper:expr, $lr:expr;)*) => {$(
        #[test]
        fn $name() {
            fn case<B: AutodiffBackend>(device: &B::Device) {
                override_follows_the_reference::<B>(device, &Override { apply: $apply, hyper: $hyper, lr: $lr });
            }
            on_test_backend!(case);
        }
    )*};
}

override_tests! {
    a_group_lr_scale_multiplies_the_step_lr_for_its_params_only:
        |g| g.with_lr_scale(0.25), |h| h, |lr| lr * 0.25;
    a_group_fixed_lr_replaces_the_step_lr_for_its_params_only:
        |g| g.with_lr(0.003), |h| h, |_| 0.003;
    a_group_beta_1_applies_to_its_params_only:
        |g| g.with_beta_1(0.3), |h| RefSparseAdam { beta_1: 0.3, ..h }, |lr| lr;
    a_group_beta_2_applies_to_its_params_only:
        |g| g.with_beta_2(0.5), |h| RefSparseAdam { beta_2: 0.5, ..h }, |lr| lr;
    a_group_epsilon_applies_to_its_params_only:
        |g| g.with_epsilon(0.3), |h| RefSparseAdam { epsilon: 0.3, ..h }, |lr| lr;
    a_group_maximize_applies_to_its_params_only:
        |g| g.with_maximize(true), |h| RefSparseAdam { maximize: true, ..h }, |lr| lr;
}

/// Every override at once, and a group that overrides nothing (its params use the config).
#[test]
fn a_group_with_every_override_and_an_empty_override_group() {
    fn case<B: AutodiffBackend>(device: &B::Device) {
        let spec = spec(3);
        let batches = batches(&spec, 4, 3);
        let lrs = [0.04, 0.1, 0.02];
        let model = spec.sparse::<B>(device);
        let mut optim: Optim<B> = config().init();
        let all = ParamGroup::new("all")
            .with_params([model.table.weight.id])
            .with_lr_scale(3.0)
            .with_beta_1(0.5)
            .with_beta_2(0.7)
            .with_epsilon(1e-2)
            .with_maximize(true);
        optim.add_param_group(all).unwrap();
        optim
            .add_param_group(ParamGroup::new("none").with_module(&model.head))
            .unwrap();
        let model = train(model, &mut optim, &batches, &lrs, device);

        let plain = reference(&config());
        let all = RefSparseAdam {
            beta_1: 0.5,
            beta_2: 0.7,
            epsilon: 1e-2,
            maximize: true,
            weight_decay: 0.0,
        };
        let mut expected = RefTower::new(&spec, None, true);
        for (batch, &lr) in batches.iter().zip(&lrs) {
            expected.step(batch, [(&plain, lr), (&plain, lr), (&all, lr * 3.0)]);
        }
        assert_params_close(
            &param_values(&model),
            &expected.params(),
            "vs the reference",
        );
        assert_states_close(&state_values(&optim, &model), &expected.states(), "states");
    }
    on_test_backend!(case);
}

// ---- groups by sub-module -----------------------------------------------------------------

/// The embeddings at one learning rate, the dense layer at another, chosen by sub-module.
#[test]
fn groups_by_sub_module_give_the_embeddings_and_the_dense_layer_their_own_rates() {
    fn case<B: AutodiffBackend>(device: &B::Device) {
        let spec = spec(5);
        let batches = batches(&spec, 6, 4);
        let lrs = [0.1, 0.05, 0.2, 0.01];
        let model = spec.sparse::<B>(device);
        let mut optim: Optim<B> = config().init();
        optim
            .add_param_group(
                ParamGroup::new("embeddings")
                    .with_module(&model.table)
                    .with_lr(0.02),
            )
            .unwrap();
        optim
            .add_param_group(
                ParamGroup::new("dense")
                    .with_module(&model.head)
                    .with_lr_scale(0.1)
                    .with_beta_2(0.9),
            )
            .unwrap();

        let groups = optim.param_groups();
        assert_eq!(groups.len(), 2);
        assert_eq!(
            (groups[0].name(), groups[1].name()),
            ("embeddings", "dense")
        );
        assert_eq!(groups[0].params(), &[model.table.weight.id]);
        assert_eq!(
            groups[1].params(),
            &[model.head.weight.id, model.head.bias.as_ref().unwrap().id]
        );
        assert_eq!(groups[1].params(), list_param_ids(&model.head).as_slice());
        assert_eq!(
            (groups[0].lr(), groups[1].lr()),
            (GroupLr::Fixed(0.02), GroupLr::Scale(0.1))
        );

        let model = train(model, &mut optim, &batches, &lrs, device);
        let plain = reference(&config());
        let dense = RefSparseAdam {
            beta_2: 0.9,
            ..plain.clone()
        };
        let mut expected = RefTower::new(&spec, None, true);
        for (batch, &lr) in batches.iter().zip(&lrs) {
            expected.step(
                batch,
                [(&dense, lr * 0.1), (&dense, lr * 0.1), (&plain, 0.02)],
            );
        }
        assert_params_close(
            &param_values(&model),
            &expected.params(),
            "vs the reference",
        );
        assert_states_close(&state_values(&optim, &model), &expected.states(), "states");
    }
    on_test_backend!(case);
}

// ---- Scale follows the step's lr, Fixed ignores it ----------------------------------------

/// A scaled group at step lr `L` is, bit for bit, a group-less run at `L·scale`; a fixed
/// group is a group-less run at its rate, whatever the step's.
#[test]
fn a_scaled_group_follows_the_step_lr_and_a_fixed_group_ignores_it() {
    fn case<B: AutodiffBackend>(device: &B::Device) {
        let spec = spec(7);
        let batches = batches(&spec, 8, 3);
        let schedule = [0.1, 0.03, 0.2];
        let other_schedule = [0.7, 0.001, 0.05];
        let grouped_run = |lrs: &[f64]| {
            let model = spec.sparse::<B>(device);
            let mut optim: Optim<B> = config().init();
            optim
                .add_param_group(
                    ParamGroup::new("scaled")
                        .with_module(&model.table)
                        .with_lr_scale(0.5),
                )
                .unwrap();
            optim
                .add_param_group(
                    ParamGroup::new("fixed")
                        .with_module(&model.head)
                        .with_lr(0.004),
                )
                .unwrap();
            let model = train(model, &mut optim, &batches, lrs, device);
            (param_values(&model), state_values(&optim, &model))
        };
        let plain_run = |lrs: &[f64]| {
            let model = spec.sparse::<B>(device);
            let mut optim: Optim<B> = config().init();
            let model = train(model, &mut optim, &batches, lrs, device);
            (param_values(&model), state_values(&optim, &model))
        };

        let (grouped, grouped_states) = grouped_run(&schedule);
        let half: Vec<f64> = schedule.iter().map(|lr| lr * 0.5).collect();
        let (scaled, scaled_states) = plain_run(&half);
        let (fixed, fixed_states) = plain_run(&[0.004; 3]);
        // The head (weight, bias) is the fixed group; the table the scaled one.
        assert_params_bits_eq(
            &grouped[..2],
            &fixed[..2],
            "the fixed group vs a plain run at its rate",
        );
        assert_states_bits_eq(
            &grouped_states[..2],
            &fixed_states[..2],
            "the fixed group's states",
        );
        assert_params_bits_eq(
            &grouped[2..],
            &scaled[2..],
            "the scaled group vs a plain run at lr·scale",
        );
        assert_states_bits_eq(
            &grouped_states[2..],
            &scaled_states[2..],
            "the scaled group's states",
        );

        // Another schedule: the fixed group does not move, the scaled one does.
        let (other, _) = grouped_run(&other_schedule);
        assert_params_bits_eq(
            &other[..2],
            &grouped[..2],
            "the fixed group under another schedule",
        );
        assert!(
            max_difference(&other[2..], &grouped[2..]) > 1e-3,
            "the scaled group follows the schedule"
        );
    }
    on_test_backend!(case);
}

// ---- a group added during training ----------------------------------------------------------

/// PyTorch's use: unfreezing. For three steps only the table learns (the head has no
/// gradient, so no state); then the head is added in a group of its own, and the table in
/// another. The head starts at step 1 with its group's hyperparameters; the table keeps its
/// moments and step count and continues at step 4 with its new group's.
#[test]
fn a_group_added_during_training_keeps_the_state_and_step_count() {
    fn case<B: AutodiffBackend>(device: &B::Device) {
        let spec = spec(9);
        let frozen: Vec<SplitBatch> = batches(&spec, 10, 3)
            .into_iter()
            .map(SplitBatch::table_only)
            .collect();
        let unfrozen = batches(&spec, 11, 3);
        let model = spec.sparse::<B>(device);
        let mut optim: Optim<B> = config().init();
        let model = train(model, &mut optim, &frozen, &[0.05; 3], device);
        let steps: Vec<_> = state_values(&optim, &model)
            .iter()
            .map(|s| s.as_ref().map(|s| s.0))
            .collect();
        assert_eq!(steps, [None, None, Some(3)], "only the table stepped");

        optim
            .add_param_group(
                ParamGroup::new("unfrozen head")
                    .with_module(&model.head)
                    .with_lr_scale(0.5)
                    .with_beta_1(0.6),
            )
            .unwrap();
        optim
            .add_param_group(
                ParamGroup::new("table")
                    .with_module(&model.table)
                    .with_epsilon(0.1),
            )
            .unwrap();
        let model = train(model, &mut optim, &unfrozen, &[0.04, 0.02, 0.03], device);

        let plain = reference(&config());
        let head = RefSparseAdam {
            beta_1: 0.6,
            ..plain.clone()
        };
        let table = RefSparseAdam {
            epsilon: 0.1,
            ..plain.clone()
        };
        let mut expected = RefTower::new(&spec, None, true);
        for batch in &frozen {
            expected.step(batch, [(&plain, 0.05); 3]);
        }
        for (batch, lr) in unfrozen.iter().zip([0.04, 0.02, 0.03]) {
            expected.step(batch, [(&head, lr * 0.5), (&head, lr * 0.5), (&table, lr)]);
        }
        let states = state_values(&optim, &model);
        let steps: Vec<_> = states.iter().map(|s| s.as_ref().map(|s| s.0)).collect();
        assert_eq!(
            steps,
            [Some(3), Some(3), Some(6)],
            "the table's count continued"
        );
        assert_params_close(
            &param_values(&model),
            &expected.params(),
            "vs the reference",
        );
        assert_states_close(&states, &expected.states(), "states");
    }
    on_test_backend!(case);
}

// ---- add_param_group errors -----------------------------------------------------------------

/// Steps `model` and `optim` side by side with `twin_model` and `twin_optim` and asserts
/// both runs are bit-identical: `optim` behaves as if nothing had happened to it.
fn assert_same_next_steps<B: AutodiffBackend>(
    model: SparseTower<B>,
    optim: &mut Optim<B>,
    twin_model: SparseTower<B>,
    twin_optim: &mut Optim<B>,
    seed: u64,
    device: &B::Device,
) {
    let spec = spec(0);
    let batches = batches(&spec, seed, 2);
    let model = train(model, optim, &batches, &[0.05, 0.02], device);
    let twin_model = train(twin_model, twin_optim, &batches, &[0.05, 0.02], device);
    assert_params_bits_eq(
        &param_values(&model),
        &param_values(&twin_model),
        "the next steps",
    );
    assert_states_bits_eq(
        &state_values(optim, &model),
        &state_values(twin_optim, &twin_model),
        "the next steps' states",
    );
}

/// A parameter added to a second group is an error naming it and both groups; the groups
/// are unchanged, and the rejected group's other parameters are in no group.
#[test]
fn a_parameter_in_two_groups_is_an_error_naming_it_and_changes_nothing() {
    fn case<B: AutodiffBackend>(device: &B::Device) {
        let spec = spec(13);
        let model = spec.sparse::<B>(device);
        let weight = model.head.weight.id;
        let bias = model.head.bias.as_ref().unwrap().id;
        let a = ParamGroup::new("a")
            .with_params([model.table.weight.id, weight])
            .with_lr_scale(2.0);
        let mut optim: Optim<B> = config().init();
        optim.add_param_group(a.clone()).unwrap();
        let mut untouched = optim.clone();

        let b = ParamGroup::new("b")
            .with_module(&model.head)
            .with_beta_1(0.1);
        let err = optim.add_param_group(b).unwrap_err();
        assert_eq!(
            err,
            Error::ParamInTwoGroups {
                param: weight,
                group: "a".into(),
                other: "b".into()
            }
        );
        assert_eq!(
            err.to_string(),
            format!(
                "parameter {weight} is already in group \"a\"; it cannot also be in group \"b\""
            )
        );
        assert_eq!(
            optim.param_groups(),
            std::slice::from_ref(&a),
            "the groups are unchanged"
        );
        // The bias was not taken into any group: the optimizer steps like one that never saw
        // the rejected group.
        let twin_model = twin(&model);
        assert_same_next_steps(
            model.clone(),
            &mut optim,
            twin_model,
            &mut untouched,
            14,
            device,
        );
        // And it can still join a group of its own.
        optim
            .add_param_group(ParamGroup::new("b").with_params([bias]))
            .expect("the bias is in no group");
        assert_eq!(optim.param_groups().len(), 2);
    }
    on_test_backend!(case);
}

#[test]
fn a_duplicate_group_name_is_an_error_and_changes_nothing() {
    fn case<B: AutodiffBackend>(device: &B::Device) {
        let spec = spec(15);
        let model = spec.sparse::<B>(device);
        let mut optim: Optim<B> = config().init();
        let a = ParamGroup::new("a")
            .with_module(&model.table)
            .with_beta_2(0.5);
        optim.add_param_group(a.clone()).unwrap();
        let mut untouched = optim.clone();

        let err = optim
            .add_param_group(ParamGroup::new("a").with_module(&model.head).with_lr(1.0))
            .unwrap_err();
        assert_eq!(err, Error::DuplicateGroupName { group: "a".into() });
        assert_eq!(
            err.to_string(),
            "a parameter group named \"a\" already exists"
        );
        assert_eq!(
            optim.param_groups(),
            std::slice::from_ref(&a),
            "the groups are unchanged"
        );
        let twin_model = twin(&model);
        assert_same_next_steps(
            model.clone(),
            &mut optim,
            twin_model,
            &mut untouched,
            16,
            device,
        );
        optim
            .add_param_group(ParamGroup::new("c").with_module(&model.head))
            .expect("the head is in no group");
    }
    on_test_backend!(case);
}

/// Each invalid hyperparameter of a group is an `InGroup` error naming the group, with the
/// config's own message; nothing is added (its parameters can join a valid group after).
#[test]
fn invalid_group_hyperparameters_are_errors_naming_the_group() {
    fn case<B: AutodiffBackend>(device: &B::Device) {
        let model = spec(17).sparse::<B>(device);
        let ok = ParamGroup::new("ok").with_module(&model.table);
        let beta = |index: usize, field: &'static str, value: f64| Error::InvalidBeta {
            field,
            index,
            value,
        };
        let cases: Vec<(ParamGroup, Error, &str)> = vec![
            (
                ParamGroup::new("bad").with_beta_1(1.0),
                beta(0, "beta_1", 1.0),
                "invalid beta parameter at index 0: 1 (SparseAdamConfig.beta_1 must be in [0, 1))",
            ),
            (
                ParamGroup::new("bad").with_beta_1(-0.5),
                beta(0, "beta_1", -0.5),
                "invalid beta parameter at index 0: -0.5 (SparseAdamConfig.beta_1 must be in [0, 1))",
            ),
            (
                ParamGroup::new("bad").with_beta_2(1.5),
                beta(1, "beta_2", 1.5),
                "invalid beta parameter at index 1: 1.5 (SparseAdamConfig.beta_2 must be in [0, 1))",
            ),
            (
                ParamGroup::new("bad").with_beta_2(f64::NAN),
                beta(1, "beta_2", f64::NAN),
                "invalid beta parameter at index 1: NaN (SparseAdamConfig.beta_2 must be in [0, 1))",
            ),
            (
                ParamGroup::new("bad").with_epsilon(0.0),
                Error::InvalidEpsilon { value: 0.0 },
                "invalid epsilon value: 0 (SparseAdamConfig.epsilon must be finite and > 0)",
            ),
            (
                ParamGroup::new("bad").with_epsilon(-1.0),
                Error::InvalidEpsilon { value: -1.0 },
                "invalid epsilon value: -1 (SparseAdamConfig.epsilon must be finite and > 0)",
            ),
            (
                ParamGroup::new("bad").with_epsilon(f64::INFINITY),
                Error::InvalidEpsilon { value: f64::INFINITY },
                "invalid epsilon value: inf (SparseAdamConfig.epsilon must be finite and > 0)",
            ),
            (
                ParamGroup::new("bad").with_lr(0.0),
                Error::InvalidLearningRate { value: 0.0 },
                "invalid learning rate: 0 (the step's learning rate must be finite and > 0)",
            ),
            (
                ParamGroup::new("bad").with_lr(-0.1),
                Error::InvalidLearningRate { value: -0.1 },
                "invalid learning rate: -0.1 (the step's learning rate must be finite and > 0)",
            ),
            (
                ParamGroup::new("bad").with_lr(f64::NAN),
                Error::InvalidLearningRate { value: f64::NAN },
                "invalid learning rate: NaN (the step's learning rate must be finite and > 0)",
            ),
            (
                ParamGroup::new("bad").with_lr_scale(0.0),
                Error::InvalidLearningRate { value: 0.0 },
                "invalid learning rate: 0 (the step's learning rate must be finite and > 0)",
            ),
            (
                ParamGroup::new("bad").with_lr_scale(-2.0),
                Error::InvalidLearningRate { value: -2.0 },
                "invalid learning rate: -2 (the step's learning rate must be finite and > 0)",
            ),
            (
                ParamGroup::new("bad").with_lr_scale(f64::INFINITY),
                Error::InvalidLearningRate { value: f64::INFINITY },
                "invalid learning rate: inf (the step's learning rate must be finite and > 0)",
            ),
        ];
        for (group, source, message) in cases {
            let mut optim: Optim<B> = config().init();
            optim.add_param_group(ok.clone()).unwrap();
            let group = group.with_module(&model.head);
            let err = optim.add_param_group(group.clone()).unwrap_err();
            match &err {
                // NaN ≠ NaN: compare the sources through their messages.
                Error::InGroup {
                    group,
                    source: found,
                } => {
                    assert_eq!(group, "bad");
                    assert_eq!(found.to_string(), source.to_string(), "{err:?}");
                    assert_eq!(
                        core::mem::discriminant(found.as_ref()),
                        core::mem::discriminant(&source),
                        "{err:?}"
                    );
                }
                other => panic!("expected InGroup, got {other:?}"),
            }
            assert_eq!(
                err.to_string(),
                format!("in parameter group \"bad\": {message}")
            );
            assert_eq!(
                optim.param_groups(),
                std::slice::from_ref(&ok),
                "{message}: groups unchanged"
            );
            optim
                .add_param_group(ParamGroup::new("bad").with_module(&model.head))
                .unwrap_or_else(|e| panic!("{message}: the head was left in no group, but {e}"));
        }
    }
    on_test_backend!(case);
}

/// A scale that is valid alone can give an invalid learning rate with the step's (here an
/// overflow to inf): the step is then an `InGroup` error naming the group, and nothing
/// changes; `Optimizer::step` panics with the same message.
#[test]
fn a_scaled_rate_that_overflows_is_an_error_at_the_step() {
    fn case<B: AutodiffBackend>(device: &B::Device) {
        let spec = spec(19);
        let batches = batches(&spec, 20, 2);
        let model = spec.sparse::<B>(device);
        let mut optim: Optim<B> = config().init();
        // A first step gives the parameters states; the group comes after it (no step rate
        // could be valid with this scale: the update runs in f32, where a rate below about
        // 1.4e-45 is 0, and one above 3.4e38 is inf).
        let model = train(model, &mut optim, &batches[..1], &[1e-3], device);
        optim
            .add_param_group(
                ParamGroup::new("huge")
                    .with_module(&model.table)
                    .with_lr_scale(1e300),
            )
            .unwrap();
        let before = (param_values(&model), state_values(&optim, &model));

        let grads = batches[1].grads(&model, device);
        // The step hands back the model and the gradients, unchanged.
        let Rejected {
            error: err,
            module: model,
            grads,
        } = optim.try_step(1e10, model, grads).unwrap_err();
        assert_eq!(
            err.to_string(),
            "in parameter group \"huge\": invalid learning rate: inf (the step's learning rate must be finite and > 0)"
        );
        assert!(
            matches!(&err, Error::InGroup { group, source } if group == "huge"
                && **source == Error::InvalidLearningRate { value: f64::INFINITY }),
            "{err:?}"
        );
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

        let panic = expect_panic(|| optim.step(1e10, model.clone(), grads));
        assert_eq!(
            panic,
            err.to_string(),
            "Optimizer::step panics with the same message"
        );
        assert_states_bits_eq(
            &state_values(&optim, &model),
            &before.1,
            "the states after the panic",
        );
    }
    on_test_backend!(case);
}

// ---- groups in the record -------------------------------------------------------------------

/// The groups of the record tests: the table scaled with its own beta_2, the head's weight at
/// a fixed rate with its own epsilon and beta_1; the bias in no group.
fn record_groups<B: AutodiffBackend>(model: &SparseTower<B>) -> [ParamGroup; 2] {
    [
        ParamGroup::new("emb")
            .with_module(&model.table)
            .with_lr_scale(2.0)
            .with_beta_2(0.9),
        ParamGroup::new("dense")
            .with_params([model.head.weight.id])
            .with_lr(0.01)
            .with_epsilon(1e-3)
            .with_beta_1(0.5)
            .with_maximize(false),
    ]
}

/// Groups and their hyperparameters go through a file: an optimizer without groups adopts
/// them; one with the same groups (other hyperparameters) takes the saved hyperparameters;
/// both continue exactly as the uninterrupted run.
#[test]
fn groups_round_trip_through_a_file_and_training_continues_identically() {
    fn case<B: AutodiffBackend>(device: &B::Device) {
        let spec = spec(21);
        let all = batches(&spec, 22, 5);
        let lrs = [0.05, 0.03, 0.08, 0.02, 0.04];
        let model = spec.sparse::<B>(device);
        let mut optim: Optim<B> = config().init();
        let groups = record_groups(&model);
        for g in groups.clone() {
            optim.add_param_group(g).unwrap();
        }
        let model = train(model, &mut optim, &all[..3], &lrs[..3], device);

        let dir = TempDir::new("groups-round-trip");
        let recorder = NamedMpkFileRecorder::<FullPrecisionSettings>::new();
        recorder
            .record(model.clone().into_record(), dir.path().join("model"))
            .expect("save the model");
        recorder
            .record(optim.to_record(), dir.path().join("optim"))
            .expect("save the optimizer");
        let uninterrupted = train(model, &mut optim, &all[3..], &lrs[3..], device);
        let expected = (
            param_values(&uninterrupted),
            state_values(&optim, &uninterrupted),
        );

        let fresh_model = || {
            let fresh = SparseTower {
                head: burn::nn::LinearConfig::new(spec.d, spec.d_out).init(device),
                table: SparseEmbeddingConfig::new(spec.n, spec.d).init(device),
            };
            let record = recorder
                .load(dir.path().join("model"), device)
                .expect("load the model");
            fresh.load_record(record)
        };
        let load_optim = |optim: &mut Optim<B>| {
            let record = recorder
                .load(dir.path().join("optim"), device)
                .expect("load the optimizer");
            optim.try_load_record(record).expect("a matching record");
        };

        // (a) An optimizer without groups adopts the saved ones.
        let loaded = fresh_model();
        let mut adopted: Optim<B> = config().init();
        load_optim(&mut adopted);
        assert_eq!(
            adopted.param_groups(),
            groups.as_slice(),
            "the saved groups, hyperparameters included"
        );
        let resumed = train(loaded, &mut adopted, &all[3..], &lrs[3..], device);
        assert_params_bits_eq(
            &param_values(&resumed),
            &expected.0,
            "resumed (adopted groups)",
        );
        assert_states_bits_eq(
            &state_values(&adopted, &resumed),
            &expected.1,
            "resumed states (adopted groups)",
        );

        // (b) An optimizer with the same groups, other hyperparameters: the saved ones win.
        let loaded = fresh_model();
        let mut regrouped: Optim<B> = config().init();
        regrouped
            .add_param_group(
                ParamGroup::new("emb")
                    .with_module(&loaded.table)
                    .with_lr(100.0),
            )
            .unwrap();
        regrouped
            .add_param_group(
                ParamGroup::new("dense")
                    .with_params([loaded.head.weight.id])
                    .with_beta_1(0.0),
            )
            .unwrap();
        load_optim(&mut regrouped);
        assert_eq!(
            regrouped.param_groups(),
            groups.as_slice(),
            "the saved hyperparameters"
        );
        let resumed = train(loaded, &mut regrouped, &all[3..], &lrs[3..], device);
        assert_params_bits_eq(
            &param_values(&resumed),
            &expected.0,
            "resumed (same groups)",
        );
        assert_states_bits_eq(
            &state_values(&regrouped, &resumed),
            &expected.1,
            "resumed states (same groups)",
        );
    }
    on_test_backend!(case);
}

/// Loading a record whose groups differ from the optimizer's is `RecordGroupsMismatch`
/// naming the first difference; the optimizer is unchanged (its next steps are those of an
/// untouched copy), and `Optimizer::load_record` panics with the same message.
#[test]
fn a_record_with_other_groups_is_an_error_and_changes_nothing() {
    fn case<B: AutodiffBackend>(device: &B::Device) {
        let spec = spec(23);
        let model = spec.sparse::<B>(device);
        let (table, weight) = (model.table.weight.id, model.head.weight.id);
        let bias = model.head.bias.as_ref().unwrap().id;

        // The record: groups a = [table], b = [head weight], after two steps.
        let mut saved: Optim<B> = config().init();
        saved
            .add_param_group(ParamGroup::new("a").with_params([table]))
            .unwrap();
        saved
            .add_param_group(ParamGroup::new("b").with_params([weight]))
            .unwrap();
        let trained = train(
            twin(&model),
            &mut saved,
            &batches(&spec, 24, 2),
            &[0.05, 0.05],
            device,
        );
        let record = saved.to_record();
        drop(trained);

        let cases: Vec<(Vec<ParamGroup>, String)> = vec![
            (
                vec![ParamGroup::new("a").with_params([table])],
                "the record has an extra group 1, \"b\" (1 parameter)".into(),
            ),
            (
                vec![
                    ParamGroup::new("a").with_params([table]),
                    ParamGroup::new("b").with_params([weight]),
                    ParamGroup::new("c").with_params([bias]),
                ],
                "group 2, \"c\" (1 parameter), is not in the record".into(),
            ),
            (
                vec![
                    ParamGroup::new("a").with_params([table]),
                    ParamGroup::new("x").with_params([weight]),
                ],
                "group 1 is \"x\" (1 parameter) here but \"b\" (1 parameter) in the record".into(),
            ),
            (
                vec![
                    ParamGroup::new("a").with_params([table]),
                    ParamGroup::new("b").with_params([weight, bias]),
                ],
                format!(
                    "group 1, \"b\", differs: parameter {bias} is in it here but not in the record"
                ),
            ),
            (
                vec![
                    ParamGroup::new("b").with_params([weight]),
                    ParamGroup::new("a").with_params([table]),
                ],
                "group 0 is \"b\" (1 parameter) here but \"a\" (1 parameter) in the record".into(),
            ),
        ];
        for (i, (groups, detail)) in cases.into_iter().enumerate() {
            let mut optim: Optim<B> = config().init();
            for g in groups.clone() {
                optim.add_param_group(g).unwrap();
            }
            // Some state of its own first, so that "unchanged" has something to keep.
            let model = train(
                twin(&model),
                &mut optim,
                &batches(&spec, 25, 1),
                &[0.02],
                device,
            );
            let mut untouched = optim.clone();
            let states = saved_states(&optim.to_record().states);

            let err = optim.try_load_record(record.clone()).unwrap_err();
            assert_eq!(
                err,
                Error::RecordGroupsMismatch {
                    detail: detail.clone()
                },
                "case {i}"
            );
            let message = format!(
                "the optimizer record's parameter groups differ from this optimizer's: {detail}"
            );
            assert_eq!(err.to_string(), message, "case {i}");
            assert_eq!(
                optim.param_groups(),
                groups.as_slice(),
                "case {i}: the groups are unchanged"
            );
            assert_saved_states_bits_eq(
                &saved_states(&optim.to_record().states),
                &states,
                &format!("case {i}: the states"),
            );
            let panic = expect_panic(|| optim.clone().load_record(record.clone()));
            assert_eq!(
                panic, message,
                "case {i}: Optimizer::load_record panics with the same message"
            );
            let twin_model = twin(&model);
            assert_same_next_steps(
                model,
                &mut optim,
                twin_model,
                &mut untouched,
                26 + i as u64,
                device,
            );
        }
    }
    on_test_backend!(case);
}

/// Same group names, other parameters: the mismatch names a parameter that differs (or
/// says that only their order does); nothing changes.
#[test]
fn a_record_whose_group_has_other_parameters_names_them() {
    fn case<B: AutodiffBackend>(device: &B::Device) {
        let model = spec(27).sparse::<B>(device);
        let (table, weight) = (model.table.weight.id, model.head.weight.id);
        let cases = [
            (
                vec![table],
                vec![weight],
                format!("parameter {weight} is in it here but not in the record"),
            ),
            (
                vec![table, weight],
                vec![table],
                format!("parameter {weight} is in it in the record but not here"),
            ),
            (
                vec![table, weight],
                vec![weight, table],
                "its parameters are in another order".to_string(),
            ),
        ];
        for (saved_params, params, detail) in cases {
            let mut saved: Optim<B> = config().init();
            saved
                .add_param_group(ParamGroup::new("a").with_params(saved_params))
                .unwrap();
            let record = saved.to_record();

            let mut optim: Optim<B> = config().init();
            let group = ParamGroup::new("a").with_params(params).with_beta_1(0.1);
            optim.add_param_group(group.clone()).unwrap();
            let err = optim.try_load_record(record).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "the optimizer record's parameter groups differ from this optimizer's: group 0, \"a\", differs: {detail}"
                )
            );
            assert_eq!(
                optim.param_groups(),
                std::slice::from_ref(&group),
                "unchanged"
            );
        }
    }
    on_test_backend!(case);
}

// ---- a group naming a parameter the model does not have -------------------------------------

fn assert_group_param_not_in_model<B: AutodiffBackend>(
    model: SparseTower<B>,
    mut optim: Optim<B>,
    group: &str,
    param: ParamId,
    device: &B::Device,
) {
    let spec = spec(0);
    let batch = &batches(&spec, 31, 1)[0];
    let before = (
        param_values(&model),
        saved_states(&optim.to_record().states),
    );
    let grads = batch.grads(&model, device);
    let Rejected {
        error: err,
        module: model,
        grads,
    } = optim.try_step(0.05, model, grads).unwrap_err();
    assert_eq!(
        err,
        Error::GroupParamNotInModel {
            group: group.into(),
            param
        }
    );
    let message = format!(
        "parameter group \"{group}\" names parameter {param}, which the model does not have (loading a module record replaces its parameter ids: create groups after loading)"
    );
    assert_eq!(err.to_string(), message);
    assert_params_bits_eq(
        &param_values(&model),
        &before.0,
        "the model after the error",
    );
    assert_saved_states_bits_eq(
        &saved_states(&optim.to_record().states),
        &before.1,
        "the states after the error",
    );
    // The gradients handed back give the same error.
    let panic = expect_panic(|| optim.step(0.05, model.clone(), grads));
    assert_eq!(
        panic, message,
        "Optimizer::step panics with the same message"
    );
    assert_params_bits_eq(
        &param_values(&model),
        &before.0,
        "the model after the panic",
    );
    assert_saved_states_bits_eq(
        &saved_states(&optim.to_record().states),
        &before.1,
        "the states after the panic",
    );
}

/// A group naming a parameter of another model: an error at the step, naming the group and
/// the parameter, and nothing changes. (A group whose parameters are in the model but have no
/// gradient in a step is fine.)
#[test]
fn a_group_naming_a_parameter_not_in_the_model_is_an_error_at_the_step() {
    fn case<B: AutodiffBackend>(device: &B::Device) {
        let spec = spec(29);
        let model = spec.sparse::<B>(device);
        let other = spec.sparse::<B>(device);
        let mut optim: Optim<B> = config().init();
        optim
            .add_param_group(
                ParamGroup::new("head")
                    .with_module(&model.head)
                    .with_lr_scale(0.5),
            )
            .unwrap();
        // The head's group is in the model; with no gradient for the head, the step is fine.
        let only_table: Vec<SplitBatch> = batches(&spec, 30, 2)
            .into_iter()
            .map(SplitBatch::table_only)
            .collect();
        let model = train(model, &mut optim, &only_table, &[0.05, 0.05], device);

        let stray = other.table.weight.id;
        optim
            .add_param_group(ParamGroup::new("stray").with_params([stray]))
            .expect("adding is fine: the model is only known at the step");
        assert_group_param_not_in_model(model, optim, "stray", stray, device);
    }
    on_test_backend!(case);
}

/// The documented trap: groups built from a fresh model, which then loads a checkpoint (the
/// module record replaces the parameter ids), name parameters the model no longer has.
#[test]
fn groups_made_before_loading_the_model_record_are_an_error_at_the_step() {
    fn case<B: AutodiffBackend>(device: &B::Device) {
        let spec = spec(33);
        let checkpoint = spec.sparse::<B>(device).into_record();
        let fresh = SparseTower {
            head: burn::nn::LinearConfig::new(spec.d, spec.d_out).init::<B>(device),
            table: SparseEmbeddingConfig::new(spec.n, spec.d).init(device),
        };
        let mut optim: Optim<B> = config().init();
        optim
            .add_param_group(ParamGroup::new("embeddings").with_module(&fresh.table))
            .unwrap();
        let stale = fresh.table.weight.id;
        let model = fresh.load_record(checkpoint);
        assert_ne!(model.table.weight.id, stale, "loading replaced the id");
        assert_group_param_not_in_model(model, optim, "embeddings", stale, device);
    }
    on_test_backend!(case);
}
