//! One request as a target sees it: [`Request`] while it is handled (with its data),
//! [`IoInfo`] while its SQEs are in flight, [`TargetCqe`] for each of their completions, and
//! [`Handled`], what the target says it did; [`OwnedCqe`] is the completion of an SQE the target
//! owns, tied to no request.

use std::io;
use std::marker::PhantomData;

use rustix::io::Errno;
use ublk_ring::cqueue::{Cqe, CqeFlags};
use ublk_uapi::{IoDesc, IoFlags, IoOp};

/// A request's description, without access to its data: what [`QueueTarget::complete`](crate::QueueTarget::complete) gets.
///
/// Valid from the fetch that delivered it until the request completes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoInfo {
    tag: u16,
    op: IoOp,
    flags: IoFlags,
    offset: u64,
    len: u64,
    data: DataPlace,
}

/// Where a request's data is, for a target that moves it with SQEs of its own. Which one
/// depends on the device's buffer mode (the crate documentation's "Inside a queue"); a target
/// that serves data from memory ([`Target::needs_memory`](crate::Target::needs_memory)) only
/// ever sees [`DataPlace::Memory`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DataPlace {
    /// In server memory at this address: READ data goes there, WRITE data is there (copy,
    /// user copy and need-get-data modes).
    Memory(*mut u8),
    /// In the request's own pages, registered at this index of the queue ring's fixed-buffer
    /// table (zero copy and automatic registration): move it with `ReadFixed`/`WriteFixed`
    /// (a READ's pages are only written to, a WRITE's only read from), `buf_index` this index
    /// and the address the byte offset within the request (0 for its start).
    Fixed(u16),
}

impl IoInfo {
    /// Decodes descriptor `tag`, whose data is at `data` (`capacity` bytes fit there when it is
    /// memory); the errno to fail it with when the engine cannot serve it.
    pub(crate) fn from_desc(
        tag: u16,
        desc: &IoDesc,
        data: DataPlace,
        capacity: usize,
    ) -> Result<Self, Errno> {
        // Ops added by later kernels (or zoned ones on a device that did not ask for them).
        let op = desc.op().map_err(|_| Errno::OPNOTSUPP)?;
        let len = desc.byte_len();
        if matches!(op, IoOp::Read | IoOp::Write)
            && matches!(data, DataPlace::Memory(_))
            && len > capacity as u64
        {
            // The kernel caps requests at max_sectors, which fits the buffer; never overrun it.
            return Err(Errno::IO);
        }
        // A FLUSH has no range: the block layer leaves its position at (sector_t)-1.
        // Otherwise a range that does not fit 64 bits in bytes is no range on any device:
        // never let it wrap round to a small offset.
        let offset = if op == IoOp::Flush {
            0
        } else {
            desc.start_sector
                .checked_mul(1 << ublk_uapi::io_desc::SECTOR_SHIFT)
                .filter(|offset| offset.checked_add(len).is_some())
                .ok_or(Errno::IO)?
        };
        Ok(IoInfo {
            tag,
            op,
            flags: desc.flags(),
            offset,
            len,
            data,
        })
    }

    /// The tag: the request's slot in the queue, `0..depth`.
    pub fn tag(&self) -> u16 {
        self.tag
    }

    /// The operation.
    pub fn op(&self) -> IoOp {
        self.op
    }

    /// The request flags (FUA, NOUNMAP, ...).
    pub fn flags(&self) -> IoFlags {
        self.flags
    }

    /// Byte offset on the device.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Length in bytes (for DISCARD and WRITE_ZEROES, the extent; for FLUSH, 0).
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the request moves no bytes (FLUSH).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The tag's buffer, for SQEs that read into or write from it: READ data must land at
    /// `buf_ptr()..buf_ptr() + len()`, WRITE data is there. Null when the data is not in server
    /// memory ([`DataPlace::Fixed`]).
    pub fn buf_ptr(&self) -> *mut u8 {
        match self.data {
            DataPlace::Memory(ptr) => ptr,
            DataPlace::Fixed(_) => std::ptr::null_mut(),
        }
    }

    /// Where the request's data is.
    pub fn data(&self) -> DataPlace {
        self.data
    }
}

