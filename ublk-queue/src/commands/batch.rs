//! Batch commands (`UBLK_F_BATCH_IO`, Linux 7.0): a queue talks to the kernel with three
//! commands instead of one per tag and request.
//!
//! - **PREP_IO_CMDS**, once: makes every tag ready (what one FETCH_REQ per tag does per tag).
//! - **FETCH_IO_CMDS**, multishot: each completion is a list of `u16` tags with new requests,
//!   written into a buffer the kernel picks from a provided-buffer ring. Two fetches per queue,
//!   each with its own one-buffer ring of its own group, as the kernel's kublk does: the
//!   kernel dispatches to one fetch at a time, and while one is being re-armed (its buffer ran
//!   out, its completion could not be posted) the other receives. The rings are incremental
//!   (`IOU_PBUF_RING_INC`): each completion uses only the bytes of its tags, so one page holds
//!   thousands of tags before it must be given back; we keep our own offset into it.
//! - **COMMIT_IO_CMDS**, once per round: every result the round produced, in one buffer. The
//!   kernel answers with how many bytes of elements it committed, stopping at the first it
//!   refused; the rest is sent again, and a refusal of the first element is the error.
//!
//! The commit does not fetch: a committed tag goes back to the kernel's pool, and its next
//! request comes through a fetch. The tags of one queue may arrive at either fetch, so batch
//! mode serves each queue from one thread.
//!
//! Batch commands carry no tag, so the 16 bits [`UserData::Command`] has for one say which
//! command completed: [`PREP`], [`FETCH`] plus the fetch's slot, or [`COMMIT`] plus the commit
//! buffer's index.
//!
//! Ending: when the device stops or quiesces, the kernel ends the fetches with
//! `UBLK_IO_RES_ABORT`, but a fetch busy dispatching at that moment is left until the ring
//! closes (`ublk_batch_cancel_queue`). So the first ABORT makes the queue [`Report::Over`]:
//! it commits what it holds and leaves; memory a fetch still armed may write is never freed.

use memmap2::{MmapOptions, MmapRaw};
use rustix::io::Errno;
use ublk_ring::cqueue::{Cqe, CqeFlags};
use ublk_ring::opcode::UringCmd16;
use ublk_ring::{BufRing, BufRingFlags};
use ublk_uapi::io_cmd::UBLK_IO_RES_OK;
use ublk_uapi::{AutoBufReg, BatchElem, BatchFlags, BatchIo, ElemHeader, IoCmdOp};
use zerocopy::IntoBytes;

use super::{Commands, Fetched, Report};
use crate::buffer::Buffers;
use crate::buffer_mode::BufferMode;
use crate::error::Error;
use crate::submitter::{CHAR_DEV, Submitter};
use crate::user_data::UserData;

/// The command id of PREP_IO_CMDS.
const PREP: u16 = 0xC000;
/// The command id of fetch slot `n`: `FETCH | n`.
const FETCH: u16 = 0x8000;
/// The command id of commit buffer `n`: `COMMIT | n` (`n` below `0x4000`).
const COMMIT: u16 = 0x4000;
const INDEX_MASK: u16 = 0x3FFF;

/// Fetches per queue.
const FETCHES: u16 = 2;

/// `UBLK_IO_RES_ABORT`, the end of a fetch that must not be re-armed.
const ABORT: i32 = -(Errno::NODEV.raw_os_error());

/// One multishot fetch: its buffer group and the one buffer in it.
#[derive(Debug)]
struct FetchSlot {
    /// `None` once leaked (see `Drop`).
    ring: Option<BufRing>,
    mem: Option<MmapRaw>,
    len: u32,
    /// Where the next completion's tags start in the buffer.
    offset: u32,
    /// The buffer is with the kernel (pushed, not handed back).
    in_ring: bool,
    state: FetchState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FetchState {
    /// Not sent yet, or ended and to be sent again.
    Idle,
    /// With the kernel.
    Armed,
    /// Ended with ABORT: never sent again.
    Aborted,
}

impl FetchSlot {
    fn base(&self) -> *mut u8 {
        self.mem
            .as_ref()
            .map_or(std::ptr::null_mut(), MmapRaw::as_mut_ptr)
    }

