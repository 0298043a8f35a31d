//! The target API: what a backend implements to serve a ublk device.
//!
//! A [`Target`] is shared by the device's queue threads; each thread opens its own
//! [`QueueTarget`] with [`Target::open_queue`] and keeps it for the life of the queue, so per-queue
//! state needs no locks. The engine hands every request to [`QueueTarget::handle`]; the target
//! either finishes it there ([`Handled::Done`]) or pushes SQEs on the queue's own io_uring through
//! [`TargetRing`] and finishes it later from [`QueueTarget::complete`] ([`Handled::Queued`]).
//! A target that does its I/O synchronously can implement [`SimpleTarget`](crate::SimpleTarget)
//! instead.

use std::io;
use std::os::fd::BorrowedFd;

use rustix::io::Errno;
use ublk_ring::cqueue::{Cqe, CqeFlags};
use ublk_uapi::{DevInfo, IoDesc, IoFlags, IoOp, Params};

use crate::batch::Batching;
use crate::target_ring::TargetRing;

/// A backend for a whole device: opens one [`QueueTarget`] per hardware queue.
///
/// `open_queue` runs on the queue's own thread, before the queue fetches its first request; it
/// must not block indefinitely, since START_DEV waits for every queue.
pub trait Target: Send + Sync + 'static {
    /// The per-queue half of the target, owned by one queue thread.
    type Queue: QueueTarget;

    /// Opens the state for queue `q` (files, scratch buffers, ...).
    ///
    /// # Errors
    ///
    /// An error fails the queue, and [`Device::serve`](crate::Device::serve) tears the device down.
    fn open_queue(&self, q: &QueueInfo) -> io::Result<Self::Queue>;

    /// How queue threads batch requests for this target unless the device was told otherwise
    /// ([`DeviceBuilder::batching`](crate::DeviceBuilder::batching)).
    ///
    /// The default, [`Batching::default`], suits targets that finish requests at once (in
    /// memory, say). A target whose requests wait on I/O of their own should return
    /// [`Batching::OFF`]: holding requests back to gather a batch delays that I/O and costs more
    /// concurrency than the batch saves.
    fn batching(&self) -> Batching {
        Batching::default()
    }
}

/// One queue's target: serves the requests of its queue, on its queue thread.
pub trait QueueTarget {
    /// Serves one request: [`Handled::Done`] with the bytes done (READ/WRITE: `req.len()`) or a
    /// negative errno, or [`Handled::Queued`] after pushing at least one SQE for `req.tag()`
    /// through `ring`.
    ///
    /// A READ's data goes into [`Request::buf_mut`] before the request completes; a WRITE's data is
    /// already in [`Request::buf`]. A short count is allowed: the kernel re-issues the rest.
    fn handle(&mut self, req: Request<'_>, ring: &mut TargetRing<'_>) -> Handled;

    /// One of the SQEs this target pushed for `io` completed.
    ///
    /// Return [`Handled::Done`] to complete the request (the engine waits for the tag's other SQEs
    /// still in flight, without calling back, then commits), or [`Handled::Queued`] after pushing
    /// more SQEs (to continue a short read, say). The default completes with the CQE's result,
    /// which suits one SQE per request whose result is the byte count.
    fn complete(&mut self, io: &IoInfo, cqe: &TargetCqe, ring: &mut TargetRing<'_>) -> Handled {
        let _ = (io, ring);
        Handled::Done(cqe.result())
    }

    /// Files to register with the queue ring, so SQEs can name them by index.
    ///
    /// Called once after [`Target::open_queue`]. The queue's `/dev/ublkcN` is fixed file 0, and the
    /// `i`-th file returned here is fixed file `1 + i`: use [`TargetRing::file`] to get it. The
    /// ring keeps its own reference, so the descriptors may be closed afterwards.
    fn fixed_files(&self) -> Vec<BorrowedFd<'_>> {
        Vec::new()
    }

    /// Whether to register the queue's I/O buffers with the ring, so SQEs can name them as fixed
    /// buffer [`TargetRing::buf_index`] (`ReadFixed`/`WriteFixed`): the kernel then skips mapping
    /// and pinning the pages on every I/O. The cost: every tag's buffer (`depth` x
    /// [`max_io_bytes`](QueueInfo::max_io_bytes)) is allocated and pinned for the life of the queue.
    ///
    /// Called once after [`Target::open_queue`]. If the kernel refuses (RLIMIT_MEMLOCK), the queue
    /// serves anyway, [`TargetRing::buf_index`] is `None`, and a
    /// [`Warning::BuffersNotRegistered`](crate::Warning::BuffersNotRegistered) says so.
    fn register_buffers(&self) -> bool {
        false
    }
}

/// What a target did with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Handled {
    /// Complete the request now: bytes done (`>= 0`) or a negative errno.
    Done(i32),
    /// The target pushed SQEs for the tag and will finish from [`QueueTarget::complete`].
    Queued,
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

/// The device and queue a [`QueueTarget`] serves.
#[derive(Debug, Clone)]
pub struct QueueInfo {
    q_id: u16,
    dev_info: DevInfo,
    params: Params,
    buf_bytes: u32,
}

impl QueueInfo {
    pub(crate) fn new(q_id: u16, dev_info: DevInfo, params: Params, buf_bytes: u32) -> Self {
        QueueInfo {
            q_id,
            dev_info,
            params,
            buf_bytes,
        }
    }

    /// The queue's index, `0..queues`.
    pub fn q_id(&self) -> u16 {
        self.q_id
    }

