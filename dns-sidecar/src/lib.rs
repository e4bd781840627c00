//! dns-sidecar: an authoritative DNS alias that follows the writable PostgreSQL server.
pub mod config;
pub mod decision;
pub mod observation;
pub mod probe;
pub mod routes;
pub mod engine;
pub mod name;