    /// Gives the whole buffer to the kernel again.
    fn give_back(&mut self) {
        let base = self.base();
        if let Some(ring) = &mut self.ring {
            // SAFETY: the mapping lives as long as the slot and is leaked, not unmapped, while a
            // fetch may still write it (`Drop`); the ring holds this one buffer only, and it is
            // pushed only once the kernel handed it back (`in_ring` is false).
            unsafe { ring.push(base, self.len, 0) };
            ring.publish();
        }
        self.offset = 0;
        self.in_ring = true;
    }
}

impl Drop for FetchSlot {
    fn drop(&mut self) {
        if self.state == FetchState::Armed {
            // The kernel may still write tags into the buffer, and reads the ring, until it
            // cancels the fetch after the ring has closed, in its own time.
            std::mem::forget(self.mem.take());
            std::mem::forget(self.ring.take());
        }
    }
}

/// Batch commands of queue `q_id`.
#[derive(Debug)]
pub(crate) struct Batch {
    q_id: u16,
    depth: u16,
    flags: BatchFlags,
    fetches: Vec<FetchSlot>,
    /// The round's commits, not sent yet.
    open: Vec<u8>,
    /// Commit buffers with the kernel, by index; `None` is a free index.
    sent: Vec<Option<Vec<u8>>>,
    /// Buffers to reuse.
    spare: Vec<Vec<u8>>,
    /// The PREP_IO_CMDS buffer while the command is with the kernel.
    prep: Option<Vec<u8>>,
    over: bool,
}

/// The element layout a buffer mode needs: copy mode names each tag's buffer, automatic
/// registration each tag's table index (falling back to the server registering by hand).
pub(crate) fn layout(mode: BufferMode) -> BatchFlags {
    match mode {
        BufferMode::Copy | BufferMode::Auto => BatchFlags::HAS_BUF_ADDR,
        BufferMode::AutoRegister => BatchFlags::AUTO_BUF_REG_FALLBACK,
        BufferMode::UserCopy | BufferMode::ZeroCopy | BufferMode::NeedGetData => {
            BatchFlags::empty()
        }
    }
}

impl Batch {
    /// Batch commands for queue `q_id` of `depth` tags with elements laid out by `flags`:
    /// registers the fetches' buffer groups (0 and 1) on `ring`.
    ///
    /// # Errors
    ///
    /// The ring's error (registering a buffer group), or an I/O error mapping the buffers.
    pub(crate) fn new(
        q_id: u16,
        depth: u16,
        flags: BatchFlags,
        ring: &mut Submitter,
    ) -> Result<Self, Error> {
        // Room for every tag twice before a buffer must be given back; one page at least.
        let page = rustix::param::page_size();
        let len = (usize::from(depth) * 2 * 2).next_multiple_of(page);
        let mut fetches = Vec::with_capacity(usize::from(FETCHES));
        for bgid in 0..FETCHES {
            let mem = MmapOptions::new()
                .len(len)
                .populate()
                .map_anon()
                .map_err(|e| Error::Mmap {
                    q: q_id,
                    what: "the batch fetch buffers",
                    source: e,
                })?;
            let bufs = ring
                .ring
                .register_buf_ring(bgid, 1, BufRingFlags::INCREMENTAL)?;
            fetches.push(FetchSlot {
                ring: Some(bufs),
                mem: Some(mem.into()),
                len: len as u32,
                offset: 0,
                in_ring: false,
                state: FetchState::Idle,
            });
        }
        let elem = usize::from(flags.elem_bytes());
        Ok(Batch {
            q_id,
            depth,
            flags,
            fetches,
            open: Vec::with_capacity(usize::from(depth) * elem),
            sent: Vec::new(),
            spare: Vec::new(),
            prep: None,
            over: false,
        })
    }

    fn elem_bytes(&self) -> usize {
        usize::from(self.flags.elem_bytes())
    }

