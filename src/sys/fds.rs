//! Descriptor flags for the whole table.

/// Marks every descriptor from `min` up close-on-exec, so that none reaches the container
/// (CVE-2024-21626): close_range(min, ~0, CLOSE_RANGE_CLOEXEC), one syscall and
/// async-signal-safe (for use between fork and exec). A failure is an error: a descriptor
/// left open would leak.
pub fn cloexec_from(min: u32) -> std::io::Result<()> {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets a flag on our own descriptors.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            min,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
