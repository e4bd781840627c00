//! dns-sidecar: an authoritative DNS alias that follows the writable PostgreSQL server.
pub mod config;
pub mod decision;
pub mod observation;
pub mod name;
