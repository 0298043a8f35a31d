//! What happens to an NBD device's connections while it serves, told to whoever asked
//! ([`NbdBuilder::on_event`](super::NbdBuilder::on_event)): the library itself never prints.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Something that happened to a connection of an NBD device.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NbdEvent {
    /// Connection `connection` dropped or timed out; its unanswered requests wait for a new
    /// one.
    ConnectionLost {
        /// The connection's index, `0..connections`.
        connection: usize,
        /// What happened.
        why: String,
        /// Requests that will be sent again.
        requests: usize,
    },
    /// The server broke the protocol on connection `connection`: the requests it held there
    /// failed with EIO, and the connection is made anew.
    ServerMisbehaved {
        /// The connection's index.
        connection: usize,
        /// What the server did.
        what: String,
        /// Requests failed.
        failed: usize,
    },
    /// An attempt to reconnect failed; another follows after a pause.
    ReconnectFailed {
        /// The connection's index.
        connection: usize,
        /// Attempts so far.
        attempt: u32,
        /// Why it failed.
        why: String,
    },
    /// Connection `connection` is back, `after` it was lost.
    Reconnected {
        /// The connection's index.
        connection: usize,
        /// How long it was gone.
        after: Duration,
    },
    /// Queue `queue` has had no connection for the reconnect timeout: the requests waiting
    /// failed with EIO, and new ones fail until a connection is back.
    GaveUp {
        /// The queue.
        queue: u16,
        /// Requests failed.
        failed: usize,
    },
}

impl fmt::Display for NbdEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NbdEvent::ConnectionLost {
                connection,
                why,
                requests,
            } => write!(
                f,
                "connection {connection} lost ({why}); reconnecting, {requests} request(s) wait"
            ),
            NbdEvent::ServerMisbehaved {
                connection,
                what,
                failed,
            } => write!(
                f,
                "the server broke the NBD protocol on connection {connection}: {what}; \
                 {failed} request(s) failed with EIO, reconnecting"
            ),
            NbdEvent::ReconnectFailed {
                connection,
                attempt,
                why,
            } => write!(
                f,
                "connection {connection}: reconnect attempt {attempt} failed: {why}"
            ),
            NbdEvent::Reconnected { connection, after } => {
                write!(f, "connection {connection} back after {after:.1?}")
            }
            NbdEvent::GaveUp { queue, failed } => write!(
                f,
                "queue {queue}: no connection within the reconnect timeout; {failed} request(s) \
                 failed with EIO, and I/O fails until the server is back"
            ),
        }
    }
}

/// Where events go.
pub(crate) type Handler = Arc<dyn Fn(&NbdEvent) + Send + Sync>;
