//! `SparseAdam::step_lookups`: a step from uncoalesced lookups (indices with duplicates and
//! their gradients) equals `step_rows` of the coalesced row gradient, bit for bit, on the
//! selected backend. On wgpu that compares the device path (a bitonic sort of the lookups
//! and one fused sum-and-update kernel, nothing read back) with the row path (rows planned
//! on the host, the row-update kernel); on flex both plan on the host.

use burn::tensor::{Int, Tensor, TensorData};
use burn_sparse_adam::{RowGrad, SparseAdam, SparseAdamConfig, SparseAdamState};
use burn_sparse_adam_tests::{TestBackend, plain_device};

/// A small deterministic generator (64-bit LCG), so that every backend sees the same data.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn float(&mut self) -> f32 {
        (self.next() % 20001) as f32 / 10000.0 - 1.0
    }
}

fn bits(t: Tensor<2>) -> Vec<u32> {
    let values = t
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap();
    values.into_iter().map(f32::to_bits).collect()
}

fn tensor(values: Vec<f32>, shape: [usize; 2]) -> Tensor<2> {
    Tensor::from_data(TensorData::new(values, shape), &plain_device())
}

/// The lookups' row gradient planned on the host: sorted unique rows, and each row's
/// gradients summed in lookup order from zero.
fn coalesced(indices: &[i64], values: &[f32], d: usize) -> RowGrad {
    let mut rows: Vec<i64> = indices.to_vec();
    rows.sort_unstable();
    rows.dedup();
    let mut sums = vec![0.0f32; rows.len() * d];
    for (i, index) in indices.iter().enumerate() {
        let slot = rows.binary_search(index).unwrap();
        for j in 0..d {
            sums[slot * d + j] += values[i * d + j];
        }
    }
    let k = rows.len();
    RowGrad::new(rows, tensor(sums, [k, d]))
}

/// `steps` steps of a `[n, d]` table from `p` lookups each (row 0 looked up about a third
/// of the time, so one run is long), through `step_lookups` and through `step_rows`;
/// asserts that the parameter and both moments agree bit for bit after every step.
fn compare(rule: &SparseAdam, n: usize, d: usize, p: usize, steps: usize, seed: u64) {
    let mut rng = Lcg(seed);
    let init: Vec<f32> = (0..n * d).map(|_| rng.float()).collect();
    let (mut ours, mut reference) = (tensor(init.clone(), [n, d]), tensor(init, [n, d]));
    let (mut our_state, mut ref_state): (Option<SparseAdamState<2>>, Option<SparseAdamState<2>>) =
        (None, None);
    for step in 0..steps {
        let indices: Vec<i64> = (0..p)
            .map(|_| match rng.below(3) {
                0 => 0,
                _ => rng.below(n) as i64,
            })
            .collect();
        let values: Vec<f32> = (0..p * d).map(|_| rng.float()).collect();
        let index_tensor =
            Tensor::<1, Int>::from_data(TensorData::new(indices.clone(), [p]), &plain_device());
        let (param, state) = rule.step_lookups(
            1e-2,
            ours,
            index_tensor,
            tensor(values.clone(), [p, d]),
            our_state,
        );
        let grad = coalesced(&indices, &values, d);
        let (ref_param, ref_s) = rule.step_rows(1e-2, reference, &grad, ref_state);
        assert_eq!(state.step, ref_s.step);
        let what = format!("n = {n}, d = {d}, p = {p}, step {step}");
        assert_eq!(
            bits(param.clone()),
            bits(ref_param.clone()),
            "param, {what}"
        );
        assert_eq!(
            bits(state.exp_avg.clone()),
            bits(ref_s.exp_avg.clone()),
            "exp_avg, {what}"
        );
        assert_eq!(
            bits(state.exp_avg_sq.clone()),
            bits(ref_s.exp_avg_sq.clone()),
            "exp_avg_sq, {what}"
        );
        (ours, reference) = (param, ref_param);
        (our_state, ref_state) = (Some(state), Some(ref_s));
    }
}

