//! [`RowGrad`]: the gradient of some rows of a table, the unit in which a
//! [`SparseEmbedding`](super::SparseEmbedding)'s gradient travels.

use burn::tensor::backend::Backend;
use burn::tensor::{IndexingUpdateOp, Int, Tensor};
use sparse_adam_core::unique_sorted;

use crate::kernels::{index_tensor, to_rank};

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
