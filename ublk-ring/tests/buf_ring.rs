//! Provided-buffer rings: the kernel picks our buffers, hands them back by id, runs dry, and
//! (incrementally) consumes them part by part; multishot receives ride on them.

use std::os::fd::{AsRawFd, OwnedFd};

use rustix::io::Errno;
use rustix::net::{AddressFamily, SocketFlags, SocketType};
use ublk_ring::cqueue::{Cqe, CqeFlags};
use ublk_ring::opcode::{ReadProvided, RecvMulti};
use ublk_ring::types::Fd;
use ublk_ring::{BufRing, BufRingFlags, Error, Ring};

/// Buffers of `size` bytes each, kept alive for the whole test.
struct Pool {
    bufs: Vec<Vec<u8>>,
}

impl Pool {
    fn new(count: usize, size: usize) -> Self {
        Self {
            bufs: (0..count).map(|_| vec![0u8; size]).collect(),
        }
    }

    /// Pushes buffer `bid` into `ring` (not published).
    fn give(&mut self, ring: &mut BufRing, bid: u16) {
        let buf = &mut self.bufs[usize::from(bid)];
        // SAFETY: the pool outlives every ring and every request of the test, and a buffer is
        // pushed again only after a completion handed it back.
        unsafe { ring.push(buf.as_mut_ptr(), buf.len() as u32, bid) };
    }
}

fn wait_one(ring: &mut Ring) -> Cqe {
    ring.submit_and_wait(1).expect("submit");
    ring.completion().next().expect("a completion")
}

fn socketpair() -> (OwnedFd, OwnedFd) {
    rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )
    .expect("socketpair")
}

fn send_all(fd: &OwnedFd, data: &[u8]) {
    let sent = rustix::net::send(fd, data, rustix::net::SendFlags::empty()).expect("send");
    assert_eq!(sent, data.len());
}

#[test]
fn reads_pick_buffers_by_id_and_run_dry_until_one_is_given_back() {
    let mut ring = Ring::new(8).expect("ring");
    let mut bufs = ring
        .register_buf_ring(7, 4, BufRingFlags::empty())
        .expect("register");
    let mut pool = Pool::new(3, 64);
    for bid in 0..3 {
        pool.give(&mut bufs, bid);
    }
    assert_eq!(bufs.unpublished(), 3);
    bufs.publish();
    assert_eq!(bufs.unpublished(), 0);
    let (reader, writer) = rustix::pipe::pipe().expect("pipe");

    let mut used = Vec::new();
    for round in 0..3u8 {
        rustix::io::write(&writer, &[round; 10]).expect("write");
        let read = ReadProvided::new(Fd(reader.as_raw_fd()), 64, 7)
            .build()
            .user_data(u64::from(round));
        // SAFETY: the entry names no memory of ours; the buffers are the pool's.
        unsafe { ring.submission().push(&read).expect("slot") };
        let cqe = wait_one(&mut ring);
        assert_eq!(cqe.result(), 10, "round {round}: {cqe:?}");
        assert!(cqe.flags().contains(CqeFlags::BUFFER));
        let bid = cqe.buffer_id().expect("a buffer id");
        assert_eq!(&pool.bufs[usize::from(bid)][..10], &[round; 10]);
        used.push(bid);
    }
    // Ring order: the kernel takes entries from its head in the order they were pushed.
    assert_eq!(used, [0, 1, 2]);
    assert_eq!(ring.buf_ring_head(7).expect("status"), 3);

    // The group is empty now: a read that needs a buffer fails with ENOBUFS ...
    rustix::io::write(&writer, b"late").expect("write");
    let read = ReadProvided::new(Fd(reader.as_raw_fd()), 64, 7)
        .build()
        .user_data(9);
    // SAFETY: as above.
    unsafe { ring.submission().push(&read).expect("slot") };
    let cqe = wait_one(&mut ring);
    assert_eq!(cqe.result(), -Errno::NOBUFS.raw_os_error(), "{cqe:?}");
    assert_eq!(cqe.buffer_id(), None);

    // ... until one is given back.
    pool.give(&mut bufs, 1);
    bufs.publish();
    // SAFETY: as above.
    unsafe { ring.submission().push(&read).expect("slot") };
    let cqe = wait_one(&mut ring);
    assert_eq!(cqe.result(), 4);
    assert_eq!(cqe.buffer_id(), Some(1));
    assert_eq!(&pool.bufs[1][..4], b"late");
    ring.unregister_buf_ring(bufs).expect("unregister");
}

#[test]
fn registration_refuses_bad_sizes_and_taken_groups() {
    let mut ring = Ring::new(4).expect("ring");
    match ring.register_buf_ring(1, 3, BufRingFlags::empty()) {
        Err(Error::Register { source, .. }) => assert_eq!(source, Errno::INVAL),
        other => panic!("3 entries accepted: {other:?}"),
    }
    let first = ring
        .register_buf_ring(1, 2, BufRingFlags::empty())
        .expect("register");
    match ring.register_buf_ring(1, 2, BufRingFlags::empty()) {
        Err(Error::Register { source, .. }) => assert_eq!(source, Errno::EXIST),
        other => panic!("group 1 registered twice: {other:?}"),
    }
    ring.unregister_buf_ring(first).expect("unregister");
    // Free again once unregistered.
    let again = ring
        .register_buf_ring(1, 32768, BufRingFlags::empty())
        .expect("register again");
    assert_eq!(again.entries(), 32768);
    match ring.buf_ring_head(2) {
        Err(Error::Register { source, .. }) => assert_eq!(source, Errno::NOENT),
        other => panic!("status of an unknown group: {other:?}"),
    }
}

