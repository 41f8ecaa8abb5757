//! Properties of SparseAdam, checked on random cases (proptest):
//!
//! - untouched rows keep their parameter and both moments bit for bit, on the dense path
//!   (stock `Embedding`) and on the row path (`SparseEmbedding`, with `padding_idx`);
//! - when every row is touched in every step, the optimizer is a plain dense Adam with
//!   PyTorch's `float32` arithmetic (a host reference), within the conformance tolerance;
//! - maximizing with gradient `g` is minimizing with `−g`, bit for bit;
//! - the row path (`SparseEmbedding` + `collect_grads`) equals the dense-gradient path (stock
//!   `Embedding` + `GradientsParams::from_grads`) whenever each looked-up row's summed
//!   gradient is non-zero.
//!
//! Loss coefficients are multiples of 1/8, so a row's summed gradient is exact whatever the
//! order of the additions: the host knows it exactly.

use burn::module::{Module, Param};
use burn::nn::Embedding;
use burn::optim::{GradientsParams, Optimizer};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Tensor;
use burn_sparse_adam::{collect_grads, SparseAdamConfig, SparseAdamOptimizer, SparseEmbedding};
use burn_sparse_adam_tests::{
    assert_bits_eq, assert_close, indices, row, sparse_table, stock_table, tensor, values,
    weighted_sum, with_test_backend, RefParam32, RefSparseAdam,
};
use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        // Failures are reported with their shrunk case; no regression files in the tree.
        failure_persistence: None,
        ..ProptestConfig::with_cases(cases)
    }
}

/// A non-zero multiple of 1/8 in `[-1, 1]`.
fn dyadic() -> impl Strategy<Value = f32> {
    (1i32..=8, any::<bool>()).prop_map(|(k, negative)| {
        if negative {
            -k as f32 / 8.0
        } else {
            k as f32 / 8.0
        }
    })
}

/// Hyperparameters, PyTorch's defaults among them: the reference's, and through
/// [`RefSparseAdam::config`] the crate's.
type Hyper = RefSparseAdam;

fn hyper() -> impl Strategy<Value = Hyper> {
    (
        prop::sample::select(vec![0.9, 0.0, 0.5, 0.99]),
        prop::sample::select(vec![0.999, 0.0, 0.9]),
        prop::sample::select(vec![1e-8, 1e-3]),
        any::<bool>(),
    )
        .prop_map(|(beta_1, beta_2, epsilon, maximize)| Hyper {
            beta_1,
            beta_2,
            epsilon,
            maximize,
        })
}

/// Random lookups into an `[n, d]` table over a few steps.
#[derive(Clone, Debug)]
struct LookupCase {
    n: usize,
    d: usize,
    padding_idx: Option<usize>,
    init: Vec<f32>,
    /// Per step, its lookups: an index and the loss coefficients of that lookup (`d` values).
    steps: Vec<Vec<(i64, Vec<f32>)>>,
    lrs: Vec<f64>,
    hyper: Hyper,
}

impl LookupCase {
    fn step_indices(&self, s: usize) -> Vec<i64> {
        self.steps[s].iter().map(|(i, _)| *i).collect()
    }

    fn step_coefficients(&self, s: usize) -> Vec<f32> {
        self.steps[s]
            .iter()
            .flat_map(|(_, c)| c.iter().copied())
            .collect()
    }

    /// The exact summed gradient of each row in step `s` (`[n, d]`), padding lookups left out
    /// when `skip_padding`.
    fn summed_grad(&self, s: usize, skip_padding: bool) -> Vec<f32> {
        let mut grad = vec![0.0f32; self.n * self.d];
        for (index, coefficients) in &self.steps[s] {
            let r = *index as usize;
            if skip_padding && Some(r) == self.padding_idx {
                continue;
            }
            for (k, c) in coefficients.iter().enumerate() {
                grad[r * self.d + k] += c;
            }
        }
        grad
    }

    /// Whether row `r` is looked up in step `s` (padding excluded).
    fn looked_up(&self, s: usize, r: usize) -> bool {
        Some(r) != self.padding_idx && self.steps[s].iter().any(|(i, _)| *i as usize == r)
    }
}

