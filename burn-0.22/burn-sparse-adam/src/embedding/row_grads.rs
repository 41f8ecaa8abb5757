//! Row gradients: how a [`SparseEmbedding`](crate::SparseEmbedding)'s gradient travels from
//! the backward pass to the optimizer as rows, never as a table-sized tensor.
//!
//! Burn's `GradientsParams` can only hold one float tensor per parameter, and its plumbing
//! (`GradientsAccumulator`, the Learner's multi-device merge, `ModuleOptimizer`) moves and
//! adds those tensors. A gradient made of rows (sorted unique indices plus a `[k, d]` block)
//! fits none of it. So, as PyTorch keeps a sparse embedding's gradient in `weight.grad`
//! until the optimizer consumes it, each `SparseEmbedding` keeps its row gradients itself,
//! on a `RowGradTape` that its clones share:
//!
//! 1. a lookup under autodiff records the looked-up rows and its output, a copy of those
//!    rows that is a leaf of the autodiff graph of its own (the table itself is not part of
//!    that graph, so no table-sized gradient can arise);
//! 2. [`collect_grads`], the one line that replaces `GradientsParams::from_grads`, takes
//!    each output's gradient, sums it per distinct row onto the tape, and puts a small
//!    *marker* in the `GradientsParams` under the weight's id, so that Burn's plumbing
//!    carries "this table has a gradient" (accumulating markers, moving them between
//!    devices) like any other gradient;
//! 3. the optimizer (this crate's [`SparseAdamOptimizer`](crate::SparseAdamOptimizer), or
//!    Burn's `ModuleOptimizer` running the [`SparseAdam`](crate::SparseAdam) rule), finding
//!    a marker for a table, applies the row gradients of the backward passes that marker
//!    covers, summed, and clears the tape. Each collection writes a marker of ones and
//!    Burn's plumbing adds markers, so a marker's value counts its backward passes: several
//!    passes before one step add up (as in PyTorch), and the row gradients of a
//!    `GradientsParams` dropped without a step (say, the partial accumulation burn-train
//!    discards at the end of an epoch) are older than that count and are dropped, exactly
//!    as the dense gradients in it are.
//!
//! The tape of a table is reached while a visitor or mapper visits that table's weight:
//! `SparseEmbedding::visit`/`map` open a [`scope`] for the duration of that one call. No
//! registry outlives it. Burn 0.22's `ModuleOptimizer` steps through `module.map`, and calls
//! the per-tensor rule from inside the table's `map`: that is how the rule, which is given
//! only a tensor and its gradient, finds the rows.
//!
//! # What a pending lookup keeps (Burn 0.22)
//!
//! On Burn 0.21 a pending lookup kept only its output's autodiff identity (its node and a
//! weak count of its users), not its values. Burn 0.22's `AutodiffTensor` keeps its
//! `primitive`, `node` and `rc` fields crate-private and has no constructor from a node, so
//! neither the identity without the values nor the liveness of the output can be had
//! through its public API (`burn-autodiff-0.22.1/src/tensor.rs`). A pending lookup here
//! keeps its whole output (batch-sized: `[batch, seq, d]`), until a collection takes its
//! gradient, or until a second collection on its thread finds none for it (it took part in
//! no backward pass that was collected: an evaluation forward pass under autodiff, or
//! gradients built with `GradientsParams::from_grads`).

use std::cell::RefCell;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::ThreadId;

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Gradients, IndexingUpdateOp, Int, Shape, Tensor};

use crate::error::Error;
use crate::kernels;

