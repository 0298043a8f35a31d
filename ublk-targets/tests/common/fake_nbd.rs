//! A fake NBD server for tests: an export in memory, served over TCP on the loopback or a unix
//! socket, honestly (simple or structured replies, READ replies in several chunks with holes,
//! replies out of order) or misbehaving in one chosen way a number of times.
//!
//! Shared by the host unit tests of the NBD connection (included by path) and the VM tests that
//! serve real ublk devices from it.

#![allow(dead_code)] // Each user takes what it needs.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

const NBD_MAGIC: u64 = 0x4e42_444d_4147_4943;
const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
const REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
const REQUEST_MAGIC: u32 = 0x2560_9513;
const SIMPLE_MAGIC: u32 = 0x6744_6698;
const STRUCTURED_MAGIC: u32 = 0x668e_33ef;

/// Transmission flags this server sets: HAS_FLAGS, SEND_FLUSH, SEND_FUA, SEND_TRIM,
/// SEND_WRITE_ZEROES, CAN_MULTI_CONN.
pub const FLAGS: u16 = 0x0001 | 0x0004 | 0x0008 | 0x0020 | 0x0040 | 0x0100;

/// One way of breaking the protocol, done on a READ reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Misbehaviour {
    /// A reply whose magic is nonsense.
    BadMagic,
    /// A reply for a cookie the client never sent.
    UnknownCookie,
    /// A data chunk beyond what was asked (structured), or data after the payload (simple).
    LongerReply,
    /// A structured reply that ends before all the data came.
    ShortRead,
    /// The header and half the data, then the connection closes.
    DisconnectMidReply,
    /// A chunk whose length makes no sense for its type.
    NonsenseLength,
    /// Requests are read, never answered.
    Silent,
}

/// What the server is like.
#[derive(Debug, Clone)]
pub struct Config {
    pub size: u64,
    pub flags: u16,
    /// Offer structured replies.
    pub structured: bool,
    /// Know NBD_OPT_GO (else only EXPORT_NAME).
    pub go: bool,
    /// Answer GO with these block sizes.
    pub block_sizes: Option<(u32, u32, u32)>,
    /// Hold replies until this many are ready (or the client waits), then send them in
    /// reverse order.
    pub reorder: usize,
    /// Structured READ replies in two chunks, the second half first, zeroes as holes.
    pub split_reads: bool,
    pub misbehave: Option<Misbehaviour>,
    /// How many READ replies misbehave (then the server is honest).
    pub misbehave_times: u32,
    /// Only READs at this offset misbehave (`None`: any), so that the kernel's own reads (the
    /// partition scan) do not use the misbehaviour up.
    pub misbehave_at: Option<u64>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            size: 64 << 20,
            flags: FLAGS,
            structured: true,
            go: true,
            block_sizes: Some((512, 4096, 1 << 20)),
            reorder: 1,
            split_reads: false,
            misbehave: None,
            misbehave_times: 0,
            misbehave_at: None,
        }
    }
}

/// What the server saw.
#[derive(Debug, Default)]
pub struct Stats {
    pub connections: AtomicU64,
    pub reads: AtomicU64,
    pub writes: AtomicU64,
    pub flushes: AtomicU64,
    pub fua_writes: AtomicU64,
    pub trims: AtomicU64,
    pub zeroes: AtomicU64,
    pub no_hole: AtomicU64,
    pub misbehaved: AtomicU64,
}

/// A running fake server; its threads stop when it is dropped (and their clients go).
pub struct FakeServer {
    pub port: u16,
    pub path: Option<PathBuf>,
    pub store: Arc<Mutex<Vec<u8>>>,
    pub stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
    /// Connections the server keeps, to drop them when it goes.
    conns: Arc<Mutex<Vec<Conn>>>,
}

