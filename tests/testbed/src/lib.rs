//! Real, throwaway infrastructure for dns-sidecar's tests, its benchmarks
//! and `dns-sidecar demo`: PostgreSQL 15 primary + streaming-replica pairs
//! and a dnsmasq resolver, all on loopback.
//!
//! # Why a crate of its own
//!
//! It is test infrastructure, not product code: the sidecar never starts a
//! database. Kept apart, the product library holds only what runs in
//! production, and a build with `--no-default-features` (no `demo`
//! subcommand) links none of this. The crate does not depend on dns-sidecar,
//! so dns-sidecar can use it as a dev-dependency (unit and integration tests)
//! and as the optional dependency behind its default `demo` feature; the
//! benches depend on it directly.
//!
//! # Why real servers
//!
//! The sidecar's job is to notice *which PostgreSQL server is writable* and
//! publish that in DNS. The interesting failures are the ones a mock cannot
//! reproduce faithfully: a promotion that takes 20-35 ms, a server that
//! crashes mid-connection, a server that hangs (accepts TCP but never
//! answers), a server that is up but `default_transaction_read_only`
//! (Azure's "storage full" mode), TLS name verification, SCRAM
//! authentication with a role that has no grants. The testbed runs the
//! genuine programs so tests observe genuine behaviour.
//!
//! # What you get
//!
//! * [`PgPair`]: a primary (default `127.0.0.2`, certificate for
//!   `pg-a.test`) and a replica (`127.0.0.3`, `pg-b.test`) on the **same
//!   port**, both TLS-only over TCP (`hostssl` + `scram-sha-256`; plaintext
//!   TCP is rejected), with a login role `probe` that has no grants. Each
//!   [`Cluster`] can be queried ([`Cluster::sql`]), promoted
//!   ([`Cluster::promote`]), crashed ([`Cluster::stop_immediate`]), hung
//!   ([`Cluster::freeze`] / [`Cluster::thaw`]) or made read-only
//!   ([`Cluster::set_default_read_only`]).
//!   [`PairOptions::trio`] adds a second replica (`127.0.0.4`, `pg-c.test`).
//!   For fault sequences a cluster can also come back writable on its old
//!   timeline after a crash ([`Cluster::start_writable`]), be rebuilt as a
//!   standby of another ([`Cluster::rebuild_as_standby_of`], with
//!   `pg_rewind` or a fresh base backup), pause and resume WAL replay
//!   ([`Cluster::pause_replay`]), end the probe's sessions from the server
//!   side ([`Cluster::terminate_backends`]) and report its timeline
//!   ([`Cluster::timeline`]).
//! * [`Dnsmasq`]: an upstream DNS resolver on `127.0.0.1:<port>` with given
//!   host, TXT and local-domain records and no upstream of its own.
//!
//! # Properties
//!
//! * **Loopback only.** Every listener is on `127.0.0.0/8`;
//!   [`PairOptions`] rejects other addresses. dnsmasq has no upstream.
//! * **Blocking API.** Everything uses `std::process` and returns when done.
//!   From async code call it before building the runtime or inside
//!   `tokio::task::spawn_blocking`.
//! * **Fast.** Data lives on `/dev/shm` when it has room (else the temp
//!   dir; override with `DNS_SIDECAR_TESTBED_DIR`), durability is off, and
//!   every wait polls in 1-5 ms steps instead of `pg_ctl`'s 100 ms. A pair
//!   starts in roughly 0.6 s on `/dev/shm`.
//! * **Root-aware.** PostgreSQL refuses to run as root; when the tests run
//!   as root (CI) every server-side command runs as the `postgres` OS user
//!   via `setpriv`, and the files it needs are chowned to it.
//! * **Self-cleaning.** `Drop` crash-stops the servers and deletes the
//!   directory. A small `/bin/sh` watchdog per pair / dnsmasq does the same
//!   if the process dies without unwinding (Ctrl-C, SIGKILL), because the
//!   postmaster runs in its own session and would otherwise live on. Set
//!   `DNS_SIDECAR_TESTBED_KEEP=1` to keep a pair's logs for debugging.
//! * **Independent.** No global state: tests can start as many pairs in
//!   parallel as they like; each gets its own directory and random port.
//!
//! Prerequisites (Debian 12): `apt-get install -y postgresql-15
//! dnsmasq-base openssl util-linux` (`.ci/run` does this). A missing program
//! is reported as [`TestbedError::MissingBinary`] with that hint.
//!
//! # Example
//!
//! ```no_run
//! use std::time::Duration;
//! use testbed::{Dnsmasq, DnsmasqOptions, PairOptions, PgBinaries, PgPair};
//!
//! # fn main() -> Result<(), testbed::TestbedError> {
//! let bins = PgBinaries::locate()?;
//! let pair = PgPair::start(&bins, PairOptions::default())?;
//! assert_eq!(pair.primary.sql("SELECT pg_is_in_recovery()")?, "f");
//!
//! // What a client (the sidecar) sees: TLS, verified name, SCRAM password.
//! let conninfo = pair.replica.conninfo(&pair.probe_user);
//! let answer = bins.psql_client(&conninfo, Some(&pair.password),
//!     "SELECT pg_is_in_recovery()", Duration::from_secs(5))?;
//! assert_eq!(answer, "t");
//!
//! // Fail over: hang the primary, promote the replica.
//! pair.primary.freeze()?;
//! pair.replica.promote(true)?;
//! pair.primary.thaw()?;
//!
//! // An upstream resolver for the sidecar to forward other names to.
//! let dns = Dnsmasq::start(DnsmasqOptions {
//!     hosts: vec![("www.example.test".into(), "127.0.0.10".parse().unwrap())],
//!     local_domains: vec!["example.test".into()],
//!     ..Default::default()
//! })?;
//! println!("upstream resolver at {}", dns.addr);
//! # Ok(()) }
//! // Dropping `pair` and `dns` stops everything and deletes the files.
//! ```

mod diverged;
mod dnsmasq;
mod error;
mod fork;
mod pair;
mod pki;
mod postgres;
mod process;
mod scratch;
mod standby;
mod users;

#[cfg(test)]
mod tests;

pub use dnsmasq::{Dnsmasq, DnsmasqOptions, LOOPBACK_ARGS as DNSMASQ_LOOPBACK_ARGS};
pub use error::{Result, TestbedError};
pub use pair::{PairOptions, PgPair, KEEP_ENV};
pub use postgres::{Cluster, PgBinaries};
pub use scratch::{free_port, DIR_ENV};
pub use standby::Rebuild;
