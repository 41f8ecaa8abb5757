//! The row path end to end: `SparseEmbedding` lookups, `collect_grads`, and the
//! optimizer's step, with Burn's gradient plumbing (`GradientsAccumulator`, multi-device
//! `step_multi`), padding, cancelling lookups, empty gradients, mixed models, inference and
//! records.
//!
//! Where the gradients are exact whatever the order of their additions (loss coefficients
//! that are multiples of 1/8, tables without a dense layer in front of the loss), results are
//! compared bit for bit; otherwise within the conformance tolerance.

use burn::module::{AutodiffModule, Module, Param};
use burn::nn::{Embedding, EmbeddingConfig, EmbeddingRecord};
use burn::optim::{GradientsAccumulator, GradientsParams, MultiGradientsParams, Optimizer};
use burn::prelude::DeviceOps;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor};
use burn_sparse_adam::{
    collect_grads, SparseAdamConfig, SparseAdamOptimizer, SparseEmbedding, SparseEmbeddingConfig,
};
use burn_sparse_adam_tests::{
    assert_bits_eq, assert_close, assert_params_close, assert_states_close, copy_grads, indices,
    on_test_backend, param_values, row, sparse_table, state_values, stock_table, summed_row_grads,
    values, weighted_sum, Batch, RefParam, RefSparseAdam, Rng, SparseTower, TowerSpec,
};

/// A batch of lookups into a table: indices `[1, k]` and dyadic loss coefficients `[1, k, d]`.
#[derive(Clone, Debug)]
struct Lookups {
    indices: Vec<i64>,
    coefficients: Vec<f32>,
}

impl Lookups {
    fn random(rng: &mut Rng, rows: usize, k: usize, d: usize) -> Self {
        Self {
            indices: (0..k).map(|_| rng.below(rows) as i64).collect(),
            coefficients: rng.dyadic_vec(k * d),
        }
    }

    fn new(indices: &[i64], coefficients: &[f32]) -> Self {
        Self {
            indices: indices.to_vec(),
            coefficients: coefficients.to_vec(),
        }
    }

    fn concat(&self, other: &Lookups) -> Lookups {
        Lookups {
            indices: [&self.indices[..], &other.indices[..]].concat(),
            coefficients: [&self.coefficients[..], &other.coefficients[..]].concat(),
        }
    }

    /// `sum(lookup(indices) · coefficients)`.
    fn loss<B: Backend>(
        &self,
        lookup: impl Fn(Tensor<B, 2, Int>) -> Tensor<B, 3>,
        device: &B::Device,
    ) -> Tensor<B, 1> {
        let out = lookup(indices(&self.indices, [1, self.indices.len()], device));
        weighted_sum(out, &self.coefficients)
    }

    /// The exact summed gradient `[N, D]` of these lookups into this file's table, and
    /// whether each row is looked up, `padding_idx` excluded.
    fn row_grads(&self, padding_idx: Option<usize>) -> (Vec<f32>, Vec<bool>) {
        summed_row_grads(N, D, &self.indices, &self.coefficients, padding_idx)
    }
}

/// A table's parameter and moments (zeros before its first step) and step count.
struct TableState {
    weight: Vec<f32>,
    exp_avg: Vec<f32>,
    exp_avg_sq: Vec<f32>,
    step: usize,
}

fn table_state<B: AutodiffBackend, M: AutodiffModule<B> + 'static>(
    optim: &SparseAdamOptimizer<M, B>,
    weight: &Param<Tensor<B, 2>>,
) -> TableState {
    let w = values(weight.val());
    match optim.state::<2>(weight.id) {
        Some(s) => TableState {
            exp_avg: values(s.exp_avg),
            exp_avg_sq: values(s.exp_avg_sq),
            step: s.step,
            weight: w,
        },
        None => TableState {
            exp_avg: vec![0.0; w.len()],
            exp_avg_sq: vec![0.0; w.len()],
            step: 0,
            weight: w,
        },
    }
}

fn assert_table_bits_eq(a: &TableState, b: &TableState, what: &str) {
    assert_eq!(a.step, b.step, "{what}: step count");
    assert_bits_eq(&a.weight, &b.weight, &format!("{what}: weight"));
    assert_bits_eq(&a.exp_avg, &b.exp_avg, &format!("{what}: exp_avg"));
    assert_bits_eq(&a.exp_avg_sq, &b.exp_avg_sq, &format!("{what}: exp_avg_sq"));
}

fn assert_table_matches(a: &TableState, expected: &RefParam, what: &str) {
    assert_eq!(a.step, expected.step, "{what}: step count");
    assert_close(
        &a.weight,
        &expected.values_f32(),
        &format!("{what}: weight"),
    );
    assert_close(
        &a.exp_avg,
        &expected.exp_avg_f32(),
        &format!("{what}: exp_avg"),
    );
    assert_close(
        &a.exp_avg_sq,
        &expected.exp_avg_sq_f32(),
        &format!("{what}: exp_avg_sq"),
    );
}

const N: usize = 8;
const D: usize = 3;

fn init(seed: u64) -> Vec<f32> {
    Rng::new(seed).uniform_vec(N * D, -1.0, 1.0)
}

// ---- accumulation ----------------------------------------------------------------------