/// The gradient of some rows of a `[n, d]` table: the sorted, unique indices of the touched
/// rows and the `[k, d]` block of their gradients, each row's lookups summed. The values
/// carry no autodiff.
///
/// A row whose summed gradient is exactly zero is still touched (PyTorch's sparse layout).
/// An empty row gradient (`k = 0`: a lookup of nothing, or only of `padding_idx`) is a
/// gradient all the same: the table takes a step that changes nothing but its step count.
///
/// A row gradient may also hold its lookups unplanned, on their device: each lookup's row and
/// its gradient, duplicates not yet summed (a table with `check_indices` off on wgpu, or
/// [`SparseAdam::step_lookups`](crate::SparseAdam::step_lookups)). The optimizer's row path
/// plans and applies those on the device where it can (wgpu: nothing read back); the first
/// call of [`RowGrad::rows`] or [`RowGrad::values`] also plans them on the host (the
/// indices read back, each row's gradients summed as the device sums them: each lookup's
/// in order, then a pass's lookups, then the passes), once.
#[derive(Clone, Debug)]
pub struct RowGrad {
    /// The rows and their summed values, once planned.
    planned: OnceLock<Planned>,
    /// The lookups, when the row gradient was made from them.
    lookups: Option<Lookups>,
}

/// Sorted unique rows and their `[k, d]` summed values (`None` when `k = 0`).
#[derive(Clone, Debug)]
struct Planned {
    rows: Vec<i64>,
    values: Option<Tensor<2>>,
}

/// Lookups of a table, unplanned, on their device ([`kernels::Lookups`]).
#[derive(Clone, Debug)]
pub(crate) struct Lookups {
    pub(crate) batch: kernels::Lookups,
    /// The table's rows `n`.
    table_rows: usize,
    /// How many backward passes the lookups come from (their `pass` ids are `0..passes`).
    passes: usize,
    /// What an index outside `0..n` does when the lookups are planned on the host: a panic
    /// with [`Error::IndexOutOfRange`]'s message (`true`), or nothing (`false`: it is
    /// skipped, as the device path skips it).
    pub(crate) check: bool,
}

impl RowGrad {
    /// A row gradient from sorted, unique `rows` and their `[rows.len(), d]` `values`.
    ///
    /// # Panics
    ///
    /// When `rows` is not strictly increasing or `values` has another number of rows: both
    /// are internal invariants of this crate.
    pub fn new(rows: Vec<i64>, values: Tensor<2>) -> Self {
        assert!(
            rows.windows(2).all(|w| w[0] < w[1]),
            "row indices must be sorted and unique"
        );
        assert_eq!(values.dims()[0], rows.len(), "one value row per index");
        if rows.is_empty() {
            return Self::empty();
        }
        Self::planned(Planned {
            rows,
            values: Some(values),
        })
    }

    /// The empty row gradient: no touched row.
    pub fn empty() -> Self {
        Self::planned(Planned {
            rows: Vec::new(),
            values: None,
        })
    }

    fn planned(planned: Planned) -> Self {
        Self {
            planned: OnceLock::from(planned),
            lookups: None,
        }
    }

    /// The row gradient of one backward pass's lookups of a table of `table_rows` rows,
    /// unplanned: each lookup's indices (`[p_i]`, duplicates allowed) and its gradients
    /// (`[p_i, d]`), in the order looked up; `check`: whether an index outside the table
    /// panics when they are planned on the host (else it is skipped).
    pub(crate) fn from_lookups(
        lookups: Vec<(Tensor<1, Int>, Tensor<2>)>,
        table_rows: usize,
        check: bool,
    ) -> Self {
        let lookups: Vec<_> = lookups
            .into_iter()
            .filter(|(indices, _)| indices.dims()[0] > 0)
            .collect();
        let Some(device) = lookups.first().map(|(indices, _)| indices.device()) else {
            return Self::empty();
        };
        let ids = |id: usize, len: usize| Tensor::<1, Int>::full([len], id as i64, &device);
        let lookup = lookups
            .iter()
            .enumerate()
            .map(|(i, (indices, _))| ids(i, indices.dims()[0]))
            .collect();
        let p = lookups.iter().map(|(indices, _)| indices.dims()[0]).sum();
        let (indices, values): (Vec<_>, Vec<_>) = lookups.into_iter().unzip();
        Self {
            planned: OnceLock::new(),
            lookups: Some(Lookups {
                batch: kernels::Lookups {
                    indices: Tensor::cat(indices, 0),
                    lookup: Tensor::cat(lookup, 0),
                    pass: ids(0, p),
                    values: Tensor::cat(values, 0),
                },
                table_rows,
                passes: 1,
                check,
            }),
        }
    }

