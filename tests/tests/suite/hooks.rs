//! Hooks: step pre- and post-hooks (what they see of a step: learning rates, groups, step
//! counts, touched rows, paths), removing them through their handles, and the record hooks
//! around `to_record` / `load_record` (order, transforming the record, `prepend`), shared by
//! the optimizer's clones.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use burn::module::ParamId;
use burn::optim::Optimizer;
use burn::tensor::backend::AutodiffBackend;
use burn_sparse_adam::{
    HookHandle, KernelPath, NonFinite, ParamGroup, ParamStep, SparseAdamConfig,
    SparseAdamOptimizer, SparseAdamRecord, StepInfo, StepPath,
};
use burn_sparse_adam_tests::{
    on_test_backend, saved_states, twin, DenseTower, Rng, SparseTower, SplitBatch, TestBackend,
    TowerSpec,
};

type Optim<B> = SparseAdamOptimizer<SparseTower<B>, B>;

/// Everything the hooks of a test saw, in order.
type Log<T> = Arc<Mutex<Vec<T>>>;

fn log<T>() -> Log<T> {
    Arc::new(Mutex::new(Vec::new()))
}

fn take<T: Clone>(log: &Log<T>) -> Vec<T> {
    std::mem::take(&mut *log.lock().unwrap())
}

/// A 6×3 table whose row 5 is `padding_idx`, and a 3→2 head.
fn tower<B: AutodiffBackend>(device: &B::Device) -> SparseTower<B> {
    let spec = TowerSpec::random(6, 3, 2, 41);
    spec.sparse_padded(Some(5), device)
}

/// A batch with the given lookups whose head gradients have rows that are exactly zero:
/// `x = [[0, 0.5, -0.25], [0, 0.75, 1]]` and `e = [[0.5, 0.25], [0.125, -0.25]]` give the
/// weight `xᵀe = [[0, 0], [0.34375, -0.0625], [0, -0.3125]]` (rows 1 and 2 touched) and the
/// bias `Σe = [0.625, 0]` (entry 0 touched).
fn batch(indices: &[i64]) -> SplitBatch {
    let mut rng = Rng::new(indices.len() as u64);
    SplitBatch {
        indices: indices.to_vec(),
        table_coefficients: rng.dyadic_vec(indices.len() * 3),
        head_input: vec![0.0, 0.5, -0.25, 0.0, 0.75, 1.0],
        head_coefficients: vec![0.5, 0.25, 0.125, -0.25],
    }
}

fn step<B: AutodiffBackend>(
    optim: &mut Optim<B>,
    model: SparseTower<B>,
    batch: &SplitBatch,
    lr: f64,
    device: &B::Device,
) -> SparseTower<B> {
    let grads = batch.grads(&model, device);
    optim.try_step(lr, model, grads).expect("a valid step")
}

fn param_step(
    param: ParamId,
    group: Option<&str>,
    lr: f64,
    step: usize,
    touched_rows: usize,
    path: StepPath,
) -> ParamStep {
    ParamStep {
        param,
        group: group.map(String::from),
        lr,
        step,
        touched_rows,
        path,
        kernel: None,
    }
}

/// What post-hooks see: `info` with the step counts after the step, and the kernel each
/// update ran on: the test backend's fused row update for touched rows (the suite builds
/// burn-wgpu without fusion); for dense gradients the fused one pass on burn-ndarray and
/// the composed masked update on wgpu; none for a row gradient that touches no row.
fn with_steps(info: &StepInfo, steps: &[usize]) -> StepInfo {
    let mut info = info.clone();
    assert_eq!(info.params.len(), steps.len());
    let fused = match TestBackend::selected() {
        TestBackend::NdArray => KernelPath::FusedNdArray,
        TestBackend::Wgpu => KernelPath::FusedWgpu,
    };
    let dense = match TestBackend::selected() {
        TestBackend::NdArray => KernelPath::FusedNdArray,
        TestBackend::Wgpu => KernelPath::Composed,
    };
    for (p, &s) in info.params.iter_mut().zip(steps) {
        p.step = s;
        p.kernel = match p.path {
            StepPath::Dense => Some(dense),
            StepPath::Rows if p.touched_rows > 0 => Some(fused),
            StepPath::Rows | StepPath::SkippedNonFinite => None,
        };
    }
    info
}

