//! Shared test fixtures (no `allow(dead_code)`: the compiler reports a
//! helper no test uses).

pub mod dig;
pub mod env;
pub mod links;
pub mod metrics;
pub mod proxy;
pub mod raw;
pub mod sidecar;
pub mod tier;
pub mod upstream;

pub use dig::dig;

/// Polls `cond` every 5 ms until it holds, failing after `within`; returns
/// how long it took.
pub async fn wait_until(
    what: &str,
    within: std::time::Duration,
    mut cond: impl FnMut() -> bool,
) -> std::time::Duration {
    let start = std::time::Instant::now();
    while !cond() {
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    start.elapsed()
}

/// Sends signal `sig` (`libc::SIGHUP`, `libc::SIGTERM`, ...) to the child
/// process `child` with kill(2), as an operator's `kill -HUP` would.
pub fn signal(child: &std::process::Child, sig: libc::c_int) {
    // SAFETY: kill(2) on a child we own and have not reaped.
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, sig) };
    assert_eq!(
        rc,
        0,
        "kill({}, {sig}): {}",
        child.id(),
        std::io::Error::last_os_error()
    );
}