enum Conn {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Conn {
    fn try_clone(&self) -> io::Result<Conn> {
        Ok(match self {
            Conn::Tcp(s) => Conn::Tcp(s.try_clone()?),
            Conn::Unix(s) => Conn::Unix(s.try_clone()?),
        })
    }
    fn shutdown(&self) {
        let _ = match self {
            Conn::Tcp(s) => s.shutdown(std::net::Shutdown::Both),
            Conn::Unix(s) => s.shutdown(std::net::Shutdown::Both),
        };
    }
    fn set_read_timeout(&self, t: Option<Duration>) {
        let _ = match self {
            Conn::Tcp(s) => s.set_read_timeout(t),
            Conn::Unix(s) => s.set_read_timeout(t),
        };
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.read(buf),
            Conn::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.write(buf),
            Conn::Unix(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl FakeServer {
    /// Serves on a TCP port of 127.0.0.1.
    pub fn tcp(config: Config) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let port = listener.local_addr().expect("its address").port();
        let server = FakeServer::new(config.size, port, None);
        let shared = server.shared(config);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if shared.stop.load(Ordering::Relaxed) {
                    return;
                }
                if let Ok(stream) = stream {
                    let _ = stream.set_nodelay(true);
                    shared.start(Conn::Tcp(stream));
                }
            }
        });
        server
    }

    /// Serves on a unix socket at `path`.
    pub fn unix(config: Config, path: &Path) -> FakeServer {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).expect("bind the unix socket");
        let server = FakeServer::new(config.size, 0, Some(path.to_owned()));
        let shared = server.shared(config);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if shared.stop.load(Ordering::Relaxed) {
                    return;
                }
                if let Ok(stream) = stream {
                    shared.start(Conn::Unix(stream));
                }
            }
        });
        server
    }

    fn new(size: u64, port: u16, path: Option<PathBuf>) -> FakeServer {
        FakeServer {
            port,
            path,
            store: Arc::new(Mutex::new(vec![0; size as usize])),
            stats: Arc::default(),
            stop: Arc::default(),
            conns: Arc::default(),
        }
    }

    fn shared(&self, config: Config) -> Shared {
        Shared {
            left: Arc::new(AtomicU32::new(config.misbehave_times)),
            config,
            store: Arc::clone(&self.store),
            stats: Arc::clone(&self.stats),
            stop: Arc::clone(&self.stop),
            conns: Arc::clone(&self.conns),
        }
    }

    /// Closes every connection now (the server keeps listening): a lost connection.
    pub fn drop_connections(&self) {
        for c in self
            .conns
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
        {
            c.shutdown();
        }
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.drop_connections();
        // Wake the accept loop so that it sees the flag.
        if let Some(path) = &self.path {
            let _ = UnixStream::connect(path);
            let _ = std::fs::remove_file(path);
        } else {
            let _ = TcpStream::connect(("127.0.0.1", self.port));
        }
    }
}

#[derive(Clone)]
struct Shared {
    config: Config,
    left: Arc<AtomicU32>,
    store: Arc<Mutex<Vec<u8>>>,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<Conn>>>,
}

impl Shared {
    fn start(&self, conn: Conn) {
        if let Ok(kept) = conn.try_clone() {
            self.conns
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(kept);
        }
        self.stats.connections.fetch_add(1, Ordering::Relaxed);
        let me = self.clone();
        std::thread::spawn(move || {
            let mut conn = conn;
            if let Ok(structured) = me.handshake(&mut conn) {
                let _ = me.transmission(&mut conn, structured);
            }
            conn.shutdown();
        });
    }

