//! Batch-sized buffers reused from one training step to the next: the policy both Burn lines'
//! CPU kernels follow, over whatever holds a buffer on their backend.
//!
//! Each step makes the same few batch-sized tensors: a lookup's output (`[batch, seq, d]`,
//! 1 MiB for 4096 lookups of 64 floats) and its row gradient (`[k, d]`). Allocated afresh,
//! they cost more than the work they hold: glibc's malloc hands blocks of 128 KiB and more
//! back to the kernel when they are freed (it unmaps them, or trims the top of its heap once
//! twice that much is free there), so each step faults every page of them in again (~700
//! page faults a step on the micro-benchmark), and the batch-sized temporaries of Burn's own
//! operations with them.
//!
//! So a backend's kernels remember the last few tensors they made (a clone of each: an
//! `Arc`'s count, not a copy) in a [`Recycler`]. A tensor whose only holder left is the
//! recycler has been dropped by everyone else: its memory serves the next buffer instead of a
//! new allocation. Holding the clone keeps everyone else's view unchanged, provided the
//! backend copies a shared tensor before changing it in place (burn-ndarray's and burn-flex's
//! copy-on-write): nothing can write to a buffer while the recycler holds it, and a buffer is
//! only handed out again once nothing else can read it.
//!
//! Memory: at most [`Recycler::KEPT`] buffers of at most [`Recycler::MAX_BYTES`] each, all of
//! them batch-sized buffers the step would have held at its peak anyway.

/// The last few batch-sized buffers a backend's kernels made, each held by a `T` (the
/// backend's tensor) next to the capacity, in `f32`s, of its allocation.
///
/// # Example
///
/// ```
/// use std::rc::Rc;
/// use sparse_adam_core::recycle::Recycler;
///
/// let mut recycler: Recycler<Rc<Vec<f32>>> = Recycler::new();
/// let held = Rc::new(vec![0.0f32; 100]);
/// recycler.keep(100, held.clone());
/// let is_free = |t: &Rc<Vec<f32>>| Rc::strong_count(t) == 1;
/// assert!(recycler.take_free(80, is_free).is_none()); // `held` still reads it
/// drop(held);
/// assert!(recycler.take_free(200, is_free).is_none()); // too small
/// assert_eq!(recycler.take_free(80, is_free).map(|t| t.len()), Some(100));
/// ```
#[derive(Debug)]
pub struct Recycler<T> {
    kept: Vec<(usize, T)>,
}

impl<T> Default for Recycler<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Recycler<T> {
    /// How many of the buffers made last are remembered: a step makes two (the lookup's
    /// output and its row gradient) per table, and a model with a few tables or a gradient
    /// accumulated over a few passes still finds its buffers.
    pub const KEPT: usize = 8;

    /// Larger buffers are not remembered: a one-off huge lookup should not stay resident.
    pub const MAX_BYTES: usize = 64 << 20;

    /// An empty recycler.
    pub const fn new() -> Self {
        Self { kept: Vec::new() }
    }

    /// The capacity, in `f32`s, to give a new allocation for `len` values: a little room on
    /// top, so that a row gradient a few rows larger than the last one (the number of distinct
    /// rows varies from batch to batch) still fits in its memory next time.
    pub fn new_capacity(len: usize) -> usize {
        len + len / 8
    }

    /// Takes the remembered holder of the smallest allocation of at least `len` `f32`s that
    /// `is_free` says nobody else holds any more; `None` when there is none.
    pub fn take_free(&mut self, len: usize, is_free: impl Fn(&T) -> bool) -> Option<T> {
        let (at, _) = self
            .kept
            .iter()
            .enumerate()
            .filter(|(_, (capacity, holder))| *capacity >= len && is_free(holder))
            .min_by_key(|(_, (capacity, _))| *capacity)?;
        Some(self.kept.remove(at).1)
    }

    /// Remembers `holder`, a clone of a tensor just made in an allocation of `capacity`
    /// `f32`s, forgetting the oldest beyond [`Self::KEPT`]; an empty allocation or one over
    /// [`Self::MAX_BYTES`] is not remembered.
    pub fn keep(&mut self, capacity: usize, holder: T) {
        if capacity == 0 || capacity.saturating_mul(size_of::<f32>()) > Self::MAX_BYTES {
            return;
        }
        if self.kept.len() == Self::KEPT {
            self.kept.remove(0);
        }
        self.kept.push((capacity, holder));
    }
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;

    use super::*;

    fn is_free(t: &Rc<usize>) -> bool {
        Rc::strong_count(t) == 1
    }

    #[test]
    fn the_smallest_free_buffer_that_fits_is_taken() {
        let mut recycler = Recycler::new();
        let held = Rc::new(0);
        recycler.keep(50, held.clone());
        for (capacity, id) in [(400, 1), (100, 2), (200, 3)] {
            recycler.keep(capacity, Rc::new(id));
        }
        // 50 is held elsewhere and too small; of 100, 200, 400 the smallest fitting 90.
        assert_eq!(recycler.take_free(90, is_free).as_deref(), Some(&2));
        assert_eq!(recycler.take_free(90, is_free).as_deref(), Some(&3));
        assert_eq!(recycler.take_free(90, is_free).as_deref(), Some(&1));
        assert_eq!(
            recycler.take_free(10, is_free),
            None,
            "the held one is not free"
        );
        drop(held);
        assert_eq!(recycler.take_free(10, is_free).as_deref(), Some(&0));
    }

    #[test]
    fn only_the_last_few_and_no_huge_buffer_are_remembered() {
        let mut recycler = Recycler::new();
        for id in 0..Recycler::<Rc<usize>>::KEPT + 2 {
            recycler.keep(10 + id, Rc::new(id));
        }
        let huge = Recycler::<Rc<usize>>::MAX_BYTES / size_of::<f32>() + 1;
        recycler.keep(huge, Rc::new(99));
        recycler.keep(0, Rc::new(98));
        let mut taken = Vec::new();
        while let Some(t) = recycler.take_free(0, is_free) {
            taken.push(*t);
        }
        let expected: Vec<usize> = (2..Recycler::<Rc<usize>>::KEPT + 2).collect();
        assert_eq!(
            taken, expected,
            "the two oldest, the huge and the empty one are forgotten"
        );
    }

    #[test]
    fn new_allocations_have_room_for_a_few_more_rows() {
        assert_eq!(Recycler::<()>::new_capacity(800), 900);
        assert_eq!(Recycler::<()>::new_capacity(0), 0);
    }
}