/// What a target did with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Handled {
    /// Complete the request now: bytes done (`>= 0`) or a negative errno.
    Done(i32),
    /// The target pushed SQEs for the tag and will finish from
    /// [`QueueTarget::complete`](crate::QueueTarget::complete).
    Queued,
    /// The target holds the request, with or without SQEs of the tag's own in flight (it waits
    /// for a reply on a connection, say), and will finish it with
    /// [`TargetRing::finish`](crate::TargetRing::finish) from any callback. Unlike
    /// [`Queued`](Self::Queued), nothing checks that something is under way for it: a target
    /// that holds requests must keep an SQE in flight that will bring it back (a receive, a
    /// timer), or they wait for ever.
    Held,
}

impl Handled {
    /// `Done` with the byte count, or with the error's negative errno.
    pub fn from_result(result: io::Result<u32>) -> Self {
        match result {
            Ok(bytes) => {
                Handled::Done(i32::try_from(bytes).unwrap_or(-Errno::OVERFLOW.raw_os_error()))
            }
            Err(e) => Handled::Done(-errno_of(&e)),
        }
    }
}

/// The errno to complete a request with for `e`: its OS error, EOPNOTSUPP for
/// [`io::ErrorKind::Unsupported`], EIO for anything else.
pub fn errno_of(e: &io::Error) -> i32 {
    match (e.raw_os_error(), e.kind()) {
        (Some(errno), _) if errno > 0 => errno,
        (_, io::ErrorKind::Unsupported) => Errno::OPNOTSUPP.raw_os_error(),
        _ => Errno::IO.raw_os_error(),
    }
}

/// One request to serve, with access to its data buffer.
///
/// The buffer is borrowed only while [`buf`](Self::buf) or [`buf_mut`](Self::buf_mut) is in use:
/// no Rust reference to it outlives the call, so an SQE that moves the data asynchronously
/// (through [`buf_ptr`](Self::buf_ptr)) never races a live `&mut` view.
#[derive(Debug)]
pub struct Request<'a> {
    info: IoInfo,
    /// The tag's buffer is the server's for `'a` (between the fetch and the commit).
    _buf: PhantomData<&'a mut [u8]>,
}

impl Request<'_> {
    /// A request over `info.buf_ptr()`: the tag's buffer for READ and WRITE (exactly `len`
    /// bytes), none for other operations.
    ///
    /// # Safety
    ///
    /// For READ and WRITE, `info.buf_ptr()` must point at `info.len()` bytes that nothing else
    /// reads or writes for the request's lifetime (the kernel included: the tag is the server's,
    /// between its fetch and its commit), except through SQEs the target itself pushes.
    pub(crate) unsafe fn new(info: IoInfo) -> Self {
        Request {
            info,
            _buf: PhantomData,
        }
    }

    /// The length of the data buffer: `len` for READ and WRITE in server memory, 0 otherwise.
    fn buf_len(&self) -> usize {
        if matches!(self.info.op, IoOp::Read | IoOp::Write)
            && matches!(self.info.data, DataPlace::Memory(_))
        {
            // `from_desc` checked that `len` fits the tag's buffer, so it fits a usize.
            usize::try_from(self.info.len).unwrap_or(0)
        } else {
            0
        }
    }

    /// The tag: the request's slot in the queue, `0..depth`.
    pub fn tag(&self) -> u16 {
        self.info.tag
    }

    /// The operation.
    pub fn op(&self) -> IoOp {
        self.info.op
    }

    /// The request flags (FUA, NOUNMAP, ...).
    pub fn flags(&self) -> IoFlags {
        self.info.flags
    }

    /// Byte offset on the device.
    pub fn offset(&self) -> u64 {
        self.info.offset
    }

    /// Length in bytes (for DISCARD and WRITE_ZEROES, the extent; for FLUSH, 0).
    pub fn len(&self) -> u64 {
        self.info.len
    }

    /// Whether the request moves no bytes (FLUSH).
    pub fn is_empty(&self) -> bool {
        self.info.len == 0
    }

    /// The data: a WRITE's bytes to store, or (before you fill it) a READ's buffer. Exactly
    /// [`len`](Self::len) bytes for READ and WRITE, empty for other operations.
    ///
    /// Not while an SQE of this request that writes the buffer is in flight.
    pub fn buf(&self) -> &[u8] {
        match self.buf_len() {
            0 => &[],
            // SAFETY: `new`'s contract: `len` bytes at the pointer are the server's for the
            // request's lifetime, and the returned borrow of `self` ends before any other use.
            len => unsafe { std::slice::from_raw_parts(self.info.buf_ptr(), len) },
        }
    }

    /// The data buffer, to fill for a READ.
    ///
    /// Not while an SQE of this request that reads or writes the buffer is in flight.
    pub fn buf_mut(&mut self) -> &mut [u8] {
        match self.buf_len() {
            0 => &mut [],
            // SAFETY: as in `buf`; the exclusive borrow of `self` keeps this view unique.
            len => unsafe { std::slice::from_raw_parts_mut(self.info.buf_ptr(), len) },
        }
    }

    /// The buffer's address, for SQEs that move the data asynchronously (see
    /// [`TargetRing::push`](crate::TargetRing::push) for the rules).
    pub fn buf_ptr(&self) -> *mut u8 {
        self.info.buf_ptr()
    }

    /// Where the request's data is.
    pub fn data(&self) -> DataPlace {
        self.info.data
    }

    /// The request's description, to keep for [`QueueTarget::complete`](crate::QueueTarget::complete).
    pub fn info(&self) -> IoInfo {
        self.info
    }
}