    /// The lookups, when this row gradient was made from them (planned on the host since,
    /// or not: the device path may run them either way).
    pub(crate) fn lookups(&self) -> Option<&Lookups> {
        self.lookups.as_ref()
    }

    /// The number of touched rows, when it is known without planning lookups.
    pub(crate) fn known_len(&self) -> Option<usize> {
        self.planned.get().map(|planned| planned.rows.len())
    }

    fn into_planned(self) -> Planned {
        self.plan();
        self.planned.into_inner().expect("planned just now")
    }

    fn plan(&self) -> &Planned {
        self.planned.get_or_init(|| {
            let lookups = self
                .lookups
                .as_ref()
                .expect("a row gradient is planned or holds lookups");
            lookups.plan_on_host()
        })
    }

    /// The touched rows, sorted and unique (planning the lookups on the host first, if it
    /// holds any).
    ///
    /// # Panics
    ///
    /// Lookups from [`SparseAdam::step_lookups`](crate::SparseAdam::step_lookups) with an
    /// index outside the table, with [`Error::IndexOutOfRange`]'s message.
    pub fn rows(&self) -> &[i64] {
        &self.plan().rows
    }

    /// The `[k, d]` gradients of the touched rows; `None` when no row is touched. Plans
    /// lookups on the host first, as [`RowGrad::rows`].
    pub fn values(&self) -> Option<&Tensor<2>> {
        self.plan().values.as_ref()
    }

    /// Whether no row is touched.
    pub fn is_empty(&self) -> bool {
        self.rows().is_empty()
    }

    /// The values' width `d`, if any row is touched.
    pub fn width(&self) -> Option<usize> {
        self.values().map(|v| v.dims()[1])
    }

    /// Moves the values to `device`.
    pub fn to_device(self, device: &Device) -> Self {
        let planned = self.planned.into_inner().map(|planned| Planned {
            rows: planned.rows,
            values: planned.values.map(|v| v.to_device(device)),
        });
        let lookups = self.lookups.map(|lookups| Lookups {
            batch: kernels::Lookups {
                indices: lookups.batch.indices.to_device(device),
                lookup: lookups.batch.lookup.to_device(device),
                pass: lookups.batch.pass.to_device(device),
                values: lookups.batch.values.to_device(device),
            },
            ..lookups
        });
        Self {
            planned: planned.map_or_else(OnceLock::new, OnceLock::from),
            lookups,
        }
    }

    /// The sum of several row gradients, on `device` (without autodiff): the union of their rows, with the
    /// values of rows they share added (PyTorch's `coalesce`). Unplanned lookups of one
    /// table stay unplanned: their indices and values are concatenated, in the order given.
    pub fn sum(mut grads: Vec<RowGrad>, device: &Device) -> RowGrad {
        // Row gradients carry no autodiff: tensors made on an autodiff device would.
        let device = &device.clone().inner();
        // Parts known to touch nothing add nothing.
        grads.retain(|g| g.known_len() != Some(0));
        if grads.len() == 1 {
            return grads.pop().expect("one row gradient").to_device(device);
        }
        if grads.len() > 1 && grads.iter().all(|g| g.lookups().is_some()) {
            let lookups: Vec<Lookups> = grads.into_iter().filter_map(|g| g.lookups).collect();
            let (table_rows, check) = (lookups[0].table_rows, lookups[0].check);
            if lookups
                .iter()
                .all(|l| l.table_rows == table_rows && l.check == check)
            {
                return RowGrad::concat_passes(lookups, table_rows, check, device);
            }
            let planned = lookups
                .into_iter()
                .map(|l| RowGrad::planned(l.plan_on_host()))
                .collect();
            return RowGrad::sum(planned, device);
        }
        let mut parts: Vec<(Vec<i64>, Tensor<2>)> = grads
            .into_iter()
            .map(RowGrad::into_planned)
            .filter_map(|planned| planned.values.map(|v| (planned.rows, v)))
            .collect();
        match parts.len() {
            0 => RowGrad::empty(),
            1 => {
                let (rows, values) = parts.pop().expect("one part");
                RowGrad::new(rows, values.to_device(device))
            }
            _ => {
                let (rows, values) = kernels::coalesce(parts, device);
                RowGrad::new(rows, values)
            }
        }
    }

