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
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::ThreadId;

use burn::module::{AutodiffModule, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{IndexingUpdateOp, Int, Shape, Tensor, TensorData};

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

/// A lookup recorded under autodiff whose gradient has not been collected yet.
struct PendingLookup<B: Backend> {
    /// The thread that looked up: only a backward pass of that thread can hold its gradient
    /// (Burn's multi-device training runs one worker thread per device).
    thread: ThreadId,
    /// The touched rows, sorted and unique.
    rows: Vec<i64>,
    /// For each looked-up position, its row's place in `rows`; `-1` for `padding_idx`.
    slots: Vec<i64>,
    /// The lookup's output, a leaf of autodiff's graph: its gradient, summed per row, is the
    /// row gradient. `None` for a lookup of nothing.
    leaf: Option<Tensor<B, 3>>,
}

struct TapeState<B: Backend> {
    pending: Vec<PendingLookup<B>>,
    /// Row gradients collected from backward passes, waiting for the optimizer.
    collected: Vec<RowGrad<B>>,
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
        // a single push or take), so a poisoned lock is still consistent.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records a lookup of `rows` (sorted, unique) whose output is `leaf`; `slots` maps each
    /// position of the output to its row (`-1`: padding).
    pub(crate) fn record(&self, rows: Vec<i64>, slots: Vec<i64>, leaf: Option<Tensor<B, 3>>) {
        self.lock().pending.push(PendingLookup {
            thread: std::thread::current().id(),
            rows,
            slots,
            leaf,
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
    /// Takes the gradients of this thread's pending lookups out of `grads` and sums them.
    ///
    /// Returns `None` when none of them took part in this backward pass. Lookups of this
    /// thread that did not take part are dropped: their output did not reach the loss, so,
    /// as in PyTorch, they contribute no gradient.
    fn take_from(&self, grads: &mut B::Gradients) -> Option<RowGrad<B::InnerBackend>> {
        let thread = std::thread::current().id();
        let mine: Vec<PendingLookup<B>> = {
            let mut state = self.lock();
            let (mine, others) = std::mem::take(&mut state.pending)
                .into_iter()
                .partition(|p| p.thread == thread);
            state.pending = others;
            mine
        };
        let mut parts = Vec::new();
        let mut device = None;
        for lookup in mine {
            match lookup.leaf {
                // A lookup of no index has no leaf to trace; its (empty) output can only
                // have fed this backward pass, so it counts as an empty gradient.
                None => parts.push(RowGrad::empty()),
                Some(leaf) => {
                    if let Some(grad) = leaf.grad_remove(grads) {
                        device.get_or_insert_with(|| grad.device());
                        parts.push(match lookup.rows.len() {
                            0 => RowGrad::empty(),
                            k => RowGrad::new(lookup.rows, sum_per_row(grad, &lookup.slots, k)),
                        });
                    }
                }
            }
        }
        if parts.is_empty() {
            return None;
        }
        Some(match device {
            Some(device) => RowGrad::sum(parts, &device),
            None => RowGrad::empty(),
        })
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

    #[test]
    fn marker_shape_is_never_a_table_shape() {
        assert_eq!(marker_shape(&Shape::new([10, 4])), Shape::new([1, 5]));
        assert_eq!(marker_shape(&Shape::new([1, 1])), Shape::new([1, 2]));
    }
}
