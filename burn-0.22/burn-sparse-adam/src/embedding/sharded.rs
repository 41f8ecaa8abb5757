//! [`ShardedEmbedding`]: one `[n_embedding, d_model]` table held as several
//! [`SparseEmbedding`]s of consecutive rows, for a table larger than one buffer binding of its
//! device.
//!
//! A wgpu adapter caps the buffer one kernel can bind (128 MiB on Mesa's lavapipe, at most
//! 2 GiB on Vulkan and DX12 without 64-bit indexing: about 8.4 million rows at `d = 64` in
//! `f32`), and every kernel that touches a table binds all of it, Burn's own `Embedding`
//! included: [`SparseEmbeddingConfig::try_init`] refuses such a table
//! ([`Error::TableOverBindingLimit`](crate::Error::TableOverBindingLimit)). Here shard `s`
//! holds rows `s·r .. (s + 1)·r` (`r` rows per shard, the last shard the rest), each a
//! parameter of its own: the lookups address the shards, and the optimizer updates each
//! shard's touched rows as it would one table's, with the same numbers bit for bit (a shard's
//! rows take the same per-row sums in the same order; tested with
//! [`SparseAdamOptimizer`](crate::SparseAdamOptimizer); Burn's `ModuleOptimizer` sees the
//! shards as ordinary tables).
//!
//! A lookup reads its indices to the host once (as [`SparseEmbedding`]'s does), looks up each
//! shard's share, and puts the rows back in the batch's order with one `select` (whose
//! gradient is batch-sized). Its record is the shards' (`shards.0.weight`, …), not
//! `burn::nn::Embedding`'s.

use burn::config::Config;
use burn::module::Module;
use burn::tensor::{DType, Device, Int, Tensor, TensorData};
use sparse_adam_core::{check_indices, check_padding_idx};

use super::{SparseEmbedding, SparseEmbeddingConfig, host_indices};
use crate::error::Error;
use crate::kernels;

/// Configuration of a [`ShardedEmbedding`]: the whole table's [`SparseEmbeddingConfig`] and
/// the rows per shard.
#[derive(Config, Debug)]
pub struct ShardedEmbeddingConfig {
    /// The whole table: its rows, width, initializer (each shard is initialized with it) and
    /// `padding_idx` (a row of the whole table, which lands in one shard).
    pub table: SparseEmbeddingConfig,
    /// Rows per shard (the last shard holds the rest). Default: the most rows one buffer
    /// of the device holds in its default float type, which on a device without such a
    /// limit (flex) is the whole table, in one shard.
    #[config(default = "None")]
    pub rows_per_shard: Option<usize>,
}

impl ShardedEmbeddingConfig {
    /// Creates the shards on `device`.
    ///
    /// # Errors
    ///
    /// [`Error::PaddingIdxOutOfRange`] when `padding_idx >= n_embedding`,
    /// [`Error::InvalidRowsPerShard`] for `rows_per_shard == Some(0)`, and
    /// [`Error::TableOverBindingLimit`] when a shard of the given `rows_per_shard` is larger
    /// than one buffer binding of the device; nothing is allocated then.
    pub fn try_init(&self, device: &Device) -> crate::Result<ShardedEmbedding> {
        let SparseEmbeddingConfig {
            n_embedding: n,
            d_model: d,
            ref initializer,
            padding_idx,
            // A sharded lookup routes its indices to the shards on the host: they are read,
            // and checked, whatever this says.
            check_indices: _,
        } = self.table;
        check_padding_idx(padding_idx, n)?;
        let rows_per_shard = match self.rows_per_shard {
            Some(0) => return Err(Error::InvalidRowsPerShard),
            Some(rows) => rows,
            None => {
                let dtype = DType::from(device.settings().float_dtype);
                let row_bytes = (d * dtype.size()).max(1) as u64;
                kernels::binding_limit(device)
                    .map_or(n, |limit| usize::try_from(limit / row_bytes).unwrap_or(n))
                    .max(1)
            }
        };
        let rows_per_shard = rows_per_shard.min(n).max(1);
        let configs: Vec<SparseEmbeddingConfig> = (0..n.div_ceil(rows_per_shard).max(1))
            .map(|s| {
                let start = s * rows_per_shard;
                let rows = rows_per_shard.min(n - start);
                let padding = padding_idx
                    .filter(|p| (start..start + rows).contains(p))
                    .map(|p| p - start);
                SparseEmbeddingConfig::new(rows, d)
                    .with_initializer(initializer.clone())
                    .with_padding_idx(padding)
            })
            .collect();
        let shards = configs
            .iter()
            .map(|config| config.try_init(device))
            .collect::<crate::Result<Vec<_>>>()?;
        Ok(ShardedEmbedding {
            shards,
            rows_per_shard,
            n_embedding: n,
            d_model: d,
            padding_idx,
        })
    }

    /// Creates the shards on `device`.
    ///
    /// # Panics
    ///
    /// Where [`ShardedEmbeddingConfig::try_init`] returns an error, with its message.
    pub fn init(&self, device: &Device) -> ShardedEmbedding {
        self.try_init(device).unwrap_or_else(|err| panic!("{err}"))
    }
}

