//! Huge pages for the tables the row update scatters over.
//!
//! A step touches a few thousand rows scattered over tables of up to gigabytes. With 4 KiB
//! pages nearly every touched row of a large table misses the TLB, and beyond a few hundred
//! megabytes the page-table walk itself misses the caches: on the machines measured, a loop
//! that only moves the update's bytes took twice as long per touched row at 10^7 rows as at
//! 10^5 (BENCHMARKS.md, "Huge pages"). One 2 MiB page maps what 512 small ones do, so the
//! page tables of a 7.7 GB table fit in the caches again.
//!
//! [`advise_huge_pages`] asks Linux for transparent huge pages on the 2 MiB-aligned part of
//! a table: `madvise(MADV_HUGEPAGE)`, so that pages not yet written come as huge pages, then
//! `madvise(MADV_COLLAPSE)` (Linux 6.1 and later), so that those already written are moved
//! into huge pages now rather than by the kernel's background scan (`khugepaged`, which
//! takes minutes per gigabyte). Both are hints: the values never change whatever the kernel
//! does. Where transparent huge pages are set to `never`, `MADV_HUGEPAGE` still succeeds but
//! no fault gives a huge page, while `MADV_COLLAPSE`, documented as independent of those
//! settings, may still move pages already written; a kernel without transparent huge pages
//! refuses both, an older one the collapse, and without a free huge page the collapse fails:
//! the table stays as it was. On other systems it does nothing.
//!
//! A table of at least [`HUGE_TABLE_BYTES`] made for the row update is best made on huge
//! pages from the start:
//! [`zeros_on_huge_pages`] for moments, [`copy_to_huge_pages`] for a parameter written
//! elsewhere (the CPU paths of both Burn lines make a table's first state this way, and copy
//! the moments of a record read back, and on the 0.1 line a loaded table, the same way).

/// The size of a transparent huge page on the architectures Linux runs this crate on
/// (x86_64 and aarch64 with 4 KiB base pages).
pub const HUGE_PAGE_BYTES: usize = 2 << 20;

/// The smallest table, in bytes, that the Burn lines put on huge pages: 64 MiB.
///
/// Making a table on huge pages can cost more than on small ones: on a shared VM whose
/// kernel's free huge pages were not yet backed by the hypervisor, 21 MB of zeros took up
/// to 40 ms on huge pages against 8 ms on small ones (2.5 ms when they were backed), and a
/// first step pays it for every table at once (0.3 s of the WordNet example's first epoch
/// once). The gain is in the steps of tables far beyond the caches: on huge pages the row
/// update's memory floor (flushed caches) fell by a sixth to a half from 24 MB to 2.4 GB
/// tables, the optimizer step at 2.4 GB by up to two thirds, while no step of the WordNet
/// example's 21 MB tables was faster beyond the noise.
pub const HUGE_TABLE_BYTES: usize = 64 << 20;

// A table at the threshold holds at least one whole, aligned huge page wherever it starts.
const _: () = assert!(HUGE_TABLE_BYTES >= 2 * HUGE_PAGE_BYTES);

/// Whether a table of `len` `f32` values goes on huge pages: [`HUGE_TABLE_BYTES`] or more.
/// Its moments follow it whatever their type, so `len` counts the parameter's values.
pub fn is_huge_table(len: usize) -> bool {
    len.saturating_mul(core::mem::size_of::<f32>()) >= HUGE_TABLE_BYTES
}

/// What [`advise_huge_pages`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HugePageAdvice {
    /// `bytes` bytes (whole, aligned huge pages) were advised, and those already written
    /// were collapsed into huge pages (`collapsed`) or left to the kernel's background scan
    /// (`!collapsed`: `MADV_COLLAPSE` unknown to the kernel, or no huge page free).
    Advised {
        /// The bytes advised: the 2 MiB-aligned interior of the table.
        bytes: usize,
        /// Whether `MADV_COLLAPSE` succeeded on all of them.
        collapsed: bool,
    },
    /// The table holds no whole, aligned huge page: nothing was asked.
    TooSmall,
    /// The kernel refused `MADV_HUGEPAGE` (the `errno`, e.g. `EINVAL` where transparent
    /// huge pages are not built in; not under the `never` setting, where it succeeds):
    /// nothing changed.
    Refused(i32),
    /// Not Linux: nothing was asked.
    Unsupported,
}