    /// The device id (`N` in `/dev/ublkbN`).
    pub fn dev_id(&self) -> u32 {
        self.dev_info.dev_id
    }

    /// Tags in this queue: requests it may have in flight at once.
    pub fn depth(&self) -> u16 {
        self.dev_info.queue_depth
    }

    /// The size of each tag's buffer: the largest READ or WRITE the queue receives.
    pub fn max_io_bytes(&self) -> u32 {
        self.buf_bytes
    }

    /// The device size in bytes.
    pub fn dev_size(&self) -> u64 {
        self.params.basic.dev_sectors << ublk_uapi::io_desc::SECTOR_SHIFT
    }

    /// The logical block size in bytes.
    pub fn block_size(&self) -> u32 {
        1 << self.params.basic.logical_bs_shift
    }

    /// The device as the kernel created it.
    pub fn dev_info(&self) -> &DevInfo {
        &self.dev_info
    }

    /// The parameters the device was started with.
    pub fn params(&self) -> &Params {
        &self.params
    }
}

/// A request's description, without access to its data: what [`QueueTarget::complete`] gets.
///
/// Valid from the fetch that delivered it until the request completes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoInfo {
    tag: u16,
    op: IoOp,
    flags: IoFlags,
    offset: u64,
    len: u64,
    buf: *mut u8,
}

impl IoInfo {
    /// Decodes descriptor `tag`, whose buffer is `buf` (`buf_bytes` long); the errno to fail it
    /// with when the engine cannot serve it.
    pub(crate) fn from_desc(
        tag: u16,
        desc: &IoDesc,
        buf: *mut u8,
        buf_bytes: usize,
    ) -> Result<Self, Errno> {
        // Ops added by later kernels (or zoned ones on a device that did not ask for them).
        let op = desc.op().map_err(|_| Errno::OPNOTSUPP)?;
        let len = desc.byte_len();
        if matches!(op, IoOp::Read | IoOp::Write) && len > buf_bytes as u64 {
            // The kernel caps requests at max_sectors, which fits the buffer; never overrun it.
            return Err(Errno::IO);
        }
        Ok(IoInfo {
            tag,
            op,
            flags: desc.flags(),
            offset: desc.byte_offset(),
            len,
            buf,
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
    /// `buf_ptr()..buf_ptr() + len()`, WRITE data is there.
    pub fn buf_ptr(&self) -> *mut u8 {
        self.buf
    }
}

/// One request to serve, with its data buffer.
#[derive(Debug)]
pub struct Request<'a> {
    info: IoInfo,
    buf: &'a mut [u8],
}

impl<'a> Request<'a> {
    /// A request over `buf`: the tag's buffer for READ and WRITE (exactly `len` bytes), empty for
    /// other operations.
    ///
    /// # Safety
    ///
    /// For READ and WRITE, `info.buf_ptr()` must point at `info.len()` bytes that nothing else
    /// reads or writes for `'a` (the kernel included: the tag is the server's, between its fetch
    /// and its commit, and no SQE of this tag is in flight).
    pub(crate) unsafe fn new(info: IoInfo) -> Self {
        let buf: &'a mut [u8] = if matches!(info.op, IoOp::Read | IoOp::Write) {
            // `from_desc` checked that `len` fits the tag's buffer, so it fits a usize.
            let len = usize::try_from(info.len).unwrap_or(0);
            // SAFETY: the caller guarantees exclusive access to `len` bytes at `buf`.
            unsafe { std::slice::from_raw_parts_mut(info.buf, len) }
        } else {
            &mut []
        };
        Request { info, buf }
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
    pub fn buf(&self) -> &[u8] {
        self.buf
    }

    /// The data buffer, to fill for a READ.
    pub fn buf_mut(&mut self) -> &mut [u8] {
        self.buf
    }

    /// The data buffer with the request's lifetime.
    pub fn into_buf(self) -> &'a mut [u8] {
        self.buf
    }

    /// The buffer's address, for SQEs that move the data asynchronously (see
    /// [`TargetRing::push`] for the rules).
    pub fn buf_ptr(&self) -> *mut u8 {
        self.info.buf
    }

    /// The request's description, to keep for [`QueueTarget::complete`].
    pub fn info(&self) -> IoInfo {
        self.info
    }
}

/// A completion of an SQE a target pushed, as [`QueueTarget::complete`] sees it.
#[derive(Debug, Clone, Copy)]
pub struct TargetCqe {
    sub: u16,
    cqe: Cqe,
}

impl TargetCqe {
    pub(crate) fn new(sub: u16, cqe: Cqe) -> Self {
        TargetCqe { sub, cqe }
    }

    /// The sub-id given to [`TargetRing::push_with`] (0 for [`TargetRing::push`]).
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
        let info = IoInfo::from_desc(3, &d, buf.as_mut_ptr(), buf.len()).expect("a valid write");
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
    fn non_data_ops_get_an_empty_buffer() {
        let mut buf = [0u8; 4096];
        let d = desc(IoOp::Discard, IoFlags::empty(), 0, 1 << 30);
        let info = IoInfo::from_desc(0, &d, buf.as_mut_ptr(), buf.len())
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
            IoInfo::from_desc(0, &unknown, buf.as_mut_ptr(), 4096),
            Err(Errno::OPNOTSUPP)
        );
        let too_big = desc(IoOp::Read, IoFlags::empty(), 0, 9);
        assert_eq!(
            IoInfo::from_desc(0, &too_big, buf.as_mut_ptr(), 4096),
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
}
