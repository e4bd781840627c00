//! A failpoint for the integration tests of supervision, compiled only with
//! the `testing` feature (never in the product: `cargo build` leaves it out).
//!
//! `DNS_SIDECAR_FAILPOINT=<task>:<path>` makes the named task panic at its
//! next wake-up once the file `<path>` exists (removing it), so a test kills
//! a task of the real binary at the moment it chooses, and learns when it
//! died.

use std::path::Path;

/// Environment variable naming the task and its trigger file.
pub(crate) const VAR: &str = "DNS_SIDECAR_FAILPOINT";

/// Panics when this task's trigger file exists.
pub(crate) fn check(task: &str) {
    let Ok(spec) = std::env::var(VAR) else { return };
    if let Some((t, path)) = spec.split_once(':') {
        if t == task && Path::new(path).exists() {
            // Removed while the panic unwinds (after the panic hook, which may
            // spend long printing a backtrace), so it fires once and the test
            // learns the moment the panic reaches the supervisor.
            let _fired = Fired(path.into());
            panic!("failpoint: {VAR} names `{task}` and {path} exists");
        }
    }
}

struct Fired(std::path::PathBuf);

impl Drop for Fired {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
