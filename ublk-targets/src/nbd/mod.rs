//! The NBD target: an export of a Network Block Device server (nbdkit, qemu-nbd, nbd-server)
//! served as a ublk device, every request going over the network asynchronously on the queue's
//! own io_uring.
//!
//! [`NbdBuilder::connect`] opens every connection before any device exists, so a wrong address,
//! export or server is refused up front: fixed-newstyle handshake, structured replies where the
//! server offers them, `NBD_OPT_GO` with block sizes (or `NBD_OPT_EXPORT_NAME` for old servers).
//! The export decides the device ([`Nbd::configure`]): its size, block size and largest I/O,
//! read-only, a volatile cache (FLUSH) and FUA, DISCARD (TRIM) and WRITE_ZEROES. TLS is not
//! supported.
//!
//! Each queue drives its own connections (`queue.rs`): several requests in flight on each, sent
//! in batches, replies matched by cookie in any order. A connection that drops or stops
//! answering is reconnected by a helper thread with backoff, and every request it had not
//! answered is sent again: I/O waits meanwhile, and fails with EIO only once a queue has had no
//! connection for the reconnect timeout. A server that breaks the protocol (a bad magic, an
//! unknown cookie, a reply longer than asked or short of what was, nonsense lengths) fails the
//! requests it held on that connection with EIO, reported once as an
//! [`NbdEvent::ServerMisbehaved`]; nothing it sends is written outside a request's buffer.

mod address;
mod connection;
mod events;
mod export;
mod handshake;
mod queue;
mod reconnect;
mod reply;
mod request;

use std::fmt;
use std::io;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ublk_queue::{Batching, DeviceBuilder, DiscardParams, QueueInfo, Target};

use crate::error::Error;
pub use address::{DEFAULT_PORT, NbdAddress};
use address::{OpenError, Socket};
use events::Handler;
pub use events::NbdEvent;
pub use export::{BlockSizes, Export, TransmissionFlags};
pub use handshake::MAX_NAME_BYTES;
pub use queue::NbdQueue;

/// How to reach an NBD export; [`connect`](NbdBuilder::connect) opens its connections.
///
/// ```no_run
/// use ublk_queue::DeviceBuilder;
/// use ublk_targets::{NbdAddress, NbdBuilder};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let server = NbdAddress::Tcp { host: "nas".into(), port: 10809 };
/// let nbd = NbdBuilder::new(server).export("disk0").queues(2).connect()?;
/// let builder = nbd.configure(DeviceBuilder::new().queues(2));
/// let serving = builder.add()?.serve(nbd)?;
/// println!("{} serves nas:10809/disk0", serving.block_path());
/// serving.wait()?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct NbdBuilder {
    address: NbdAddress,
    export: String,
    connections: Option<u16>,
    queues: u16,
    block_size: Option<u32>,
    connect_timeout: Duration,
    reconnect_timeout: Duration,
    io_timeout: Duration,
    events: Option<Handler>,
}

impl fmt::Debug for NbdBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NbdBuilder")
            .field("address", &self.address)
            .field("export", &self.export)
            .field("connections", &self.connections)
            .field("queues", &self.queues)
            .field("block_size", &self.block_size)
            .finish_non_exhaustive()
    }
}

/// How long connecting and the handshake may take, by default.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a queue may be without any connection before its I/O fails, by default.
pub const DEFAULT_RECONNECT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long requests may go unanswered before their connection counts as lost, by default.
pub const DEFAULT_IO_TIMEOUT: Duration = Duration::from_secs(30);

impl NbdBuilder {
    /// The default export (the empty name) of the server at `address`, one queue, connections
    /// as [`connections`](Self::connections) says by default.
    pub fn new(address: NbdAddress) -> Self {
        NbdBuilder {
            address,
            export: String::new(),
            connections: None,
            queues: 1,
            block_size: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            reconnect_timeout: DEFAULT_RECONNECT_TIMEOUT,
            io_timeout: DEFAULT_IO_TIMEOUT,
            events: None,
        }
    }

