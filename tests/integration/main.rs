//! Integration tests: the real server on loopback ports, real PostgreSQL
//! primary + streaming replica pairs (TLS, SCRAM passwords), a real dnsmasq as
//! the upstream, and real DNS clients (`dig`, plus a raw UDP client for
//! malformed packets and precise timing).

mod abuse;
mod admin;
mod alert_rules;
mod cache;
mod config_cli;
mod credentials;
mod damping;
#[cfg(feature = "demo")]
mod demo;
mod deploy;
mod exact;
mod failover;
mod faults;
mod fleet;
mod fork;
mod forward_zones;
mod forwarding;
mod frozen;
mod hook_record;
mod lag;
mod logs;
mod observability;
mod operations;
mod prefetch;
mod probe_backoff;
mod protocol;
mod reader_spread;
mod readers;
mod readme;
mod reload;
mod sequences;
mod spread_smoke;
mod stub_resolvers;
mod supervision;
mod support;
mod upstream_health;
