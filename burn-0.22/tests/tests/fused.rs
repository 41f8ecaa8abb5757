//! The fused row update on the selected backend: burn-flex's loops over its storage, or on
//! wgpu with Burn's default features (burn-fusion on) the CubeCL kernel, which burn-fusion
//! queues as a lazy operation. One test in its own binary: it switches the fused paths off
//! for its second run, process-wide.

use std::sync::{Arc, Mutex};

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Device, Int, Tensor};
use burn_sparse_adam::{
    Kernel, SparseAdamConfig, SparseEmbedding, SparseEmbeddingConfig, collect_grads,
    use_fused_kernels,
};
use burn_sparse_adam_tests::{TestBackend, device, plain_device};

#[derive(Module, Debug)]
struct Model {
    table: SparseEmbedding,
    head: Linear,
}

fn bits(t: Tensor<2>) -> Vec<u32> {
    let values = t.into_data().try_into_vec::<f32>().unwrap();
    values.into_iter().map(f32::to_bits).collect()
}

/// Trains `model` for four steps (duplicate indices within a lookup, maximize, weight decay
/// `weight_decay`); returns the table's bits, the head's bits and the row-update path each
/// post-hook saw.
fn train(
    mut model: Model,
    weight_decay: f64,
    device: &Device,
) -> (Vec<u32>, Vec<u32>, Vec<Option<Kernel>>) {
    let kernels: Arc<Mutex<Vec<Option<Kernel>>>> = Arc::default();
    let mut optim = SparseAdamConfig::new()
        .with_beta_1(0.8)
        .with_beta_2(0.95)
        .with_maximize(true)
        .with_weight_decay(Some(weight_decay))
        .init_optimizer();
    {
        let kernels = kernels.clone();
        let _ = optim.register_step_post_hook(move |info| {
            kernels.lock().unwrap().push(info.params[0].kernel);
        });
    }
    let lookups: [[i64; 4]; 4] = [[3, 9, 3, 12], [49, 0, 9, 9], [1, 2, 3, 4], [12, 12, 40, 3]];
    for ids in lookups {
        let ids = Tensor::<1, Int>::from_data(ids, device).reshape([2, 2]);
        let loss = model
            .head
            .forward(model.table.forward(ids))
            .powi_scalar(2)
            .sum();
        let grads = collect_grads(loss.backward(), &model);
        model = optim.step(1e-2, model, grads);
    }
    let kernels = kernels.lock().unwrap().clone();
    (
        bits(model.table.weight.val()),
        bits(model.head.weight.val()),
        kernels,
    )
}

#[test]
fn the_row_update_runs_fused_and_equals_the_composed_path_bit_for_bit() {
    if TestBackend::selected() == TestBackend::Wgpu {
        // Burn's default wgpu features: the `Cube` backend the device reaches is
        // `Fusion<CubeBackend>`, so its tensors are burn-fusion handles.
        let probe = Tensor::<1>::zeros([2], &plain_device());
        let primitive = probe
            .try_into_primitive::<burn::backend::Cube>()
            .expect("a wgpu tensor is a Cube tensor");
        let kind = std::any::type_name_of_val(&primitive);
        assert!(
            kind.contains("FusionTensor"),
            "burn-fusion is on for wgpu, as with Burn's default features (primitive: {kind})"
        );
    }
    let device = device();
    let initial = Model {
        table: SparseEmbeddingConfig::new(50, 6).init(&device),
        head: LinearConfig::new(6, 2).init(&device),
    };
    let before = bits(initial.table.weight.val());
    for weight_decay in [0.0, 5.0] {
        fused_equals_composed(&initial, &before, weight_decay, &device);
    }
}

fn fused_equals_composed(initial: &Model, before: &[u32], weight_decay: f64, device: &Device) {
    // Both runs start from clones of one model: a fused update that wrote into a buffer the
    // clone still shares would change `initial`, and the second run would start elsewhere.
    let (table, head, kernels) = train(initial.clone(), weight_decay, device);
    assert_eq!(
        kernels,
        vec![Some(Kernel::Fused); 4],
        "every step's row update ran fused on {}",
        TestBackend::selected().name()
    );
    use_fused_kernels(false);
    let (composed_table, composed_head, composed_kernels) =
        train(initial.clone(), weight_decay, device);
    use_fused_kernels(true);
    assert_eq!(composed_kernels, vec![Some(Kernel::Composed); 4]);

    assert_eq!(
        bits(initial.table.weight.val()),
        before,
        "the shared clone is untouched"
    );
    assert_eq!(
        table, composed_table,
        "the table after four fused steps, weight decay {weight_decay}"
    );
    assert_eq!(
        head, composed_head,
        "the dense head, which no row path touches, weight decay {weight_decay}"
    );
    let changed_rows: Vec<usize> = (0..50)
        .filter(|r| before[r * 6..r * 6 + 6] != table[r * 6..r * 6 + 6])
        .collect();
    assert_eq!(
        changed_rows,
        vec![0, 1, 2, 3, 4, 9, 12, 40, 49],
        "exactly the looked-up rows moved"
    );
}
