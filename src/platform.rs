//! Process-level settings for fast CPU training.

/// Keeps large tensors in the heap instead of fresh `mmap`s: libtorch's CPU allocator frees
/// and reallocates activation-sized buffers every step, and glibc's defaults return them to
/// the kernel each time (page faults in a hot loop; convolutional steps spent about as much
/// time in the kernel as in user code). Call before starting threads.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator thresholds (32 MiB is glibc's largest allowed
    // mmap threshold); it is called from main before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}

/// Makes writes beyond the file-size limit (`ulimit -f`) fail with an error instead of killing
/// the process (SIGXFSZ), so that a run stopped by a full disk or a quota says which file.
pub fn ignore_file_size_signal() {
    #[cfg(unix)]
    // SAFETY: setting a signal's disposition to ignore, before any other thread exists.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
}

/// Number of other processes on this machine whose name (`/proc/<pid>/comm`) is `name`; 0
/// where `/proc` cannot be read.
pub fn other_processes_named(name: &str) -> usize {
    let me = std::process::id().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| {
            let pid = e.file_name();
            let pid = pid.to_string_lossy();
            pid.bytes().all(|b| b.is_ascii_digit()) && pid != me
        })
        .filter(|e| {
            std::fs::read_to_string(e.path().join("comm")).is_ok_and(|comm| comm.trim_end() == name)
        })
        .count()
}
