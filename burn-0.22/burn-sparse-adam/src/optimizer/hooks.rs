//! Hooks of [`SparseAdamOptimizer`]: PyTorch's `register_step_pre_hook` /
//! `register_step_post_hook`, and its `state_dict` / `load_state_dict` pre- and post-hooks,
//! around `to_record` / `load_record` (Burn 0.22's burnpack `OptimizerRecord`).
//!
//! Every `register_*` returns a [`HookHandle`] whose [`remove`](HookHandle::remove) takes the
//! hook out again. Clones of an optimizer share their hooks. A hook may register or remove
//! hooks: each list is copied before its hooks run.

use std::sync::{Arc, Mutex, MutexGuard, Weak};

use burn::module::ParamId;
use burn::optim::OptimizerRecord;

use crate::kernels::Kernel;
use crate::optimizer::SparseAdamOptimizer;

/// How a parameter takes (or took) its step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepPath {
    /// Row gradients from a [`SparseEmbedding`](crate::SparseEmbedding): only the touched
    /// rows are read and written.
    Rows,
    /// A gradient shaped like the parameter: rows with a non-zero entry are touched.
    Dense,
    /// Skipped: its gradient held NaN or ±inf and the config's `non_finite` is `Skip`.
    SkippedNonFinite,
}

/// One parameter of a step, as hooks see it.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamStep {
    /// The parameter.
    pub param: ParamId,
    /// Its path in the model (`"table.weight"`), as Burn's `ParamGroup` matches it.
    pub module_path: String,
    /// The index of its group (in the order of
    /// [`SparseAdamOptimizer::with_group`]), if one matches it.
    pub group: Option<usize>,
    /// Its learning rate in this step (the step's, or its group's).
    pub lr: f64,
    /// Its step count when the hook runs: before the step for pre-hooks, after it for
    /// post-hooks.
    pub step: usize,
    /// How many rows the step touches (0 when it is skipped). Known for row gradients; for
    /// dense gradients it costs a one-value read-back per parameter, and for lookups left on
    /// the device (`SparseEmbeddingConfig::check_indices` off, on wgpu) reading their
    /// indices back, both only paid while a step hook is registered.
    pub touched_rows: usize,
    /// How it steps.
    pub path: StepPath,
    /// For post-hooks, the path its update took: for row gradients [`Kernel::Fused`] on
    /// burn-flex with feature `flex`, and on wgpu, with or without burn-fusion, with feature
    /// `wgpu`, and [`Kernel::FusedLookups`] for a table whose lookups stayed on the wgpu
    /// device (also when they touch no row: that is not known there without reading them
    /// back); for dense gradients [`Kernel::Fused`] on burn-flex (one pass over the four
    /// tables), [`Kernel::Composed`] elsewhere. `None` in pre-hooks and for row steps that
    /// touch no row.
    pub kernel: Option<Kernel>,
}

/// What step hooks receive.
#[derive(Debug, Clone, PartialEq)]
pub struct StepInfo {
    /// The step's base learning rate (the one of parameters no learning-rate group matches).
    pub lr: f64,
    /// Every parameter that has a gradient in this step, in the model's order.
    pub params: Vec<ParamStep>,
}

/// Takes a hook out of the optimizer it was registered with.
#[must_use = "dropping the handle keeps the hook; call remove() to take it out"]
#[derive(Debug)]
pub struct HookHandle {
    id: u64,
    registry: Weak<dyn RemoveHook>,
}

impl HookHandle {
    /// Removes the hook. Returns whether it was still registered.
    pub fn remove(self) -> bool {
        self.registry
            .upgrade()
            .is_some_and(|registry| registry.remove(self.id))
    }
}

trait RemoveHook: Send + Sync + core::fmt::Debug {
    fn remove(&self, id: u64) -> bool;
}

type StepHook = Arc<dyn Fn(&StepInfo) + Send + Sync>;
type OptimizerHook = Arc<dyn Fn(&SparseAdamOptimizer) + Send + Sync>;
type RecordHook = Arc<dyn Fn(OptimizerRecord) -> OptimizerRecord + Send + Sync>;

/// A list of hooks in calling order, each with its id.
struct List<H>(Vec<(u64, H)>);

impl<H: Clone> List<H> {
    fn insert(&mut self, id: u64, hook: H, prepend: bool) {
        if prepend {
            self.0.insert(0, (id, hook));
        } else {
            self.0.push((id, hook));
        }
    }

    fn remove(&mut self, id: u64) -> bool {
        let before = self.0.len();
        self.0.retain(|(i, _)| *i != id);
        self.0.len() != before
    }

