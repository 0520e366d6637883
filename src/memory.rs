//! Large tables allocated once: zeroed (so untouched pages cost nothing) and advised to
//! the kernel as huge-page candidates (`MADV_HUGEPAGE`), because per-node state is read at
//! random across tens of megabytes and 4 KiB pages would make most lookups a TLB miss.

/// Advises the kernel to back `v`'s memory with transparent huge pages where it can.
/// Harmless where THP is off or the range is small: the advice is then ignored.
pub fn advise_huge<T>(v: &mut [T]) {
    const HUGE: usize = 2 << 20;
    let bytes = std::mem::size_of_val(v);
    if bytes < HUGE {
        return;
    }
    let start = v.as_mut_ptr() as usize;
    let aligned = start.next_multiple_of(HUGE);
    let end = (start + bytes) / HUGE * HUGE;
    if end <= aligned {
        return;
    }
    #[allow(unsafe_code)]
    // SAFETY: [aligned, end) lies inside `v`'s allocation, which we own mutably;
    // MADV_HUGEPAGE changes how the kernel backs the pages, never their contents.
    unsafe {
        libc::madvise(aligned as *mut libc::c_void, end - aligned, libc::MADV_HUGEPAGE);
    }
}

/// A zeroed vector of `n` copies of `zero` (which must be all-zero bits for the
/// allocation to stay lazy), advised for huge pages.
pub fn table<T: Clone>(zero: T, n: usize) -> Vec<T> {
    let mut v = vec![zero; n];
    advise_huge(&mut v);
    v
}
