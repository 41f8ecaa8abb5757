//! CPU kernels over `f32` slices: the row path's hot loops as plain passes over the touched
//! rows, for whichever backend can lend its memory as a slice.
//!
//! - [`gather_rows`]: a lookup's output rows, copied from the table;
//! - [`sum_lookups_per_row`]: several lookups' gradients of one table summed per touched row
//!   in one pass (what [`sum_per_row`] of each, then coalescing, gives);
//! - [`sum_per_row`]: a lookup's gradient summed per touched row (duplicates added in lookup
//!   order, padding skipped);
//! - [`update_rows`]: the row update of the parameter and both moments, in place, evaluating
//!   [`sparse_adam_delta`] on each `f32` lane;
//! - [`update_dense`]: the same update from a table-sized gradient, on the rows with a
//!   non-zero lane, in one pass (the dense path).
//!
//! With the `parallel` feature (on by default) each kernel splits its rows across the
//! threads of rayon's current pool (the global one, which burn-flex shares, or the pool a
//! caller [`install`](https://docs.rs/rayon/latest/rayon/struct.ThreadPool.html#method.install)s),
//! each thread owning disjoint output rows: no atomics, no reordered sums, so the results
//! are bit for bit those of one thread, whatever the thread count. A call with fewer than
//! [`PARALLEL_LANES`] lanes of work stays on the calling thread, so small steps do not pay
//! for fork and join.
//!
//! Tables are row-major `[n, d]` slices (`n · d` values); row gradients are row-major
//! `[k, d]` blocks. Every kernel accepts `d == 0` and empty inputs, and then does nothing
//! (beyond sizing its output). Indices are *not* checked against the table beyond what slice
//! indexing does: an out-of-range index panics instead of reading or writing out of bounds,
//! but callers check indices first ([`check_indices`](crate::lookup::check_indices)), so
//! that nothing is half done.

use std::ops::Range;

use crate::moments::MomentElement;
use crate::update::{decayed, sparse_adam_delta, StepScalars};

