//! Batch-sized buffers on burn-ndarray, reused from one training step to the next: the
//! core's [`Recycler`] (why, and the policy) over burn-ndarray tensors, one per thread.
//!
//! burn-ndarray copies a shared tensor before changing it in place (copy-on-write), so the
//! clone the recycler holds keeps everyone else's view of a buffer unchanged, and a buffer is
//! only handed out again once nothing else can read it.

use std::cell::RefCell;

use burn::backend::ndarray::NdArrayTensor;
use sparse_adam_core::recycle::Recycler;

thread_local! {
    static KEPT_TENSORS: RefCell<Recycler<NdArrayTensor>> = const { RefCell::new(Recycler::new()) };
}

/// An empty vector with room for at least `len` `f32`s: the allocation of a remembered
/// tensor that nobody else holds any more (the smallest that fits), or a new one.
pub(super) fn buffer(len: usize) -> Vec<f32> {
    let reused = KEPT_TENSORS.with(|kept| kept.borrow_mut().take_free(len, is_free));
    let Some(tensor) = reused else {
        return Vec::with_capacity(Recycler::<NdArrayTensor>::new_capacity(len));
    };
    let NdArrayTensor::F32(storage) = tensor else {
        unreachable!("only f32 tensors are kept")
    };
    // Unique, so neither step copies: the `Arc` is unwrapped, the array taken apart.
    let (mut vec, _offset) = storage.into_owned().into_owned().into_raw_vec_and_offset();
    vec.clear();
    vec
}

/// The burn-ndarray tensor of shape `shape` around `values` (made with [`buffer`]),
/// remembered so that its allocation can serve a later [`buffer`].
pub(super) fn tensor(values: Vec<f32>, shape: &[usize]) -> NdArrayTensor {
    let capacity = values.capacity();
    let array = ::ndarray::ArcArray::from_shape_vec(::ndarray::IxDyn(shape), values)
        .expect("a buffer holds as many values as its shape");
    let tensor = NdArrayTensor::from(array);
    KEPT_TENSORS.with(|kept| kept.borrow_mut().keep(capacity, tensor.clone()));
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