#[test]
fn step_lookups_equals_step_rows_of_the_coalesced_gradient() {
    let plain = SparseAdamConfig::new().build();
    // 37 lookups: the sort pads them to 64 slots.
    compare(&plain, 10, 3, 37, 3, 1);
    let decay_maximize = SparseAdamConfig::new()
        .with_beta_1(0.8)
        .with_beta_2(0.95)
        .with_weight_decay(Some(0.1))
        .with_maximize(true)
        .build();
    compare(&decay_maximize, 10, 3, 37, 3, 2);
    // One lookup, and a power of two of them.
    compare(&plain, 5, 4, 1, 2, 3);
    compare(&plain, 5, 4, 64, 2, 4);
}

#[test]
fn step_lookups_of_many_lookups_with_a_long_run() {
    // 5000 lookups over 300 rows (13 sort rounds; row 0 takes about 1900 of them) and rows
    // of 8 lanes: many cubes in every kernel.
    compare(&SparseAdamConfig::new().build(), 300, 8, 5000, 2, 5);
}

#[test]
fn step_lookups_with_gradient_clipping_plans_on_the_host() {
    // Clipping needs the coalesced rows' norm: this takes the row path on every backend.
    let rule = SparseAdamConfig::new()
        .with_grad_clipping(Some(
            burn::optim::grad_clipping::GradientClippingConfig::Norm(0.5),
        ))
        .build();
    compare(&rule, 10, 3, 37, 2, 6);
}

#[test]
fn step_lookups_of_nothing_counts_the_step() {
    let rule = SparseAdamConfig::new().build();
    let table = tensor(vec![1.0, 2.0, 3.0, 4.0], [2, 2]);
    let indices =
        Tensor::<1, Int>::from_data(TensorData::new(Vec::<i64>::new(), [0]), &plain_device());
    let (param, state) =
        rule.step_lookups(0.1, table.clone(), indices, tensor(vec![], [0, 2]), None);
    assert_eq!(state.step, 1);
    assert_eq!(bits(param), bits(table));
    assert_eq!(bits(state.exp_avg), vec![0; 4]);
}

#[test]
fn step_lookups_rejects_values_of_another_shape() {
    let rule = SparseAdamConfig::new().build();
    let indices = Tensor::<1, Int>::from_data([0, 1, 1], &plain_device());
    let err = std::panic::catch_unwind(|| {
        rule.step_lookups(
            0.1,
            tensor(vec![0.0; 4], [2, 2]),
            indices,
            tensor(vec![0.0; 4], [2, 2]),
            None,
        )
    })
    .expect_err("values of 2 rows for 3 lookups");
    let message = err.downcast_ref::<String>().cloned().unwrap_or_default();
    assert_eq!(
        message,
        "a gradient has shape [2, 2], but its tensor has shape [3, 2]"
    );
}

/// An index outside the table: the device path on wgpu skips it (reading it back to check
/// it is what that path avoids), which also shows that the device path ran; on flex, where
/// the indices are read, the step panics with `IndexOutOfRange` before anything changes.
#[test]
fn step_lookups_of_an_index_outside_the_table() {
    let rule = SparseAdamConfig::new().build();
    let table = tensor(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [3, 2]);
    let grads = tensor(vec![0.5, -0.5, 1.0, 1.0, 0.25, 0.0], [3, 2]);
    let indices = Tensor::<1, Int>::from_data([2, 7, 2], &plain_device());
    match TestBackend::selected() {
        TestBackend::Wgpu => {
            let (param, state) =
                rule.step_lookups(0.1, table.clone(), indices, grads.clone(), None);
            let grad = coalesced(&[2, 2], &[0.5, -0.5, 0.25, 0.0], 2);
            let (expected, expected_state) = rule.step_rows(0.1, table, &grad, None);
            assert_eq!(bits(param), bits(expected));
            assert_eq!(bits(state.exp_avg), bits(expected_state.exp_avg));
        }
        TestBackend::Flex => {
            let err = std::panic::catch_unwind(|| {
                rule.step_lookups(0.1, table.clone(), indices, grads.clone(), None)
            })
            .expect_err("index 7 of a 3-row table");
            let message = err.downcast_ref::<String>().cloned().unwrap_or_default();
            assert_eq!(
                message,
                "index out of range in self: index 7 is not in 0..3 (the table has 3 rows)"
            );
        }
    }
}