/// Asks the kernel to back the 2 MiB-aligned part of `values` with huge pages (see the
/// [module docs](self)); `values` keeps its contents whatever the answer.
///
/// Taking `&mut` makes the caller the table's only user while the kernel moves its pages
/// (the kernel does not need it; it keeps the call from racing a writer on another thread
/// for the whole of a collapse, which would only slow both down).
///
/// # Example
///
/// ```
/// use sparse_adam_core::pages::{advise_huge_pages, HugePageAdvice};
///
/// let mut table = vec![0.5f32; 1 << 20]; // 4 MiB: at least one aligned huge page
/// let advice = advise_huge_pages(&mut table);
/// assert!(table.iter().all(|&x| x == 0.5));
/// if let HugePageAdvice::Advised { bytes, .. } = advice {
///     assert!(bytes >= 2 << 20 && bytes <= 4 << 20);
/// }
/// ```
pub fn advise_huge_pages<T>(values: &mut [T]) -> HugePageAdvice {
    let start = values.as_mut_ptr() as usize;
    let end = start + core::mem::size_of_val(values);
    let first = start.next_multiple_of(HUGE_PAGE_BYTES);
    let last = end - end % HUGE_PAGE_BYTES;
    if last <= first {
        return HugePageAdvice::TooSmall;
    }
    advise(first, last - first)
}

/// `len` zeros in memory advised onto huge pages before its first write, every page then
/// faulted in here (one write per 4 KiB): a zeroed allocation of a table's size is usually a
/// fresh mapping that nothing has written, so its pages come as huge pages at their first
/// write (the collapse that [`advise_huge_pages`] also asks for finds nothing written and
/// fails, harmlessly; where the allocator reuses written memory, it moves those pages).
/// Faulting them now keeps the faults out of the steps: left to the row updates, each first
/// write to a huge page clears 2 MiB in the middle of a step (at 10^7 rows the median
/// optimizer step of a run's first 33 steps was 9.7 ms instead of 0.6).
///
/// # Example
///
/// ```
/// let moments = sparse_adam_core::pages::zeros_on_huge_pages::<f32>(1 << 20);
/// assert!(moments.iter().all(|&x| x.to_bits() == 0));
/// ```
pub fn zeros_on_huge_pages<T: ZeroBits>(len: usize) -> Vec<T> {
    let mut values = T::zeroed_vec(len);
    let _ = advise_huge_pages(&mut values);
    let per_page = (4096 / core::mem::size_of::<T>().max(1)).max(1);
    in_pieces(&mut values, |_, piece| {
        for lane in piece.iter_mut().step_by(per_page) {
            // A volatile write of the zero already there: the compiler knows that zeroed
            // memory holds zeros and could drop a plain one. SAFETY: `lane` is a valid,
            // aligned, exclusive reference into `piece`.
            unsafe { core::ptr::write_volatile(lane, T::ZERO) };
        }
    });
    values
}

/// `values` copied into memory on huge pages (advised as in [`zeros_on_huge_pages`]; the
/// copy's writes fault the pages in): for a table already written on small pages, where
/// collapsing its pages in place (`MADV_COLLAPSE`) took 6.5 s for 2.5 GB against about 1 s
/// for a copy on one thread (2026-12-07; the copy is split across threads since).
pub fn copy_to_huge_pages<T: ZeroBits>(values: &[T]) -> Vec<T> {
    let mut copy = T::zeroed_vec(values.len());
    let _ = advise_huge_pages(&mut copy);
    in_pieces(&mut copy, |start, piece| {
        piece.copy_from_slice(&values[start..start + piece.len()]);
    });
    copy
}

/// The bytes of a table one thread faults in or copies at a time: eight huge pages' worth,
/// counted from the table's start (so not aligned to the pages: where two pieces share a
/// huge page, whichever thread writes it first faults it in, and the values are the same).
const PIECE_BYTES: usize = 8 * HUGE_PAGE_BYTES;

