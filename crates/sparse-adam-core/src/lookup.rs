//! Lookup planning: which rows of a table a batch of indices touches, where each index's
//! gradient goes, and how several row gradients of one table add up.
//!
//! All of it works on host index lists (indices are batch-sized, tables are not): the
//! checks a lookup runs before anything is recorded ([`check_indices`],
//! [`check_padding_idx`]), the plan of a lookup ([`LookupPlan`]), and the coalescing of row
//! gradients ([`unique_sorted`], [`coalesce`]).

use crate::error::{CoreError, CoreResult};

/// How a batch of indices maps onto the rows of its table.
///
/// # Example
///
/// ```
/// use sparse_adam_core::LookupPlan;
///
/// // Row 0 is the padding row: its lookups get no gradient.
/// let plan = LookupPlan::new(&[4, 0, 2, 4, 0], Some(0));
/// assert_eq!(plan.rows, [2, 4]); // the touched rows, sorted, padding excluded
/// assert_eq!(plan.slots, [1, -1, 0, 1, -1]); // each index's place in `rows`
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LookupPlan {
    /// The distinct rows looked up, sorted, padding excluded: the rows that get a gradient.
    pub rows: Vec<i64>,
    /// For each index, in lookup order, its row's position in `rows`; `-1` for
    /// `padding_idx`.
    pub slots: Vec<i64>,
}

impl LookupPlan {
    /// The plan of a lookup of `indices`, whose `padding_idx` lookups add no gradient.
    ///
    /// The indices are taken as given: check them first with [`check_indices`].
    pub fn new(indices: &[i64], padding_idx: Option<usize>) -> Self {
        let padding = padding_idx.and_then(|p| i64::try_from(p).ok());
        // Batches repeat rows (Zipf-distributed lookups): number the distinct rows in order
        // of first appearance through a hash table, then sort only those, k log k instead
        // of sorting every lookup.
        let mut table = RowNumbers::with_capacity(indices.len());
        let mut first_seen: Vec<i64> = Vec::new();
        let mut slots: Vec<i64> = indices
            .iter()
            .map(|&i| {
                if Some(i) == padding {
                    return -1;
                }
                table.number(i, || {
                    first_seen.push(i);
                    first_seen.len() - 1
                }) as i64
            })
            .collect();
        let mut order: Vec<u32> = (0..first_seen.len() as u32).collect();
        order.sort_unstable_by_key(|&j| first_seen[j as usize]);
        let mut rank = vec![0i64; first_seen.len()];
        for (r, &j) in order.iter().enumerate() {
            rank[j as usize] = r as i64;
        }
        for slot in slots.iter_mut().filter(|s| **s >= 0) {
            *slot = rank[*slot as usize];
        }
        let rows = order.iter().map(|&j| first_seen[j as usize]).collect();
        Self { rows, slots }
    }
}

