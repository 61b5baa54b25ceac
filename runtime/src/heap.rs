//! Returning freed heap memory to the operating system after one-time load work.
//!
//! Loading a model parses its tokenizer from JSON: tens of MiB of short-lived allocations,
//! freed once the tokenizer is built. glibc's allocator keeps most of those pages mapped
//! for reuse (freed chunks below the top of the heap are not given back), so they stay in
//! the process's resident set for its whole life although nothing uses them.

/// Gives the heap's free pages back to the OS (glibc `malloc_trim`); returns whether any
/// memory was released. A no-op elsewhere.
pub fn release_free_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim only walks the allocator's own free lists under its locks;
        // it neither moves nor frees memory that is in use.
        unsafe { libc::malloc_trim(0) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn freed_allocations_can_be_released() {
        // Many small blocks (below the mmap threshold, so they live on the heap), freed
        // below the last one, still in use, so that `free` alone cannot shrink the heap.
        let mut blocks: Vec<Vec<u8>> = (0..20_000).map(|i| vec![i as u8; 1000]).collect();
        let fence = blocks.pop();
        drop(blocks);
        let released = super::release_free_memory();
        drop(fence);
        if cfg!(all(target_os = "linux", target_env = "gnu")) {
            assert!(released, "20 MB of freed heap blocks should be released");
        } else {
            assert!(!released);
        }
    }
}