/// Defines `fn $name(args)`, which runs `$lanes(args)` compiled for AVX2 (eight `f32` lanes a
/// vector instead of SSE2's four) on x86-64 CPUs that have it, and compiled for the baseline
/// elsewhere. `$lanes` must be `#[inline(always)]`, so that each compilation vectorizes it
/// for its own target.
///
/// The kernels given to it give the same bits either way: IEEE additions, multiplications,
/// divisions and square roots, each correctly rounded whatever the vector width, in the same
/// order, and no fused multiply-add is enabled. (NaN payloads aside: where two NaNs meet, which
/// one an operation returns may differ; any NaN stays a NaN.)
macro_rules! widest {
    (
        $(#[$doc:meta])*
        fn $name:ident<$($generic:ident: $bound:path),*>($($arg:ident: $ty:ty),* $(,)?)
            => $lanes:ident
    ) => {
        $(#[$doc])*
        #[allow(clippy::too_many_arguments)]
        fn $name<$($generic: $bound),*>($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") {
                #[target_feature(enable = "avx2")]
                #[allow(clippy::too_many_arguments)]
                fn avx2<$($generic: $bound),*>($($arg: $ty),*) {
                    $lanes($($arg),*)
                }
                // SAFETY: the CPU has AVX2, checked just above.
                return unsafe { avx2($($arg),*) };
            }
            $lanes($($arg),*)
        }
    };
}

/// Lanes of work (rows × `d`) below which a kernel stays on the calling thread: a fork and
/// join costs a few microseconds, about what the row update of 32k lanes takes.
pub const PARALLEL_LANES: usize = 1 << 15;

/// How many pieces to cut `items` items of `d` lanes into for the current pool, at least
/// `min_lanes` lanes each; 1 without the `parallel` feature, on a one-thread pool, or when
/// the work is small.
fn pieces(items: usize, d: usize, min_lanes: usize) -> usize {
    #[cfg(feature = "parallel")]
    {
        let threads = rayon::current_num_threads();
        if threads <= 1 {
            return 1;
        }
        // A few pieces per thread even out rows of uneven cost (cache misses vary).
        let most = (4 * threads).min(items.max(1));
        ((items * d) / min_lanes.max(1)).clamp(1, most)
    }
    #[cfg(not(feature = "parallel"))]
    {
        let _ = (items, d, min_lanes);
        1
    }
}

/// Appends rows `indices` of the row-major `[n, d]` `table` to `out`, in order
/// (`indices.len() · d` values): the output of an embedding lookup.
///
/// `out` is appended to, so that a caller can build the output in a reused buffer.
///
/// # Panics
///
/// When an index is not a row of `table` (callers check indices first).
///
/// # Example
///
/// ```
/// use sparse_adam_core::gather_rows;
///
/// let table = [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]; // [3, 2]
/// let mut out = Vec::new();
/// gather_rows(&table, 2, &[2, 0, 2], &mut out);
/// assert_eq!(out, [2.0, 2.5, 0.0, 0.5, 2.0, 2.5]);
/// ```
pub fn gather_rows(table: &[f32], d: usize, indices: &[i64], out: &mut Vec<f32>) {
    gather_rows_with(table, d, indices, out, PARALLEL_LANES);
}

fn gather_rows_with(
    table: &[f32],
    d: usize,
    indices: &[i64],
    out: &mut Vec<f32>,
    min_lanes: usize,
) {
    if d == 0 {
        return;
    }
    let pieces = pieces(indices.len(), d, min_lanes);
    if pieces == 1 {
        out.reserve(indices.len() * d);
        gather_into(table, d, indices, out);
        return;
    }
    #[cfg(feature = "parallel")]
    {
        use rayon::prelude::*;
        let len = indices.len() * d;
        out.reserve(len);
        let per_piece = indices.len().div_ceil(pieces);
        // The output is written once, straight into the vector's spare capacity: zeroing it
        // first would be a second pass over a batch-sized buffer.
        out.spare_capacity_mut()[..len]
            .par_chunks_mut(per_piece * d)
            .zip(indices.par_chunks(per_piece))
            .for_each(|(out, indices)| {
                let mut lanes = out.iter_mut();
                for_each_row(table, d, indices, |row| {
                    // The row first: `zip` stops on it before taking a lane too many.
                    for (&x, lane) in row.iter().zip(lanes.by_ref()) {
                        lane.write(x);
                    }
                });
            });
        // SAFETY: the chunks cover the first `len` spare lanes exactly (`per_piece` indices
        // of `d` lanes each, the last chunk the rest), and each piece wrote every lane of its
        // chunk, one table row of `d` lanes per index (`for_each_row` panics on an index out
        // of range, before any length is set).
        unsafe { out.set_len(out.len() + len) };
    }
}

/// Appends rows `indices` of `table` to `out` on the calling thread.
fn gather_into(table: &[f32], d: usize, indices: &[i64], out: &mut Vec<f32>) {
    for_each_row(table, d, indices, |row| out.extend_from_slice(row));
}

/// Calls `f` with rows `indices` of `table`, in order, prefetching ahead.
#[inline(always)]
fn for_each_row(table: &[f32], d: usize, indices: &[i64], mut f: impl FnMut(&[f32])) {
    // Rows are scattered over a table far larger than the caches: fetch a few lookups
    // ahead, so that their loads overlap instead of queueing.
    const AHEAD: usize = 8;
    for (n, &i) in indices.iter().enumerate() {
        if let Some(&ahead) = indices.get(n + AHEAD) {
            prefetch_row(table, ahead, d);
        }
        f(&table[row_lanes(i, d)]);
    }
}

/// The `[k, d]` sum, per touched row, of a lookup's row-major `[slots.len(), d]` gradient
/// `grad`, written to `out` (cleared, then `k · d` values): position `i` adds its gradient
/// row to row `slots[i]` of `out`, in lookup order; a slot of `-1` (a lookup of
/// `padding_idx`) adds nothing.
///
/// With the [`LookupPlan`](crate::lookup::LookupPlan) of the lookup, `k` is
/// `plan.rows.len()`, the slots are `plan.slots`, and row `j` of `out` is the gradient of
/// table row `plan.rows[j]`. A row whose lookups cancel sums to zero and stays in the
/// block: it is touched all the same.
///
/// # Panics
///
/// When `grad` is not `slots.len() · d` long, or a slot is `>= k` or below `-1`.
///
/// # Example
///
/// ```
/// use sparse_adam_core::sum_per_row;
///
/// // Three lookups of width 2: rows 0, padding, 0.
/// let grad = [1.0, 2.0, 100.0, 100.0, 10.0, 20.0];
/// let mut out = Vec::new();
/// sum_per_row(&grad, 2, &[0, -1, 0], 1, &mut out);
/// assert_eq!(out, [11.0, 22.0]);
/// ```
pub fn sum_per_row(grad: &[f32], d: usize, slots: &[i64], k: usize, out: &mut Vec<f32>) {
    sum_per_row_with(grad, d, slots, k, out, PARALLEL_LANES);
}

fn sum_per_row_with(
    grad: &[f32],
    d: usize,
    slots: &[i64],
    k: usize,
    out: &mut Vec<f32>,
    min_lanes: usize,
) {
    // One lookup is the one-lookup case of the several-lookup pass: the same additions in
    // the same order, so the same bits.
    sum_lookups_with(&[(grad, slots)], d, k, out, min_lanes);
}

/// The `[k, d]` row gradient of several lookups of one table at once, written to `out`
/// (cleared, then `k · d` values): lookup `l` is its row-major `[slots.len(), d]` gradient
/// and its slots into the `k` rows (`-1`: padding, adds nothing). Row `j` of `out` is
///
/// `0.0 + S₁(j) + S₂(j) + …`, in the order of the lookups, where `Sₗ(j)` is lookup `l`'s
/// gradient rows that land on `j`, added in lookup order from `0.0` (lookups with none
/// are skipped),
///
/// which is bit for bit [`sum_per_row`] of each lookup (over its own rows) followed by
/// [`coalesce`](crate::lookup::coalesce) of the blocks, in one pass: each lookup's part of an
/// output row is summed in a `d`-lane scratch row and added to the output row, which is
/// zeroed and written while it is in the cache, so no batch-sized block is zeroed
/// beforehand, read back or merged.
/// With one lookup it is [`sum_per_row`] itself (a sum from `0.0` is never `-0.0`, so
/// adding it to `0.0` keeps its bits).
///
/// Rows are split across rayon's current pool like the other kernels' (feature
/// `parallel`), each piece owning a range of output rows.
///
/// # Panics
///
/// When a gradient is not `slots.len() · d` long, or a slot is `>= k` or below `-1`.
///
/// # Example
///
/// ```
/// use sparse_adam_core::sum_lookups_per_row;
///
/// // Two lookups of width 1 into the rows [r0, r1]: the first hits r1 twice, the second
/// // r0 and r1 once.
/// let first: (&[f32], &[i64]) = (&[1.0, 2.0], &[1, 1]);
/// let second: (&[f32], &[i64]) = (&[10.0, 20.0], &[0, 1]);
/// let mut out = Vec::new();
/// sum_lookups_per_row(&[first, second], 1, 2, &mut out);
/// assert_eq!(out, [10.0, 23.0]);
/// ```
pub fn sum_lookups_per_row(lookups: &[(&[f32], &[i64])], d: usize, k: usize, out: &mut Vec<f32>) {
    sum_lookups_with(lookups, d, k, out, PARALLEL_LANES);
}

fn sum_lookups_with(
    lookups: &[(&[f32], &[i64])],
    d: usize,
    k: usize,
    out: &mut Vec<f32>,
    min_lanes: usize,
) {
    for (grad, slots) in lookups {
        assert_eq!(
            grad.len(),
            slots.len() * d,
            "a lookup's gradient must be slots.len() · d long"
        );
    }
    out.clear();
    if d == 0 {
        return;
    }
    let lists: Vec<RowLists> = lookups
        .iter()
        .map(|(_, slots)| RowLists::new(slots, k, d))
        .collect();
    let len = k * d;
    out.reserve(len);
    let fill = |first: usize, chunk: &mut [core::mem::MaybeUninit<f32>]| {
        sum_rows_widest(lookups, &lists, d, first, chunk)
    };
    let total: usize = lookups.iter().map(|(_, slots)| slots.len()).sum();
    let pieces = pieces(total, d, min_lanes).min(k.max(1));
    let spare = &mut out.spare_capacity_mut()[..len];
    if pieces == 1 {
        fill(0, spare);
    } else {
        #[cfg(feature = "parallel")]
        {
            use rayon::prelude::*;
            let per_piece = k.div_ceil(pieces);
            spare
                .par_chunks_mut(per_piece * d)
                .enumerate()
                .for_each(|(piece, chunk)| fill(piece * per_piece, chunk));
        }
        // Without the feature every call is one piece; reaching here would leave the lanes
        // unwritten, so stop before `set_len`.
        #[cfg(not(feature = "parallel"))]
        unreachable!("{pieces} pieces without the `parallel` feature");
    }
    // SAFETY: the pieces cover the first `len` spare lanes exactly, and `fill` zeroed (then
    // added to) every lane of its piece.
    unsafe { out.set_len(len) };
}

widest! {
    /// [`sum_rows`] in the widest compilation the CPU runs.
    fn sum_rows_widest<>(
        lookups: &[(&[f32], &[i64])],
        lists: &[RowLists],
        d: usize,
        first: usize,
        chunk: &mut [core::mem::MaybeUninit<f32>],
    ) => sum_rows
}

/// Writes rows `first..` of [`sum_lookups_per_row`]'s output into `chunk` (whole rows):
/// each row zeroed, then each lookup's positions on it summed from `0.0` in a scratch row,
/// in lookup order, and added. Compiled for AVX2 too ([`sum_rows_widest`]; the same bits:
/// additions only, in the same order).
#[inline(always)]
fn sum_rows(
    lookups: &[(&[f32], &[i64])],
    lists: &[RowLists],
    d: usize,
    first: usize,
    chunk: &mut [core::mem::MaybeUninit<f32>],
) {
    const AHEAD: usize = 8;
    let mut sum = vec![0.0f32; d];
    for (j, out) in chunk.chunks_exact_mut(d).enumerate() {
        let out = zeroed(out);
        for ((grad, _), list) in lookups.iter().zip(lists) {
            let (start, positions) = list.of(first + j);
            if positions.is_empty() {
                continue;
            }
            sum.fill(0.0);
            for (n, &position) in positions.iter().enumerate() {
                // The rows' lookups are scattered over the batch, and the lists of the next
                // rows follow this one: fetch a few positions ahead along them, so that the
                // loads overlap instead of queueing.
                if let Some(&ahead) = list.positions.get(start + n + AHEAD) {
                    prefetch_row(grad, ahead as i64, d);
                }
                for (s, &g) in sum.iter_mut().zip(&grad[position * d..][..d]) {
                    *s += g;
                }
            }
            for (o, &s) in out.iter_mut().zip(&sum) {
                *o += s;
            }
        }
    }
}

/// The positions of a lookup that land on each of `k` rows, in lookup order: a counting
/// sort of its slots.
struct RowLists {
    /// Row `j`'s positions are `positions[starts[j]..starts[j + 1]]`.
    starts: Vec<usize>,
    positions: Vec<usize>,
}

impl RowLists {
    /// # Panics
    ///
    /// When a slot is `>= k` or below `-1` (the message names the `[k, d]` block).
    fn new(slots: &[i64], k: usize, d: usize) -> Self {
        let mut starts = vec![0usize; k + 1];
        for &slot in slots {
            if slot < -1 || slot >= k as i64 {
                panic!("slot {slot} is not -1 (padding) or a row of the [{k}, {d}] block");
            }
            if slot >= 0 {
                starts[slot as usize + 1] += 1;
            }
        }
        for j in 0..k {
            starts[j + 1] += starts[j];
        }
        let mut next = starts.clone();
        let mut positions = vec![0usize; starts[k]];
        for (position, &slot) in slots.iter().enumerate() {
            if slot >= 0 {
                let at = &mut next[slot as usize];
                positions[*at] = position;
                *at += 1;
            }
        }
        Self { starts, positions }
    }

    /// Where row `j`'s positions start in `positions`, and those positions, in lookup order.
    fn of(&self, j: usize) -> (usize, &[usize]) {
        let start = self.starts[j];
        (start, &self.positions[start..self.starts[j + 1]])
    }
}

/// Writes `0.0` to every lane of `lanes` and returns them, initialized.
fn zeroed(lanes: &mut [core::mem::MaybeUninit<f32>]) -> &mut [f32] {
    for lane in lanes.iter_mut() {
        lane.write(0.0);
    }
    // SAFETY: every lane was just written, and `MaybeUninit<f32>` has `f32`'s layout.
    unsafe { &mut *(lanes as *mut [core::mem::MaybeUninit<f32>] as *mut [f32]) }
}

/// Updates rows `rows` of a row-major `[n, d]` table in place: parameter `p`, first moment
/// `m` (`exp_avg`) and second moment `v` (`exp_avg_sq`), with the touched rows' gradients
/// `g`, row-major `[rows.len(), d]` in the order of `rows`. Each lane takes
/// [`sparse_adam_delta`] once: `m += Δm`, `v += Δv`, `p ← p·(1 − lr·λ) + Δp`
/// ([`decayed`]; the factor is 1 without weight decay), in that order. Other rows are not
/// read or written.
///
/// The moments may be stored in a compact type ([`MomentElement`]: `f32`, `bf16`, `f16`):
/// each lane's moments are widened to `f32`, take the same formula, and are rounded once
/// when stored; the parameter is always `f32`.
///
/// `rows` must be sorted, unique and in range (a [`LookupPlan`](crate::lookup::LookupPlan)'s
/// or [`coalesce`](crate::lookup::coalesce)'s rows are); callers check. An empty `rows` is
/// an empty gradient: nothing changes here, but the caller still counts the step.
///
/// # Panics
///
/// When `p`, `m` and `v` differ in length, `g` is not `rows.len() · d` long, or a row is
/// out of range.
///
/// # Example
///
/// ```
/// use sparse_adam_core::{update_rows, Hyperparameters, StepScalars};
///
/// // A [3, 2] table at its first step; only row 1 is touched.
/// let (mut p, mut m, mut v) = (vec![1.0f32; 6], vec![0.0f32; 6], vec![0.0f32; 6]);
/// let scalars = StepScalars::new(&Hyperparameters::default(), 0.1, 1);
/// update_rows(&mut p, &mut m, &mut v, &[2.0, -2.0], &[1], 2, &scalars);
/// // The first step moves a lane by about lr, against its gradient.
/// assert!((p[2] - 0.9).abs() < 1e-6 && (p[3] - 1.1).abs() < 1e-6);
/// assert_eq!(&m[2..4], [0.2, -0.2]);
/// // Untouched rows: untouched.
/// assert_eq!([p[0], p[1], p[4], p[5]], [1.0; 4]);
/// assert_eq!([m[0], m[1], m[4], m[5]], [0.0; 4]);
/// ```
pub fn update_rows<M: MomentElement>(
    p: &mut [f32],
    m: &mut [M],
    v: &mut [M],
    g: &[f32],
    rows: &[i64],
    d: usize,
    s: &StepScalars,
) {
    update_rows_with(p, m, v, g, rows, d, s, PARALLEL_LANES);
}

#[allow(clippy::too_many_arguments)]
fn update_rows_with<M: MomentElement>(
    p: &mut [f32],
    m: &mut [M],
    v: &mut [M],
    g: &[f32],
    rows: &[i64],
    d: usize,
    s: &StepScalars,
    min_lanes: usize,
) {
    assert!(
        p.len() == m.len() && p.len() == v.len(),
        "the parameter and its moments must have one length"
    );
    assert_eq!(
        g.len(),
        rows.len() * d,
        "the row gradient must be rows.len() · d long"
    );
    if d == 0 {
        return;
    }
    let pieces = pieces(rows.len(), d, min_lanes);
    // Pieces own disjoint ranges of the table only when the rows are sorted and unique
    // (as documented); otherwise the one-thread loop gives the documented result.
    if pieces == 1 || !rows.windows(2).all(|w| w[0] < w[1]) {
        update_range(p, m, v, g, rows, d, s, 0);
        return;
    }
    #[cfg(feature = "parallel")]
    split_update(p, m, v, g, rows, d, s, 0, rows.len().div_ceil(pieces));
}

/// Halves `rows` at a row boundary until pieces hold at most `per_piece` rows, and updates
/// the halves in parallel; `p`, `m` and `v` start at table row `first`.
#[cfg(feature = "parallel")]
#[allow(clippy::too_many_arguments)]
fn split_update<M: MomentElement>(
    p: &mut [f32],
    m: &mut [M],
    v: &mut [M],
    g: &[f32],
    rows: &[i64],
    d: usize,
    s: &StepScalars,
    first: i64,
    per_piece: usize,
) {
    if rows.len() <= per_piece {
        return update_range(p, m, v, g, rows, d, s, first);
    }
    let mid = rows.len() / 2;
    // Rows are sorted: rows[..mid] lie before table row rows[mid], rows[mid..] from it on.
    let cut = row_lanes(rows[mid] - first, d).start.min(p.len());
    let (p0, p1) = p.split_at_mut(cut);
    let (m0, m1) = m.split_at_mut(cut);
    let (v0, v1) = v.split_at_mut(cut);
    let (g0, g1) = g.split_at(mid * d);
    let (r0, r1) = rows.split_at(mid);
    let second = first + (cut / d) as i64;
    rayon::join(
        || split_update(p0, m0, v0, g0, r0, d, s, first, per_piece),
        || split_update(p1, m1, v1, g1, r1, d, s, second, per_piece),
    );
}

widest! {
    /// The row update on the calling thread ([`update_range_lanes`]); `p`, `m` and `v` start
    /// at table row `first`.
    fn update_range<M: MomentElement>(
        p: &mut [f32],
        m: &mut [M],
        v: &mut [M],
        g: &[f32],
        rows: &[i64],
        d: usize,
        s: &StepScalars,
        first: i64,
    ) => update_range_lanes
}

/// [`update_range`]'s loop, inlined into each of its compilations ([`widest!`]).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn update_range_lanes<M: MomentElement>(
    p: &mut [f32],
    m: &mut [M],
    v: &mut [M],
    g: &[f32],
    rows: &[i64],
    d: usize,
    s: &StepScalars,
    first: i64,
) {
    // Touched rows are scattered over tables far larger than the caches: fetch the rows a
    // few iterations ahead, so that their loads overlap instead of queueing.
    const AHEAD: usize = 4;
    for (i, (grad_row, &row)) in g.chunks_exact(d).zip(rows).enumerate() {
        if let Some(&ahead) = rows.get(i + AHEAD) {
            prefetch_row(p, ahead - first, d);
            prefetch_row(m, ahead - first, d);
            prefetch_row(v, ahead - first, d);
        }
        let lanes = row_lanes(row - first, d);
        let (p, m, v) = (&mut p[lanes.clone()], &mut m[lanes.clone()], &mut v[lanes]);
        update_row(p, m, v, grad_row, s);
    }
}