    fn handshake(&self, c: &mut Conn) -> io::Result<bool> {
        let c_ = &self.config;
        let mut g = NBD_MAGIC.to_be_bytes().to_vec();
        g.extend(IHAVEOPT.to_be_bytes());
        g.extend(3u16.to_be_bytes()); // FIXED_NEWSTYLE | NO_ZEROES
        c.write_all(&g)?;
        let client_flags = u32::from_be_bytes(read_array(c)?);
        let no_zeroes = client_flags & 2 != 0;
        let mut structured = false;
        loop {
            let magic = u64::from_be_bytes(read_array(c)?);
            if magic != IHAVEOPT {
                return Err(io::ErrorKind::InvalidData.into());
            }
            let option = u32::from_be_bytes(read_array(c)?);
            let len = u32::from_be_bytes(read_array(c)?);
            let mut data = vec![0; len as usize];
            c.read_exact(&mut data)?;
            match option {
                8 if c_.structured => {
                    structured = true;
                    opt_reply(c, 8, 1, &[])?;
                }
                7 if c_.go => {
                    if let Some((a, b, m)) = c_.block_sizes {
                        let mut d = 3u16.to_be_bytes().to_vec();
                        for w in [a, b, m] {
                            d.extend(w.to_be_bytes());
                        }
                        opt_reply(c, 7, 3, &d)?;
                    }
                    let mut d = 0u16.to_be_bytes().to_vec();
                    d.extend(c_.size.to_be_bytes());
                    d.extend(c_.flags.to_be_bytes());
                    opt_reply(c, 7, 3, &d)?;
                    opt_reply(c, 7, 1, &[])?;
                    return Ok(structured);
                }
                1 => {
                    let mut d = c_.size.to_be_bytes().to_vec();
                    d.extend(c_.flags.to_be_bytes());
                    if !no_zeroes {
                        d.extend([0; 124]);
                    }
                    c.write_all(&d)?;
                    return Ok(structured);
                }
                other => opt_reply(c, other, (1 << 31) | 1, b"unsupported")?,
            }
        }
    }

    /// Whether the reply to a READ at `offset` should misbehave (counting it).
    fn misbehave(&self, offset: u64) -> Option<Misbehaviour> {
        let m = self.config.misbehave?;
        if self.config.misbehave_at.is_some_and(|at| at != offset) {
            return None;
        }
        self.left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .ok()?;
        self.stats.misbehaved.fetch_add(1, Ordering::Relaxed);
        Some(m)
    }

