//! `[cache]`: the cache of forwarded answers.

use std::time::Duration;

use toml::Spanned;

use super::ctx::Ctx;
use super::human;
use crate::config::raw::RawCache;
use crate::config::{
    CacheSettings, ConfigError, Ttl, MAX_CACHE_ENTRIES, MAX_PREFETCH_HITS, MAX_SERVFAIL_TTL, MAX_STALE, MAX_TTL,
};

pub(super) fn check(cx: &Ctx<'_>, raw: &RawCache) -> Result<CacheSettings, ConfigError> {
    let d = CacheSettings::default();
    let max_entries = match &raw.max_entries {
        None => d.max_entries,
        Some(v) if (1..=MAX_CACHE_ENTRIES).contains(v.get_ref()) => *v.get_ref() as usize,
        Some(v) => {
            return cx.err(
                Some(v.span()),
                format!(
                    "`cache.max_entries = {}` is outside 1..={MAX_CACHE_ENTRIES}",
                    v.get_ref()
                ),
                format!(
                    "max_entries = {} is the default; to turn the cache off write enabled = false",
                    d.max_entries
                ),
            )
        }
    };
    let max_bytes = match &raw.max_bytes {
        None => d.max_bytes,
        Some(b) if (64 << 10..=1 << 30).contains(&b.get_ref().0) => b.get_ref().0,
        Some(b) => {
            return cx.err(
                Some(b.span()),
                format!("`cache.max_bytes` of {} bytes is outside 64KiB..=1GiB", b.get_ref().0),
                "max_bytes = \"4MiB\" is the default (about 20 000 typical answers); it counts on its own, besides [limits] memory",
            )
        }
    };
    let ttl = |v: &Option<Spanned<Ttl>>,
               key: &str,
               min: u32,
               max: u32,
               default: u32,
               hint: &str|
     -> Result<u32, ConfigError> {
        match v {
            None => Ok(default),
            Some(t) if (min..=max).contains(&t.get_ref().0) => Ok(t.get_ref().0),
            Some(t) => cx.err(
                Some(t.span()),
                format!("`cache.{key}` of {}s is outside {min}s..={max}s", t.get_ref().0),
                hint.to_string(),
            ),
        }
    };
    let max_ttl = ttl(
        &raw.max_ttl,
        "max_ttl",
        1,
        MAX_TTL,
        d.max_ttl,
        "max_ttl = \"1h\" is the default (CoreDNS's cache caps at 1h too); to turn the cache off write enabled = false",
    )?;
    let max_negative_ttl = ttl(
        &raw.max_negative_ttl,
        "max_negative_ttl",
        0,
        MAX_TTL,
        d.max_negative_ttl,
        "max_negative_ttl = \"5m\" is the default; \"0s\" caches no negative answers",
    )?;
    let servfail_ttl = ttl(
        &raw.servfail_ttl,
        "servfail_ttl",
        0,
        MAX_SERVFAIL_TTL,
        d.servfail_ttl,
        "an upstream's SERVFAIL is kept a few seconds at most: servfail_ttl = \"5s\" is the default, \"0s\" keeps none",
    )?;
    let max_stale = match &raw.max_stale {
        None => d.max_stale,
        Some(m) if m.get_ref().0 >= Duration::from_secs(1) && m.get_ref().0 <= MAX_STALE => {
            Duration::from_secs(m.get_ref().0.as_secs())
        }
        Some(m) => {
            return cx.err(
                Some(m.span()),
                format!("`cache.max_stale` of {} is outside 1s..=7d", human(m.get_ref().0)),
                "max_stale = \"1d\" is the default (RFC 8767 suggests 1 to 3 days, at most 7); to serve nothing stale write serve_stale = false",
            )
        }
    };
    if raw.serve_stale == Some(false) {
        if let Some(m) = &raw.max_stale {
            return cx.err(
                Some(m.span()),
                "`cache.max_stale` is set but serve_stale = false, so it would never apply",
                "remove max_stale, or set serve_stale = true",
            );
        }
    }
    let prefetch = raw.prefetch.unwrap_or(d.prefetch);
    let prefetch_hits = match &raw.prefetch_hits {
        None => d.prefetch_hits,
        Some(_) if !prefetch => {
            return cx.err(
                raw.prefetch_hits.as_ref().map(|v| v.span()),
                "`cache.prefetch_hits` is set but prefetch = false, so it would never apply",
                "remove prefetch_hits, or set prefetch = true",
            )
        }
        Some(v) if (1..=MAX_PREFETCH_HITS).contains(v.get_ref()) => *v.get_ref(),
        Some(v) => {
            return cx.err(
                Some(v.span()),
                format!(
                    "`cache.prefetch_hits = {}` is outside 1..={MAX_PREFETCH_HITS}",
                    v.get_ref()
                ),
                format!(
                    "prefetch_hits = {} is the default: an entry hit that often before the last tenth of its lifetime is refreshed; to refresh none write prefetch = false",
                    d.prefetch_hits
                ),
            )
        }
    };
    Ok(CacheSettings {
        enabled: raw.enabled.unwrap_or(d.enabled),
        max_entries,
        max_bytes,
        max_ttl,
        max_negative_ttl,
        servfail_ttl,
        serve_stale: raw.serve_stale.unwrap_or(d.serve_stale),
        max_stale,
        prefetch,
        prefetch_hits,
    })
}
