//! Records of the 0.2 line: Burn 0.22's burnpack `OptimizerRecord`, the same entries from
//! `SparseAdamOptimizer` and from Burn's `ModuleOptimizer` over the rule, so a checkpoint of
//! either resumes in either; checked against the model before anything changes.

use burn::module::{Module, Param};
use burn::nn::{Linear, LinearConfig};
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Int, Tensor};
use burn_sparse_adam::{
    Error, SparseAdamConfig, SparseAdamOptimizer, SparseEmbedding, SparseEmbeddingConfig,
    collect_grads,
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
            table: SparseEmbeddingConfig::new(30, 4).init(device),
            head: LinearConfig::new(4, 2).init(device),
        }
    }

    fn grads(&self, rows: &[i64], device: &Device) -> GradientsParams {
        let ids = Tensor::<1, Int>::from_data(rows, device).reshape([1, rows.len()]);
        let loss = self
            .head
            .forward(self.table.forward(ids))
            .powi_scalar(2)
            .sum();
        collect_grads(loss.backward(), self)
    }
}

fn train_ours(optim: &mut SparseAdamOptimizer, mut model: Model, steps: usize) -> Model {
    let device = device();
    for s in 0..steps {
        let grads = model.grads(&[s as i64 % 5, 7, 11], &device);
        model = optim.try_step(1e-2, model, grads).unwrap();
    }
    model
}

fn train_burns(optim: &mut ModuleOptimizer, mut model: Model, steps: usize) -> Model {
    let device = device();
    for s in 0..steps {
        let grads = model.grads(&[s as i64 % 5, 7, 11], &device);
        model = optim.step(1e-2, model, grads);
    }
    model
}

fn bits(model: &Model) -> Vec<u32> {
    values(model.table.weight.val())
        .into_iter()
        .chain(values(model.head.weight.val()))
        .map(f32::to_bits)
        .collect()
}

#[test]
fn a_sparse_adam_optimizer_record_resumes_in_burns_module_optimizer_and_back() {
    let device = device();
    let mut ours = SparseAdamConfig::new().init_optimizer();
    let model = train_ours(&mut ours, Model::new(&device), 3);

    // Ours → Burn's: the next steps are the same, bit for bit.
    let mut burns: ModuleOptimizer = SparseAdamConfig::new()
        .init()
        .load_record(ours.to_record().unwrap());
    let a = train_ours(&mut ours.clone(), model.clone(), 2);
    let b = train_burns(&mut burns, model.clone(), 2);
    assert_eq!(bits(&a), bits(&b));

    // Burn's → ours.
    let mut back = SparseAdamConfig::new()
        .init_optimizer()
        .load_record(burns.to_record());
    let c = train_ours(&mut back, b.clone(), 2);
    let d = train_burns(&mut burns, b, 2);
    assert_eq!(bits(&c), bits(&d));
    assert_eq!(back.state::<2>(c.table.weight.id).unwrap().step, 7);
    // The handover helper does the same as loading the record.
    assert!(ours.to_module_optimizer().is_ok());
}

#[test]
fn a_checkpoint_file_resumes_a_fresh_model_and_optimizer_exactly() {
    let device = device();
    let dir = std::env::temp_dir().join(format!("bsa022-ckpt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut optim = SparseAdamConfig::new().init_optimizer();
    let model = train_ours(&mut optim, Model::new(&device), 4);
    model.clone().save_file(dir.join("model.bpk")).unwrap();
    optim.save(dir.join("optim.bpk")).unwrap();
    let continued = train_ours(&mut optim, model, 3);

    // A fresh process: new parameter ids until the model's record restores them.
    let fresh = Model::new(&device).load_file(dir.join("model.bpk"));
    let mut resumed_optim = SparseAdamConfig::new()
        .init_optimizer()
        .load(dir.join("optim.bpk"))
        .unwrap();
    let resumed = train_ours(&mut resumed_optim, fresh, 3);
    assert_eq!(bits(&resumed), bits(&continued));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_record_of_another_optimizer_is_refused() {
    let device = device();
    let mut adam: ModuleOptimizer = AdamConfig::new().init();
    let model = Model::new(&device);
    // Burn's Adam cannot step a table's marker: plain gradients, which leave the table out.
    let ids = Tensor::<1, Int>::from_data([1], &device).reshape([1, 1]);
    let loss = model.head.forward(model.table.forward(ids)).sum();
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    let _ = adam.step(1e-2, model, grads);
    let err = SparseAdamConfig::new()
        .init_optimizer()
        .try_load_record(adam.to_record())
        .unwrap_err();
    assert!(matches!(err, Error::Record { .. }), "{err}");
    assert!(err.to_string().contains("another optimizer"), "{err}");
}

#[test]
fn a_record_that_does_not_fit_the_model_is_an_error_at_the_next_step() {
    let device = device();
    let mut optim = SparseAdamConfig::new().init_optimizer();
    let _ = train_ours(&mut optim, Model::new(&device), 1);
    let record = optim.to_record().unwrap();

    // Another model: its parameters have other ids.
    let other = Model::new(&device);
    let before = bits(&other);
    let mut loaded = SparseAdamConfig::new().init_optimizer().load_record(record);
    let grads = other.grads(&[2], &device);
    let rejected = loaded.try_step(1e-2, other, grads).unwrap_err();
    assert!(
        matches!(rejected.error, Error::RecordParamNotInModel { .. }),
        "{}",
        rejected.error
    );
    assert_eq!(bits(&rejected.module), before);
}

#[test]
fn a_state_of_another_shape_is_an_error_naming_both_shapes() {
    let device = device();
    let mut optim = SparseAdamConfig::new().init_optimizer();
    let mut model = train_ours(&mut optim, Model::new(&device), 1);
    let mut loaded = SparseAdamConfig::new()
        .init_optimizer()
        .load_record(optim.to_record().unwrap());
    // The head's weight replaced by a [4, 3] one under the same id.
    let id = model.head.weight.id;
    let wider = LinearConfig::new(4, 3).init(&device);
    model.head = Linear {
        weight: Param::initialized(id, wider.weight.val()),
        bias: wider.bias,
    };
    let grads = model.grads(&[1], &device);
    let err = loaded.try_step(1e-2, model, grads).unwrap_err().error;
    assert!(matches!(err, Error::StateShape { .. }), "{err}");
    let message = err.to_string();
    assert!(
        message.contains("[4, 3]") && message.contains("[4, 2]"),
        "{message}"
    );
}
