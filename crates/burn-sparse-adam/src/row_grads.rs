//! Row gradients: how a [`SparseEmbedding`](crate::SparseEmbedding)'s gradient travels from
//! the backward pass to the optimizer as rows, never as a table-sized tensor.
//!
//! Burn's `GradientsParams` can only hold one float tensor per parameter, shaped like the
//! parameter, and its plumbing (`GradientsAccumulator`, the Learner's multi-device merge)
//! adds those tensors. A gradient made of rows (sorted unique indices plus a `[k, d]`
//! block) fits neither. So, as PyTorch keeps a sparse embedding's gradient in
//! `weight.grad` until the optimizer consumes it, each `SparseEmbedding` keeps its row
//! gradients itself, on a `RowGradTape` that its clones share:
//!
//! 1. a lookup under autodiff records the looked-up rows and its output, a copy of those
//!    rows that is a leaf of the autodiff graph of its own (the table itself is not part of
//!    that graph, so no table-sized gradient can arise);
//! 2. [`collect_grads`], the one line that replaces `GradientsParams::from_grads`, takes
//!    each output's gradient, sums it per distinct row onto the tape, and puts a
//!    small *marker* in the `GradientsParams` under the weight's id, so that Burn's plumbing
//!    carries "this table has a gradient" (accumulating markers, moving them between
//!    devices) like any other gradient;
//! 3. the optimizer, finding a marker for a table, applies the row gradients of the
//!    backward passes that marker covers, summed, and clears the tape. Each collection
//!    writes a marker of ones and Burn's plumbing adds markers, so a marker's value counts
//!    its backward passes: several passes before one step add up (as in PyTorch), and the
//!    row gradients of a `GradientsParams` that was dropped without a step (say, the partial
//!    accumulation burn-train discards at the end of an epoch) are older than that count and
//!    are dropped, exactly as the dense gradients in it are.
//!
//! The tape of a table is reached while a visitor or mapper visits that table's weight:
//! `SparseEmbedding::visit`/`map` open a `scope` for the duration of that one call. No
//! registry outlives it.

use std::any::Any;
use std::cell::RefCell;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::thread::ThreadId;

