//! One NBD connection in the transmission phase, without I/O of its own: it says what to send
//! and where to receive, and is told what the socket did. The queue (`queue.rs`) turns that into
//! SQEs on its ring; the host tests drive it with plain blocking sockets against fake servers.
//!
//! Sending: requests queue up and go in batches, one `writev` at a time (two sends in flight on
//! one stream could interleave their bytes): each request's 28-byte header, and a WRITE's data
//! straight from the request's buffer. A short send goes on from where it stopped.
//!
//! Receiving: one receive at a time, into a connection buffer that collects as many replies as
//! have arrived, or, for the rest of a large READ payload, straight into the request's buffer.
//! Replies match requests by cookie (the tag, the queue and a per-request sequence number, so a
//! stale or repeated reply never matches a later request on the same tag), in any order.
//! Everything the server sends is checked before it is used; a [`Violation`] ends the
//! connection, and no byte is ever written outside the range a request asked for.
//!
//! A request the server answers while the batch that carried it is still being sent (the
//! completions of a send and a receive may come in either order) is finished only once that
//! send has completed: until then the kernel may still be reading its buffer.

use std::collections::VecDeque;

use ublk_ring::types::IoVec;

use super::reply::{self, Body, Coverage, Header, Violation};
use super::request::{HEADER_BYTES, Request};

/// Bytes of the connection's receive buffer.
const RBUF_BYTES: usize = 64 << 10;
/// The most one receive into the buffer asks for: enough for many small replies at once,
/// little enough that most of a large READ's data is received straight into its buffer.
const RECV_BYTES: usize = 32 << 10;
/// The rest of a READ payload at least this large is received straight into its buffer.
const DIRECT_BYTES: usize = 16 << 10;
/// What a receive asks for when every request in flight is a large READ: the next reply's
/// header (and a data chunk's offset), whose data then goes straight to its buffer instead of
/// being copied from the connection's.
const HEADER_RECV: [u32; 2] = [16, 28];
/// Requests per send.
const MAX_BATCH: usize = 64;

/// How a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Broken {
    /// The connection dropped (EOF, reset, a failed send): the unanswered requests can be sent
    /// again on a new one.
    Lost(String),
    /// The server broke the protocol: nothing it says on this connection can be trusted.
    Violation(Violation),
}

impl From<Violation> for Broken {
    fn from(v: Violation) -> Self {
        Broken::Violation(v)
    }
}

fn bad<T>(what: impl Into<String>) -> Result<T, Broken> {
    Err(Broken::Violation(Violation(what.into())))
}

/// Where one request stands on this connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Free,
    /// Waiting for a send.
    Queued,
    /// In the send in flight; `reply` holds a result that arrived meanwhile.
    Sending {
        reply: Option<i32>,
    },
    /// Sent; waiting for the reply.
    Sent,
}

#[derive(Debug)]
struct Slot {
    state: State,
    request: Request,
    /// The request's data: READ replies land here, WRITE data is sent from here.
    buf: *mut u8,
    seq: u32,
    header: [u8; HEADER_BYTES],
    /// A structured READ reply: what its chunks covered so far.
    coverage: Coverage,
    /// The first error a structured reply reported.
    error: Option<rustix::io::Errno>,
}

/// The receive in progress.
#[derive(Debug, Clone, Copy)]
enum Recv {
    /// Between replies, or inside a chunk's buffered part.
    Header,
    /// `left` bytes of READ data for `tag` go to `dst`; then the reply ends (a simple reply)
    /// or the chunk does (`done`: the reply with it).
    Payload {
        tag: u16,
        dst: *mut u8,
        left: usize,
        simple: bool,
        done: bool,
    },
}

/// One connection's requests, send batch and receive state.
#[derive(Debug)]
pub(crate) struct Connection {
    structured: bool,
    q_id: u16,
    slots: Box<[Slot]>,
    to_send: VecDeque<u16>,
    iov: Vec<IoVec>,
    batch: Vec<u16>,
    /// The first iovec of the batch not sent yet.
    first: usize,
    send_in_flight: bool,
    rbuf: Box<[u8]>,
    rstart: usize,
    rend: usize,
    recv: Recv,
    /// The receive in flight goes straight to a READ's buffer.
    direct: bool,
    next_seq: u32,
    outstanding: usize,
    /// Of those, READs of at least [`DIRECT_BYTES`].
    large_reads: usize,
}

