//! Parameter groups on Burn 0.22: Burn's own `ParamGroup` selects the parameters (by path or
//! id), the hyperparameters come with the group, the learning rate from Burn's
//! `ModuleLearningRate`; the same groups work on `ModuleOptimizer::with_group`.

use burn::lr_scheduler::constant::ConstantLr;
use burn::lr_scheduler::module_lr_scheduler::ModuleLrScheduler;
use burn::module::{Module, ParamGroup};
use burn::nn::{Linear, LinearConfig};
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Int, Tensor};
use burn_sparse_adam::{
    Error, SparseAdamConfig, SparseEmbedding, SparseEmbeddingConfig, collect_grads,
};
use burn_sparse_adam_tests::{device, values};

#[derive(Module, Debug)]
struct Model {
    table: SparseEmbedding,
    head: Linear,
}

impl Model {
    fn new(device: &Device) -> Self {
        Self {
            table: SparseEmbeddingConfig::new(20, 4).init(device),
            head: LinearConfig::new(4, 2).init(device),
        }
    }

    fn grads(&self, device: &Device) -> GradientsParams {
        let ids = Tensor::<1, Int>::from_data([3, 9, 3], device).reshape([1, 3]);
        let loss = self
            .head
            .forward(self.table.forward(ids))
            .powi_scalar(2)
            .sum();
        collect_grads(loss.backward(), self)
    }
}

fn weights(model: &Model) -> (Vec<f32>, Vec<f32>) {
    (
        values(model.table.weight.val()),
        values(model.head.weight.val()),
    )
}

#[test]
fn a_group_matched_by_path_takes_its_own_hyperparameters() {
    let device = device();
    let model = Model::new(&device);
    let maximize = SparseAdamConfig::new().with_maximize(true);
    let mut grouped = SparseAdamConfig::new()
        .init_optimizer()
        .with_group(ParamGroup::from_predicate("head"), maximize.clone())
        .unwrap();
    let mut all_max = maximize.init_optimizer();
    let mut plain = SparseAdamConfig::new().init_optimizer();
    let a = grouped.step(1e-2, model.clone(), model.grads(&device));
    let b = all_max.step(1e-2, model.clone(), model.grads(&device));
    let c = plain.step(1e-2, model.clone(), model.grads(&device));
    assert_eq!(weights(&a).1, weights(&b).1, "the head follows its group");
    assert_eq!(weights(&a).0, weights(&c).0, "the table follows the config");
    assert_ne!(weights(&a).1, weights(&c).1);
    assert_eq!(grouped.group_configs(), vec![maximize]);
}

#[test]
fn a_group_matched_by_ids_and_the_last_matching_group_wins() {
    let device = device();
    let model = Model::new(&device);
    let mut grouped = SparseAdamConfig::new()
        .init_optimizer()
        .with_group(
            ParamGroup::ids_from_module(model.table.clone()),
            SparseAdamConfig::new().with_beta_1(0.5),
        )
        .unwrap()
        .with_group(
            ParamGroup::ids_from_module(model.table.clone()),
            SparseAdamConfig::new().with_maximize(true),
        )
        .unwrap();
    let mut all_max = SparseAdamConfig::new().with_maximize(true).init_optimizer();
    let a = grouped.step(1e-2, model.clone(), model.grads(&device));
    let b = all_max.step(1e-2, model.clone(), model.grads(&device));
    assert_eq!(weights(&a).0, weights(&b).0);
}

#[test]
fn group_learning_rates_come_from_burns_module_learning_rate() {
    let device = device();
    let model = Model::new(&device);
    let mut scheduler = ModuleLrScheduler::new(ConstantLr::new(1e-2))
        .with_group(ParamGroup::from_predicate("head"), ConstantLr::new(1e-1));
    let lr = scheduler.step();
    let mut grouped = SparseAdamConfig::new().init_optimizer();
    let mut fast = SparseAdamConfig::new().init_optimizer();
    let mut slow = SparseAdamConfig::new().init_optimizer();
    let a = grouped.step(lr, model.clone(), model.grads(&device));
    let b = fast.step(1e-1, model.clone(), model.grads(&device));
    let c = slow.step(1e-2, model.clone(), model.grads(&device));
    assert_eq!(weights(&a).1, weights(&b).1);
    assert_eq!(weights(&a).0, weights(&c).0);
}

