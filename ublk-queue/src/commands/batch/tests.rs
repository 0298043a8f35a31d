//! Batch commands against the host's io_uring: the buffer groups are real, the kernel's side of
//! the ublk commands is played by hand-made completions.

use ublk_ring::Ring;
use ublk_ring::cqueue::{Cqe, CqeFlags};
use ublk_uapi::{AutoBufRegFlags, IoDesc};

use super::*;
use crate::request::DataPlace;

const DEPTH: u16 = 8;

/// Copy-mode-like buffers: tag `t`'s buffer is at `0x10000 * (t + 1)`; auto-registration at
/// index `t`.
struct FakeBuffers;

impl Buffers for FakeBuffers {
    fn command_addr(&self, tag: u16) -> u64 {
        0x10000 * (u64::from(tag) + 1)
    }

    fn sqe_addr(&self, tag: u16) -> u64 {
        AutoBufReg::new(tag, AutoBufRegFlags::FALLBACK).to_sqe_addr()
    }

    fn data(&mut self, tag: u16, _: &IoDesc) -> (DataPlace, usize) {
        (DataPlace::Fixed(tag), 0)
    }
}

fn setup(flags: BatchFlags) -> (Batch, Submitter) {
    let mut ring = Submitter::new(Ring::new(64).expect("ring"));
    let batch = Batch::new(3, DEPTH, flags, &mut ring).expect("batch");
    (batch, ring)
}

fn cqe(id: u16, res: i32, flags: CqeFlags) -> Cqe {
    Cqe::new(UserData::Command { tag: id }.encode(), res, flags.bits())
}

/// Plays the kernel: writes `tags` into fetch `slot`'s buffer where the next ones go.
fn kernel_writes(batch: &Batch, slot: usize, tags: &[u16]) {
    let fetch = &batch.fetches[slot];
    for (i, tag) in tags.iter().enumerate() {
        let at = fetch.offset as usize + 2 * i;
        // SAFETY: inside the slot's mapping (the tests stay far below its length).
        unsafe { fetch.base().add(at).cast::<u16>().write(*tag) };
    }
}

fn elems(flags: BatchFlags, buf: &[u8]) -> Vec<BatchElem> {
    buf.chunks(usize::from(flags.elem_bytes()))
        .map(|c| BatchElem::read(flags, c).expect("whole element"))
        .collect()
}

#[test]
fn prep_names_every_tag_with_the_buffer_its_mode_needs() {
    let copy = BatchFlags::HAS_BUF_ADDR;
    let (mut batch, mut ring) = setup(copy);
    batch
        .fetch_all(&mut ring, &FakeBuffers, &[0, 1, 2])
        .expect("prep");
    let prep = elems(copy, batch.prep.as_ref().expect("prep in flight"));
    assert_eq!(prep.len(), 3);
    for (elem, tag) in prep.iter().zip(0..) {
        assert_eq!(elem.header.tag, tag);
        assert_eq!(elem.header.result, 0);
        assert_eq!(elem.buf_addr, 0x10000 * (u64::from(tag) + 1));
    }
    assert!(!batch.idle(), "PREP pending");
    assert_eq!(
        batch
            .completed(&cqe(PREP, 0, CqeFlags::empty()), &mut ring, &mut Vec::new())
            .expect("a report"),
        Report::Tags
    );
    assert!(batch.idle());
    assert!(
        batch
            .fetches
            .iter()
            .all(|f| f.state == FetchState::Armed && f.in_ring)
    );

    let auto = BatchFlags::AUTO_BUF_REG_FALLBACK;
    let (mut batch, mut ring) = setup(auto);
    batch
        .fetch_all(&mut ring, &FakeBuffers, &[5, 7])
        .expect("prep");
    let prep = elems(auto, batch.prep.as_ref().expect("prep in flight"));
    assert_eq!(
        prep.iter()
            .map(|e| (e.header.tag, e.header.buf_index))
            .collect::<Vec<_>>(),
        [(5, 5), (7, 7)],
        "each tag registers at its own index"
    );
    assert_eq!(usize::from(auto.elem_bytes()), 8);
}

#[test]
fn fetches_deliver_tags_from_where_the_last_ones_ended() {
    let (mut batch, mut ring) = setup(BatchFlags::empty());
    batch
        .fetch_all(&mut ring, &FakeBuffers, &[0, 1, 2, 3])
        .expect("prep");
    let mut fetched = Vec::new();
    let more = CqeFlags::MORE | CqeFlags::BUFFER | CqeFlags::BUF_MORE;

    kernel_writes(&batch, 1, &[2, 0]);
    let report = batch.completed(&cqe(FETCH | 1, 4, more), &mut ring, &mut fetched);
    assert_eq!(report.expect("a report"), Report::Tags);
    kernel_writes(&batch, 1, &[3]);
    let report = batch.completed(&cqe(FETCH | 1, 2, more), &mut ring, &mut fetched);
    assert_eq!(report.expect("a report"), Report::Tags);
    assert_eq!(
        fetched.iter().map(|f| (f.tag, f.res)).collect::<Vec<_>>(),
        [
            (2, UBLK_IO_RES_OK),
            (0, UBLK_IO_RES_OK),
            (3, UBLK_IO_RES_OK)
        ]
    );
    assert_eq!(batch.fetches[1].offset, 6);
    assert_eq!(batch.fetches[0].offset, 0, "the other fetch is untouched");

    // The kernel used the buffer up (no BUF_MORE): it is given back whole at once.
    kernel_writes(&batch, 1, &[1]);
    let done = CqeFlags::MORE | CqeFlags::BUFFER;
    let report = batch.completed(&cqe(FETCH | 1, 2, done), &mut ring, &mut fetched);
    assert_eq!(report.expect("a report"), Report::Tags);
    assert_eq!(fetched.last().map(|f| f.tag), Some(1));
    assert_eq!(
        (batch.fetches[1].offset, batch.fetches[1].in_ring),
        (0, true)
    );
}