impl Connection {
    /// A connection for a queue of `depth` tags; `structured` if the handshake negotiated
    /// structured replies.
    pub(crate) fn new(q_id: u16, depth: u16, structured: bool) -> Self {
        let slots = (0..depth)
            .map(|_| Slot {
                state: State::Free,
                request: Request::DISCONNECT,
                buf: std::ptr::null_mut(),
                seq: 0,
                header: [0; HEADER_BYTES],
                coverage: Coverage::default(),
                error: None,
            })
            .collect();
        Connection {
            structured,
            q_id,
            slots,
            to_send: VecDeque::with_capacity(usize::from(depth)),
            iov: Vec::with_capacity(2 * MAX_BATCH),
            batch: Vec::with_capacity(MAX_BATCH),
            first: 0,
            send_in_flight: false,
            rbuf: vec![0; RBUF_BYTES].into_boxed_slice(),
            rstart: 0,
            rend: 0,
            recv: Recv::Header,
            direct: false,
            next_seq: 0,
            outstanding: 0,
            large_reads: 0,
        }
    }

    fn is_large_read(request: &Request) -> bool {
        request.gets_data() && request.len as usize >= DIRECT_BYTES
    }

    /// Slot `tag` is answered or handed back.
    fn release(&mut self, tag: u16) {
        let slot = &mut self.slots[usize::from(tag)];
        slot.state = State::Free;
        self.outstanding -= 1;
        if Self::is_large_read(&slot.request) {
            self.large_reads -= 1;
        }
    }

    /// Requests on this connection not answered yet.
    pub(crate) fn outstanding(&self) -> usize {
        self.outstanding
    }

    /// Queues `request` of `tag` for sending.
    ///
    /// # Safety
    ///
    /// `buf` points at `request.len` bytes that stay valid until the request is handed back
    /// (completed, or returned by [`drain`](Self::drain)): writable and unused by anyone else
    /// for a READ, readable and unchanged for a WRITE.
    ///
    /// # Panics
    ///
    /// If `tag` is beyond the depth or already on this connection: the queue's bookkeeping
    /// would be broken.
    pub(crate) unsafe fn submit(&mut self, tag: u16, request: Request, buf: *mut u8) {
        let seq = self.next_seq;
        self.next_seq = seq.wrapping_add(1);
        let slot = &mut self.slots[usize::from(tag)];
        assert_eq!(slot.state, State::Free, "tag {tag} submitted twice");
        slot.state = State::Queued;
        slot.request = request;
        slot.buf = buf;
        slot.seq = seq;
        slot.coverage.clear();
        slot.error = None;
        self.to_send.push_back(tag);
        self.outstanding += 1;
        if Self::is_large_read(&request) {
            self.large_reads += 1;
        }
    }

    fn cookie(&self, tag: u16, seq: u32) -> u64 {
        (u64::from(seq) << 32) | (u64::from(self.q_id) << 16) | u64::from(tag)
    }

    /// The iovecs of the next send, if one should start now (none in flight, something to
    /// send): a pointer to `count` iovecs that stay valid until [`sent`](Self::sent).
    pub(crate) fn next_send(&mut self) -> Option<(*const IoVec, u32)> {
        if self.send_in_flight {
            return None;
        }
        if self.first == self.iov.len() {
            self.iov.clear();
            self.batch.clear();
            self.first = 0;
            while self.batch.len() < MAX_BATCH {
                let Some(tag) = self.to_send.pop_front() else {
                    break;
                };
                let cookie = self.cookie(tag, self.slots[usize::from(tag)].seq);
                let slot = &mut self.slots[usize::from(tag)];
                slot.header = slot.request.header(cookie);
                slot.state = State::Sending { reply: None };
                self.iov
                    .push(IoVec::new(slot.header.as_mut_ptr(), HEADER_BYTES));
                if slot.request.sends_data() {
                    self.iov
                        .push(IoVec::new(slot.buf, slot.request.len as usize));
                }
                self.batch.push(tag);
            }
            if self.batch.is_empty() {
                return None;
            }
        }
        self.send_in_flight = true;
        let rest = &self.iov[self.first..];
        // At most 2 * MAX_BATCH iovecs.
        Some((rest.as_ptr(), rest.len() as u32))
    }

