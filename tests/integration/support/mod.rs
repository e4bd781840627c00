//! Shared test fixtures.

#![allow(dead_code)]

pub mod dig;
pub mod env;
pub mod metrics;
pub mod proxy;
pub mod raw;
pub mod sidecar;
pub mod upstream;

pub use dig::dig;
