//! Running external commands: echo each one, fail loudly with its command line and stderr.
//!
//! A tiny stand-in for the `xshell` crate (not an allowed dependency here).

use std::ffi::{OsStr, OsString};
use std::io::{BufRead as _, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::Instant;

use crate::error::{Error, Result};

/// One external command, built up then run once.
#[derive(Debug)]
pub struct Cmd {
    inner: Command,
    cmdline: String,
    stdout_to: Option<std::fs::File>,
    show_stderr: bool,
}

impl Cmd {
    pub fn new(program: impl AsRef<OsStr>) -> Cmd {
        let program = program.as_ref();
        Cmd {
            inner: Command::new(program),
            cmdline: quote(program),
            stdout_to: None,
            show_stderr: false,
        }
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Cmd {
        let arg = arg.as_ref();
        self.cmdline.push(' ');
        self.cmdline.push_str(&quote(arg));
        self.inner.arg(arg);
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        for arg in args {
            self = self.arg(arg);
        }
        self
    }

    pub fn env(mut self, key: &str, value: impl AsRef<OsStr>) -> Cmd {
        self.inner.env(key, value);
        self
    }

    pub fn current_dir(mut self, dir: &Path) -> Cmd {
        self.inner.current_dir(dir);
        self
    }

    /// Sends stdout to `file` instead of capturing it (for large outputs such as archives).
    pub fn stdout_to(mut self, file: std::fs::File) -> Cmd {
        self.stdout_to = Some(file);
        self
    }

    /// Lets stderr through to the terminal (live progress, e.g. cargo's) instead of capturing it.
    pub fn show_stderr(mut self) -> Cmd {
        self.show_stderr = true;
        self
    }

    pub fn cmdline(&self) -> &str {
        &self.cmdline
    }

    /// Runs with the terminal's stdin/stdout/stderr; a non-zero exit is an error.
    pub fn run(self) -> Result<()> {
        let cmdline = self.cmdline.clone();
        let status = self.status()?;
        if status.success() {
            Ok(())
        } else {
            Err(Error::Command {
                cmdline,
                status: describe(status),
                stderr: String::new(),
            })
        }
    }

    /// Runs with the terminal's stdio and returns the exit status, whatever it is.
    pub fn status(mut self) -> Result<ExitStatus> {
        echo(&self.cmdline);
        let cmdline = &self.cmdline;
        self.inner.status().map_err(|source| Error::Spawn {
            cmdline: cmdline.clone(),
            source,
        })
    }

    /// Runs capturing stdout (returned) and stderr (shown only in the error).
    pub fn read(self) -> Result<String> {
        self.read_stdin(None)
    }

    /// Like [`Cmd::read`], feeding `stdin` to the command.
    pub fn read_stdin(mut self, stdin: Option<&[u8]>) -> Result<String> {
        echo(&self.cmdline);
        let out = self.output(stdin)?;
        if !out.status.success() {
            return Err(Error::Command {
                cmdline: self.cmdline,
                status: describe(out.status),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        String::from_utf8(out.stdout)
            .map_err(|_| Error::Msg(format!("`{}` printed non-UTF-8 output", self.cmdline)))
    }

    /// Runs quietly (no echo) capturing everything; for probes whose failure is an answer.
    pub fn probe(mut self) -> Result<std::process::Output> {
        self.output(None)
    }

    fn output(&mut self, stdin: Option<&[u8]>) -> Result<std::process::Output> {
        let spawn_err = |source| Error::Spawn {
            cmdline: self.cmdline.clone(),
            source,
        };
        self.inner.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        let stdout = self.stdout_to.take().map_or_else(Stdio::piped, Stdio::from);
        let stderr = if self.show_stderr {
            Stdio::inherit()
        } else {
            Stdio::piped()
        };
        self.inner.stdout(stdout).stderr(stderr);
        let mut child = self.inner.spawn().map_err(spawn_err)?;
        if let Some(input) = stdin {
            use std::io::Write as _;
            // The pipe closes when `pipe` drops, telling the command its input is complete.
            let mut pipe = child.stdin.take().expect("stdin was piped");
            let written = std::thread::scope(|s| {
                s.spawn(move || pipe.write_all(input));
                child.wait_with_output()
            });
            return written.map_err(|source| Error::Spawn {
                cmdline: self.cmdline.clone(),
                source,
            });
        }
        child.wait_with_output().map_err(|source| Error::Spawn {
            cmdline: self.cmdline.clone(),
            source,
        })
    }

    /// Runs with stdout and stderr passed through line by line behind `prefix`, keeping an
    /// unprefixed copy of each; returns them with the exit status, whatever it is.
    pub fn tee(mut self, prefix: &str) -> Result<Teed> {
        echo(&self.cmdline);
        let spawn_err = |cmdline: &str, source| Error::Spawn {
            cmdline: cmdline.to_owned(),
            source,
        };
        let mut child = self
            .inner
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| spawn_err(&self.cmdline, e))?;
        let out = child.stdout.take().expect("stdout was piped");
        let err = child.stderr.take().expect("stderr was piped");
        let (stdout, stderr) = std::thread::scope(|s| {
            let out = s.spawn(|| tee_lines(out, std::io::stdout(), prefix));
            let err = s.spawn(|| tee_lines(err, std::io::stderr(), prefix));
            (
                out.join().unwrap_or_default(),
                err.join().unwrap_or_default(),
            )
        });
        let status = child.wait().map_err(|e| spawn_err(&self.cmdline, e))?;
        Ok(Teed {
            status,
            stdout,
            stderr,
        })
    }

    pub fn into_command(self) -> (Command, String) {
        (self.inner, self.cmdline)
    }
}

/// What [`Cmd::tee`] saw.
#[derive(Debug)]
pub struct Teed {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Copies `from` to `to` line by line behind `prefix`, returning the unprefixed text.
fn tee_lines(from: impl Read, mut to: impl Write, prefix: &str) -> String {
    let mut from = BufReader::new(from);
    let mut kept = Vec::new();
    let mut line = Vec::new();
    while from.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
        let _ = to
            .write_all(prefix.as_bytes())
            .and_then(|()| to.write_all(&line))
            .and_then(|()| to.flush());
        kept.append(&mut line);
    }
    String::from_utf8_lossy(&kept).into_owned()
}

/// Prints the command about to run, shell-style, so a user can rerun it by hand.
pub fn echo(cmdline: &str) {
    eprintln!("$ {cmdline}");
}

/// Prints one progress line for a finished long step, with its duration.
pub fn progress(started: Instant, what: impl std::fmt::Display) {
    progress_after(started.elapsed(), what);
}

/// Like [`progress`], for a duration measured elsewhere.
pub fn progress_after(took: std::time::Duration, what: impl std::fmt::Display) {
    eprintln!("[xtask] {what} ({:.1}s)", took.as_secs_f64());
}

pub fn describe(status: ExitStatus) -> String {
    match status.code() {
        Some(code) => format!("exit status {code}"),
        None => format!("{status}"),
    }
}

/// Quotes one word for a POSIX shell (host echo lines and guest scripts alike).
pub fn quote(word: impl AsRef<OsStr>) -> String {
    let word = word.as_ref().to_string_lossy();
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./=:+,@%".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        return word.into_owned();
    }
    let mut out = String::from("'");
    for c in word.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

/// Looks a program up in `PATH` plus the sbin directories a non-root `PATH` often lacks.
pub fn which(program: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let extra: [OsString; 4] =
        ["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin"].map(OsString::from);
    std::env::split_paths(&path)
        .chain(extra.iter().map(std::path::PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_leaves_plain_words_and_wraps_the_rest() {
        assert_eq!(quote("--test-threads=1"), "--test-threads=1");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), "'it'\\''s'");
        assert_eq!(quote(""), "''");
    }

    #[test]
    fn read_reports_command_line_and_stderr_on_failure() {
        let err = Cmd::new("sh")
            .args(["-c", "echo oops >&2; exit 3"])
            .read()
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("exit status 3"), "{msg}");
        assert!(msg.contains("sh -c 'echo oops >&2; exit 3'"), "{msg}");
        assert!(msg.contains("oops"), "{msg}");
    }

    #[test]
    fn tee_keeps_both_streams_and_the_status() {
        let teed = Cmd::new("sh")
            .args(["-c", "echo out; echo err >&2; exit 4"])
            .tee("| ")
            .unwrap();
        assert_eq!(teed.status.code(), Some(4));
        assert_eq!(teed.stdout, "out\n");
        assert_eq!(teed.stderr, "err\n");
    }

    #[test]
    fn read_stdin_feeds_the_command() {
        let out = Cmd::new("cat").read_stdin(Some(b"hello")).unwrap();
        assert_eq!(out, "hello");
    }
}
