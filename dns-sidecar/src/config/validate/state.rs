//! `[state]`: where fences and timelines survive a restart.

use super::ctx::Ctx;
use crate::config::raw::RawState;
use crate::config::{ConfigError, StateSettings};

pub(super) fn check(cx: &Ctx<'_>, raw: Option<RawState>) -> Result<StateSettings, ConfigError> {
    let Some(raw) = raw else {
        return Ok(StateSettings { path: None });
    };
    let p = raw.path.get_ref();
    if p.as_os_str().is_empty() {
        return cx.err(
            Some(raw.path.span()),
            "`state.path` is empty",
            "give a file in a writable directory, e.g. path = \"/var/lib/dns-sidecar/state.json\", or remove [state]",
        );
    }
    if !p.is_absolute() {
        return cx.err(
            Some(raw.path.span()),
            format!("`state.path` {} is relative", p.display()),
            "use an absolute path, e.g. \"/var/lib/dns-sidecar/state.json\"",
        );
    }
    if p.file_name().is_none() {
        return cx.err(
            Some(raw.path.span()),
            format!("`state.path` {} names a directory", p.display()),
            "name a file in it, e.g. \"/var/lib/dns-sidecar/state.json\"",
        );
    }
    Ok(StateSettings { path: Some(p.clone()) })
}
