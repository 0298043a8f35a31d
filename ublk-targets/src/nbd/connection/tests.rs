//! The connection against a fake NBD server over real sockets (TCP on the loopback and unix
//! sockets), driven with blocking system calls in place of the queue's SQEs: the handshake,
//! simple and structured replies, replies split in chunks with holes and out of order, large
//! READs received straight into their buffer, and every misbehaviour the fake server has, with
//! guard bytes around each request's buffer proving nothing is written outside it. Then the
//! same state machine fed by hand: a reply before its send completed, short sends, replies cut
//! at every byte, and arbitrary bytes.

use std::io::IoSlice;
use std::time::Duration;

use rustix::net::RecvFlags;

use super::*;
use crate::nbd::address::{self, NbdAddress, Socket};
use crate::nbd::export::Export;
use crate::nbd::request::{Command, FLAG_FUA, FLAG_NO_HOLE};

use crate::nbd::fake_nbd::{Config, FakeServer, Misbehaviour};

const GUARD: usize = 4096;
const DEPTH: u16 = 64;

/// A request buffer with guard bytes on both sides.
struct Guarded {
    bytes: Vec<u8>,
    len: usize,
}

impl Guarded {
    fn new(len: usize) -> Self {
        Guarded {
            bytes: vec![0x5a; len + 2 * GUARD],
            len,
        }
    }
    fn ptr(&mut self) -> *mut u8 {
        self.bytes[GUARD..].as_mut_ptr()
    }
    fn data(&self) -> &[u8] {
        &self.bytes[GUARD..GUARD + self.len]
    }
    fn data_mut(&mut self) -> &mut [u8] {
        &mut self.bytes[GUARD..GUARD + self.len]
    }
    fn guards_intact(&self) -> bool {
        let (front, rest) = self.bytes.split_at(GUARD);
        let back = &rest[self.len..];
        front.iter().chain(back).all(|&b| b == 0x5a)
    }
}

fn pattern(seed: u8, buf: &mut [u8]) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b = seed.wrapping_add((i / 512) as u8).wrapping_mul(31) ^ (i as u8) | 1;
    }
}

fn open(server: &FakeServer) -> (Socket, Export) {
    let address = match &server.path {
        Some(path) => NbdAddress::Unix(path.clone()),
        None => NbdAddress::Tcp {
            host: "127.0.0.1".into(),
            port: server.port,
        },
    };
    let (socket, export) =
        address::open(&address, "", Duration::from_secs(5)).expect("handshake with the fake");
    // A bug here must fail the test, not hang it.
    socket
        .set_timeouts(Some(Duration::from_secs(5)))
        .expect("timeouts");
    (socket, export)
}

/// Drives `conn` on `socket` with blocking calls until `n` requests are done.
fn drive(conn: &mut Connection, socket: &Socket, n: usize) -> Result<Vec<(u16, i32)>, Broken> {
    let mut done = Vec::new();
    while done.len() < n {
        if let Some((iov, count)) = conn.next_send() {
            // SAFETY: the connection's iovecs, valid until `sent`.
            let iovs = unsafe { std::slice::from_raw_parts(iov, count as usize) };
            let mut slices = Vec::with_capacity(iovs.len());
            for v in iovs {
                // SAFETY: each points at a live header or request buffer, as `submit`'s
                // contract requires of the tests' buffers.
                slices.push(IoSlice::new(unsafe {
                    std::slice::from_raw_parts(v.as_ptr(), v.len())
                }));
            }
            let res = match rustix::io::writev(socket, &slices) {
                Ok(n) => n as i32,
                Err(e) => -e.raw_os_error(),
            };
            conn.sent(res, &mut done)?;
            continue;
        }
        let (ptr, len, whole) = conn.recv_target();
        let flags = if whole {
            RecvFlags::WAITALL
        } else {
            RecvFlags::empty()
        };
        // SAFETY: the connection's buffer, or a READ's buffer it holds, `len` bytes.
        let buf = unsafe { std::slice::from_raw_parts_mut(ptr, len as usize) };
        let res = match rustix::net::recv(socket, buf, flags) {
            Ok((n, _)) => n as i32,
            Err(e) => -e.raw_os_error(),
        };
        conn.received(res, &mut done)?;
    }
    done.sort_unstable();
    Ok(done)
}