#[test]
fn an_invalid_group_is_an_error_naming_it() {
    let err = SparseAdamConfig::new()
        .init_optimizer()
        .with_group(ParamGroup::all(), SparseAdamConfig::new().with_beta_2(1.0))
        .err()
        .unwrap();
    assert!(matches!(err, Error::InGroup { .. }));
    assert_eq!(
        err.to_string(),
        "in parameter group \"#0\": invalid beta parameter at index 1: 1 (SparseAdamConfig.beta_2 must be in [0, 1))"
    );
}

#[test]
fn the_same_group_on_burns_module_optimizer_computes_the_same_numbers() {
    let device = device();
    let mut model_a = Model::new(&device);
    let mut model_b = model_a.clone();
    let group = || ParamGroup::from_predicate("table");
    let config = SparseAdamConfig::new().with_beta_2(0.9).with_maximize(true);
    let mut ours = SparseAdamConfig::new()
        .init_optimizer()
        .with_group(group(), config.clone())
        .unwrap();
    let mut burns: ModuleOptimizer =
        SparseAdamConfig::new()
            .init()
            .with_group(group(), config.build(), None);
    for _ in 0..3 {
        let grads = model_a.grads(&device);
        model_a = ours.step(1e-2, model_a, grads);
        let grads = model_b.grads(&device);
        model_b = burns.step(1e-2, model_b, grads);
    }
    assert_eq!(weights(&model_a), weights(&model_b));
}

#[test]
fn a_group_without_weight_decay_is_exempt_from_the_configs() {
    let device = device();
    let model = Model::new(&device);
    let decaying = SparseAdamConfig::new().with_weight_decay(Some(3.0));
    let mut grouped = decaying
        .init_optimizer()
        .with_group(ParamGroup::from_predicate("head"), SparseAdamConfig::new())
        .unwrap();
    let mut all_decay = decaying.init_optimizer();
    let mut plain = SparseAdamConfig::new().init_optimizer();
    let a = grouped.step(1e-2, model.clone(), model.grads(&device));
    let b = all_decay.step(1e-2, model.clone(), model.grads(&device));
    let c = plain.step(1e-2, model.clone(), model.grads(&device));
    assert_eq!(
        weights(&a).0,
        weights(&b).0,
        "the table decays with the config"
    );
    assert_eq!(
        weights(&a).1,
        weights(&c).1,
        "the head's group has no decay"
    );
    assert_ne!(weights(&a).0, weights(&c).0, "the decay changed the table");
    assert_ne!(weights(&b).1, weights(&c).1, "the decay changed the head");
}

#[test]
fn an_invalid_weight_decay_is_an_error_naming_it() {
    let err = SparseAdamConfig::new()
        .with_weight_decay(Some(-0.5))
        .try_init_optimizer()
        .err()
        .unwrap();
    assert!(matches!(err, Error::InvalidWeightDecay { value } if value == -0.5));
    assert_eq!(
        err.to_string(),
        "invalid weight_decay value: -0.5 (SparseAdamConfig.weight_decay must be finite and >= 0)"
    );
    let err = SparseAdamConfig::new()
        .init_optimizer()
        .with_group(
            ParamGroup::all(),
            SparseAdamConfig::new().with_weight_decay(Some(f64::INFINITY)),
        )
        .err()
        .unwrap();
    assert_eq!(
        err.to_string(),
        "in parameter group \"#0\": invalid weight_decay value: inf (SparseAdamConfig.weight_decay must be finite and >= 0)"
    );
}
