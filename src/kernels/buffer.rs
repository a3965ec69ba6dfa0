//! Large weight buffers: zero-filled by the operating system (not by a serial fill) and, on
//! Linux, asked to be backed by 2 MiB pages before anything touches them.
//!
//! A load writes every weight into a fresh buffer (weights are held transposed). With 4 KiB
//! pages that is one page fault per 4 KiB — some 130 000 for a 540 MB model, a large share of
//! the load spent in the kernel's fault path (benches/RESULTS.md) — and decoding then streams
//! the weights through a TLB that holds a small fraction of those pages. With transparent huge
//! pages in `madvise` mode (a common default) a buffer gets 2 MiB pages only when asked, so it
//! is asked here; where the kernel has none to give, or THP is off, nothing changes but the
//! page size.

/// Below this, a buffer is left to the allocator as is (huge pages need 2 MiB-aligned ranges).
const MIN_BYTES: usize = 4 << 20;

/// `len` zero values in a new vector, zeroed by the allocator (`calloc`: fresh pages from the
/// OS are already zero, so nothing is written now), with large buffers advised to use huge
/// pages before their first write.
pub(crate) fn zeroed<T: bytemuck::Zeroable>(len: usize) -> Vec<T> {
    let v: Vec<T> = bytemuck::zeroed_vec(len);
    advise_huge(&v);
    v
}

/// Asks for 2 MiB pages over the whole 2 MiB-aligned pages inside `v` (Linux; a hint that is
/// harmless to refuse).
fn advise_huge<T>(v: &[T]) {
    let bytes = std::mem::size_of_val(v);
    if bytes < MIN_BYTES {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let start = v.as_ptr() as usize;
        let (lo, hi) = (start.next_multiple_of(HUGE), (start + bytes) / HUGE * HUGE);
        if hi > lo {
            // SAFETY: `lo..hi` lies inside `v`'s allocation, which stays mapped; MADV_HUGEPAGE
            // only changes how the range's pages are backed, never their contents.
            unsafe {
                libc::madvise(lo as *mut libc::c_void, hi - lo, libc::MADV_HUGEPAGE);
            }
        }
    }
}

/// Faults in (writable, zeroed) the whole pages inside `v` in one call (Linux 5.14+; a hint that
/// is harmless to refuse): one system call instead of a page fault per 4 KiB on the first write.
#[cfg_attr(not(feature = "flex"), allow(dead_code))]
pub(crate) fn populate<T>(v: &mut [T]) {
    let bytes = std::mem::size_of_val(v);
    if bytes < (64 << 10) {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        const PAGE: usize = 4096;
        let start = v.as_mut_ptr() as usize;
        let (lo, hi) = (start.next_multiple_of(PAGE), (start + bytes) / PAGE * PAGE);
        if hi > lo {
            // SAFETY: `lo..hi` lies inside `v`, which is mapped and writable; populating only
            // faults its pages in (contents unchanged: fresh pages are zero, others kept).
            unsafe {
                libc::madvise(lo as *mut libc::c_void, hi - lo, libc::MADV_POPULATE_WRITE);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    /// Populating pages keeps what a buffer holds: zeros in a fresh one, values in a used one.
    #[test]
    fn populating_keeps_the_contents() {
        let mut v = super::zeroed::<f32>((3 << 20) / 4 + 5);
        super::populate(&mut v);
        assert!(v.iter().all(|x| x.to_bits() == 0));
        v.iter_mut().enumerate().for_each(|(i, x)| *x = i as f32);
        super::populate(&mut v[7..]);
        assert!(v.iter().enumerate().all(|(i, x)| *x == i as f32));
    }

    #[test]
    fn zeroed_buffers_are_zero_of_every_size() {
        for len in [0usize, 1, 1000, (5 << 20) / 4 + 3] {
            let v = super::zeroed::<f32>(len);
            assert_eq!(v.len(), len);
            assert!(v.iter().all(|x| x.to_bits() == 0));
            let h = super::zeroed::<half::bf16>(len);
            assert!(h.iter().all(|x| x.to_bits() == 0));
        }
    }
}