fn request(command: Command, offset: u64, len: u32) -> Request {
    Request {
        command,
        flags: 0,
        offset,
        len,
    }
}

/// Writes, reads back and checks `sizes` through one connection; flushes; trims; zeroes.
fn round_trip(config: Config, unix: bool) {
    let dir = std::env::temp_dir().join(format!("ublk-nbd-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let path = dir.join(format!("fake-{}.sock", rand_suffix()));
    let server = if unix {
        FakeServer::unix(config.clone(), &path)
    } else {
        FakeServer::tcp(config.clone())
    };
    let (socket, export) = open(&server);
    assert_eq!(export.structured, config.structured);
    let mut conn = Connection::new(3, DEPTH, export.structured);
    let sizes = [512usize, 4096, 8192, 65536, 131072, 4096, 512, 1 << 20];
    let mut writes: Vec<Guarded> = sizes.iter().map(|&n| Guarded::new(n)).collect();
    let mut offset = 0u64;
    let mut offsets = Vec::new();
    for (tag, buf) in writes.iter_mut().enumerate() {
        pattern(tag as u8, buf.data_mut());
        let mut r = request(Command::Write, offset, buf.len as u32);
        if tag == 1 {
            r.flags = FLAG_FUA;
        }
        // SAFETY: the buffer lives until `drive` returns, untouched meanwhile.
        unsafe { conn.submit(tag as u16, r, buf.ptr()) };
        offsets.push(offset);
        offset += buf.len as u64 + 4096; // leave zeroed gaps: holes in split replies
    }
    let done = drive(&mut conn, &socket, sizes.len()).expect("writes");
    let want: Vec<(u16, i32)> = sizes
        .iter()
        .enumerate()
        .map(|(t, &n)| (t as u16, n as i32))
        .collect();
    assert_eq!(done, want);
    // Read each back, with the zeroed gap after it, all at once.
    let mut reads: Vec<Guarded> = sizes.iter().map(|&n| Guarded::new(n + 4096)).collect();
    for (tag, buf) in reads.iter_mut().enumerate() {
        let r = request(Command::Read, offsets[tag], buf.len as u32);
        // SAFETY: as above.
        unsafe { conn.submit(tag as u16 + 10, r, buf.ptr()) };
    }
    let done = drive(&mut conn, &socket, sizes.len()).expect("reads");
    assert_eq!(done.len(), sizes.len());
    for (i, (buf, wrote)) in reads.iter().zip(&writes).enumerate() {
        assert_eq!(done[i], (i as u16 + 10, buf.len as i32));
        assert!(buf.data()[..wrote.len] == *wrote.data(), "read {i} differs");
        assert!(
            buf.data()[wrote.len..].iter().all(|&b| b == 0),
            "gap {i} not zero"
        );
        assert!(buf.guards_intact(), "read {i} wrote outside its buffer");
    }
    // FLUSH, TRIM, WRITE_ZEROES with NO_HOLE.
    let mut zero = request(Command::WriteZeroes, 0, 512);
    zero.flags = FLAG_NO_HOLE;
    for (tag, r) in [
        (40, request(Command::Flush, 0, 0)),
        (41, request(Command::Trim, 8192, 4096)),
        (42, zero),
    ] {
        // SAFETY: these carry no data.
        unsafe { conn.submit(tag, r, std::ptr::null_mut()) };
    }
    let done = drive(&mut conn, &socket, 3).expect("flush, trim, zeroes");
    assert_eq!(done, [(40, 0), (41, 4096), (42, 512)]);
    let stats = &server.stats;
    let n = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(
        (
            n(&stats.fua_writes),
            n(&stats.flushes),
            n(&stats.trims),
            n(&stats.no_hole)
        ),
        (1, 1, 1, 1)
    );
    assert_eq!(conn.outstanding(), 0);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::Instant::now())
}

#[test]
fn structured_replies_split_with_holes_and_out_of_order() {
    round_trip(
        Config {
            split_reads: true,
            reorder: 5,
            ..Config::default()
        },
        false,
    );
}

#[test]
fn simple_replies_out_of_order() {
    round_trip(
        Config {
            structured: false,
            reorder: 3,
            ..Config::default()
        },
        false,
    );
}

#[test]
fn an_old_server_without_go_over_a_unix_socket() {
    round_trip(
        Config {
            go: false,
            block_sizes: None,
            ..Config::default()
        },
        true,
    );
}

/// A READ of 64 KiB through a server that misbehaves once in `m`: how the connection ends, with
/// the buffer's guards checked; then, if the connection was only lost, the request sent again
/// on a new connection succeeds.
fn misbehaving(m: Misbehaviour, structured: bool) -> Broken {
    let server = FakeServer::tcp(Config {
        structured,
        misbehave: Some(m),
        misbehave_times: 1,
        ..Config::default()
    });
    let mut data = vec![0u8; 65536];
    pattern(9, &mut data);
    server.store.lock().expect("store")[..65536].copy_from_slice(&data);
    let (socket, export) = open(&server);
    if m == Misbehaviour::Silent {
        socket
            .set_timeouts(Some(Duration::from_millis(300)))
            .expect("timeouts");
    }
    let mut conn = Connection::new(0, DEPTH, export.structured);
    let mut buf = Guarded::new(65536);
    let r = request(Command::Read, 0, 65536);
    // SAFETY: the buffer outlives the connection's use of it.
    unsafe { conn.submit(7, r, buf.ptr()) };
    let broken = match drive(&mut conn, &socket, 1) {
        Err(b) => b,
        // A simple reply has no length: one too long completes its request, and what is left
        // over is taken for the next reply. Nothing more is due, so any more is nonsense.
        Ok(done) if m == Misbehaviour::LongerReply && !structured => {
            assert_eq!(done, [(7, 65536)]);
            drive(&mut conn, &socket, 1).expect_err("the bytes after the payload")
        }
        Ok(done) => panic!("{m:?} (structured {structured}) went unnoticed: {done:?}"),
    };
    assert!(buf.guards_intact(), "{m:?}: a write outside the buffer");
    let mut back = Vec::new();
    conn.drain(&mut back);
    if m != Misbehaviour::LongerReply || structured {
        assert_eq!(
            back,
            [(7, None)],
            "{m:?}: the request comes back unanswered"
        );
    }
    if matches!(broken, Broken::Lost(_)) {
        let (socket, export) = open(&server);
        let mut conn = Connection::new(0, DEPTH, export.structured);
        // SAFETY: as above.
        unsafe { conn.submit(7, r, buf.ptr()) };
        assert_eq!(drive(&mut conn, &socket, 1).expect("resent"), [(7, 65536)]);
        assert!(
            buf.data() == data.as_slice(),
            "{m:?}: the resent READ's data"
        );
        assert!(buf.guards_intact());
    }
    broken
}

fn violation_of(b: Broken) -> String {
    match b {
        Broken::Violation(v) => v.0,
        other => panic!("expected a violation, got {other:?}"),
    }
}

#[test]
fn every_misbehaviour_ends_the_connection_with_one_clear_reason() {
    for structured in [true, false] {
        let v = violation_of(misbehaving(Misbehaviour::BadMagic, structured));
        assert!(v.contains("reply magic 0xdeadbeef"), "{v}");
        let v = violation_of(misbehaving(Misbehaviour::UnknownCookie, structured));
        assert!(v.contains("no request in flight"), "{v}");
        let b = misbehaving(Misbehaviour::DisconnectMidReply, structured);
        assert!(
            matches!(b, Broken::Lost(ref why) if why.contains("closed")),
            "{b:?}"
        );
    }
    let v = violation_of(misbehaving(Misbehaviour::LongerReply, true));
    assert!(v.contains("more than was asked"), "{v}");
    // Simple replies carry no length: the extra bytes are taken for the next reply.
    let v = violation_of(misbehaving(Misbehaviour::LongerReply, false));
    assert!(v.contains("reply magic 0xaaaaaaaa"), "{v}");
    let v = violation_of(misbehaving(Misbehaviour::ShortRead, true));
    assert!(v.contains("ended before all of them came"), "{v}");
    let v = violation_of(misbehaving(Misbehaviour::NonsenseLength, true));
    assert!(v.contains("OFFSET_HOLE chunk of 13 bytes"), "{v}");
    // Simple replies have no length to get wrong: garbage in the cookie's place.
    let v = violation_of(misbehaving(Misbehaviour::NonsenseLength, false));
    assert!(v.contains("no request in flight"), "{v}");
    // Silence is no error of the protocol: the queue's I/O timeout ends it; here the socket's.
    let b = misbehaving(Misbehaviour::Silent, true);
    assert!(
        matches!(b, Broken::Lost(ref why) if why.contains("receiving failed")),
        "{b:?}"
    );
}

/// A reply fed by hand into a connection with one request in flight.
fn fed(conn: &mut Connection, bytes: &[u8]) -> Result<Vec<(u16, i32)>, Broken> {
    let mut done = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let (ptr, len, _) = conn.recv_target();
        let n = (len as usize).min(bytes.len() - at);
        // SAFETY: the connection offered `len` writable bytes at `ptr`.
        unsafe { ptr.copy_from_nonoverlapping(bytes[at..].as_ptr(), n) };
        at += n;
        conn.received(n as i32, &mut done)?;
    }
    Ok(done)
}