use burn::backend::autodiff::NodeId;
use burn::backend::Autodiff;
use burn::module::{AutodiffModule, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{IndexingUpdateOp, Int, Shape, Tensor, TensorData, TensorPrimitive};

use crate::fused;
use crate::optimizer::to_rank;

/// The gradient of some rows of a `[n, d]` table: the sorted, unique indices of the touched
/// rows and the `[k, d]` block of their gradients, each row's lookups summed.
///
/// A row whose summed gradient is exactly zero is still touched (PyTorch's sparse layout).
/// An empty row gradient (`k = 0`: a lookup of nothing, or only of `padding_idx`) is a
/// gradient all the same: the table takes a step that changes nothing but its step count.
#[derive(Clone, Debug)]
pub struct RowGrad<B: Backend> {
    rows: Vec<i64>,
    values: Option<Tensor<B, 2>>,
}

impl<B: Backend> RowGrad<B> {
    /// A row gradient from sorted, unique `rows` and their `[rows.len(), d]` `values`.
    ///
    /// # Panics
    ///
    /// When `rows` is not strictly increasing or `values` has another number of rows: both
    /// are internal invariants of this crate.
    pub fn new(rows: Vec<i64>, values: Tensor<B, 2>) -> Self {
        assert!(
            rows.windows(2).all(|w| w[0] < w[1]),
            "row indices must be sorted and unique"
        );
        assert_eq!(values.dims()[0], rows.len(), "one value row per index");
        if rows.is_empty() {
            return Self::empty();
        }
        Self {
            rows,
            values: Some(values),
        }
    }

    /// The empty row gradient: no touched row.
    pub fn empty() -> Self {
        Self {
            rows: Vec::new(),
            values: None,
        }
    }

    /// The touched rows, sorted and unique.
    pub fn rows(&self) -> &[i64] {
        &self.rows
    }

    /// The `[k, d]` gradients of the touched rows; `None` when no row is touched.
    pub fn values(&self) -> Option<&Tensor<B, 2>> {
        self.values.as_ref()
    }

    /// Whether no row is touched.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The touched rows as an index tensor on `device`.
    pub fn indices(&self, device: &B::Device) -> Tensor<B, 1, Int> {
        index_tensor(&self.rows, device)
    }

    /// The values' width `d`, if any row is touched.
    pub fn width(&self) -> Option<usize> {
        self.values.as_ref().map(|v| v.dims()[1])
    }

    /// Moves the values to `device`.
    pub fn to_device(self, device: &B::Device) -> Self {
        Self {
            rows: self.rows,
            values: self.values.map(|v| v.to_device(device)),
        }
    }

    /// Converts the values to another backend through `f` (e.g. autodiff → inner).
    pub(crate) fn map_values<B2: Backend>(
        self,
        f: impl FnOnce(Tensor<B, 2>) -> Tensor<B2, 2>,
    ) -> RowGrad<B2> {
        RowGrad {
            rows: self.rows,
            values: self.values.map(f),
        }
    }

    /// The sum of several row gradients, on `device`: the union of their rows, with the
    /// values of rows they share added (PyTorch's `coalesce`).
    pub fn sum(grads: Vec<RowGrad<B>>, device: &B::Device) -> RowGrad<B> {
        let mut grads: Vec<RowGrad<B>> = grads.into_iter().filter(|g| !g.is_empty()).collect();
        match grads.len() {
            0 => return RowGrad::empty(),
            1 => return grads.pop().expect("one element").to_device(device),
            _ => {}
        }
        let all_rows: Vec<i64> = grads.iter().flat_map(|g| g.rows.iter().copied()).collect();
        let (rows, inverse) = unique_sorted(&all_rows);
        let values: Vec<Tensor<B, 2>> = grads
            .into_iter()
            .filter_map(|g| g.values.map(|v| v.to_device(device)))
            .collect();
        let values = Tensor::cat(values, 0);
        let width = values.dims()[1];
        let summed = Tensor::zeros([rows.len(), width], device).select_assign(
            0,
            index_tensor(&inverse, device),
            values,
            IndexingUpdateOp::Add,
        );
        RowGrad::new(rows, summed)
    }

    /// Adds the rows into a dense gradient of the whole table, reshaped to `[n, d]`.
    pub(crate) fn add_into<const D: usize>(self, dense: Tensor<B, D>) -> Tensor<B, D> {
        let Some(values) = self.values else {
            return dense;
        };
        let shape = dense.shape();
        let [n, d] = [
            shape.as_slice()[0],
            shape.num_elements() / shape.as_slice()[0].max(1),
        ];
        let device = dense.device();
        let summed = to_rank::<B, D, 2>(dense, [n, d]).select_assign(
            0,
            index_tensor(&self.rows, &device),
            values,
            IndexingUpdateOp::Add,
        );
        to_rank(summed, shape)
    }
}

/// The `[k, d]` sum, per row, of a lookup's `[batch, seq, d]` gradient: position `i` adds to
/// row `slots[i]`, padding positions (`-1`) add nothing. Duplicates add up in lookup order.
fn sum_per_row<B: Backend>(grad: Tensor<B, 3>, slots: &[i64], k: usize) -> Tensor<B, 2> {
    let [batch, seq, d] = grad.dims();
    let device = grad.device();
    if d == 0 {
        return Tensor::zeros([k, 0], &device);
    }
    if let Some(summed) = fused::coalesce(&grad, slots, k) {
        return summed;
    }
    let grad = grad.reshape([batch * seq, d]);
    let (positions, rows): (Vec<i64>, Vec<i64>) = slots
        .iter()
        .enumerate()
        .filter(|&(_, &slot)| slot >= 0)
        .map(|(position, &slot)| (position as i64, slot))
        .unzip();
    let grad = if positions.len() < slots.len() {
        grad.select(0, index_tensor(&positions, &device))
    } else {
        grad
    };
    Tensor::zeros([k, d], &device).select_assign(
        0,
        index_tensor(&rows, &device),
        grad,
        IndexingUpdateOp::Add,
    )
}

/// An index tensor from host indices.
pub(crate) fn index_tensor<B: Backend>(indices: &[i64], device: &B::Device) -> Tensor<B, 1, Int> {
    Tensor::from_data(TensorData::new(indices.to_vec(), [indices.len()]), device)
}

/// Sorted unique values of `indices`, and for each index its position among them.
pub(crate) fn unique_sorted(indices: &[i64]) -> (Vec<i64>, Vec<i64>) {
    let mut unique = indices.to_vec();
    unique.sort_unstable();
    unique.dedup();
    let inverse = indices
        .iter()
        .map(|i| {
            unique
                .binary_search(i)
                .expect("every index is among the unique ones") as i64
        })
        .collect();
    (unique, inverse)
}

/// How many lookups whose output autodiff has released are kept on a tape, newest first.
///
/// Such a lookup can no longer take part in a backward pass. Its gradient may still wait in
/// the `Gradients` of a backward pass that already ran, for a `collect_grads` that has not
/// been called yet, so the newest few are kept; older ones are dropped. Each costs its
/// indices only (16 bytes per looked-up position), never its output's values.
const KEPT_RELEASED: usize = 64;

/// A lookup's output, as the tape keeps it: enough to find its gradient in a backward
/// pass's `Gradients`, without keeping its values alive.
struct Leaf<B: Backend> {
    /// The output, or, once [`hollow`] has seen it, a tensor with the output's autodiff
    /// identity and a single value.
    handle: Tensor<B, 3>,
    /// Alive while autodiff or the user can still use the output; `None` when this
    /// backend's liveness cannot be seen (then the lookup counts as released at the next
    /// collection on its thread, as lookups always did before).
    alive: Option<Weak<NodeId>>,
}

impl<B: Backend> Leaf<B> {
    fn is_released(&self) -> Option<bool> {
        self.alive.as_ref().map(|alive| alive.strong_count() == 0)
    }
}

/// Turns a lookup's output into a [`Leaf`] that keeps none of its values: the autodiff
/// identity (all that a gradient lookup needs) on a one-value tensor, and a weak handle on
/// the output's reference count.
///
/// Only Burn's own `Autodiff` backend exposes that identity; for any other autodiff backend
/// the leaf keeps the whole output.
fn hollow<B: AutodiffBackend>(output: Tensor<B, 3>) -> Leaf<B> {
    let device = output.clone().inner().device();
    let TensorPrimitive::Float(primitive) = output.into_primitive() else {
        unreachable!("a float tensor's primitive is a float primitive")
    };
    let boxed: Box<dyn Any> = Box::new(primitive);
    let (primitive, alive) = match float_primitive::<Autodiff<B::InnerBackend>>(boxed) {
        Ok(mut tracked) => {
            let alive = Arc::downgrade(&tracked.rc);
            // A count of our own, so that autodiff's memory management does not see this
            // handle as a user of the output.
            tracked.rc = Arc::new(*tracked.rc);
            let TensorPrimitive::Float(one) =
                Tensor::<B::InnerBackend, 3>::zeros([1, 1, 1], &device).into_primitive()
            else {
                unreachable!("a float tensor's primitive is a float primitive")
            };
            tracked.primitive = one;
            let boxed: Box<dyn Any> = Box::new(tracked);
            (boxed, Some(alive))
        }
        Err(boxed) => (boxed, None),
    };
    let primitive = primitive
        .downcast::<B::FloatTensorPrimitive>()
        .unwrap_or_else(|_| unreachable!("the primitive came from this backend"));
    Leaf {
        handle: Tensor::from_primitive(TensorPrimitive::Float(*primitive)),
        alive,
    }
}

/// The float primitive of backend `A` in `boxed`, if that is its type.
fn float_primitive<A: Backend>(
    boxed: Box<dyn Any>,
) -> Result<A::FloatTensorPrimitive, Box<dyn Any>> {
    boxed.downcast::<A::FloatTensorPrimitive>().map(|p| *p)
}

/// A lookup recorded under autodiff whose gradient has not been collected yet.
struct PendingLookup<B: Backend> {
    /// The thread that looked up.
    thread: ThreadId,
    /// The touched rows, sorted and unique.
    rows: Vec<i64>,
    /// For each looked-up position, its row's place in `rows`; `-1` for `padding_idx`.
    slots: Vec<i64>,
    /// The lookup's output, a leaf of autodiff's graph: its gradient, summed per row, is the
    /// row gradient. A lookup of nothing has one too (of no value), so that only an empty
    /// lookup that reached the loss counts as a gradient, as in PyTorch; `None` for an empty
    /// lookup on a backend that cannot differentiate empty tensors, which counts as an
    /// empty gradient at the next collection on its thread.
    leaf: Option<Leaf<B>>,
}

impl<B: Backend> PendingLookup<B> {
    fn is_released(&self) -> Option<bool> {
        self.leaf.as_ref().map_or(Some(false), Leaf::is_released)
    }
}

struct TapeState<B: Backend> {
    pending: Vec<PendingLookup<B>>,
    /// Row gradients collected from backward passes, waiting for the optimizer.
    collected: Vec<RowGrad<B>>,
    /// How to keep a lookup's output without its values, once an autodiff entry point
    /// (`collect_grads`, the optimizer, `valid`) has shown that `B` is an autodiff backend.
    hollow: Option<fn(Tensor<B, 3>) -> Leaf<B>>,
}

impl<B: Backend> TapeState<B> {
    /// Drops released lookups beyond the newest [`KEPT_RELEASED`].
    fn prune_released(&mut self) {
        let mut released = 0;
        let mut keep: Vec<bool> = self
            .pending
            .iter()
            .rev()
            .map(|lookup| {
                if lookup.is_released() != Some(true) {
                    return true;
                }
                released += 1;
                released <= KEPT_RELEASED
            })
            .collect();
        keep.reverse();
        let mut keep = keep.into_iter();
        self.pending.retain(|_| keep.next().unwrap_or(true));
    }
}

/// The row gradients of one table, shared by the table's clones (see the [module
/// docs](self)).
pub(crate) struct RowGradTape<B: Backend> {
    state: Arc<Mutex<TapeState<B>>>,
}

impl<B: Backend> Clone for RowGradTape<B> {
    fn clone(&self) -> Self {
        Self {
            state: self.state.clone(),
        }
    }
}

impl<B: Backend> Default for RowGradTape<B> {
    fn default() -> Self {
        Self {
            state: Arc::new(Mutex::new(TapeState {
                pending: Vec::new(),
                collected: Vec::new(),
                hollow: None,
            })),
        }
    }
}

impl<B: Backend> fmt::Debug for RowGradTape<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        f.debug_struct("RowGradTape")
            .field("pending", &state.pending.len())
            .field("collected", &state.collected.len())
            .finish()
    }
}

