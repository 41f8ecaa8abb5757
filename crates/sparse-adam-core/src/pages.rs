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
//! takes minutes per gigabyte). Both are hints: the values never change, and a kernel that
//! refuses (transparent huge pages set to `never`, an older kernel, no free huge page)
//! leaves the table as it was. On other systems it does nothing.

/// The size of a transparent huge page on the architectures Linux runs this crate on
/// (x86_64 and aarch64 with 4 KiB base pages).
pub const HUGE_PAGE_BYTES: usize = 2 << 20;

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
    /// huge pages are not built in): nothing changed.
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

    #[test]
    fn a_table_without_a_whole_aligned_huge_page_is_left_alone() {
        assert_eq!(advise_huge_pages::<f32>(&mut []), HugePageAdvice::TooSmall);
        let mut small = vec![1.0f32; 1000];
        assert_eq!(advise_huge_pages(&mut small), HugePageAdvice::TooSmall);
        assert!(small.iter().all(|&x| x == 1.0));
    }
}