fn simple_reply(cookie: u64, error: u32) -> Vec<u8> {
    let mut r = 0x6744_6698u32.to_be_bytes().to_vec();
    r.extend(error.to_be_bytes());
    r.extend(cookie.to_be_bytes());
    r
}

/// Submits a READ of `len` on tag 2 and sends it (completing the send); returns its cookie.
fn read_sent(conn: &mut Connection, buf: &mut Guarded) -> u64 {
    let r = request(Command::Read, 0, buf.len as u32);
    // SAFETY: the buffer outlives the connection's use of it.
    unsafe { conn.submit(2, r, buf.ptr()) };
    let (_, count) = conn.next_send().expect("a send");
    assert_eq!(count, 1, "a READ sends its header only");
    conn.sent(28, &mut Vec::new()).expect("sent");
    conn.cookie(2, conn.slots[2].seq)
}

#[test]
fn a_reply_before_its_send_completed_waits_for_the_send() {
    let mut conn = Connection::new(1, 4, false);
    let mut buf = Guarded::new(512);
    let w = request(Command::Write, 0, 512);
    // SAFETY: as above.
    unsafe { conn.submit(3, w, buf.ptr()) };
    conn.next_send().expect("a send");
    let cookie = conn.cookie(3, 0);
    let done = fed(&mut conn, &simple_reply(cookie, 0)).expect("a good reply");
    assert!(
        done.is_empty(),
        "the kernel may still be reading the buffer"
    );
    let mut done = Vec::new();
    conn.sent(28 + 512, &mut done).expect("sent");
    assert_eq!(done, [(3, 512)]);
    assert_eq!(conn.outstanding(), 0);
}