    fn transmission(&self, c: &mut Conn, structured: bool) -> io::Result<()> {
        let mut pending: Vec<Vec<u8>> = Vec::new();
        loop {
            // With replies held back, wait briefly for more requests, then send what there is.
            // Only the first byte waits: a header is never cut by the timeout.
            c.set_read_timeout((!pending.is_empty()).then(|| Duration::from_millis(20)));
            let mut header = [0u8; 28];
            match c.read(&mut header[..1]) {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    flush(c, &mut pending)?;
                    continue;
                }
                Err(e) => return Err(e),
            }
            c.set_read_timeout(None);
            c.read_exact(&mut header[1..])?;
            if u32::from_be_bytes(header[0..4].try_into().unwrap()) != REQUEST_MAGIC {
                return Err(io::ErrorKind::InvalidData.into());
            }
            let flags = u16::from_be_bytes([header[4], header[5]]);
            let kind = u16::from_be_bytes([header[6], header[7]]);
            let cookie = u64::from_be_bytes(header[8..16].try_into().unwrap());
            let offset = u64::from_be_bytes(header[16..24].try_into().unwrap());
            let len = u32::from_be_bytes(header[24..28].try_into().unwrap()) as usize;
            let in_range = offset
                .checked_add(len as u64)
                .is_some_and(|end| end <= self.config.size);
            let (start, end) = (offset as usize, offset as usize + len);
            let reply;
            match kind {
                0 => {
                    self.stats.reads.fetch_add(1, Ordering::Relaxed);
                    if !in_range {
                        reply = error_reply(structured, cookie, 22);
                    } else {
                        let data = self.store.lock().unwrap_or_else(PoisonError::into_inner)
                            [start..end]
                            .to_vec();
                        if let Some(m) = self.misbehave(offset) {
                            flush(c, &mut pending)?;
                            return misbehave(c, m, structured, cookie, offset, &data);
                        }
                        reply = self.read_reply(structured, cookie, offset, &data);
                    }
                }
                1 => {
                    let mut data = vec![0; len];
                    c.read_exact(&mut data)?;
                    self.stats.writes.fetch_add(1, Ordering::Relaxed);
                    if flags & 1 != 0 {
                        self.stats.fua_writes.fetch_add(1, Ordering::Relaxed);
                    }
                    if in_range {
                        self.store.lock().unwrap_or_else(PoisonError::into_inner)[start..end]
                            .copy_from_slice(&data);
                        reply = simple(cookie, 0);
                    } else {
                        reply = error_reply(structured, cookie, 28);
                    }
                }
                2 => {
                    flush(c, &mut pending)?;
                    return Ok(());
                }
                3 => {
                    self.stats.flushes.fetch_add(1, Ordering::Relaxed);
                    reply = done_reply(structured, cookie);
                }
                4 | 6 => {
                    if kind == 4 {
                        self.stats.trims.fetch_add(1, Ordering::Relaxed);
                    } else {
                        self.stats.zeroes.fetch_add(1, Ordering::Relaxed);
                        if flags & 2 != 0 {
                            self.stats.no_hole.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    if in_range {
                        self.store.lock().unwrap_or_else(PoisonError::into_inner)[start..end]
                            .fill(0);
                        reply = done_reply(structured, cookie);
                    } else {
                        reply = error_reply(structured, cookie, 28);
                    }
                }
                _ => reply = error_reply(structured, cookie, 22),
            }
            pending.push(reply);
            if pending.len() >= self.config.reorder {
                flush(c, &mut pending)?;
            }
        }
    }

    fn read_reply(&self, structured: bool, cookie: u64, offset: u64, data: &[u8]) -> Vec<u8> {
        if !structured {
            let mut r = simple(cookie, 0);
            r.extend_from_slice(data);
            return r;
        }
        let mut r = Vec::new();
        if self.config.split_reads && data.len() >= 1024 {
            let half = data.len() / 2 / 512 * 512;
            for (at, part) in [(half, &data[half..]), (0, &data[..half])] {
                r.extend(piece(cookie, offset + at as u64, part, false));
            }
            r.extend(chunk(cookie, 1, 0, 0, &[]));
        } else {
            r.extend(piece(cookie, offset, data, true));
        }
        r
    }
}

/// One content chunk: a hole if `part` is all zeroes, data otherwise.
fn piece(cookie: u64, offset: u64, part: &[u8], done: bool) -> Vec<u8> {
    let flags = u16::from(done);
    if part.iter().all(|&b| b == 0) {
        let mut body = offset.to_be_bytes().to_vec();
        body.extend((part.len() as u32).to_be_bytes());
        chunk(cookie, flags, 2, 12, &body)
    } else {
        let mut body = offset.to_be_bytes().to_vec();
        body.extend_from_slice(part);
        chunk(cookie, flags, 1, body.len() as u32, &body)
    }
}

fn misbehave(
    c: &mut Conn,
    m: Misbehaviour,
    structured: bool,
    cookie: u64,
    offset: u64,
    data: &[u8],
) -> io::Result<()> {
    let half = &data[..data.len() / 2];
    match m {
        Misbehaviour::BadMagic => {
            let mut r = simple(cookie, 0);
            r[0..4].copy_from_slice(&0xdead_beefu32.to_be_bytes());
            c.write_all(&r)?;
        }
        Misbehaviour::UnknownCookie => {
            let mut r = if structured {
                piece(cookie ^ (1 << 40), offset, data, true)
            } else {
                simple(cookie ^ (1 << 40), 0)
            };
            r.extend_from_slice(if structured { &[] } else { data });
            c.write_all(&r)?;
        }
        Misbehaviour::LongerReply if structured => {
            let mut longer = data.to_vec();
            longer.extend([0xaa; 512]);
            let mut body = offset.to_be_bytes().to_vec();
            body.extend(longer);
            c.write_all(&chunk(cookie, 1, 1, body.len() as u32, &body))?;
        }
        Misbehaviour::LongerReply => {
            let mut r = simple(cookie, 0);
            r.extend_from_slice(data);
            r.extend([0xaa; 512]);
            c.write_all(&r)?;
        }
        Misbehaviour::ShortRead if structured => {
            let mut body = offset.to_be_bytes().to_vec();
            body.extend_from_slice(half);
            c.write_all(&chunk(cookie, 1, 1, body.len() as u32, &body))?;
        }
        Misbehaviour::ShortRead | Misbehaviour::DisconnectMidReply => {
            let mut r = if structured {
                let mut body = offset.to_be_bytes().to_vec();
                body.extend_from_slice(data);
                let mut h = chunk(cookie, 1, 1, body.len() as u32, &[]);
                h.extend_from_slice(&offset.to_be_bytes());
                h
            } else {
                simple(cookie, 0)
            };
            r.extend_from_slice(half);
            c.write_all(&r)?;
            return Ok(());
        }
        Misbehaviour::NonsenseLength => {
            if structured {
                c.write_all(&chunk(cookie, 1, 2, 13, &[0; 13]))?;
            } else {
                c.write_all(&simple(cookie, 0)[..12])?;
                c.write_all(&[0xff; 64])?;
            }
        }
        Misbehaviour::Silent => {
            // Read on, answer nothing, until the client goes.
            let mut sink = [0u8; 4096];
            while c.read(&mut sink)? > 0 {}
            return Ok(());
        }
    }
    // Then wait for the client to hang up, as a broken server that carries on would.
    let mut sink = [0u8; 4096];
    while c.read(&mut sink).unwrap_or(0) > 0 {}
    Ok(())
}

fn flush(c: &mut Conn, pending: &mut Vec<Vec<u8>>) -> io::Result<()> {
    let mut all = Vec::new();
    for r in pending.drain(..).rev() {
        all.extend(r);
    }
    c.write_all(&all)
}

fn simple(cookie: u64, error: u32) -> Vec<u8> {
    let mut r = SIMPLE_MAGIC.to_be_bytes().to_vec();
    r.extend(error.to_be_bytes());
    r.extend(cookie.to_be_bytes());
    r
}

fn chunk(cookie: u64, flags: u16, kind: u16, len: u32, body: &[u8]) -> Vec<u8> {
    let mut r = STRUCTURED_MAGIC.to_be_bytes().to_vec();
    r.extend(flags.to_be_bytes());
    r.extend(kind.to_be_bytes());
    r.extend(cookie.to_be_bytes());
    r.extend(len.to_be_bytes());
    r.extend_from_slice(body);
    r
}

fn done_reply(structured: bool, cookie: u64) -> Vec<u8> {
    if structured {
        chunk(cookie, 1, 0, 0, &[])
    } else {
        simple(cookie, 0)
    }
}

fn error_reply(structured: bool, cookie: u64, error: u32) -> Vec<u8> {
    if structured {
        let mut body = error.to_be_bytes().to_vec();
        body.extend(3u16.to_be_bytes());
        body.extend(b"bad");
        chunk(cookie, 1, 0x8001, body.len() as u32, &body)
    } else {
        simple(cookie, error)
    }
}

fn opt_reply(c: &mut Conn, option: u32, kind: u32, data: &[u8]) -> io::Result<()> {
    let mut r = REPLY_MAGIC.to_be_bytes().to_vec();
    r.extend(option.to_be_bytes());
    r.extend(kind.to_be_bytes());
    r.extend((data.len() as u32).to_be_bytes());
    r.extend_from_slice(data);
    c.write_all(&r)
}

fn read_array<const N: usize>(c: &mut Conn) -> io::Result<[u8; N]> {
    let mut b = [0u8; N];
    c.read_exact(&mut b)?;
    Ok(b)
}