    /// Unplanned lookups of several backward passes as one, on `device`: their positions
    /// concatenated in the order given, each part's passes numbered after the previous
    /// part's.
    fn concat_passes(
        parts: Vec<Lookups>,
        table_rows: usize,
        check: bool,
        device: &Device,
    ) -> RowGrad {
        let mut offset = 0;
        let mut columns: [Vec<Tensor<1, Int>>; 3] = Default::default();
        let mut values = Vec::new();
        for part in parts {
            let batch = part.batch;
            columns[0].push(batch.indices.to_device(device));
            columns[1].push(batch.lookup.to_device(device));
            columns[2].push(batch.pass.to_device(device).add_scalar(offset as i64));
            values.push(batch.values.to_device(device));
            offset += part.passes;
        }
        let [indices, lookup, pass] = columns.map(|c| Tensor::cat(c, 0));
        RowGrad {
            planned: OnceLock::new(),
            lookups: Some(Lookups {
                batch: kernels::Lookups {
                    indices,
                    lookup,
                    pass,
                    values: Tensor::cat(values, 0),
                },
                table_rows,
                passes: offset,
                check,
            }),
        }
    }

    /// Adds the rows into a dense gradient of the whole table, seen as `[n, d]`.
    pub(crate) fn add_into<const D: usize>(self, dense: Tensor<D>) -> Tensor<D> {
        let Some(values) = self.values().cloned() else {
            return dense;
        };
        let shape = dense.shape();
        let device = dense.device();
        let summed = kernels::to_rank::<D, 2>(dense, kernels::as_rows(&shape)).select_assign(
            0,
            kernels::index_tensor(self.rows(), &device),
            values,
            IndexingUpdateOp::Add,
        );
        kernels::to_rank(summed, shape)
    }
}

impl Lookups {
    /// The gradients' width `d`.
    pub(crate) fn width(&self) -> usize {
        self.batch.values.dims()[1]
    }

    /// The lookups planned on the host, as the host path plans a pass's lookups and sums
    /// passes: the indices read back (and their lookup and pass ids), each lookup's rows
    /// sorted and made unique and its gradients summed per row in order
    /// ([`kernels::sum_lookups`] per pass), then the passes coalesced in order.
    fn plan_on_host(&self) -> Planned {
        let read = |t: &Tensor<1, Int>| -> Vec<i64> {
            t.clone()
                .into_data()
                .convert::<i64>()
                .try_into_vec::<i64>()
                .expect("an Int tensor converts to i64")
        };
        let batch = &self.batch;
        let (host, lookup, pass) = (read(&batch.indices), read(&batch.lookup), read(&batch.pass));
        let n = self.table_rows;
        if self.check
            && let Err(err) = sparse_adam_core::check_indices(&host, n)
        {
            panic!("{}", Error::from(err));
        }
        let device = batch.values.device();
        let inside = |index: i64| usize::try_from(index).is_ok_and(|row| row < n);
        let mut passes: Vec<(Vec<i64>, Tensor<2>)> = Vec::new();
        let mut lookups: Vec<kernels::LookupGrad> = Vec::new();
        let mut start = 0;
        while start < host.len() {
            let end = (start..host.len())
                .find(|&i| lookup[i] != lookup[start] || pass[i] != pass[start])
                .unwrap_or(host.len());
            let segment = &host[start..end];
            let mut rows: Vec<i64> = segment.iter().copied().filter(|&i| inside(i)).collect();
            rows.sort_unstable();
            rows.dedup();
            let slots: Vec<i64> = segment
                .iter()
                .map(|&index| match inside(index) {
                    true => rows.binary_search(&index).expect("a kept row") as i64,
                    false => -1,
                })
                .collect();
            let values = batch.values.clone().slice(start..end).unsqueeze::<3>();
            lookups.push((rows, slots, values));
            let pass_ends = end == host.len() || pass[end] != pass[start];
            if pass_ends
                && let Some(summed) = kernels::sum_lookups(std::mem::take(&mut lookups), &device)
            {
                passes.push(summed);
            }
            start = end;
        }
        let summed = match passes.len() {
            0 => None,
            1 => passes.pop(),
            _ => Some(kernels::coalesce(passes, &device)),
        };
        match summed {
            Some((rows, values)) => Planned {
                rows,
                values: Some(values),
            },
            None => Planned {
                rows: Vec::new(),
                values: None,
            },
        }
    }
}