/// Two backward passes (two lookups, `collect_grads` twice) accumulated by Burn's
/// `GradientsAccumulator` before one step equal one pass over the concatenated batch, bit
/// for bit. A `GradientsParams` dropped without a step takes its row gradients with it, as
/// it does its dense ones: stepping with the second pass's alone equals a step on that batch
/// alone.
#[test]
fn two_backward_passes_before_a_step_equal_one_pass_over_the_concatenated_batch() {
    fn case<B: AutodiffBackend>(device: &B::Device) {
        let mut rng = Rng::new(1);
        let init = init(2);
        let steps: Vec<(Lookups, Lookups)> = (0..3)
            .map(|_| {
                (
                    Lookups::random(&mut rng, N - 2, 4, D),
                    Lookups::random(&mut rng, N - 2, 5, D),
                )
            })
            .collect();
        let config = SparseAdamConfig::new();

        let mut whole: SparseEmbedding<B> = sparse_table(N, D, &init, None, device);
        let mut whole_optim = config.init();
        let mut last_only: SparseEmbedding<B> = sparse_table(N, D, &init, None, device);
        let mut last_only_optim = config.init();
        let mut b_only: SparseEmbedding<B> = sparse_table(N, D, &init, None, device);
        let mut b_only_optim = config.init();
        let mut accumulated: SparseEmbedding<B> = sparse_table(N, D, &init, None, device);
        let mut accumulated_optim = config.init();

        for (s, (a, b)) in steps.iter().enumerate() {
            let lr = 0.02 * (s + 1) as f64;
            let grads = collect_grads(
                a.concat(b).loss(|i| whole.forward(i), device).backward(),
                &whole,
            );
            whole = whole_optim.step(lr, whole, grads);

            let first = collect_grads(
                a.loss(|i| last_only.forward(i), device).backward(),
                &last_only,
            );
            drop(first); // dropped without a step: its row gradients go with it
            let second = collect_grads(
                b.loss(|i| last_only.forward(i), device).backward(),
                &last_only,
            );
            last_only = last_only_optim.step(lr, last_only, second);
            let grads = collect_grads(b.loss(|i| b_only.forward(i), device).backward(), &b_only);
            b_only = b_only_optim.step(lr, b_only, grads);

            let mut accumulator = GradientsAccumulator::<SparseEmbedding<B>>::new();
            let first = collect_grads(
                a.loss(|i| accumulated.forward(i), device).backward(),
                &accumulated,
            );
            accumulator.accumulate(&accumulated, first);
            let second = collect_grads(
                b.loss(|i| accumulated.forward(i), device).backward(),
                &accumulated,
            );
            accumulator.accumulate(&accumulated, second);
            accumulated = accumulated_optim.step(lr, accumulated, accumulator.grads());

            let expected = table_state(&whole_optim, &whole.weight);
            let what = |p: &str| format!("step {}, {p}", s + 1);
            assert_table_bits_eq(
                &table_state(&last_only_optim, &last_only.weight),
                &table_state(&b_only_optim, &b_only.weight),
                &what("the first pass's gradients dropped"),
            );
            assert_table_bits_eq(
                &table_state(&accumulated_optim, &accumulated.weight),
                &expected,
                &what("GradientsAccumulator"),
            );
        }
        // And the concatenated pass itself is the reference's.
        let reference = RefSparseAdam::default();
        let mut expected = RefParam::new(&init, D);
        for (s, (a, b)) in steps.iter().enumerate() {
            let both = a.concat(b);
            let (grad, touched) = both.row_grads(None);
            reference.step_rows(0.02 * (s + 1) as f64, &mut expected, &grad, &touched);
        }
        assert_table_matches(
            &table_state(&whole_optim, &whole.weight),
            &expected,
            "the concatenated pass",
        );
    }
    on_test_backend!(case);
}

/// The same with a dense layer after the table: Burn's `GradientsAccumulator` sums the dense
/// layer's gradients and carries the table's marker; the result is one pass over the
/// concatenated batch, within the tolerance (the dense sums are ordered differently).
#[test]
fn gradients_accumulator_over_a_model_with_a_dense_layer_equals_the_concatenated_batch() {
    fn case<B: AutodiffBackend>(device: &B::Device) {
        let spec = TowerSpec::random(N, D, 2, 3);
        let mut rng = Rng::new(4);
        let config = SparseAdamConfig::new();
        let mut whole = spec.sparse::<B>(device);
        let mut whole_optim: SparseAdamOptimizer<SparseTower<B>, B> = config.init();
        let mut parts = spec.sparse::<B>(device);
        let mut parts_optim: SparseAdamOptimizer<SparseTower<B>, B> = config.init();
        for s in 0..3 {
            let a = Batch::random(&mut rng, N - 2, 2, 2, 2);
            let b = Batch::random(&mut rng, N - 2, 1, 2, 2);
            let both = concat_batches(&a, &b);
            let lr = 0.05;
            whole = whole_optim.step(lr, whole.clone(), both.grads(&whole, device));

            let mut accumulator = GradientsAccumulator::<SparseTower<B>>::new();
            let ga = a.grads(&parts, device);
            accumulator.accumulate(&parts, ga);
            let gb = b.grads(&parts, device);
            accumulator.accumulate(&parts, gb);
            parts = parts_optim.step(lr, parts, accumulator.grads());

            let what = format!("step {}", s + 1);
            assert_params_close(&param_values(&parts), &param_values(&whole), &what);
            assert_states_close(
                &state_values(&parts_optim, &parts),
                &state_values(&whole_optim, &whole),
                &what,
            );
        }
        // Rows never looked up did not move.
        let table = values(parts.table.weight.val());
        assert_bits_eq(
            &table[(N - 2) * D..],
            &spec.table[(N - 2) * D..],
            "rows never looked up",
        );
    }
    on_test_backend!(case);
}