// ---- step hooks -----------------------------------------------------------------------------

/// Pre- and post-hooks see the step's lr and, for each parameter with a gradient (in the
/// model's order), its group, lr, step count (before / after), touched rows and path.
#[test]
fn step_hooks_see_rates_groups_counts_touched_rows_and_paths() {
    fn case<B: AutodiffBackend>(device: &B::Device) {
        let model = tower::<B>(device);
        let weight = model.head.weight.id;
        let bias = model.head.bias.as_ref().unwrap().id;
        let table = model.table.weight.id;
        let mut optim: Optim<B> = SparseAdamConfig::new().init();
        optim
            .add_param_group(
                ParamGroup::new("head")
                    .with_params([weight])
                    .with_lr_scale(0.5),
            )
            .unwrap();
        optim
            .add_param_group(
                ParamGroup::new("table")
                    .with_module(&model.table)
                    .with_lr(0.02),
            )
            .unwrap();
        let seen: Log<(&str, StepInfo)> = log();
        let pre = {
            let seen = seen.clone();
            optim.register_step_pre_hook(move |info| {
                seen.lock().unwrap().push(("pre", info.clone()))
            })
        };
        let post = {
            let seen = seen.clone();
            optim.register_step_post_hook(move |info| {
                seen.lock().unwrap().push(("post", info.clone()))
            })
        };

        // Step 1: rows 3 and 1 (3 twice) and the padding row: 2 rows touched.
        let model = step(&mut optim, model, &batch(&[3, 1, 3, 5]), 0.1, device);
        let expected = StepInfo {
            lr: 0.1,
            params: vec![
                param_step(weight, Some("head"), 0.1 * 0.5, 0, 2, StepPath::Dense),
                param_step(bias, None, 0.1, 0, 1, StepPath::Dense),
                param_step(table, Some("table"), 0.02, 0, 2, StepPath::Rows),
            ],
        };
        assert_eq!(
            take(&seen),
            [
                ("pre", expected.clone()),
                ("post", with_steps(&expected, &[1, 1, 1]))
            ],
            "step 1"
        );

        // Step 2: only the table has a gradient, and it looks up only the padding row.
        let model = step(&mut optim, model, &batch(&[5, 5]).table_only(), 0.3, device);
        let expected = StepInfo {
            lr: 0.3,
            params: vec![param_step(table, Some("table"), 0.02, 1, 0, StepPath::Rows)],
        };
        assert_eq!(
            take(&seen),
            [
                ("pre", expected.clone()),
                ("post", with_steps(&expected, &[2]))
            ],
            "step 2: parameters without a gradient are not listed"
        );

        // Step 3: a lookup of nothing, and the head.
        let model = step(&mut optim, model, &batch(&[]), 0.2, device);
        let expected = StepInfo {
            lr: 0.2,
            params: vec![
                param_step(weight, Some("head"), 0.2 * 0.5, 1, 2, StepPath::Dense),
                param_step(bias, None, 0.2, 1, 1, StepPath::Dense),
                param_step(table, Some("table"), 0.02, 2, 0, StepPath::Rows),
            ],
        };
        assert_eq!(
            take(&seen),
            [
                ("pre", expected.clone()),
                ("post", with_steps(&expected, &[2, 2, 3]))
            ],
            "step 3"
        );

        // A rejected step is not a step: no post-hook.
        let grads = batch(&[1]).grads(&model, device);
        optim.try_step(-1.0, model.clone(), grads).unwrap_err();
        assert!(
            take(&seen).iter().all(|(when, _)| *when != "post"),
            "no post-hook for a rejected step"
        );
        assert!(pre.remove() && post.remove());
    }
    on_test_backend!(case);
}