/// `every_row`: each step looks up every row at least once (then random extra lookups).
/// `cancelling`: some steps also look a row up twice with opposite coefficients, so that
/// those two lookups' gradients cancel exactly.
fn lookup_case(
    with_padding: bool,
    every_row: bool,
    cancelling: bool,
) -> impl Strategy<Value = LookupCase> {
    (2usize..=6, 1usize..=3, 1usize..=4).prop_flat_map(move |(n, d, steps)| {
        let lookup = (0..n as i64, prop::collection::vec(dyadic(), d));
        let pair = if cancelling {
            prop::option::of((0..n as i64, prop::collection::vec(dyadic(), d))).boxed()
        } else {
            Just(None).boxed()
        };
        let step = (prop::collection::vec(lookup, 1..=6), pair).prop_map(|(mut lookups, pair)| {
            if let Some((i, c)) = pair {
                let negated = c.iter().map(|x| -x).collect();
                lookups.push((i, c));
                lookups.push((i, negated));
            }
            lookups
        });
        let padding = if with_padding {
            prop::option::of(0..n).boxed()
        } else {
            Just(None).boxed()
        };
        let every = prop::collection::vec(
            prop::collection::vec(prop::collection::vec(dyadic(), d), n),
            steps,
        );
        (
            padding,
            prop::collection::vec(-1.0f32..1.0, n * d),
            prop::collection::vec(step, steps),
            every,
            prop::collection::vec(prop::sample::select(vec![1e-3, 1e-2, 0.1]), steps),
            hyper(),
        )
            .prop_map(move |(padding_idx, init, mut steps, every, lrs, hyper)| {
                if every_row {
                    for (lookups, all) in steps.iter_mut().zip(every) {
                        lookups.extend(all.into_iter().enumerate().map(|(r, c)| (r as i64, c)));
                    }
                }
                LookupCase {
                    n,
                    d,
                    padding_idx,
                    init,
                    steps,
                    lrs,
                    hyper,
                }
            })
    })
}

/// One step of a table on `case`'s step `s`: `sum(table(indices) · coefficients)`.
fn table_loss<B: AutodiffBackend>(
    case: &LookupCase,
    s: usize,
    lookup: impl Fn(Tensor<B, 2, burn::tensor::Int>) -> Tensor<B, 3>,
    device: &B::Device,
) -> Tensor<B, 1> {
    let idx = case.step_indices(s);
    let out = lookup(indices(&idx, [1, idx.len()], device));
    weighted_sum(out, &case.step_coefficients(s))
}

type Snapshot = (Vec<f32>, Vec<f32>, Vec<f32>);

fn snapshot<B: AutodiffBackend, M: burn::module::AutodiffModule<B> + 'static>(
    optim: &SparseAdamOptimizer<M, B>,
    weight: &Param<Tensor<B, 2>>,
) -> Snapshot {
    let p = values(weight.val());
    let (m, v) = match optim.state::<2>(weight.id) {
        Some(s) => (values(s.exp_avg), values(s.exp_avg_sq)),
        None => (vec![0.0; p.len()], vec![0.0; p.len()]),
    };
    (p, m, v)
}

fn assert_rows_bits_eq(after: &Snapshot, before: &Snapshot, d: usize, r: usize, what: &str) {
    assert_bits_eq(
        row(&after.0, d, r),
        row(&before.0, d, r),
        &format!("{what}: row {r} of the parameter"),
    );
    assert_bits_eq(
        row(&after.1, d, r),
        row(&before.1, d, r),
        &format!("{what}: row {r} of exp_avg"),
    );
    assert_bits_eq(
        row(&after.2, d, r),
        row(&before.2, d, r),
        &format!("{what}: row {r} of exp_avg_sq"),
    );
}

// ---- (a) untouched rows are bit-identical ------------------------------------------------

