//! The tape of a table: the lookups it recorded under autodiff, the row gradients collected
//! from backward passes, and the marker protocol between `collect_grads` and the optimizer.
//!
//! One type, [`RowGradTape`], owns the protocol from end to end: [`RowGradTape::collect`]
//! turns a backward pass's gradients of a table's lookups into a collected row gradient and
//! the *marker* that announces it in the `GradientsParams`; [`RowGradTape::announced`]
//! tells the optimizer which collected row gradients the markers it was given stand for;
//! [`RowGradTape::claim`] hands them over when the step applies them.
//!
//! A marker is a `[1, …, 1, d + 1]` tensor (a shape no gradient of the table can have), so
//! Burn's plumbing (`GradientsAccumulator`, multi-device merging) carries it like any
//! gradient, adding markers as it adds gradients: its first value counts the backward passes
//! it covers, the next ones are the tape's random tag times that count, the rest ones. An
//! engine that adds another process's marker to it (Burn 0.21's `GradientsParams::all_reduce`,
//! which cannot carry rows) breaks that proportion, and the step says so instead of applying
//! this process's rows alone. Collected row gradients older than that count belong to a
//! `GradientsParams` that was dropped without a step (say, the partial accumulation
//! burn-train discards at the end of an epoch), and are dropped, as the dense gradients in
//! it are.

use std::any::Any;
use std::cell::RefCell;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::thread::ThreadId;

use burn::backend::autodiff::NodeId;
use burn::backend::Autodiff;
use burn::module::ParamId;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{DType, Shape, Tensor, TensorPrimitive};

use super::row_grad::RowGrad;
use crate::kernels;

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

/// [`hollow`] before any autodiff entry point (`collect_grads`, the optimizer, `valid`) has
/// named `B`'s inner backend, as for the first lookups of a freshly built table: `B` is tried
/// as each autodiff backend this crate names by its features (Burn's `Autodiff` over
/// burn-ndarray with `ndarray`, over burn-wgpu with `wgpu`, at Burn's default element
/// types). Hands `output` back when `B` is none of them; the tape then keeps the whole
/// output until an entry point names the backend.
fn hollow_known<B: Backend>(output: Tensor<B, 3>) -> Result<Leaf<B>, Tensor<B, 3>> {
    let found = Err(output);
    #[cfg(feature = "ndarray")]
    let found = found.or_else(hollow_as::<B, Autodiff<burn::backend::NdArray>>);
    #[cfg(feature = "wgpu")]
    let found = found.or_else(hollow_as::<B, Autodiff<burn::backend::Wgpu>>);
    found
}

/// [`hollow`] for `A` when `B` is `A`; `output` back, untouched, when it is not.
#[allow(dead_code)] // unused without the `ndarray` and `wgpu` features
fn hollow_as<B: Backend, A: AutodiffBackend>(
    output: Tensor<B, 3>,
) -> Result<Leaf<B>, Tensor<B, 3>> {
    let boxed: Box<dyn Any> = Box::new(output.into_primitive().tensor());
    let primitive = match float_primitive::<A>(boxed) {
        Ok(primitive) => primitive,
        Err(boxed) => {
            let primitive = same::<B>(boxed);
            return Err(Tensor::from_primitive(TensorPrimitive::Float(primitive)));
        }
    };
    let leaf = hollow::<A>(Tensor::from_primitive(TensorPrimitive::Float(primitive)));
    let handle: Box<dyn Any> = Box::new(leaf.handle.into_primitive().tensor());
    Ok(Leaf {
        handle: Tensor::from_primitive(TensorPrimitive::Float(same::<B>(handle))),
        alive: leaf.alive,
    })
}

/// The float primitive of `B` that `boxed` holds, being `B`'s own or that of the backend `B` is.
fn same<B: Backend>(boxed: Box<dyn Any>) -> B::FloatTensorPrimitive {
    *boxed
        .downcast::<B::FloatTensorPrimitive>()
        .unwrap_or_else(|_| unreachable!("the primitive came from this backend"))
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
    /// The thread of the data-parallel peer that first exchanged this table's row gradients
    /// (`distributed::all_reduce_grads`): a tape shared by two peers would mix their rows.
    peer: Option<ThreadId>,
    /// Whether a marker of this tape has been read and found to carry its tag.
    tag_checked: bool,
}

