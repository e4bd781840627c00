//! A failpoint for the integration tests of supervision, compiled only with
//! the `testing` feature (never in the product: `cargo build` leaves it out).
//!
//! `DNS_SIDECAR_FAILPOINT=<task>:<path>` makes the named task panic at its
//! next wake-up once the file `<path>` exists (removing it), so a test kills
//! a task of the real binary at the moment it chooses, and learns when it
//! died.

use std::path::Path;

/// Environment variable naming the task and its trigger file.
pub const VAR: &str = "DNS_SIDECAR_FAILPOINT";

/// Panics when this task's trigger file exists.
pub fn check(task: &str) {
    let Ok(spec) = std::env::var(VAR) else { return };
    if let Some((t, path)) = spec.split_once(':') {
        // Removed first, so it fires once and the test knows when.
        if t == task && std::fs::remove_file(Path::new(path)).is_ok() {
            panic!("failpoint: {VAR} names `{task}` and {path} existed");
        }
    }
}