fn untouched_rows_sparse<B: AutodiffBackend>(device: &B::Device, case: &LookupCase) {
    let mut table: SparseEmbedding<B> =
        sparse_table(case.n, case.d, &case.init, case.padding_idx, device);
    let mut optim: SparseAdamOptimizer<SparseEmbedding<B>, B> = case.hyper.config().init();
    for (s, &lr) in case.lrs.iter().enumerate() {
        let before = snapshot(&optim, &table.weight);
        let loss = table_loss::<B>(case, s, |i| table.forward(i), device);
        let grads = collect_grads(loss.backward(), &table);
        table = optim.step(lr, table, grads);
        let after = snapshot(&optim, &table.weight);
        for r in (0..case.n).filter(|&r| !case.looked_up(s, r)) {
            assert_rows_bits_eq(
                &after,
                &before,
                case.d,
                r,
                &format!("sparse path, step {}", s + 1),
            );
        }
        assert_eq!(
            optim.state::<2>(table.weight.id).map(|s| s.step),
            Some(s + 1)
        );
    }
}

fn untouched_rows_dense<B: AutodiffBackend>(device: &B::Device, case: &LookupCase) {
    let mut table: Embedding<B> = stock_table(case.n, case.d, &case.init, device);
    let mut optim: SparseAdamOptimizer<Embedding<B>, B> = case.hyper.config().init();
    for (s, &lr) in case.lrs.iter().enumerate() {
        let before = snapshot(&optim, &table.weight);
        let loss = table_loss::<B>(case, s, |i| table.forward(i), device);
        let grads = GradientsParams::from_grads(loss.backward(), &table);
        table = optim.step(lr, table, grads);
        let after = snapshot(&optim, &table.weight);
        // The dense path's untouched rows: an all-zero summed gradient (not looked up, or
        // looked up with lookups that cancel exactly).
        let grad = case.summed_grad(s, false);
        for r in (0..case.n).filter(|&r| row(&grad, case.d, r).iter().all(|&g| g == 0.0)) {
            assert_rows_bits_eq(
                &after,
                &before,
                case.d,
                r,
                &format!("dense path, step {}", s + 1),
            );
        }
        assert_eq!(
            optim.state::<2>(table.weight.id).map(|s| s.step),
            Some(s + 1)
        );
    }
}

// ---- (b) every row touched: a plain dense Adam -------------------------------------------

/// A module of two plain parameters whose gradients the test sets exactly:
/// `loss = sum(w · G) + sum(b · H)`.
#[derive(Module, Debug)]
struct Plain<B: burn::tensor::backend::Backend> {
    w: Param<Tensor<B, 2>>,
    b: Param<Tensor<B, 1>>,
}

#[derive(Clone, Debug)]
struct DenseCase {
    n: usize,
    d: usize,
    w: Vec<f32>,
    b: Vec<f32>,
    /// Per step: the gradient of `w` (`[n, d]`, every row non-zero) and of `b` (`[n]`,
    /// every element non-zero).
    grads: Vec<(Vec<f32>, Vec<f32>)>,
    lrs: Vec<f64>,
    hyper: Hyper,
}

/// A gradient entry: zero a quarter of the time, else uniform in `[-1, 1]`.
fn entry() -> impl Strategy<Value = f32> {
    prop_oneof![1 => Just(0.0f32), 3 => -1.0f32..1.0]
}

fn dense_case() -> impl Strategy<Value = DenseCase> {
    (1usize..=5, 1usize..=3, 1usize..=4).prop_flat_map(|(n, d, steps)| {
        let grad_w = prop::collection::vec(entry(), n * d).prop_map(move |mut g| {
            // Every row touched: a row whose entries all came out zero gets one.
            for r in 0..n {
                if g[r * d..(r + 1) * d].iter().all(|&x| x == 0.0) {
                    g[r * d] = 0.5;
                }
            }
            g
        });
        let grad_b = prop::collection::vec(dyadic(), n);
        (
            prop::collection::vec(-1.0f32..1.0, n * d),
            prop::collection::vec(-1.0f32..1.0, n),
            prop::collection::vec((grad_w, grad_b), steps),
            prop::collection::vec(prop::sample::select(vec![1e-3, 1e-2, 0.1]), steps),
            hyper(),
        )
            .prop_map(move |(w, b, grads, lrs, hyper)| DenseCase {
                n,
                d,
                w,
                b,
                grads,
                lrs,
                hyper,
            })
    })
}

