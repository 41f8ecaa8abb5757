//! Parameter groups: PyTorch's `add_param_group`, parameters with their own
//! hyperparameters.
//!
//! A [`ParamGroup`] names some parameters (by id, or every parameter of a sub-module) and
//! overrides any of the learning rate (as a scale of the step's or as a fixed value), the
//! betas, epsilon and maximize (weight decay, clipping and the non-finite policy are the
//! config's: a saved group keeps the layout older records have). Parameters in no group
//! use the config's. Groups can be added at any time, also during training (PyTorch's use:
//! unfreezing layers), and are saved in the optimizer's record.

use burn::module::{list_param_ids, Module, ParamId};
use burn::optim::LearningRate;
use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};

use crate::config::SparseAdamConfig;
use crate::error::{Error, Result};

/// How a group's learning rate follows the step's.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub enum GroupLr {
    /// The step's learning rate, as given to `Optimizer::step` (and so the scheduler's).
    #[default]
    Step,
    /// The step's learning rate times this factor: the group follows the scheduler.
    Scale(f64),
    /// This learning rate, whatever the step's.
    Fixed(f64),
}

impl GroupLr {
    /// The group's learning rate for a step at `step_lr`.
    pub fn resolve(self, step_lr: LearningRate) -> LearningRate {
        match self {
            GroupLr::Step => step_lr,
            GroupLr::Scale(scale) => step_lr * scale,
            GroupLr::Fixed(lr) => lr,
        }
    }
}

/// A set of parameters with their own hyperparameters.
///
/// # Example
///
/// ```
/// use burn::backend::{Autodiff, NdArray};
/// use burn::nn::{Linear, LinearConfig};
/// use burn_sparse_adam::{ParamGroup, SparseAdamConfig, SparseAdamOptimizer};
///
/// type B = Autodiff<NdArray>;
/// let device = Default::default();
/// let head: Linear<B> = LinearConfig::new(8, 2).init(&device);
/// let mut optim: SparseAdamOptimizer<Linear<B>, B> = SparseAdamConfig::new().init();
///
/// // The head learns ten times slower than the scheduler's rate, with its own beta_2.
/// let group = ParamGroup::new("head").with_module(&head).with_lr_scale(0.1).with_beta_2(0.99);
/// optim.add_param_group(group.clone()).unwrap();
///
/// // A parameter cannot be in two groups.
/// let err = optim.add_param_group(ParamGroup::new("again").with_module(&head)).unwrap_err();
/// assert!(err.to_string().contains("already in group \"head\""));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct ParamGroup {
    name: String,
    params: Vec<ParamId>,
    lr: GroupLr,
    beta_1: Option<f64>,
    beta_2: Option<f64>,
    epsilon: Option<f64>,
    maximize: Option<bool>,
}

