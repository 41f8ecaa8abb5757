//! Step and record hooks of `SparseAdamOptimizer` on Burn 0.22.

use std::sync::{Arc, Mutex};

use burn::module::{Module, ParamGroup};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Device, Int, Tensor};
use burn_sparse_adam::{
    Kernel, SparseAdamConfig, SparseEmbedding, SparseEmbeddingConfig, StepInfo, StepPath,
    collect_grads,
};
use burn_sparse_adam_tests::{TestBackend, device};

#[derive(Module, Debug)]
struct Model {
    table: SparseEmbedding,
    head: Linear,
}

fn model(device: &Device) -> Model {
    Model {
        table: SparseEmbeddingConfig::new(20, 4).init(device),
        head: LinearConfig::new(4, 3).with_bias(false).init(device),
    }
}

fn grads(model: &Model, device: &Device) -> burn::optim::GradientsParams {
    let ids = Tensor::<1, Int>::from_data([3, 9, 3, 12], device).reshape([1, 4]);
    let loss = model.head.forward(model.table.forward(ids)).sum();
    collect_grads(loss.backward(), model)
}

#[test]
fn step_hooks_see_each_parameters_path_group_step_and_touched_rows() {
    let device = device();
    let seen: Arc<Mutex<Vec<(&'static str, StepInfo)>>> = Arc::default();
    let optim = SparseAdamConfig::new()
        .init_optimizer()
        .with_group(ParamGroup::from_predicate("head"), SparseAdamConfig::new())
        .unwrap();
    let pre = {
        let seen = seen.clone();
        optim.register_step_pre_hook(move |info| seen.lock().unwrap().push(("pre", info.clone())))
    };
    let post = {
        let seen = seen.clone();
        optim.register_step_post_hook(move |info| seen.lock().unwrap().push(("post", info.clone())))
    };
    let mut optim = optim;
    let model = model(&device);
    let model = optim.step(1e-2, model.clone(), grads(&model, &device));
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 2);
        let (when, info) = &seen[0];
        assert_eq!(*when, "pre");
        assert_eq!(info.lr, 1e-2);
        let table = &info.params[0];
        assert_eq!(table.param, model.table.weight.id);
        assert_eq!(table.module_path, "table.weight");
        assert_eq!((table.group, table.step, table.touched_rows), (None, 0, 3));
        assert_eq!(table.path, StepPath::Rows);
        let head = &info.params[1];
        assert_eq!(head.module_path, "head.weight");
        assert_eq!(
            (head.group, head.touched_rows, head.path),
            (Some(0), 4, StepPath::Dense)
        );
        assert_eq!(table.kernel, None, "pre-hooks do not know the path yet");
        let (when, info) = &seen[1];
        assert_eq!(*when, "post");
        assert_eq!(info.params[0].step, 1);
        // Fused on both backends the tests select: flex's loops, wgpu's CubeCL kernel.
        assert_eq!(info.params[0].kernel, Some(Kernel::Fused));
        // The dense head: flex's one pass over its four tables; wgpu's masked update.
        let dense = match TestBackend::selected() {
            TestBackend::Flex => Kernel::Fused,
            TestBackend::Wgpu => Kernel::Composed,
        };
        assert_eq!(info.params[1].kernel, Some(dense));
    }
    assert!(pre.remove());
    assert!(post.remove());
    let _ = optim.step(1e-2, model.clone(), grads(&model, &device));
    assert_eq!(
        seen.lock().unwrap().len(),
        2,
        "removed hooks are not called"
    );
}

#[test]
fn record_hooks_run_around_to_record_and_load_record() {
    let device = device();
    let calls: Arc<Mutex<Vec<&'static str>>> = Arc::default();
    let mut optim = SparseAdamConfig::new().init_optimizer();
    let m = model(&device);
    let _ = optim.step(1e-2, m.clone(), grads(&m, &device));
    {
        let calls = calls.clone();
        let _ = optim.register_to_record_pre_hook(
            move |_| calls.lock().unwrap().push("to_record_pre"),
            false,
        );
    }
    {
        let calls = calls.clone();
        let _ = optim.register_to_record_post_hook(
            move |record| {
                calls.lock().unwrap().push("to_record_post");
                record
            },
            false,
        );
    }
    let record = optim.to_record().unwrap();
    let mut fresh = SparseAdamConfig::new().init_optimizer();
    {
        let pre_calls = calls.clone();
        let _ = fresh.register_load_record_pre_hook(
            move |record| {
                pre_calls.lock().unwrap().push("load_record_pre");
                record
            },
            false,
        );
        let calls = calls.clone();
        let _ = fresh.register_load_record_post_hook(
            move |optim| {
                assert!(optim.state::<2>(m.table.weight.id).is_some());
                calls.lock().unwrap().push("load_record_post");
            },
            false,
        );
    }
    fresh.try_load_record(record).unwrap();
    assert_eq!(
        *calls.lock().unwrap(),
        [
            "to_record_pre",
            "to_record_post",
            "load_record_pre",
            "load_record_post"
        ]
    );
}
