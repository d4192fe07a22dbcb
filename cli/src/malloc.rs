//! glibc's allocator, tuned for a process that moves megabyte buffers between threads.
//!
//! By default glibc raises its mmap threshold to the size of the largest block freed (up to
//! 32 MiB) and its trim threshold to twice that, so after the first 17 MiB pack buffer is
//! freed every large buffer lives in per-thread arenas that are never given back: measured
//! here, a backup of 1 GB whose live heap stays near 56 MiB held 120 MiB. Fixed thresholds
//! keep large buffers in their own mappings, returned when freed, so the peak resident size
//! follows what is in use.
//!
//! Smaller blocks (chunks of 30-60 KiB, opened on one thread and freed on another) stay in
//! the arenas, and the free space between live blocks is never returned by the trim
//! threshold, which only looks at each arena's top. A restore from S3 into a database on
//! three connections crept from 51 to 66 MiB that way while its live heap stayed under
//! 37 MiB. A thread therefore hands the free pages of every arena back twice a second
//! (`malloc_trim`); that costs well under a millisecond, and a stream restore of 830 MiB
//! took as long with it (0.69-0.80 s either way).

/// `M_TRIM_THRESHOLD`, `M_MMAP_THRESHOLD` and `M_ARENA_MAX` from glibc's `malloc.h`.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const M_TRIM_THRESHOLD: i32 = -1;
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const M_MMAP_THRESHOLD: i32 = -3;
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const M_ARENA_MAX: i32 = -8;

#[cfg(all(target_os = "linux", target_env = "gnu"))]
extern "C" {
    fn mallopt(param: i32, value: i32) -> i32;
    fn malloc_trim(pad: usize) -> i32;
}

/// Sets the thresholds and starts the trimming thread; call first thing in `main`, before
/// any other thread starts.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn tune() {
    // SAFETY: mallopt only sets allocator parameters; it is called before any other
    // thread exists, with parameters and values glibc documents. A refused value (0
    // returned) leaves glibc's default, which is only less frugal.
    unsafe {
        mallopt(M_MMAP_THRESHOLD, 512 << 10);
        mallopt(M_TRIM_THRESHOLD, 4 << 20);
        mallopt(M_ARENA_MAX, 4);
    }
    // Without the thread (it could not be started) memory is only less frugal.
    let _ = std::thread::Builder::new()
        .name("malloc-trim".into())
        .spawn(|| loop {
            std::thread::sleep(std::time::Duration::from_millis(500));
            // SAFETY: malloc_trim only gives free pages back to the system; glibc locks
            // each arena while it does, so it is safe beside any other thread.
            unsafe {
                malloc_trim(0);
            }
        });
}

/// Other platforms: their allocator's defaults.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn tune() {}