/// Touched rows follow each path's semantics: on the row path every distinct looked-up row
/// (not padding) counts, even one whose gradients cancel; on the dense path (a stock
/// `Embedding`) only rows with a non-zero gradient.
#[test]
fn touched_rows_follow_the_semantics_of_each_path() {
    fn case<B: AutodiffBackend>(device: &B::Device) {
        let spec = TowerSpec::random(6, 3, 2, 43);
        // Row 2 twice with opposite coefficients, row 4 once.
        let batch = SplitBatch {
            indices: vec![2, 2, 4],
            table_coefficients: vec![0.5, -0.25, 1.0, -0.5, 0.25, -1.0, 0.125, 0.0, 0.0],
            head_input: vec![],
            head_coefficients: vec![],
        };
        let touched = |info: &StepInfo| -> Vec<(usize, StepPath)> {
            info.params
                .iter()
                .map(|p| (p.touched_rows, p.path))
                .collect()
        };

        let seen: Log<StepInfo> = log();
        let sparse = spec.sparse::<B>(device);
        let mut optim: Optim<B> = SparseAdamConfig::new().init();
        let hook = {
            let seen = seen.clone();
            optim.register_step_pre_hook(move |info| seen.lock().unwrap().push(info.clone()))
        };
        let grads = batch.grads(&sparse, device);
        optim.try_step(0.1, sparse, grads).unwrap();
        let infos = take(&seen);
        assert_eq!(infos.len(), 1);
        assert_eq!(touched(&infos[0]), [(2, StepPath::Rows)], "row path");
        assert!(hook.remove());

        let dense: DenseTower<B> = spec.dense(device);
        let mut optim: SparseAdamOptimizer<DenseTower<B>, B> = SparseAdamConfig::new().init();
        let hook = {
            let seen = seen.clone();
            optim.register_step_post_hook(move |info| seen.lock().unwrap().push(info.clone()))
        };
        let grads = batch.grads(&dense, device);
        optim.try_step(0.1, dense, grads).unwrap();
        let infos = take(&seen);
        assert_eq!(infos.len(), 1);
        assert_eq!(touched(&infos[0]), [(1, StepPath::Dense)], "dense path");
        assert_eq!(infos[0].params[0].step, 1);
        assert!(hook.remove());
    }
    on_test_backend!(case);
}

/// A parameter skipped for a non-finite gradient shows as `SkippedNonFinite`, its count
/// unchanged, while the others step.
#[test]
fn a_skipped_parameter_shows_as_skipped_non_finite() {
    fn case<B: AutodiffBackend>(device: &B::Device) {
        let model = tower::<B>(device);
        let weight = model.head.weight.id;
        let table = model.table.weight.id;
        let mut optim: Optim<B> = SparseAdamConfig::new()
            .with_non_finite(NonFinite::Skip)
            .init();
        let seen: Log<StepInfo> = log();
        let _hook = {
            let seen = seen.clone();
            optim.register_step_post_hook(move |info| seen.lock().unwrap().push(info.clone()))
        };
        let paths = |info: &StepInfo| -> Vec<(StepPath, usize)> {
            info.params.iter().map(|p| (p.path, p.step)).collect()
        };

        // A NaN in the head's input: the weight's gradient is NaN, the bias' is not.
        let mut nan_head = batch(&[0, 1]);
        nan_head.head_input[1] = f32::NAN;
        let model = step(&mut optim, model, &nan_head, 0.1, device);
        let info = take(&seen).pop().expect("one step");
        assert_eq!(info.params[0].param, weight);
        assert_eq!(
            paths(&info),
            [
                (StepPath::SkippedNonFinite, 0),
                (StepPath::Dense, 1),
                (StepPath::Rows, 1)
            ]
        );

        // An inf in the table's gradient: the table is skipped, the weight takes its first step.
        let mut inf_table = batch(&[0, 1]);
        inf_table.table_coefficients[4] = f32::NEG_INFINITY;
        let _model = step(&mut optim, model, &inf_table, 0.1, device);
        let info = take(&seen).pop().expect("one step");
        assert_eq!(info.params[2].param, table);
        assert_eq!(
            paths(&info),
            [
                (StepPath::Dense, 1),
                (StepPath::Dense, 2),
                (StepPath::SkippedNonFinite, 1)
            ]
        );
    }
    on_test_backend!(case);
}