    /// The export's name (at most [`MAX_NAME_BYTES`]; empty: the server's default export).
    pub fn export(mut self, name: impl Into<String>) -> Self {
        self.export = name.into();
        self
    }

    /// Connections to open: by default one per queue when the server advertises
    /// `CAN_MULTI_CONN` (a FLUSH on one connection then covers writes on every other), else
    /// one. More than one needs `CAN_MULTI_CONN`.
    pub fn connections(mut self, connections: u16) -> Self {
        self.connections = Some(connections);
        self
    }

    /// The queues of the device this will serve: each needs a connection of its own, so there
    /// must be at least as many connections.
    pub fn queues(mut self, queues: u16) -> Self {
        self.queues = queues;
        self
    }

    /// The device's logical block size: 512 to 4096, at least the export's minimum block size
    /// (the default: that minimum, and at least 512).
    pub fn block_size(mut self, bytes: u32) -> Self {
        self.block_size = Some(bytes);
        self
    }

    /// How long each connection attempt may take, connect and handshake (default
    /// [`DEFAULT_CONNECT_TIMEOUT`]).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long a queue waits, without any connection, before its I/O fails with EIO (default
    /// [`DEFAULT_RECONNECT_TIMEOUT`]); reconnecting goes on after that.
    pub fn reconnect_timeout(mut self, timeout: Duration) -> Self {
        self.reconnect_timeout = timeout;
        self
    }

    /// How long requests may go unanswered before their connection is given up as lost and
    /// made anew (default [`DEFAULT_IO_TIMEOUT`]).
    pub fn io_timeout(mut self, timeout: Duration) -> Self {
        self.io_timeout = timeout;
        self
    }

    /// Calls `handler` with every [`NbdEvent`] while the device serves (on queue threads and
    /// helper threads: keep it short).
    pub fn on_event(mut self, handler: impl Fn(&NbdEvent) + Send + Sync + 'static) -> Self {
        self.events = Some(Arc::new(handler));
        self
    }

    fn unusable(&self, why: impl Into<String>) -> Error {
        Error::NbdUnusable {
            server: self.server(),
            why: why.into(),
        }
    }

    fn server(&self) -> String {
        if self.export.is_empty() {
            self.address.to_string()
        } else {
            format!("{} export {:?}", self.address, self.export)
        }
    }

    fn open(&self) -> Result<(Socket, Export), Error> {
        address::open(&self.address, &self.export, self.connect_timeout).map_err(|e| match e {
            OpenError::Connect(e) => Error::NbdConnect {
                server: self.address.to_string(),
                why: e.to_string(),
            },
            OpenError::Handshake(e) => Error::NbdHandshake {
                server: self.server(),
                why: e.to_string(),
            },
        })
    }

    /// Opens the connections and checks what the export allows.
    ///
    /// # Errors
    ///
    /// [`Error::NbdConnect`] when the server cannot be reached, [`Error::NbdHandshake`] when it
    /// refuses the export or breaks the protocol, [`Error::NbdUnusable`] when the export cannot
    /// be served as asked (more connections without `CAN_MULTI_CONN`, fewer connections than
    /// queues, block sizes ublk cannot have).
    pub fn connect(&self) -> Result<Nbd, Error> {
        if self.export.len() > MAX_NAME_BYTES {
            return Err(self.unusable(format!(
                "the export name is longer than the protocol's {MAX_NAME_BYTES} bytes"
            )));
        }
        if self.queues == 0 || self.connections == Some(0) {
            return Err(self.unusable("a device needs at least one queue and one connection"));
        }
        let (first, export) = self.open()?;
        let multi = export.flags.contains(TransmissionFlags::CAN_MULTI_CONN);
        let connections = self
            .connections
            .unwrap_or(if multi { self.queues } else { 1 });
        if connections > 1 && !multi {
            return Err(self.unusable(format!(
                "{connections} connections asked for, but the server does not advertise \
                 CAN_MULTI_CONN (a FLUSH on one connection might not cover writes on another): \
                 use one connection and one queue"
            )));
        }
        if self.queues > connections {
            return Err(self.unusable(format!(
                "{} queues need a connection each, but there {}: {}",
                self.queues,
                if connections == 1 {
                    "is 1".to_owned()
                } else {
                    format!("are {connections}")
                },
                if multi {
                    "ask for more connections, or fewer queues"
                } else {
                    "the server does not advertise CAN_MULTI_CONN, so one queue it is"
                }
            )));
        }
        let limits = Limits::of(&export, self.block_size).map_err(|why| self.unusable(why))?;
        let mut sockets = vec![Some(first)];
        for i in 1..connections {
            let (socket, again) = self.open()?;
            again.same_as(&export).map_err(|why| {
                self.unusable(format!("connection {i} reached a different export: {why}"))
            })?;
            sockets.push(Some(socket));
        }
        Ok(Nbd {
            shared: Arc::new(Shared {
                address: self.address.clone(),
                name: self.export.clone(),
                export,
                connect_timeout: self.connect_timeout,
                reconnect_timeout: self.reconnect_timeout,
                io_timeout: self.io_timeout,
                events: self.events.clone(),
            }),
            sockets: Mutex::new(sockets),
            limits,
        })
    }
}

