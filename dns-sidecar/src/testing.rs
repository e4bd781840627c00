//! What only the tests, the benches and the fuzz targets use, compiled with
//! the `testing` feature (never in the product: `cargo build` leaves it out).
//!
//! The integration tests run the admin listener alone; the micro-benchmarks
//! run the decision and the answer path on the DNS side's fixture; the load
//! test replays a cache trace on a manual clock; the fuzz crate calls its
//! targets as plain functions.

/// The admin listener on its own (`tests/integration/admin.rs`).
pub mod admin {
    pub use crate::admin::serve;
}

pub use crate::config::ids::ServerId;
pub use crate::decision::{decide, State};
pub use crate::dns::cache::{Cache, Found};
pub use crate::dns::{fixture, fuzz, question, Pick, Plan, Transport};
pub use crate::metrics::CacheMetrics;
pub use crate::observation::{Observation, ServerState};
pub use crate::routes::Asker;
