//! One queue of an NBD device: its connections driven with SQEs on the queue's own ring, and
//! what happens when one breaks.
//!
//! Each connection has at most one send (a `writev` of a batch of requests) and one receive in
//! flight, both SQEs the target owns ([`TargetRing::push_owned`]); every request is held
//! ([`Handled::Held`]) until its reply arrives on a receive, which finishes it
//! ([`TargetRing::finish`]). A poll on an eventfd hears from the reconnecting helper threads, and
//! a timer runs while there is something to watch: requests without a reply for the I/O timeout
//! (the connection is then given up as lost), or a queue without any connection for the
//! reconnect timeout (its requests then fail with EIO).
//!
//! When a connection breaks, its socket is shut down, which ends its send and receive at once;
//! only when both have completed (the kernel no longer touches any request's buffer) are its
//! requests handed back: re-queued for another connection if it was lost, failed with EIO if the
//! server broke the protocol. A helper thread (`reconnect.rs`) connects and negotiates anew,
//! blocking where a queue thread must not, and hands the socket over.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender};
use std::time::{Duration, Instant};

use rustix::event::{EventfdFlags, PollFlags};
use rustix::fd::OwnedFd;
use rustix::io::Errno;
use rustix::net::RecvFlags;
use ublk_queue::{Handled, OwnedCqe, QueueTarget, Request, TargetRing};
use ublk_ring::opcode::{PollAdd, Recv, Timeout, Writev};
use ublk_ring::types::{Fd, Timespec};

use super::Shared;
use super::address::Socket;
use super::connection::{Broken, Connection};
use super::events::NbdEvent;
use super::reconnect::{self, Reconnected};
use super::request::{Command, Request as NbdRequest};

/// Owned-SQE keys: a connection's send and receive (its index times two, plus one), and these.
const KEY_POLL: u32 = u32::MAX;
const KEY_TIMER: u32 = u32::MAX - 1;

/// The longest the timer sleeps.
const MAX_TICK: Duration = Duration::from_secs(1);

/// One request the queue holds.
#[derive(Debug, Clone, Copy)]
struct Held {
    request: NbdRequest,
    buf: *mut u8,
}

/// A connection of this queue, in whatever state it is.
#[derive(Debug)]
enum Link {
    Up(Live),
    /// Broken: the socket is shut down; waiting for its send and receive to complete.
    Closing {
        live: Live,
        why: Broken,
    },
    /// Gone since `since`; a helper thread is reconnecting it (`helper` false: it could not
    /// be started, and the timer tries again).
    Down {
        since: Instant,
        helper: bool,
    },
}

#[derive(Debug)]
struct Live {
    socket: Socket,
    conn: Connection,
    send: bool,
    recv: bool,
    /// The last time the server sent something, or this connection got its first request.
    progress: Instant,
}

/// One queue of an [`Nbd`](super::Nbd) device.
#[derive(Debug)]
pub struct NbdQueue {
    shared: Arc<Shared>,
    q_id: u16,
    depth: u16,
    /// `(the connection's index in the device, its state)`.
    links: Vec<(usize, Link)>,
    requests: Vec<Option<Held>>,
    /// Requests waiting for a connection, oldest first.
    waiting: VecDeque<u16>,
    /// Since when the queue has had no live connection.
    alone_since: Option<Instant>,
    /// The reconnect timeout passed with no connection: requests fail at once until one is back.
    gave_up: bool,
    events: Arc<OwnedFd>,
    sockets: Receiver<Reconnected>,
    sockets_tx: Sender<Reconnected>,
    /// Set when the queue goes: helper threads stop trying.
    stop: Arc<std::sync::atomic::AtomicBool>,
    timer: Box<Timespec>,
    timer_armed: bool,
    // Reused between callbacks.
    done: Vec<(u16, i32)>,
    drained: Vec<(u16, Option<i32>)>,
}