#[test]
fn a_short_send_goes_on_where_it_stopped() {
    let mut conn = Connection::new(0, 4, false);
    let mut a = Guarded::new(1024);
    let mut b = Guarded::new(512);
    // SAFETY: as above.
    unsafe {
        conn.submit(0, request(Command::Write, 0, 1024), a.ptr());
        conn.submit(1, request(Command::Write, 4096, 512), b.ptr());
    }
    let (_, count) = conn.next_send().expect("a send");
    assert_eq!(count, 4);
    let mut done = Vec::new();
    conn.sent(30, &mut done).expect("partial");
    let (iov, count) = conn.next_send().expect("the rest");
    // SAFETY: the connection's iovecs, valid until `sent`.
    let rest = unsafe { std::slice::from_raw_parts(iov, count as usize) };
    assert_eq!(count, 3, "the first header is out, 2 bytes of the data too");
    assert_eq!(rest[0].as_ptr(), a.ptr().wrapping_add(2));
    assert_eq!(rest[0].len(), 1022);
    conn.sent(1022 + 28 + 512, &mut done).expect("the rest");
    assert!(conn.next_send().is_none(), "nothing left to send");
    assert!(
        conn.sent(0, &mut done).is_err(),
        "no progress at all is a lost connection"
    );
}

#[test]
fn replies_cut_at_every_byte_parse_the_same() {
    let mut data = vec![0u8; 4096];
    pattern(4, &mut data);
    for cut in 1..=40 {
        let mut conn = Connection::new(0, 4, false);
        let mut buf = Guarded::new(4096);
        let cookie = read_sent(&mut conn, &mut buf);
        let mut reply = simple_reply(cookie, 0);
        reply.extend_from_slice(&data);
        let mut done = Vec::new();
        for piece in reply.chunks(cut) {
            done.extend(fed(&mut conn, piece).expect("a good reply"));
        }
        assert_eq!(done, [(2, 4096)], "cut {cut}");
        assert!(
            buf.data() == data.as_slice() && buf.guards_intact(),
            "cut {cut}"
        );
    }
}