/// The largest READ or WRITE a device sends to the server, at most: ublk's default buffer size
/// (`ublk_ctrl::DEFAULT_MAX_IO_BUF_BYTES`), unless the server takes less.
const MAX_IO_BYTES: u32 = 512 << 10;

/// What every queue of a device shares.
pub(crate) struct Shared {
    pub address: NbdAddress,
    pub name: String,
    pub export: Export,
    pub connect_timeout: Duration,
    pub reconnect_timeout: Duration,
    pub io_timeout: Duration,
    events: Option<Handler>,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("address", &self.address)
            .field("name", &self.name)
            .field("export", &self.export)
            .finish_non_exhaustive()
    }
}

impl Shared {
    pub(crate) fn emit(&self, event: NbdEvent) {
        if let Some(handler) = &self.events {
            handler(&event);
        }
    }

    /// Whether the device sends FLUSH (the export has a volatile cache).
    pub(crate) fn flushes(&self) -> bool {
        self.export.flags.contains(TransmissionFlags::SEND_FLUSH)
    }
}

/// The device's shape, from the export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Limits {
    block_size: u32,
    size: u64,
    max_io_bytes: u32,
}

impl Limits {
    fn of(export: &Export, asked: Option<u32>) -> Result<Limits, String> {
        let minimum = export.block_sizes.minimum;
        let block_size = asked.unwrap_or(minimum.max(512));
        if !block_size.is_power_of_two() || !(512..=4096).contains(&block_size) {
            return Err(if asked.is_some() {
                format!("block size {block_size} is not a power of two from 512 to 4096")
            } else {
                format!(
                    "the export's minimum block size is {minimum} bytes, more than ublk's \
                     largest block (4096)"
                )
            });
        }
        if block_size < minimum {
            return Err(format!(
                "block size {block_size} is below the export's minimum block size {minimum}"
            ));
        }
        let size = export.size - export.size % u64::from(block_size);
        if size == 0 {
            return Err(format!(
                "the export ({} bytes) is smaller than one {block_size}-byte block",
                export.size
            ));
        }
        let page = rustix::param::page_size() as u32;
        let max_io_bytes = export.block_sizes.max_payload.min(MAX_IO_BYTES) / page * page;
        if max_io_bytes == 0 {
            return Err(format!(
                "the export's maximum payload ({} bytes) is below a page ({page} bytes)",
                export.block_sizes.max_payload
            ));
        }
        Ok(Limits {
            block_size,
            size,
            max_io_bytes,
        })
    }
}

/// An NBD export with its connections open: the [`Target`] to serve it with.
#[derive(Debug)]
pub struct Nbd {
    shared: Arc<Shared>,
    /// The connections, until the queues take them.
    sockets: Mutex<Vec<Option<Socket>>>,
    limits: Limits,
}

impl Nbd {
    /// The server.
    pub fn address(&self) -> &NbdAddress {
        &self.shared.address
    }

    /// The export's name (empty: the default export).
    pub fn export_name(&self) -> &str {
        &self.shared.name
    }

