//! `SparseEmbedding` on Burn 0.22: its saved form is `burn::nn::Embedding`'s, `padding_idx`,
//! typed errors before anything is recorded, lookups recorded on a tape that clones share,
//! the lookup's leaf under the weight's checkpointing strategy, and `collect_grads`'s
//! markers.

use burn::module::Module;
use burn::nn::EmbeddingConfig;
use burn::store::ModuleRecord;
use burn::tensor::{Device, Int, Tensor, TensorData};
use burn_sparse_adam::{
    Error, ShardedEmbedding, ShardedEmbeddingConfig, SparseAdamConfig, SparseEmbeddingConfig,
    collect_grads,
};
use burn_sparse_adam_tests::{TestBackend, device, plain_device, set_params, values};

fn indices(rows: &[i64], device: &Device) -> Tensor<2, Int> {
    Tensor::<1, Int>::from_data(rows, device).reshape([1, rows.len()])
}

#[test]
fn a_stock_embeddings_record_loads_into_a_sparse_embedding_and_back() {
    let device = device();
    let stock = EmbeddingConfig::new(10, 4).init(&device);
    let bytes = stock.clone().into_record().into_bytes().unwrap();
    let sparse = SparseEmbeddingConfig::new(10, 4)
        .init(&device)
        .load_record(ModuleRecord::from_bytes(bytes).unwrap());
    assert_eq!(values(sparse.weight.val()), values(stock.weight.val()));
    let ids = indices(&[1, 9, 1], &device);
    assert_eq!(
        values(sparse.forward(ids.clone())),
        values(stock.forward(ids.clone()))
    );

    // And back, through a burnpack file.
    let dir = std::env::temp_dir().join(format!("bsa022-record-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("sparse.bpk");
    sparse.clone().save_file(&file).unwrap();
    let stock_again = EmbeddingConfig::new(10, 4).init(&device).load_file(&file);
    assert_eq!(
        values(stock_again.weight.val()),
        values(sparse.weight.val())
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn both_modules_save_the_same_entries() {
    let device = device();
    let stock = EmbeddingConfig::new(3, 2).init(&device);
    let sparse = SparseEmbeddingConfig::new(3, 2).init(&device);
    let names = |bytes| {
        let reader = burn_pack::Reader::from_bytes(bytes).unwrap();
        let mut names: Vec<String> = reader
            .tensor_names()
            .iter()
            .map(|s| s.to_string())
            .collect();
        names.sort();
        names
    };
    assert_eq!(
        names(stock.into_record().into_bytes().unwrap()),
        names(sparse.into_record().into_bytes().unwrap())
    );
}

#[test]
fn the_padding_row_starts_at_zero_and_the_weight_stays_a_tracked_leaf() {
    let device = device();
    let table = SparseEmbeddingConfig::new(5, 3)
        .with_padding_idx(Some(2))
        .init(&device);
    let weight = values(table.weight.val());
    assert_eq!(&weight[6..9], &[0.0, 0.0, 0.0]);
    assert!(weight[..6].iter().chain(&weight[9..]).any(|&v| v != 0.0));
    assert!(table.weight.val().is_require_grad());
    let _ = table.forward(indices(&[2, 4], &device));
    assert_eq!(
        table.pending_lookups(),
        1,
        "a tracked weight records its lookups"
    );
}

#[test]
fn a_padding_idx_beyond_the_table_is_an_error() {
    let err = SparseEmbeddingConfig::new(3, 2)
        .with_padding_idx(Some(3))
        .try_init(&device())
        .unwrap_err();
    assert_eq!(
        err,
        Error::PaddingIdxOutOfRange {
            padding_idx: 3,
            n_embedding: 3
        }
    );
    assert_eq!(
        err.to_string(),
        "padding_idx 3 is not a row of the table: it must be in 0..3"
    );
}

#[test]
fn an_index_out_of_range_is_an_error_before_anything_is_recorded() {
    let device = device();
    let table = SparseEmbeddingConfig::new(10, 4).init(&device);
    let err = table.try_forward(indices(&[1, 10], &device)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "index out of range in self: index 10 is not in 0..10 (the table has 10 rows)"
    );
    let err = table.try_forward(indices(&[-1], &device)).unwrap_err();
    assert_eq!(
        err,
        Error::IndexOutOfRange {
            index: -1,
            n_embedding: 10
        }
    );
    assert_eq!(table.pending_lookups(), 0);
}

#[test]
#[should_panic(expected = "index out of range in self: index 7 is not in 0..4")]
fn forward_panics_with_the_errors_message() {
    let device = device();
    let table = SparseEmbeddingConfig::new(4, 2).init(&device);
    let _ = table.forward(indices(&[7], &device));
}

#[test]
fn the_lookups_leaf_takes_the_weights_checkpointing_strategy() {
    let device = plain_device().autodiff().gradient_checkpointing();
    let table = SparseEmbeddingConfig::new(6, 3).init(&device);
    let strategy = table.weight.val().gradient_checkpointing_strategy();
    assert!(strategy.is_some());
    let output = table.forward(indices(&[0, 5], &device));
    assert_eq!(output.gradient_checkpointing_strategy(), strategy);
    // Mixing the lookup with another leaf of the device's strategy does not panic.
    let other = Tensor::<3>::ones([1, 2, 3], &device).require_grad();
    let grads = collect_grads((output * other).sum().backward(), &table);
    assert_eq!(grads.len(), 1);
    assert_eq!(table.collected_row_grads(), 1);
}

#[test]
fn clones_share_their_row_gradients() {
    let device = device();
    let table = SparseEmbeddingConfig::new(6, 3).init(&device);
    let clone = table.clone();
    let loss = clone.forward(indices(&[1, 1, 4], &device)).sum();
    assert_eq!(table.pending_lookups(), 1);
    let grads = collect_grads(loss.backward(), &table);
    assert_eq!(grads.len(), 1);
    assert_eq!(
        (table.pending_lookups(), clone.collected_row_grads()),
        (0, 1)
    );
    table.clear_row_grads();
    assert_eq!(clone.collected_row_grads(), 0);
}

#[test]
fn collect_grads_puts_a_marker_never_a_table_sized_gradient() {
    let device = device();
    let table = SparseEmbeddingConfig::new(1000, 8).init(&device);
    let loss = table.forward(indices(&[3, 7, 3], &device)).sum();
    let grads = collect_grads(loss.backward(), &table);
    let marker = grads.get::<2>(table.weight.id).expect("a marker");
    assert_eq!(marker.dims(), [1, 9]);
    assert_eq!(values(marker), vec![1.0; 9]);
}

#[test]
fn a_dense_gradient_of_the_weight_gets_the_rows_added() {
    let device = device();
    let table = SparseEmbeddingConfig::new(4, 2).init(&device);
    // A penalty on the whole weight, plus a lookup of row 1.
    let loss = table.weight.val().sum() + table.forward(indices(&[1], &device)).sum();
    let grads = collect_grads(loss.backward(), &table);
    let grad = grads.get::<2>(table.weight.id).expect("a dense gradient");
    assert_eq!(values(grad), vec![1.0, 1.0, 2.0, 2.0, 1.0, 1.0, 1.0, 1.0]);
    assert_eq!(
        table.collected_row_grads(),
        0,
        "the rows went into the dense gradient"
    );
}

#[test]
fn lookups_without_autodiff_or_after_valid_record_nothing() {
    let plain = SparseEmbeddingConfig::new(5, 2).init(&plain_device());
    let _ = plain.forward(indices(&[1, 2], &plain_device()));
    assert_eq!(plain.pending_lookups(), 0);

    let device = device();
    let table = SparseEmbeddingConfig::new(5, 2).init(&device);
    let valid = table.valid();
    let out = valid.forward(indices(&[1, 2], &valid.weight.val().device()));
    assert!(!out.is_require_grad());
    assert_eq!((table.pending_lookups(), valid.pending_lookups()), (0, 0));
    // `train` brings the weight back to autodiff, and lookups record again.
    let trained = valid.train();
    assert!(trained.weight.val().is_require_grad());
    let _ = trained.forward(indices(&[3], &device));
    assert_eq!(trained.pending_lookups(), 1);
}

#[test]
fn display_names_the_table_and_its_padding() {
    let table = SparseEmbeddingConfig::new(100, 10)
        .with_padding_idx(Some(0))
        .init(&device());
    assert_eq!(
        table.to_string(),
        "SparseEmbedding {n_embedding: 100, d_model: 10, padding_idx: Some(0), params: 1000}"
    );
}

/// A lookup made for the next backward pass survives the collection of the current one; a
/// lookup that no collected pass used is dropped after two collections (Burn 0.22 shows no
/// liveness of an autodiff tensor, so pending lookups are aged by collections).
#[test]
fn a_lookup_for_the_next_pass_survives_and_stray_lookups_are_dropped() {
    let device = device();
    let table = SparseEmbeddingConfig::new(8, 2).init(&device);
    let first = table.forward(indices(&[1], &device)).sum();
    let second = table.forward(indices(&[2], &device)).sum();
    assert_eq!(table.pending_lookups(), 2);
    let _ = collect_grads(first.backward(), &table);
    assert_eq!(
        (table.pending_lookups(), table.collected_row_grads()),
        (1, 1)
    );
    let _ = collect_grads(second.backward(), &table);
    assert_eq!(
        (table.pending_lookups(), table.collected_row_grads()),
        (0, 2)
    );

    let _stray = table.forward(indices(&[5], &device));
    for _ in 0..2 {
        let loss = table.forward(indices(&[3], &device)).sum();
        let _ = collect_grads(loss.backward(), &table);
    }
    assert_eq!(table.pending_lookups(), 0);
}

/// A table larger than one buffer binding of its device (wgpu: 128 MiB on Mesa's lavapipe)
/// is refused before anything is allocated or run, with the limit, the table's size and the
/// way out (`try_init`, and `try_forward` for a table moved there); a table of the most rows
/// the error names trains. flex has no such limit. (On an adapter whose binding holds the
/// table, it must train instead.)
#[test]
fn a_table_over_the_binding_limit_is_refused_before_training() {
    let device = device();
    let (rows, width) = (600_000, 64);
    let config = SparseEmbeddingConfig::new(rows, width);
    let Error::TableOverBindingLimit {
        rows: r,
        width: w,
        bytes,
        limit,
    } = (match config.try_init(&device) {
        Err(error) => error,
        Ok(table) => {
            // No limit below 153.6 MB on this device: the table trains.
            assert!(
                TestBackend::selected() == TestBackend::Flex || trains(table, rows - 1, &device),
                "a table the device binds trains"
            );
            return;
        }
    })
    else {
        panic!("refused for another reason");
    };
    assert_eq!((r, w, bytes), (rows as u64, width as u64, 153_600_000));
    assert!(limit < bytes, "{limit}");
    let max_rows = limit / 256;
    let message = config.try_init(&device).unwrap_err().to_string();
    assert!(
        message.contains(&format!(
            "takes 153600000 bytes, over the {limit}-byte limit of one buffer"
        )) && message.contains(&format!(
            "Hold it as shards of at most {max_rows} rows (the 0.2 line's ShardedEmbedding)"
        )),
        "{message}"
    );
    // A table made elsewhere and moved onto the device is refused at its first lookup.
    let moved = config.init(&Device::flex().autodiff()).to_device(&device);
    let error = moved
        .try_forward(indices(&[0, 1], &device))
        .expect_err("refused");
    assert!(matches!(
        error,
        Error::TableOverBindingLimit {
            bytes: 153_600_000,
            ..
        }
    ));
    // The most rows the error allows trains, its last row included.
    let fits = SparseEmbeddingConfig::new(max_rows as usize, width).init(&device);
    assert!(trains(fits, max_rows as usize - 1, &device));
}

/// Whether one step on a lookup of rows 0 and `last` changes both, with finite values.
fn trains(table: burn_sparse_adam::SparseEmbedding, last: usize, device: &Device) -> bool {
    let ids = indices(&[0, last as i64], device);
    let loss = table.forward(ids.clone()).sum();
    let grads = collect_grads(loss.backward(), &table);
    let before = values(table.forward(ids.clone()));
    let mut optim = burn_sparse_adam::SparseAdamConfig::new().init_optimizer();
    let table = optim.step(1e-2, table, grads);
    let after = values(table.forward(ids));
    before
        .iter()
        .zip(&after)
        .all(|(b, a)| a.is_finite() && a != b)
}

/// A table held as shards of 4, 4 and 2 rows trains exactly as one table, bit for bit after
/// every step: lookups across shards, duplicates, a row in the last shard, and `padding_idx`
/// (row 5, in the second shard) never updated.
#[test]
fn a_sharded_table_trains_as_one_table_bit_for_bit() {
    let device = device();
    let (n, d) = (10, 3);
    let plain = SparseEmbeddingConfig::new(n, d)
        .with_padding_idx(Some(5))
        .init(&device);
    let start = values(plain.weight.val());
    let sharded =
        ShardedEmbeddingConfig::new(SparseEmbeddingConfig::new(n, d).with_padding_idx(Some(5)))
            .with_rows_per_shard(Some(4))
            .init(&device);
    assert_eq!(sharded.shards().len(), 3);
    assert_eq!(sharded.shards()[1].padding_idx(), Some(1));
    let shards = vec![
        start[..12].to_vec(),
        start[12..24].to_vec(),
        start[24..].to_vec(),
    ];
    let mut sharded = set_params(sharded, shards);
    let mut plain = plain;
    let mut optims = (
        SparseAdamConfig::new().init_optimizer(),
        SparseAdamConfig::new().init_optimizer(),
    );
    let batches: [[i64; 6]; 3] = [[9, 0, 5, 9, 4, 3], [8, 1, 1, 5, 0, 7], [2, 9, 9, 9, 6, 5]];
    for (step, batch) in batches.iter().enumerate() {
        let ids = Tensor::<1, Int>::from_data(&batch[..], &device).reshape([2, 3]);
        let coefficients = Tensor::<3>::from_data(
            TensorData::new(
                (0..18).map(|i| (i as f32 * 0.37).sin()).collect::<Vec<_>>(),
                [2, 3, d],
            ),
            &device,
        );
        let out_plain = plain.forward(ids.clone());
        let out_sharded = sharded.forward(ids);
        assert_eq!(
            values(out_plain.clone()),
            values(out_sharded.clone()),
            "step {step}"
        );
        let grads = collect_grads((out_plain * coefficients.clone()).sum().backward(), &plain);
        plain = optims.0.step(1e-1, plain, grads);
        let grads = collect_grads((out_sharded * coefficients).sum().backward(), &sharded);
        sharded = optims.1.step(1e-1, sharded, grads);
        let table: Vec<f32> = sharded
            .shards()
            .iter()
            .flat_map(|shard| values(shard.weight.val()))
            .collect();
        let expected = values(plain.weight.val());
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&table), bits(&expected), "step {step}");
        assert_eq!(&table[15..18], &[0.0; 3], "padding_idx stays zero");
        assert_ne!(&table[27..30], &start[27..30], "row 9 trains");
    }
}

/// A table over one buffer binding of its device (600,000 × 64 `f32` on lavapipe's
/// 128 MiB) trains as shards of the most rows a binding holds: rows at both ends of both
/// shards change, an untouched row does not. On flex (no limit) it is one shard.
#[test]
fn a_table_over_the_binding_limit_trains_as_shards() {
    let device = device();
    let (n, d) = (600_000, 64);
    let expected_shards = match SparseEmbeddingConfig::new(n, d).try_init(&device) {
        Err(Error::TableOverBindingLimit { limit, .. }) => n.div_ceil((limit / 256) as usize),
        Err(other) => panic!("{other}"),
        Ok(_) => 1,
    };
    assert!(TestBackend::selected() == TestBackend::Flex || expected_shards > 1);
    let table = ShardedEmbeddingConfig::new(SparseEmbeddingConfig::new(n, d)).init(&device);
    assert_eq!(table.shards().len(), expected_shards);
    let r = table.rows_per_shard() as i64;
    let touched = [0, r - 1, r.min(n as i64 - 1), n as i64 - 1];
    let lookup = |table: &ShardedEmbedding, ids: &[i64]| {
        let ids = Tensor::<1, Int>::from_data(ids, &device).reshape([1, ids.len()]);
        values(table.forward(ids))
    };
    let (before, untouched) = (lookup(&table, &touched), lookup(&table, &[1]));
    let ids = Tensor::<1, Int>::from_data(&touched[..], &device).reshape([1, 4]);
    let grads = collect_grads(table.forward(ids).sum().backward(), &table);
    let table = SparseAdamConfig::new()
        .init_optimizer()
        .step(1e-2, table, grads);
    let after = lookup(&table, &touched);
    assert!(
        before
            .iter()
            .zip(&after)
            .all(|(b, a)| a.is_finite() && a != b),
        "every touched row trains"
    );
    assert_eq!(lookup(&table, &[1]), untouched);
}

#[test]
fn sharding_refuses_zero_rows_per_shard_and_a_padding_idx_out_of_range() {
    let device = device();
    let zero =
        ShardedEmbeddingConfig::new(SparseEmbeddingConfig::new(10, 3)).with_rows_per_shard(Some(0));
    assert!(matches!(
        zero.try_init(&device),
        Err(Error::InvalidRowsPerShard)
    ));
    let padding =
        ShardedEmbeddingConfig::new(SparseEmbeddingConfig::new(10, 3).with_padding_idx(Some(10)));
    assert!(matches!(
        padding.try_init(&device),
        Err(Error::PaddingIdxOutOfRange {
            padding_idx: 10,
            n_embedding: 10
        })
    ));
    let table = ShardedEmbeddingConfig::new(SparseEmbeddingConfig::new(10, 3))
        .with_rows_per_shard(Some(4))
        .init(&device);
    let error = table
        .try_forward(indices(&[3, 10], &device))
        .expect_err("refused");
    assert!(
        matches!(error, Error::IndexOutOfRange { index: 10, .. }),
        "{error}"
    );
    assert!(table.shards().iter().all(|s| s.pending_lookups() == 0));
}
