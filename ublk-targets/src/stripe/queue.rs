//! One queue of a stripe: each request is cut into pieces, one backing I/O each, pushed on the
//! queue's ring at once; the request completes when the last piece has, or fails with the first
//! error (the engine then waits for the pieces still in flight before it commits).
//!
//! A piece's SQEs carry its index among the request's pieces as their sub-id; what the piece
//! is doing (and how much of it is done) is kept per tag, so its completions need nothing more.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use rustix::io::Errno;
use ublk_queue::{Handled, IoInfo, IoOp, QueueTarget, Request, TargetCqe, TargetRing};

use crate::backing::io::{RangeOp, StoreIo};
use crate::stripe::{StripeLayout, StripeStore};

/// One store as this queue reaches it. A remote store would be another variant, with its own
/// way to push a piece and to read its completions.
#[derive(Debug)]
enum StoreQueue {
    /// A file or block device: a fixed file of the ring.
    Local { file: Arc<OwnedFd>, io: StoreIo },
}

/// What one piece is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PieceOp {
    /// READ or WRITE of the piece's bytes not done yet.
    Rw,
    /// FLUSH of its store.
    Sync,
    /// DISCARD or WRITE_ZEROES of its run on its store.
    Range(RangeOp),
}

/// One piece of a request: a backing I/O on one store.
#[derive(Debug, Clone, Copy)]
struct PieceIo {
    store: u32,
    /// Byte offset on the store.
    offset: u64,
    /// Byte offset within the request (READ and WRITE).
    at: u32,
    len: u64,
    /// Bytes done (READ and WRITE continue a short transfer).
    done: u32,
    op: PieceOp,
    /// Its SQEs in flight.
    in_flight: u8,
}

/// The pieces of the request a tag serves.
#[derive(Debug, Default)]
struct TagPieces {
    pieces: Vec<PieceIo>,
    /// Pieces not finished yet.
    left: usize,
}

/// One queue of a [`Stripe`](crate::Stripe) device.
#[derive(Debug)]
pub struct StripeQueue {
    layout: StripeLayout,
    stores: Vec<StoreQueue>,
    tags: Vec<TagPieces>,
}

impl StripeQueue {
    pub(crate) fn new(stores: &[StripeStore], layout: StripeLayout, depth: u16) -> Self {
        let stores = stores
            .iter()
            .enumerate()
            .map(|(i, store)| match store {
                StripeStore::Local(s) => StoreQueue::Local {
                    file: Arc::clone(&s.file),
                    // Store i is fixed file i of the target: `fixed_files` lists them in order.
                    io: StoreIo::new(i as u32, s.kind, s.block_discard),
                },
            })
            .collect();
        StripeQueue {
            layout,
            stores,
            tags: (0..depth).map(|_| TagPieces::default()).collect(),
        }
    }

    /// Pushes what is left of piece `index` of request `io`.
    fn push(&mut self, io: &IoInfo, index: usize, ring: &mut TargetRing<'_>) -> Result<(), Errno> {
        let piece = &mut self.tags[usize::from(io.tag())].pieces[index];
        // Piece indexes fit a sub-id: a request has at most 32 MiB / 4 KiB + 1 pieces.
        let sub = index as u16;
        let StoreQueue::Local { io: store, .. } = &self.stores[piece.store as usize];
        match piece.op {
            PieceOp::Rw => {
                let done = u64::from(piece.done);
                // A READ or WRITE piece is at most one chunk of a request of at most 32 MiB.
                let left = (piece.len - done) as u32;
                let entry = store.rw(ring, io, piece.at + piece.done, left, piece.offset + done)?;
                // SAFETY: the SQE moves bytes between a registered store and this piece's part
                // of the request's data not yet done, which stays the server's until the request
                // completes, no other piece's SQE touches, and no Rust code touches until this
                // SQE's completion comes back.
                unsafe { ring.push_with(io.tag(), sub, entry) }.map_err(|_| Errno::IO)?;
                piece.in_flight = 1;
            }
            PieceOp::Sync => {
                let entry = store.sync(ring);
                // SAFETY: an fsync SQE names a registered store and no memory.
                unsafe { ring.push_with(io.tag(), sub, entry) }.map_err(|_| Errno::IO)?;
                piece.in_flight = 1;
            }
            PieceOp::Range(op) => {
                store.push_range(ring, io.tag(), op, piece.offset, piece.len, |_| sub)?;
                piece.in_flight = op.cqes();
            }
        }
        Ok(())
    }

