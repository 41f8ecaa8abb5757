//! Batch-sized buffers on burn-ndarray, reused from one training step to the next.
//!
//! Each step makes the same few batch-sized tensors: a lookup's output (`[batch, seq, d]`,
//! 1 MiB for 4096 lookups of 64 floats) and its row gradient (`[k, d]`). Allocated afresh,
//! they cost more than the work they hold: glibc's malloc hands blocks of 128 KiB and more
//! back to the kernel when they are freed (it unmaps them, or trims the top of its heap once
//! twice that much is free there), so each step faults every page of them in again, ~700
//! page faults a step, and the batch-sized temporaries of Burn's own operations with them.
//!
//! So this module remembers the last few tensors it made (a clone of each, which costs an
//! `Arc`'s count, not a copy). A tensor whose only holder left is this module has been
//! dropped by everyone else: its memory is taken back for the next buffer instead of a new
//! allocation. Holding the clone keeps everyone else's view of the tensor unchanged: a
//! burn-ndarray tensor that is shared is copied before any in-place change (Burn's
//! copy-on-write), so nothing can write to a buffer while it is here, and a buffer is only
//! handed out again once nothing else can read it.
//!
//! Memory: per thread, at most [`KEPT`] buffers of at most [`MAX_BYTES`] each, all of them
//! batch-sized buffers the step would have held at its peak anyway.

use std::cell::RefCell;

use burn::backend::ndarray::NdArrayTensor;

/// How many of the tensors made last are remembered, per thread: a step makes two (the
/// lookup's output and its row gradient) per table, and a model with a few tables or a
/// gradient accumulated over a few passes still finds its buffers.
const KEPT: usize = 8;

/// Larger buffers are not remembered: a one-off huge lookup should not stay resident.
const MAX_BYTES: usize = 64 << 20;

/// A tensor this thread made, with the capacity (in `f32`s) of the allocation behind it.
struct Kept {
    capacity: usize,
    tensor: NdArrayTensor,
}

thread_local! {
    static KEPT_TENSORS: RefCell<Vec<Kept>> = const { RefCell::new(Vec::new()) };
}

/// An empty vector with room for at least `len` `f32`s: the allocation of a remembered
/// tensor that nobody else holds any more (the smallest that fits), or a new one.
pub(super) fn buffer(len: usize) -> Vec<f32> {
    let reused = KEPT_TENSORS.with(|kept| {
        let mut kept = kept.borrow_mut();
        let (at, _) = kept
            .iter()
            .enumerate()
            .filter(|(_, k)| k.capacity >= len && is_free(&k.tensor))
            .min_by_key(|(_, k)| k.capacity)?;
        let NdArrayTensor::F32(storage) = kept.remove(at).tensor else {
            unreachable!("only f32 tensors are kept")
        };
        // Unique, so neither step copies: the `Arc` is unwrapped, the array taken apart.
        let (mut vec, _offset) = storage.into_owned().into_owned().into_raw_vec_and_offset();
        vec.clear();
        Some(vec)
    });
    // A little room on top of a new allocation, so that a row gradient a few rows larger
    // than the last one (the number of distinct rows varies from batch to batch) still fits.
    reused.unwrap_or_else(|| Vec::with_capacity(len + len / 8))
}

/// The burn-ndarray tensor of shape `shape` around `values` (made with [`buffer`]),
/// remembered so that its allocation can serve a later [`buffer`].
pub(super) fn tensor(values: Vec<f32>, shape: &[usize]) -> NdArrayTensor {
    let capacity = values.capacity();
    let array = ::ndarray::ArcArray::from_shape_vec(::ndarray::IxDyn(shape), values)
        .expect("a buffer holds as many values as its shape");
    let tensor = NdArrayTensor::from(array);
    if capacity * size_of::<f32>() <= MAX_BYTES {
        KEPT_TENSORS.with(|kept| {
            let mut kept = kept.borrow_mut();
            if kept.len() == KEPT {
                kept.remove(0);
            }
            kept.push(Kept {
                capacity,
                tensor: tensor.clone(),
            });
        });
    }
    tensor
}

/// Whether this module holds the only reference to `tensor`'s memory.
fn is_free(tensor: &NdArrayTensor) -> bool {
    matches!(tensor, NdArrayTensor::F32(storage) if storage.is_unique())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(tensor: &NdArrayTensor) -> Vec<f32> {
        let NdArrayTensor::F32(storage) = tensor else {
            panic!("an f32 tensor")
        };
        storage.view().iter().copied().collect()
    }

    /// A buffer comes back only once every other holder dropped it, and a tensor still held
    /// keeps its values whatever later buffers are given.
    #[test]
    fn memory_is_reused_only_once_free() {
        let mut first = buffer(6);
        first.extend_from_slice(&[1.0; 6]);
        let first_ptr = first.as_ptr();
        let held = tensor(first, &[2, 3]);

        let mut second = buffer(6);
        assert_ne!(
            second.as_ptr(),
            first_ptr,
            "a held buffer is not handed out"
        );
        second.extend_from_slice(&[2.0; 6]);
        let second = tensor(second, &[6]);
        assert_eq!(values(&held), vec![1.0; 6]);

        drop(held);
        let third = buffer(4);
        assert_eq!(third.as_ptr(), first_ptr, "a dropped buffer is reused");
        assert!(third.is_empty() && third.capacity() >= 6);
        assert_eq!(values(&second), vec![2.0; 6]);
    }

    /// A buffer too small for the request is not reused.
    #[test]
    fn a_small_buffer_does_not_serve_a_larger_request() {
        let mut small = buffer(2);
        small.extend_from_slice(&[0.0; 2]);
        let small_ptr = small.as_ptr();
        drop(tensor(small, &[2]));
        let large = buffer(1000);
        assert_ne!(large.as_ptr(), small_ptr);
        assert!(large.capacity() >= 1000);
    }
}
