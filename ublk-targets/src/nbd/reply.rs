//! NBD replies ("Simple reply message", "Structured reply chunk message" and "Structured reply
//! types" in the NBD protocol, doc/proto.md): headers and chunk bodies parsed from bytes, the
//! byte ranges a structured READ reply has covered, and NBD errors as Linux errnos.
//!
//! Nothing here trusts the server: a header is read only once all of it is there, a chunk's
//! fixed part is bounded before it is buffered, and anything the protocol does not allow is a
//! [`Violation`] naming it. Whether a reply matches a request the client sent is the
//! connection's business (`connection.rs`).

use std::fmt;

use rustix::io::Errno;

/// `NBD_SIMPLE_REPLY_MAGIC`.
const SIMPLE_MAGIC: u32 = 0x6744_6698;
/// `NBD_STRUCTURED_REPLY_MAGIC`.
const STRUCTURED_MAGIC: u32 = 0x668e_33ef;
/// Bytes of a simple reply header, and of a structured chunk header.
const SIMPLE_BYTES: usize = 16;
const CHUNK_BYTES: usize = 20;

/// `NBD_REPLY_FLAG_DONE`: the last chunk of a reply.
const FLAG_DONE: u16 = 1 << 0;

const TYPE_NONE: u16 = 0;
const TYPE_OFFSET_DATA: u16 = 1;
const TYPE_OFFSET_HOLE: u16 = 2;
const TYPE_ERROR: u16 = (1 << 15) | 1;
const TYPE_ERROR_OFFSET: u16 = (1 << 15) | 2;
/// Every error chunk type has bit 15 set.
const TYPE_IS_ERROR: u16 = 1 << 15;

/// The largest chunk body we buffer whole (error chunks: a 4096-byte message and framing).
pub(crate) const MAX_SMALL_BODY: u32 = 8 << 10;
/// The most disjoint pieces a READ reply may arrive in before we call it abuse.
const MAX_PIECES: usize = 4096;

/// Something the server sent that the protocol does not allow: the stream cannot be trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation(pub(crate) String);

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

pub(crate) fn violation<T>(what: impl Into<String>) -> Result<T, Violation> {
    Err(Violation(what.into()))
}

/// A reply header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Header {
    /// A simple reply; for a READ without error, the request's data follows.
    Simple { cookie: u64, error: u32 },
    /// One chunk of a structured reply; `len` bytes of body follow.
    Chunk {
        done: bool,
        kind: u16,
        cookie: u64,
        len: u32,
    },
}

impl Header {
    pub(crate) fn cookie(&self) -> u64 {
        match *self {
            Header::Simple { cookie, .. } | Header::Chunk { cookie, .. } => cookie,
        }
    }
}

/// The header at the start of `buf` and its length, or `None` until all of it is there.
pub(crate) fn parse_header(buf: &[u8]) -> Result<Option<(Header, usize)>, Violation> {
    let Some(magic) = buf.first_chunk::<4>() else {
        return Ok(None);
    };
    match u32::from_be_bytes(*magic) {
        SIMPLE_MAGIC => {
            let Some(h) = buf.first_chunk::<SIMPLE_BYTES>() else {
                return Ok(None);
            };
            let error = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
            let cookie = u64::from_be_bytes(h[8..16].try_into().unwrap_or_default());
            Ok(Some((Header::Simple { cookie, error }, SIMPLE_BYTES)))
        }
        STRUCTURED_MAGIC => {
            let Some(h) = buf.first_chunk::<CHUNK_BYTES>() else {
                return Ok(None);
            };
            let flags = u16::from_be_bytes([h[4], h[5]]);
            let kind = u16::from_be_bytes([h[6], h[7]]);
            let cookie = u64::from_be_bytes(h[8..16].try_into().unwrap_or_default());
            let len = u32::from_be_bytes([h[16], h[17], h[18], h[19]]);
            let done = flags & FLAG_DONE != 0;
            Ok(Some((
                Header::Chunk {
                    done,
                    kind,
                    cookie,
                    len,
                },
                CHUNK_BYTES,
            )))
        }
        other => violation(format!("reply magic {other:#010x}")),
    }
}

/// How much of a chunk's body must be buffered before [`parse_body`] can read it: an
/// OFFSET_DATA chunk's 8-byte offset (its data goes straight to the request's buffer), or the
/// whole (small) body of every other type. Checks the length against the type.
pub(crate) fn body_needs(kind: u16, len: u32, done: bool) -> Result<usize, Violation> {
    let fixed = |want: u32, name: &str| {
        if len == want {
            Ok(want as usize)
        } else {
            violation(format!("{name} chunk of {len} bytes (it has {want})"))
        }
    };
    match kind {
        TYPE_NONE if !done => violation("a NONE chunk without the DONE flag"),
        TYPE_NONE => fixed(0, "NONE"),
        TYPE_OFFSET_DATA if len < 9 => violation(format!("OFFSET_DATA chunk of {len} bytes")),
        TYPE_OFFSET_DATA => Ok(8),
        TYPE_OFFSET_HOLE => fixed(12, "OFFSET_HOLE"),
        kind if kind & TYPE_IS_ERROR != 0 => {
            let least = if kind == TYPE_ERROR_OFFSET { 14 } else { 6 };
            if len < least && kind != TYPE_ERROR && kind != TYPE_ERROR_OFFSET {
                // An error type we do not know: it errs the request whatever its body.
                Ok(len as usize)
            } else if len < least || len > MAX_SMALL_BODY {
                violation(format!("error chunk {kind:#06x} of {len} bytes"))
            } else {
                Ok(len as usize)
            }
        }
        kind => violation(format!("unexpected reply chunk type {kind}")),
    }
}