/// `[batch, seq]` batches of the same `seq`, stacked along the batch.
fn concat_batches(a: &Batch, b: &Batch) -> Batch {
    assert_eq!(a.shape[1], b.shape[1]);
    Batch {
        indices: [&a.indices[..], &b.indices[..]].concat(),
        shape: [a.shape[0] + b.shape[0], a.shape[1]],
        coefficients: [&a.coefficients[..], &b.coefficients[..]].concat(),
    }
}

// ---- multi-device ----------------------------------------------------------------------

/// Forward and backward of each part on its own thread, on its own fork of the model (as
/// burn-train's multi-device strategy runs one worker per device, each on
/// `model.fork(&device)`), then `step_multi` with one `GradientsParams` per device.
fn multi_device_grads<B: AutodiffBackend, M: AutodiffModule<B> + Clone>(
    model: &M,
    parts: Vec<Box<dyn FnOnce(M) -> GradientsParams + Send + '_>>,
    device: &B::Device,
) -> MultiGradientsParams {
    let grads: Vec<GradientsParams> = std::thread::scope(|scope| {
        let handles: Vec<_> = parts
            .into_iter()
            .map(|part| {
                let model = model.clone();
                let device = device.clone();
                scope.spawn(move || part(model.fork(&device)))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a worker"))
            .collect()
    });
    MultiGradientsParams {
        grads: grads.into_iter().map(|g| (g, device.to_id())).collect(),
    }
}

/// `step_multi` over two devices (the test device twice) equals a single-device step on the
/// summed gradient, bit for bit, for a table alone.
#[test]
fn step_multi_over_two_devices_equals_a_step_on_the_summed_gradient() {
    fn case<B: AutodiffBackend>(device: &B::Device) {
        let mut rng = Rng::new(5);
        let init = init(6);
        let config = SparseAdamConfig::new();
        let mut single: SparseEmbedding<B> = sparse_table(N, D, &init, None, device);
        let mut single_optim = config.init();
        let mut multi: SparseEmbedding<B> = sparse_table(N, D, &init, None, device);
        let mut multi_optim: SparseAdamOptimizer<SparseEmbedding<B>, B> = config.init();
        for s in 0..3 {
            let a = Lookups::random(&mut rng, N - 1, 4, D);
            let b = Lookups::random(&mut rng, N - 1, 3, D);
            let lr = 0.03;
            let grads = collect_grads(
                a.concat(&b).loss(|i| single.forward(i), device).backward(),
                &single,
            );
            single = single_optim.step(lr, single, grads);

            let (da, db) = (device.clone(), device.clone());
            let (ra, rb) = (&a, &b);
            let parts: Vec<Box<dyn FnOnce(SparseEmbedding<B>) -> GradientsParams + Send + '_>> = vec![
                Box::new(move |m: SparseEmbedding<B>| {
                    collect_grads(ra.loss(|i| m.forward(i), &da).backward(), &m)
                }),
                Box::new(move |m: SparseEmbedding<B>| {
                    collect_grads(rb.loss(|i| m.forward(i), &db).backward(), &m)
                }),
            ];
            let grads = multi_device_grads(&multi, parts, device);
            multi = multi_optim.step_multi(lr, multi, grads);

            assert_table_bits_eq(
                &table_state(&multi_optim, &multi.weight),
                &table_state(&single_optim, &single.weight),
                &format!("step {}", s + 1),
            );
        }
        let last = values(multi.weight.val());
        assert_bits_eq(
            row(&last, D, N - 1),
            row(&init, D, N - 1),
            "the row never looked up",
        );
    }
    on_test_backend!(case);
}

/// The same with a dense layer: its gradients are summed by `MultiGradientsParams`, within
/// the tolerance.
#[test]
fn step_multi_with_a_dense_layer_equals_a_step_on_the_summed_gradient() {
    fn case<B: AutodiffBackend>(device: &B::Device) {
        let spec = TowerSpec::random(N, D, 2, 7);
        let mut rng = Rng::new(8);
        let config = SparseAdamConfig::new();
        let mut single = spec.sparse::<B>(device);
        let mut single_optim: SparseAdamOptimizer<SparseTower<B>, B> = config.init();
        let mut multi = spec.sparse::<B>(device);
        let mut multi_optim: SparseAdamOptimizer<SparseTower<B>, B> = config.init();
        for s in 0..3 {
            let a = Batch::random(&mut rng, N - 2, 2, 2, 2);
            let b = Batch::random(&mut rng, N - 2, 1, 2, 2);
            let lr = 0.05;
            let grads = concat_batches(&a, &b).grads(&single, device);
            single = single_optim.step(lr, single, grads);

            let (da, db) = (device.clone(), device.clone());
            let (ra, rb) = (&a, &b);
            let parts: Vec<Box<dyn FnOnce(SparseTower<B>) -> GradientsParams + Send + '_>> = vec![
                Box::new(move |m| ra.grads(&m, &da)),
                Box::new(move |m| rb.grads(&m, &db)),
            ];
            let grads = multi_device_grads(&multi, parts, device);
            multi = multi_optim.step_multi(lr, multi, grads);

            let what = format!("step {}", s + 1);
            assert_params_close(&param_values(&multi), &param_values(&single), &what);
            assert_states_close(
                &state_values(&multi_optim, &multi),
                &state_values(&single_optim, &single),
                &what,
            );
        }
    }
    on_test_backend!(case);
}

