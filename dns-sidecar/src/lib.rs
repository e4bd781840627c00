//! dns-sidecar: an authoritative DNS alias that follows the writable PostgreSQL server.
pub mod config;
pub mod name;