impl LookupPlan {
    /// The plan of a lookup of `indices` into a table of `n_embedding` rows: the same plan
    /// as [`LookupPlan::new`], planned faster when the table is small next to the batch.
    ///
    /// With at most 256 table rows per lookup, the rows are marked in a bitmap of the table
    /// and a row's slot is the number of marked rows before it (a prefix count of the
    /// bitmap's words): two passes over the indices and one over `n_embedding / 64` words,
    /// no sort. Larger tables take [`LookupPlan::new`]'s hash table.
    ///
    /// # Panics
    ///
    /// When an index is not in `0..n_embedding`: check them first with [`check_indices`].
    ///
    /// # Example
    ///
    /// ```
    /// use sparse_adam_core::LookupPlan;
    ///
    /// let indices = [4, 0, 2, 4, 0];
    /// let plan = LookupPlan::for_table(&indices, Some(0), 5);
    /// assert_eq!(plan, LookupPlan::new(&indices, Some(0)));
    /// assert_eq!(plan.rows, [2, 4]);
    /// ```
    pub fn for_table(indices: &[i64], padding_idx: Option<usize>, n_embedding: usize) -> Self {
        if n_embedding / 256 > indices.len() {
            return Self::new(indices, padding_idx);
        }
        let padding = padding_idx.and_then(|p| i64::try_from(p).ok());
        let row = |i: i64| -> usize {
            match usize::try_from(i) {
                Ok(row) if row < n_embedding => row,
                _ => panic!("index {i} is not a row of the table of {n_embedding} rows"),
            }
        };
        let mut marked = vec![0u64; n_embedding.div_ceil(64)];
        for &i in indices.iter().filter(|&&i| Some(i) != padding) {
            let r = row(i);
            marked[r / 64] |= 1 << (r % 64);
        }
        // `before[w]`: the marked rows in words `0..w`.
        let mut before = Vec::with_capacity(marked.len());
        let mut rows = Vec::new();
        for (w, &word) in marked.iter().enumerate() {
            before.push(rows.len() as i64);
            let mut bits = word;
            while bits != 0 {
                rows.push((w * 64) as i64 + i64::from(bits.trailing_zeros()));
                bits &= bits - 1;
            }
        }
        let slots = indices
            .iter()
            .map(|&i| {
                if Some(i) == padding {
                    return -1;
                }
                let r = row(i);
                let below = marked[r / 64] & ((1u64 << (r % 64)) - 1);
                before[r / 64] + i64::from(below.count_ones())
            })
            .collect();
        Self { rows, slots }
    }
}

/// An open-addressing hash table from rows to the numbers [`LookupPlan::new`] gives them.
struct RowNumbers {
    rows: Vec<i64>,
    /// `u32::MAX`: an empty bucket.
    numbers: Vec<u32>,
    /// `64 - log2(buckets)`: Fibonacci hashing keeps the high bits of `row · φ·2^64`.
    shift: u32,
}

impl RowNumbers {
    /// A table for up to `len` distinct rows, at most half full.
    fn with_capacity(len: usize) -> Self {
        let buckets = (2 * len).next_power_of_two().max(16);
        Self {
            rows: vec![0; buckets],
            numbers: vec![u32::MAX; buckets],
            shift: 64 - buckets.trailing_zeros(),
        }
    }