/// A completion of an SQE a target pushed, as [`QueueTarget::complete`](crate::QueueTarget::complete) sees it.
#[derive(Debug, Clone, Copy)]
pub struct TargetCqe {
    sub: u16,
    cqe: Cqe,
}

impl TargetCqe {
    pub(crate) fn new(sub: u16, cqe: Cqe) -> Self {
        TargetCqe { sub, cqe }
    }

    /// The sub-id given to [`TargetRing::push_with`](crate::TargetRing::push_with) (0 for [`TargetRing::push`](crate::TargetRing::push)).
    pub fn sub(&self) -> u16 {
        self.sub
    }

    /// The operation's result: bytes or a negative errno.
    pub fn result(&self) -> i32 {
        self.cqe.result()
    }

    /// The result as `io::Result`.
    ///
    /// # Errors
    ///
    /// The errno the operation failed with.
    pub fn into_result(self) -> io::Result<u32> {
        self.cqe.into_result()
    }

    /// The CQE flags.
    pub fn flags(&self) -> CqeFlags {
        self.cqe.flags()
    }

    /// The raw CQE; its `user_data` is the engine's encoding, not the target's.
    pub fn cqe(&self) -> &Cqe {
        &self.cqe
    }
}

/// A completion of an SQE the target owns ([`TargetRing::push_owned`](crate::TargetRing::push_owned)),
/// as [`QueueTarget::complete_owned`](crate::QueueTarget::complete_owned) sees it.
#[derive(Debug, Clone, Copy)]
pub struct OwnedCqe {
    key: u32,
    cqe: Cqe,
}

impl OwnedCqe {
    pub(crate) fn new(key: u32, cqe: Cqe) -> Self {
        OwnedCqe { key, cqe }
    }

    /// The key given to [`TargetRing::push_owned`](crate::TargetRing::push_owned).
    pub fn key(&self) -> u32 {
        self.key
    }

    /// The operation's result: bytes or a negative errno.
    pub fn result(&self) -> i32 {
        self.cqe.result()
    }

    /// The result as `io::Result`.
    ///
    /// # Errors
    ///
    /// The errno the operation failed with.
    pub fn into_result(self) -> io::Result<u32> {
        self.cqe.into_result()
    }