/// Removing a handle stops its hook (and only it); a hook can remove itself while it runs;
/// a handle whose optimizer is gone removes nothing.
#[test]
fn removing_a_handle_stops_the_calls() {
    fn case<B: AutodiffBackend>(device: &B::Device) {
        let model = tower::<B>(device);
        let mut optim: Optim<B> = SparseAdamConfig::new().init();
        let counter = || Arc::new(AtomicUsize::new(0));
        let (pre_calls, post_calls, once_calls) = (counter(), counter(), counter());
        let pre = {
            let calls = pre_calls.clone();
            optim.register_step_pre_hook(move |_| {
                calls.fetch_add(1, Ordering::SeqCst);
            })
        };
        let post = {
            let calls = post_calls.clone();
            optim.register_step_post_hook(move |_| {
                calls.fetch_add(1, Ordering::SeqCst);
            })
        };
        // A hook that removes itself the first time it runs.
        let slot: Arc<Mutex<Option<HookHandle>>> = Arc::new(Mutex::new(None));
        let once = {
            let (calls, slot) = (once_calls.clone(), slot.clone());
            optim.register_step_pre_hook(move |_| {
                calls.fetch_add(1, Ordering::SeqCst);
                let handle = slot.lock().unwrap().take().expect("called once");
                assert!(handle.remove(), "removing itself");
            })
        };
        *slot.lock().unwrap() = Some(once);
        let counts = || [&pre_calls, &post_calls, &once_calls].map(|c| c.load(Ordering::SeqCst));

        let model = step(&mut optim, model, &batch(&[1, 2]), 0.1, device);
        assert_eq!(counts(), [1, 1, 1]);
        assert!(pre.remove(), "the pre-hook was registered");
        let model = step(&mut optim, model, &batch(&[3]), 0.1, device);
        assert_eq!(counts(), [1, 2, 1], "the removed hooks are not called");
        assert!(post.remove(), "the post-hook was registered");
        let model = step(&mut optim, model, &batch(&[4]), 0.1, device);
        assert_eq!(counts(), [1, 2, 1]);
        drop(model);

        // The handle of an optimizer that no longer exists.
        let gone: Optim<B> = SparseAdamConfig::new().init();
        let handle = gone.register_step_post_hook(|_| {});
        drop(gone);
        assert!(!handle.remove(), "nothing to remove");
    }
    on_test_backend!(case);
}

// ---- record hooks ---------------------------------------------------------------------------

/// An optimizer with groups a = [table] (lr scale 2) and b = [head weight], after one step
/// (every parameter has a state).
fn trained<B: AutodiffBackend>(device: &B::Device) -> (SparseTower<B>, Optim<B>) {
    let model = tower::<B>(device);
    let mut optim: Optim<B> = SparseAdamConfig::new().init();
    optim
        .add_param_group(
            ParamGroup::new("a")
                .with_module(&model.table)
                .with_lr_scale(2.0),
        )
        .unwrap();
    optim
        .add_param_group(ParamGroup::new("b").with_params([model.head.weight.id]))
        .unwrap();
    let model = step(&mut optim, model, &batch(&[0, 2, 2]), 0.1, device);
    (model, optim)
}

fn state_ids<B: AutodiffBackend>(record: &SparseAdamRecord<B>) -> Vec<ParamId> {
    saved_states(&record.states).into_keys().collect()
}

fn sorted(mut ids: Vec<ParamId>) -> Vec<ParamId> {
    ids.sort();
    ids
}

/// The pre-hook runs before the record is built, with the optimizer; post-hooks transform
/// the record in turn, and what the last returns is what `to_record` gives; the optimizer
/// itself is not changed.
#[test]
fn to_record_hooks_run_around_it_and_transform_the_record() {
    fn case<B: AutodiffBackend>(device: &B::Device) {
        let (model, optim) = trained::<B>(device);
        let bias = model.head.bias.as_ref().unwrap().id;
        let all_ids = sorted(vec![model.table.weight.id, model.head.weight.id, bias]);
        let calls: Log<String> = log();
        let pre = {
            let calls = calls.clone();
            optim.register_to_record_pre_hook(
                move |optim: &Optim<B>| {
                    calls
                        .lock()
                        .unwrap()
                        .push(format!("pre: {} groups", optim.param_groups().len()))
                },
                false,
            )
        };
        let drop_b_and_bias = {
            let calls = calls.clone();
            optim.register_to_record_post_hook(
                move |mut record: SparseAdamRecord<B>| {
                    calls.lock().unwrap().push("drop".into());
                    record.groups.retain(|g| g.name() != "b");
                    record.states.remove(&bias);
                    record
                },
                false,
            )
        };
        let count = {
            let calls = calls.clone();
            optim.register_to_record_post_hook(
                move |record: SparseAdamRecord<B>| {
                    calls.lock().unwrap().push(format!(
                        "count: {} groups, {} states",
                        record.groups.len(),
                        record.states.len()
                    ));
                    record
                },
                false,
            )
        };

        let record = optim.to_record();
        assert_eq!(
            take(&calls),
            ["pre: 2 groups", "drop", "count: 1 groups, 2 states"]
        );
        assert_eq!(
            record.groups,
            optim.param_groups()[..1].to_vec(),
            "group b was dropped"
        );
        assert_eq!(
            state_ids(&record),
            sorted(vec![model.table.weight.id, model.head.weight.id])
        );
        // The optimizer still has everything.
        assert_eq!(optim.param_groups().len(), 2);
        assert!(pre.remove() && drop_b_and_bias.remove() && count.remove());
        let record = optim.to_record();
        assert!(
            take(&calls).is_empty(),
            "removed record hooks are not called"
        );
        assert_eq!(record.groups.len(), 2);
        assert_eq!(state_ids(&record), all_ids);
    }
    on_test_backend!(case);
}

