//! Parameter groups of [`SparseAdamOptimizer`](crate::SparseAdamOptimizer), reconciled with
//! Burn 0.22's own: a group is Burn's [`ParamGroup`] (ids, paths, predicates or regexes),
//! paired with its hyperparameters, as `ModuleOptimizer::with_group` pairs a group with an
//! optimizer; its learning rate comes from Burn's `ModuleLearningRate` (a
//! `ModuleLrScheduler`'s groups), as for `ModuleOptimizer`. When several groups match a
//! parameter the last one added wins; parameters no group matches use the config's
//! hyperparameters.

use burn::module::{ParamGroup, ParamId};

use crate::config::SparseAdamConfig;
use crate::error::{Error, Result};
use crate::optimizer::rule::SparseAdam;

/// The groups, in the order they were added.
#[derive(Clone, Default)]
pub(crate) struct Groups {
    list: Vec<(ParamGroup, SparseAdam)>,
}

impl Groups {
    /// Adds a group with the hyperparameters of `config`, after validating them.
    pub(crate) fn add(&mut self, group: ParamGroup, config: SparseAdamConfig) -> Result<()> {
        let index = self.list.len();
        let rule = config.try_build().map_err(|err| Error::InGroup {
            group: format!("#{index}"),
            source: Box::new(err),
        })?;
        self.list.push((group, rule));
        Ok(())
    }

    /// The index of the last group matching the parameter `id` at `path`, if any.
    pub(crate) fn of(&self, id: &ParamId, path: &str) -> Option<usize> {
        self.list
            .iter()
            .rposition(|(group, _)| group.matches(id, Some(path)))
    }

    /// The rule of group `index`, or `base`.
    pub(crate) fn rule<'a>(&'a self, index: Option<usize>, base: &'a SparseAdam) -> &'a SparseAdam {
        index.map_or(base, |i| &self.list[i].1)
    }

    /// The configs of the groups, in order.
    pub(crate) fn configs(&self) -> impl Iterator<Item = &SparseAdamConfig> {
        self.list.iter().map(|(_, rule)| rule.config())
    }
}