impl NbdQueue {
    pub(crate) fn new(
        shared: Arc<Shared>,
        q_id: u16,
        depth: u16,
        sockets: Vec<(usize, Socket)>,
    ) -> std::io::Result<Self> {
        let now = Instant::now();
        let structured = shared.export.structured;
        let links = sockets
            .into_iter()
            .map(|(index, socket)| {
                let live = Live {
                    socket,
                    conn: Connection::new(q_id, depth, structured),
                    send: false,
                    recv: false,
                    progress: now,
                };
                (index, Link::Up(live))
            })
            .collect();
        let events = rustix::event::eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
        let (sockets_tx, sockets) = std::sync::mpsc::channel();
        Ok(NbdQueue {
            shared,
            q_id,
            depth,
            links,
            requests: vec![None; usize::from(depth)],
            waiting: VecDeque::with_capacity(usize::from(depth)),
            alone_since: None,
            gave_up: false,
            events: Arc::new(events),
            sockets,
            sockets_tx,
            stop: Arc::default(),
            timer: Box::default(),
            timer_armed: false,
            done: Vec::with_capacity(usize::from(depth)),
            drained: Vec::with_capacity(usize::from(depth)),
        })
    }

    /// Sends `tag` on the live connection with the fewest requests, or keeps it waiting.
    fn route(&mut self, tag: u16, ring: &mut TargetRing<'_>) {
        let Some(held) = self.requests[usize::from(tag)] else {
            return;
        };
        let best = self
            .links
            .iter()
            .enumerate()
            .filter_map(|(i, (_, link))| match link {
                Link::Up(live) => Some((i, live.conn.outstanding())),
                _ => None,
            })
            .min_by_key(|&(_, n)| n);
        match best {
            Some((i, outstanding)) => {
                let Link::Up(live) = &mut self.links[i].1 else {
                    return;
                };
                if outstanding == 0 {
                    live.progress = Instant::now();
                }
                // SAFETY: `buf` is the request's buffer (its `len` bytes, in server memory),
                // the target's until it finishes the request, which it does only once the
                // connection has handed the request back.
                unsafe { live.conn.submit(tag, held.request, held.buf) };
                self.kick(i, ring);
                // Watch for a server that stops answering (or taking data) from now on.
                self.arm_timer(ring);
            }
            None if self.gave_up => self.finish(tag, -Errno::IO.raw_os_error(), ring),
            None => {
                self.waiting.push_back(tag);
                self.arm_timer(ring);
            }
        }
    }

    /// Routes the waiting requests while there is a live connection.
    fn route_waiting(&mut self, ring: &mut TargetRing<'_>) {
        let live = |l: &(usize, Link)| matches!(l.1, Link::Up(_));
        while self.links.iter().any(live) {
            let Some(tag) = self.waiting.pop_front() else {
                break;
            };
            self.route(tag, ring);
        }
    }

    fn finish(&mut self, tag: u16, res: i32, ring: &mut TargetRing<'_>) {
        if self.requests[usize::from(tag)].take().is_some() {
            // Only requests the engine handed us are held, and each is finished once.
            let _ = ring.finish(tag, res);
        }
    }

    /// Starts the send and the receive of link `i` where they are not in flight.
    fn kick(&mut self, i: usize, ring: &mut TargetRing<'_>) {
        let (index, Link::Up(live)) = &mut self.links[i] else {
            return;
        };
        let key = (*index as u32) * 2;
        let fd = Fd(live.socket.raw_fd());
        let mut failed = None;
        if !live.send
            && let Some((iov, count)) = live.conn.next_send()
        {
            let entry = Writev::new(fd, iov, count).build();
            // SAFETY: the iovecs and what they point at (headers in the connection, request
            // buffers held until the connection hands them back) stay put until the send's
            // completion; the socket is closed only after it.
            match unsafe { ring.push_owned(key, entry) } {
                Ok(()) => live.send = true,
                Err(e) => failed = Some(format!("cannot queue a send: {e}")),
            }
        }
        if !live.recv && failed.is_none() {
            let (ptr, len, whole) = live.conn.recv_target();
            let flags = if whole {
                RecvFlags::WAITALL
            } else {
                RecvFlags::empty()
            };
            let entry = Recv::new(fd, ptr, len).flags(flags).build();
            // SAFETY: as above: the connection's buffer, or a READ's buffer it holds.
            match unsafe { ring.push_owned(key + 1, entry) } {
                Ok(()) => live.recv = true,
                Err(e) => failed = Some(format!("cannot queue a receive: {e}")),
            }
        }
        if let Some(why) = failed {
            self.break_link(i, Broken::Lost(why), ring);
        }
    }

    /// Link `i` broke: shut its socket down so that its SQEs end, then close it.
    fn break_link(&mut self, i: usize, why: Broken, ring: &mut TargetRing<'_>) {
        let link = &mut self.links[i].1;
        if !matches!(link, Link::Up(_)) {
            return;
        }
        let gone = Link::Down {
            since: Instant::now(),
            helper: false,
        };
        if let Link::Up(live) = std::mem::replace(link, gone) {
            live.socket.shutdown();
            *link = Link::Closing { live, why };
        }
        self.close_if_quiet(i, ring);
    }