/// The update of one row's lanes, in place: every kernel's innermost loop.
#[inline(always)]
fn update_row<M: MomentElement>(
    p: &mut [f32],
    m: &mut [M],
    v: &mut [M],
    g: &[f32],
    s: &StepScalars,
) {
    for (((p, m), v), &g) in p.iter_mut().zip(m.iter_mut()).zip(v.iter_mut()).zip(g) {
        // Compact moments are widened for the formula and rounded once after it (for `f32`
        // moments both are the identity).
        let (m_old, v_old) = (m.load(), v.load());
        let delta = sparse_adam_delta(g, m_old, v_old, s);
        *m = M::store(m_old + delta.exp_avg);
        *v = M::store(v_old + delta.exp_avg_sq);
        // `decay` is exactly 1 without weight decay: the product keeps the bits, and costs
        // less than a branch per lane.
        *p = decayed(*p, s) + delta.param;
    }
}

/// The dense path's update, in one pass: every row of the row-major `[n, d]` parameter
/// `p` and moments `m`, `v` whose row of the table-sized gradient `g` has a non-zero lane
/// takes [`update_rows`]' row update; every other row keeps its bits.
///
/// This is PyTorch's documented model of a dense gradient reaching SparseAdam
/// (`grad.to_sparse(sparse_dim=1)`): a row is touched when any of its lanes is non-zero,
/// and a NaN lane is non-zero, so a NaN reaches the row as it would through PyTorch (the
/// optimizer's non-finite policy decides before this runs); `-0.0` is zero. The result is
/// bit for bit that of the Burn crates' composed dense path (a masked update of whole
/// tensors), reading each of the four tables once and writing three, where the composed
/// path makes a dozen table-sized temporaries. A parameter of rank 1 is `d = 1`; one of
/// higher rank is its first dimension by the product of the others.
///
/// Rows are split across rayon's current pool like the other kernels' (feature
/// `parallel`): each piece owns a contiguous range of rows of all four tables.
///
/// # Panics
///
/// When the four slices differ in length, or `d == 0` with a non-empty table, or the length
/// is not a multiple of `d`.
///
/// # Example
///
/// ```
/// use sparse_adam_core::{update_dense, update_rows, Hyperparameters, StepScalars};
///
/// // A [3, 2] table; the dense gradient has a non-zero lane in rows 0 and 2 only.
/// let (mut p, mut m, mut v) = (vec![1.0f32; 6], vec![0.0f32; 6], vec![0.0f32; 6]);
/// let grad = [0.0, 0.5, 0.0, 0.0, -2.0, 1.0];
/// let scalars = StepScalars::new(&Hyperparameters::default(), 0.1, 1);
/// update_dense(&mut p, &mut m, &mut v, &grad, 2, &scalars);
/// assert_eq!(&p[2..4], [1.0, 1.0]); // row 1: untouched
///
/// // The same as the row path given rows 0 and 2 and their gradients.
/// let (mut p2, mut m2, mut v2) = (vec![1.0f32; 6], vec![0.0f32; 6], vec![0.0f32; 6]);
/// let rows_grad = [0.0, 0.5, -2.0, 1.0];
/// update_rows(&mut p2, &mut m2, &mut v2, &rows_grad, &[0, 2], 2, &scalars);
/// assert_eq!((p, m, v), (p2, m2, v2));
/// ```
pub fn update_dense<M: MomentElement>(
    p: &mut [f32],
    m: &mut [M],
    v: &mut [M],
    g: &[f32],
    d: usize,
    s: &StepScalars,
) {
    update_dense_with(p, m, v, g, d, s, PARALLEL_LANES);
}

fn update_dense_with<M: MomentElement>(
    p: &mut [f32],
    m: &mut [M],
    v: &mut [M],
    g: &[f32],
    d: usize,
    s: &StepScalars,
    min_lanes: usize,
) {
    assert!(
        p.len() == m.len() && p.len() == v.len() && p.len() == g.len(),
        "the parameter, its moments and its dense gradient must have one length \
         ({}, {}, {}, {})",
        p.len(),
        m.len(),
        v.len(),
        g.len()
    );
    if p.is_empty() {
        return;
    }
    assert!(
        d > 0 && p.len().is_multiple_of(d),
        "a table of {} values is not rows of width {d}",
        p.len()
    );
    let n = p.len() / d;
    let pieces = pieces(n, d, min_lanes);
    if pieces == 1 {
        return update_dense_range(p, m, v, g, d, s);
    }
    #[cfg(feature = "parallel")]
    {
        use rayon::prelude::*;
        let chunk = n.div_ceil(pieces) * d;
        p.par_chunks_mut(chunk)
            .zip(m.par_chunks_mut(chunk))
            .zip(v.par_chunks_mut(chunk))
            .zip(g.par_chunks(chunk))
            .for_each(|(((p, m), v), g)| update_dense_range(p, m, v, g, d, s));
    }
}