/// A load pre-hook transforms the record before it is loaded; a load post-hook sees the
/// loaded optimizer. A record that fails to load runs the pre-hooks but not the post-hooks,
/// and a pre-hook can repair a record (here, rename a group) so that it loads.
#[test]
fn load_record_hooks_transform_the_record_and_see_the_loaded_optimizer() {
    fn case<B: AutodiffBackend>(device: &B::Device) {
        let (model, saved) = trained::<B>(device);
        let (table, weight) = (model.table.weight.id, model.head.weight.id);
        let record = saved.to_record();
        let calls: Log<String> = log();

        // Into an optimizer without groups: the pre-hook drops group b and the weight's state.
        let mut optim: Optim<B> = SparseAdamConfig::new().init();
        let _pre = {
            let calls = calls.clone();
            optim.register_load_record_pre_hook(
                move |mut record: SparseAdamRecord<B>| {
                    calls
                        .lock()
                        .unwrap()
                        .push(format!("pre: {} groups", record.groups.len()));
                    record.groups.truncate(1);
                    record.states.remove(&weight);
                    record
                },
                false,
            )
        };
        let _post = {
            let calls = calls.clone();
            optim.register_load_record_post_hook(
                move |optim: &Optim<B>| {
                    let step = optim.state::<2>(table).map(|s| s.step);
                    calls.lock().unwrap().push(format!(
                        "post: groups {:?}, table at step {step:?}, weight state {}",
                        optim
                            .param_groups()
                            .iter()
                            .map(|g| g.name())
                            .collect::<Vec<_>>(),
                        optim.state::<2>(weight).is_some()
                    ));
                },
                false,
            )
        };
        optim.try_load_record(record.clone()).expect("loads");
        assert_eq!(
            take(&calls),
            [
                "pre: 2 groups",
                "post: groups [\"a\"], table at step Some(1), weight state false"
            ]
        );
        assert_eq!(optim.param_groups(), &saved.param_groups()[..1]);

        // Into an optimizer with other groups: the pre-hook runs, the load fails, no post-hook.
        let mut other: Optim<B> = SparseAdamConfig::new().init();
        other
            .add_param_group(
                ParamGroup::new("renamed")
                    .with_module(&model.table)
                    .with_lr_scale(2.0),
            )
            .unwrap();
        other
            .add_param_group(ParamGroup::new("b").with_params([weight]))
            .unwrap();
        let _post = {
            let calls = calls.clone();
            other.register_load_record_post_hook(
                move |_: &Optim<B>| calls.lock().unwrap().push("post".into()),
                false,
            )
        };
        let failing = {
            let calls = calls.clone();
            other.register_load_record_pre_hook(
                move |record: SparseAdamRecord<B>| {
                    calls.lock().unwrap().push("pre".into());
                    record
                },
                false,
            )
        };
        other.try_load_record(record.clone()).unwrap_err();
        assert_eq!(take(&calls), ["pre"], "no post-hook after a failed load");
        assert!(failing.remove());

        // A pre-hook that renames the record's group "a" makes it load.
        let _rename = other.register_load_record_pre_hook(
            |mut record: SparseAdamRecord<B>| {
                let a = &record.groups[0];
                assert_eq!(a.name(), "a");
                record.groups[0] = ParamGroup::new("renamed")
                    .with_params(a.params().to_vec())
                    .with_lr_scale(2.0);
                record
            },
            false,
        );
        other
            .try_load_record(record)
            .expect("the renamed record loads");
        assert_eq!(take(&calls), ["post"]);
        assert_eq!(other.param_groups()[0].name(), "renamed");
        assert_eq!(other.state::<2>(table).map(|s| s.step), Some(1));
    }
    on_test_backend!(case);
}