impl<B: Backend> RowGradTape<B> {
    fn lock(&self) -> MutexGuard<'_, TapeState<B>> {
        // A panic while the lock was held cannot leave the lists half-written (each change is
        // a single push, retain or take), so a poisoned lock is still consistent.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records a lookup of `rows` (sorted, unique) whose output is `output`; `slots` maps
    /// each position of the output to its row (`-1`: padding).
    pub(crate) fn record(&self, rows: Vec<i64>, slots: Vec<i64>, output: Tensor<B, 3>) {
        let mut state = self.lock();
        let leaf = match state.hollow {
            Some(hollow) => hollow(output),
            None => Leaf {
                handle: output,
                alive: None,
            },
        };
        state.pending.push(PendingLookup {
            thread: std::thread::current().id(),
            rows,
            slots,
            leaf: Some(leaf),
        });
        state.prune_released();
    }

    /// Records a lookup that touched no value (`rows` empty, or a table of width 0) whose
    /// output is not tracked: it counts as an empty gradient at the next collection on
    /// this thread.
    pub(crate) fn record_untracked(&self, rows: Vec<i64>, slots: Vec<i64>) {
        self.lock().pending.push(PendingLookup {
            thread: std::thread::current().id(),
            rows,
            slots,
            leaf: None,
        });
    }