impl ParamGroup {
    /// An empty group called `name`, which errors and hooks use to refer to it.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            params: Vec::new(),
            lr: GroupLr::Step,
            beta_1: None,
            beta_2: None,
            epsilon: None,
            maximize: None,
        }
    }

    /// Adds parameters by id.
    pub fn with_params(mut self, params: impl IntoIterator<Item = ParamId>) -> Self {
        for id in params {
            if !self.params.contains(&id) {
                self.params.push(id);
            }
        }
        self
    }

    /// Adds every parameter of `module` (a sub-module of the model: its ids are the
    /// model's, as long as the model's record is not reloaded afterwards, which replaces
    /// ids).
    pub fn with_module<B: Backend, M: Module<B>>(self, module: &M) -> Self {
        self.with_params(list_param_ids(module))
    }

    /// Scales the step's learning rate for this group.
    pub fn with_lr_scale(mut self, scale: f64) -> Self {
        self.lr = GroupLr::Scale(scale);
        self
    }

    /// Gives this group a fixed learning rate, whatever the step's.
    pub fn with_lr(mut self, lr: f64) -> Self {
        self.lr = GroupLr::Fixed(lr);
        self
    }

    /// Overrides `beta_1`.
    pub fn with_beta_1(mut self, beta_1: f64) -> Self {
        self.beta_1 = Some(beta_1);
        self
    }

    /// Overrides `beta_2`.
    pub fn with_beta_2(mut self, beta_2: f64) -> Self {
        self.beta_2 = Some(beta_2);
        self
    }

    /// Overrides `epsilon`.
    pub fn with_epsilon(mut self, epsilon: f64) -> Self {
        self.epsilon = Some(epsilon);
        self
    }

    /// Overrides `maximize`.
    pub fn with_maximize(mut self, maximize: bool) -> Self {
        self.maximize = Some(maximize);
        self
    }

    /// The group's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The group's parameters.
    pub fn params(&self) -> &[ParamId] {
        &self.params
    }

    /// How the group's learning rate follows the step's.
    pub fn lr(&self) -> GroupLr {
        self.lr
    }

    /// The group's `beta_1`, if it overrides the config's.
    pub fn beta_1(&self) -> Option<f64> {
        self.beta_1
    }

    /// The group's `beta_2`, if it overrides the config's.
    pub fn beta_2(&self) -> Option<f64> {
        self.beta_2
    }

    /// The group's `epsilon`, if it overrides the config's.
    pub fn epsilon(&self) -> Option<f64> {
        self.epsilon
    }

    /// The group's `maximize`, if it overrides the config's.
    pub fn maximize(&self) -> Option<bool> {
        self.maximize
    }

    /// The hyperparameters of this group: `base` with the group's overrides.
    pub fn config(&self, base: &SparseAdamConfig) -> SparseAdamConfig {
        SparseAdamConfig {
            beta_1: self.beta_1.unwrap_or(base.beta_1),
            beta_2: self.beta_2.unwrap_or(base.beta_2),
            epsilon: self.epsilon.unwrap_or(base.epsilon),
            maximize: self.maximize.unwrap_or(base.maximize),
            // Not overridable per group: a saved group (`ParamGroupItem`) keeps its layout, so
            // that records saved before weight decay and clipping existed still load.
            weight_decay: base.weight_decay,
            non_finite: base.non_finite,
            grad_clipping: base.grad_clipping.clone(),
        }
    }

    /// Checks the overrides as the config's own values are checked, and the learning rate.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidEpsilon`], [`Error::EpsilonUnderflows`], [`Error::InvalidBeta`],
    /// [`Error::InvalidLearningRate`] (a fixed rate or a scale that is not finite and `> 0`),
    /// [`Error::LearningRateOutOfRange`] (a fixed rate that is not a finite, non-zero
    /// `f32`), each naming the group.
    pub fn validate(&self, base: &SparseAdamConfig) -> Result<()> {
        let in_group = |err: Error| Error::InGroup {
            group: self.name.clone(),
            source: Box::new(err),
        };
        self.config(base).validate().map_err(in_group)?;
        match self.lr {
            GroupLr::Step => Ok(()),
            // A fixed rate is a rate: checked in the precision of the update.
            GroupLr::Fixed(value) => {
                sparse_adam_core::validate_lr(value).map_err(|err| in_group(err.into()))
            }
            // A scale is a factor of the step's rate: only the product is a rate, checked
            // at each step.
            GroupLr::Scale(value) if value.is_finite() && value > 0.0 => Ok(()),
            GroupLr::Scale(value) => Err(in_group(Error::InvalidLearningRate { value })),
        }
    }
}

/// The groups of an optimizer, with an index from parameter to group.
#[derive(Debug, Clone, Default)]
pub(crate) struct ParamGroups {
    groups: Vec<ParamGroup>,
    index: hashbrown::HashMap<ParamId, usize>,
}

impl ParamGroups {
    pub(crate) fn as_slice(&self) -> &[ParamGroup] {
        &self.groups
    }

    /// The group of `param`, if any.
    pub(crate) fn of(&self, param: ParamId) -> Option<&ParamGroup> {
        self.index.get(&param).map(|&i| &self.groups[i])
    }