/// [`update_dense`] on the calling thread.
fn update_dense_range<M: MomentElement>(
    p: &mut [f32],
    m: &mut [M],
    v: &mut [M],
    g: &[f32],
    d: usize,
    s: &StepScalars,
) {
    for (((p, m), v), g) in p
        .chunks_exact_mut(d)
        .zip(m.chunks_exact_mut(d))
        .zip(v.chunks_exact_mut(d))
        .zip(g.chunks_exact(d))
    {
        // `!=` is true for NaN: a NaN lane touches its row.
        if g.iter().any(|&x| x != 0.0) {
            update_row(p, m, v, g, s);
        }
    }
}

/// The lanes of row `row` in a row-major table of width `d`.
///
/// # Panics
///
/// When the row is negative or its lanes overflow `usize`; slicing with the result panics
/// when the row is past the table's end.
#[inline(always)]
fn row_lanes(row: i64, d: usize) -> Range<usize> {
    usize::try_from(row)
        .ok()
        .and_then(|row| row.checked_mul(d))
        .and_then(|start| Some(start..start.checked_add(d)?))
        .unwrap_or_else(|| panic!("row {row} is not a row of the table"))
}

/// Asks the CPU to bring row `row` of `table` into its caches, if it is a row of `table`.
#[inline(always)]
fn prefetch_row<T>(table: &[T], row: i64, d: usize) {
    let lanes = usize::try_from(row)
        .ok()
        .and_then(|row| row.checked_mul(d))
        .and_then(|start| table.get(start..start.checked_add(d)?));
    if let Some(lanes) = lanes {
        prefetch(lanes);
    }
}