// ---- step counts -------------------------------------------------------------------------

#[derive(Module, Debug)]
struct TwoTables<B: Backend> {
    a: SparseEmbedding<B>,
    b: SparseEmbedding<B>,
}

/// Two tables in one model keep their own step counts: a table not looked up in a step has
/// no gradient and takes no step, so its next bias correction uses its own count, exactly
/// as if it had been trained alone on its own steps.
#[test]
fn two_tables_keep_separate_step_counts() {
    fn case<B: AutodiffBackend>(device: &B::Device) {
        let mut rng = Rng::new(9);
        let (init_a, init_b) = (init(10), init(11));
        // Table b is looked up in steps 1 and 3 only.
        let plan: Vec<(Lookups, Option<Lookups>)> = (0..4)
            .map(|s| {
                let a = Lookups::random(&mut rng, N, 3, D);
                let b = (s % 2 == 0).then(|| Lookups::random(&mut rng, N, 3, D));
                (a, b)
            })
            .collect();
        let config = SparseAdamConfig::new();
        let mut model = TwoTables {
            a: sparse_table::<B>(N, D, &init_a, None, device),
            b: sparse_table::<B>(N, D, &init_b, None, device),
        };
        let mut optim: SparseAdamOptimizer<TwoTables<B>, B> = config.init();
        let mut alone_a: SparseEmbedding<B> = sparse_table(N, D, &init_a, None, device);
        let mut alone_a_optim = config.init();
        let mut alone_b: SparseEmbedding<B> = sparse_table(N, D, &init_b, None, device);
        let mut alone_b_optim = config.init();
        for (s, (a, b)) in plan.iter().enumerate() {
            let lr = 0.1 / (1 + s) as f64;
            let mut loss = a.loss(|i| model.a.forward(i), device);
            if let Some(b) = b {
                loss = loss + b.loss(|i| model.b.forward(i), device);
            }
            let grads = collect_grads(loss.backward(), &model);
            model = optim.step(lr, model, grads);

            let grads = collect_grads(a.loss(|i| alone_a.forward(i), device).backward(), &alone_a);
            alone_a = alone_a_optim.step(lr, alone_a, grads);
            if let Some(b) = b {
                let grads =
                    collect_grads(b.loss(|i| alone_b.forward(i), device).backward(), &alone_b);
                alone_b = alone_b_optim.step(lr, alone_b, grads);
            }
        }
        let (a, b) = (
            table_state(&optim, &model.a.weight),
            table_state(&optim, &model.b.weight),
        );
        assert_eq!((a.step, b.step), (4, 2), "step counts of the two tables");
        assert_table_bits_eq(
            &a,
            &table_state(&alone_a_optim, &alone_a.weight),
            "table a vs alone",
        );
        assert_table_bits_eq(
            &b,
            &table_state(&alone_b_optim, &alone_b.weight),
            "table b vs alone",
        );
    }
    on_test_backend!(case);
}

// ---- padding_idx -------------------------------------------------------------------------

/// Lookups of `padding_idx` return its row, give it no gradient (its value and moments
/// stay as they are), and leave the other rows' gradients alone; a new table's padding row
/// starts at zero.
#[test]
fn padding_lookups_return_the_row_and_give_it_no_gradient() {
    fn case<B: AutodiffBackend>(device: &B::Device) {
        const P: usize = 2;
        let fresh = SparseEmbeddingConfig::new(N, D)
            .with_padding_idx(Some(P))
            .init::<B>(device);
        assert_bits_eq(
            row(&values(fresh.weight.val()), D, P),
            &[0.0; D],
            "a new table's padding row",
        );
        assert_eq!(fresh.padding_idx(), Some(P));

        // A padding row that is not zero (loaded), to see that lookups return it.
        let init = init(12);
        let mut table: SparseEmbedding<B> = sparse_table(N, D, &init, Some(P), device);
        let mut optim: SparseAdamOptimizer<SparseEmbedding<B>, B> = SparseAdamConfig::new().init();
        let reference = RefSparseAdam::default();
        let mut expected = RefParam::new(&init, D);
        let mut rng = Rng::new(13);
        for s in 0..3 {
            let lookups = Lookups::new(&[P as i64, 0, P as i64, 5, 0], &rng.dyadic_vec(5 * D));
            let out = values(table.forward(indices(&lookups.indices, [1, 5], device)));
            let weight = values(table.weight.val());
            for (k, &i) in lookups.indices.iter().enumerate() {
                assert_bits_eq(
                    row(&out, D, k),
                    row(&weight, D, i as usize),
                    &format!("lookup {k} (row {i})"),
                );
            }
            let grads = collect_grads(
                lookups.loss(|i| table.forward(i), device).backward(),
                &table,
            );
            table = optim.step(0.1, table, grads);
            let (grad, touched) = lookups.row_grads(Some(P));
            reference.step_rows(0.1, &mut expected, &grad, &touched);
            let state = table_state(&optim, &table.weight);
            assert_table_matches(&state, &expected, &format!("step {}", s + 1));
            assert_bits_eq(
                row(&state.weight, D, P),
                row(&init, D, P),
                "the padding row",
            );
            assert_bits_eq(
                row(&state.exp_avg, D, P),
                &[0.0; D],
                "exp_avg of the padding row",
            );
            assert_bits_eq(
                row(&state.exp_avg_sq, D, P),
                &[0.0; D],
                "exp_avg_sq of the padding row",
            );
            assert!(row(&state.weight, D, 0) != row(&init, D, 0), "row 0 moved");
        }
    }
    on_test_backend!(case);
}