/// The tag a tape writes into its markers after the pass count: up to two integers in
/// `1024..2048`, drawn at random per tape. Adding markers of this tape (accumulation,
/// multi-device merging) and scaling them (clipping) keep each tag entry `tag × passes`;
/// adding another tape's marker (an engine that all-reduces `GradientsParams` tensor by
/// tensor across processes, where each process has its own tape) does not, unless both
/// drew the same tags (a chance of 2⁻²⁰ for tables wider than one column, 2⁻¹⁰ otherwise).
/// Integers this small keep `tag × passes` exact in `f32`.
fn random_tag() -> [f32; 2] {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_usize(&hasher as *const _ as usize);
    let bits = hasher.finish();
    [
        (1024 + (bits & 1023)) as f32,
        (1024 + ((bits >> 10) & 1023)) as f32,
    ]
}

/// What reading a marker back tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct MarkerRead {
    /// The backward passes it covers.
    passes: usize,
    /// `Some(true)` when its tag entries are this tape's tag times its count, `Some(false)`
    /// when another tape's marker was added to it, `None` when it cannot tell (a count that
    /// is not positive, a marker without tag entries, or a half-precision marker, whose
    /// tags are not exact).
    ours: Option<bool>,
}

/// Reads a marker back (`values`, row-major, in `f32`; `exact`: whether its float type holds
/// the tags exactly) against this tape's `tag`.
fn read_marker(values: &[f32], exact: bool, tag: [f32; 2]) -> MarkerRead {
    let Some(&first) = values.first() else {
        return MarkerRead {
            passes: 0,
            ours: None,
        };
    };
    let passes = first.round().max(0.0) as usize;
    let checkable = exact && first.is_finite() && first > 0.0 && values.len() > 1;
    // Each tag entry over the count is this tape's tag (clipping scales the whole marker,
    // f32 rounding moves the ratio by far less than 0.01); a sum with markers of other
    // tapes, whose tags are other integers, moves it by at least 1 / (total passes).
    let ours = checkable.then(|| {
        values[1..]
            .iter()
            .zip(tag)
            .all(|(&entry, tag)| (entry / first - tag).abs() <= 0.01)
    });
    MarkerRead { passes, ours }
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
    /// What this tape writes into its markers ([`random_tag`]).
    tag: [f32; 2],
}

impl<B: Backend> Clone for RowGradTape<B> {
    fn clone(&self) -> Self {
        Self {
            state: self.state.clone(),
            tag: self.tag,
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
                peer: None,
                tag_checked: false,
            })),
            tag: random_tag(),
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
            None => hollow_known(output).unwrap_or_else(|output| Leaf {
                handle: output,
                alive: None,
            }),
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
                k => RowGrad::new(rows, kernels::sum_per_row(grad, &slots, k)),
            });
        }
        match device {
            Some(device) => Some(RowGrad::sum(parts, &device)),
            None if untracked > 0 => Some(RowGrad::empty()),
            None => None,
        }
    }
}

/// The shape of the marker announcing row gradients for a parameter of shape `param`.
fn marker_shape(param: &Shape) -> Shape {
    let mut dims = vec![1; param.num_dims()];
    if let Some(last) = dims.last_mut() {
        *last = param.as_slice()[param.num_dims() - 1] + 1;
    }
    Shape::from(dims)
}

/// Whether a gradient of shape `grad`, given for a table's weight of shape `param`, is a
/// marker.
pub(crate) fn is_marker(param: &Shape, grad: &Shape) -> bool {
    *grad == marker_shape(param)
}