    /// Closes broken link `i` once none of its SQEs is in flight: hands its requests back and
    /// starts reconnecting.
    fn close_if_quiet(&mut self, i: usize, ring: &mut TargetRing<'_>) {
        let (index, link) = &mut self.links[i];
        let index = *index;
        let Link::Closing { live, .. } = link else {
            return;
        };
        if live.send || live.recv {
            return;
        }
        let now = Instant::now();
        let Link::Closing { mut live, why } = std::mem::replace(
            link,
            Link::Down {
                since: now,
                helper: false,
            },
        ) else {
            return;
        };
        let mut drained = std::mem::take(&mut self.drained);
        live.conn.drain(&mut drained);
        drop(live);
        let mut waiting = 0;
        let mut failed = 0;
        for &(tag, reply) in &drained {
            match (reply, &why) {
                (Some(res), _) => self.finish(tag, res, ring),
                (None, Broken::Lost(_)) => {
                    self.waiting.push_back(tag);
                    waiting += 1;
                }
                (None, Broken::Violation(_)) => {
                    self.finish(tag, -Errno::IO.raw_os_error(), ring);
                    failed += 1;
                }
            }
        }
        drained.clear();
        self.drained = drained;
        self.shared.emit(match why {
            Broken::Lost(why) => NbdEvent::ConnectionLost {
                connection: index,
                why,
                requests: waiting,
            },
            Broken::Violation(v) => NbdEvent::ServerMisbehaved {
                connection: index,
                what: v.to_string(),
                failed,
            },
        });
        if !self.links.iter().any(|(_, l)| matches!(l, Link::Up(_))) {
            self.alone_since.get_or_insert(now);
        }
        self.start_helper(i);
        self.route_waiting(ring);
        self.arm_timer(ring);
    }

    /// Starts the helper thread that reconnects link `i`.
    fn start_helper(&mut self, i: usize) {
        let (index, Link::Down { helper, .. }) = &mut self.links[i] else {
            return;
        };
        *helper = reconnect::spawn(
            Arc::clone(&self.shared),
            *index,
            self.sockets_tx.clone(),
            Arc::clone(&self.events),
            Arc::clone(&self.stop),
        );
    }

    /// Takes the sockets helper threads brought back.
    fn take_sockets(&mut self, ring: &mut TargetRing<'_>) {
        let mut count = [0u8; 8];
        // Non-blocking: nothing to read is fine, the channel is what counts.
        let _ = rustix::io::read(&*self.events, &mut count);
        while let Ok(Reconnected { index, socket }) = self.sockets.try_recv() {
            let Some(i) = self.links.iter().position(|(n, _)| *n == index) else {
                continue;
            };
            let Link::Down { since, .. } = self.links[i].1 else {
                continue;
            };
            let now = Instant::now();
            self.links[i].1 = Link::Up(Live {
                socket,
                conn: Connection::new(self.q_id, self.depth, self.shared.export.structured),
                send: false,
                recv: false,
                progress: now,
            });
            self.shared.emit(NbdEvent::Reconnected {
                connection: index,
                after: now - since,
            });
            self.alone_since = None;
            self.gave_up = false;
            self.kick(i, ring);
        }
        self.route_waiting(ring);
    }

    fn arm_poll(&mut self, ring: &mut TargetRing<'_>) {
        let entry = PollAdd::new(
            Fd(rustix::fd::AsRawFd::as_raw_fd(&*self.events)),
            u32::from(PollFlags::IN.bits()),
        )
        .build();
        // SAFETY: the eventfd lives as long as the queue (an Arc the target holds), which the
        // engine drops only after every owned SQE has completed.
        let _ = unsafe { ring.push_owned(KEY_POLL, entry) };
    }

    /// Arms the timer if something needs watching and it is not armed.
    fn arm_timer(&mut self, ring: &mut TargetRing<'_>) {
        let watching = !self.waiting.is_empty()
            || self.links.iter().any(|(_, l)| match l {
                Link::Up(live) => live.conn.outstanding() > 0,
                Link::Closing { .. } => false,
                Link::Down { .. } => !self.gave_up,
            });
        if self.timer_armed || !watching {
            return;
        }
        let s = &self.shared;
        let tick = MAX_TICK
            .min(s.io_timeout / 4)
            .min(s.reconnect_timeout / 4)
            .max(Duration::from_millis(10));
        *self.timer = Timespec::from(tick);
        let entry = Timeout::new(&raw const *self.timer).build();
        // SAFETY: the timespec is boxed in the target, alive until every owned SQE completed,
        // and changed only when the timer is not armed.
        if unsafe { ring.push_owned(KEY_TIMER, entry) }.is_ok() {
            self.timer_armed = true;
        }
    }