    /// A piece of request `io` is done: the request is, when that was its last.
    fn finished(&mut self, io: &IoInfo) -> Handled {
        let tag = &mut self.tags[usize::from(io.tag())];
        tag.left -= 1;
        match (tag.left, io.op()) {
            (0, IoOp::Read | IoOp::Write) => Handled::Done(io.len() as i32),
            (0, _) => Handled::Done(0),
            _ => Handled::Queued,
        }
    }
}

impl QueueTarget for StripeQueue {
    fn handle(&mut self, req: Request<'_>, ring: &mut TargetRing<'_>) -> Handled {
        let io = req.info();
        let layout = self.layout;
        let stores = &self.stores;
        let tag = &mut self.tags[usize::from(io.tag())];
        tag.pieces.clear();
        let piece = |store: u32, offset: u64, at: u64, len: u64, op: PieceOp| PieceIo {
            store,
            offset,
            // READ and WRITE fit the tag's buffer (at most 32 MiB); other ops have `at` 0.
            at: at as u32,
            len,
            done: 0,
            op,
            in_flight: 0,
        };
        match io.op() {
            IoOp::Read | IoOp::Write => tag.pieces.extend(
                layout
                    .pieces(io.offset(), io.len())
                    .map(|p| piece(p.store, p.offset, p.at, p.len, PieceOp::Rw)),
            ),
            IoOp::Flush => tag
                .pieces
                .extend((0..layout.stores()).map(|store| piece(store, 0, 0, 0, PieceOp::Sync))),
            IoOp::Discard | IoOp::WriteZeroes => {
                tag.pieces
                    .extend(layout.extents(io.offset(), io.len()).map(|e| {
                        let StoreQueue::Local { io: store, .. } = &stores[e.store as usize];
                        let op = if io.op() == IoOp::Discard {
                            store.discarding()
                        } else {
                            store.zeroing(io.flags())
                        };
                        piece(e.store, e.offset, 0, e.len, PieceOp::Range(op))
                    }))
            }
            _ => return Handled::Done(-Errno::OPNOTSUPP.raw_os_error()),
        }
        tag.left = tag.pieces.len();
        if tag.left == 0 {
            return Handled::Done(0);
        }
        for index in 0..self.tags[usize::from(io.tag())].pieces.len() {
            if let Err(errno) = self.push(&io, index, ring) {
                // The engine commits once the pieces already pushed have completed.
                return Handled::Done(-errno.raw_os_error());
            }
        }
        Handled::Queued
    }

    fn complete(&mut self, io: &IoInfo, cqe: &TargetCqe, ring: &mut TargetRing<'_>) -> Handled {
        let res = cqe.result();
        let index = usize::from(cqe.sub());
        let Some(piece) = self.tags[usize::from(io.tag())].pieces.get_mut(index) else {
            return Handled::Done(-Errno::IO.raw_os_error());
        };
        piece.in_flight = piece.in_flight.saturating_sub(1);
        match piece.op {
            PieceOp::Range(op) if res == -Errno::OPNOTSUPP.raw_os_error() => {
                let StoreQueue::Local { io: store, .. } = &mut self.stores[piece.store as usize];
                let Some(next) = store.refused(op, io.flags()) else {
                    return Handled::Done(res);
                };
                piece.op = PieceOp::Range(next);
                match self.push(io, index, ring) {
                    Ok(()) => Handled::Queued,
                    Err(errno) => Handled::Done(-errno.raw_os_error()),
                }
            }
            // The first error fails the request; the engine waits for the other pieces.
            _ if res < 0 => Handled::Done(res),
            PieceOp::Rw => {
                let done = u64::from(piece.done) + res as u64;
                match res {
                    // A store that ended early, or a write that stored nothing: no progress to
                    // continue from.
                    0 => Handled::Done(-Errno::IO.raw_os_error()),
                    _ if done < piece.len => {
                        piece.done = done as u32;
                        match self.push(io, index, ring) {
                            Ok(()) => Handled::Queued,
                            Err(errno) => Handled::Done(-errno.raw_os_error()),
                        }
                    }
                    _ => self.finished(io),
                }
            }
            // The linked punch and allocation post a completion each: the piece is done at
            // the second.
            PieceOp::Range(_) if piece.in_flight > 0 => Handled::Queued,
            PieceOp::Sync | PieceOp::Range(_) => self.finished(io),
        }
    }

    fn fixed_files(&self) -> Vec<BorrowedFd<'_>> {
        self.stores
            .iter()
            .map(|store| match store {
                StoreQueue::Local { file, .. } => file.as_fd(),
            })
            .collect()
    }

    fn register_buffers(&self) -> bool {
        true
    }
}
