//! Tables whose float type is `f16`: the selected backend's device is configured with
//! `f16` as its default float (once per process, hence a test binary of its own), so the
//! tables, their gradients and their moments (the parameter's own type by default) are all
//! `f16`. They train through the composed path: the loss stays finite and falls, on the row
//! path (`SparseEmbedding`) and the dense path (a stock `Linear`), with an epsilon that
//! `f16` holds (the default 1e-8 rounds to 0 there and is refused). A backend that holds no
//! `f16` must refuse the configuration, and is checked so.

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{DType, Distribution, FloatDType, Int, Tensor, TensorData};
use burn_sparse_adam::{
    Error, SparseAdamConfig, SparseEmbedding, SparseEmbeddingConfig, collect_grads,
};
use burn_sparse_adam_tests::TestBackend;

#[derive(Module, Debug)]
struct Model {
    table: SparseEmbedding,
    head: Linear,
}

#[test]
fn half_precision_tables_train_with_a_finite_falling_loss() {
    let mut inner = TestBackend::selected().inner_device();
    if !inner.supports_dtype(DType::F16) {
        assert!(inner.configure(FloatDType::F16).is_err());
        println!(
            "{:?} holds no f16: refused, as it should be",
            TestBackend::selected()
        );
        return;
    }
    inner
        .configure(FloatDType::F16)
        .expect("a fresh device takes f16");
    let device = inner.autodiff();
    device.seed(7);
    let (rows, dim) = (64, 8);
    let mut model = Model {
        table: SparseEmbeddingConfig::new(rows, dim).init(&device),
        head: LinearConfig::new(dim, 4).init(&device),
    };
    assert_eq!(model.table.weight.val().dtype(), DType::F16);
    assert_eq!(model.head.weight.val().dtype(), DType::F16);
    // Each row is to map to its own target through the head.
    let targets = Tensor::<2>::random([rows, 4], Distribution::Uniform(-1.0, 1.0), &device);
    // The default epsilon, 1e-8, rounds to 0 in f16: refused before anything changes.
    let ids = Tensor::<1, Int>::from_data(TensorData::new(vec![0i64, 1], [2]), &device);
    let loss = model.table.forward(ids.reshape([1, 2])).sum();
    let grads = collect_grads(loss.backward(), &model);
    let rejected = SparseAdamConfig::new()
        .init_optimizer()
        .try_step(3e-2, model, grads)
        .unwrap_err();
    assert_eq!(
        rejected.error,
        Error::EpsilonUnderflowsInParam {
            value: 1e-8,
            param: DType::F16,
        }
    );
    model = rejected.module;
    // fp16 training's usual epsilon.
    let mut optim = SparseAdamConfig::new().with_epsilon(1e-4).init_optimizer();
    let mut losses = Vec::new();
    for step in 0..60 {
        let ids: Vec<i64> = (0..16)
            .map(|i| ((step * 16 + i) * 7 % rows) as i64)
            .collect();
        let index = Tensor::<1, Int>::from_data(TensorData::new(ids.clone(), [16]), &device);
        let wanted = targets.clone().select(0, index.clone());
        let out = model
            .head
            .forward(model.table.forward(index.reshape([1, 16])));
        let loss = (out.reshape([16, 4]) - wanted).powi_scalar(2).mean();
        let value = loss.clone().into_scalar::<f32>();
        assert!(value.is_finite(), "step {step}: loss {value}");
        losses.push(value);
        let grads = collect_grads(loss.backward(), &model);
        model = optim.try_step(3e-2, model, grads).unwrap();
    }
    let state = optim.state::<2>(model.table.weight.id).expect("a state");
    assert_eq!(state.moment_dtype(), DType::F16);
    let mean = |v: &[f32]| v.iter().sum::<f32>() / v.len() as f32;
    let (first, last) = (mean(&losses[..8]), mean(&losses[52..]));
    println!("f16 tables: mean loss {first} over the first 8 steps, {last} over the last 8");
    assert!(
        last < 0.5 * first,
        "the loss does not fall: {first} → {last}"
    );
}
