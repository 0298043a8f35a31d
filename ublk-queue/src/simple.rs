//! The synchronous target API: one method per operation, called on the queue thread.

use std::io;
use std::sync::Arc;

use rustix::io::Errno;
use ublk_uapi::{IoFlags, IoOp};

use crate::request::Request;
use crate::request::{Handled, errno_of};
use crate::target::{QueueInfo, QueueTarget, Target};
use crate::target_ring::TargetRing;

/// A backend that does its I/O synchronously; wrap it in [`Simple`] to serve a device.
///
/// Every method runs on a queue thread, several queues at once, so the target is shared (`&self`)
/// and must synchronise itself. While a method runs, that queue serves nothing else: keep them
/// quick, or implement [`Target`] and go asynchronous.
///
/// Errors complete the request with their errno ([`errno_of`]): the OS error if there is one,
/// EOPNOTSUPP for [`io::ErrorKind::Unsupported`], else EIO.
pub trait SimpleTarget: Send + Sync + 'static {
    /// Fills `buf` with the bytes at `offset`.
    ///
    /// # Errors
    ///
    /// Whatever the backend hit; the READ fails with its errno.
    fn read(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;

    /// Stores `buf` at `offset`; with [`IoFlags::FUA`] it must be durable before returning.
    ///
    /// # Errors
    ///
    /// Whatever the backend hit; the WRITE fails with its errno.
    fn write(&self, offset: u64, buf: &[u8], flags: IoFlags) -> io::Result<()>;

    /// Makes completed writes durable. The default has nothing to do (no volatile cache).
    ///
    /// # Errors
    ///
    /// Whatever the backend hit; the FLUSH fails with its errno.
    fn flush(&self) -> io::Result<()> {
        Ok(())
    }

    /// Forgets `len` bytes at `offset`. The default refuses (EOPNOTSUPP); the block layer only
    /// sends DISCARD to devices built with [`DeviceBuilder::discard`](crate::DeviceBuilder::discard).
    ///
    /// # Errors
    ///
    /// Whatever the backend hit; the DISCARD fails with its errno.
    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        let _ = (offset, len);
        Err(Errno::OPNOTSUPP.into())
    }

    /// Makes `len` bytes at `offset` read back as zeroes. The default writes zeroes through
    /// [`SimpleTarget::write`], 64 KiB at a time.
    ///
    /// # Errors
    ///
    /// Whatever the backend hit; the WRITE_ZEROES fails with its errno.
    fn write_zeroes(&self, offset: u64, len: u64, flags: IoFlags) -> io::Result<()> {
        static ZEROES: [u8; 64 << 10] = [0; 64 << 10];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(ZEROES.len() as u64);
            // `n` is at most ZEROES.len(), so it fits a usize.
            self.write(offset + done, &ZEROES[..n as usize], flags)?;
            done += n;
        }
        Ok(())
    }
}

/// Serves a [`SimpleTarget`] as a [`Target`]: every queue shares the one value.
///
/// ```
/// use std::sync::Arc;
/// use ublk_queue::{Simple, SimpleTarget, IoFlags};
///
/// struct Zeroes;
/// impl SimpleTarget for Zeroes {
///     fn read(&self, _: u64, buf: &mut [u8]) -> std::io::Result<()> {
///         buf.fill(0);
///         Ok(())
///     }
///     fn write(&self, _: u64, _: &[u8], _: IoFlags) -> std::io::Result<()> {
///         Ok(())
///     }
/// }
///
/// let shared = Arc::new(Zeroes);
/// let target = Simple::from_arc(Arc::clone(&shared)); // keep a handle on the backend
/// assert!(Arc::ptr_eq(target.get(), &shared));
/// ```
#[derive(Debug)]
pub struct Simple<T>(Arc<T>);

impl<T: SimpleTarget> Simple<T> {
    /// Wraps `target`.
    pub fn new(target: T) -> Self {
        Simple(Arc::new(target))
    }

    /// Wraps a target the caller also keeps a handle on.
    pub fn from_arc(target: Arc<T>) -> Self {
        Simple(target)
    }

    /// The wrapped target.
    pub fn get(&self) -> &Arc<T> {
        &self.0
    }
}

impl<T: SimpleTarget> Target for Simple<T> {
    type Queue = SimpleQueue<T>;

    fn open_queue(&self, _: &QueueInfo) -> io::Result<Self::Queue> {
        Ok(SimpleQueue(Arc::clone(&self.0)))
    }
}

/// One queue's view of a [`Simple`] target.
#[derive(Debug)]
pub struct SimpleQueue<T>(Arc<T>);

impl<T: SimpleTarget> QueueTarget for SimpleQueue<T> {
    fn handle(&mut self, req: Request<'_>, _: &mut TargetRing<'_>) -> Handled {
        Handled::Done(serve(&*self.0, req))
    }
}

