//! Thread scheduling priority: the UDP workers answer the aliases, so every
//! other thread that may compete with them for a CPU under load runs below
//! them.

/// Lowers the calling thread's scheduling priority by `nice` (Linux nice
/// values are per thread). Used for everything that may compete with the UDP
/// workers for a CPU under load: the relays, the async runtime's threads.
pub fn lower_priority(nice: i32) {
    // SAFETY: plain syscalls on the calling thread.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        let now = libc::getpriority(libc::PRIO_PROCESS, tid);
        libc::setpriority(libc::PRIO_PROCESS, tid, (now + nice).min(19));
    }
}
