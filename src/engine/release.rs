//! Gives memory the allocator holds free back to the operating system,
//! after the engine's large transients (a checkpoint build of the live
//! series, a snapshot's capture and bytes, a build of the state at open).
//! Must not be called per event: it walks the allocator's arenas.
//!
//! Why: glibc's malloc keeps freed memory of its per-thread arenas
//! resident (it trims only the top of an arena, and a build's transient is
//! freed around what the state keeps). Measured at 1,000,000 events
//! (ARCHITECTURE.md, "Memory"): `serve` resident 605 MB after a restart
//! from a snapshot, 390 MB after `malloc_trim(0)`; 1,055 MB after a first
//! open and its snapshot, 547 MB after.

/// Returns the allocator's free pages to the operating system (glibc:
/// `malloc_trim(0)`, which walks every arena; elsewhere nothing).
pub(crate) fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointer and only releases free pages;
    // glibc makes it safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}