    fn snapshot(&self) -> Vec<H> {
        self.0.iter().map(|(_, h)| h.clone()).collect()
    }
}

struct Lists {
    next_id: u64,
    step_pre: List<StepHook>,
    step_post: List<StepHook>,
    to_record_pre: List<OptimizerHook>,
    to_record_post: List<RecordHook>,
    load_record_pre: List<RecordHook>,
    load_record_post: List<OptimizerHook>,
}

struct Registry(Mutex<Lists>);

impl core::fmt::Debug for Registry {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("HookRegistry")
    }
}

impl RemoveHook for Registry {
    fn remove(&self, id: u64) -> bool {
        let mut lists = lock(&self.0);
        // Ids are unique across lists, so at most one of these removes anything.
        lists.step_pre.remove(id)
            | lists.step_post.remove(id)
            | lists.to_record_pre.remove(id)
            | lists.to_record_post.remove(id)
            | lists.load_record_pre.remove(id)
            | lists.load_record_post.remove(id)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Hooks run outside the lock, so a poisoned lock only means a panic while a list was
    // being copied or edited, which leaves it whole.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The hooks of an optimizer (shared by its clones).
pub(crate) struct Hooks {
    registry: Arc<Registry>,
}

impl Clone for Hooks {
    fn clone(&self) -> Self {
        Self {
            registry: self.registry.clone(),
        }
    }
}

impl Default for Hooks {
    fn default() -> Self {
        Self {
            registry: Arc::new(Registry(Mutex::new(Lists {
                next_id: 0,
                step_pre: List(Vec::new()),
                step_post: List(Vec::new()),
                to_record_pre: List(Vec::new()),
                to_record_post: List(Vec::new()),
                load_record_pre: List(Vec::new()),
                load_record_post: List(Vec::new()),
            }))),
        }
    }
}

/// Which list a hook goes to.
pub(crate) enum Hook {
    StepPre(StepHook),
    StepPost(StepHook),
    ToRecordPre(OptimizerHook),
    ToRecordPost(RecordHook),
    LoadRecordPre(RecordHook),
    LoadRecordPost(OptimizerHook),
}

impl Hooks {
    pub(crate) fn register(&self, hook: Hook, prepend: bool) -> HookHandle {
        let mut lists = lock(&self.registry.0);
        let id = lists.next_id;
        lists.next_id += 1;
        match hook {
            Hook::StepPre(h) => lists.step_pre.insert(id, h, prepend),
            Hook::StepPost(h) => lists.step_post.insert(id, h, prepend),
            Hook::ToRecordPre(h) => lists.to_record_pre.insert(id, h, prepend),
            Hook::ToRecordPost(h) => lists.to_record_post.insert(id, h, prepend),
            Hook::LoadRecordPre(h) => lists.load_record_pre.insert(id, h, prepend),
            Hook::LoadRecordPost(h) => lists.load_record_post.insert(id, h, prepend),
        }
        let registry: Arc<dyn RemoveHook> = self.registry.clone();
        HookHandle {
            id,
            registry: Arc::downgrade(&registry),
        }
    }

    /// Whether any step hook is registered (so that step information is worth gathering).
    pub(crate) fn has_step_hooks(&self) -> bool {
        let lists = lock(&self.registry.0);
        !lists.step_pre.0.is_empty() || !lists.step_post.0.is_empty()
    }

    pub(crate) fn step_pre(&self, info: &StepInfo) {
        let hooks = lock(&self.registry.0).step_pre.snapshot();
        hooks.iter().for_each(|h| h(info));
    }

    pub(crate) fn step_post(&self, info: &StepInfo) {
        let hooks = lock(&self.registry.0).step_post.snapshot();
        hooks.iter().for_each(|h| h(info));
    }

    pub(crate) fn to_record_pre(&self, optim: &SparseAdamOptimizer) {
        let hooks = lock(&self.registry.0).to_record_pre.snapshot();
        hooks.iter().for_each(|h| h(optim));
    }

    pub(crate) fn to_record_post(&self, record: OptimizerRecord) -> OptimizerRecord {
        let hooks = lock(&self.registry.0).to_record_post.snapshot();
        hooks.iter().fold(record, |record, h| h(record))
    }

    pub(crate) fn load_record_pre(&self, record: OptimizerRecord) -> OptimizerRecord {
        let hooks = lock(&self.registry.0).load_record_pre.snapshot();
        hooks.iter().fold(record, |record, h| h(record))
    }

    pub(crate) fn load_record_post(&self, optim: &SparseAdamOptimizer) {
        let hooks = lock(&self.registry.0).load_record_post.snapshot();
        hooks.iter().for_each(|h| h(optim));
    }
}