    /// Adds a group after checking it, changing nothing on error.
    pub(crate) fn add(&mut self, group: ParamGroup, base: &SparseAdamConfig) -> Result<()> {
        group.validate(base)?;
        if let Some(existing) = self.groups.iter().find(|g| g.name == group.name) {
            return Err(Error::DuplicateGroupName {
                group: existing.name.clone(),
            });
        }
        if let Some((&param, &i)) = group
            .params
            .iter()
            .find_map(|p| self.index.get_key_value(p))
        {
            return Err(Error::ParamInTwoGroups {
                param,
                group: self.groups[i].name.clone(),
                other: group.name,
            });
        }
        let position = self.groups.len();
        self.index
            .extend(group.params.iter().map(|&p| (p, position)));
        self.groups.push(group);
        Ok(())
    }

    /// Groups from a record, checked as if added one by one.
    pub(crate) fn from_groups(groups: Vec<ParamGroup>, base: &SparseAdamConfig) -> Result<Self> {
        let mut all = Self::default();
        for group in groups {
            all.add(group, base)?;
        }
        Ok(all)
    }

    /// Whether `other` has the same groups over the same parameters, in the same order
    /// (hyperparameters aside); the first difference otherwise.
    pub(crate) fn same_structure(&self, other: &[ParamGroup]) -> core::result::Result<(), String> {
        let describe = |g: &ParamGroup| match g.params.len() {
            1 => format!("{:?} (1 parameter)", g.name),
            n => format!("{:?} ({n} parameters)", g.name),
        };
        for i in 0..self.groups.len().max(other.len()) {
            match (self.groups.get(i), other.get(i)) {
                (Some(a), Some(b)) if a.name == b.name && a.params == b.params => {}
                (Some(a), Some(b)) if a.name != b.name => {
                    return Err(format!(
                        "group {i} is {} here but {} in the record",
                        describe(a),
                        describe(b)
                    ))
                }
                (Some(a), Some(b)) => {
                    let detail = match (
                        a.params.iter().find(|p| !b.params.contains(p)),
                        b.params.iter().find(|p| !a.params.contains(p)),
                    ) {
                        (Some(p), _) => {
                            format!("parameter {p} is in it here but not in the record")
                        }
                        (None, Some(p)) => {
                            format!("parameter {p} is in it in the record but not here")
                        }
                        (None, None) => "its parameters are in another order".to_string(),
                    };
                    return Err(format!("group {i}, {:?}, differs: {detail}", a.name));
                }
                (Some(a), None) => {
                    return Err(format!("group {i}, {}, is not in the record", describe(a)))
                }
                (None, Some(b)) => {
                    return Err(format!(
                        "the record has an extra group {i}, {}",
                        describe(b)
                    ))
                }
                (None, None) => unreachable!("i < max(len, len)"),
            }
        }
        Ok(())
    }
}

/// A group as it is saved: parameter ids as Burn writes them in records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParamGroupItem {
    name: String,
    params: Vec<String>,
    lr: GroupLr,
    beta_1: Option<f64>,
    beta_2: Option<f64>,
    epsilon: Option<f64>,
    maximize: Option<bool>,
}

impl From<ParamGroup> for ParamGroupItem {
    fn from(group: ParamGroup) -> Self {
        Self {
            name: group.name,
            params: group.params.into_iter().map(ParamId::serialize).collect(),
            lr: group.lr,
            beta_1: group.beta_1,
            beta_2: group.beta_2,
            epsilon: group.epsilon,
            maximize: group.maximize,
        }
    }
}

impl From<ParamGroupItem> for ParamGroup {
    fn from(item: ParamGroupItem) -> Self {
        Self {
            name: item.name,
            params: item
                .params
                .iter()
                .map(|p| ParamId::deserialize(p))
                .collect(),
            lr: item.lr,
            beta_1: item.beta_1,
            beta_2: item.beta_2,
            epsilon: item.epsilon,
            maximize: item.maximize,
        }
    }
}