    /// How many lookups of this thread autodiff has released without their row gradients
    /// being collected: a backward pass consumed them (and its gradients were built without
    /// `collect_grads`), or nothing used them and a later backward pass dropped their graph.
    /// `None` when this backend's liveness cannot be seen.
    pub(crate) fn released_uncollected(&self) -> Option<usize> {
        let thread = std::thread::current().id();
        let state = self.lock();
        let mut count = 0;
        for lookup in state.pending.iter().filter(|p| p.thread == thread) {
            count += usize::from(lookup.is_released()?);
        }
        Some(count)
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
    pub(crate) fn peek_collected(&self) -> Vec<RowGrad<B>> {
        self.lock().collected.clone()
    }

    /// Takes every collected row gradient.
    pub(crate) fn take_collected(&self) -> Vec<RowGrad<B>> {
        std::mem::take(&mut self.lock().collected)
    }

    /// Drops every row gradient, pending or collected.
    pub(crate) fn clear(&self) {
        let mut state = self.lock();
        state.pending.clear();
        state.collected.clear();
    }
}

impl<B: AutodiffBackend> RowGradTape<B> {
    /// A tape of an autodiff table: its lookups keep none of their outputs' values.
    pub(crate) fn tracked() -> Self {
        let tape = Self::default();
        tape.knows_autodiff();
        tape
    }