/// Calls `f(start, piece)` for consecutive pieces of `values` of [`PIECE_BYTES`], `start`
/// being the index of the piece's first element, split across rayon's current pool with
/// the `parallel` feature (on one thread without it, on a one-thread pool, or for a table of
/// one piece). Faulting in fresh pages is the cost that splitting cuts: on a virtual
/// machine whose host backs a huge page only at its first write, 1.6 GB of zeros took
/// 1.8–2.8 s on two threads against 4.0–4.3 s on one, and copies 0.10–0.17 s against
/// 0.30–0.44 s; on memory the host had backed already, zeros once took 0.99 s against 0.70
/// (BENCHMARKS.md, "Resumed runs on huge pages"). The values are the same whatever the
/// split: each piece is written once.
fn in_pieces<T: ZeroBits>(values: &mut [T], f: impl Fn(usize, &mut [T]) + Sync) {
    let per_piece = (PIECE_BYTES / core::mem::size_of::<T>().max(1)).max(1);
    #[cfg(feature = "parallel")]
    {
        if rayon::current_num_threads() > 1 && values.len() > per_piece {
            use rayon::prelude::*;
            values
                .par_chunks_mut(per_piece)
                .enumerate()
                .for_each(|(i, piece)| f(i * per_piece, piece));
            return;
        }
    }
    for (i, piece) in values.chunks_mut(per_piece).enumerate() {
        f(i * per_piece, piece);
    }
}

/// The element types of the tables ([`f32`] parameters, [`MomentElement`] moments) whose
/// all-zero bits are `+0.0`, so that a zeroed allocation (`calloc`, which leaves a fresh
/// mapping unwritten) holds zeros of them.
///
/// [`MomentElement`]: crate::MomentElement
pub trait ZeroBits: Copy + Send + Sync + sealed::Sealed {
    /// `+0.0`.
    const ZERO: Self;
    /// `len` zeros from a zeroed allocation.
    fn zeroed_vec(len: usize) -> Vec<Self>;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for half::bf16 {}
    impl Sealed for half::f16 {}
}

impl ZeroBits for f32 {
    const ZERO: Self = 0.0;
    fn zeroed_vec(len: usize) -> Vec<Self> {
        vec![0.0; len]
    }
}

/// `bf16` and `f16` are `u16`s underneath (`#[repr(transparent)]`), and `+0.0` is all zero
/// bits; `vec![bf16::ZERO; n]` would write every lane instead of asking for zeroed memory.
macro_rules! zero_bits_of_u16 {
    ($($t:ty),*) => {$(
        impl ZeroBits for $t {
            const ZERO: Self = <$t>::ZERO;
            fn zeroed_vec(len: usize) -> Vec<Self> {
                let mut bits = core::mem::ManuallyDrop::new(vec![0u16; len]);
                let (ptr, len, capacity) = (bits.as_mut_ptr(), bits.len(), bits.capacity());
                // SAFETY: `$t` is `#[repr(transparent)]` over `u16` (same size and alignment,
                // so the allocation's layout is the same), every bit pattern is a value of
                // it, and the vector of `u16` is not used after its parts are taken.
                unsafe { Vec::from_raw_parts(ptr.cast::<$t>(), len, capacity) }
            }
        }
    )*};
}
zero_bits_of_u16!(half::bf16, half::f16);

#[cfg(target_os = "linux")]
fn advise(address: usize, bytes: usize) -> HugePageAdvice {
    // Linux's `MADV_COLLAPSE` (include/uapi/asm-generic/mman-common.h): the same value on
    // every architecture, though only glibc's bindings in the `libc` crate name it.
    const MADV_COLLAPSE: libc::c_int = 25;
    let madvise = |advice| {
        // SAFETY: `address..address + bytes` lies inside the live allocation behind the
        // caller's `&mut` slice and is page-aligned; these two pieces of advice change how
        // its pages are mapped, never their contents or the mapping's protection.
        let status = unsafe { libc::madvise(address as *mut libc::c_void, bytes, advice) };
        if status == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
        }
    };
    if let Err(errno) = madvise(libc::MADV_HUGEPAGE) {
        return HugePageAdvice::Refused(errno);
    }
    HugePageAdvice::Advised {
        bytes,
        collapsed: madvise(MADV_COLLAPSE).is_ok(),
    }
}

