//! NBD devices on a real kernel, served from the fake NBD server in this process: data through
//! `/dev/ublkbN` with simple and structured replies, split and out of order, over TCP and unix
//! sockets and several connections; each way a server can misbehave ending in one event and
//! EIO (or, for a lost connection, in the request sent again), never a hang; a server gone for
//! the reconnect timeout failing I/O while the device stays deletable; a server back in time
//! losing nothing. Needs ublk_drv: run with `cargo xtask vm-e2e`.

mod common;

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use common::fake_nbd::{Config, FakeServer, Misbehaviour};
use common::{AlignedBuf, assert_same, open_direct, pattern, read_exact, write_all};
use rustix::io::Errno;
use ublk_queue::{DeviceBuilder, Serving};
use ublk_targets::{NbdAddress, NbdBuilder, NbdEvent};

type Events = Arc<Mutex<Vec<NbdEvent>>>;

fn address(server: &FakeServer) -> NbdAddress {
    match &server.path {
        Some(path) => NbdAddress::Unix(path.clone()),
        None => NbdAddress::Tcp {
            host: "127.0.0.1".into(),
            port: server.port,
        },
    }
}

/// A device of `queues` queues over `server`, its events collected.
fn device(
    server: &FakeServer,
    queues: u16,
    tweak: impl FnOnce(NbdBuilder) -> NbdBuilder,
) -> (Serving, Events) {
    let events: Events = Arc::default();
    let sink = Arc::clone(&events);
    let builder = NbdBuilder::new(address(server))
        .queues(queues)
        .on_event(move |e| {
            sink.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(e.clone())
        });
    let nbd = tweak(builder)
        .connect()
        .expect("connect to the fake server");
    let serving = nbd
        .configure(DeviceBuilder::new().queues(queues).depth(64))
        .add()
        .expect("add")
        .serve(nbd)
        .expect("serve");
    (serving, events)
}

fn seen(e: &Events) -> Vec<NbdEvent> {
    e.lock().unwrap_or_else(PoisonError::into_inner).clone()
}

fn socket_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("ublk-nbd-{name}-{}.sock", std::process::id()))
}

/// Four threads write their own quarter of the first 8 MiB in requests of 4 KiB to 256 KiB,
/// then read it all back: many requests in flight at once, so replies come in any order.
fn round_trip(serving: &Serving, server: &FakeServer, seed: u64) {
    let path = serving.block_path();
    let quarter = 2u64 << 20;
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let path = path.clone();
            s.spawn(move || {
                let fd = open_direct(&path);
                let base = t * quarter;
                let sizes = [4096usize, 65536, 262_144, 8192];
                let mut at = 0;
                let mut i = 0;
                while at < quarter {
                    let len = sizes[i % sizes.len()].min((quarter - at) as usize);
                    let mut buf = AlignedBuf::new(len);
                    pattern(seed, base + at, &mut buf);
                    write_all(&fd, &buf, base + at);
                    at += len as u64;
                    i += 1;
                }
                let mut buf = AlignedBuf::new(quarter as usize);
                let mut want = vec![0u8; quarter as usize];
                read_exact(&fd, &mut buf, base);
                pattern(seed, base, &mut want);
                assert_same(&buf, &want, base, "read back through the device");
            });
        }
    });
    let store = server.store.lock().unwrap_or_else(PoisonError::into_inner);
    let mut want = vec![0u8; 4 * quarter as usize];
    pattern(seed, 0, &mut want);
    assert_same(&store[..want.len()], &want, 0, "the server's copy");
}

#[test]
#[ignore = "needs ublk_drv"]
fn nbd_honest_servers_of_every_kind_round_trip() {
    let kinds = [
        ("structured, split, out of order, tcp", true, true, 8, false),
        ("simple, out of order, unix", false, false, 4, true),
        ("structured, in order, unix", true, false, 1, true),
    ];
    for (what, structured, split_reads, reorder, unix) in kinds {
        let config = Config {
            structured,
            split_reads,
            reorder,
            ..Config::default()
        };
        let server = if unix {
            FakeServer::unix(config, &socket_path("honest"))
        } else {
            FakeServer::tcp(config)
        };
        for queues in [1, 2] {
            let (serving, events) = device(&server, queues, |b| b);
            round_trip(&serving, &server, u64::from(queues) * 7);
            serving.stop().expect("stop");
            assert!(seen(&events).is_empty(), "{what}: {:?}", seen(&events));
        }
        assert!(
            server.stats.connections.load(Ordering::Relaxed) >= 3,
            "{what}"
        );
        common::report(&format!("{what}: 1 and 2 queues round-trip"));
    }
}

#[test]
#[ignore = "needs ublk_drv"]
fn nbd_flush_and_fua_reach_the_server() {
    let server = FakeServer::tcp(Config::default());
    let (serving, _) = device(&server, 1, |b| b);
    let path = serving.block_path();
    let fd = rustix::fs::open(
        path.as_str(),
        rustix::fs::OFlags::RDWR | rustix::fs::OFlags::DIRECT | rustix::fs::OFlags::DSYNC,
        rustix::fs::Mode::empty(),
    )
    .expect("open O_DSYNC");
    let mut buf = AlignedBuf::new(4096);
    pattern(3, 0, &mut buf);
    write_all(&fd, &buf, 0);
    rustix::fs::fsync(&fd).expect("fsync");
    assert!(
        server.stats.fua_writes.load(Ordering::Relaxed) >= 1,
        "an O_DSYNC write is FUA"
    );
    assert!(
        server.stats.flushes.load(Ordering::Relaxed) >= 1,
        "fsync sends FLUSH"
    );
    serving.stop().expect("stop");
}

