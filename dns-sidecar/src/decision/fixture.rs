//! The decision tests' configs: the part every one shares (`[dns]`, the
//! zone `db.internal`, `[probe]` every 100 ms with `rise = 2`, and one
//! `[servers.<id>]` table per server), so that a test's config says only
//! what is its own: its aliases.

use std::path::Path;

use crate::config::Config;

/// `[dns]`, `[[zones]]` and `[probe]` (interval 100 ms, deadline 1 s,
/// `fall`, rise 2), then `[servers.<id>]` with target `pg-<id>.test` for
/// each of `servers`, in that order (their [`crate::config::ServerId`]s).
pub(super) fn header(fall: u32, servers: &[&str]) -> String {
    let mut text = format!(
        r#"
[dns]
listen = ["127.0.0.1:5353"]
[[zones]]
name = "db.internal"
[probe]
user = "probe"
sslmode = "require"
interval = "100ms"
deadline = "1s"
fall = {fall}
rise = 2
"#
    );
    for s in servers {
        text.push_str(&format!("[servers.{s}]\ntarget = \"pg-{s}.test\"\n"));
    }
    text
}

/// `text` as a config read from `file` (a test's config is valid).
pub(super) fn parse(file: &str, text: &str) -> Config {
    Config::from_toml(Path::new(file), text).unwrap_or_else(|e| panic!("{e}"))
}