/// One `[n_embedding, d_model]` table held as [`SparseEmbedding`] shards of consecutive rows
/// (see the [module docs](self)): the same forward as a [`SparseEmbedding`] of the whole
/// table, the same training through [`collect_grads`](crate::collect_grads) and either
/// optimizer, for tables larger than one buffer binding of their device.
///
/// # Example
///
/// ```
/// use burn::tensor::{Device, Int, Tensor};
/// use burn_sparse_adam::{
///     collect_grads, ShardedEmbeddingConfig, SparseAdamConfig, SparseEmbeddingConfig,
/// };
///
/// let device = Device::default().autodiff();
/// // 10 rows in shards of 4, 4 and 2.
/// let table = ShardedEmbeddingConfig::new(SparseEmbeddingConfig::new(10, 3))
///     .with_rows_per_shard(Some(4))
///     .init(&device);
/// assert_eq!(table.shards().len(), 3);
/// let ids = Tensor::<2, Int>::from_data([[9, 0, 5, 9]], &device);
/// let out = table.forward(ids);
/// assert_eq!(out.dims(), [1, 4, 3]);
/// let grads = collect_grads(out.sum().backward(), &table);
/// let mut optim = SparseAdamConfig::new().init_optimizer();
/// let table = optim.step(1e-2, table, grads); // rows 0, 5 and 9, in three shards
/// ```
#[derive(Module, Debug)]
pub struct ShardedEmbedding {
    /// The shards: shard `s` holds rows `s · rows_per_shard ..` of the table.
    shards: Vec<SparseEmbedding>,
    rows_per_shard: usize,
    n_embedding: usize,
    d_model: usize,
    padding_idx: Option<usize>,
}

impl ShardedEmbedding {
    /// Looks up `indices` (`[batch, seq]`), giving `[batch, seq, d_model]`.
    ///
    /// # Panics
    ///
    /// Where [`ShardedEmbedding::try_forward`] returns an error, with its message.
    pub fn forward(&self, indices: Tensor<2, Int>) -> Tensor<3> {
        self.try_forward(indices)
            .unwrap_or_else(|err| panic!("{err}"))
    }

    /// Looks up `indices` (`[batch, seq]`, rows of the whole table), giving
    /// `[batch, seq, d_model]`: each shard looks up its rows (as
    /// [`SparseEmbedding::try_forward`] does, recording them under autodiff), and the rows
    /// are put back in the batch's order.
    ///
    /// # Errors
    ///
    /// [`Error::IndexOutOfRange`] for an index `< 0` or `>= n_embedding`, and a shard's
    /// [`Error::TableOverBindingLimit`] (a shard moved onto a device that cannot bind it),
    /// before anything is recorded.
    pub fn try_forward(&self, indices: Tensor<2, Int>) -> crate::Result<Tensor<3>> {
        let [batch, seq] = indices.dims();
        let host = host_indices(&indices);
        check_indices(&host, self.n_embedding)?;
        if self.shards.len() == 1 || host.is_empty() {
            return self.shards[0].forward_host(indices, &host);
        }
        // Each shard's ids (local rows) and the batch positions they came from, in batch
        // order, so that a shard sums a row's lookups in the order one table would.
        let mut parts: Vec<(Vec<i64>, Vec<i64>)> =
            vec![(Vec::new(), Vec::new()); self.shards.len()];
        let rows_per_shard = self.rows_per_shard as i64;
        for (position, &id) in host.iter().enumerate() {
            let shard = (id / rows_per_shard) as usize;
            parts[shard].0.push(id % rows_per_shard);
            parts[shard].1.push(position as i64);
        }
        let mut looked_up = Vec::new();
        let mut order = Vec::with_capacity(host.len());
        // Every shard's lookup is checked first, so that no shard records one when another
        // would refuse.
        for (shard, (ids, _)) in self.shards.iter().zip(&parts) {
            if !ids.is_empty() {
                shard.check_lookup(ids)?;
            }
        }
        for (shard, (ids, positions)) in self.shards.iter().zip(parts) {
            if ids.is_empty() {
                continue;
            }
            let len = ids.len();
            // On the shard's own device, where its lookup runs.
            let device = shard.weight.val().device();
            let tensor =
                Tensor::<2, Int>::from_data(TensorData::new(ids.clone(), [1, len]), &device);
            let rows = shard.lookup_checked(tensor, &ids);
            looked_up.push(rows.reshape([len, self.d_model]));
            order.extend(positions);
        }
        // `looked_up` holds the rows shard by shard; row `i` of it belongs at `order[i]`.
        let mut from = vec![0i64; order.len()];
        for (i, &position) in order.iter().enumerate() {
            from[position as usize] = i as i64;
        }
        let device = looked_up[0].device();
        let from = Tensor::<1, Int>::from_data(TensorData::new(from, [host.len()]), &device);
        let rows = Tensor::cat(looked_up, 0).select(0, from);
        Ok(rows.reshape([batch, seq, self.d_model]))
    }

    /// The shards, in row order.
    pub fn shards(&self) -> &[SparseEmbedding] {
        &self.shards
    }

    /// Rows per shard (the last shard may hold fewer).
    pub fn rows_per_shard(&self) -> usize {
        self.rows_per_shard
    }

    /// The rows of the whole table.
    pub fn n_embedding(&self) -> usize {
        self.n_embedding
    }

    /// The width of a row.
    pub fn d_model(&self) -> usize {
        self.d_model
    }

    /// PyTorch's `padding_idx` (a row of the whole table), if any.
    pub fn padding_idx(&self) -> Option<usize> {
        self.padding_idx
    }

    /// Drops every shard's row gradients recorded or collected since the optimizer's last
    /// step ([`SparseEmbedding::clear_row_grads`]).
    pub fn clear_row_grads(&self) {
        self.shards
            .iter()
            .for_each(SparseEmbedding::clear_row_grads);
    }
}
