//! [`SparseAdamRecord`]: everything a [`SparseAdamOptimizer`](crate::SparseAdamOptimizer)
//! saves — one [`SparseAdamState`](crate::SparseAdamState) per parameter that has stepped,
//! and the parameter groups with their hyperparameters (PyTorch's `state_dict`).

use burn::module::ParamId;
use burn::optim::record::AdaptorRecord;
use burn::record::{PrecisionSettings, Record};
use burn::tensor::backend::AutodiffBackend;
use hashbrown::HashMap;
use serde::{Deserialize, Serialize};

use crate::groups::{ParamGroup, ParamGroupItem};
use crate::sparse_adam::SparseAdam;

/// The per-parameter states, in the format of Burn's own `OptimizerAdaptor` records.
pub type ParamStates<B> = HashMap<ParamId, AdaptorRecord<SparseAdam, B>>;

/// The saved state of a [`SparseAdamOptimizer`](crate::SparseAdamOptimizer).
pub struct SparseAdamRecord<B: AutodiffBackend> {
    /// The state of each parameter that has taken a step, by id.
    pub states: ParamStates<B>,
    /// The parameter groups, in the order they were added.
    pub groups: Vec<ParamGroup>,
}

impl<B: AutodiffBackend> Clone for SparseAdamRecord<B> {
    fn clone(&self) -> Self {
        Self {
            states: self.states.clone(),
            groups: self.groups.clone(),
        }
    }
}

/// [`SparseAdamRecord`] as it is serialized.
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct SparseAdamRecordItem<B: AutodiffBackend, S: PrecisionSettings> {
    states: <ParamStates<B> as Record<B>>::Item<S>,
    groups: Vec<ParamGroupItem>,
}

impl<B: AutodiffBackend, S: PrecisionSettings> Clone for SparseAdamRecordItem<B, S> {
    fn clone(&self) -> Self {
        Self {
            states: self.states.clone(),
            groups: self.groups.clone(),
        }
    }
}

impl<B: AutodiffBackend> Record<B> for SparseAdamRecord<B> {
    type Item<S: PrecisionSettings> = SparseAdamRecordItem<B, S>;

    fn into_item<S: PrecisionSettings>(self) -> Self::Item<S> {
        SparseAdamRecordItem {
            states: self.states.into_item(),
            groups: self.groups.into_iter().map(Into::into).collect(),
        }
    }

    fn from_item<S: PrecisionSettings>(item: Self::Item<S>, device: &B::Device) -> Self {
        Self {
            states: Record::from_item(item.states, device),
            groups: item.groups.into_iter().map(Into::into).collect(),
        }
    }
}