/// Asks the CPU to bring `lanes` into its caches; no effect on other architectures.
#[inline(always)]
fn prefetch<T>(lanes: &[T]) {
    #[cfg(target_arch = "x86_64")]
    for line in lanes.chunks((64 / core::mem::size_of::<T>().max(1)).max(1)) {
        // SAFETY: a prefetch is a hint: it reads nothing and cannot fault, and the address
        // is inside a live slice. SSE (`_mm_prefetch`) is part of the x86_64 baseline.
        unsafe {
            core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(
                line.as_ptr().cast(),
            )
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = lanes;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hyper::Hyperparameters;

    /// The distance between two `f32`s in units in the last place (0: the same value).
    fn ulps(a: f32, b: f32) -> u32 {
        if a == b {
            return 0;
        }
        // Map the bits onto a line on which adjacent floats are adjacent integers.
        let key = |x: f32| {
            let bits = x.to_bits() as i32 as i64;
            if bits < 0 {
                i64::from(i32::MIN) - bits
            } else {
                bits
            }
        };
        (key(a) - key(b)).unsigned_abs() as u32
    }

    fn assert_within_ulps(ours: &[f32], torch: &[f32], max: u32, what: &str) {
        assert_eq!(ours.len(), torch.len(), "{what}");
        for (lane, (&o, &t)) in ours.iter().zip(torch).enumerate() {
            assert!(
                ulps(o, t) <= max,
                "{what}, lane {lane}: ours {o:e}, PyTorch {t:e}, {} ulps apart",
                ulps(o, t)
            );
        }
    }

    fn bits(values: &[f32]) -> Vec<u32> {
        values.iter().map(|x| x.to_bits()).collect()
    }

    /// A `[n, d]` table with its moments and step count, stepped as the Burn crates step a
    /// `SparseEmbedding`: plan the lookup, sum its gradient per row, update the rows.
    struct Table {
        d: usize,
        p: Vec<f32>,
        m: Vec<f32>,
        v: Vec<f32>,
        step: usize,
    }

    impl Table {
        fn new(init: &[f32], d: usize) -> Self {
            Self {
                d,
                p: init.to_vec(),
                m: vec![0.0; init.len()],
                v: vec![0.0; init.len()],
                step: 0,
            }
        }

        /// One optimizer step whose gradient is one lookup of `indices` with output
        /// gradient `upstream` (`[indices.len(), d]`).
        fn step(
            &mut self,
            hyper: &Hyperparameters,
            lr: f64,
            indices: &[i64],
            upstream: &[f32],
            padding_idx: Option<usize>,
        ) {
            crate::lookup::check_indices(indices, self.p.len() / self.d).unwrap();
            let plan = crate::lookup::LookupPlan::new(indices, padding_idx);
            let mut grad = Vec::new();
            sum_per_row(upstream, self.d, &plan.slots, plan.rows.len(), &mut grad);
            // An empty gradient is a gradient: the step count advances all the same.
            self.step += 1;
            let s = StepScalars::try_new(hyper, lr, self.step).unwrap();
            update_rows(
                &mut self.p,
                &mut self.m,
                &mut self.v,
                &grad,
                &plan.rows,
                self.d,
                &s,
            );
        }

        fn row<'a>(&self, values: &'a [f32], row: usize) -> &'a [f32] {
            &values[row * self.d..(row + 1) * self.d]
        }
    }

    /// Fixture `single_step.json`: one lookup of a `[10, 4]` table at lr 0.01 with
    /// PyTorch's defaults; row 7 is looked up twice.
    ///
    /// The moments are PyTorch's bit for bit. The parameter is within 1 ulp: the one lane
    /// off (row 0, lane 0, by 1 ulp) is a rounding tie `p + Δp` that PyTorch's recorded
    /// value only explains with a square root 1 ulp below the correctly rounded
    /// `sqrt(0.0033456306)` (0.057841424 instead of 0.057841428): the recording's `sqrt`
    /// is not correctly rounded there, while `f32::sqrt` is.
    #[test]
    fn single_step_matches_pytorch() {
        type Lanes = [f32; 4];
        // `tables[0].init`, [10, 4].
        #[rustfmt::skip]
        let init = [
            0.21518245, -0.52419364, -1.8033639, -1.3083209,
            0.45325458, 1.1421611, 0.2486107, -1.7754008,
            1.1173496, 0.2981353, 0.10988554, -0.6463385,
            0.4285423, 1.4760778, -1.7868679, 1.6103176,
            0.9837094, 0.87928617, -1.4503865, -1.1802155,
            0.40997243, 0.40845066, 0.2578654, 1.0950214,
            0.6614453, 1.1899205, 0.8165339, -0.9135236,
            1.3851457, -0.81384623, -0.92757654, 1.1119633,
            1.3352057, 0.6042736, -0.10344208, -0.15121692,
            -2.102083, -0.62002194, -1.478231, -1.1334175,
        ];
        // `steps[0].lookups[0]`.
        let indices = [1, 9, 0, 7, 3, 7];
        #[rustfmt::skip]
        let upstream = [
            0.14210454, -0.52428246, 1.041984, 0.14281718,
            0.26151413, 0.16761422, 0.5486094, -0.1879562,
            -1.8291065, -0.55144966, -0.22554062, 0.5217604,
            -2.0597744, 0.13833785, 0.49617487, -0.6052795,
            0.9240058, 0.22552748, 0.7127706, -0.7438219,
            0.2800776, 0.37349072, 2.995054, -0.25694326,
        ];
        let mut table = Table::new(&init, 4);
        table.step(&Hyperparameters::default(), 0.01, &indices, &upstream, None);

        // Rows 0, 7 and 9 of `expected[0].tables[0]`, `final_state[0].exp_avg` and
        // `final_state[0].exp_avg_sq`.
        #[rustfmt::skip]
        let expected: [(usize, Lanes, Lanes, Lanes); 3] = [
            (
                0,
                [0.22518246, -0.51419365, -1.7933639, -1.3183209],
                [-0.18291065, -0.055144966, -0.022554062, 0.05217604],
                [0.0033456306, 0.00030409676, 5.0868573e-5, 0.00027223394],
            ),
            (
                7,
                [1.3951457, -0.8238462, -0.93757653, 1.1219633],
                [-0.17796968, 0.051182855, 0.34912288, -0.08622228],
                [0.003167321, 0.00026196847, 0.01218868, 0.0007434281],
            ),
            (
                9,
                [-2.112083, -0.6300219, -1.488231, -1.1234175],
                [0.026151413, 0.016761422, 0.05486094, -0.01879562],
                [6.838964e-5, 2.8094528e-5, 0.00030097226, 3.532753e-5],
            ),
        ];
        for (row, param, exp_avg, exp_avg_sq) in expected {
            let what = format!("row {row}");
            assert_within_ulps(table.row(&table.p, row), &param, 1, &what);
            assert_eq!(table.row(&table.m, row), exp_avg, "{what}");
            assert_eq!(table.row(&table.v, row), exp_avg_sq, "{what}");
        }
        // Rows not looked up: untouched, to the bit, and no moments.
        for row in [2, 4, 5, 6, 8] {
            assert_eq!(bits(table.row(&table.p, row)), bits(table.row(&init, row)));
            assert_eq!(table.row(&table.m, row), [0.0; 4]);
            assert_eq!(table.row(&table.v, row), [0.0; 4]);
        }
    }

    /// Fixture `maximize.json` (`maximize = true`, lr 0.01, PyTorch's defaults otherwise),
    /// ten steps of a `[10, 4]` table, replayed on its rows 7, 9 and 6 (here rows 0, 1 and
    /// 2): each step keeps the lookups of those rows (`steps[i].lookups[0]`, positions of
    /// rows 7, 9, 6 and their `upstream` rows). Rows are independent but for the table's
    /// step count, which advances at every step, including the steps that touch none of
    /// the three rows (2, 6, 7); rows 7 and 9 take duplicates (row 9 three times at step 1),
    /// row 6 is touched only at step 10.
    ///
    /// Measured: the moments are PyTorch's bit for bit; the parameter within 1 ulp.
    #[test]
    fn maximize_over_ten_steps_matches_pytorch() {
        let hyper = Hyperparameters {
            maximize: true,
            ..Default::default()
        };
        // Rows 7, 9, 6 of `tables[0].init`.
        #[rustfmt::skip]
        let init = [
            -0.42669725, 1.0951315, 1.2428589, 0.29533127,
            -1.6770185, 1.2439219, 0.81274366, -0.8698903,
            -2.8350596, 0.34152073, -0.58582956, 0.6763635,
        ];
        #[rustfmt::skip]
        let steps: [(&[i64], &[f32]); 10] = [
            (&[1, 1, 1], &[
                -0.85649216, 0.6823323, 0.3439543, -1.3045336,
                -0.6878789, -0.22811978, 0.17702916, -0.88205534,
                -0.6924058, -0.6797871, 0.71611196, 1.3782089,
            ]),
            (&[], &[]),
            (&[0, 0, 1], &[
                0.42778602, 0.12090031, 1.2005724, 1.901145,
                -1.918855, 0.1453367, -0.58723176, 0.00923346,
                1.7989717, 0.3467619, -0.3034457, 0.030459492,
            ]),
            (&[1], &[-0.7600798, 0.82867706, 1.6319569, 0.34278643]),
            (&[0, 1, 0], &[
                -0.4351564, -0.80843616, 1.0090593, 0.9327364,
                -0.3824752, 0.24251117, -0.8415076, 0.48777133,
                -0.91572833, -0.58738977, 0.10614078, -0.1519533,
            ]),
            (&[], &[]),
            (&[], &[]),
            (&[0, 1, 1, 0, 1], &[
                -0.33209166, 0.771052, 1.1110157, 0.8404559,
                -1.7171714, -1.3568053, 1.0658587, -0.22041737,
                -2.2290483, 0.19284011, -0.20016165, 0.689853,
                -1.5417902, -0.26675302, -0.696617, -0.09429034,
                0.66293174, 0.8707502, -1.173404, 0.2508456,
            ]),
            (&[0, 0, 1], &[
                -1.0132625, 0.22240038, -0.39825985, -0.7227751,
                -0.8545402, 1.158277, 0.33346304, 0.44144818,
                -0.7260708, -0.3890583, -0.35756305, -0.43104118,
            ]),
            (&[2], &[-0.44710326, -0.16200978, -2.1149714, -0.92133504]),
        ];
        // Rows 7, 9, 6 of `expected[3].tables[0]` (after step 4) and of
        // `expected[9].tables[0]` (after step 10).
        #[rustfmt::skip]
        let after_4 = [
            -0.43308538, 1.1015196, 1.2492471, 0.3017194,
            -1.6893613, 1.2421539, 0.83343726, -0.8872817,
            -2.8350596, 0.34152073, -0.58582956, 0.6763635,
        ];
        #[rustfmt::skip]
        let after_10 = [
            -0.45657894, 1.0974649, 1.2695454, 0.32044736,
            -1.7016283, 1.2530284, 0.8393045, -0.8807819,
            -2.8399038, 0.33667648, -0.5906738, 0.6715193,
        ];
        // Rows 7, 9, 6 of `final_state[0].exp_avg` and `final_state[0].exp_avg_sq`.
        #[rustfmt::skip]
        let exp_avg = [
            0.5735503, -0.089801446, -0.16585995, -0.24153224,
            0.46854222, -0.02418987, -0.040497784, -0.04048422,
            0.044710327, 0.016200978, 0.21149714, 0.09213351,
        ];
        #[rustfmt::skip]
        let exp_avg_sq = [
            0.011034475, 0.0041754385, 0.0017919975, 0.004882363,
            0.020219943, 0.0011509908, 0.005198941, 0.0017098202,
            0.00019990133, 2.624717e-5, 0.004473104, 0.00084885827,
        ];

        let mut table = Table::new(&init, 4);
        for (i, (indices, upstream)) in steps.into_iter().enumerate() {
            table.step(&hyper, 0.01, indices, upstream, None);
            if i + 1 == 4 {
                assert_within_ulps(&table.p, &after_4, 1, "after step 4");
                // Row 6 was not touched yet: to the bit.
                assert_eq!(bits(table.row(&table.p, 2)), bits(table.row(&init, 2)));
            }
        }
        assert_eq!(table.step, 10);
        assert_within_ulps(&table.p, &after_10, 1, "after step 10");
        assert_eq!(table.m, exp_avg);
        assert_eq!(table.v, exp_avg_sq);
    }

    /// Fixture `more_pad_lookup_empty.json`: a `[5, 2]` table with `padding_idx = 0`, lr
    /// 0.1, PyTorch's defaults, ten steps; steps 2, 4 and 10 look up only the padding row
    /// and step 5 looks up nothing. Those steps change nothing, but they count: the step
    /// count is 10 and the bias corrections of the other steps are those of their rank.
    ///
    /// Measured: the moments are PyTorch's bit for bit, the step count too; the parameter
    /// within 4 ulps (1 ulp of `Δp` per step, as in `single_step_matches_pytorch`,
    /// accumulated, on values close to 0 such as 0.011276664).
    #[test]
    fn padding_and_empty_lookups_match_pytorch() {
        // `tables[0].init`: row 0, the padding row, is zero.
        let init = [
            0.0,
            0.0,
            -0.33990306,
            0.023485199,
            -1.6717958,
            0.25437957,
            0.1973206,
            -1.2028683,
            -0.20401292,
            0.21336287,
        ];
        // `steps[i].lookups[0]`, i = 0..10, upstream rows of padding lookups included.
        #[rustfmt::skip]
        let steps: [(&[i64], &[f32]); 10] = [
            (&[0, 0, 0, 0, 1, 3], &[
                -0.6138332, 0.027827222, -1.4360975, 1.1466063, -1.008451, 0.5289148,
                -1.1732914, -1.2372538, 0.2011627, 0.08518272, -0.04303341, -0.86309254,
            ]),
            (&[0, 0, 0, 0, 0, 0], &[
                -0.43952155, -0.39601573, 0.20347923, 0.91888773, -0.03469487, 0.35432288,
                -0.5432824, 0.92077893, 0.16675906, -0.50913906, 0.6883955, -0.5211928,
            ]),
            (&[0, 0, 3, 0, 0, 1], &[
                1.2934111, 0.43304834, 1.1949681, -0.87321526, -0.59110004, -0.55435467,
                -1.5629417, 0.40558887, -0.9698235, 0.9267094, -0.9195954, -1.0044806,
            ]),
            (&[0, 0, 0, 0, 0, 0], &[
                -0.002850773, 0.65359575, 0.5229216, 0.3941761, 1.3073285, 0.7704395,
                0.86069584, 0.4922121, -1.0764083, 0.42319337, -0.793689, 0.3798443,
            ]),
            (&[], &[]),
            (&[0, 0, 0, 4, 2, 0], &[
                -1.4623133, -0.56264704, 0.010244145, -0.66425586, -0.15317824, 1.7124118,
                3.6127944, 1.5934849, 0.21860819, -1.1051162, 0.87118465, 0.5826718,
            ]),
            (&[0, 0, 4, 0, 0, 0], &[
                1.6608343, 0.7968309, 0.11526969, -0.095690705, -0.5554975, -0.104108505,
                2.066093, 0.47907606, -1.3615687, -0.6242663, -0.6772703, 1.2887458,
            ]),
            (&[2, 0, 2, 1, 0, 4], &[
                0.08953464, -0.058675583, -2.0805378, -0.298169, -0.19323272, -1.0078018,
                0.021871613, 0.23048924, 0.9995483, -0.4517288, 1.2371702, -1.1994766,
            ]),
            (&[0, 0, 0, 0, 0, 1], &[
                0.28114086, -0.9557838, 0.39845923, 2.0420384, 3.0846639, -0.62546986,
                0.6393586, 0.60302037, -2.6462672, 1.3890499, 1.2924509, 0.10829685,
            ]),
            (&[0, 0, 0, 0, 0, 0], &[
                0.43396252, -1.6833456, -1.043355, 1.1377997, -0.5684028, -0.8091903,
                -0.012910536, -1.5250827, 1.1439749, 0.9948998, 1.0935153, 0.73157936,
            ]),
        ];
        // `expected[i].tables[0]` after steps 3, 8 and 10.
        #[rustfmt::skip]
        let expected: [(usize, [f32; 10]); 3] = [
            (3, [
                0.0, 0.0, -0.38978228, -0.017719503, -1.6717958, 0.25437957, 0.3652073,
                -1.0199417, -0.20401292, 0.21336287,
            ]),
            (8, [
                0.0, 0.0, -0.35591966, 0.011276664, -1.7430806, 0.37314036, 0.3652073,
                -1.0199417, -0.34069946, 0.11901531,
            ]),
            (10, [
                0.0, 0.0, -0.37774798, 0.031781718, -1.7430806, 0.37314036, 0.3652073,
                -1.0199417, -0.34069946, 0.11901531,
            ]),
        ];
        // `final_state[0]`.
        #[rustfmt::skip]
        let exp_avg = [
            0.0, 0.0, 0.071391076, -0.043579385, 0.0093049295, -0.2061082, -0.06298301,
            -0.1331138, 0.3663586, -0.0002451539,
        ];
        #[rustfmt::skip]
        let exp_avg_sq = [
            0.0, 0.0, 0.0025552176, 0.001078999, 5.8495043e-5, 0.0023574345, 0.00035124933,
            0.001051493, 0.014865052, 0.0039836904,
        ];

        let hyper = Hyperparameters::default();
        let mut table = Table::new(&init, 2);
        for (i, (indices, upstream)) in steps.into_iter().enumerate() {
            let before = (bits(&table.p), bits(&table.m), bits(&table.v));
            table.step(&hyper, 0.1, indices, upstream, Some(0));
            if [2, 4, 5, 10].contains(&(i + 1)) {
                // Only padding, or nothing: an empty gradient changes nothing but the count.
                let after = (bits(&table.p), bits(&table.m), bits(&table.v));
                assert_eq!(after, before, "step {}", i + 1);
            }
            if let Some((_, torch)) = expected.iter().find(|(after, _)| *after == i + 1) {
                assert_within_ulps(&table.p, torch, 4, &format!("after step {}", i + 1));
            }
        }
        assert_eq!(table.step, 10);
        assert_eq!(table.m, exp_avg);
        assert_eq!(table.v, exp_avg_sq);
    }

    #[test]
    fn gather_rows_appends_rows_in_lookup_order() {
        // [6, 3], value 10·row + lane.
        let table: Vec<f32> = (0..18).map(|i| (10 * (i / 3) + i % 3) as f32).collect();
        // More indices than the prefetch looks ahead.
        let indices = [5, 0, 0, 3, 1, 5, 2, 4, 4, 0, 1, 3];
        let mut out = vec![-1.0];
        gather_rows(&table, 3, &indices, &mut out);
        let mut expected = vec![-1.0];
        for &i in &indices {
            expected.extend((0..3).map(|lane| (10 * i + lane) as f32));
        }
        assert_eq!(out, expected);
    }

    #[test]
    fn sum_per_row_adds_duplicates_in_lookup_order_and_skips_padding() {
        // Lookups of rows (slots) 1, 0, padding, 1, 1: width 2.
        let slots = [1, 0, -1, 1, 1];
        // Slot 1 lane 0 gets 1e8, then 1, then −1e8: in this order 0 (1e8 + 1 rounds to
        // 1e8), not 1. Slot 1 lane 1 adds 0.5 three times. Padding adds nothing.
        let grad = [1e8, 0.5, 3.0, 4.0, 1e9, 1e9, 1.0, 0.5, -1e8, 0.5];
        let mut out = vec![7.0; 9]; // overwritten, not added to
        sum_per_row(&grad, 2, &slots, 2, &mut out);
        assert_eq!(out, [3.0, 4.0, 0.0, 1.5]);
        // A row the lookup never reaches (k larger than the slots use) sums to zero.
        sum_per_row(&grad, 2, &slots, 3, &mut out);
        assert_eq!(out, [3.0, 4.0, 0.0, 1.5, 0.0, 0.0]);
    }

    #[test]
    fn kernels_accept_zero_width() {
        let mut out = vec![1.0];
        gather_rows(&[], 0, &[3, 0, 7], &mut out);
        assert_eq!(out, [1.0]);

        sum_per_row(&[], 0, &[0, -1, 1], 2, &mut out);
        assert!(out.is_empty());

        let (mut p, mut m, mut v) = (Vec::<f32>::new(), Vec::<f32>::new(), Vec::<f32>::new());
        let s = StepScalars::new(Hyperparameters::default(), 0.1, 1);
        update_rows(&mut p, &mut m, &mut v, &[], &[0, 2, 5], 0, &s);
        assert!(p.is_empty() && m.is_empty() && v.is_empty());
    }

    #[test]
    fn kernels_accept_empty_inputs() {
        let table = [1.0, 2.0, 3.0, 4.0];
        let mut out = vec![9.0];
        gather_rows(&table, 2, &[], &mut out);
        assert_eq!(out, [9.0]);

        sum_per_row(&[], 2, &[], 0, &mut out);
        assert!(out.is_empty());
        // Only padding: no touched row.
        sum_per_row(&[5.0, 6.0, 7.0, 8.0], 2, &[-1, -1], 0, &mut out);
        assert!(out.is_empty());

        let (mut p, mut m, mut v) = (table.to_vec(), vec![0.5; 4], vec![0.25; 4]);
        let s = StepScalars::new(Hyperparameters::default(), 0.1, 3);
        update_rows(&mut p, &mut m, &mut v, &[], &[], 2, &s);
        assert_eq!((p, m, v), (table.to_vec(), vec![0.5; 4], vec![0.25; 4]));
    }

    /// Rows outside `rows` are neither written nor rounded: every bit stays, NaN payloads
    /// and negative zeros included. Nine touched rows, more than the prefetch looks ahead.
    #[test]
    fn update_rows_leaves_untouched_rows_bit_identical() {
        let (n, d) = (40, 3);
        let odd = [f32::from_bits(0x7fc0_1234), -0.0, f32::MIN_POSITIVE / 4.0];
        let fill = |seed: u32| -> Vec<f32> {
            (0..n * d)
                .map(|i| match i % 7 {
                    0..=2 => odd[i % 3],
                    _ => {
                        ((i as u32).wrapping_mul(2_654_435_761) ^ seed) as f32 / u32::MAX as f32
                            - 0.5
                    }
                })
                .collect()
        };
        let (p0, m0) = (fill(1), fill(2));
        let v0: Vec<f32> = fill(3).iter().map(|x| x.abs()).collect();
        let (mut p, mut m, mut v) = (p0.clone(), m0.clone(), v0.clone());
        let rows = [1i64, 4, 5, 9, 17, 22, 30, 31, 39];
        let g: Vec<f32> = (0..rows.len() * d).map(|i| i as f32 / 10.0 - 1.0).collect();
        let s = StepScalars::new(Hyperparameters::default(), 0.05, 7);
        update_rows(&mut p, &mut m, &mut v, &g, &rows, d, &s);
        for row in (0..n).filter(|&row| !rows.contains(&(row as i64))) {
            let lanes = row * d..(row + 1) * d;
            for (new, old) in [(&p, &p0), (&m, &m0), (&v, &v0)] {
                assert_eq!(
                    bits(&new[lanes.clone()]),
                    bits(&old[lanes.clone()]),
                    "row {row}"
                );
            }
        }
        assert_ne!(bits(&p), bits(&p0), "the touched rows moved");
    }

    #[test]
    #[should_panic(expected = "slots.len() · d long")]
    fn sum_per_row_rejects_a_gradient_of_another_length() {
        sum_per_row(&[1.0, 2.0, 3.0], 2, &[0, 0], 1, &mut Vec::new());
    }

    #[test]
    #[should_panic(expected = "slot -2 is not -1 (padding) or a row of the [1, 2] block")]
    fn sum_per_row_rejects_slots_below_padding() {
        sum_per_row(&[1.0, 2.0], 2, &[-2], 1, &mut Vec::new());
    }

    #[test]
    #[should_panic(expected = "row -1 is not a row of the table")]
    fn update_rows_rejects_negative_rows() {
        let s = StepScalars::new(Hyperparameters::default(), 0.1, 1);
        let mut t = vec![0.0f32; 4];
        update_rows(
            &mut t.clone(),
            &mut t.clone(),
            &mut t,
            &[1.0, 1.0],
            &[-1],
            2,
            &s,
        );
    }

    #[test]
    #[should_panic(expected = "rows.len() · d long")]
    fn update_rows_rejects_a_gradient_of_another_length() {
        let s = StepScalars::new(Hyperparameters::default(), 0.1, 1);
        let mut t = vec![0.0f32; 4];
        update_rows(&mut t.clone(), &mut t.clone(), &mut t, &[1.0], &[1], 2, &s);
    }

    #[test]
    fn weight_decay_scales_touched_rows_before_their_delta_and_spares_the_others() {
        let hyper = Hyperparameters {
            weight_decay: 0.2,
            ..Default::default()
        };
        let (lr, d) = (0.05, 3);
        let decaying = StepScalars::new(hyper, lr, 2);
        let plain = StepScalars::new(Hyperparameters::default(), lr, 2);
        assert_eq!(decaying.decay, (1.0 - 0.05 * 0.2) as f32);
        assert_eq!(plain.decay, 1.0);
        let p0 = values(5, 4 * d);
        let m0 = values(6, 4 * d);
        let v0: Vec<f32> = values(7, 4 * d).iter().map(|x| x * x).collect();
        let g = values(8, 2 * d);
        let rows = [1, 3];
        let run = |s: &StepScalars| {
            let (mut p, mut m, mut v) = (p0.clone(), m0.clone(), v0.clone());
            update_rows(&mut p, &mut m, &mut v, &g, &rows, d, s);
            (p, m, v)
        };
        let (p, m, v) = run(&decaying);
        let (p_plain, m_plain, v_plain) = run(&plain);
        // The moments do not see the decay.
        assert_eq!(bits(&m), bits(&m_plain));
        assert_eq!(bits(&v), bits(&v_plain));
        for row in 0..4 {
            for lane in row * d..(row + 1) * d {
                if rows.contains(&(row as i64)) {
                    // AdamW's order: p·(1 − lr·λ), then the delta of the undecayed update.
                    let delta = p_plain[lane] - p0[lane];
                    let expected = p0[lane] * decaying.decay + delta;
                    assert!((p[lane] - expected).abs() <= 1e-6, "lane {lane}");
                    assert_ne!(p[lane].to_bits(), p_plain[lane].to_bits(), "lane {lane}");
                } else {
                    assert_eq!(
                        p[lane].to_bits(),
                        p0[lane].to_bits(),
                        "untouched lane {lane}"
                    );
                }
            }
        }
    }

    /// A deterministic stream of values in [-1, 1) (xorshift; no dependency).
    fn values(seed: u64, n: usize) -> Vec<f32> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    }

    /// Several lookups summed in one pass give the bits of each lookup summed by the plain
    /// loop and the blocks coalesced, on pools of 1, 2 and 3 threads, split finely or not;
    /// with duplicates within and across lookups, padding, an empty lookup; at a width below
    /// any vector's and at one that runs the vectorized body (AVX2 where the CPU has it).
    #[cfg(feature = "parallel")]
    #[test]
    fn sum_of_lookups_is_each_lookups_sum_coalesced_bit_for_bit_on_any_pool() {
        for d in [5, 67] {
            sum_of_lookups_at_width(d);
        }
    }

    #[cfg(feature = "parallel")]
    fn sum_of_lookups_at_width(d: usize) {
        // Three lookups of one table: duplicates within and across them, padding (row 3),
        // an empty lookup, and values whose sums show the order of the additions.
        let indices: [Vec<i64>; 4] = [
            (0..2_000).map(|i| (i * 7919 % 611) as i64).collect(),
            vec![],
            (0..900).map(|i| (i * 31 % 1_000) as i64).collect(),
            vec![3, 3, 17, 3],
        ];
        let grads: Vec<Vec<f32>> = indices
            .iter()
            .enumerate()
            .map(|(l, indices)| {
                values(10 + l as u64, indices.len() * d)
                    .iter()
                    .enumerate()
                    .map(|(i, x)| if i % 11 == 0 { x * 1e8 } else { *x })
                    .collect()
            })
            .collect();
        let plans: Vec<_> = indices
            .iter()
            .map(|i| crate::lookup::LookupPlan::new(i, Some(3)))
            .collect();
        // Expected: each lookup summed over its own rows by the plain loop (a zeroed block,
        // each position added in lookup order), then the blocks coalesced.
        let blocks: Vec<(Vec<i64>, Vec<f32>)> = plans
            .iter()
            .zip(&grads)
            .map(|(plan, grad)| {
                let mut block = vec![0.0f32; plan.rows.len() * d];
                for (g, &slot) in grad.chunks_exact(d).zip(&plan.slots) {
                    if slot >= 0 {
                        let row = &mut block[slot as usize * d..][..d];
                        row.iter_mut().zip(g).for_each(|(b, &g)| *b += g);
                    }
                }
                (plan.rows.clone(), block)
            })
            .collect();
        let parts: Vec<(&[i64], &[f32])> = blocks
            .iter()
            .map(|(r, v)| (r.as_slice(), v.as_slice()))
            .collect();
        let (rows, expected) = crate::lookup::coalesce(&parts, d);
        // One pass: slots into the union.
        let lists: Vec<&[i64]> = plans.iter().map(|p| p.rows.as_slice()).collect();
        let (union, places) = crate::lookup::union_of_sorted(&lists);
        assert_eq!(union, rows);
        let slots: Vec<Vec<i64>> = plans
            .iter()
            .zip(&places)
            .map(|(plan, places)| {
                plan.slots
                    .iter()
                    .map(|&s| if s < 0 { -1 } else { places[s as usize] })
                    .collect()
            })
            .collect();
        let lookups: Vec<(&[f32], &[i64])> = grads
            .iter()
            .zip(&slots)
            .map(|(g, s)| (g.as_slice(), s.as_slice()))
            .collect();
        for threads in [1, 2, 3] {
            for min_lanes in [1, d, PARALLEL_LANES] {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                let mut out = vec![7.0];
                pool.install(|| sum_lookups_with(&lookups, d, union.len(), &mut out, min_lanes));
                assert_eq!(
                    bits(&out),
                    bits(&expected),
                    "{threads} threads, {min_lanes} lanes"
                );
            }
        }
        // One lookup: the plain loop's bits (what `sum_per_row` gives).
        let plan = &plans[0];
        let mut one = Vec::new();
        sum_per_row(&grads[0], d, &plan.slots, plan.rows.len(), &mut one);
        assert_eq!(bits(&one), bits(&blocks[0].1));
        // Zero width and no rows.
        let mut out = vec![1.0];
        sum_lookups_per_row(&[(&[], &[0, -1])], 0, 1, &mut out);
        assert!(out.is_empty());
        sum_lookups_per_row(&[(&[], &[])], 4, 0, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    #[should_panic(expected = "slot 2 is not -1 (padding) or a row of the [2, 1] block")]
    fn sum_of_lookups_rejects_a_slot_out_of_range() {
        let mut out = Vec::new();
        sum_lookups_per_row(&[(&[1.0, 2.0], &[0, 2])], 1, 2, &mut out);
    }

    /// Every kernel, forced to split as finely as it can (one lane is enough work), gives
    /// the bits of the one-thread result on pools of 2, 3 and 4 threads, with duplicates,
    /// padding, empty and one-row inputs.
    #[cfg(feature = "parallel")]
    #[test]
    fn kernels_give_one_thread_bits_on_any_pool() {
        let (n, d) = (1_000, 7);
        let table = values(1, n * d);
        let (m0, v0) = (
            values(2, n * d),
            values(3, n * d).iter().map(|x| x * x).collect::<Vec<_>>(),
        );
        let scalars = StepScalars::new(Hyperparameters::default(), 0.01, 3);
        let lookups: Vec<Vec<i64>> = vec![
            vec![],
            vec![5],
            (0..3_000).map(|i| (i * 7919 % 997) as i64).collect(), // duplicates, unsorted
        ];
        let run = |threads: usize, min_lanes: usize, indices: &[i64]| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let mut gathered = vec![9.0]; // appended to, not overwritten
                gather_rows_with(&table, d, indices, &mut gathered, min_lanes);
                let plan = crate::lookup::LookupPlan::new(indices, Some(3));
                let upstream = values(4, indices.len() * d);
                let mut summed = Vec::new();
                sum_per_row_with(
                    &upstream,
                    d,
                    &plan.slots,
                    plan.rows.len(),
                    &mut summed,
                    min_lanes,
                );
                let (mut p, mut m, mut v) = (table.clone(), m0.clone(), v0.clone());
                update_rows_with(
                    &mut p, &mut m, &mut v, &summed, &plan.rows, d, &scalars, min_lanes,
                );
                [gathered, summed, p, m, v].map(|x| bits(&x))
            })
        };
        for indices in &lookups {
            let one = run(1, PARALLEL_LANES, indices);
            // The one-thread result is the plain loop's: spot-check the gather and a sum.
            assert_eq!(one[0].len(), 1 + indices.len() * d);
            for threads in [2, 3, 4] {
                for min_lanes in [1, d, 64 * d, PARALLEL_LANES] {
                    assert_eq!(
                        run(threads, min_lanes, indices),
                        one,
                        "{threads} threads, pieces of at least {min_lanes} lanes, {} lookups",
                        indices.len()
                    );
                }
            }
        }
        // The split really happens at these sizes (else the test compares a loop with itself).
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        assert_eq!(pool.install(|| pieces(3_000, d, 1)), 12);
        assert_eq!(pool.install(|| pieces(3_000, d, PARALLEL_LANES)), 1);
    }

    /// Compact moments: each lane runs the `f32` formula on its widened moments and stores
    /// them rounded once, step after step; the parameter takes the `f32` delta of those
    /// widened moments. Checked lane by lane against that definition over several steps, on
    /// the row and the dense path, split across threads, for `bf16` and `f16`; `f32` moments
    /// keep the `f32` kernel's bits.
    #[test]
    fn compact_moments_round_once_per_step() {
        fn check<M: MomentElement + PartialEq + core::fmt::Debug>() {
            let (n, d) = (300, 5);
            let rows: Vec<i64> = (0..n as i64).filter(|r| r % 3 != 1).collect();
            let mut p = values(11, n * d);
            let mut m: Vec<M> = values(12, n * d)
                .iter()
                .map(|&x| M::store(x * 0.1))
                .collect();
            let mut v: Vec<M> = values(13, n * d)
                .iter()
                .map(|&x| M::store(x * x * 0.01))
                .collect();
            let (mut p_ref, mut m_ref, mut v_ref) = (p.clone(), m.clone(), v.clone());
            let hyper = Hyperparameters {
                weight_decay: 0.5,
                ..Default::default()
            };
            for step in 1..=4 {
                let scalars = StepScalars::new(hyper, 0.01, step);
                let g = values(20 + step as u64, rows.len() * d);
                if step % 2 == 0 {
                    update_rows_with(&mut p, &mut m, &mut v, &g, &rows, d, &scalars, 1);
                } else {
                    let mut dense = vec![0.0f32; n * d];
                    for (r, row) in rows.iter().enumerate() {
                        let at = *row as usize * d;
                        dense[at..at + d].copy_from_slice(&g[r * d..(r + 1) * d]);
                    }
                    update_dense_with(&mut p, &mut m, &mut v, &dense, d, &scalars, 1);
                }
                for (r, &row) in rows.iter().enumerate() {
                    for lane in 0..d {
                        let i = row as usize * d + lane;
                        let (m_old, v_old) = (m_ref[i].load(), v_ref[i].load());
                        let delta = sparse_adam_delta(g[r * d + lane], m_old, v_old, &scalars);
                        m_ref[i] = M::store(m_old + delta.exp_avg);
                        v_ref[i] = M::store(v_old + delta.exp_avg_sq);
                        p_ref[i] = decayed(p_ref[i], &scalars) + delta.param;
                    }
                }
                assert_eq!(bits(&p), bits(&p_ref), "{:?}, step {step}", M::DTYPE);
                assert_eq!(m, m_ref, "{:?}, step {step}", M::DTYPE);
                assert_eq!(v, v_ref, "{:?}, step {step}", M::DTYPE);
            }
            // Rows not touched kept their stored moments.
            assert!(m.iter().zip(&m_ref).all(|(a, b)| a == b));
        }
        check::<half::bf16>();
        check::<half::f16>();
        check::<f32>();
        // `f32` moments through the generic loop are the plain `f32` update.
        let scalars = StepScalars::new(Hyperparameters::default(), 0.01, 2);
        let (mut p, mut m, mut v) = (values(1, 12), values(2, 12), vec![0.5f32; 12]);
        let (mut p2, mut m2, mut v2) = (p.clone(), m.clone(), v.clone());
        update_rows(&mut p, &mut m, &mut v, &values(3, 8), &[0, 2], 4, &scalars);
        for (r, row) in [0usize, 2].into_iter().enumerate() {
            for lane in 0..4 {
                let i = row * 4 + lane;
                let delta = sparse_adam_delta(values(3, 8)[r * 4 + lane], m2[i], v2[i], &scalars);
                m2[i] += delta.exp_avg;
                v2[i] += delta.exp_avg_sq;
                p2[i] += delta.param;
            }
        }
        assert_eq!(
            (bits(&p), bits(&m), bits(&v)),
            (bits(&p2), bits(&m2), bits(&v2))
        );
    }

    #[test]
    fn unsorted_rows_still_update_each_row_once() {
        let d = 3;
        let scalars = StepScalars::new(Hyperparameters::default(), 0.1, 1);
        let g = values(5, 4 * d);
        let (mut p, mut m, mut v) = (values(6, 10 * d), vec![0.0; 10 * d], vec![0.0; 10 * d]);
        let (mut p2, mut m2, mut v2) = (p.clone(), m.clone(), v.clone());
        update_rows_with(&mut p, &mut m, &mut v, &g, &[7, 2, 9, 0], d, &scalars, 1);
        // The same rows, one at a time.
        for (i, row) in [7, 2, 9, 0].into_iter().enumerate() {
            update_range(
                &mut p2,
                &mut m2,
                &mut v2,
                &g[i * d..(i + 1) * d],
                &[row],
                d,
                &scalars,
                0,
            );
        }
        assert_eq!(
            (bits(&p), bits(&m), bits(&v)),
            (bits(&p2), bits(&m2), bits(&v2))
        );
    }

    /// The row update compiled for AVX2 (taken where the CPU has it) gives the bits of the
    /// same loop compiled for the baseline, lane for lane, on values that round differently
    /// at every operation (tiny, huge, negative, zero and `-0.0` gradients, decayed, maximized,
    /// `bf16` and `f16` moments). On a CPU without AVX2 both sides are the baseline loop. The
    /// workspace builds this crate optimized in tests too (`Cargo.toml`'s dev profile), so
    /// both sides are vectorized here as in release builds.
    #[test]
    fn the_avx2_row_update_is_the_baseline_one_bit_for_bit() {
        fn run<M: MomentElement>(hyper: Hyperparameters, step: usize) {
            let (n, d) = (40, 67); // not a multiple of any vector width
            let rows: Vec<i64> = (0..n as i64).filter(|r| r % 3 != 1).collect();
            let mut g = values(11, rows.len() * d);
            for (i, x) in g.iter_mut().enumerate() {
                *x *= [1.0, 1e-30, 1e30, -3.0, 0.0, -0.0, 7e-3][i % 7];
            }
            let p0 = values(12, n * d);
            let m0: Vec<M> = values(13, n * d).into_iter().map(M::store).collect();
            let v0: Vec<M> = values(14, n * d).iter().map(|x| M::store(x * x)).collect();
            let scalars = StepScalars::new(hyper, 0.01, step);
            let (mut p, mut m, mut v) = (p0.clone(), m0.clone(), v0.clone());
            update_range(&mut p, &mut m, &mut v, &g, &rows, d, &scalars, 0);
            let (mut p2, mut m2, mut v2) = (p0, m0, v0);
            update_range_lanes(&mut p2, &mut m2, &mut v2, &g, &rows, d, &scalars, 0);
            let widen = |x: &[M]| x.iter().map(|x| x.load()).collect::<Vec<f32>>();
            assert_eq!(bits(&p), bits(&p2));
            assert_eq!(bits(&widen(&m)), bits(&widen(&m2)));
            assert_eq!(bits(&widen(&v)), bits(&widen(&v2)));
        }
        let decayed = Hyperparameters {
            weight_decay: 0.1,
            maximize: true,
            ..Hyperparameters::default()
        };
        for step in [1, 7] {
            run::<f32>(Hyperparameters::default(), step);
            run::<f32>(decayed, step);
            run::<half::bf16>(Hyperparameters::default(), step);
            run::<half::f16>(Hyperparameters::default(), step);
        }
    }

    /// A table-sized gradient whose rows are zero, `-0.0`, partly zero, NaN-bearing or
    /// dense: its touched rows (a non-zero or NaN lane) are a row gradient.
    fn dense_gradient(n: usize, d: usize) -> (Vec<f32>, Vec<i64>, Vec<f32>) {
        let mut g = values(7, n * d);
        let (mut rows, mut rows_grad) = (Vec::new(), Vec::new());
        for (r, row) in g.chunks_exact_mut(d).enumerate() {
            match r % 5 {
                0 => row.fill(0.0),
                1 => row.fill(-0.0),
                2 => row[1..].fill(0.0), // one non-zero lane
                3 if r % 3 == 0 => row[0] = f32::NAN,
                _ => {}
            }
            if row.iter().any(|&x| x != 0.0) {
                rows.push(r as i64);
                rows_grad.extend_from_slice(row);
            }
        }
        (g, rows, rows_grad)
    }

    /// The dense path's one pass equals the row update given the rows with a non-zero
    /// lane, bit for bit (NaN lanes touch their row, `-0.0` does not), on pools of 1 to 4
    /// threads forced to split finely; other rows keep their bits.
    #[test]
    fn the_dense_pass_is_the_row_update_of_its_touched_rows() {
        let (n, d) = (503, 6);
        let (g, rows, rows_grad) = dense_gradient(n, d);
        assert!(
            rows.len() > n / 3 && rows.len() < n,
            "a mix of touched and untouched rows"
        );
        let p0 = values(8, n * d);
        let m0 = values(9, n * d);
        let v0: Vec<f32> = values(10, n * d).iter().map(|x| x * x).collect();
        let scalars = StepScalars::new(Hyperparameters::default(), 0.01, 4);
        let (mut p, mut m, mut v) = (p0.clone(), m0.clone(), v0.clone());
        update_range(&mut p, &mut m, &mut v, &rows_grad, &rows, d, &scalars, 0);
        let expected = [bits(&p), bits(&m), bits(&v)];
        let untouched = (0..n).filter(|r| rows.binary_search(&(*r as i64)).is_err());
        for r in untouched {
            assert_eq!(bits(&p[r * d..(r + 1) * d]), bits(&p0[r * d..(r + 1) * d]));
        }
        let mut pools = vec![1];
        if cfg!(feature = "parallel") {
            pools.extend([2, 3, 4]);
        }
        for threads in pools {
            for min_lanes in [1, d, 64 * d, PARALLEL_LANES] {
                let dense = || {
                    let (mut p, mut m, mut v) = (p0.clone(), m0.clone(), v0.clone());
                    update_dense_with(&mut p, &mut m, &mut v, &g, d, &scalars, min_lanes);
                    [bits(&p), bits(&m), bits(&v)]
                };
                #[cfg(feature = "parallel")]
                let got = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap()
                    .install(dense);
                #[cfg(not(feature = "parallel"))]
                let got = dense();
                assert!(
                    got == expected,
                    "{threads} threads, pieces of {min_lanes} lanes"
                );
            }
        }
    }

    #[test]
    fn the_dense_pass_accepts_an_empty_table_and_rejects_a_misfit() {
        let s = StepScalars::new(Hyperparameters::default(), 0.1, 1);
        update_dense::<f32>(&mut [], &mut [], &mut [], &[], 0, &s);
        let misfit = std::panic::catch_unwind(|| {
            update_dense(
                &mut [0.0; 4],
                &mut [0.0; 4],
                &mut [0.0; 4],
                &[1.0; 3],
                2,
                &s,
            )
        });
        let message = *misfit.unwrap_err().downcast::<String>().unwrap();
        assert!(message.contains("(4, 4, 4, 3)"), "{message}");
    }

    #[test]
    #[should_panic(expected = "slot 4 is not -1 (padding) or a row of the [4, 2] block")]
    fn a_slot_past_the_block_is_named() {
        sum_per_row(&[0.0; 4], 2, &[0, 4], 4, &mut Vec::new());
    }
}