    /// The CQE flags.
    pub fn flags(&self) -> CqeFlags {
        self.cqe.flags()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(op: IoOp, flags: IoFlags, start_sector: u64, nr_sectors: u32) -> IoDesc {
        IoDesc {
            op_flags: IoDesc::pack_op_flags(op, flags),
            nr_sectors,
            start_sector,
            addr: 0,
        }
    }

    #[test]
    fn descriptors_decode_to_bytes() {
        let mut buf = [0u8; 4096];
        let d = desc(IoOp::Write, IoFlags::FUA, 8, 4);
        let info = IoInfo::from_desc(3, &d, DataPlace::Memory(buf.as_mut_ptr()), buf.len())
            .expect("a valid write");
        assert_eq!(
            (info.tag(), info.op(), info.flags()),
            (3, IoOp::Write, IoFlags::FUA)
        );
        assert_eq!((info.offset(), info.len()), (4096, 2048));
        // SAFETY: `buf` is ours and untouched while `req` lives.
        let req = unsafe { Request::new(info) };
        assert_eq!(req.buf().len(), 2048);
        assert_eq!(req.buf_ptr(), buf.as_mut_ptr());
    }

    #[test]
    fn a_flush_has_no_range() {
        let mut buf = [0u8; 4096];
        // What the kernel sends: the block layer's "no position", (sector_t)-1.
        let d = desc(IoOp::Flush, IoFlags::empty(), u64::MAX, 0);
        let info = IoInfo::from_desc(2, &d, DataPlace::Memory(buf.as_mut_ptr()), buf.len())
            .expect("a flush is served");
        assert_eq!((info.op(), info.offset(), info.len()), (IoOp::Flush, 0, 0));
    }

    #[test]
    fn non_data_ops_get_an_empty_buffer() {
        let mut buf = [0u8; 4096];
        let d = desc(IoOp::Discard, IoFlags::empty(), 0, 1 << 30);
        let info = IoInfo::from_desc(0, &d, DataPlace::Memory(buf.as_mut_ptr()), buf.len())
            .expect("discard is not bounded by the buffer");
        assert_eq!(info.len(), 1 << 39);
        // SAFETY: no slice over the buffer is made for DISCARD.
        let req = unsafe { Request::new(info) };
        assert!(req.buf().is_empty());
    }

    #[test]
    fn unknown_ops_and_oversized_requests_are_refused() {
        let mut buf = [0u8; 4096];
        let unknown = IoDesc {
            op_flags: 7,
            ..IoDesc::default()
        };
        assert_eq!(
            IoInfo::from_desc(0, &unknown, DataPlace::Memory(buf.as_mut_ptr()), 4096),
            Err(Errno::OPNOTSUPP)
        );
        let too_big = desc(IoOp::Read, IoFlags::empty(), 0, 9);
        assert_eq!(
            IoInfo::from_desc(0, &too_big, DataPlace::Memory(buf.as_mut_ptr()), 4096),
            Err(Errno::IO)
        );
    }

    #[test]
    fn io_errors_map_to_errnos() {
        assert_eq!(errno_of(&io::Error::from_raw_os_error(28)), 28);
        assert_eq!(
            errno_of(&io::ErrorKind::Unsupported.into()),
            Errno::OPNOTSUPP.raw_os_error()
        );
        assert_eq!(
            errno_of(&io::Error::other("no errno")),
            Errno::IO.raw_os_error()
        );
        assert_eq!(Handled::from_result(Ok(512)), Handled::Done(512));
        assert_eq!(
            Handled::from_result(Err(Errno::NOSPC.into())),
            Handled::Done(-Errno::NOSPC.raw_os_error())
        );
    }

    proptest::proptest! {
        /// Whatever a descriptor holds, decoding it never panics, and what it accepts is a
        /// range that fits: READ/WRITE within the tag's buffer, offset + length within 64 bits,
        /// the offset exactly the sector times 512.
        #[test]
        fn any_descriptor_decodes_or_is_refused(
            op_flags: u32,
            nr_sectors: u32,
            start_sector: u64,
            buf_bytes in 0usize..(64 << 20),
        ) {
            let d = IoDesc { op_flags, nr_sectors, start_sector, addr: 0 };
            match IoInfo::from_desc(1, &d, DataPlace::Memory(std::ptr::null_mut()), buf_bytes) {
                Ok(info) if info.op() == IoOp::Flush => {
                    proptest::prop_assert_eq!(info.offset(), 0, "a flush has no range");
                }
                Ok(info) => {
                    proptest::prop_assert!(info.offset().checked_add(info.len()).is_some());
                    proptest::prop_assert_eq!(u128::from(info.offset()), u128::from(start_sector) * 512);
                    proptest::prop_assert_eq!(info.len(), u64::from(nr_sectors) * 512);
                    if matches!(info.op(), IoOp::Read | IoOp::Write) {
                        proptest::prop_assert!(info.len() <= buf_bytes as u64);
                    }
                    proptest::prop_assert_eq!(info.flags().bits(), op_flags & !0xff);
                }
                Err(errno) => proptest::prop_assert!(errno == Errno::IO || errno == Errno::OPNOTSUPP),
            }
        }
    }
}