fn plain_model<B: AutodiffBackend>(case: &DenseCase, device: &B::Device) -> Plain<B> {
    Plain {
        w: Param::from_tensor(tensor(&case.w, [case.n, case.d], device)),
        b: Param::from_tensor(tensor(&case.b, [case.n], device)),
    }
}

fn plain_grads<B: AutodiffBackend>(model: &Plain<B>, gw: &[f32], gb: &[f32]) -> GradientsParams {
    let loss = weighted_sum(model.w.val(), gw) + weighted_sum(model.b.val(), gb);
    GradientsParams::from_grads(loss.backward(), model)
}

fn every_row_dense_matches_reference<B: AutodiffBackend>(device: &B::Device, case: &DenseCase) {
    let mut model = plain_model::<B>(case, device);
    let mut optim: SparseAdamOptimizer<Plain<B>, B> = case.hyper.config().init();
    let reference = &case.hyper;
    let mut ref_w = RefParam32::new(&case.w, case.d);
    let mut ref_b = RefParam32::new(&case.b, 1);
    for (s, ((gw, gb), &lr)) in case.grads.iter().zip(&case.lrs).enumerate() {
        let grads = plain_grads(&model, gw, gb);
        model = optim.step(lr, model, grads);
        reference.step_dense_f32(lr, &mut ref_w, gw);
        reference.step_dense_f32(lr, &mut ref_b, gb);
        let what = |p: &str| format!("dense path, step {}: {p}", s + 1);
        assert_close(&values(model.w.val()), &ref_w.values_f32(), &what("w"));
        assert_close(&values(model.b.val()), &ref_b.values_f32(), &what("b"));
        let sw = optim.state::<2>(model.w.id).expect("w has a state");
        assert_eq!(sw.step, ref_w.step, "{}", what("step of w"));
        assert_close(
            &values(sw.exp_avg),
            &ref_w.exp_avg_f32(),
            &what("exp_avg of w"),
        );
        assert_close(
            &values(sw.exp_avg_sq),
            &ref_w.exp_avg_sq_f32(),
            &what("exp_avg_sq of w"),
        );
        let sb = optim.state::<1>(model.b.id).expect("b has a state");
        assert_eq!(sb.step, ref_b.step, "{}", what("step of b"));
        assert_close(
            &values(sb.exp_avg),
            &ref_b.exp_avg_f32(),
            &what("exp_avg of b"),
        );
        assert_close(
            &values(sb.exp_avg_sq),
            &ref_b.exp_avg_sq_f32(),
            &what("exp_avg_sq of b"),
        );
    }
}

fn every_row_sparse_matches_reference<B: AutodiffBackend>(device: &B::Device, case: &LookupCase) {
    let mut table: SparseEmbedding<B> = sparse_table(case.n, case.d, &case.init, None, device);
    let mut optim: SparseAdamOptimizer<SparseEmbedding<B>, B> = case.hyper.config().init();
    let reference = &case.hyper;
    let mut expected = RefParam32::new(&case.init, case.d);
    for (s, &lr) in case.lrs.iter().enumerate() {
        let loss = table_loss::<B>(case, s, |i| table.forward(i), device);
        let grads = collect_grads(loss.backward(), &table);
        table = optim.step(lr, table, grads);
        // Every row is looked up: every row is touched, even one whose lookups cancel.
        reference.step_rows_f32(
            lr,
            &mut expected,
            &case.summed_grad(s, false),
            &vec![true; case.n],
        );
        let what = |p: &str| format!("sparse path, step {}: {p}", s + 1);
        assert_close(
            &values(table.weight.val()),
            &expected.values_f32(),
            &what("weight"),
        );
        let state = optim.state::<2>(table.weight.id).expect("a state");
        assert_eq!(state.step, expected.step, "{}", what("step"));
        assert_close(
            &values(state.exp_avg),
            &expected.exp_avg_f32(),
            &what("exp_avg"),
        );
        assert_close(
            &values(state.exp_avg_sq),
            &expected.exp_avg_sq_f32(),
            &what("exp_avg_sq"),
        );
    }
}

// ---- (c) maximize(g) = minimize(−g) ------------------------------------------------------