impl<B: AutodiffBackend> RowGradTape<B> {
    /// The gradient to register for the table's weight `weight` after a backward pass:
    /// this thread's lookups' gradients in `grads`, summed into one row gradient that the
    /// tape keeps, announced by a marker; or, if the weight also got a dense gradient (a
    /// penalty on `weight.val()`, say), the rows added into it. `None` when neither exists.
    pub(crate) fn collect<const D: usize>(
        &self,
        grads: &mut B::Gradients,
        weight: &Tensor<B, D>,
    ) -> Option<Tensor<B::InnerBackend, D>> {
        let dense = weight.grad_remove(grads);
        let rows = self.take_from(grads);
        match (dense, rows) {
            (dense, None) => dense,
            (Some(dense), Some(rows)) => Some(rows.add_into(dense)),
            (None, Some(rows)) => {
                self.lock()
                    .collected
                    .push(rows.map_values(Tensor::from_inner));
                Some(self.marker(&weight.shape(), &weight.device()))
            }
        }
    }

    /// The collected row gradients that `markers` (the weight's gradients in a step, one per
    /// device) announce, newest last, without taking them: as many as the markers count
    /// backward passes; older ones were collected for gradients dropped without a step.
    /// Empty when the row gradients were cleared since (`clear_row_grads`).
    ///
    /// # Errors
    ///
    /// [`ForeignMarker`] when a marker was added to another tape's (see [`random_tag`]).
    pub(crate) fn announced<const D: usize>(
        &self,
        markers: &[Tensor<B::InnerBackend, D>],
    ) -> Result<Vec<RowGrad<B::InnerBackend>>, ForeignMarker> {
        let (mut collected, tag_checked) = {
            let state = self.lock();
            (state.collected.clone(), state.tag_checked)
        };
        // Reading a marker back is a device sync on a GPU: only when its count decides
        // which row gradients it announces, and once per tape to check its tag (an engine
        // that all-reduces markers does so from the first step on).
        if collected.len() > 1 || !tag_checked {
            let (mut passes, mut verified) = (0, false);
            for marker in markers {
                let exact = matches!(marker.dtype(), DType::F32 | DType::F64);
                let values = marker
                    .clone()
                    .into_data()
                    .convert::<f32>()
                    .into_vec::<f32>()
                    .unwrap_or_default();
                let read = read_marker(&values, exact, self.tag);
                match read.ours {
                    Some(false) => return Err(ForeignMarker),
                    Some(true) => verified = true,
                    None => {}
                }
                passes += read.passes;
            }
            if verified {
                self.lock().tag_checked = true;
            }
            if collected.len() > 1 {
                collected.drain(..collected.len().saturating_sub(passes));
            }
        }
        Ok(collected
            .into_iter()
            .map(|rows| rows.map_values(Tensor::inner))
            .collect())
    }

    /// The marker announcing one backward pass of row gradients for a weight of shape
    /// `weight`: `[1, …, d + 1]`, the pass count `1`, this tape's tag, ones after it.
    fn marker<BD: Backend, const D: usize>(
        &self,
        weight: &Shape,
        device: &BD::Device,
    ) -> Tensor<BD, D> {
        let shape = marker_shape(weight);
        let mut values = vec![1.0f32; shape.num_elements()];
        for (entry, tag) in values.iter_mut().skip(1).zip(self.tag) {
            *entry = tag;
        }
        Tensor::from_data(burn::tensor::TensorData::new(values, shape), device)
    }

    /// Takes every collected row gradient: the step that applies the announced ones
    /// consumes them, and older ones are stale.
    pub(crate) fn claim(&self) {
        self.lock().collected.clear();
    }

    /// Makes this thread the table's data-parallel peer; `false` when another thread
    /// already is (the table is shared by two peers).
    pub(crate) fn join_as_peer(&self) -> bool {
        let thread = std::thread::current().id();
        *self.lock().peer.get_or_insert(thread) == thread
    }

    /// Replaces the collected row gradients by `rows` (the peers' reduced row gradient) and
    /// returns the marker announcing them, for a weight of shape `weight` on `device`.
    pub(crate) fn install<const D: usize>(
        &self,
        rows: RowGrad<B::InnerBackend>,
        weight: &Shape,
        device: &B::Device,
    ) -> Tensor<B::InnerBackend, D> {
        self.lock().collected = vec![rows.map_values(Tensor::from_inner)];
        self.marker::<B::InnerBackend, D>(weight, device)
    }
}