/// How many collections on its thread a pending lookup may miss (find no gradient for it)
/// before it is dropped. One: a lookup made for the next backward pass survives the
/// collection of the current one.
const KEPT_MISSES: u32 = 1;

/// A lookup recorded under autodiff whose gradient has not been collected yet.
struct PendingLookup {
    /// The thread that looked up.
    thread: ThreadId,
    /// Its rows, planned on the host or left on the device.
    plan: LookupRows,
    /// The lookup's output, a leaf of autodiff's graph: its gradient, summed per row, is the
    /// row gradient (see the [module docs](self) for why the whole output is kept).
    output: Tensor<3>,
    /// Collections on its thread that found no gradient for it.
    misses: u32,
}

/// The rows of a recorded lookup.
// The variants' sizes differ by a tensor handle; a pending lookup holds its whole output
// tensor besides, so boxing would save nothing that matters.
#[allow(clippy::large_enum_variant)]
pub(crate) enum LookupRows {
    /// Planned on the host: the touched rows, sorted and unique, and for each looked-up
    /// position its row's place among them (`-1` for `padding_idx`).
    Host { rows: Vec<i64>, slots: Vec<i64> },
    /// Left on the device, unchecked (a table with `check_indices` off): each position's
    /// index (`[batch·seq]`, `padding_idx` replaced by `-1`, which takes no gradient) and the
    /// table's rows.
    Device {
        indices: Tensor<1, Int>,
        table_rows: usize,
    },
}

#[derive(Default)]
struct TapeState {
    pending: Vec<PendingLookup>,
    /// Row gradients collected from backward passes, waiting for the optimizer.
    collected: Vec<RowGrad>,
    /// The thread of the data-parallel peer that exchanges this table's rows, once one has
    /// (`distributed::all_reduce_grads`).
    peer: Option<ThreadId>,
}

/// The row gradients of one table, shared by the table's clones (see the [module
/// docs](self)).
#[derive(Clone, Default)]
pub(crate) struct RowGradTape {
    state: Arc<Mutex<TapeState>>,
}

impl fmt::Debug for RowGradTape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        f.debug_struct("RowGradTape")
            .field("pending", &state.pending.len())
            .field("collected", &state.collected.len())
            .finish()
    }
}

impl RowGradTape {
    fn lock(&self) -> MutexGuard<'_, TapeState> {
        // A panic while the lock was held cannot leave the lists half-written (each change is
        // a single push, retain or take), so a poisoned lock is still consistent.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records a lookup of `plan`'s rows whose output is `output`, an autodiff leaf.
    pub(crate) fn record(&self, plan: LookupRows, output: Tensor<3>) {
        self.lock().pending.push(PendingLookup {
            thread: std::thread::current().id(),
            plan,
            output,
            misses: 0,
        });
    }

    /// Whether lookups were recorded and not collected.
    pub(crate) fn has_pending(&self) -> bool {
        !self.lock().pending.is_empty()
    }

    /// How many lookups wait for `collect_grads`, and how many collected row gradients wait
    /// for the optimizer.
    pub(crate) fn counts(&self) -> (usize, usize) {
        let state = self.lock();
        (state.pending.len(), state.collected.len())
    }

    /// The collected row gradients, without taking them.
    pub(crate) fn peek_collected(&self) -> Vec<RowGrad> {
        self.lock().collected.clone()
    }

