//! Connecting: what the library refuses before any device exists, and what the export makes of
//! the device, against the fake NBD server on the loopback.

use super::*;

use fake_nbd::{Config, FakeServer};

const MULTI: u16 = 1 << 8;

fn builder(server: &FakeServer) -> NbdBuilder {
    NbdBuilder::new(NbdAddress::Tcp {
        host: "127.0.0.1".into(),
        port: server.port,
    })
    .connect_timeout(Duration::from_secs(5))
}

fn unusable(result: Result<Nbd, Error>) -> String {
    match result {
        Err(Error::NbdUnusable { why, .. }) => why,
        other => panic!("expected NbdUnusable, got {other:?}"),
    }
}

#[test]
fn connections_follow_the_queues_where_the_server_allows_it() {
    let server = FakeServer::tcp(Config::default());
    let nbd = builder(&server).queues(2).connect().expect("connect");
    assert_eq!(nbd.connections(), 2, "one per queue with CAN_MULTI_CONN");
    let nbd = builder(&server)
        .queues(2)
        .connections(3)
        .connect()
        .expect("connect");
    assert_eq!(nbd.connections(), 3);
    let why = unusable(builder(&server).queues(4).connections(2).connect());
    assert!(
        why.contains("4 queues need a connection each, but there are 2"),
        "{why}"
    );

    let single = FakeServer::tcp(Config {
        flags: fake_nbd::FLAGS & !MULTI,
        ..Config::default()
    });
    assert_eq!(
        builder(&single).connect().expect("connect").connections(),
        1
    );
    let why = unusable(builder(&single).connections(2).connect());
    assert!(why.contains("CAN_MULTI_CONN"), "{why}");
    let why = unusable(builder(&single).queues(2).connect());
    assert!(why.contains("one queue it is"), "{why}");
    assert!(builder(&single).queues(0).connect().is_err());
}

#[test]
fn the_export_decides_the_device() {
    let server = FakeServer::tcp(Config {
        size: (8 << 20) + 1000,
        block_sizes: Some((4096, 4096, 64 << 10)),
        ..Config::default()
    });
    let nbd = builder(&server).connect().expect("connect");
    assert_eq!(nbd.block_size(), 4096, "the export's minimum block size");
    assert_eq!(nbd.size(), 8 << 20, "down to a whole block");
    assert_eq!(
        nbd.limits.max_io_bytes,
        64 << 10,
        "the server's largest payload"
    );
    assert!(
        nbd.describe().contains("1 connection(s)"),
        "{}",
        nbd.describe()
    );
    let why = unusable(builder(&server).block_size(512).connect());
    assert!(
        why.contains("below the export's minimum block size 4096"),
        "{why}"
    );
    let why = unusable(builder(&server).block_size(3000).connect());
    assert!(why.contains("not a power of two"), "{why}");

    let big_blocks = FakeServer::tcp(Config {
        block_sizes: Some((8192, 8192, 1 << 20)),
        ..Config::default()
    });
    let why = unusable(builder(&big_blocks).connect());
    assert!(why.contains("more than ublk's largest block"), "{why}");
    let tiny_payload = FakeServer::tcp(Config {
        block_sizes: Some((512, 512, 1024)),
        ..Config::default()
    });
    let why = unusable(builder(&tiny_payload).connect());
    assert!(why.contains("below a page"), "{why}");
    let tiny = FakeServer::tcp(Config {
        size: 100,
        ..Config::default()
    });
    let why = unusable(builder(&tiny).connect());
    assert!(why.contains("smaller than one 512-byte block"), "{why}");
}

#[test]
fn an_unreachable_server_is_named() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    drop(listener);
    let gone = NbdBuilder::new(NbdAddress::Tcp {
        host: "127.0.0.1".into(),
        port,
    });
    match gone.connect() {
        Err(e @ Error::NbdConnect { .. }) => {
            assert!(e.to_string().contains(&format!("127.0.0.1:{port}")), "{e}")
        }
        other => panic!("expected NbdConnect, got {other:?}"),
    }
    let long = gone.export("x".repeat(MAX_NAME_BYTES + 1));
    assert!(unusable(long.connect()).contains("longer than"));
}

#[test]
fn more_threads_than_queues_are_refused_before_any_device_exists() {
    let server = FakeServer::tcp(Config::default());
    let nbd = builder(&server).queues(2).connect().expect("connect");
    assert!(
        !nbd.per_io_daemons(),
        "a queue's connections are one thread's"
    );
    let threads = |n| {
        nbd.configure(DeviceBuilder::new().queues(2))
            .queue_options(ublk_queue::QueueOptions::default().threads(n))
            .for_target(&nbd)
    };
    let err = threads(4).validate().unwrap_err();
    assert!(
        matches!(
            err,
            ublk_queue::Error::InvalidThreads {
                threads: 4,
                queues: 2,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("NBD queue's connections"), "{err}");
    threads(2).validate().expect("one thread per queue");
}
