//! Compact moments on the 0.2 line (`SparseAdamConfig::moment_dtype`): moments stored in
//! `bf16` or `f16`, updated in the parameter's precision; records keep the type; a record
//! continues under another type only through `convert_moments`; bad combinations are
//! typed errors; and the PyTorch fixtures, replayed with compact moments, stay within a
//! stated multiple of their tolerance. On the backend `BURN_SPARSE_ADAM_BACKEND` selects: a
//! type the device cannot hold (wgpu has no `bf16`) must be refused with
//! `Error::MomentDtypeUnsupported`, and is checked so.

use burn::module::{Module, Param};
use burn::nn::{Linear, LinearConfig};
use burn::optim::GradientsParams;
use burn::tensor::{DType, Device, Int, Tensor};
use burn_sparse_adam::state::burn_dtype;
use burn_sparse_adam::{
    Error, MomentDtype, SparseAdamConfig, SparseAdamOptimizer, SparseEmbedding,
    SparseEmbeddingConfig, collect_grads,
};
use burn_sparse_adam_tests::{Fixture, Runner, device, fixture_dir, replay_as, set_params, values};

#[derive(Module, Debug)]
struct Model {
    table: SparseEmbedding,
    head: Linear,
}

impl Model {
    /// A model with fixed weights, so that the runs compared are reproducible.
    fn new(device: &Device) -> Self {
        let fixed = |n: usize, seed: f32| -> Vec<f32> {
            (0..n)
                .map(|i| ((i as f32 + seed) * 0.731).sin() * 0.5)
                .collect()
        };
        let model = Self {
            table: SparseEmbeddingConfig::new(40, 6).init(device),
            head: LinearConfig::new(6, 2).init(device),
        };
        set_params(model, vec![fixed(240, 0.0), fixed(12, 1.0), fixed(2, 2.0)])
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

    fn params(&self) -> Vec<f32> {
        values(self.table.weight.val())
            .into_iter()
            .chain(values(self.head.weight.val()))
            .collect()
    }
}

fn lookups(step: usize) -> Vec<i64> {
    vec![step as i64 % 7, 11, 23, (step * 5 % 40) as i64]
}

fn train(
    optim: &mut SparseAdamOptimizer,
    mut model: Model,
    steps: std::ops::Range<usize>,
) -> Model {
    let device = device();
    for s in steps {
        let grads = model.grads(&lookups(s), &device);
        model = optim.try_step(1e-2, model, grads).unwrap();
    }
    model
}

fn compact(moments: MomentDtype) -> SparseAdamOptimizer {
    SparseAdamConfig::new()
        .with_moment_dtype(Some(moments))
        .init_optimizer()
}

/// Both parameters' moments are stored in the asked type, on the row path (the table) and
/// the dense path (the head), and training follows the `f32`-moment run closely; `F32`
/// moments are PyTorch's numbers, the bits of the default config. Where the device cannot
/// hold the type, the first step is refused and changes nothing.
#[test]
fn compact_moments_are_stored_in_their_type_and_follow_the_f32_run() {
    let device = device();
    let model = Model::new(&device);
    let mut reference = SparseAdamConfig::new().init_optimizer();
    let expected = train(&mut reference, model.clone(), 0..6).params();

    let mut f32_moments = compact(MomentDtype::F32);
    let same = train(&mut f32_moments, model.clone(), 0..6).params();
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(
        bits(&same),
        bits(&expected),
        "F32 moments are the default's bits"
    );

    for moments in [MomentDtype::Bf16, MomentDtype::F16] {
        let mut optim = compact(moments);
        if !device.supports_dtype(burn_dtype(moments)) {
            let grads = model.grads(&lookups(0), &device);
            let rejected = optim.try_step(1e-2, model.clone(), grads).unwrap_err();
            assert!(
                matches!(rejected.error, Error::MomentDtypeUnsupported { moments: m, .. } if m == moments),
                "{:?}",
                rejected.error
            );
            assert_eq!(bits(&rejected.module.params()), bits(&model.params()));
            continue;
        }
        let trained = train(&mut optim, model.clone(), 0..6);
        for id in [trained.table.weight.id, trained.head.weight.id] {
            let state = optim.state::<2>(id).expect("a state");
            assert_eq!(state.step, 6);
            assert_eq!(state.moment_dtype(), burn_dtype(moments));
            assert_eq!(state.exp_avg_sq.dtype(), burn_dtype(moments));
        }
        let got = trained.params();
        let moved = got
            .iter()
            .zip(model.params())
            .filter(|(a, b)| a.to_bits() != b.to_bits())
            .count();
        assert!(moved > 0);
        // Six steps of at most lr = 0.01 each; the compact run's moments differ from the
        // f32 run's by their rounding, so each step's move by a small fraction of lr.
        let worst = got
            .iter()
            .zip(&expected)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        println!("{moments} moments: parameters within {worst:e} of the f32 run's");
        assert!(worst < 6e-4, "{moments}: {worst}");
    }
}

/// A record keeps compact moments compact and resumes bit for bit; under a config with
/// another moment type the step is refused (nothing changes) until the record's moments
/// are converted explicitly.
#[test]
fn a_record_keeps_its_moment_type_and_another_type_needs_a_conversion() {
    let device = device();
    let moments = [MomentDtype::F16, MomentDtype::Bf16]
        .into_iter()
        .find(|m| device.supports_dtype(burn_dtype(*m)));
    let Some(moments) = moments else {
        // No 16-bit type on this device: the refusal is checked above.
        return;
    };
    let mut optim = compact(moments);
    let model = train(&mut optim, Model::new(&device), 0..3);
    let record = optim.to_record().unwrap();

    let mut resumed = compact(moments).load_record(optim.to_record().unwrap());
    let table = model.table.weight.id;
    assert_eq!(
        resumed.state::<2>(table).unwrap().moment_dtype(),
        burn_dtype(moments)
    );
    let continued = train(&mut optim, model.clone(), 3..5).params();
    let again = train(&mut resumed, model.clone(), 3..5).params();
    assert_eq!(continued, again);

    let mut wider = SparseAdamConfig::new().init_optimizer().load_record(record);
    let grads = model.grads(&lookups(3), &device);
    let rejected = wider.try_step(1e-2, model.clone(), grads).unwrap_err();
    assert_eq!(
        rejected.error,
        Error::StateMomentDtype {
            expected: DType::F32,
            found: burn_dtype(moments),
        }
    );
    assert_eq!(rejected.module.params(), model.params());
    assert_eq!(wider.state::<2>(table).unwrap().step, 3);

    wider.convert_moments(MomentDtype::F32);
    let state = wider.state::<2>(table).unwrap();
    assert_eq!((state.step, state.moment_dtype()), (3, DType::F32));
    let stepped = train(&mut wider, model.clone(), 3..4);
    assert_eq!(wider.state::<2>(table).unwrap().step, 4);
    assert_ne!(stepped.params(), model.params());
}

/// Moments that do not widen exactly to their parameter's type are refused before anything
/// changes: f32 moments on a 16-bit table, and bf16 and f16 on each other's.
#[test]
fn moments_wider_than_the_parameter_are_an_error() {
    #[derive(Module, Debug)]
    struct Half {
        weight: Param<Tensor<2>>,
    }
    let device = device();
    // One step of a [3, 2] table of ones in `param`, with moments in `moments` and an
    // epsilon that f16 holds (so that the moments' type is what is refused).
    let refused = |param: DType, moments: MomentDtype| {
        let weight = Tensor::<2>::ones([3, 2], &device).cast(param);
        let model = Half {
            weight: Param::from_tensor(weight.clone()),
        };
        let mut grads = GradientsParams::new();
        grads.register(model.weight.id, weight.ones_like());
        let mut optim = SparseAdamConfig::new()
            .with_epsilon(1e-4)
            .with_moment_dtype(Some(moments))
            .init_optimizer();
        let rejected = optim.try_step(1e-2, model, grads).unwrap_err();
        assert_eq!(
            rejected.error,
            Error::MomentsWiderThanParam { moments, param }
        );
        assert_eq!(values(rejected.module.weight.val()), vec![1.0; 6]);
        assert!(optim.state::<2>(rejected.module.weight.id).is_none());
    };
    let narrow: Vec<DType> = [DType::F16, DType::BF16]
        .into_iter()
        .filter(|d| device.supports_dtype(*d))
        .collect();
    for &param in &narrow {
        refused(param, MomentDtype::F32);
    }
    if narrow.len() == 2 {
        refused(DType::BF16, MomentDtype::F16);
        refused(DType::F16, MomentDtype::Bf16);
    }
}

/// The repository's PyTorch fixtures, replayed with compact moments, against PyTorch's
/// `f32`-moment numbers: the score of a value is `|ours − torch| / (1e-5 + 1e-4·|torch|)`
/// (1 is the fixtures' tolerance), and each fixture's worst score is printed. What this
/// mode meets, measured here and stated in the README:
///
/// - `bf16`: at most 250× the tolerance, but 2,400× on `more_big_scale` (gradients of
///   magnitude ~10³): with `β₂ = 0.999` a step changes `v` by 0.1 %, less than half of
///   `bf16`'s 0.4 % spacing, so round-to-nearest leaves `v` where it is (stagnation), and
///   with `v` the first moment drifts too. Not an error; what 8 bits of significand give.
/// - `f16`: at most 40× the tolerance, but `more_big_scale` overflows: squared gradients
///   above 65,504 make `v` infinite and the rows' updates zero or NaN, as documented.
///
/// A fixed list, so that fixtures added to the directory later (the conformance runner
/// must take unseen ones) do not change what this measures.
#[test]
fn fixtures_with_compact_moments_stay_within_the_stated_tolerance() {
    const FIXTURES: [&str; 27] = [
        "cancelling_duplicates",
        "custom_hyper",
        "dense_cancelling",
        "dense_gradient",
        "duplicate_indices",
        "lazy_rows",
        "lr_schedule",
        "maximize",
        "more_big_scale",
        "more_dense_padding",
        "more_dense_three",
        "more_empty_dense",
        "more_empty_lookup",
        "more_no_lookup_step",
        "more_pad_lookup_empty",
        "more_three_tables",
        "padding_idx",
        "single_step",
        "two_tables",
        "weight_decay_cancelling_duplicates",
        "weight_decay_dense_cancelling",
        "weight_decay_lazy_rows",
        "weight_decay_lr_schedule",
        "weight_decay_maximize_custom",
        "weight_decay_padding_empty",
        "weight_decay_two_tables",
        "zipf_long",
    ];
    let device = device();
    for (moments, bound) in [(MomentDtype::Bf16, 250.0), (MomentDtype::F16, 40.0)] {
        if !device.supports_dtype(burn_dtype(moments)) {
            continue;
        }
        let mut worst = (0.0f64, String::new());
        for name in FIXTURES {
            let fixture = Fixture::load(&fixture_dir().join(format!("{name}.json"))).unwrap();
            let report = replay_as(&fixture, Runner::SparseAdamOptimizer, &device, |c| {
                c.with_moment_dtype(Some(moments))
            })
            .unwrap();
            assert!(report.mismatches.is_empty(), "{name}: {report}");
            let score = report.worst.as_ref().expect("values compared").score;
            println!("{moments} moments, {name}: {report}");
            match (moments, name) {
                (MomentDtype::Bf16, "more_big_scale") => {
                    assert!(score > bound && score <= 3_000.0, "{name}: {report}")
                }
                (MomentDtype::F16, "more_big_scale") => {
                    assert!(score.is_infinite(), "{name}: {report}")
                }
                _ if score > worst.0 => worst = (score, format!("{name}: {report}")),
                _ => {}
            }
        }
        println!("{moments} moments, worst elsewhere: {}", worst.1);
        assert!(
            worst.0 > 1.0,
            "{moments}: compact moments change the numbers"
        );
        assert!(
            worst.0 <= bound,
            "{moments} beyond {bound}× the tolerance: {}",
            worst.1
        );
    }
}