    /// The number of `row`, given by `new` the first time `row` is seen.
    #[inline]
    fn number(&mut self, row: i64, new: impl FnOnce() -> usize) -> usize {
        let mask = self.numbers.len() - 1;
        let mut bucket = ((row as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> self.shift) as usize;
        loop {
            match self.numbers[bucket] {
                u32::MAX => {
                    let number = new();
                    self.rows[bucket] = row;
                    self.numbers[bucket] = number as u32;
                    return number;
                }
                number if self.rows[bucket] == row => return number as usize,
                _ => bucket = (bucket + 1) & mask,
            }
        }
    }
}

/// Checks that every index is a row of a table of `n_embedding` rows.
///
/// # Errors
///
/// [`CoreError::IndexOutOfRange`] naming the first index `< 0` or `>= n_embedding`.
///
/// # Example
///
/// ```
/// use sparse_adam_core::check_indices;
///
/// assert!(check_indices(&[0, 9], 10).is_ok());
/// assert_eq!(
///     check_indices(&[1, 10], 10).unwrap_err().to_string(),
///     "index out of range in self: index 10 is not in 0..10 (the table has 10 rows)"
/// );
/// ```
pub fn check_indices(indices: &[i64], n_embedding: usize) -> CoreResult<()> {
    let out_of_range = |&&i: &&i64| usize::try_from(i).map_or(true, |i| i >= n_embedding);
    match indices.iter().find(out_of_range) {
        Some(&index) => Err(CoreError::IndexOutOfRange { index, n_embedding }),
        None => Ok(()),
    }
}

/// Checks that `padding_idx`, if any, is a row of a table of `n_embedding` rows.
///
/// # Errors
///
/// [`CoreError::PaddingIdxOutOfRange`] when `padding_idx >= n_embedding`.
pub fn check_padding_idx(padding_idx: Option<usize>, n_embedding: usize) -> CoreResult<()> {
    match padding_idx {
        Some(padding_idx) if padding_idx >= n_embedding => Err(CoreError::PaddingIdxOutOfRange {
            padding_idx,
            n_embedding,
        }),
        _ => Ok(()),
    }
}

/// Checks that a `[rows, width]` table of `element`-byte values fits in `limit` bytes, the
/// largest buffer its device allocates (`None`: no limit).
///
/// # Errors
///
/// [`CoreError::TableOverBindingLimit`] when it does not.
pub fn check_table_size(
    [rows, width]: [usize; 2],
    element: usize,
    limit: Option<u64>,
) -> CoreResult<()> {
    let bytes = rows as u64 * (width * element) as u64;
    match limit {
        Some(limit) if bytes > limit => Err(CoreError::TableOverBindingLimit {
            rows: rows as u64,
            width: width as u64,
            bytes,
            limit,
        }),
        _ => Ok(()),
    }
}

/// The sorted unique values of `indices`, and for each index its position among them (the
/// inverse: `unique[inverse[i]] == indices[i]`).
pub fn unique_sorted(indices: &[i64]) -> (Vec<i64>, Vec<i64>) {
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

/// The sum of several row gradients of one table, each given as its rows and their
/// row-major `[rows.len(), d]` values: the union of the rows, sorted and unique, and their
/// `[union.len(), d]` values, where the values of rows that several parts share are added
/// in the order the parts are given (PyTorch's `coalesce`).
///
/// Each part's rows are usually sorted and unique; a row repeated within a part is added
/// all the same.
///
/// # Panics
///
/// When a part's values are not `rows.len() · d` long.
///
/// # Example
///
/// ```
/// use sparse_adam_core::coalesce;
///
/// let first: (&[i64], &[f32]) = (&[1, 5], &[1.0, 2.0, 3.0, 4.0]);
/// let second: (&[i64], &[f32]) = (&[5, 7], &[10.0, 20.0, 30.0, 40.0]);
/// let (rows, values) = coalesce(&[first, second], 2);
/// assert_eq!(rows, [1, 5, 7]);
/// assert_eq!(values, [1.0, 2.0, 13.0, 24.0, 30.0, 40.0]);
/// ```
pub fn coalesce(parts: &[(&[i64], &[f32])], d: usize) -> (Vec<i64>, Vec<f32>) {
    for (rows, values) in parts {
        assert_eq!(
            values.len(),
            rows.len() * d,
            "a row gradient's values must be rows.len() · d long"
        );
    }
    if parts
        .iter()
        .all(|(rows, _)| rows.windows(2).all(|w| w[0] < w[1]))
    {
        return merge_sorted(parts, d);
    }
    let all_rows: Vec<i64> = parts
        .iter()
        .flat_map(|(rows, _)| rows.iter().copied())
        .collect();
    let (rows, inverse) = unique_sorted(&all_rows);
    let mut summed = vec![0.0f32; rows.len() * d];
    if d > 0 {
        let values = parts.iter().flat_map(|(_, values)| values.chunks_exact(d));
        for (&slot, value) in inverse.iter().zip(values) {
            let start = slot as usize * d;
            for (s, &v) in summed[start..start + d].iter_mut().zip(value) {
                *s += v;
            }
        }
    }
    (rows, summed)
}

/// The union of several lists of sorted, unique rows, sorted, and for each list where its
/// rows went: `union[places[l][i]] == lists[l][i]`. With it, the slots of several lookups
/// of one table ([`LookupPlan::slots`], each into its own plan's rows) become slots into the
/// union, which [`sum_lookups_per_row`](crate::sum_lookups_per_row) takes.
///
/// # Panics
///
/// When a list is not sorted and unique.
///
/// # Example
///
/// ```
/// use sparse_adam_core::union_of_sorted;
///
/// let (union, places) = union_of_sorted(&[&[2, 5], &[1, 5, 9]]);
/// assert_eq!(union, [1, 2, 5, 9]);
/// assert_eq!(places, [vec![1, 2], vec![0, 2, 3]]);
/// ```
pub fn union_of_sorted(lists: &[&[i64]]) -> (Vec<i64>, Vec<Vec<i64>>) {
    assert!(
        lists
            .iter()
            .all(|rows| rows.windows(2).all(|w| w[0] < w[1])),
        "each list of rows must be sorted and unique"
    );
    let mut union = Vec::with_capacity(lists.iter().map(|rows| rows.len()).sum());
    let mut places: Vec<Vec<i64>> = lists
        .iter()
        .map(|rows| Vec::with_capacity(rows.len()))
        .collect();
    let mut next = vec![0usize; lists.len()];
    while let Some(row) = lists
        .iter()
        .zip(&next)
        .filter_map(|(rows, &n)| rows.get(n).copied())
        .min()
    {
        for ((rows, n), places) in lists.iter().zip(next.iter_mut()).zip(places.iter_mut()) {
            if rows.get(*n) == Some(&row) {
                places.push(union.len() as i64);
                *n += 1;
            }
        }
        union.push(row);
    }
    (union, places)
}

/// [`coalesce`] of parts whose rows are sorted and unique (every row gradient this crate
/// makes): the union by one merge ([`union_of_sorted`]), then each part's values added, in
/// the order of the parts, into the zeroed rows where its rows went, reading each part once
/// in order. The same additions as the general path, so the same bits (`-0.0` included: it
/// becomes `0.0` in both).
fn merge_sorted(parts: &[(&[i64], &[f32])], d: usize) -> (Vec<i64>, Vec<f32>) {
    let lists: Vec<&[i64]> = parts.iter().map(|(rows, _)| *rows).collect();
    let (rows, places) = union_of_sorted(&lists);
    let mut summed = vec![0.0f32; rows.len() * d];
    if d > 0 {
        for ((_, values), places) in parts.iter().zip(&places) {
            for (value, &place) in values.chunks_exact(d).zip(places) {
                let row = &mut summed[place as usize * d..][..d];
                for (s, &v) in row.iter_mut().zip(value) {
                    *s += v;
                }
            }
        }
    }
    (rows, summed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_maps_positions_to_unique_rows_and_padding_to_none() {
        let plan = LookupPlan::new(&[4, 0, 2, 4, 0], Some(0));
        assert_eq!(plan.rows, vec![2, 4]);
        assert_eq!(plan.slots, vec![1, -1, 0, 1, -1]);
        let plan = LookupPlan::new(&[7, 1, 7], None);
        assert_eq!(plan.rows, vec![1, 7]);
        assert_eq!(plan.slots, vec![1, 0, 1]);
    }

    /// The plan by sorting every (index, position) pair: the definition the hash-table plan
    /// must equal.
    fn sorted_plan(indices: &[i64], padding: Option<i64>) -> LookupPlan {
        let mut pairs: Vec<(i64, usize)> = indices
            .iter()
            .enumerate()
            .filter(|&(_, &i)| Some(i) != padding)
            .map(|(position, &i)| (i, position))
            .collect();
        pairs.sort_unstable();
        let mut rows = Vec::new();
        let mut slots = vec![-1; indices.len()];
        for (i, position) in pairs {
            if rows.last() != Some(&i) {
                rows.push(i);
            }
            slots[position] = rows.len() as i64 - 1;
        }
        LookupPlan { rows, slots }
    }

    /// On batches with many repeats, none, colliding hashes (multiples of the bucket count),
    /// padding and unchecked values (negative, huge), the plan is the sorting one.
    #[test]
    fn plan_equals_the_sorting_definition() {
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let mut next = |m: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % m
        };
        let mut batches: Vec<Vec<i64>> = vec![
            (0..5_000).map(|_| next(300) as i64).collect(),
            (0..5_000).map(|_| next(1 << 40) as i64).collect(),
            (0..4_096).map(|i| i * 8_192).collect(),
            (0..2_000).rev().collect(),
            vec![i64::MIN, -1, i64::MAX, 0, -1, i64::MIN],
            vec![9],
        ];
        batches.push((0..10_000).map(|_| (next(50) * next(50)) as i64).collect());
        for indices in &batches {
            for padding in [None, Some(0usize), Some(9)] {
                let expected = sorted_plan(indices, padding.map(|p| p as i64));
                assert_eq!(
                    LookupPlan::new(indices, padding),
                    expected,
                    "{} indices, padding {padding:?}",
                    indices.len()
                );
                // The bitmap plan, where the indices are rows of a table: of the smallest
                // such table, of one 64·k + 1 rows larger (a partial last word), and of one
                // too large for the bitmap (the hash plan).
                if let (Some(&min), Some(&max)) = (indices.iter().min(), indices.iter().max()) {
                    if min >= 0 && max < 1 << 32 {
                        let n = max as usize + 1;
                        for n in [n, n + 64 * 3 + 1, 257 * indices.len() + n] {
                            assert_eq!(
                                LookupPlan::for_table(indices, padding, n),
                                expected,
                                "{} indices, {n} rows, padding {padding:?}",
                                indices.len()
                            );
                        }
                    }
                }
            }
        }
        assert_eq!(LookupPlan::for_table(&[], None, 0), LookupPlan::default());
    }

    #[test]
    #[should_panic(expected = "index 5 is not a row of the table of 5 rows")]
    fn the_bitmap_plan_names_an_index_past_the_table() {
        LookupPlan::for_table(&[0, 5], None, 5);
    }

    #[test]
    fn plan_of_only_padding_touches_nothing() {
        let plan = LookupPlan::new(&[3, 3], Some(3));
        assert!(plan.rows.is_empty());
        assert_eq!(plan.slots, vec![-1, -1]);
    }

    #[test]
    fn plan_of_nothing_is_empty() {
        assert_eq!(LookupPlan::new(&[], Some(0)), LookupPlan::default());
    }

    #[test]
    fn indices_must_be_rows() {
        assert_eq!(check_indices(&[], 0), Ok(()));
        assert_eq!(check_indices(&[0, 4, 2], 5), Ok(()));
        assert_eq!(
            check_indices(&[0, -1, 7], 5).unwrap_err().to_string(),
            "index out of range in self: index -1 is not in 0..5 (the table has 5 rows)"
        );
        assert_eq!(
            check_indices(&[0, 7, -1], 5),
            Err(CoreError::IndexOutOfRange {
                index: 7,
                n_embedding: 5
            })
        );
        assert_eq!(
            check_indices(&[0], 0),
            Err(CoreError::IndexOutOfRange {
                index: 0,
                n_embedding: 0
            })
        );
    }

    #[test]
    fn padding_idx_must_be_a_row() {
        assert_eq!(check_padding_idx(None, 0), Ok(()));
        assert_eq!(check_padding_idx(Some(2), 3), Ok(()));
        assert_eq!(
            check_padding_idx(Some(3), 3).unwrap_err().to_string(),
            "padding_idx 3 is not a row of the table: it must be in 0..3"
        );
    }

    #[test]
    fn unique_sorted_gives_the_inverse() {
        let (unique, inverse) = unique_sorted(&[9, 2, 9, -3, 2, 5]);
        assert_eq!(unique, [-3, 2, 5, 9]);
        assert_eq!(inverse, [3, 1, 3, 0, 1, 2]);
        assert_eq!(unique_sorted(&[]), (vec![], vec![]));
    }

    #[test]
    fn coalesce_adds_shared_rows_in_the_order_given() {
        // Values picked so that the order of the additions shows in the last bit:
        // (1e8 + 1) + (−1e8) is 0 in f32, (1e8 + −1e8) + 1 is 1.
        let a: (&[i64], &[f32]) = (&[3], &[1e8]);
        let b: (&[i64], &[f32]) = (&[0, 3], &[5.0, 1.0]);
        let c: (&[i64], &[f32]) = (&[3, 8], &[-1e8, 2.0]);
        let (rows, values) = coalesce(&[a, b, c], 1);
        assert_eq!(rows, [0, 3, 8]);
        assert_eq!(values, [5.0, 0.0, 2.0]);
        let (rows, values) = coalesce(&[a, c, b], 1);
        assert_eq!(rows, [0, 3, 8]);
        assert_eq!(values, [5.0, 1.0, 2.0]);
    }

    /// The definition the merge must give bit for bit: every part's rows, numbered among
    /// the sorted union, added into zeroed rows in the order of the parts.
    fn coalesce_by_sorting(parts: &[(&[i64], &[f32])], d: usize) -> (Vec<i64>, Vec<f32>) {
        let all: Vec<i64> = parts.iter().flat_map(|(r, _)| r.iter().copied()).collect();
        let (rows, inverse) = unique_sorted(&all);
        let mut summed = vec![0.0f32; rows.len() * d];
        let values = parts.iter().flat_map(|(_, v)| v.chunks_exact(d));
        for (&slot, value) in inverse.iter().zip(values) {
            for (s, &v) in summed[slot as usize * d..][..d].iter_mut().zip(value) {
                *s += v;
            }
        }
        (rows, summed)
    }

    /// Sorted parts take the merge: on parts that overlap in every way (shared rows, rows of
    /// one part only, an empty part, `-0.0` and values whose sum shows the order), it gives
    /// the bits of the sorting definition.
    #[test]
    fn coalesce_of_sorted_parts_is_the_sorting_one_bit_for_bit() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..200 {
            let d = 1 + round % 3;
            let owned: Vec<(Vec<i64>, Vec<f32>)> = (0..1 + round % 4)
                .map(|_| {
                    let mut rows: Vec<i64> =
                        (0..next() % 12).map(|_| (next() % 20) as i64).collect();
                    rows.sort_unstable();
                    rows.dedup();
                    let values = (0..rows.len() * d)
                        .map(|_| match next() % 5 {
                            0 => -0.0,
                            1 => 1e8,
                            2 => -1e8,
                            _ => (next() % 1000) as f32 / 7.0 - 70.0,
                        })
                        .collect();
                    (rows, values)
                })
                .collect();
            let parts: Vec<(&[i64], &[f32])> = owned
                .iter()
                .map(|(r, v)| (r.as_slice(), v.as_slice()))
                .collect();
            let (rows, values) = coalesce(&parts, d);
            let (rows_expected, values_expected) = coalesce_by_sorting(&parts, d);
            assert_eq!(rows, rows_expected, "round {round}");
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&values), bits(&values_expected), "round {round}");
        }
    }

    #[test]
    fn union_of_sorted_lists_and_where_each_row_went() {
        let (union, places) = union_of_sorted(&[&[0, 4, 9], &[], &[4, 5], &[9]]);
        assert_eq!(union, [0, 4, 5, 9]);
        assert_eq!(places, [vec![0, 1, 3], vec![], vec![1, 2], vec![3]]);
        assert_eq!(union_of_sorted(&[]), (vec![], vec![]));
    }

    #[test]
    #[should_panic(expected = "sorted and unique")]
    fn union_of_sorted_rejects_unsorted_lists() {
        let _ = union_of_sorted(&[&[1, 1]]);
    }

    #[test]
    fn coalesce_of_nothing_and_of_zero_width() {
        assert_eq!(coalesce(&[], 4), (vec![], vec![]));
        let empty: (&[i64], &[f32]) = (&[], &[]);
        assert_eq!(coalesce(&[empty, empty], 3), (vec![], vec![]));
        let narrow: (&[i64], &[f32]) = (&[4, 1], &[]);
        assert_eq!(coalesce(&[narrow, narrow], 0), (vec![1, 4], vec![]));
    }

    #[test]
    #[should_panic(expected = "rows.len() · d long")]
    fn coalesce_rejects_values_of_another_length() {
        let bad: (&[i64], &[f32]) = (&[1, 2], &[1.0, 2.0, 3.0]);
        let _ = coalesce(&[bad], 2);
    }
}