/// A batch of nothing but padding is still a gradient (an empty one): the table's step count
/// advances, nothing else changes, and the next step is bias-corrected with the advanced
/// count.
#[test]
fn a_batch_of_only_padding_counts_a_step() {
    fn case<B: AutodiffBackend>(device: &B::Device) {
        const P: usize = 4;
        let init = init(14);
        let mut table: SparseEmbedding<B> = sparse_table(N, D, &init, Some(P), device);
        let mut optim: SparseAdamOptimizer<SparseEmbedding<B>, B> = SparseAdamConfig::new().init();
        let reference = RefSparseAdam::default();
        let mut expected = RefParam::new(&init, D);
        let mut rng = Rng::new(15);

        let first = Lookups::new(&[1, 3, P as i64], &rng.dyadic_vec(3 * D));
        let grads = collect_grads(first.loss(|i| table.forward(i), device).backward(), &table);
        table = optim.step(0.1, table, grads);
        let (grad, touched) = first.row_grads(Some(P));
        reference.step_rows(0.1, &mut expected, &grad, &touched);
        let before = table_state(&optim, &table.weight);

        let padding = Lookups::new(&[P as i64, P as i64], &rng.dyadic_vec(2 * D));
        let grads = collect_grads(
            padding.loss(|i| table.forward(i), device).backward(),
            &table,
        );
        table = optim.step(0.1, table, grads);
        reference.step_rows(0.1, &mut expected, &[0.0; N * D], &[false; N]);
        let after = table_state(&optim, &table.weight);
        assert_eq!(after.step, 2, "the padding-only batch counted a step");
        assert_table_bits_eq(
            &TableState { step: 2, ..before },
            &after,
            "the padding-only step",
        );

        let third = Lookups::new(&[1, 6], &rng.dyadic_vec(2 * D));
        let grads = collect_grads(third.loss(|i| table.forward(i), device).backward(), &table);
        table = optim.step(0.1, table, grads);
        let (grad, touched) = third.row_grads(Some(P));
        reference.step_rows(0.1, &mut expected, &grad, &touched);
        assert_table_matches(
            &table_state(&optim, &table.weight),
            &expected,
            "the step after (t = 3)",
        );
    }
    on_test_backend!(case);
}

// ---- touched rows ------------------------------------------------------------------------

/// On the row path a looked-up row whose gradient sums to exactly zero is touched: its
/// moments decay and it moves (PyTorch's sparse layout). On the dense path the same row has
/// an all-zero gradient and is untouched, while a row with a gradient moves.
#[test]
fn a_looked_up_row_with_a_zero_sum_is_touched_on_the_row_path_only() {
    fn case<B: AutodiffBackend>(device: &B::Device) {
        let init = init(16);
        let c = [0.5, -0.25, 0.125];
        let nc = [-0.5, 0.25, -0.125];
        // Step 1: rows 0 and 1 get gradients. Step 2: row 0 is looked up twice with
        // gradients that cancel exactly, row 2 gets a gradient.
        let step1 = Lookups::new(&[0, 1], &[c, [0.75, 0.5, -1.0]].concat());
        let step2 = Lookups::new(&[0, 2, 0], &[c, [-0.375, 1.0, 0.25], nc].concat());
        let reference = RefSparseAdam::default();

        let mut sparse: SparseEmbedding<B> = sparse_table(N, D, &init, None, device);
        let mut sparse_optim: SparseAdamOptimizer<SparseEmbedding<B>, B> =
            SparseAdamConfig::new().init();
        let mut dense: Embedding<B> = stock_table(N, D, &init, device);
        let mut dense_optim: SparseAdamOptimizer<Embedding<B>, B> = SparseAdamConfig::new().init();
        let mut expected_sparse = RefParam::new(&init, D);
        let mut expected_dense = RefParam::new(&init, D);

        for (s, lookups) in [&step1, &step2].into_iter().enumerate() {
            let sparse_before = table_state(&sparse_optim, &sparse.weight);
            let dense_before = table_state(&dense_optim, &dense.weight);
            let grads = collect_grads(
                lookups.loss(|i| sparse.forward(i), device).backward(),
                &sparse,
            );
            sparse = sparse_optim.step(0.1, sparse, grads);
            let grads = GradientsParams::from_grads(
                lookups.loss(|i| dense.forward(i), device).backward(),
                &dense,
            );
            dense = dense_optim.step(0.1, dense, grads);
            let (grad, touched) = lookups.row_grads(None);
            reference.step_rows(0.1, &mut expected_sparse, &grad, &touched);
            reference.step_dense(0.1, &mut expected_dense, &grad);
            let sparse_after = table_state(&sparse_optim, &sparse.weight);
            let dense_after = table_state(&dense_optim, &dense.weight);
            assert_table_matches(
                &sparse_after,
                &expected_sparse,
                &format!("row path, step {}", s + 1),
            );
            assert_table_matches(
                &dense_after,
                &expected_dense,
                &format!("dense path, step {}", s + 1),
            );
            if s == 1 {
                assert_eq!(row(&grad, D, 0), &[0.0; D], "row 0's gradient sums to zero");
                // Row path: row 0 is touched.
                let r0 = |t: &TableState| {
                    [
                        row(&t.weight, D, 0).to_vec(),
                        row(&t.exp_avg, D, 0).to_vec(),
                        row(&t.exp_avg_sq, D, 0).to_vec(),
                    ]
                };
                let (b, a) = (r0(&sparse_before), r0(&sparse_after));
                for k in 0..D {
                    assert!(a[0][k] != b[0][k], "row path: row 0 moved ({k})");
                    assert!(
                        a[1][k].abs() < b[1][k].abs(),
                        "row path: exp_avg of row 0 decayed ({k})"
                    );
                    assert!(
                        a[2][k] < b[2][k],
                        "row path: exp_avg_sq of row 0 decayed ({k})"
                    );
                }
                // Dense path: row 0 is untouched, row 2 moves.
                let (b, a) = (r0(&dense_before), r0(&dense_after));
                assert_bits_eq(
                    &a.concat(),
                    &b.concat(),
                    "dense path: row 0 (value, exp_avg, exp_avg_sq)",
                );
                for k in 0..D {
                    assert!(
                        row(&dense_after.weight, D, 2)[k] != row(&dense_before.weight, D, 2)[k],
                        "dense path: row 2 moved ({k})"
                    );
                }
            }
        }
    }
    on_test_backend!(case);
}

