//! Records of [`SparseAdamOptimizer`](crate::SparseAdamOptimizer): Burn 0.22's
//! `OptimizerRecord` (burnpack), entry for entry what Burn's `ModuleOptimizer` writes for the
//! [`SparseAdam`](crate::SparseAdam) rule.
//!
//! Per parameter, under its id: the scalar `"{id}.__rank"` (the parameter's rank, as
//! `ModuleOptimizer` persists it), the state's fields ([`SparseAdamState`]'s `RecordState`:
//! the scalar `"{id}.step"`, the tensors `"{id}.exp_avg"` and `"{id}.exp_avg_sq"`, each
//! tagged with the parameter's id). So a checkpoint of one optimizer loads into the other:
//! a manual loop on `SparseAdamOptimizer` can hand over to burn-train's `Learner`, and back.
//!
//! `OptimizerRecord`'s fields are crate-private in burn-optim 0.22, and its only public
//! constructors read burnpack; this module writes and reads that burnpack with `burn-pack`
//! (the crate burn-optim writes it with), which costs one copy of the states per save or
//! load.

use std::collections::{BTreeMap, HashMap};

use burn::module::ParamId;
use burn::optim::{DynState, OptimizerRecord, RecordState, StateSink, StateSource};
use burn::tensor::{Device, TensorData};
use burn_pack::Scalar;
use sparse_adam_core::MomentDtype;

use crate::error::{Error, Result};
use crate::state::SparseAdamState;

/// The scalar under which `ModuleOptimizer` persists a parameter's rank.
const RANK_KEY: &str = "__rank";

/// Calls `$body` with `const $d: usize` set to the rank `$rank` (0 to 8, as Burn's
/// `ModuleOptimizer` supports), or evaluates `$other` for another rank.
macro_rules! with_rank {
    ($rank:expr, $d:ident => $body:expr, $other:expr) => {
        match $rank {
            0 => {
                const $d: usize = 0;
                $body
            }
            1 => {
                const $d: usize = 1;
                $body
            }
            2 => {
                const $d: usize = 2;
                $body
            }
            3 => {
                const $d: usize = 3;
                $body
            }
            4 => {
                const $d: usize = 4;
                $body
            }
            5 => {
                const $d: usize = 5;
                $body
            }
            6 => {
                const $d: usize = 6;
                $body
            }
            7 => {
                const $d: usize = 7;
                $body
            }
            8 => {
                const $d: usize = 8;
                $body
            }
            _ => $other,
        }
    };
}

/// The states, as the burnpack bytes of an `OptimizerRecord`.
pub(crate) fn to_bytes(states: &HashMap<ParamId, DynState>) -> Result<burn::tensor::Bytes> {
    let mut tensors = Vec::new();
    let mut writer_scalars: BTreeMap<String, Scalar> = BTreeMap::new();
    let mut ids: Vec<&ParamId> = states.keys().collect();
    ids.sort_by_key(|id| id.val());
    for id in ids {
        let state = &states[id];
        let prefix = id.val().to_string();
        let mut sink = StateSink::default();
        with_rank!(state.rank(), D => {
            state.downcast_ref::<SparseAdamState<D>>().state_flatten(&prefix, &mut sink)
        }, unreachable!("states are created with ranks 0 to 8"));
        writer_scalars.insert(format!("{prefix}.{RANK_KEY}"), Scalar::from(state.rank()));
        for (name, value) in sink.scalars {
            writer_scalars.insert(name, value);
        }
        for (name, data) in sink.tensors {
            let (bytes, shape, dtype) = data.into_parts();
            tensors.push(burn_pack::Tensor::new(
                name,
                dtype,
                shape,
                Some(id.val()),
                bytes,
            ));
        }
    }
    let mut writer = burn_pack::Writer::new(tensors);
    for (key, value) in &writer_scalars {
        writer = writer.with_scalar(key, *value);
    }
    writer.into_bytes().map_err(|err| Error::Record {
        detail: err.to_string(),
    })
}

/// The record of `states`.
pub(crate) fn to_record(states: &HashMap<ParamId, DynState>) -> Result<OptimizerRecord> {
    OptimizerRecord::from_bytes(to_bytes(states)?).map_err(|err| Error::Record {
        detail: err.to_string(),
    })
}

/// The states of a record, with their tensors on `device`.
///
/// # Errors
///
/// [`Error::Record`] when the record cannot be read, a parameter's rank is missing or out of
/// range, or its state is incomplete or not a SparseAdam state (say, the record of another
/// optimizer). Unlike `ModuleOptimizer::load_record`, which re-initializes such parameters
/// silently, nothing is skipped.
pub(crate) fn from_record(
    record: OptimizerRecord,
    device: &Device,
) -> Result<HashMap<ParamId, DynState>> {
    let invalid = |detail: String| Error::Record { detail };
    let bytes = record
        .into_bytes()
        .map_err(|err| invalid(err.to_string()))?;
    let reader = burn_pack::Reader::from_bytes(bytes).map_err(|err| invalid(err.to_string()))?;
    let scalars = reader.scalars().clone();
    let mut ranks: BTreeMap<u64, usize> = BTreeMap::new();
    let suffix = format!(".{RANK_KEY}");
    for (name, value) in &scalars {
        if let Some(id) = name.strip_suffix(&suffix) {
            let id = id
                .parse::<u64>()
                .map_err(|_| invalid(format!("entry {name:?} does not name a parameter id")))?;
            let rank = usize::try_from(*value)
                .map_err(|_| invalid(format!("entry {name:?} is not a rank")))?;
            ranks.insert(id, rank);
        }
    }
    let mut source = StateSource::new(scalars);
    for tensor in reader
        .into_tensors()
        .map_err(|err| invalid(err.to_string()))?
    {
        let (name, dtype, shape, param_id, bytes) = tensor
            .into_parts()
            .map_err(|err| invalid(err.to_string()))?;
        let id = match param_id {
            Some(id) => id,
            None => return Err(invalid(format!("tensor {name:?} carries no parameter id"))),
        };
        ranks.entry(id).or_insert(shape.num_dims());
        source.insert_tensor(name, TensorData::from_bytes(bytes, shape, dtype));
    }
    let mut states = HashMap::new();
    for (id, rank) in ranks {
        let prefix = id.to_string();
        let state = with_rank!(rank, D => {
            SparseAdamState::<D>::state_unflatten(&prefix, &mut source, device)
                .map(|state| DynState::create(state, D))
        }, return Err(invalid(format!("parameter {id} has rank {rank}; ranks 0 to 8 are supported"))));
        let state = state.ok_or_else(|| {
            invalid(format!(
                "parameter {id} has no complete SparseAdam state (step, exp_avg, exp_avg_sq): is this the record of another optimizer?"
            ))
        })?;
        states.insert(ParamId::from(id), state);
    }
    Ok(states)
}

/// `state` with its moments converted to `dtype` (see
/// [`SparseAdamState::with_moment_dtype`]).
pub(crate) fn convert_moments(state: DynState, dtype: MomentDtype) -> DynState {
    let rank = state.rank();
    with_rank!(rank, D => {
        DynState::create(state.downcast::<SparseAdamState<D>>().with_moment_dtype(dtype), D)
    }, unreachable!("states have ranks 0 to 8, not {rank}"))
}