/// A table's marker was added to the marker of another process's copy of the table: an
/// engine all-reduced `GradientsParams` tensor by tensor, which carries no rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ForeignMarker;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_never_a_table_shape() {
        assert_eq!(marker_shape(&Shape::new([10, 4])), Shape::new([1, 5]));
        assert_eq!(marker_shape(&Shape::new([1, 1])), Shape::new([1, 2]));
    }

    #[test]
    fn a_marker_tells_its_own_tape_from_a_sum_with_other_tapes() {
        let tag = [1500.0, 1100.0];
        let other = [1501.0, 1100.0];
        let marker =
            |passes: f32, tag: [f32; 2]| vec![passes, tag[0] * passes, tag[1] * passes, passes];
        let add =
            |a: Vec<f32>, b: Vec<f32>| a.iter().zip(&b).map(|(x, y)| x + y).collect::<Vec<_>>();
        let read = |values: &[f32]| read_marker(values, true, tag);
        // Its own: accumulated over passes, scaled by clipping.
        assert_eq!(read(&marker(1.0, tag)).ours, Some(true));
        assert_eq!(
            read(&add(marker(1.0, tag), marker(2.0, tag))).ours,
            Some(true)
        );
        let clipped: Vec<f32> = marker(3.0, tag).iter().map(|v| v * 0.013).collect();
        assert_eq!(
            read(&clipped),
            MarkerRead {
                passes: 0,
                ours: Some(true)
            }
        );
        // Summed or averaged with another tape's, even one whose tags differ by one.
        assert_eq!(
            read(&add(marker(1.0, tag), marker(1.0, other))).ours,
            Some(false)
        );
        let three = add(
            add(marker(1.0, tag), marker(1.0, other)),
            marker(1.0, [1024.0, 2047.0]),
        );
        let mean: Vec<f32> = three.iter().map(|v| v / 3.0).collect();
        assert_eq!(
            read(&mean),
            MarkerRead {
                passes: 1,
                ours: Some(false)
            }
        );
        assert_eq!(
            read(&add(marker(40.0, tag), marker(1.0, other))).ours,
            Some(false)
        );
        // A width-1 table's marker has one tag entry.
        assert_eq!(read(&[2.0, 3001.0]).ours, Some(false));
        assert_eq!(read(&[2.0, 3000.0]).ours, Some(true));
        // Nothing to tell: no positive count, no tag entry, or half precision.
        assert_eq!(read(&[0.0, 0.0]).ours, None);
        assert_eq!(read(&[f32::NAN, 1.0]).ours, None);
        assert_eq!(read(&[1.0]).ours, None);
        assert_eq!(read_marker(&marker(1.0, other), false, tag).ours, None);
        assert!(!is_marker(&Shape::new([2, 1]), &Shape::new([2, 1])));
    }

    /// Once the tape knows its backend is autodiff, a pending lookup keeps one value, not
    /// its output's, and counts as released once autodiff lets go of the output.
    #[test]
    fn pending_lookups_keep_no_values() {
        use burn::backend::NdArray;
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

    /// A freshly built table's tape (no autodiff entry point has named the backend yet)
    /// keeps none of its lookups' values either, on the backends the crate's features name:
    /// 500 forwards without a backward pass keep one value each, not their outputs. (How
    /// many of them are kept depends on when autodiff lets go of their graph: lookups it has
    /// released are pruned beyond [`KEPT_RELEASED`], tested in the integration suite.)
    #[cfg(feature = "ndarray")]
    #[test]
    fn a_fresh_tape_keeps_no_lookup_values() {
        use burn::backend::NdArray;
        type B = Autodiff<NdArray>;
        let device = Default::default();
        let tape = RowGradTape::<B>::default();
        for _ in 0..500 {
            let output = Tensor::<B, 3>::ones([4, 8, 16], &device).require_grad();
            tape.record(vec![0, 1], vec![0; 32], output.clone().mul_scalar(2.0));
        }
        let state = tape.lock();
        assert!(!state.pending.is_empty());
        for lookup in &state.pending {
            let leaf = lookup.leaf.as_ref().expect("a tracked lookup");
            assert_eq!(
                leaf.handle.shape().num_elements(),
                1,
                "a lookup keeps one value"
            );
            assert!(leaf.alive.is_some(), "its liveness is seen");
        }
    }
}
