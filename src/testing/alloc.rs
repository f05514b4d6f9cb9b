//! A counting global allocator for tests that check a hot path allocates nothing.
//!
//! Install it in a test binary with
//! `#[global_allocator] static GLOBAL: CountingAllocator = CountingAllocator;` and compare
//! [`allocations_on_this_thread`] before and after the code under test. Counts are per
//! thread, so tests of the same binary running concurrently do not disturb each other.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// The system allocator, counting allocations per thread.
pub struct CountingAllocator;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

/// Allocations made so far by the calling thread (under [`CountingAllocator`]).
pub fn allocations_on_this_thread() -> usize {
    ALLOCATIONS.with(|a| a.get())
}

// SAFETY: forwards every call to the system allocator unchanged; the counter is a
// thread-local `Cell` that is skipped while the thread-local is being torn down.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|a| a.set(a.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}