    /// The collected row gradients that `markers` announce: the newest ones, as many as the
    /// markers count backward passes (older ones belong to gradients dropped without a
    /// step). Takes nothing.
    pub(crate) fn announced<const D: usize>(&self, markers: &[Tensor<D>]) -> Vec<RowGrad> {
        let mut collected = self.peek_collected();
        if collected.len() > 1 {
            let passes: usize = markers.iter().map(marker_passes).sum();
            collected.drain(..collected.len().saturating_sub(passes));
        }
        collected
    }

    /// Makes this thread the table's data-parallel peer; `false` when another thread
    /// already is (the table is shared by two peers).
    pub(crate) fn join_as_peer(&self) -> bool {
        let thread = std::thread::current().id();
        *self.lock().peer.get_or_insert(thread) == thread
    }

    /// Replaces the collected row gradients by `rows` (the peers' reduced row gradient) and
    /// returns the marker announcing them, for a weight of shape `weight` on `device` (the
    /// inner device, where gradients live).
    pub(crate) fn install<const D: usize>(
        &self,
        rows: RowGrad,
        weight: &Shape,
        device: &Device,
    ) -> Tensor<D> {
        self.lock().collected = vec![rows];
        Tensor::ones(marker_shape(weight), device)
    }

    /// Takes every collected row gradient.
    pub(crate) fn take_collected(&self) -> Vec<RowGrad> {
        std::mem::take(&mut self.lock().collected)
    }

    /// Drops every row gradient, pending or collected.
    pub(crate) fn clear(&self) {
        let mut state = self.lock();
        state.pending.clear();
        state.collected.clear();
    }

    /// Takes the gradients of pending lookups out of `grads` and sums them.
    ///
    /// Any thread's lookups count: node ids are unique, so only the backward pass that used
    /// a lookup holds its gradient, whichever thread looked up. Returns `None` when none of
    /// them took part in this backward pass. This thread's lookups that are not in `grads`
    /// count a miss, and are dropped past [`KEPT_MISSES`].
    fn take_from(&self, grads: &mut Gradients) -> Option<RowGrad> {
        let thread = std::thread::current().id();
        let mut taken = Vec::new();
        {
            let mut state = self.lock();
            let mut kept = Vec::new();
            for mut lookup in std::mem::take(&mut state.pending) {
                match lookup.output.grad_remove(grads) {
                    Some(grad) => taken.push((lookup.plan, grad)),
                    None if lookup.thread == thread => {
                        lookup.misses += 1;
                        if lookup.misses <= KEPT_MISSES {
                            kept.push(lookup);
                        }
                    }
                    None => kept.push(lookup),
                }
            }
            state.pending = kept;
        }
        let device = taken.first()?.1.device();
        let mut on_host = Vec::new();
        let mut on_device = Vec::new();
        let mut table_rows = None;
        for (plan, grad) in taken {
            match plan {
                LookupRows::Host { rows, slots } => on_host.push((rows, slots, grad)),
                LookupRows::Device {
                    indices,
                    table_rows: n,
                } => {
                    // `flatten`, not `reshape([b·s, d])`: Burn reads a 0 in a reshape's shape
                    // as "keep this dimension".
                    on_device.push((indices, grad.flatten::<2>(0, 1)));
                    table_rows = Some(n);
                }
            }
        }
        let on_host = match kernels::sum_lookups(on_host, &device) {
            Some((rows, values)) => RowGrad::new(rows, values),
            None => RowGrad::empty(),
        };
        let Some(table_rows) = table_rows else {
            return Some(on_host);
        };
        // One table's lookups are all of one kind (its `check_indices` and device), so both
        // kinds meet here only if the table changed paths mid-pass (moved to another device,
        // or `use_fused_kernels` toggled): then the two kinds are summed as two passes, not in
        // the order looked up, which may change the last bit.
        let on_device = RowGrad::from_lookups(on_device, table_rows, false);
        Some(RowGrad::sum(vec![on_host, on_device], &device))
    }

    fn push_collected(&self, grad: RowGrad) {
        self.lock().collected.push(grad);
    }
}

/// The scope in which a table's tape is reachable: opened by `SparseEmbedding::visit` and
/// `map` around the visit of the table's weight, and by nothing else.
pub(crate) mod scope {
    use super::*;