fn maximize_is_minimize_of_negated_dense<B: AutodiffBackend>(device: &B::Device, case: &DenseCase) {
    let up_config = case.hyper.config().with_maximize(true);
    let down_config = case.hyper.config().with_maximize(false);
    let mut up = plain_model::<B>(case, device);
    let mut down = plain_model::<B>(case, device);
    let mut up_optim: SparseAdamOptimizer<Plain<B>, B> = up_config.init();
    let mut down_optim: SparseAdamOptimizer<Plain<B>, B> = down_config.init();
    for (s, ((gw, gb), &lr)) in case.grads.iter().zip(&case.lrs).enumerate() {
        let neg_w: Vec<f32> = gw.iter().map(|g| -g).collect();
        let neg_b: Vec<f32> = gb.iter().map(|g| -g).collect();
        let grads = plain_grads(&up, gw, gb);
        up = up_optim.step(lr, up, grads);
        let grads = plain_grads(&down, &neg_w, &neg_b);
        down = down_optim.step(lr, down, grads);
        let what = |p: &str| format!("step {}: {p}", s + 1);
        assert_bits_eq(&values(up.w.val()), &values(down.w.val()), &what("w"));
        assert_bits_eq(&values(up.b.val()), &values(down.b.val()), &what("b"));
        let (su, sd) = (
            up_optim.state::<2>(up.w.id).unwrap(),
            down_optim.state::<2>(down.w.id).unwrap(),
        );
        assert_eq!(su.step, sd.step);
        assert_bits_eq(
            &values(su.exp_avg),
            &values(sd.exp_avg),
            &what("exp_avg of w"),
        );
        assert_bits_eq(
            &values(su.exp_avg_sq),
            &values(sd.exp_avg_sq),
            &what("exp_avg_sq of w"),
        );
        let (su, sd) = (
            up_optim.state::<1>(up.b.id).unwrap(),
            down_optim.state::<1>(down.b.id).unwrap(),
        );
        assert_bits_eq(
            &values(su.exp_avg),
            &values(sd.exp_avg),
            &what("exp_avg of b"),
        );
        assert_bits_eq(
            &values(su.exp_avg_sq),
            &values(sd.exp_avg_sq),
            &what("exp_avg_sq of b"),
        );
    }
    // It did ascend: maximizing moved w along +g where minimizing −g did too, and not along −g.
    let mut ascend = plain_model::<B>(case, device);
    let grads = plain_grads(&ascend, &case.grads[0].0, &case.grads[0].1);
    ascend = SparseAdamConfig::new()
        .with_maximize(true)
        .init()
        .step(0.1, ascend, grads);
    for (i, (&after, (&before, &g))) in values(ascend.w.val())
        .iter()
        .zip(case.w.iter().zip(&case.grads[0].0))
        .enumerate()
    {
        if g != 0.0 {
            assert!(
                (after - before) * g > 0.0,
                "w[{i}] moved against the gradient when maximizing"
            );
        }
    }
}

fn maximize_is_minimize_of_negated_sparse<B: AutodiffBackend>(
    device: &B::Device,
    case: &LookupCase,
) {
    let mut negated = case.clone();
    for lookups in &mut negated.steps {
        for (_, coefficients) in lookups.iter_mut() {
            coefficients.iter_mut().for_each(|c| *c = -*c);
        }
    }
    let mut up: SparseEmbedding<B> =
        sparse_table(case.n, case.d, &case.init, case.padding_idx, device);
    let mut down: SparseEmbedding<B> =
        sparse_table(case.n, case.d, &case.init, case.padding_idx, device);
    let mut up_optim: SparseAdamOptimizer<SparseEmbedding<B>, B> =
        case.hyper.config().with_maximize(true).init();
    let mut down_optim: SparseAdamOptimizer<SparseEmbedding<B>, B> =
        case.hyper.config().with_maximize(false).init();
    for (s, &lr) in case.lrs.iter().enumerate() {
        let loss = table_loss::<B>(case, s, |i| up.forward(i), device);
        let grads = collect_grads(loss.backward(), &up);
        up = up_optim.step(lr, up, grads);
        let loss = table_loss::<B>(&negated, s, |i| down.forward(i), device);
        let grads = collect_grads(loss.backward(), &down);
        down = down_optim.step(lr, down, grads);
        let a = snapshot(&up_optim, &up.weight);
        let b = snapshot(&down_optim, &down.weight);
        let what = format!("step {}", s + 1);
        assert_bits_eq(&a.0, &b.0, &format!("{what}: weight"));
        assert_bits_eq(&a.1, &b.1, &format!("{what}: exp_avg"));
        assert_bits_eq(&a.2, &b.2, &format!("{what}: exp_avg_sq"));
    }
}

