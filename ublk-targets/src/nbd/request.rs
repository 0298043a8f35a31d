//! NBD requests ("Request message" and "Request types" in the NBD protocol, doc/proto.md): the
//! 28-byte header, and how a ublk request becomes one. FUA passes as the FUA command flag (where
//! the export takes it), NOUNMAP on WRITE_ZEROES as NO_HOLE; DISCARD is TRIM.

use rustix::io::Errno;
use ublk_queue::{IoFlags, IoOp};

use super::export::TransmissionFlags;

/// `NBD_REQUEST_MAGIC`.
const REQUEST_MAGIC: u32 = 0x2560_9513;

/// The size of a request header on the wire.
pub(crate) const HEADER_BYTES: usize = 28;

/// An NBD command (`NBD_CMD_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub(crate) enum Command {
    Read = 0,
    Write = 1,
    Disconnect = 2,
    Flush = 3,
    Trim = 4,
    WriteZeroes = 6,
}

/// `NBD_CMD_FLAG_FUA`: the write is durable before the reply.
pub(crate) const FLAG_FUA: u16 = 1 << 0;
/// `NBD_CMD_FLAG_NO_HOLE`: WRITE_ZEROES keeps the range allocated.
pub(crate) const FLAG_NO_HOLE: u16 = 1 << 1;

/// One request as it goes to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Request {
    pub command: Command,
    pub flags: u16,
    pub offset: u64,
    pub len: u32,
}

impl Request {
    /// The NBD request for a ublk request of `op` with `flags` over `len` bytes at `offset`, on
    /// an export with `export` flags; the errno to fail it with if there is none.
    pub(crate) fn for_ublk(
        op: IoOp,
        flags: IoFlags,
        offset: u64,
        len: u64,
        export: TransmissionFlags,
    ) -> Result<Request, Errno> {
        let fua = if flags.contains(IoFlags::FUA) && export.contains(TransmissionFlags::SEND_FUA) {
            FLAG_FUA
        } else {
            0
        };
        let (command, flags) = match op {
            IoOp::Read => (Command::Read, 0),
            IoOp::Write => (Command::Write, fua),
            IoOp::Flush => (Command::Flush, 0),
            IoOp::Discard if export.contains(TransmissionFlags::SEND_TRIM) => (Command::Trim, fua),
            IoOp::WriteZeroes if export.contains(TransmissionFlags::SEND_WRITE_ZEROES) => {
                let no_hole = if flags.contains(IoFlags::NOUNMAP) {
                    FLAG_NO_HOLE
                } else {
                    0
                };
                (Command::WriteZeroes, fua | no_hole)
            }
            _ => return Err(Errno::OPNOTSUPP),
        };
        // The device's limits keep every length within 32 bits; never wrap one that is not.
        let len = u32::try_from(len).map_err(|_| Errno::INVAL)?;
        let offset = if command == Command::Flush { 0 } else { offset };
        Ok(Request {
            command,
            flags,
            offset,
            len: if command == Command::Flush { 0 } else { len },
        })
    }

    /// `NBD_CMD_DISC`: the polite goodbye, with no reply.
    pub(crate) const DISCONNECT: Request = Request {
        command: Command::Disconnect,
        flags: 0,
        offset: 0,
        len: 0,
    };

    /// The header with `cookie`, big-endian as the protocol has it.
    pub(crate) fn header(&self, cookie: u64) -> [u8; HEADER_BYTES] {
        let mut h = [0u8; HEADER_BYTES];
        h[0..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
        h[4..6].copy_from_slice(&self.flags.to_be_bytes());
        h[6..8].copy_from_slice(&(self.command as u16).to_be_bytes());
        h[8..16].copy_from_slice(&cookie.to_be_bytes());
        h[16..24].copy_from_slice(&self.offset.to_be_bytes());
        h[24..28].copy_from_slice(&self.len.to_be_bytes());
        h
    }

    /// Whether the request's data follows its header (WRITE).
    pub(crate) fn sends_data(&self) -> bool {
        self.command == Command::Write
    }

    /// Whether the reply carries data (READ).
    pub(crate) fn gets_data(&self) -> bool {
        self.command == Command::Read
    }

    /// What a successful reply completes the ublk request with.
    pub(crate) fn done(&self) -> i32 {
        // READ and WRITE lengths are at most the device's largest I/O (32 MiB); the other
        // commands' results only need to be non-negative.
        i32::try_from(self.len).unwrap_or(i32::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: TransmissionFlags = TransmissionFlags::all();

    #[test]
    fn headers_are_big_endian_at_their_offsets() {
        let r = Request {
            command: Command::Write,
            flags: FLAG_FUA,
            offset: 0x0102_0304_0506_0708,
            len: 0x1000,
        };
        let h = r.header(0xaabb_ccdd_eeff_0011);
        assert_eq!(h[..4], [0x25, 0x60, 0x95, 0x13]);
        assert_eq!(h[4..8], [0, 1, 0, 1]);
        assert_eq!(h[8..16], 0xaabb_ccdd_eeff_0011u64.to_be_bytes());
        assert_eq!(h[16..24], [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(h[24..], [0, 0, 0x10, 0]);
    }

    #[test]
    fn ublk_ops_map_with_their_flags() {
        let req = |op, flags, export| Request::for_ublk(op, flags, 4096, 8192, export);
        let w = req(IoOp::Write, IoFlags::FUA, ALL).unwrap();
        assert_eq!(
            (w.command, w.flags, w.len),
            (Command::Write, FLAG_FUA, 8192)
        );
        let no_fua = ALL - TransmissionFlags::SEND_FUA;
        assert_eq!(req(IoOp::Write, IoFlags::FUA, no_fua).unwrap().flags, 0);
        let z = req(IoOp::WriteZeroes, IoFlags::NOUNMAP | IoFlags::FUA, ALL).unwrap();
        assert_eq!(z.flags, FLAG_FUA | FLAG_NO_HOLE);
        assert_eq!(
            req(IoOp::WriteZeroes, IoFlags::empty(), ALL).unwrap().flags,
            0
        );
        assert_eq!(
            req(IoOp::Discard, IoFlags::empty(), ALL).unwrap().command,
            Command::Trim
        );
        let f = req(IoOp::Flush, IoFlags::empty(), ALL).unwrap();
        assert_eq!((f.command, f.offset, f.len), (Command::Flush, 0, 0));
        let none = TransmissionFlags::HAS_FLAGS;
        assert_eq!(
            req(IoOp::Discard, IoFlags::empty(), none),
            Err(Errno::OPNOTSUPP)
        );
        assert_eq!(
            req(IoOp::WriteZeroes, IoFlags::empty(), none),
            Err(Errno::OPNOTSUPP)
        );
        assert_eq!(
            Request::for_ublk(IoOp::Discard, IoFlags::empty(), 0, 1 << 32, ALL),
            Err(Errno::INVAL)
        );
        assert!(req(IoOp::Read, IoFlags::empty(), none).unwrap().gets_data());
    }
}