/// A chunk body, as far as a READ's data or a request's result goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Body {
    /// Nothing (NONE): the reply is over.
    None,
    /// `len` bytes of data for the export's bytes at `offset` follow the 8 buffered bytes.
    Data { offset: u64, len: u32 },
    /// The export's `len` bytes at `offset` read as zeroes.
    Hole { offset: u64, len: u32 },
    /// The request failed with this (Linux) errno.
    Error { errno: Errno },
}

/// Reads a chunk body of `kind` and `len` bytes from `body`, which holds what
/// [`body_needs`] asked for.
pub(crate) fn parse_body(kind: u16, len: u32, body: &[u8]) -> Result<Body, Violation> {
    let u64_at = |at: usize| {
        body.get(at..at + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_be_bytes)
    };
    let u32_at = |at: usize| {
        body.get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_be_bytes)
    };
    let short = || Violation(format!("chunk type {kind} cut short"));
    match kind {
        TYPE_NONE => Ok(Body::None),
        TYPE_OFFSET_DATA => Ok(Body::Data {
            offset: u64_at(0).ok_or_else(short)?,
            len: len - 8,
        }),
        TYPE_OFFSET_HOLE => {
            let len = u32_at(8).ok_or_else(short)?;
            if len == 0 {
                return violation("an OFFSET_HOLE chunk of zero bytes");
            }
            Ok(Body::Hole {
                offset: u64_at(0).ok_or_else(short)?,
                len,
            })
        }
        TYPE_ERROR | TYPE_ERROR_OFFSET => {
            let error = u32_at(0).ok_or_else(short)?;
            if error == 0 {
                return violation("an error chunk with error 0");
            }
            let message = body
                .get(4..6)
                .map_or(0, |m| u16::from_be_bytes([m[0], m[1]]));
            let framing = if kind == TYPE_ERROR { 6 } else { 14 };
            if u32::from(message) > len - framing {
                return violation(format!(
                    "an error message of {message} bytes in a {len}-byte chunk"
                ));
            }
            Ok(Body::Error {
                errno: errno_of(error),
            })
        }
        // An error type we do not know: the request failed, its details are the server's.
        _ => Ok(Body::Error {
            errno: u32_at(0).filter(|&e| e != 0).map_or(Errno::IO, errno_of),
        }),
    }
}

/// The Linux errno for NBD error `error` ("Error values"); unknown ones count as EINVAL, as
/// the protocol says.
pub(crate) fn errno_of(error: u32) -> Errno {
    match error {
        1 => Errno::PERM,
        5 => Errno::IO,
        12 => Errno::NOMEM,
        28 => Errno::NOSPC,
        75 => Errno::OVERFLOW,
        95 => Errno::OPNOTSUPP,
        108 => Errno::SHUTDOWN,
        _ => Errno::INVAL,
    }
}

/// The parts of a READ request a structured reply has covered so far, as sorted, merged
/// ranges of request-relative bytes.
#[derive(Debug, Default)]
pub(crate) struct Coverage {
    pieces: Vec<(u64, u64)>,
}

impl Coverage {
    pub(crate) fn clear(&mut self) {
        self.pieces.clear();
    }

    /// Adds bytes `start..end`, which must not overlap anything covered already.
    pub(crate) fn add(&mut self, start: u64, end: u64) -> Result<(), Violation> {
        let at = self.pieces.partition_point(|&(_, e)| e <= start);
        if let Some(&(s, _)) = self.pieces.get(at)
            && s < end
        {
            return violation(format!(
                "chunks overlap at request bytes {}..{end}",
                start.max(s)
            ));
        }
        let joins_prev = at > 0 && self.pieces[at - 1].1 == start;
        let joins_next = self.pieces.get(at).is_some_and(|&(s, _)| s == end);
        match (joins_prev, joins_next) {
            (true, true) => {
                self.pieces[at - 1].1 = self.pieces[at].1;
                self.pieces.remove(at);
            }
            (true, false) => self.pieces[at - 1].1 = end,
            (false, true) => self.pieces[at].0 = start,
            (false, false) => {
                if self.pieces.len() >= MAX_PIECES {
                    return violation(format!("a reply in more than {MAX_PIECES} pieces"));
                }
                self.pieces.insert(at, (start, end));
            }
        }
        Ok(())
    }

    /// Whether exactly `0..len` is covered.
    pub(crate) fn is_whole(&self, len: u64) -> bool {
        match self.pieces.as_slice() {
            [] => len == 0,
            [(0, end)] => *end == len,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests;
