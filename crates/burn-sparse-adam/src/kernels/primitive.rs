//! Reaching a backend's own tensors from generic code: the one downcast every fused kernel
//! needs.
//!
//! The crate is generic over `B: Backend`, and a fused kernel works on one backend's float
//! primitive (a burn-ndarray array, a CubeCL tensor). [`downcast`] takes a tensor's
//! primitive if it is of the kernel's type and hands the tensor back otherwise; [`upcast`]
//! wraps a primitive back into a tensor of `B`. Nothing is copied either way.

use std::any::Any;

use burn::tensor::{backend::Backend, Tensor, TensorPrimitive};

use super::ParamAndMoments;

/// `tensor`'s float primitive, if it is a `P`; otherwise `tensor`, unchanged.
pub(super) fn downcast<P: 'static, B: Backend, const D: usize>(
    tensor: Tensor<B, D>,
) -> Result<P, Tensor<B, D>> {
    let TensorPrimitive::Float(primitive) = tensor.into_primitive() else {
        unreachable!("a float tensor's primitive is a float primitive")
    };
    let boxed: Box<dyn Any> = Box::new(primitive);
    match boxed.downcast::<P>() {
        Ok(primitive) => Ok(*primitive),
        Err(boxed) => Err(Tensor::from_primitive(TensorPrimitive::Float(
            *boxed
                .downcast::<B::FloatTensorPrimitive>()
                .unwrap_or_else(|_| unreachable!("the primitive came from this backend")),
        ))),
    }
}

/// The tensor of `B` around `primitive`, if `B`'s float primitive is a `P`; otherwise
/// `primitive`, unchanged.
pub(super) fn upcast<B: Backend, const D: usize, P: 'static>(
    primitive: P,
) -> Result<Tensor<B, D>, P> {
    let boxed: Box<dyn Any> = Box::new(primitive);
    match boxed.downcast::<B::FloatTensorPrimitive>() {
        Ok(primitive) => Ok(Tensor::from_primitive(TensorPrimitive::Float(*primitive))),
        Err(boxed) => Err(*boxed
            .downcast::<P>()
            .unwrap_or_else(|_| unreachable!("the box holds a P"))),
    }
}

/// [`upcast`] of a primitive that [`downcast`] took from a tensor of `B`.
pub(super) fn restore<B: Backend, const D: usize, P: 'static>(primitive: P) -> Tensor<B, D> {
    upcast(primitive).unwrap_or_else(|_| unreachable!("the primitive came from this backend"))
}

/// The parameter, both moments and the row gradient `values` as primitives of type `P`, if
/// `B`'s float primitive is `P`; otherwise the three tensors, unchanged.
pub(super) fn downcast_update<P: 'static, B: Backend>(
    [param, exp_avg, exp_avg_sq]: ParamAndMoments<B>,
    values: &Tensor<B, 2>,
) -> Result<([P; 3], P), ParamAndMoments<B>> {
    let param = match downcast::<P, B, 2>(param) {
        Ok(param) => param,
        Err(param) => return Err([param, exp_avg, exp_avg_sq]),
    };
    // One backend for all four: if the parameter's primitive is `P`, so are the others'.
    let same = |t| downcast::<P, B, 2>(t).unwrap_or_else(|_| unreachable!("one backend"));
    Ok((
        [param, same(exp_avg), same(exp_avg_sq)],
        same(values.clone()),
    ))
}
