//! Where an NBD server listens, and opening a connection to it: connect and handshake within a
//! deadline, on a blocking socket (the caller is never a queue thread: `ublk add` before the
//! device exists, or a reconnecting helper thread).

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::export::Export;
use super::handshake::{self, HandshakeError};
use super::request::Request;

/// The NBD port IANA reserved.
pub const DEFAULT_PORT: u16 = 10809;

/// Where an NBD server listens.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum NbdAddress {
    /// A TCP port on a host (a name or an address).
    Tcp {
        /// The host name or address.
        host: String,
        /// The port ([`DEFAULT_PORT`] by convention).
        port: u16,
    },
    /// A unix socket.
    Unix(PathBuf),
}

impl fmt::Display for NbdAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NbdAddress::Tcp { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            NbdAddress::Tcp { host, port } => write!(f, "{host}:{port}"),
            NbdAddress::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// A connected stream socket.
#[derive(Debug)]
pub(crate) enum Socket {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Socket {
    pub(crate) fn raw_fd(&self) -> RawFd {
        match self {
            Socket::Tcp(s) => s.as_raw_fd(),
            Socket::Unix(s) => s.as_raw_fd(),
        }
    }

    /// The protocol's goodbye (`NBD_CMD_DISC`, no reply), if the socket takes it at once; the
    /// server closes its side either way when ours closes.
    pub(crate) fn disconnect(&self) {
        let header = Request::DISCONNECT.header(0);
        let flags = rustix::net::SendFlags::DONTWAIT | rustix::net::SendFlags::NOSIGNAL;
        let _ = rustix::net::send(self, &header, flags);
    }

    /// Ends both directions now: a receive or send in flight on it completes at once.
    pub(crate) fn shutdown(&self) {
        // Already shut down, or reset by the peer: either way it is over.
        let _ = match self {
            Socket::Tcp(s) => s.shutdown(Shutdown::Both),
            Socket::Unix(s) => s.shutdown(Shutdown::Both),
        };
    }

    pub(crate) fn set_timeouts(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            Socket::Tcp(s) => {
                s.set_read_timeout(timeout)?;
                s.set_write_timeout(timeout)
            }
            Socket::Unix(s) => {
                s.set_read_timeout(timeout)?;
                s.set_write_timeout(timeout)
            }
        }
    }
}

impl AsFd for Socket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Socket::Tcp(s) => s.as_fd(),
            Socket::Unix(s) => s.as_fd(),
        }
    }
}

/// A socket whose every read and write must end by a deadline.
struct Timed<'a> {
    socket: &'a Socket,
    deadline: Instant,
}

impl Timed<'_> {
    fn arm(&self) -> io::Result<()> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        self.socket.set_timeouts(Some(left))
    }
}

impl Read for Timed<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.arm()?;
        match self.socket {
            Socket::Tcp(s) => (&*s).read(buf),
            Socket::Unix(s) => (&*s).read(buf),
        }
    }
}

impl Write for Timed<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.arm()?;
        match self.socket {
            Socket::Tcp(s) => (&*s).write(buf),
            Socket::Unix(s) => (&*s).write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Why a connection could not be opened.
#[derive(Debug)]
pub(crate) enum OpenError {
    /// No connection: the server is not there, refused, or did not answer in time.
    Connect(io::Error),
    /// Connected, but the handshake failed.
    Handshake(HandshakeError),
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::Connect(e) if e.kind() == io::ErrorKind::TimedOut => {
                f.write_str("no answer in time")
            }
            OpenError::Connect(e) => write!(f, "{e}"),
            OpenError::Handshake(e) => write!(f, "{e}"),
        }
    }
}

/// Connects to `address` and negotiates export `name`, all within `timeout`; the socket is
/// left blocking, without timeouts, in the transmission phase.
pub(crate) fn open(
    address: &NbdAddress,
    name: &str,
    timeout: Duration,
) -> Result<(Socket, Export), OpenError> {
    let deadline = Instant::now() + timeout;
    let socket = connect(address, deadline).map_err(OpenError::Connect)?;
    let mut timed = Timed {
        socket: &socket,
        deadline,
    };
    let export = handshake::negotiate(&mut timed, name).map_err(OpenError::Handshake)?;
    socket
        .set_timeouts(None)
        .map_err(|e| OpenError::Handshake(HandshakeError::Io(e)))?;
    Ok((socket, export))
}

fn connect(address: &NbdAddress, deadline: Instant) -> io::Result<Socket> {
    match address {
        NbdAddress::Unix(path) => UnixStream::connect(path).map(Socket::Unix),
        NbdAddress::Tcp { host, port } => {
            let mut last =
                io::Error::new(io::ErrorKind::NotFound, format!("{host} has no address"));
            for addr in (host.as_str(), *port).to_socket_addrs()? {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(io::ErrorKind::TimedOut.into());
                }
                match TcpStream::connect_timeout(&addr, left) {
                    Ok(stream) => {
                        // Replies are small and requests pipelined: Nagle's algorithm only
                        // delays them (the protocol asks for TCP_NODELAY).
                        stream.set_nodelay(true)?;
                        return Ok(Socket::Tcp(stream));
                    }
                    Err(e) => last = e,
                }
            }
            Err(last)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_display_as_users_write_them() {
        let tcp = |host: &str| NbdAddress::Tcp {
            host: host.into(),
            port: 10809,
        };
        assert_eq!(tcp("nas").to_string(), "nas:10809");
        assert_eq!(tcp("::1").to_string(), "[::1]:10809");
        assert_eq!(
            NbdAddress::Unix("/run/nbd.sock".into()).to_string(),
            "unix:/run/nbd.sock"
        );
    }

    #[test]
    fn a_silent_server_times_out() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let address = NbdAddress::Tcp {
            host: "127.0.0.1".into(),
            port,
        };
        // Accepted by the kernel's backlog, never spoken to.
        let started = Instant::now();
        let err = open(&address, "", Duration::from_millis(300)).expect_err("no greeting");
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(err.to_string().contains("in time"), "{err}");
        drop(listener);
        let err = open(&address, "", Duration::from_secs(1)).expect_err("nobody listens");
        assert!(matches!(err, OpenError::Connect(_)), "{err}");
    }
}