/// `prepend: true` puts a hook first, for each of the four record hooks.
#[test]
fn prepend_puts_a_record_hook_first() {
    fn case<B: AutodiffBackend>(device: &B::Device) {
        let (_model, optim) = trained::<B>(device);
        let calls: Log<String> = log();
        let mut handles = Vec::new();
        // Registered in the order A (append), B (append), C (prepend), D (prepend): called
        // in the order D, C, A, B.
        for (name, prepend) in [("A", false), ("B", false), ("C", true), ("D", true)] {
            let c = calls.clone();
            handles.push(optim.register_to_record_pre_hook(
                move |_: &Optim<B>| c.lock().unwrap().push(format!("to_record pre {name}")),
                prepend,
            ));
            let c = calls.clone();
            handles.push(optim.register_to_record_post_hook(
                move |r: SparseAdamRecord<B>| {
                    c.lock().unwrap().push(format!("to_record post {name}"));
                    r
                },
                prepend,
            ));
            let c = calls.clone();
            handles.push(optim.register_load_record_pre_hook(
                move |r: SparseAdamRecord<B>| {
                    c.lock().unwrap().push(format!("load pre {name}"));
                    r
                },
                prepend,
            ));
            let c = calls.clone();
            handles.push(optim.register_load_record_post_hook(
                move |_: &Optim<B>| c.lock().unwrap().push(format!("load post {name}")),
                prepend,
            ));
        }
        let record = optim.to_record();
        optim
            .clone()
            .try_load_record(record)
            .expect("its own record loads");
        let expected: Vec<String> = ["to_record pre", "to_record post", "load pre", "load post"]
            .iter()
            .flat_map(|kind| ["D", "C", "A", "B"].map(|name| format!("{kind} {name}")))
            .collect();
        assert_eq!(take(&calls), expected);
        assert!(handles.into_iter().all(HookHandle::remove));
    }
    on_test_backend!(case);
}

/// Clones of an optimizer share their hooks (documented): a hook registered on either runs
/// for both, and removing it through its handle removes it for both.
#[test]
fn clones_share_their_hooks() {
    fn case<B: AutodiffBackend>(device: &B::Device) {
        let model = tower::<B>(device);
        let mut optim: Optim<B> = SparseAdamConfig::new().init();
        let calls: Log<&str> = log();
        let first = {
            let calls = calls.clone();
            optim.register_step_post_hook(move |_| calls.lock().unwrap().push("first"))
        };
        let mut clone = optim.clone();
        let second = {
            let calls = calls.clone();
            clone.register_step_post_hook(move |_| calls.lock().unwrap().push("second"))
        };
        let record_pre = {
            let calls = calls.clone();
            optim.register_to_record_pre_hook(
                move |_: &Optim<B>| calls.lock().unwrap().push("record"),
                false,
            )
        };

        let other_model = twin(&model);
        let model = step(&mut optim, model, &batch(&[1]), 0.1, device);
        assert_eq!(
            take(&calls),
            ["first", "second"],
            "the original runs the clone's hook"
        );
        let other_model = step(&mut clone, other_model, &batch(&[1]), 0.1, device);
        assert_eq!(
            take(&calls),
            ["first", "second"],
            "the clone runs the original's hook"
        );
        let _ = clone.to_record();
        assert_eq!(take(&calls), ["record"], "record hooks are shared too");

        assert!(first.remove(), "removed through the original's handle");
        step(&mut clone, other_model, &batch(&[2]), 0.1, device);
        assert_eq!(take(&calls), ["second"], "gone from the clone too");
        assert!(second.remove() && record_pre.remove());
        step(&mut optim, model, &batch(&[2]), 0.1, device);
        assert!(take(&calls).is_empty());
    }
    on_test_backend!(case);
}