#[test]
fn an_error_reply_fails_the_request_with_its_errno() {
    let mut conn = Connection::new(0, 4, false);
    let mut buf = Guarded::new(512);
    let cookie = read_sent(&mut conn, &mut buf);
    let done = fed(&mut conn, &simple_reply(cookie, 28)).expect("an error is a reply");
    assert_eq!(done, [(2, -28)]);
    let again = fed(&mut conn, &simple_reply(cookie, 0));
    assert!(
        matches!(again, Err(Broken::Violation(_))),
        "a second reply for it: {again:?}"
    );
}

proptest::proptest! {
    /// Whatever a server sends after a READ and a WRITE went out, the connection takes it or
    /// ends with a reason: no panic, no byte outside either buffer.
    #[test]
    fn any_reply_bytes_are_taken_or_refused(
        structured in proptest::bool::ANY,
        bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600),
        real_cookie in proptest::bool::ANY,
    ) {
        let mut conn = Connection::new(0, 4, structured);
        let mut read = Guarded::new(1024);
        let cookie = read_sent(&mut conn, &mut read);
        let mut bytes = bytes;
        if real_cookie && bytes.len() >= 16 {
            // Aim at the READ in flight, so that the parsing goes further.
            let magic: u32 = if structured { 0x668e_33ef } else { 0x6744_6698 };
            bytes[..4].copy_from_slice(&magic.to_be_bytes());
            bytes[8..16].copy_from_slice(&cookie.to_be_bytes());
        }
        let _ = fed(&mut conn, &bytes);
        proptest::prop_assert!(read.guards_intact());
    }
}

#[test]
fn with_only_large_reads_in_flight_a_header_comes_alone_and_the_data_goes_straight() {
    let mut conn = Connection::new(0, 4, true);
    let mut buf = Guarded::new(65536);
    let cookie = read_sent(&mut conn, &mut buf);
    let (_, len, whole) = conn.recv_target();
    assert_eq!((len, whole), (28, false), "a chunk header and its offset");
    let mut head = 0x668e_33efu32.to_be_bytes().to_vec();
    head.extend(1u16.to_be_bytes()); // DONE
    head.extend(1u16.to_be_bytes()); // OFFSET_DATA
    head.extend(cookie.to_be_bytes());
    head.extend((8u32 + 65536).to_be_bytes());
    head.extend(0u64.to_be_bytes());
    assert!(fed(&mut conn, &head).expect("a good header").is_empty());
    let (ptr, len, whole) = conn.recv_target();
    assert_eq!(
        (ptr, len, whole),
        (buf.ptr(), 65536, true),
        "straight into the buffer"
    );
    let mut data = vec![0u8; 65536];
    pattern(6, &mut data);
    // SAFETY: the connection offered the buffer's 65536 bytes.
    unsafe { ptr.copy_from_nonoverlapping(data.as_ptr(), 65536) };
    let mut done = Vec::new();
    conn.received(65536, &mut done).expect("the data");
    assert_eq!(done, [(2, 65536)]);
    assert!(buf.data() == data.as_slice() && buf.guards_intact());
    // Nothing in flight: the next receive takes whatever comes, into the connection's buffer.
    let (_, len, whole) = conn.recv_target();
    assert_eq!((len, whole), (RECV_BYTES as u32, false));
}