/// Where the misbehaving servers misbehave: away from what the partition scan reads.
const AT: u64 = 1 << 20;

/// Reads 64 KiB at [`AT`] and says how it went and how long it took.
fn read_64k(fd: &OwnedFd) -> (Result<usize, Errno>, Duration) {
    let started = Instant::now();
    let mut buf = AlignedBuf::new(65536);
    (rustix::io::pread(fd, &mut buf[..], AT), started.elapsed())
}

#[test]
#[ignore = "needs ublk_drv"]
fn nbd_each_misbehaviour_fails_cleanly_and_the_device_goes_on() {
    let cases = [
        (Misbehaviour::BadMagic, true, false),
        (Misbehaviour::BadMagic, false, false),
        (Misbehaviour::UnknownCookie, true, false),
        (Misbehaviour::LongerReply, true, false),
        (Misbehaviour::ShortRead, true, false),
        (Misbehaviour::NonsenseLength, true, false),
        (Misbehaviour::DisconnectMidReply, true, true),
        (Misbehaviour::DisconnectMidReply, false, true),
        (Misbehaviour::Silent, true, true),
    ];
    for (m, structured, recovers) in cases {
        let what = format!("{m:?} (structured {structured})");
        let server = FakeServer::tcp(Config {
            structured,
            misbehave: Some(m),
            misbehave_times: 1,
            misbehave_at: Some(AT),
            ..Config::default()
        });
        let (serving, events) = device(&server, 1, |b| {
            b.io_timeout(Duration::from_secs(2))
                .reconnect_timeout(Duration::from_secs(20))
        });
        let fd = open_direct(&serving.block_path());
        let (first, took) = read_64k(&fd);
        assert!(took < Duration::from_secs(15), "{what}: took {took:?}");
        if recovers {
            assert_eq!(first, Ok(65536), "{what}: sent again after reconnecting");
        } else {
            assert_eq!(first, Err(Errno::IO), "{what}: the request fails");
        }
        // The server is honest now: the device reconnected and serves on.
        assert_eq!(read_64k(&fd).0, Ok(65536), "{what}: after the misbehaviour");
        let seen = self::seen(&events);
        let misbehaved = seen
            .iter()
            .filter(|e| matches!(e, NbdEvent::ServerMisbehaved { .. }))
            .count();
        assert_eq!(misbehaved, usize::from(!recovers), "{what}: {seen:?}");
        assert!(
            seen.iter()
                .any(|e| matches!(e, NbdEvent::Reconnected { .. })),
            "{what}: {seen:?}"
        );
        drop(fd);
        let started = Instant::now();
        serving.stop().expect("stop");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{what}: stop took long"
        );
        common::report(&format!("{what}: {first:?} in {took:?}; events {seen:?}"));
    }
}

#[test]
#[ignore = "needs ublk_drv"]
fn nbd_server_gone_past_the_reconnect_timeout_fails_io_and_the_device_goes() {
    let server = FakeServer::tcp(Config::default());
    let (serving, events) = device(&server, 1, |b| {
        // The window is 4 s and "at once" below means under 3 s: a second reconnect window is
        // still told apart when a loaded emulator slows the failing read by a second or two.
        b.reconnect_timeout(Duration::from_secs(4))
            .connect_timeout(Duration::from_secs(1))
    });
    let fd = open_direct(&serving.block_path());
    assert_eq!(read_64k(&fd).0, Ok(65536));
    drop(server);
    let (res, took) = read_64k(&fd);
    assert_eq!(res, Err(Errno::IO), "no server: EIO");
    assert!(
        took < Duration::from_secs(15),
        "after about the timeout: {took:?}"
    );
    let (res, took) = read_64k(&fd);
    assert_eq!(res, Err(Errno::IO), "and at once after that");
    assert!(took < Duration::from_secs(3), "at once: {took:?}");
    assert!(
        seen(&events)
            .iter()
            .any(|e| matches!(e, NbdEvent::GaveUp { .. })),
        "{:?}",
        seen(&events)
    );
    drop(fd);
    let started = Instant::now();
    serving.stop().expect("the device stays deletable");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
#[ignore = "needs ublk_drv"]
fn nbd_connections_dropped_under_load_lose_no_write() {
    let server = FakeServer::tcp(Config {
        reorder: 4,
        ..Config::default()
    });
    let (serving, events) = device(&server, 2, |b| b.connections(2));
    std::thread::scope(|s| {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let dropper = {
            let stop = Arc::clone(&stop);
            let server = &server;
            s.spawn(move || {
                let mut rounds = 0;
                while !stop.load(Ordering::Relaxed) && rounds < 3 {
                    std::thread::sleep(Duration::from_millis(700));
                    server.drop_connections();
                    rounds += 1;
                }
                rounds
            })
        };
        round_trip(&serving, &server, 11);
        stop.store(true, Ordering::Relaxed);
        let rounds = dropper.join().expect("the dropper");
        assert!(
            rounds >= 1,
            "the round trip ended before the first drop: make it longer"
        );
        common::report(&format!("connections dropped {rounds} time(s) under load"));
    });
    let seen = self::seen(&events);
    assert!(
        !seen.iter().any(|e| matches!(
            e,
            NbdEvent::ServerMisbehaved { .. } | NbdEvent::GaveUp { .. }
        )),
        "{seen:?}"
    );
    let lost = seen
        .iter()
        .filter(|e| matches!(e, NbdEvent::ConnectionLost { .. }))
        .count();
    assert!(
        lost >= 1,
        "the connections were dropped at least once: {seen:?}"
    );
    serving.stop().expect("stop");
}