    thread_local! {
        static OPEN: RefCell<Vec<(ParamId, RowGradTape)>> = const { RefCell::new(Vec::new()) };
    }

    /// Closes its scope when dropped, also when the visit panics.
    pub(crate) struct Guard(());

    impl Drop for Guard {
        fn drop(&mut self) {
            OPEN.with(|open| open.borrow_mut().pop());
        }
    }

    /// Opens the scope of the table whose weight is `param`.
    pub(crate) fn enter(param: ParamId, tape: &RowGradTape) -> Guard {
        OPEN.with(|open| open.borrow_mut().push((param, tape.clone())));
        Guard(())
    }

    /// The tape of the table whose weight is `param`, if that weight is being visited.
    pub(crate) fn tape(param: ParamId) -> Option<RowGradTape> {
        OPEN.with(|open| {
            let open = open.borrow();
            let (id, tape) = open.last()?;
            (*id == param).then(|| tape.clone())
        })
    }

    /// The tape of the table whose weight is being visited, if any: what a per-tensor rule,
    /// which is not told the parameter's id, can see.
    pub(crate) fn current() -> Option<RowGradTape> {
        OPEN.with(|open| open.borrow().last().map(|(_, tape)| tape.clone()))
    }
}

/// Builds the `GradientsParams` of a backward pass, row gradients included: the drop-in
/// replacement of `GradientsParams::from_grads(grads, &model)`.
///
/// Every parameter's gradient is taken as Burn does; for each
/// [`SparseEmbedding`](crate::SparseEmbedding) of `module`, the gradients of its pending
/// lookups found in `grads` are summed into one row gradient, kept by the table until the
/// optimizer's next step, and announced in the result by a marker under the weight's id.
/// The marker is a tensor of ones shaped like one row of the weight plus one entry
/// (`[1, d + 1]` for a `[n, d]` table: a shape no gradient of the table can have), so Burn's
/// `GradientsAccumulator` and multi-device merging carry it like any gradient, and its value
/// counts the backward passes it covers.
///
/// If the weight also received a dense gradient (say, a penalty on `weight.val()`), the rows
/// are added into it and the table takes the dense path for that step.
///
/// In a burn-train `TrainStep`, build the output with `TrainOutput { grads:
/// collect_grads(grads, self), item }` instead of `TrainOutput::new(self, grads, item)`,
/// which calls `GradientsParams::from_grads`.
///
/// # Panics
///
/// With the message of [`Error::TableUnderDistributedSync`] when a table with row gradients has its weight registered for Burn's distributed gradient
/// sync (burn-train's DDP strategy), which cannot carry rows (the `distributed` module says
/// what to use instead).
pub fn collect_grads<M: Module>(mut grads: Gradients, module: &M) -> GradientsParams {
    let mut collector = Collector {
        grads: &mut grads,
        params: GradientsParams::new(),
    };
    module.visit(&mut collector);
    collector.params
}

struct Collector<'a> {
    grads: &'a mut Gradients,
    params: GradientsParams,
}

impl ModuleVisitor for Collector<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let value = param.val();
        let dense = value.grad_remove(self.grads);
        let rows = scope::tape(param.id)
            .and_then(|tape| tape.take_from(self.grads).map(|rows| (tape, rows)));
        match (dense, rows) {
            (None, None) => {}
            (Some(dense), None) => self.params.register(param.id, dense),
            (Some(dense), Some((_, rows))) => self.params.register(param.id, rows.add_into(dense)),
            (None, Some((tape, rows))) => {
                if value.is_autodiff() && value.is_distributed() {
                    panic!("{}", Error::TableUnderDistributedSync { param: param.id });
                }
                tape.push_collected(rows);
                let device = value.device().inner();
                let marker = Tensor::<D>::ones(marker_shape(&value.shape()), &device);
                self.params.register(param.id, marker);
            }
        }
    }
}