    /// Appends `tag`'s element (its buffer for the next request, and `res`) to `out`.
    fn append(&self, out: &mut Vec<u8>, buffers: &impl Buffers, tag: u16, res: i32) {
        let buf_index = if self.flags.contains(BatchFlags::AUTO_BUF_REG_FALLBACK) {
            AutoBufReg::from_sqe_addr(buffers.sqe_addr(tag)).index
        } else {
            0
        };
        let elem = BatchElem {
            header: ElemHeader {
                tag,
                buf_index,
                result: res,
            },
            buf_addr: buffers.command_addr(tag),
            zone_lba: 0,
        };
        let start = out.len();
        out.resize(start + self.elem_bytes(), 0);
        // The slice is exactly one element long.
        let _ = elem.write(self.flags, &mut out[start..]);
    }

    /// Pushes a PREP or COMMIT command for the elements in `buf`.
    fn push_elems(
        &self,
        ring: &mut Submitter,
        op: IoCmdOp,
        id: u16,
        buf: &[u8],
    ) -> Result<(), ublk_ring::Error> {
        let nr_elem = (buf.len() / self.elem_bytes()) as u16;
        let header = BatchIo::new(self.q_id, self.flags, nr_elem);
        let entry = UringCmd16::new(CHAR_DEV, op.ioctl())
            .cmd(payload(&header))
            .addr(buf.as_ptr() as u64)
            .build()
            .user_data(UserData::Command { tag: id }.encode());
        // SAFETY: the kernel reads `buf` while it handles the command; the buffer is kept (in
        // `prep` or `sent`) until the command's completion, and leaked if the queue leaves
        // before that (`abandon`).
        unsafe { ring.push(&entry) }
    }

    /// Sends fetch `slot`, giving its buffer back first if the kernel returned it.
    fn arm(&mut self, ring: &mut Submitter, slot: u16) -> Result<(), ublk_ring::Error> {
        let fetch = &mut self.fetches[usize::from(slot)];
        if !fetch.in_ring {
            fetch.give_back();
        }
        let entry = UringCmd16::new(CHAR_DEV, IoCmdOp::FetchIoCmds.ioctl())
            .cmd(payload(&BatchIo::fetch(self.q_id)))
            .multishot(slot)
            .build()
            .user_data(UserData::Command { tag: FETCH | slot }.encode());
        // SAFETY: the command names no memory; the kernel writes into the buffer of group
        // `slot`, which the slot keeps (or leaks) while the fetch is armed.
        unsafe { ring.push(&entry) }?;
        fetch.state = FetchState::Armed;
        Ok(())
    }

    /// A fetch completion: the tags it carries, and what becomes of the fetch.
    fn fetched(
        &mut self,
        slot: u16,
        cqe: &Cqe,
        ring: &mut Submitter,
        fetched: &mut Vec<Fetched>,
    ) -> Result<Report, Error> {
        let q = self.q_id;
        let depth = self.depth;
        let Some(fetch) = self.fetches.get_mut(usize::from(slot)) else {
            return Err(Error::StrayCompletion { q, tag: slot });
        };
        let res = cqe.result();
        if cqe.flags().contains(CqeFlags::BUFFER) && res > 0 {
            let start = fetch.offset as usize;
            let end = start + res as usize;
            if end > fetch.len as usize || res % 2 != 0 {
                return Err(Error::BatchCommand {
                    q,
                    command: "FETCH_IO_CMDS",
                    tag: None,
                    source: Errno::OVERFLOW,
                });
            }
            let base = fetch.base();
            for at in (start..end).step_by(2) {
                // SAFETY: `at + 2 <= end <= len`: inside the mapping, 2-aligned (offsets stay
                // even); the kernel wrote these bytes before posting the completion.
                let tag = unsafe { base.add(at).cast::<u16>().read_volatile() };
                if tag >= depth {
                    return Err(Error::BadFetchedTag { q, tag });
                }
                fetched.push(Fetched {
                    tag,
                    res: UBLK_IO_RES_OK,
                });
            }
            fetch.offset = end as u32;
        }
        if cqe.flags().contains(CqeFlags::BUFFER) && !cqe.flags().contains(CqeFlags::BUF_MORE) {
            // The buffer is used up and ours again.
            fetch.in_ring = false;
        }
        if cqe.flags().contains(CqeFlags::MORE) {
            if !fetch.in_ring {
                fetch.give_back();
            }
            return Ok(Report::Tags);
        }
        // The fetch ended.
        fetch.state = FetchState::Idle;
        match res {
            ABORT => {
                fetch.state = FetchState::Aborted;
                self.over = true;
                Ok(Report::Over)
            }
            // Out of buffer (or the completion could not be posted): re-arm, unless the
            // device is going away anyway.
            res if res >= 0 || res == -Errno::NOBUFS.raw_os_error() => {
                if self.over {
                    return Ok(Report::Over);
                }
                self.resync(slot, ring);
                self.arm(ring, slot)?;
                Ok(Report::Tags)
            }
            res => Err(Error::BatchCommand {
                q,
                command: "FETCH_IO_CMDS",
                tag: None,
                source: Errno::from_raw_os_error(-res),
            }),
        }
    }

