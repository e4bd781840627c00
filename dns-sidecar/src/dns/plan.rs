//! The next step for one query, as [`super::answerer::Answerer::plan`]
//! decides it without waiting: an answer, nothing, or a wait on an upstream
//! that the forwarding context completes
//! ([`super::forwarding::Forwarding::complete`]).

use hickory_proto::op::Message;
use hickory_proto::rr::{Name, RecordType};

use super::reply::Reply;
use crate::routes::Asker;

/// The next step for one query.
pub enum Plan {
    /// Send this.
    Reply(Reply),
    /// Send nothing (not a query we may answer).
    Drop,
    /// Relay to the upstream resolvers.
    Forward(Request),
    /// Answer the alias's CNAME plus the target's records of the asked type.
    Chase(Chase),
}

/// Which member of a spreading alias's set a plan answers.
#[derive(Debug, Clone, Copy)]
pub enum Pick {
    /// A query: the route's policy chooses
    /// ([`crate::routes::SpreadRoute::pick`]), counted per server.
    Asked(Asker),
    /// Member `k` (the fast table's precomputation; not counted).
    Member(usize),
}

impl Pick {
    /// A query from an unknown client (a spreading alias answers as for
    /// [`Asker::NONE`]); the fixture's, the fuzz targets' and the benches'.
    #[cfg(any(test, feature = "testing"))]
    pub const ANY: Pick = Pick::Asked(Asker::NONE);
}

/// A decoded query still to be relayed. Opaque outside `dns`, so that
/// hickory's message type does not leave the module.
pub struct Request(pub(super) Box<Message>);

/// An alias answer still waiting for its target's records. Opaque outside
/// `dns`, like [`Request`].
pub struct Chase {
    pub(super) req: Box<Message>,
    pub(super) resp: Box<Message>,
    pub(super) target: Name,
    pub(super) qtype: RecordType,
}
