//! The TOML parser's messages, each given a hint: what to write instead.

use super::Located;

/// Gives every message of the TOML parser a hint (what to write instead),
/// and keeps `password` out of the "expected one of" lists: the key is
/// parsed only to reject it with an explanation, it is never accepted.
pub(super) fn with_toml_hint(mut l: Located) -> Located {
    if let Some((head, expected)) = l.message.split_once("expected one of ") {
        let expected = expected.replace("`password`, ", "").replace(", `password`", "");
        l.message = format!("{head}expected one of {expected}");
    }
    let m = l.message.as_str();
    let snippet = l.snippet.as_deref().unwrap_or("").trim_start();
    let hint = if m.contains("unknown field `password`") {
        "passwords are never written in the config: use password_env or password_file in [probe] or [servers.<id>]; the admin listener takes token_env or token_file"
            .to_string()
    } else if m.starts_with("unknown field") {
        "check the spelling against the README's configuration reference; the keys this table accepts are listed above"
            .to_string()
    } else if m.starts_with("unknown variant") {
        "use one of the values listed above".to_string()
    } else if m.starts_with("missing field `dns`") {
        "every config needs a [dns] table, e.g. [dns] listen = [\"127.0.0.1:53\"]".to_string()
    } else if let Some(field) = m.strip_prefix("missing field `").and_then(|r| r.split('`').next()) {
        format!("add `{field} = ...` to this table (see the README's configuration reference)")
    } else if m.starts_with("duplicate key") || m.contains("duplicate key") {
        "each key may appear once per table: remove one of them".to_string()
    } else if m.contains("expected a sequence") && snippet.starts_with('[') && !snippet.starts_with("[[") {
        "a list of tables is written with double brackets, e.g. [[zones]] and [[aliases]]".to_string()
    } else if m.contains("duration") || m.contains("no unit") || m.contains("unknown unit") || m.contains("bare number")
    {
        "durations are strings with a unit: \"150ms\", \"5s\", \"2m\", \"1h\"".to_string()
    } else if m.contains("TTL") {
        "TTLs are whole seconds written as durations, e.g. ttl = \"5s\" (at most \"1d\" = \"24h\")".to_string()
    } else if m.contains("not an IP address")
        || m.contains("invalid IP address")
        || m.contains("invalid socket address")
    {
        "addresses are IP literals, with a port where one is allowed: \"10.1.2.3\", \"127.0.0.1:5353\", \"[::1]:53\"; host names belong in `host`/`target`"
            .to_string()
    } else if m.contains("DNS name") || m.contains("label") || m.contains("use letters, digits") {
        "names are DNS names such as \"pg-prod.example.com\" (letters, digits, `-`, `_`; the trailing dot is optional)"
            .to_string()
    } else if let Some(expected) = m
        .strip_prefix("invalid type: ")
        .and_then(|r| r.split_once(", expected "))
        .map(|(_, e)| e)
    {
        let expected = match expected {
            "u16" => "a whole number from 0 to 65535",
            "u32" => "a whole number from 0 to 4294967295",
            "a boolean" => "true or false",
            "a sequence" => "a list, e.g. [\"a\", \"b\"]",
            "a string" => "a string in double quotes",
            e if e.starts_with("struct") || e.contains("map") => "a table",
            e => e,
        };
        format!("this key takes {expected}; see the README's configuration reference for its format")
    } else {
        "this is not valid TOML here: `key = value` per line, strings in double quotes, tables as [name], lists of tables as [[name]]"
            .to_string()
    };
    l.hint(hint)
}
