//! `[limits]`: the bounds on what grows with traffic (memory, forwarding,
//! TCP connections).

use toml::Spanned;

use super::at_least_100ms;
use super::ctx::Ctx;
use crate::config::raw::RawLimits;
use crate::config::{ConfigError, Limits, MAX_FORWARD_IN_FLIGHT};

pub(super) fn check(cx: &Ctx<'_>, raw: &RawLimits) -> Result<Limits, ConfigError> {
    let d = Limits::default();
    let count =
        |v: &Option<Spanned<u32>>, key: &str, min: u32, max: u32, default: usize| -> Result<usize, ConfigError> {
            match v {
                None => Ok(default),
                Some(v) if (min..=max).contains(v.get_ref()) => Ok(*v.get_ref() as usize),
                Some(v) => cx.err(
                    Some(v.span()),
                    format!("`limits.{key} = {}` is outside {min}..={max}", v.get_ref()),
                    format!("{key} = {default} is the default"),
                ),
            }
        };
    let memory = match &raw.memory {
        None => d.memory,
        Some(m) if m.get_ref().0 >= 1 << 20 && m.get_ref().0 <= 1 << 40 => m.get_ref().0,
        Some(m) => {
            return cx.err(
                Some(m.span()),
                format!("`limits.memory` of {} bytes is outside 1MiB..=1TiB", m.get_ref().0),
                "memory = \"16MiB\" is the default; it keeps the process under 48 MB",
            )
        }
    };
    let forward_rate = count(
        &raw.forward_rate,
        "forward_rate",
        0,
        10_000_000,
        d.forward_rate as usize,
    )? as u32;
    let forward_burst = match &raw.forward_burst {
        None => forward_rate.saturating_mul(2),
        Some(b) if *b.get_ref() >= 1 || forward_rate == 0 => *b.get_ref(),
        Some(b) => {
            return cx.err(
                Some(b.span()),
                "`limits.forward_burst` must be at least 1 when forward_rate is set",
                "leave it out for 2 x forward_rate",
            )
        }
    };
    let tcp_connections = count(&raw.tcp_connections, "tcp_connections", 1, 65_536, d.tcp_connections)?;
    let tcp_connections_per_client = count(
        &raw.tcp_connections_per_client,
        "tcp_connections_per_client",
        1,
        65_536,
        d.tcp_connections_per_client,
    )?
    .min(tcp_connections);
    Ok(Limits {
        memory,
        forward_in_flight: count(
            &raw.forward_in_flight,
            "forward_in_flight",
            1,
            MAX_FORWARD_IN_FLIGHT,
            d.forward_in_flight,
        )?,
        forward_rate,
        forward_burst,
        tcp_connections,
        tcp_connections_per_client,
        tcp_idle_timeout: at_least_100ms(cx, &raw.tcp_idle_timeout, "limits.tcp_idle_timeout", d.tcp_idle_timeout)?,
        tcp_write_timeout: at_least_100ms(
            cx,
            &raw.tcp_write_timeout,
            "limits.tcp_write_timeout",
            d.tcp_write_timeout,
        )?,
    })
}