// ---- empty gradients ---------------------------------------------------------------------

/// An empty gradient still counts a step, on both paths: a lookup of no index (row path)
/// and an all-zero gradient (dense path) advance the step count and change nothing else; the
/// next step is bias-corrected with the advanced count.
#[test]
fn an_empty_gradient_still_counts_a_step() {
    fn case<B: AutodiffBackend>(device: &B::Device) {
        let init = init(17);
        let reference = RefSparseAdam::default();
        let first = Lookups::new(&[1, 4], &[0.5, 0.25, -0.75, 1.0, -0.5, 0.125]);
        let last = Lookups::new(&[1, 6], &[0.25, -0.125, 0.5, -1.0, 0.75, 0.375]);

        // Row path.
        let mut table: SparseEmbedding<B> = sparse_table(N, D, &init, None, device);
        let mut optim: SparseAdamOptimizer<SparseEmbedding<B>, B> = SparseAdamConfig::new().init();
        let mut expected = RefParam::new(&init, D);
        let grads = collect_grads(first.loss(|i| table.forward(i), device).backward(), &table);
        table = optim.step(0.1, table, grads);
        let (grad, touched) = first.row_grads(None);
        reference.step_rows(0.1, &mut expected, &grad, &touched);
        let before = table_state(&optim, &table.weight);
        // A lookup of no index, part of the loss: its (empty) output adds nothing to it. As
        // in the conformance runner, where the output is not tracked (wgpu: Burn 0.21 cannot
        // differentiate an empty sum there), the loss is a zero that needs no zero-sized
        // tensor, and the table counts the lookup by itself.
        let output = table.forward(Tensor::<B, 2, Int>::empty([1, 0], device));
        let loss = if output.is_require_grad() {
            output.sum()
        } else {
            Tensor::<B, 1>::zeros([1], device).require_grad()
        };
        let grads = collect_grads(loss.backward(), &table);
        table = optim.step(0.1, table, grads);
        reference.step_rows(0.1, &mut expected, &[0.0; N * D], &[false; N]);
        let after = table_state(&optim, &table.weight);
        assert_eq!(after.step, 2, "row path: the empty gradient counted a step");
        assert_table_bits_eq(
            &TableState { step: 2, ..before },
            &after,
            "row path: the empty step",
        );
        let grads = collect_grads(last.loss(|i| table.forward(i), device).backward(), &table);
        table = optim.step(0.1, table, grads);
        let (grad, touched) = last.row_grads(None);
        reference.step_rows(0.1, &mut expected, &grad, &touched);
        assert_table_matches(
            &table_state(&optim, &table.weight),
            &expected,
            "row path: the step after (t = 3)",
        );

        // Dense path.
        let mut table: Embedding<B> = stock_table(N, D, &init, device);
        let mut optim: SparseAdamOptimizer<Embedding<B>, B> = SparseAdamConfig::new().init();
        let mut expected = RefParam::new(&init, D);
        let grads = GradientsParams::from_grads(
            first.loss(|i| table.forward(i), device).backward(),
            &table,
        );
        table = optim.step(0.1, table, grads);
        reference.step_dense(0.1, &mut expected, &first.row_grads(None).0);
        let before = table_state(&optim, &table.weight);
        let loss = table.weight.val().sum().mul_scalar(0.0);
        let grads = GradientsParams::from_grads(loss.backward(), &table);
        table = optim.step(0.1, table, grads);
        reference.step_dense(0.1, &mut expected, &[0.0; N * D]);
        let after = table_state(&optim, &table.weight);
        assert_eq!(
            after.step, 2,
            "dense path: the all-zero gradient counted a step"
        );
        assert_table_bits_eq(
            &TableState { step: 2, ..before },
            &after,
            "dense path: the all-zero step",
        );
        let grads =
            GradientsParams::from_grads(last.loss(|i| table.forward(i), device).backward(), &table);
        table = optim.step(0.1, table, grads);
        reference.step_dense(0.1, &mut expected, &last.row_grads(None).0);
        assert_table_matches(
            &table_state(&optim, &table.weight),
            &expected,
            "dense path: the step after (t = 3)",
        );
    }
    on_test_backend!(case);
}

// ---- mixed models ------------------------------------------------------------------------