// ---- (d) row path = dense-gradient path --------------------------------------------------

fn sparse_path_equals_dense_path<B: AutodiffBackend>(device: &B::Device, case: &LookupCase) {
    let mut sparse: SparseEmbedding<B> = sparse_table(case.n, case.d, &case.init, None, device);
    let mut dense: Embedding<B> = stock_table(case.n, case.d, &case.init, device);
    let mut sparse_optim: SparseAdamOptimizer<SparseEmbedding<B>, B> = case.hyper.config().init();
    let mut dense_optim: SparseAdamOptimizer<Embedding<B>, B> = case.hyper.config().init();
    for (s, &lr) in case.lrs.iter().enumerate() {
        let loss = table_loss::<B>(case, s, |i| sparse.forward(i), device);
        let grads = collect_grads(loss.backward(), &sparse);
        sparse = sparse_optim.step(lr, sparse, grads);
        let loss = table_loss::<B>(case, s, |i| dense.forward(i), device);
        let grads = GradientsParams::from_grads(loss.backward(), &dense);
        dense = dense_optim.step(lr, dense, grads);

        let a = snapshot(&sparse_optim, &sparse.weight);
        let b = snapshot(&dense_optim, &dense.weight);
        let what = format!("step {}", s + 1);
        assert_close(&a.0, &b.0, &format!("{what}: weight"));
        assert_close(&a.1, &b.1, &format!("{what}: exp_avg"));
        assert_close(&a.2, &b.2, &format!("{what}: exp_avg_sq"));
        let steps = (
            sparse_optim.state::<2>(sparse.weight.id).map(|s| s.step),
            dense_optim.state::<2>(dense.weight.id).map(|s| s.step),
        );
        assert_eq!(steps, (Some(s + 1), Some(s + 1)), "{what}: step counts");
    }
}

/// Whether every row looked up in some step has a non-zero summed gradient in that step.
fn no_cancelling_rows(case: &LookupCase) -> bool {
    (0..case.steps.len()).all(|s| {
        let grad = case.summed_grad(s, false);
        (0..case.n)
            .filter(|&r| case.looked_up(s, r))
            .all(|r| row(&grad, case.d, r).iter().any(|&g| g != 0.0))
    })
}

proptest! {
    #![proptest_config(config(24))]

    #[test]
    fn untouched_rows_are_bit_identical_on_the_sparse_path(case in lookup_case(true, false, true)) {
        with_test_backend!(untouched_rows_sparse(&case));
    }

    #[test]
    fn untouched_rows_are_bit_identical_on_the_dense_path(case in lookup_case(false, false, true)) {
        with_test_backend!(untouched_rows_dense(&case));
    }

    #[test]
    fn every_row_touched_is_dense_adam_on_the_dense_path(case in dense_case()) {
        with_test_backend!(every_row_dense_matches_reference(&case));
    }

    #[test]
    fn every_row_touched_is_dense_adam_on_the_sparse_path(case in lookup_case(false, true, true)) {
        with_test_backend!(every_row_sparse_matches_reference(&case));
    }

    #[test]
    fn maximize_is_minimize_of_the_negated_gradient_dense(case in dense_case()) {
        with_test_backend!(maximize_is_minimize_of_negated_dense(&case));
    }

    #[test]
    fn maximize_is_minimize_of_the_negated_gradient_sparse(case in lookup_case(true, false, true)) {
        with_test_backend!(maximize_is_minimize_of_negated_sparse(&case));
    }

    #[test]
    fn sparse_path_equals_dense_path_without_cancelling_rows(case in lookup_case(false, false, true)) {
        prop_assume!(no_cancelling_rows(&case));
        with_test_backend!(sparse_path_equals_dense_path(&case));
    }
}