#[test]
fn a_fetch_that_ran_dry_is_armed_again_and_abort_is_the_end() {
    let (mut batch, mut ring) = setup(BatchFlags::empty());
    batch
        .fetch_all(&mut ring, &FakeBuffers, &[0, 1])
        .expect("prep");
    let mut fetched = Vec::new();
    let nobufs = -Errno::NOBUFS.raw_os_error();
    // Its buffer came back used up, then the fetch ended for want of one.
    kernel_writes(&batch, 0, &[1]);
    batch
        .completed(&cqe(FETCH, 2, CqeFlags::BUFFER), &mut ring, &mut fetched)
        .expect("last tags");
    // Without MORE the fetch is over: armed again at once, its buffer given back whole.
    assert_eq!(batch.fetches[0].state, FetchState::Armed);
    assert_eq!(
        (batch.fetches[0].in_ring, batch.fetches[0].offset),
        (true, 0)
    );
    let report = batch.completed(
        &cqe(FETCH, nobufs, CqeFlags::empty()),
        &mut ring,
        &mut fetched,
    );
    assert_eq!(report.expect("a report"), Report::Tags);
    assert_eq!(batch.fetches[0].state, FetchState::Armed, "armed again");

    let abort = batch.completed(
        &cqe(FETCH | 1, ABORT, CqeFlags::empty()),
        &mut ring,
        &mut fetched,
    );
    assert_eq!(abort.expect("a report"), Report::Over);
    assert_eq!(batch.fetches[1].state, FetchState::Aborted);
    // Once over, a fetch that runs dry is not armed again.
    let report = batch.completed(
        &cqe(FETCH, nobufs, CqeFlags::empty()),
        &mut ring,
        &mut fetched,
    );
    assert_eq!(report.expect("a report"), Report::Over);
    assert_eq!(batch.fetches[0].state, FetchState::Idle);
}

#[test]
fn a_fetch_of_a_tag_beyond_the_queue_or_half_a_tag_is_an_error() {
    let (mut batch, mut ring) = setup(BatchFlags::empty());
    batch
        .fetch_all(&mut ring, &FakeBuffers, &[0])
        .expect("prep");
    let more = CqeFlags::MORE | CqeFlags::BUFFER | CqeFlags::BUF_MORE;
    kernel_writes(&batch, 0, &[DEPTH]);
    let bad = batch.completed(&cqe(FETCH, 2, more), &mut ring, &mut Vec::new());
    assert!(
        matches!(bad, Err(Error::BadFetchedTag { q: 3, tag: DEPTH })),
        "{bad:?}"
    );
    let odd = batch.completed(&cqe(FETCH | 1, 3, more), &mut ring, &mut Vec::new());
    assert!(matches!(odd, Err(Error::BatchCommand { .. })), "{odd:?}");
    let refused = batch.completed(
        &cqe(FETCH | 1, -Errno::INVAL.raw_os_error(), CqeFlags::empty()),
        &mut ring,
        &mut Vec::new(),
    );
    assert!(
        matches!(
            refused,
            Err(Error::BatchCommand {
                source: Errno::INVAL,
                ..
            })
        ),
        "{refused:?}"
    );
}

#[test]
fn a_round_of_commits_is_one_command_and_a_partial_commit_sends_the_rest() {
    let flags = BatchFlags::HAS_BUF_ADDR;
    let elem = i32::from(flags.elem_bytes());
    let (mut batch, mut ring) = setup(flags);
    for (tag, res) in [(4, 4096), (1, -5), (6, 512)] {
        batch
            .commit(&mut ring, &FakeBuffers, tag, res)
            .expect("commit");
    }
    assert!(!batch.idle(), "gathered, not sent");
    batch.flush(&mut ring).expect("flush");
    let sent = elems(flags, batch.sent[0].as_ref().expect("commit in flight"));
    assert_eq!(
        sent.iter()
            .map(|e| (e.header.tag, e.header.result, e.buf_addr))
            .collect::<Vec<_>>(),
        [(4, 4096, 0x50000), (1, -5, 0x20000), (6, 512, 0x70000)]
    );
    assert!(batch.open.is_empty());

    // The kernel took two elements: the third goes again, alone.
    let report = batch.completed(
        &cqe(COMMIT, 2 * elem, CqeFlags::empty()),
        &mut ring,
        &mut Vec::new(),
    );
    assert_eq!(report.expect("a report"), Report::Tags);
    let again = elems(flags, batch.sent[0].as_ref().expect("the rest in flight"));
    assert_eq!(again.iter().map(|e| e.header.tag).collect::<Vec<_>>(), [6]);
    // Refused first this time: that element's errno is the error.
    let refused = batch.completed(
        &cqe(COMMIT, -Errno::BUSY.raw_os_error(), CqeFlags::empty()),
        &mut ring,
        &mut Vec::new(),
    );
    assert!(
        matches!(
            refused,
            Err(Error::BatchCommand {
                tag: Some(6),
                source: Errno::BUSY,
                ..
            })
        ),
        "{refused:?}"
    );
    assert!(batch.idle());
}