/// A table used both through lookups and directly (say, tied input and output embeddings)
/// gets a dense gradient and row gradients in the same backward pass: `collect_grads` adds
/// the rows into the dense gradient and the table takes the dense path on the sum, whose
/// all-zero rows stay untouched.
#[test]
fn a_table_used_directly_and_through_lookups_takes_the_dense_path_on_the_sum() {
    fn case<B: AutodiffBackend>(device: &B::Device) {
        let init = init(41);
        let mut rng = Rng::new(42);
        let mut table = sparse_table::<B>(N, D, &init, None, device);
        let mut optim: SparseAdamOptimizer<SparseEmbedding<B>, B> = SparseAdamConfig::new().init();
        let reference = RefSparseAdam::default();
        let mut expected = RefParam::new(&init, D);
        for step in 0..3 {
            let lookups = Lookups::random(&mut rng, N, 5, D);
            // The direct term reaches rows 0 and 1 only.
            let direct: Vec<f32> = (0..N * D)
                .map(|i| if i < 2 * D { rng.dyadic() } else { 0.0 })
                .collect();
            let loss = lookups.loss(|i| table.forward(i), device)
                + weighted_sum(table.weight.val(), &direct);
            let grads = collect_grads(loss.backward(), &table);
            table = optim.step(0.1, table, grads);
            let grad: Vec<f32> = lookups
                .row_grads(None)
                .0
                .iter()
                .zip(&direct)
                .map(|(a, b)| a + b)
                .collect();
            reference.step_dense(0.1, &mut expected, &grad);
            assert_table_matches(
                &table_state(&optim, &table.weight),
                &expected,
                &format!("step {step}"),
            );
            assert_eq!(
                table.collected_row_grads(),
                0,
                "step {step}: rows left behind"
            );
        }
    }
    on_test_backend!(case);
}

/// One optimizer from `SparseAdamConfig::init()` updates a model with a `SparseEmbedding`
/// and a `Linear`: the table on the row path (as the dense-gradient twin of the model, a
/// stock `Embedding`, within the tolerance; rows never looked up bit for bit), the `Linear`
/// on the dense path (as the reference on its own gradient).
#[test]
fn one_optimizer_updates_a_sparse_table_and_a_dense_layer() {
    fn case<B: AutodiffBackend>(device: &B::Device) {
        let spec = TowerSpec::random(N, D, 2, 18);
        let mut rng = Rng::new(19);
        let mut sparse = spec.sparse::<B>(device);
        let mut sparse_optim: SparseAdamOptimizer<SparseTower<B>, B> =
            SparseAdamConfig::new().init();
        let mut dense = spec.dense::<B>(device);
        let mut dense_optim = SparseAdamConfig::new().init();
        let reference = RefSparseAdam::default();
        let mut head_weight = RefParam::new(&spec.head_weight, 2);
        let mut head_bias = RefParam::new(&spec.head_bias, 1);
        for s in 0..3 {
            let batch = Batch::random(&mut rng, N - 2, 2, 3, 2);
            let lr = 0.05;
            let before = param_values(&sparse);
            let grads = batch.grads(&sparse, device);
            let head_grads = copy_grads(&grads, &sparse.head);
            let gw = values(
                head_grads
                    .get::<B::InnerBackend, 2>(sparse.head.weight.id)
                    .expect("a head weight gradient"),
            );
            let bias_id = sparse.head.bias.as_ref().expect("a bias").id;
            let gb = values(
                head_grads
                    .get::<B::InnerBackend, 1>(bias_id)
                    .expect("a bias gradient"),
            );
            sparse = sparse_optim.step(lr, sparse, grads);
            reference.step_dense(lr, &mut head_weight, &gw);
            reference.step_dense(lr, &mut head_bias, &gb);
            dense = dense_optim.step(lr, dense.clone(), batch.grads(&dense, device));

            let after = param_values(&sparse);
            let what = format!("step {}", s + 1);
            assert_close(
                &after[0],
                &head_weight.values_f32(),
                &format!("{what}: head weight"),
            );
            assert_close(
                &after[1],
                &head_bias.values_f32(),
                &format!("{what}: head bias"),
            );
            assert!(
                after[0] != before[0] && after[1] != before[1],
                "{what}: the head moved"
            );
            let looked_up = batch.indices[0] as usize;
            assert!(
                row(&after[2], D, looked_up) != row(&before[2], D, looked_up),
                "{what}: a looked-up row moved"
            );
            assert_bits_eq(
                &after[2][(N - 2) * D..],
                &spec.table[(N - 2) * D..],
                &format!("{what}: rows never looked up"),
            );
            assert_params_close(
                &after,
                &param_values(&dense),
                &format!("{what}: vs the dense-gradient twin"),
            );
            assert_states_close(
                &state_values(&sparse_optim, &sparse),
                &state_values(&dense_optim, &dense),
                &format!("{what}: vs the dense-gradient twin"),
            );
            let steps: Vec<_> = state_values(&sparse_optim, &sparse)
                .iter()
                .map(|s| s.as_ref().map(|s| s.0))
                .collect();
            assert_eq!(
                steps,
                vec![Some(s + 1); 3],
                "{what}: step counts (head weight, head bias, table)"
            );
        }
    }
    on_test_backend!(case);
}

// ---- inference ---------------------------------------------------------------------------