/// The shape of the marker announcing row gradients for a parameter of shape `param`.
pub(crate) fn marker_shape(param: &Shape) -> Shape {
    let dims = param.as_slice();
    let mut marker = vec![1; dims.len()];
    if let (Some(last), Some(width)) = (marker.last_mut(), dims.last()) {
        *last = width + 1;
    }
    Shape::from(marker)
}

/// How many backward passes a marker covers: each `collect_grads` writes ones, and
/// accumulating or merging gradients adds them up (one value read back). A marker scaled
/// below one (by gradient clipping) still covers one pass.
fn marker_passes<const D: usize>(marker: &Tensor<D>) -> usize {
    let n = marker.shape().num_elements();
    let first = marker.clone().reshape([n]).slice(0..1).into_scalar::<f32>();
    if first.is_finite() && first > 0.0 {
        first.round().max(1.0) as usize
    } else {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    /// Two passes of two lookups each, with rows repeated within and across lookups and
    /// passes, an index past the table and a negative one: the unplanned lookups stay
    /// unplanned through `RowGrad::sum`, and planned on the host they sum each row as the
    /// host path does (each lookup's gradients in order, then a pass's lookups, then the
    /// passes), bit for bit. The data is chosen so that a flat sum differs.
    #[test]
    fn unplanned_lookups_of_two_passes_are_planned_as_the_host_path_nests_them() {
        let device = Device::flex();
        let (n, d) = (4usize, 3usize);
        let passes: [[Vec<i64>; 2]; 2] = [
            [vec![1, 2, 1], vec![1, 7, 1, 3]],
            [vec![1, 1, -1], vec![3, 1, 2, 1]],
        ];
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut value = || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 40) as f32 / (1u64 << 24) as f32 * 2.6 - 1.3
        };
        // The host path's order, and two others it must differ from on this data: every
        // position in one sum, and each pass's positions in one sum.
        let mut nested = vec![0.0f32; n * d];
        let mut flat = vec![0.0f32; n * d];
        let mut by_pass = vec![0.0f32; n * d];
        let add =
            |sum: &mut [f32], part: &[f32]| sum.iter_mut().zip(part).for_each(|(s, p)| *s += p);
        let mut grads = Vec::new();
        for pass in &passes {
            let mut in_pass = vec![0.0f32; n * d];
            let mut pass_flat = vec![0.0f32; n * d];
            let mut lookups = Vec::new();
            for indices in pass {
                let mut in_lookup = vec![0.0f32; n * d];
                let values: Vec<f32> = (0..indices.len() * d).map(|_| value()).collect();
                for (i, &index) in indices.iter().enumerate() {
                    if (0..n as i64).contains(&index) {
                        for j in 0..d {
                            let (lane, g) = (index as usize * d + j, values[i * d + j]);
                            in_lookup[lane] += g;
                            flat[lane] += g;
                            pass_flat[lane] += g;
                        }
                    }
                }
                add(&mut in_pass, &in_lookup);
                let p = indices.len();
                lookups.push((
                    Tensor::<1, Int>::from_data(TensorData::new(indices.clone(), [p]), &device),
                    Tensor::<2>::from_data(TensorData::new(values, [p, d]), &device),
                ));
            }
            add(&mut nested, &in_pass);
            add(&mut by_pass, &pass_flat);
            grads.push(RowGrad::from_lookups(lookups, n, false));
        }
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        for other in [&flat, &by_pass] {
            assert_ne!(
                bits(other),
                bits(&nested),
                "the data tells the orders apart"
            );
        }

        let summed = RowGrad::sum(grads, &device);
        assert!(summed.lookups().is_some(), "the sum stays unplanned");
        assert_eq!(summed.rows(), &[1, 2, 3]);
        let values = summed
            .values()
            .expect("rows are touched")
            .clone()
            .into_data()
            .try_into_vec::<f32>()
            .unwrap();
        assert_eq!(bits(&values), bits(&nested[d..]));
    }

    #[test]
    fn marker_shape_is_never_a_table_shape() {
        assert_eq!(marker_shape(&Shape::new([10, 4])), Shape::new([1, 5]));
        assert_eq!(marker_shape(&Shape::new([1, 1])), Shape::new([1, 2]));
    }
}