    /// Notes that `B` is an autodiff backend, so that pending and future lookups keep only
    /// their outputs' autodiff identity, not their values.
    pub(crate) fn knows_autodiff(&self) {
        let mut state = self.lock();
        if state.hollow.is_some() {
            return;
        }
        state.hollow = Some(hollow::<B>);
        for leaf in state.pending.iter_mut().filter_map(|p| p.leaf.as_mut()) {
            if leaf.alive.is_none() {
                *leaf = hollow(leaf.handle.clone());
            }
        }
    }

    /// Takes the gradients of pending lookups out of `grads` and sums them.
    ///
    /// Any thread's lookups count: node ids are unique, so only the backward pass that used
    /// a lookup holds its gradient, whichever thread looked up. Returns `None` when none of
    /// them took part in this backward pass. This thread's lookups that autodiff has
    /// released without giving them a gradient here can never have one (their output did
    /// not reach the loss, so, as in PyTorch, they contribute nothing) and are dropped;
    /// lookups still alive wait for a later backward pass.
    fn take_from(&self, grads: &mut B::Gradients) -> Option<RowGrad<B::InnerBackend>> {
        self.knows_autodiff();
        let thread = std::thread::current().id();
        let mut taken = Vec::new();
        let mut untracked = 0;
        {
            let mut state = self.lock();
            let mut kept = Vec::new();
            for lookup in std::mem::take(&mut state.pending) {
                let Some(leaf) = &lookup.leaf else {
                    // An untracked empty lookup: an empty gradient for this thread's pass.
                    if lookup.thread == thread {
                        untracked += 1;
                    } else {
                        kept.push(lookup);
                    }
                    continue;
                };
                match leaf.handle.grad_remove(grads) {
                    Some(grad) => taken.push((lookup.rows, lookup.slots, grad)),
                    None if lookup.thread == thread && leaf.is_released().unwrap_or(true) => {}
                    None => kept.push(lookup),
                }
            }
            state.pending = kept;
            state.prune_released();
        }
        let mut parts = Vec::new();
        let mut device = None;
        for (rows, slots, grad) in taken {
            device.get_or_insert_with(|| grad.device());
            parts.push(match rows.len() {
                0 => RowGrad::empty(),
                k => RowGrad::new(rows, sum_per_row(grad, &slots, k)),
            });
        }
        match device {
            Some(device) => Some(RowGrad::sum(parts, &device)),
            None if untracked > 0 => Some(RowGrad::empty()),
            None => None,
        }
    }

    fn push_collected(&self, grad: RowGrad<B::InnerBackend>) {
        self.lock()
            .collected
            .push(grad.map_values(Tensor::from_inner));
    }
}

/// The scope in which a table's tape is reachable: opened by `SparseEmbedding::visit` and
/// `map` around the visit of the table's weight, and by nothing else.
pub(crate) mod scope {
    use super::*;

    thread_local! {
        static OPEN: RefCell<Vec<(ParamId, Box<dyn Any>)>> = const { RefCell::new(Vec::new()) };
    }

    /// Closes its scope when dropped, also when the visit panics.
    pub(crate) struct Guard(());

    impl Drop for Guard {
        fn drop(&mut self) {
            OPEN.with(|open| open.borrow_mut().pop());
        }
    }

    /// Opens the scope of the table whose weight is `param`.
    pub(crate) fn enter<B: Backend>(param: ParamId, tape: &RowGradTape<B>) -> Guard {
        OPEN.with(|open| open.borrow_mut().push((param, Box::new(tape.clone()))));
        Guard(())
    }

