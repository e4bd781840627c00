//! `[cache]`: the cache of forwarded answers.

use std::ops::RangeInclusive;
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
    let max_entries = max_entries(cx, raw, &d)?;
    let max_bytes = max_bytes(cx, raw, &d)?;
    let max_ttl = ttl(
        cx,
        &raw.max_ttl,
        "max_ttl",
        1..=MAX_TTL,
        d.max_ttl,
        "max_ttl = \"1h\" is the default (CoreDNS's cache caps at 1h too); to turn the cache off write enabled = false",
    )?;
    let max_negative_ttl = ttl(
        cx,
        &raw.max_negative_ttl,
        "max_negative_ttl",
        0..=MAX_TTL,
        d.max_negative_ttl,
        "max_negative_ttl = \"5m\" is the default; \"0s\" caches no negative answers",
    )?;
    let servfail_ttl = ttl(
        cx,
        &raw.servfail_ttl,
        "servfail_ttl",
        0..=MAX_SERVFAIL_TTL,
        d.servfail_ttl,
        "an upstream's SERVFAIL is kept a few seconds at most: servfail_ttl = \"5s\" is the default, \"0s\" keeps none",
    )?;
    let max_stale = max_stale(cx, raw, &d)?;
    let prefetch = raw.prefetch.unwrap_or(d.prefetch);
    let prefetch_hits = prefetch_hits(cx, raw, prefetch, &d)?;
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

fn max_entries(cx: &Ctx<'_>, raw: &RawCache, d: &CacheSettings) -> Result<usize, ConfigError> {
    match &raw.max_entries {
        None => Ok(d.max_entries),
        Some(v) if (1..=MAX_CACHE_ENTRIES).contains(v.get_ref()) => Ok(*v.get_ref() as usize),
        Some(v) => cx.err(
            Some(v.span()),
            format!(
                "`cache.max_entries = {}` is outside 1..={MAX_CACHE_ENTRIES}",
                v.get_ref()
            ),
            format!(
                "max_entries = {} is the default; to turn the cache off write enabled = false",
                d.max_entries
            ),
        ),
    }
}

fn max_bytes(cx: &Ctx<'_>, raw: &RawCache, d: &CacheSettings) -> Result<u64, ConfigError> {
    match &raw.max_bytes {
        None => Ok(d.max_bytes),
        Some(b) if (64 << 10..=1 << 30).contains(&b.get_ref().0) => Ok(b.get_ref().0),
        Some(b) => cx.err(
            Some(b.span()),
            format!("`cache.max_bytes` of {} bytes is outside 64KiB..=1GiB", b.get_ref().0),
            "max_bytes = \"4MiB\" is the default (about 20 000 typical answers); it counts on its own, besides [limits] memory",
        ),
    }
}

/// A TTL cap `cache.<key>` in seconds within `range`.
fn ttl(
    cx: &Ctx<'_>,
    v: &Option<Spanned<Ttl>>,
    key: &str,
    range: RangeInclusive<u32>,
    default: u32,
    hint: &str,
) -> Result<u32, ConfigError> {
    match v {
        None => Ok(default),
        Some(t) if range.contains(&t.get_ref().0) => Ok(t.get_ref().0),
        Some(t) => {
            let (min, max) = (range.start(), range.end());
            cx.err(
                Some(t.span()),
                format!("`cache.{key}` of {}s is outside {min}s..={max}s", t.get_ref().0),
                hint.to_string(),
            )
        }
    }
}

/// `max_stale` within 1s..=7d (whole seconds), and only with serve_stale.
fn max_stale(cx: &Ctx<'_>, raw: &RawCache, d: &CacheSettings) -> Result<Duration, ConfigError> {
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
    Ok(max_stale)
}

/// `prefetch_hits` within 1..=MAX_PREFETCH_HITS, and only with prefetch.
fn prefetch_hits(cx: &Ctx<'_>, raw: &RawCache, prefetch: bool, d: &CacheSettings) -> Result<u32, ConfigError> {
    match &raw.prefetch_hits {
        None => Ok(d.prefetch_hits),
        Some(_) if !prefetch => cx.err(
            raw.prefetch_hits.as_ref().map(|v| v.span()),
            "`cache.prefetch_hits` is set but prefetch = false, so it would never apply",
            "remove prefetch_hits, or set prefetch = true",
        ),
        Some(v) if (1..=MAX_PREFETCH_HITS).contains(v.get_ref()) => Ok(*v.get_ref()),
        Some(v) => cx.err(
            Some(v.span()),
            format!(
                "`cache.prefetch_hits = {}` is outside 1..={MAX_PREFETCH_HITS}",
                v.get_ref()
            ),
            format!(
                "prefetch_hits = {} is the default: an entry hit that often before the last tenth of its lifetime is refreshed; to refresh none write prefetch = false",
                d.prefetch_hits
            ),
        ),
    }
}
