//! A serving process's control socket, `/run/ublk/ID.sock`: how other `ublk` commands ask the
//! server of device ID to act on it (resize it, hand it over to a new server) or for its
//! figures (`ublk stats`). One JSON request per connection, one JSON reply. The socket is the server's own (mode 0600, root only) and is
//! removed when it stops.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::CliError;
use crate::sample::Sample;

/// What a client asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Resize the device (and its store) to `bytes`; shrinking below written data needs `force`.
    Resize { bytes: u64, force: bool },
    /// Leave the device to a new server (`ublk restart`): the server stops serving without
    /// deleting it, and exits.
    HandOver,
    /// The device's figures now (`ublk stats`).
    Stats,
}

/// The server's answer: `Ok` with a message for the user, the figures asked for, or the error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    Ok(String),
    Stats(Box<Sample>),
    Error(String),
}

/// The longest request line a server reads; a request is a few dozen bytes.
const MAX_REQUEST: u64 = 4096;

/// How long either side waits for the other.
const IO_TIMEOUT: Duration = Duration::from_secs(60);

/// The socket of device `id` under `dir`.
pub fn path_in(dir: &Path, id: u32) -> PathBuf {
    dir.join(format!("{id}.sock"))
}

/// Listens on device `id`'s socket under `dir` (replacing a stale one: the kernel just gave this
/// server the device) and answers each request with `handle`, on a thread of its own.
pub fn serve(
    dir: &Path,
    id: u32,
    handle: impl Fn(Request) -> Reply + Send + 'static,
) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = path_in(dir, id);
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    std::thread::Builder::new()
        .name("ublk-socket".into())
        .spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let _ = answer(stream, &handle);
            }
        })?;
    Ok(path)
}

fn answer(stream: UnixStream, handle: &impl Fn(Request) -> Reply) -> std::io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut line = String::new();
    BufReader::new((&stream).take(MAX_REQUEST)).read_line(&mut line)?;
    let reply = match serde_json::from_str::<Request>(&line) {
        Ok(request) => handle(request),
        Err(e) => Reply::Error(format!("a request this server does not understand: {e}")),
    };
    let mut text = serde_json::to_string(&reply).unwrap_or_default();
    text.push('\n');
    (&stream).write_all(text.as_bytes())
}

/// Sends `request` to the server of device `id` and returns its answer.
pub fn ask(dir: &Path, id: u32, request: &Request, wait: Duration) -> Result<String, CliError> {
    let path = path_in(dir, id);
    let stream = UnixStream::connect(&path).map_err(|e| {
        CliError::Msg(format!(
            "cannot reach the server of device {id} at {} ({e}): is it served by `ublk add` of \
             this version, and running?",
            path.display()
        ))
    })?;
    match exchange(&stream, id, request, wait)? {
        Reply::Ok(message) => Ok(message),
        Reply::Error(message) => Err(CliError::Msg(message)),
        Reply::Stats(_) => Err(CliError::Msg(format!(
            "the server of device {id} answered with figures nobody asked for"
        ))),
    }
}

/// Asks the server of device `id`, on the socket `stream` already reached, for its figures.
pub fn ask_stats(stream: &UnixStream, id: u32, wait: Duration) -> Result<Sample, CliError> {
    match exchange(stream, id, &Request::Stats, wait)? {
        Reply::Stats(sample) => Ok(*sample),
        Reply::Error(message) => Err(CliError::Msg(message)),
        Reply::Ok(message) => Err(CliError::Msg(format!(
            "the server of device {id} answered `{message}` instead of its figures"
        ))),
    }
}

/// Sends `request` on `stream` and reads the reply.
fn exchange(
    stream: &UnixStream,
    id: u32,
    request: &Request,
    wait: Duration,
) -> Result<Reply, CliError> {
    let io = |e| CliError::io(format!("talking to the server of device {id}"), e);
    stream.set_read_timeout(Some(wait)).map_err(io)?;
    stream.set_write_timeout(Some(IO_TIMEOUT)).map_err(io)?;
    let mut text = serde_json::to_string(request).unwrap_or_default();
    text.push('\n');
    (&*stream).write_all(text.as_bytes()).map_err(io)?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).map_err(io)?;
    match serde_json::from_str::<Reply>(&line) {
        Ok(reply) => Ok(reply),
        Err(_) if line.is_empty() => Err(CliError::Msg(format!(
            "the server of device {id} closed the connection without an answer"
        ))),
        Err(e) => Err(CliError::Msg(format!(
            "the server of device {id} answered something else ({e})"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_gets_its_answer() {
        let dir = std::env::temp_dir().join(format!("ublk-socket-test-{}", std::process::id()));
        let path = serve(&dir, 7, |request| match request {
            Request::Resize { bytes, force } => Reply::Ok(format!("{bytes} {force}")),
            Request::HandOver => Reply::Error("not now".into()),
            Request::Stats => Reply::Stats(Box::new(Sample {
                device: 7,
                uptime_secs: 2.0,
                queues: vec![],
            })),
        })
        .expect("listening");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "root only");
        let wait = Duration::from_secs(5);
        let resize = Request::Resize {
            bytes: 4096,
            force: true,
        };
        assert_eq!(ask(&dir, 7, &resize, wait).unwrap(), "4096 true");
        let err = ask(&dir, 7, &Request::HandOver, wait).unwrap_err();
        assert_eq!(err.to_string(), "not now");
        let stream = UnixStream::connect(path_in(&dir, 7)).unwrap();
        assert_eq!(ask_stats(&stream, 7, wait).unwrap().uptime_secs, 2.0);
        let err = ask(&dir, 7, &Request::Stats, wait).unwrap_err();
        assert!(err.to_string().contains("nobody asked for"), "{err}");
        let err = ask(&dir, 8, &Request::HandOver, wait).unwrap_err();
        assert!(
            err.to_string()
                .contains("cannot reach the server of device 8"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn requests_are_plain_json() {
        let text = serde_json::to_string(&Request::Resize {
            bytes: 1,
            force: false,
        })
        .unwrap();
        assert_eq!(text, r#"{"op":"resize","bytes":1,"force":false}"#);
        assert!(serde_json::from_str::<Request>(r#"{"op":"format_disk"}"#).is_err());
    }
}
