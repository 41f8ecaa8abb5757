//! [`SparseAdamRecord`]: everything a [`SparseAdamOptimizer`](crate::SparseAdamOptimizer)
//! saves — one [`SparseAdamState`](crate::SparseAdamState) per parameter that has stepped,
//! and the parameter groups with their hyperparameters (PyTorch's `state_dict`).

use burn::module::ParamId;
use burn::optim::record::{AdaptorRecord, AdaptorRecordV1};
use burn::record::{PrecisionSettings, Record};
use burn::tensor::backend::AutodiffBackend;
use hashbrown::HashMap;
use serde::{Deserialize, Serialize};

use super::groups::{ParamGroup, ParamGroupItem};
use super::rule::SparseAdam;

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

/// Applies `f` to a saved state whatever its rank.
macro_rules! with_state {
    ($record:expr, |$s:ident| $body:expr) => {{
        let AdaptorRecord::V1(record) = $record;
        match record {
            AdaptorRecordV1::Rank0($s) => $body,
            AdaptorRecordV1::Rank1($s) => $body,
            AdaptorRecordV1::Rank2($s) => $body,
            AdaptorRecordV1::Rank3($s) => $body,
            AdaptorRecordV1::Rank4($s) => $body,
            AdaptorRecordV1::Rank5($s) => $body,
            AdaptorRecordV1::Rank6($s) => $body,
            AdaptorRecordV1::Rank7($s) => $body,
            AdaptorRecordV1::Rank8($s) => $body,
        }
    }};
}

pub(super) fn state_step<B: AutodiffBackend>(record: &AdaptorRecord<SparseAdam, B>) -> usize {
    with_state!(record, |s| s.step)
}

pub(super) fn state_shape<B: AutodiffBackend>(record: &AdaptorRecord<SparseAdam, B>) -> Vec<usize> {
    with_state!(record, |s| s.shape())
}

/// [`SparseAdamRecord`] as it is serialized.
///
/// Its first field names the format, so that reading a file of another optimizer's record
/// (Burn's `Adam` saves per-parameter moments too) fails with an error saying so, instead
/// of loading its values as if they were SparseAdam's; and a SparseAdam record read as
/// another optimizer's fails at its first field.
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct SparseAdamRecordItem<B: AutodiffBackend, S: PrecisionSettings> {
    format: RecordFormat,
    states: <ParamStates<B> as Record<B>>::Item<S>,
    groups: Vec<ParamGroupItem>,
}

impl<B: AutodiffBackend, S: PrecisionSettings> Clone for SparseAdamRecordItem<B, S> {
    fn clone(&self) -> Self {
        Self {
            format: RecordFormat,
            states: self.states.clone(),
            groups: self.groups.clone(),
        }
    }
}

/// The tag that opens a saved [`SparseAdamRecord`].
const FORMAT: &str = "burn-sparse-adam:SparseAdamRecord:v1";

/// The format tag of a saved record: serialized as [`FORMAT`], and read only from it.
#[derive(Clone, Copy, Debug)]
struct RecordFormat;

impl Serialize for RecordFormat {
    fn serialize<Se: serde::Serializer>(&self, serializer: Se) -> Result<Se::Ok, Se::Error> {
        serializer.serialize_str(FORMAT)
    }
}

impl<'de> Deserialize<'de> for RecordFormat {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Read as bytes: a foreign record's first field need not be valid text, and the
        // error should say what the file is not rather than how its bytes failed to decode.
        deserializer.deserialize_bytes(FormatVisitor)
    }
}

struct FormatVisitor;

impl FormatVisitor {
    fn check<E: serde::de::Error>(found: &[u8]) -> Result<RecordFormat, E> {
        if found == FORMAT.as_bytes() {
            return Ok(RecordFormat);
        }
        let shown: String = String::from_utf8_lossy(found).chars().take(48).collect();
        Err(E::custom(format!(
            "this is not a burn-sparse-adam SparseAdamRecord: it opens with {shown:?} where a SparseAdamRecord opens with its format tag {FORMAT:?} (a record of another optimizer, such as Burn's Adam, cannot be loaded into SparseAdam)"
        )))
    }
}

impl serde::de::Visitor<'_> for FormatVisitor {
    type Value = RecordFormat;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the format tag {FORMAT:?}")
    }

    fn visit_bytes<E: serde::de::Error>(self, found: &[u8]) -> Result<RecordFormat, E> {
        Self::check(found)
    }

    fn visit_str<E: serde::de::Error>(self, found: &str) -> Result<RecordFormat, E> {
        Self::check(found.as_bytes())
    }
}

impl<B: AutodiffBackend> Record<B> for SparseAdamRecord<B> {
    type Item<S: PrecisionSettings> = SparseAdamRecordItem<B, S>;

    fn into_item<S: PrecisionSettings>(self) -> Self::Item<S> {
        SparseAdamRecordItem {
            format: RecordFormat,
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