/// Inference records nothing: lookups through `valid()` (the inner backend) and lookups of an
/// autodiff table whose weight does not require a gradient are plain lookups; a training step
/// with `GradientsParams::from_grads` afterwards (which fails when a lookup is waiting for
/// `collect_grads`) goes through.
#[test]
fn inference_records_nothing() {
    fn case<B: AutodiffBackend>(device: &B::Device) {
        let spec = TowerSpec::random(N, D, 2, 20);
        let model = spec.sparse::<B>(device);
        let idx = [3i64, 1, 3];
        let expected = values(model.table.forward(indices(&idx, [1, 3], device)));
        // That autodiff lookup is recorded (the probe works): drop it.
        assert_eq!(model.table.pending_lookups(), 1);
        model.table.clear_row_grads();
        assert_eq!(model.table.pending_lookups(), 0);

        // `valid()`: the inner backend.
        let inner = model.valid();
        let out = inner
            .table
            .forward(indices::<B::InnerBackend>(&idx, [1, 3], device));
        assert_bits_eq(&values(out), &expected, "valid() lookup");
        assert_eq!(inner.table.pending_lookups(), 0, "valid() records nothing");
        assert_eq!(
            model.table.pending_lookups(),
            0,
            "valid() records nothing on the training model"
        );

        // A table created on a backend without autodiff.
        let plain = sparse_table::<B::InnerBackend>(N, D, &spec.table, None, device);
        let out = plain.forward(indices::<B::InnerBackend>(&idx, [1, 3], device));
        assert_bits_eq(&values(out), &expected, "non-autodiff lookup");
        assert_eq!(
            plain.pending_lookups(),
            0,
            "a non-autodiff backend records nothing"
        );

        // An autodiff table that does not require a gradient (frozen).
        let mut frozen = model.clone();
        frozen.table = frozen.table.no_grad();
        let out = frozen.table.forward(indices(&idx, [1, 3], device));
        assert_bits_eq(&values(out), &expected, "frozen lookup");
        let loss = frozen
            .head
            .forward(Tensor::<B, 2>::ones([2, D], device))
            .sum();
        let grads = GradientsParams::from_grads(loss.backward(), &frozen);
        let mut optim: SparseAdamOptimizer<SparseTower<B>, B> = SparseAdamConfig::new().init();
        let stepped = optim
            .try_step(0.1, frozen, grads)
            .expect("nothing waits for collect_grads after a lookup without autodiff");
        assert!(
            optim.state::<2>(stepped.table.weight.id).is_none(),
            "the frozen table took no step"
        );
        assert_bits_eq(
            &values(stepped.table.weight.val()),
            &spec.table,
            "the frozen table",
        );

        // The same step after the valid() lookup, on the training model.
        let loss = model
            .head
            .forward(Tensor::<B, 2>::ones([2, D], device))
            .sum();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let mut optim: SparseAdamOptimizer<SparseTower<B>, B> = SparseAdamConfig::new().init();
        optim
            .try_step(0.1, model, grads)
            .expect("the valid() lookup left nothing waiting");
    }
    on_test_backend!(case);
}

// ---- records -----------------------------------------------------------------------------

/// A stock `Embedding`'s record loads into a `SparseEmbedding` (with or without
/// `padding_idx`) and the `SparseEmbedding`'s record into a stock `Embedding`: values and
/// parameter ids unchanged, lookups identical, also after training.
#[test]
fn stock_embedding_records_load_into_sparse_embedding_and_back() {
    fn case<B: AutodiffBackend>(device: &B::Device) {
        let stock: Embedding<B> = EmbeddingConfig::new(N, D).init(device);
        let stock_values = values(stock.weight.val()); // fixes the lazily initialized values
        for padding_idx in [None, Some(3)] {
            let sparse = SparseEmbeddingConfig::new(N, D)
                .with_padding_idx(padding_idx)
                .init::<B>(device)
                .load_record(stock.clone().into_record());
            assert_eq!(
                sparse.weight.id, stock.weight.id,
                "the parameter id travels with the record"
            );
            assert_bits_eq(
                &values(sparse.weight.val()),
                &stock_values,
                "stock → sparse",
            );
            assert_eq!(
                sparse.padding_idx(),
                padding_idx,
                "padding_idx is the config's"
            );
            let idx = indices::<B>(&[0, 3, 7, 3], [2, 2], device);
            assert_bits_eq(
                &values(sparse.forward(idx.clone())),
                &values(stock.forward(idx)),
                "the same lookups",
            );
            sparse.clear_row_grads();

            // Train the sparse one a little, then back into a stock Embedding.
            let mut optim: SparseAdamOptimizer<SparseEmbedding<B>, B> =
                SparseAdamConfig::new().init();
            let lookups = Lookups::new(&[1, 5], &[0.5, 0.25, -0.75, 1.0, -0.5, 0.125]);
            let grads = collect_grads(
                lookups.loss(|i| sparse.forward(i), device).backward(),
                &sparse,
            );
            let sparse = optim.step(0.1, sparse, grads);
            let trained = values(sparse.weight.val());
            let record: EmbeddingRecord<B> = sparse.clone().into_record();
            let back: Embedding<B> = EmbeddingConfig::new(N, D).init(device).load_record(record);
            assert_eq!(back.weight.id, sparse.weight.id);
            assert_bits_eq(&values(back.weight.val()), &trained, "sparse → stock");
        }
        // And through a non-autodiff module record, as a checkpoint of `valid()` would be.
        let inner_stock = stock.valid();
        let inner_sparse = SparseEmbeddingConfig::new(N, D)
            .init::<B::InnerBackend>(device)
            .load_record(inner_stock.into_record());
        assert_bits_eq(
            &values(inner_sparse.weight.val()),
            &stock_values,
            "inner stock → inner sparse",
        );
    }
    on_test_backend!(case);
}