#[cfg(not(target_os = "linux"))]
fn advise(_address: usize, _bytes: usize) -> HugePageAdvice {
    HugePageAdvice::Unsupported
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `AnonHugePages` of the mappings that hold `address` (the advice splits the
    /// table's mapping at the huge-page boundaries: the one holding the first aligned page).
    #[cfg(target_os = "linux")]
    fn anon_huge_kib_around(address: usize) -> Option<usize> {
        let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
        let mut inside = false;
        for line in smaps.lines() {
            let range = line.split_whitespace().next().unwrap_or("");
            if let Some((lo, hi)) = range.split_once('-') {
                if let (Ok(lo), Ok(hi)) =
                    (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
                {
                    inside = (lo..hi).contains(&address);
                    continue;
                }
            }
            if let Some(kib) = line.strip_prefix("AnonHugePages:").filter(|_| inside) {
                return kib.trim().trim_end_matches("kB").trim().parse().ok();
            }
        }
        None
    }

    /// Advice covers exactly the whole aligned huge pages inside the table, a collapse
    /// leaves them in huge pages, and the values keep their bits, written before or after.
    #[cfg(target_os = "linux")]
    #[test]
    fn advice_covers_the_aligned_interior_and_keeps_the_values() {
        let len = 3 * HUGE_PAGE_BYTES / 4 + 12_345;
        let mut table: Vec<f32> = (0..len).map(|i| (i as f32).sin()).collect();
        let expected: Vec<u32> = table.iter().map(|x| x.to_bits()).collect();
        let advice = advise_huge_pages(&mut table);
        let bits: Vec<u32> = table.iter().map(|x| x.to_bits()).collect();
        assert!(bits == expected, "advice changed the table's values");
        let start = table.as_ptr() as usize;
        let end = start + len * 4;
        let interior =
            end / HUGE_PAGE_BYTES * HUGE_PAGE_BYTES - start.next_multiple_of(HUGE_PAGE_BYTES);
        match advice {
            HugePageAdvice::Advised { bytes, collapsed } => {
                assert_eq!(bytes, interior);
                if collapsed {
                    let huge = anon_huge_kib_around(start.next_multiple_of(HUGE_PAGE_BYTES))
                        .expect("the table's mapping");
                    assert!(
                        huge * 1024 >= bytes,
                        "collapsed, yet {huge} KiB of huge pages for {bytes} bytes"
                    );
                }
            }
            HugePageAdvice::Refused(errno) => assert_ne!(errno, 0),
            other => panic!("a {}-byte table on Linux: {other:?}", len * 4),
        }
        // Written after the advice (the pages fault in as huge pages where the kernel can).
        table.iter_mut().for_each(|x| *x += 1.0);
        assert!(table
            .iter()
            .zip(&expected)
            .all(|(x, &e)| *x == f32::from_bits(e) + 1.0));
    }

    /// Zeros are `+0.0` in every type, a copy keeps every bit, at sizes below and above a
    /// huge page.
    #[test]
    fn zeros_and_copies_on_huge_pages_hold_the_values() {
        for len in [0, 1, 1000, 3 * HUGE_PAGE_BYTES / 2 + 7] {
            assert!(zeros_on_huge_pages::<f32>(len)
                .iter()
                .all(|x| x.to_bits() == 0));
            let bf = zeros_on_huge_pages::<half::bf16>(len);
            assert!(bf.len() == len && bf.iter().all(|x| x.to_bits() == 0));
            let hf = zeros_on_huge_pages::<half::f16>(len);
            assert!(hf.len() == len && hf.iter().all(|x| x.to_bits() == 0));
            let values: Vec<f32> = (0..len).map(|i| (i as f32 * 0.37).sin() * -1e30).collect();
            let copy = copy_to_huge_pages(&values);
            assert!(copy
                .iter()
                .zip(&values)
                .all(|(a, b)| a.to_bits() == b.to_bits()));
            assert_eq!(copy.len(), len);
        }
    }

    /// A table of several pieces, faulted in and copied by two threads, holds the same
    /// zeros and the same bits as on one.
    #[cfg(feature = "parallel")]
    #[test]
    fn tables_of_several_pieces_split_across_threads_hold_the_values() {
        let len = 2 * PIECE_BYTES / 4 + 3 * HUGE_PAGE_BYTES / 4 + 5;
        let values: Vec<f32> = (0..len).map(|i| (i as f32 * 0.37).sin() * 1e-20).collect();
        for threads in [1, 2] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let (zeros, copy) = pool.install(|| {
                (
                    zeros_on_huge_pages::<half::bf16>(len),
                    copy_to_huge_pages(&values),
                )
            });
            assert!(zeros.len() == len && zeros.iter().all(|x| x.to_bits() == 0));
            assert_eq!(copy.len(), len);
            assert!(
                copy.iter()
                    .zip(&values)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{threads} threads changed the copy"
            );
        }
    }

    #[test]
    fn a_table_without_a_whole_aligned_huge_page_is_left_alone() {
        assert_eq!(advise_huge_pages::<f32>(&mut []), HugePageAdvice::TooSmall);
        let mut small = vec![1.0f32; 1000];
        assert_eq!(advise_huge_pages(&mut small), HugePageAdvice::TooSmall);
        assert!(small.iter().all(|&x| x == 1.0));
    }
}