#[test]
fn commits_are_sent_whole_and_only_once_per_round() {
    let flags = BatchFlags::empty();
    let elem = i32::from(flags.elem_bytes());
    let (mut batch, mut ring) = setup(flags);
    // A full queue's worth goes out at once (the kernel takes at most `depth` per command).
    for tag in 0..DEPTH {
        batch
            .commit(&mut ring, &FakeBuffers, tag, 0)
            .expect("commit");
    }
    assert!(batch.open.is_empty(), "sent when full");
    batch.commit(&mut ring, &FakeBuffers, 0, 0).expect("commit");
    batch.flush(&mut ring).expect("flush");
    batch.flush(&mut ring).expect("nothing more to flush");
    assert_eq!(batch.sent.iter().filter(|s| s.is_some()).count(), 2);
    let full = i32::from(DEPTH) * elem;
    for (index, res) in [(0u16, full), (1, elem)] {
        let report = batch.completed(
            &cqe(COMMIT | index, res, CqeFlags::empty()),
            &mut ring,
            &mut Vec::new(),
        );
        assert_eq!(report.expect("a report"), Report::Tags);
    }
    assert!(batch.idle());
    let stray = batch.completed(
        &cqe(COMMIT | 1, elem, CqeFlags::empty()),
        &mut ring,
        &mut Vec::new(),
    );
    assert!(
        matches!(stray, Err(Error::StrayCompletion { .. })),
        "{stray:?}"
    );
}

#[test]
fn after_a_completion_the_kernel_could_not_post_the_ring_entry_says_where_tags_continue() {
    let (mut batch, mut ring) = setup(BatchFlags::empty());
    batch
        .fetch_all(&mut ring, &FakeBuffers, &[0])
        .expect("prep");
    // Our offset says 10, but the buffer is still in the ring and its entry (which the
    // kernel advances as it consumes) still points at the start: the kernel's word wins.
    batch.fetches[1].offset = 10;
    let nobufs = -Errno::NOBUFS.raw_os_error();
    let report = batch.completed(
        &cqe(FETCH | 1, nobufs, CqeFlags::empty()),
        &mut ring,
        &mut Vec::new(),
    );
    assert_eq!(report.expect("a report"), Report::Tags);
    assert_eq!(batch.fetches[1].offset, 0);
    assert_eq!(batch.fetches[1].state, FetchState::Armed);
}

#[test]
fn a_sleeping_thread_waits_for_commit_answers_on_top_only_while_fetches_are_armed() {
    let (mut batch, mut ring) = setup(BatchFlags::HAS_BUF_ADDR);
    assert_eq!(batch.answers_due(), 0, "no fetch armed yet");
    batch
        .fetch_all(&mut ring, &FakeBuffers, &[0, 1])
        .expect("prep");
    assert_eq!(batch.answers_due(), 1, "the PREP's answer");
    let mut fetched = Vec::new();
    batch
        .completed(&cqe(PREP, 0, CqeFlags::empty()), &mut ring, &mut fetched)
        .expect("prepared");
    assert_eq!(batch.answers_due(), 0);
    batch
        .commit(&mut ring, &FakeBuffers, 1, 4096)
        .expect("commit");
    assert_eq!(batch.answers_due(), 0, "gathered, not sent");
    batch.flush(&mut ring).expect("flush");
    assert_eq!(batch.answers_due(), 1, "one commit with the kernel");
    let elem = i32::from(BatchFlags::HAS_BUF_ADDR.elem_bytes());
    batch
        .completed(
            &cqe(COMMIT, elem, CqeFlags::empty()),
            &mut ring,
            &mut fetched,
        )
        .expect("committed");
    assert_eq!(batch.answers_due(), 0);

    // Once the device is going, nothing more will come: the answers are what the thread waits
    // for, not something on top.
    batch
        .commit(&mut ring, &FakeBuffers, 0, 4096)
        .expect("commit");
    batch.flush(&mut ring).expect("flush");
    for slot in 0..2u16 {
        batch
            .completed(
                &cqe(FETCH | slot, ABORT, CqeFlags::empty()),
                &mut ring,
                &mut fetched,
            )
            .expect("aborted");
    }
    assert!(!batch.idle(), "the commit is still with the kernel");
    assert_eq!(batch.answers_due(), 0);
}