/// Serves `req` with `target`: bytes done or a negative errno.
pub(crate) fn serve<T: SimpleTarget + ?Sized>(target: &T, mut req: Request<'_>) -> i32 {
    let (offset, len, flags) = (req.offset(), req.len(), req.flags());
    let result = match req.op() {
        IoOp::Read => target.read(offset, req.buf_mut()),
        IoOp::Write => target.write(offset, req.buf(), flags),
        IoOp::Flush => target.flush(),
        IoOp::Discard => target.discard(offset, len),
        IoOp::WriteZeroes => target.write_zeroes(offset, len, flags),
        _ => Err(Errno::OPNOTSUPP.into()),
    };
    match result {
        // READ and WRITE lengths fit the tag's buffer (at most 32 MiB); other ops report 0 bytes.
        Ok(()) if matches!(req.op(), IoOp::Read | IoOp::Write) => {
            i32::try_from(len).unwrap_or(-Errno::IO.raw_os_error())
        }
        Ok(()) => 0,
        Err(e) => -errno_of(&e),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use ublk_uapi::IoDesc;

    use super::*;
    use crate::request::{DataPlace, IoInfo};

    /// Records every call; fails READs at offset 0 with ENOSPC to check the error path.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<String>>);

    impl Recorder {
        fn log(&self, s: String) {
            self.0.lock().unwrap().push(s);
        }
    }

    impl SimpleTarget for Recorder {
        fn read(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
            self.log(format!("read {offset} {}", buf.len()));
            if offset == 0 {
                return Err(Errno::NOSPC.into());
            }
            buf.fill(0x5a);
            Ok(())
        }
        fn write(&self, offset: u64, buf: &[u8], flags: IoFlags) -> io::Result<()> {
            self.log(format!(
                "write {offset} {} {:?} {}",
                buf.len(),
                flags,
                buf.iter().all(|&b| b == 0)
            ));
            Ok(())
        }
    }

    fn run(
        target: &Recorder,
        op: IoOp,
        flags: IoFlags,
        sector: u64,
        sectors: u32,
        buf: &mut [u8],
    ) -> i32 {
        let desc = IoDesc {
            op_flags: IoDesc::pack_op_flags(op, flags),
            nr_sectors: sectors,
            start_sector: sector,
            addr: 0,
        };
        let info = match IoInfo::from_desc(1, &desc, DataPlace::Memory(buf.as_mut_ptr()), buf.len())
        {
            Ok(info) => info,
            Err(errno) => return -errno.raw_os_error(),
        };
        // SAFETY: `buf` is borrowed mutably for the whole call and nothing else touches it.
        serve(target, unsafe { Request::new(info) })
    }

    #[test]
    fn each_op_reaches_its_method_with_byte_units() {
        let t = Recorder::default();
        let mut buf = vec![0u8; 8192];
        assert_eq!(run(&t, IoOp::Read, IoFlags::empty(), 8, 2, &mut buf), 1024);
        assert!(
            buf[..1024].iter().all(|&b| b == 0x5a) && buf[1024] == 0,
            "exactly len bytes were exposed"
        );
        assert_eq!(run(&t, IoOp::Write, IoFlags::FUA, 16, 16, &mut buf), 8192);
        assert_eq!(run(&t, IoOp::Flush, IoFlags::empty(), 0, 0, &mut buf), 0);
        // The default discard refuses; the default write-zeroes writes 64 KiB chunks of zeroes.
        assert_eq!(
            run(&t, IoOp::Discard, IoFlags::empty(), 0, 8, &mut buf),
            -Errno::OPNOTSUPP.raw_os_error()
        );
        assert_eq!(
            run(&t, IoOp::WriteZeroes, IoFlags::NOUNMAP, 1, 256, &mut buf),
            0
        );
        let log = t.0.lock().unwrap().clone();
        assert_eq!(
            log,
            [
                "read 4096 1024",
                "write 8192 8192 IoFlags(FUA) false",
                "write 512 65536 IoFlags(NOUNMAP) true",
                "write 66048 65536 IoFlags(NOUNMAP) true",
            ]
        );
    }

    #[test]
    fn errors_and_unknown_ops_become_errnos() {
        let t = Recorder::default();
        let mut buf = vec![0u8; 4096];
        assert_eq!(
            run(&t, IoOp::Read, IoFlags::empty(), 0, 8, &mut buf),
            -Errno::NOSPC.raw_os_error()
        );
        assert_eq!(
            run(&t, IoOp::ZoneOpen, IoFlags::empty(), 0, 0, &mut buf),
            -Errno::OPNOTSUPP.raw_os_error()
        );
        assert_eq!(
            run(&t, IoOp::Read, IoFlags::empty(), 8, 16, &mut buf),
            -Errno::IO.raw_os_error(),
            "longer than the buffer"
        );
    }
}