    /// After a fetch ended with its buffer still in the ring: the kernel may have consumed part
    /// of it for a completion it could not post (those tags go back to its queue), so the next
    /// tags start where the ring entry now points, or the buffer is used up.
    fn resync(&mut self, slot: u16, ring: &mut Submitter) {
        let fetch = &mut self.fetches[usize::from(slot)];
        if !fetch.in_ring {
            return;
        }
        let Some(bufs) = &fetch.ring else { return };
        match ring.ring.buf_ring_head(slot) {
            Ok(head) if head == bufs.published_tail() => {
                // Nothing left with the kernel: the buffer is ours.
                fetch.in_ring = false;
            }
            Ok(head) => {
                let at = bufs.entry_addr(head).wrapping_sub(fetch.base() as u64);
                if at < u64::from(fetch.len) {
                    fetch.offset = at as u32;
                }
            }
            // Without the status (Linux 6.8 has it; batch I/O needs 7.0) keep our offset.
            Err(_) => {}
        }
    }

    /// A commit completion: `res` bytes of elements were committed.
    fn committed(&mut self, index: u16, res: i32, ring: &mut Submitter) -> Result<Report, Error> {
        let q = self.q_id;
        let Some(buf) = self.sent.get_mut(usize::from(index)).and_then(Option::take) else {
            return Err(Error::StrayCompletion {
                q,
                tag: COMMIT | index,
            });
        };
        let elem = self.elem_bytes();
        let result = if res < 0 {
            Err(Error::BatchCommand {
                q,
                command: "COMMIT_IO_CMDS",
                tag: buf.get(..2).map(|b| u16::from_ne_bytes([b[0], b[1]])),
                source: Errno::from_raw_os_error(-res),
            })
        } else if (res as usize) < buf.len() && (res as usize).is_multiple_of(elem) {
            // Stopped at an element it refused: send the rest again; if that element fails
            // first, its errno is the error.
            let rest = buf[res as usize..].to_vec();
            self.send(ring, COMMIT, rest)
                .map(|()| Report::Tags)
                .map_err(Error::from)
        } else if res as usize == buf.len() {
            Ok(Report::Tags)
        } else {
            Err(Error::BatchCommand {
                q,
                command: "COMMIT_IO_CMDS",
                tag: None,
                source: Errno::OVERFLOW,
            })
        };
        let mut buf = buf;
        buf.clear();
        self.spare.push(buf);
        result
    }

    /// Sends `buf` as a commit under a free index.
    fn send(
        &mut self,
        ring: &mut Submitter,
        op_id: u16,
        buf: Vec<u8>,
    ) -> Result<(), ublk_ring::Error> {
        let index = match self.sent.iter().position(Option::is_none) {
            Some(i) => i,
            None => {
                self.sent.push(None);
                self.sent.len() - 1
            }
        };
        let id = op_id | (index as u16 & INDEX_MASK);
        self.push_elems(ring, IoCmdOp::CommitIoCmds, id, &buf)?;
        self.sent[index] = Some(buf);
        Ok(())
    }
}

/// A batch header as the 16-byte `sqe->cmd` payload.
fn payload(header: &BatchIo) -> [u8; 16] {
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(header.as_bytes());
    bytes
}

impl Commands for Batch {
    fn fetch_all(
        &mut self,
        ring: &mut Submitter,
        buffers: &impl Buffers,
        tags: &[u16],
    ) -> Result<(), ublk_ring::Error> {
        let mut prep = Vec::with_capacity(tags.len() * self.elem_bytes());
        for &tag in tags {
            self.append(&mut prep, buffers, tag, 0);
        }
        self.push_elems(ring, IoCmdOp::PrepIoCmds, PREP, &prep)?;
        self.prep = Some(prep);
        // In one submission after the PREP: a recovered queue accepts fetches only once every
        // tag is prepared.
        (0..FETCHES).try_for_each(|slot| self.arm(ring, slot))
    }