    /// The tape of the table whose weight is `param`, if that weight is being visited.
    pub(crate) fn tape<B: Backend>(param: ParamId) -> Option<RowGradTape<B>> {
        OPEN.with(|open| {
            let open = open.borrow();
            let (id, tape) = open.last()?;
            if *id != param {
                return None;
            }
            tape.downcast_ref::<RowGradTape<B>>().cloned()
        })
    }
}

/// Builds the `GradientsParams` of a backward pass, row gradients included: the drop-in
/// replacement of `GradientsParams::from_grads(grads, &model)`.
///
/// Every parameter's gradient is taken as Burn does; for each
/// [`SparseEmbedding`](crate::SparseEmbedding) of `module`, the gradients of the lookups
/// this thread made since its last collection are summed into one row gradient, kept by the
/// table until the optimizer's next step, and announced in the result by a marker under the
/// weight's id. The marker is a `[1, d + 1]` tensor of ones (a shape no table gradient can
/// have), so Burn's `GradientsAccumulator` and multi-device merging carry it like any
/// gradient, and its value counts the backward passes it covers.
///
/// If the weight also received a dense gradient (say, a penalty on `weight.val()`), the rows
/// are added into it and the table takes the dense path for that step.
///
/// # Example
///
/// ```
/// use burn::backend::{Autodiff, NdArray};
/// use burn::optim::Optimizer;
/// use burn::tensor::{Int, Tensor};
/// use burn_sparse_adam::{collect_grads, SparseAdamConfig, SparseEmbeddingConfig};
///
/// type B = Autodiff<NdArray>;
/// let device = Default::default();
/// let table = SparseEmbeddingConfig::new(1000, 8).init::<B>(&device);
/// let mut optim = SparseAdamConfig::new().init();
///
/// let indices = Tensor::<B, 2, Int>::from_data([[3, 7, 3]], &device);
/// let loss = table.forward(indices).sum();
/// let grads = collect_grads(loss.backward(), &table); // not GradientsParams::from_grads
/// let table = optim.step(1e-2, table, grads);         // updates rows 3 and 7 only
/// # let _ = table;
/// ```
pub fn collect_grads<B: AutodiffBackend, M: AutodiffModule<B>>(
    mut grads: B::Gradients,
    module: &M,
) -> GradientsParams {
    let mut collector = Collector::<B> {
        grads: &mut grads,
        params: GradientsParams::new(),
    };
    module.visit(&mut collector);
    collector.params
}

struct Collector<'a, B: AutodiffBackend> {
    grads: &'a mut B::Gradients,
    params: GradientsParams,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Collector<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let value = param.val();
        let dense = value.grad_remove(self.grads);
        let rows = scope::tape::<B>(param.id)
            .and_then(|tape| tape.take_from(self.grads).map(|rows| (tape, rows)));
        match (dense, rows) {
            (None, None) => {}
            (Some(dense), None) => self.params.register(param.id, dense),
            (Some(dense), Some((_, rows))) => self.params.register(param.id, rows.add_into(dense)),
            (None, Some((tape, rows))) => {
                tape.push_collected(rows);
                let marker = marker::<B::InnerBackend, D>(&value.shape(), &value.device());
                self.params.register(param.id, marker);
            }
        }
    }
}

/// The shape of the marker announcing row gradients for a parameter of shape `param`.
pub(crate) fn marker_shape(param: &Shape) -> Shape {
    let mut dims = vec![1; param.num_dims()];
    if let Some(last) = dims.last_mut() {
        *last = param.as_slice()[param.num_dims() - 1] + 1;
    }
    Shape::from(dims)
}

fn marker<B: Backend, const D: usize>(param: &Shape, device: &B::Device) -> Tensor<B, D> {
    Tensor::ones(marker_shape(param), device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_sorted_maps_every_index() {
        let (unique, inverse) = unique_sorted(&[5, 1, 5, 3, 1]);
        assert_eq!(unique, vec![1, 3, 5]);
        assert_eq!(inverse, vec![2, 0, 2, 1, 0]);
        assert_eq!(unique_sorted(&[]), (vec![], vec![]));
    }

    /// Once the tape knows its backend is autodiff, a pending lookup keeps one value, not
    /// its output's, and counts as released once autodiff lets go of the output.
    #[test]
    fn pending_lookups_keep_no_values() {
        use burn::backend::{Autodiff, NdArray};
        type B = Autodiff<NdArray>;
        let device = Default::default();
        let tape = RowGradTape::<B>::tracked();
        let output = Tensor::<B, 3>::ones([4, 8, 16], &device).require_grad();
        tape.record(vec![0, 1], vec![0; 32], output.clone());
        {
            let state = tape.lock();
            let leaf = state.pending[0].leaf.as_ref().expect("a tracked lookup");
            assert_eq!(leaf.handle.shape().num_elements(), 1);
            assert_eq!(leaf.is_released(), Some(false));
        }
        // A backward pass of the output gives the handle its gradient, and consumes it.
        let mut grads = output.sum().backward();
        let rows = tape.take_from(&mut grads).expect("the lookup took part");
        assert_eq!(rows.rows(), [0, 1]);
        assert_eq!(tape.counts(), (0, 0));
    }

    #[test]
    fn marker_shape_is_never_a_table_shape() {
        assert_eq!(marker_shape(&Shape::new([10, 4])), Shape::new([1, 5]));
        assert_eq!(marker_shape(&Shape::new([1, 1])), Shape::new([1, 2]));
    }
}
