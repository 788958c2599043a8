//! The export binaries' allocator (mimalloc), told to return freed memory to the system at
//! once.
//!
//! An export frees as fast as it allocates: every day file's items, its JSON and its deflated
//! bytes live for milliseconds. mimalloc v3 keeps freed pages for `purge_delay` — a whole second by
//! default (its options table; the header's "=10" is stale) — before returning them, and at
//! 60–70 MB/s of JSON that delay alone held about
//! 100 MiB of resident memory above the live data in the large export benchmark (peak 255 MiB
//! with the default, 157 MiB with no delay; `docs/performance.md`) — more than the shares of
//! the memory budget, so the budget could not bound the process. Purging at once costs a few
//! system calls per freed page run and no measurable throughput.

/// `mi_option_purge_delay` in mimalloc v3, the version libmimalloc-sys builds by default (the
/// C enum's position; the crate does not export it "for stability reasons").
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Makes mimalloc return freed memory at once. Call first thing in `main`, before any thread
/// starts: mimalloc's option setters are not thread safe.
#[allow(unsafe_code)]
pub fn return_freed_memory_at_once() {
    // SAFETY: `mi_option_set` stores an option's value; it takes plain integers, touches no
    // memory of ours, and is called before any other thread exists (see above).
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
}

#[cfg(test)]
mod tests {
    /// The index is the purge delay's: it reads mimalloc v3's default (1,000 ms) before
    /// it is set, and 0 after.
    #[test]
    #[allow(unsafe_code)]
    fn the_index_is_the_purge_delay() {
        // SAFETY: reads an option's value; no memory of ours is touched.
        let read = || unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY) };
        assert_eq!(
            read(),
            1000,
            "not mimalloc v3's purge_delay (default 1,000 ms)"
        );
        super::return_freed_memory_at_once();
        assert_eq!(read(), 0);
    }
}