#[test]
fn a_multishot_receive_posts_per_arrival_and_ends_when_the_group_runs_dry() {
    let mut ring = Ring::new(8).expect("ring");
    let mut bufs = ring
        .register_buf_ring(3, 2, BufRingFlags::empty())
        .expect("register");
    let mut pool = Pool::new(2, 32);
    pool.give(&mut bufs, 0);
    pool.give(&mut bufs, 1);
    bufs.publish();
    let (a, b) = socketpair();
    let recv = RecvMulti::new(Fd(b.as_raw_fd()), 3).build().user_data(5);
    // SAFETY: the entry names no memory of ours; the buffers are the pool's.
    unsafe { ring.submission().push(&recv).expect("slot") };
    ring.submit().expect("submit");

    for (i, msg) in [&b"first"[..], b"second"].into_iter().enumerate() {
        send_all(&a, msg);
        let cqe = wait_one(&mut ring);
        assert_eq!(cqe.user_data(), 5);
        assert_eq!(cqe.result(), msg.len() as i32, "{cqe:?}");
        assert!(cqe.flags().contains(CqeFlags::MORE), "still armed: {cqe:?}");
        assert_eq!(cqe.buffer_id(), Some(i as u16));
        assert_eq!(&pool.bufs[i][..msg.len()], msg);
    }
    // Both buffers are ours now: the next arrival finds none and ends the receive.
    send_all(&a, b"third");
    let cqe = wait_one(&mut ring);
    assert_eq!(cqe.result(), -Errno::NOBUFS.raw_os_error(), "{cqe:?}");
    assert!(!cqe.flags().contains(CqeFlags::MORE), "ended: {cqe:?}");

    // Re-arm after giving a buffer back: the data that waited arrives.
    pool.give(&mut bufs, 0);
    bufs.publish();
    // SAFETY: as above.
    unsafe { ring.submission().push(&recv).expect("slot") };
    let cqe = wait_one(&mut ring);
    assert_eq!(cqe.result(), 5, "{cqe:?}");
    assert_eq!(cqe.buffer_id(), Some(0));
    assert_eq!(&pool.bufs[0][..5], b"third");
    assert!(cqe.flags().contains(CqeFlags::MORE));

    // End of stream ends it too (the receive still picks a buffer to find that out).
    pool.give(&mut bufs, 1);
    bufs.publish();
    drop(a);
    let cqe = wait_one(&mut ring);
    assert_eq!(cqe.result(), 0, "{cqe:?}");
    assert!(!cqe.flags().contains(CqeFlags::MORE));
}

#[test]
fn an_incremental_ring_fills_one_buffer_part_by_part() {
    let mut ring = Ring::new(8).expect("ring");
    let mut bufs = match ring.register_buf_ring(4, 1, BufRingFlags::INCREMENTAL) {
        Ok(bufs) => bufs,
        Err(Error::Register { source, .. }) if source == Errno::INVAL => {
            // The only kernels that refuse it predate IOU_PBUF_RING_INC (6.12): say so loudly.
            eprintln!("SKIP: this kernel has no incremental buffer rings (Linux 6.12)");
            return;
        }
        Err(e) => panic!("register: {e}"),
    };
    assert_eq!(bufs.flags(), BufRingFlags::INCREMENTAL);
    let mut pool = Pool::new(1, 16);
    pool.give(&mut bufs, 0);
    bufs.publish();
    let (a, b) = socketpair();
    let recv = RecvMulti::new(Fd(b.as_raw_fd()), 4).build().user_data(1);
    // SAFETY: the entry names no memory of ours; the buffer is the pool's.
    unsafe { ring.submission().push(&recv).expect("slot") };
    ring.submit().expect("submit");

    // Each arrival lands where the previous one ended, in the same buffer, while room remains.
    let mut offset = 0;
    for msg in [&b"abcde"[..], b"fghij"] {
        send_all(&a, msg);
        let cqe = wait_one(&mut ring);
        assert_eq!(cqe.result(), msg.len() as i32, "{cqe:?}");
        assert_eq!(cqe.buffer_id(), Some(0));
        assert!(
            cqe.flags().contains(CqeFlags::BUF_MORE),
            "room left: {cqe:?}"
        );
        assert_eq!(&pool.bufs[0][offset..offset + msg.len()], msg);
        offset += msg.len();
    }
    // The kernel advanced the head entry past what it used; the buffer is still its own.
    let head = ring.buf_ring_head(4).expect("status");
    assert_eq!(
        bufs.published_tail().wrapping_sub(head),
        1,
        "still in the ring"
    );
    let base = pool.bufs[0].as_ptr() as u64;
    assert_eq!(bufs.entry_addr(head), base + offset as u64);

    // The last 6 bytes fill it: the buffer is handed back (no BUF_MORE).
    send_all(&a, b"klmnop");
    let cqe = wait_one(&mut ring);
    assert_eq!(cqe.result(), 6, "{cqe:?}");
    assert!(!cqe.flags().contains(CqeFlags::BUF_MORE), "full: {cqe:?}");
    assert_eq!(&pool.bufs[0][..], b"abcdefghijklmnop");

    // Pushed back whole, it is filled from its start again.
    pool.bufs[0].fill(0);
    pool.give(&mut bufs, 0);
    bufs.publish();
    send_all(&a, b"q");
    let cqe = wait_one(&mut ring);
    if cqe.result() == -Errno::NOBUFS.raw_os_error() {
        // The receive saw the empty ring between the two completions and ended: re-arm.
        // SAFETY: as above.
        unsafe { ring.submission().push(&recv).expect("slot") };
        let cqe = wait_one(&mut ring);
        assert_eq!(cqe.result(), 1, "{cqe:?}");
    } else {
        assert_eq!(cqe.result(), 1, "{cqe:?}");
    }
    assert_eq!(pool.bufs[0][0], b'q');
}