    /// The send from [`next_send`](Self::next_send) completed with `res` (bytes, or a
    /// negative errno); requests whose replies came meanwhile are finished into `done`.
    pub(crate) fn sent(&mut self, res: i32, done: &mut Vec<(u16, i32)>) -> Result<(), Broken> {
        self.send_in_flight = false;
        let mut n = match usize::try_from(res) {
            Ok(0) => return Err(Broken::Lost("the server stopped taking data".into())),
            Ok(n) => n,
            Err(_) => {
                let errno = rustix::io::Errno::from_raw_os_error(-res);
                return Err(Broken::Lost(format!("sending failed: {errno}")));
            }
        };
        while n > 0 {
            let Some(iov) = self.iov.get_mut(self.first) else {
                return Err(Broken::Lost(format!("the kernel sent {n} bytes too many")));
            };
            if n >= iov.len() {
                n -= iov.len();
                self.first += 1;
            } else {
                *iov = IoVec::new(iov.as_ptr().wrapping_add(n), iov.len() - n);
                n = 0;
            }
        }
        if self.first < self.iov.len() {
            return Ok(());
        }
        for i in 0..self.batch.len() {
            let tag = self.batch[i];
            match self.slots[usize::from(tag)].state {
                State::Sending { reply: Some(res) } => {
                    self.release(tag);
                    done.push((tag, res));
                }
                _ => self.slots[usize::from(tag)].state = State::Sent,
            }
        }
        self.batch.clear();
        Ok(())
    }

    /// Where the next receive goes: `len` bytes at the pointer, and whether they must all come
    /// (the rest of a READ payload, received straight into its buffer with `MSG_WAITALL`).
    pub(crate) fn recv_target(&mut self) -> (*mut u8, u32, bool) {
        if let Recv::Payload { dst, left, .. } = self.recv
            && left >= DIRECT_BYTES
            && self.rstart == self.rend
        {
            self.direct = true;
            // A payload is at most one request's length, which fits 32 bits.
            return (dst, u32::try_from(left).unwrap_or(u32::MAX), true);
        }
        self.direct = false;
        if self.rstart == self.rend {
            (self.rstart, self.rend) = (0, 0);
        } else if RBUF_BYTES - self.rend < RECV_BYTES {
            self.rbuf.copy_within(self.rstart..self.rend, 0);
            (self.rstart, self.rend) = (0, self.rend - self.rstart);
        }
        let mut len = (RBUF_BYTES - self.rend).min(RECV_BYTES);
        if self.rstart == self.rend
            && self.outstanding > 0
            && self.large_reads == self.outstanding
            && matches!(self.recv, Recv::Header)
        {
            len = HEADER_RECV[usize::from(self.structured)] as usize;
        }
        // SAFETY: `rend` is within the buffer (at most RBUF_BYTES), so the pointer is too.
        let at = unsafe { self.rbuf.as_mut_ptr().add(self.rend) };
        (at, len as u32, false)
    }

