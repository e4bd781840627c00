//! The DNS side: the listeners, and everything between a query's bytes and
//! its answer's.
//!
//! Built on hickory-proto's wire codec rather than hickory-server's request
//! pipeline, because the stock server answers QR-set datagrams, does not echo
//! the question exactly and mishandles other classes (measured); owning the
//! loop also lets the hot path stay free of per-query task spawns for
//! anything answered from the snapshot. Hickory types do not leave this
//! module: what it exports speaks the crate's own types and raw bytes.
//!
//! Where a query goes:
//!
//! * `server` starts everything below on the bound listeners and drains
//!   on shutdown.
//! * `udp`: one worker thread per UDP socket, batched `recvmmsg`/`sendmmsg`
//!   (`mmsg`). A worker answers aliases and NXDOMAINs from the precomputed
//!   [`fast`] table, forwarded names from the [`cache`], and hands cache
//!   misses to its `relay`; anything unusual goes to the full path.
//! * `tcp`: DNS over TCP on the async runtime, always through the full path.
//! * `handler`: one config's DNS side, swapped whole on a reload: the pure
//!   `answerer`, the full (hickory-based) path that decides every answer
//!   without forwarding state (the fast table is precomputed from it, so
//!   both give the same bytes; `plan` is its result, `reply` how answers
//!   are encoded), and the `forwarding` context (forwarders by zone, the
//!   cache, the guard, limits), passed explicitly to every path that
//!   forwards; `complete` finishes a plan that waits on an upstream.
//!   Authoritative data comes from `zone`, the CNAME targets' addresses
//!   from `targets` (kept fresh in the background).
//! * `relay/`: forwarding for the UDP workers, off the runtime; `forward`:
//!   the runtime's upstream client (TCP, alias targets, health checks);
//!   `forward_zones`: which zone's forwarder a name goes to (`[[forward]]`,
//!   longest suffix; else `[upstream]`).
//! * `admission`: the one policy for "cannot forward now" (allow list,
//!   rate, in flight, budget, which upstream, serve-stale, refusal), which
//!   every path asks; `guard`: the counters and limiters it uses; `health`:
//!   upstream health, judged by health checks; `coalesce`: identical
//!   questions in flight share one upstream query; `prefetch`: popular
//!   cached answers refreshed in the background before they expire.
//! * `question` reads a query's question without decoding; `names` holds
//!   the conversions between name forms; `message` the hickory-level
//!   response helpers; `sched` the threads' scheduling priority.
//!
//! `fixture` and `fuzz` are test support, compiled only for tests and with
//! the `testing` feature (benches, the fuzz crate).

mod admission;
mod answerer;
pub(crate) mod cache;
mod coalesce;
mod complete;
pub(crate) mod fast;
#[cfg(test)]
mod fast_tests;
#[cfg(any(test, feature = "testing"))]
#[doc(hidden)]
pub mod fixture;
mod forward;
mod forward_zones;
mod forwarding;
#[cfg(any(test, feature = "testing"))]
#[doc(hidden)]
pub mod fuzz;
pub(crate) mod guard;
mod handler;
mod health;
mod message;
mod mmsg;
pub(crate) mod names;
mod plan;
pub(crate) mod prefetch;
mod question;
mod relay;
mod reply;
mod sched;
mod server;
mod slow;
pub(crate) mod targets;
mod tcp;
mod udp;
mod zone;

pub(crate) use guard::Guard;
pub(crate) use handler::Handler;
pub(crate) use handler::{ProcessWide, SharedHandler};
pub(crate) use names::NameConversion;
// What the micro-benchmarks and the fuzz targets drive (crate::testing).
#[cfg(any(test, feature = "testing"))]
pub use message::Transport;
#[cfg(any(test, feature = "testing"))]
pub use plan::{Pick, Plan};
#[cfg(any(test, feature = "testing"))]
pub use question::question;
pub use sched::lower_priority;
pub(crate) use server::serve;