    /// What the server said about the export.
    pub fn export(&self) -> &Export {
        &self.shared.export
    }

    /// The connections opened.
    pub fn connections(&self) -> usize {
        self.sockets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// The device size: the export's, down to a whole block.
    pub fn size(&self) -> u64 {
        self.limits.size
    }

    /// The device's logical block size.
    pub fn block_size(&self) -> u32 {
        self.limits.block_size
    }

    /// Sets what the export decides on `builder`: size, block size, largest I/O, read-only,
    /// volatile cache and FUA, DISCARD and WRITE_ZEROES. Queues, depth and id stay as given.
    pub fn configure(&self, builder: DeviceBuilder) -> DeviceBuilder {
        let flags = self.shared.export.flags;
        let read_only = self.shared.export.read_only();
        let builder = builder
            .size(self.limits.size)
            .block_size(self.limits.block_size)
            .max_io_bytes(self.limits.max_io_bytes)
            .read_only(read_only)
            .rotational(flags.contains(TransmissionFlags::ROTATIONAL))
            .volatile_cache(flags.contains(TransmissionFlags::SEND_FLUSH))
            .fua(flags.contains(TransmissionFlags::SEND_FUA));
        let trim = flags.contains(TransmissionFlags::SEND_TRIM);
        let zeroes = flags.contains(TransmissionFlags::SEND_WRITE_ZEROES);
        if read_only || !(trim || zeroes) {
            return builder;
        }
        // NBD lengths are 32 bits: the largest whole-block extent that fits.
        let bs = self.limits.block_size;
        let most = (u32::MAX / bs * bs) >> 9;
        builder.discard(DiscardParams {
            granularity: bs,
            alignment: 0,
            max_discard_sectors: if trim { most } else { 0 },
            max_write_zeroes_sectors: if zeroes { most } else { 0 },
        })
    }

    /// One line about the export, for a log.
    pub fn describe(&self) -> String {
        format!(
            "NBD server {}, export {:?}: {}, {} connection(s), {}-byte blocks",
            self.shared.address,
            self.shared.name,
            self.shared.export,
            self.connections(),
            self.limits.block_size
        )
    }
}

impl Drop for Nbd {
    /// Connections no queue took (a device that was never served) say goodbye.
    fn drop(&mut self) {
        let sockets = self
            .sockets
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        for socket in sockets.iter().flatten() {
            socket.disconnect();
        }
    }
}

impl Target for Nbd {
    type Queue = NbdQueue;

    /// Takes the connections whose index modulo the queue count is this queue's.
    fn open_queue(&self, q: &QueueInfo) -> io::Result<NbdQueue> {
        let queues = usize::from(q.dev_info().nr_hw_queues.max(1));
        let mut sockets = self.sockets.lock().unwrap_or_else(PoisonError::into_inner);
        let mine: Vec<(usize, Socket)> = sockets
            .iter_mut()
            .enumerate()
            .filter(|(i, _)| i % queues == usize::from(q.q_id()))
            .filter_map(|(i, s)| s.take().map(|s| (i, s)))
            .collect();
        if mine.is_empty() {
            return Err(io::Error::other(format!(
                "queue {} has no NBD connection: {} connection(s) for {queues} queue(s), or \
                 they were used by an earlier device",
                q.q_id(),
                sockets.len()
            )));
        }
        NbdQueue::new(Arc::clone(&self.shared), q.q_id(), q.depth(), mine)
    }

    /// Off: each request goes to the server as soon as it arrives; holding requests back for a
    /// batch only delays them (as for loop). Sends still gather whatever arrives while one is
    /// in flight.
    fn batching(&self) -> Batching {
        Batching::OFF
    }

    /// No: a queue's connections, its held requests and its reconnecting belong to one
    /// `NbdQueue`, and `open_queue` hands each connection to the first thread that asks.
    fn per_io_daemons(&self) -> bool {
        false
    }
}

#[cfg(test)]
#[path = "../../tests/common/fake_nbd.rs"]
mod fake_nbd;
#[cfg(test)]
mod tests;