    /// The timer: connections that stopped answering, and a queue alone for too long.
    fn tick(&mut self, ring: &mut TargetRing<'_>) {
        let now = Instant::now();
        for i in 0..self.links.len() {
            match &self.links[i].1 {
                Link::Up(live)
                    if live.conn.outstanding() > 0
                        && now.duration_since(live.progress) >= self.shared.io_timeout =>
                {
                    let why = format!("no reply for {:?}", self.shared.io_timeout);
                    self.break_link(i, Broken::Lost(why), ring);
                }
                Link::Down { helper: false, .. } => self.start_helper(i),
                _ => {}
            }
        }
        if let Some(since) = self.alone_since
            && !self.gave_up
            && now.duration_since(since) >= self.shared.reconnect_timeout
        {
            self.gave_up = true;
            let failed = self.waiting.len();
            while let Some(tag) = self.waiting.pop_front() {
                self.finish(tag, -Errno::IO.raw_os_error(), ring);
            }
            self.shared.emit(NbdEvent::GaveUp {
                queue: self.q_id,
                failed,
            });
        }
        self.arm_timer(ring);
    }
}

impl QueueTarget for NbdQueue {
    fn start(&mut self, ring: &mut TargetRing<'_>) {
        self.arm_poll(ring);
        for i in 0..self.links.len() {
            self.kick(i, ring);
        }
    }

    fn handle(&mut self, req: Request<'_>, ring: &mut TargetRing<'_>) -> Handled {
        let flags = self.shared.export.flags;
        let request =
            match NbdRequest::for_ublk(req.op(), req.flags(), req.offset(), req.len(), flags) {
                Ok(r) if r.command == Command::Flush && !self.shared.flushes() => {
                    // No volatile cache was declared, so nothing is waiting to be flushed.
                    return Handled::Done(0);
                }
                Ok(r) => r,
                Err(errno) => return Handled::Done(-errno.raw_os_error()),
            };
        let tag = req.tag();
        self.requests[usize::from(tag)] = Some(Held {
            request,
            buf: req.buf_ptr(),
        });
        self.route(tag, ring);
        Handled::Held
    }

    fn complete_owned(&mut self, cqe: &OwnedCqe, ring: &mut TargetRing<'_>) {
        match cqe.key() {
            KEY_POLL => {
                self.take_sockets(ring);
                self.arm_poll(ring);
            }
            KEY_TIMER => {
                self.timer_armed = false;
                self.tick(ring);
            }
            key => {
                let Some(i) = self.links.iter().position(|(n, _)| *n as u32 == key / 2) else {
                    return;
                };
                let sending = key % 2 == 0;
                self.sqe_done(i, sending, cqe.result(), ring);
            }
        }
    }
}

impl NbdQueue {
    /// Link `i`'s send (or receive) completed with `res`.
    fn sqe_done(&mut self, i: usize, sending: bool, res: i32, ring: &mut TargetRing<'_>) {
        let mut done = std::mem::take(&mut self.done);
        let result = match &mut self.links[i].1 {
            Link::Up(live) => {
                let result = if sending {
                    live.send = false;
                    live.conn.sent(res, &mut done)
                } else {
                    live.recv = false;
                    live.conn.received(res, &mut done)
                };
                if res > 0 {
                    live.progress = Instant::now();
                }
                Some(result)
            }
            Link::Closing { live, .. } => {
                if sending {
                    live.send = false;
                } else {
                    live.recv = false;
                }
                None
            }
            Link::Down { .. } => None,
        };
        for (tag, res) in done.drain(..) {
            self.finish(tag, res, ring);
        }
        self.done = done;
        match result {
            Some(Ok(())) => {
                self.kick(i, ring);
                self.arm_timer(ring);
            }
            Some(Err(why)) => self.break_link(i, why, ring),
            None => self.close_if_quiet(i, ring),
        }
    }
}

impl Drop for NbdQueue {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for (_, link) in &self.links {
            if let Link::Up(live) = link {
                live.socket.disconnect();
            }
        }
    }
}