    fn commit(
        &mut self,
        ring: &mut Submitter,
        buffers: &impl Buffers,
        tag: u16,
        res: i32,
    ) -> Result<(), ublk_ring::Error> {
        let mut open = std::mem::take(&mut self.open);
        self.append(&mut open, buffers, tag, res);
        self.open = open;
        // A commit holds at most `depth` elements (the kernel refuses more with E2BIG).
        if self.open.len() >= usize::from(self.depth) * self.elem_bytes() {
            self.flush(ring)?;
        }
        Ok(())
    }

    fn need_get_data(
        &mut self,
        _ring: &mut Submitter,
        _tag: u16,
        _addr: u64,
    ) -> Result<(), ublk_ring::Error> {
        // Never asked: the kernel turns NEED_GET_DATA off on batch devices, and queue threads
        // pair the need-get-data buffers with per-tag commands only.
        Err(ublk_ring::Error::Enter(Errno::OPNOTSUPP))
    }

    fn completed(
        &mut self,
        cqe: &Cqe,
        ring: &mut Submitter,
        fetched: &mut Vec<Fetched>,
    ) -> Result<Report, Error> {
        let q = self.q_id;
        let Some(UserData::Command { tag: id }) = UserData::decode(cqe.user_data()) else {
            return Err(Error::StrayCompletion {
                q,
                tag: cqe.user_data() as u16,
            });
        };
        let res = cqe.result();
        match id & !INDEX_MASK {
            PREP => {
                self.prep = None;
                match res {
                    0 => Ok(Report::Tags),
                    // The device stopped before it started.
                    ABORT => {
                        self.over = true;
                        Ok(Report::Over)
                    }
                    res => Err(Error::BatchCommand {
                        q,
                        command: "PREP_IO_CMDS",
                        tag: None,
                        source: Errno::from_raw_os_error(-res),
                    }),
                }
            }
            FETCH => self.fetched(id & INDEX_MASK, cqe, ring, fetched),
            COMMIT => self.committed(id & INDEX_MASK, res, ring),
            _ => Err(Error::StrayCompletion { q, tag: id }),
        }
    }

    fn flush(&mut self, ring: &mut Submitter) -> Result<(), ublk_ring::Error> {
        if self.open.is_empty() {
            return Ok(());
        }
        let next = self.spare.pop().unwrap_or_default();
        let full = std::mem::replace(&mut self.open, next);
        self.send(ring, COMMIT, full)
    }

    fn idle(&self) -> bool {
        self.open.is_empty() && self.prep.is_none() && self.sent.iter().all(Option::is_none)
    }

    fn answers_due(&self) -> u32 {
        // Only while a fetch is armed: a queue that is over waits for the answers themselves.
        if self.over || !self.fetches.iter().any(|f| f.state == FetchState::Armed) {
            return 0;
        }
        let sent = self.sent.iter().filter(|b| b.is_some()).count();
        (sent + usize::from(self.prep.is_some())) as u32
    }

    fn quiet(&self) -> bool {
        self.idle() && self.fetches.iter().all(|f| f.state != FetchState::Armed)
    }

    fn abandon(&mut self) {
        std::mem::forget(self.prep.take());
        for buf in &mut self.sent {
            std::mem::forget(buf.take());
        }
        for fetch in &mut self.fetches {
            // Leaked by the slot's `Drop`.
            fetch.state = FetchState::Armed;
        }
    }
}

#[cfg(test)]
mod tests;