    /// The receive from [`recv_target`](Self::recv_target) completed with `res`; the replies
    /// it completed go into `done`.
    pub(crate) fn received(&mut self, res: i32, done: &mut Vec<(u16, i32)>) -> Result<(), Broken> {
        let n = match usize::try_from(res) {
            Ok(0) => return Err(Broken::Lost("the server closed the connection".into())),
            Ok(n) => n,
            Err(_) => {
                let errno = rustix::io::Errno::from_raw_os_error(-res);
                return Err(Broken::Lost(format!("receiving failed: {errno}")));
            }
        };
        if self.direct {
            let Recv::Payload { dst, left, .. } = &mut self.recv else {
                return Err(Broken::Lost("a direct receive without a payload".into()));
            };
            if n > *left {
                return Err(Broken::Lost(format!(
                    "the kernel received {n} bytes too many"
                )));
            }
            *dst = dst.wrapping_add(n);
            *left -= n;
        } else {
            if n > RBUF_BYTES - self.rend {
                return Err(Broken::Lost(format!(
                    "the kernel received {n} bytes too many"
                )));
            }
            self.rend += n;
        }
        self.process(done)
    }

    /// Parses what the buffer holds, as far as it goes.
    fn process(&mut self, done: &mut Vec<(u16, i32)>) -> Result<(), Broken> {
        loop {
            match self.recv {
                Recv::Payload {
                    tag,
                    dst,
                    left,
                    simple,
                    done: last,
                } => {
                    let have = (self.rend - self.rstart).min(left);
                    if have > 0 {
                        // SAFETY: `dst..dst + left` lies inside the request's buffer (checked
                        // against its range when the payload began), which the connection may
                        // write until the request is handed back (`submit`'s contract).
                        unsafe {
                            dst.copy_from_nonoverlapping(self.rbuf[self.rstart..].as_ptr(), have)
                        };
                        self.rstart += have;
                    }
                    let left = left - have;
                    if left > 0 {
                        self.recv = Recv::Payload {
                            tag,
                            dst: dst.wrapping_add(have),
                            left,
                            simple,
                            done: last,
                        };
                        return Ok(());
                    }
                    self.recv = Recv::Header;
                    if simple || last {
                        self.finish_reply(tag, done)?;
                    }
                }
                Recv::Header => {
                    let Some((header, len)) =
                        reply::parse_header(&self.rbuf[self.rstart..self.rend])?
                    else {
                        return Ok(());
                    };
                    if !self.header(header, len, done)? {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Acts on a reply header of `len` bytes at the buffer's start; false if the rest of its
    /// chunk's buffered part has not arrived yet (nothing consumed).
    fn header(
        &mut self,
        header: Header,
        len: usize,
        done: &mut Vec<(u16, i32)>,
    ) -> Result<bool, Broken> {
        let tag = self.matching(header.cookie())?;
        let slot = &self.slots[usize::from(tag)];
        let (request, buf) = (slot.request, slot.buf);
        match header {
            Header::Simple { error, .. } => {
                self.rstart += len;
                if error != 0 {
                    let errno = reply::errno_of(error);
                    self.complete(tag, -errno.raw_os_error(), done);
                } else if request.gets_data() {
                    if self.structured {
                        return bad(
                            "a simple reply to a READ, after structured replies were negotiated",
                        );
                    }
                    self.recv = Recv::Payload {
                        tag,
                        dst: buf,
                        left: request.len as usize,
                        simple: true,
                        done: true,
                    };
                } else {
                    self.complete(tag, request.done(), done);
                }
                Ok(true)
            }
            Header::Chunk {
                done: last,
                kind,
                len: body_len,
                ..
            } => {
                if !self.structured {
                    return bad("a structured reply that was never negotiated");
                }
                let need = reply::body_needs(kind, body_len, last)?;
                if self.rend - self.rstart < len + need {
                    return Ok(false);
                }
                let at = self.rstart + len;
                let body = reply::parse_body(kind, body_len, &self.rbuf[at..at + need])?;
                self.rstart = at + need;
                self.chunk(tag, body, last, done)?;
                Ok(true)
            }
        }
    }

    /// Acts on one structured chunk for `tag`.
    fn chunk(
        &mut self,
        tag: u16,
        body: Body,
        last: bool,
        done: &mut Vec<(u16, i32)>,
    ) -> Result<(), Broken> {
        let slot = &mut self.slots[usize::from(tag)];
        let request = slot.request;
        match body {
            Body::None => {}
            Body::Data { offset, len } | Body::Hole { offset, len } => {
                if !request.gets_data() {
                    return bad("a data chunk in the reply to a request that is no READ");
                }
                let start = offset.checked_sub(request.offset);
                let end = start.and_then(|s| s.checked_add(u64::from(len)));
                let (Some(start), Some(end)) = (start, end) else {
                    return bad(format!(
                        "a chunk for bytes at {offset} in the reply to a READ at {}",
                        request.offset
                    ));
                };
                if end > u64::from(request.len) {
                    return bad(format!(
                        "a chunk for bytes {offset}..{} in the reply to a READ of {}..{}: more \
                         than was asked",
                        offset.saturating_add(u64::from(len)),
                        request.offset,
                        request.offset + u64::from(request.len)
                    ));
                }
                slot.coverage.add(start, end)?;
                // `end <= request.len`, so both fit a usize.
                let dst = slot.buf.wrapping_add(start as usize);
                if let Body::Data { .. } = body {
                    self.recv = Recv::Payload {
                        tag,
                        dst,
                        left: len as usize,
                        simple: false,
                        done: last,
                    };
                    return Ok(());
                }
                // SAFETY: `start..end` lies inside the request's `len` bytes at `buf`, which the
                // connection may write until it hands the request back (`submit`'s contract).
                unsafe { dst.write_bytes(0, len as usize) };
            }
            Body::Error { errno } => {
                slot.error.get_or_insert(errno);
            }
        }
        if last {
            self.finish_reply(tag, done)?;
        }
        Ok(())
    }

    /// The reply for `tag` is complete: its result, checked.
    fn finish_reply(&mut self, tag: u16, done: &mut Vec<(u16, i32)>) -> Result<(), Broken> {
        let slot = &self.slots[usize::from(tag)];
        let request = slot.request;
        let res = match slot.error {
            Some(errno) => -errno.raw_os_error(),
            None if self.structured
                && request.gets_data()
                && !slot.coverage.is_whole(u64::from(request.len)) =>
            {
                return bad(format!(
                    "the reply to a READ of {} bytes ended before all of them came",
                    request.len
                ));
            }
            None => request.done(),
        };
        self.complete(tag, res, done);
        Ok(())
    }

    /// The tag a reply's cookie names, if that request is in flight here.
    fn matching(&self, cookie: u64) -> Result<u16, Broken> {
        let tag = cookie as u16;
        let in_flight = (cookie >> 16) as u16 == self.q_id
            && self.slots.get(usize::from(tag)).is_some_and(|s| {
                s.seq == (cookie >> 32) as u32
                    && matches!(s.state, State::Sending { reply: None } | State::Sent)
            });
        if in_flight {
            Ok(tag)
        } else {
            bad(format!(
                "a reply with cookie {cookie:#x}, which no request in flight has"
            ))
        }
    }

    /// Request `tag` is answered with `res`: finished now, or when its send completes.
    fn complete(&mut self, tag: u16, res: i32, done: &mut Vec<(u16, i32)>) {
        if let State::Sending { reply } = &mut self.slots[usize::from(tag)].state {
            *reply = Some(res);
            return;
        }
        self.release(tag);
        done.push((tag, res));
    }

    /// Hands back every request of a connection that broke, once none of its SQEs is in
    /// flight: each with the result a reply already gave it, or `None` if it was not answered.
    pub(crate) fn drain(&mut self, out: &mut Vec<(u16, Option<i32>)>) {
        for (tag, slot) in self.slots.iter_mut().enumerate() {
            let reply = match slot.state {
                State::Free => continue,
                State::Sending { reply } => reply,
                State::Queued | State::Sent => None,
            };
            slot.state = State::Free;
            // Tags are below the depth, a u16.
            out.push((tag as u16, reply));
        }
        self.outstanding = 0;
        self.large_reads = 0;
        self.to_send.clear();
        self.iov.clear();
        self.batch.clear();
        self.first = 0;
        self.recv = Recv::Header;
        (self.rstart, self.rend) = (0, 0);
    }
}

#[cfg(test)]
mod tests;
