//! What a running server leaves under `/run/ublk/`: one record per device, so `ublk list` can say which
//! target serves it, and `ublk recover` can start a new server the same way after a crash.
//!
//! A record is plain `key=value` lines (one `arg=` line per argument, in order). It is written atomically
//! (a temporary file, then rename) once the device is live, and removed when the server deletes the device.
//! Records of devices that no longer exist are stale: they are removed when seen, never trusted.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Where records live: tmpfs, so they vanish with the devices at reboot.
pub const RECORD_DIR: &str = "/run/ublk";

/// How one device's server was started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The device id.
    pub dev_id: u32,
    /// The target's name (`null`, `mem`, ...).
    pub target: String,
    /// The `ublk add` arguments after the target name, as given.
    pub args: Vec<String>,
    /// The server's pid.
    pub pid: i32,
    /// The directory `ublk add` ran in, against which relative paths in `args` resolve.
    pub cwd: Option<PathBuf>,
}

impl Record {
    /// The record's path for device `dev_id` under `dir`.
    pub fn path_in(dir: &Path, dev_id: u32) -> PathBuf {
        dir.join(format!("{dev_id}.rec"))
    }

    /// Writes the record under `dir` atomically.
    pub fn save_in(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)?;
        let mut text = format!(
            "dev_id={}\ntarget={}\npid={}\n",
            self.dev_id, self.target, self.pid
        );
        if let Some(cwd) = self.cwd.as_ref().and_then(|c| c.to_str()) {
            text.push_str("cwd=");
            text.push_str(cwd);
            text.push('\n');
        }
        for arg in &self.args {
            text.push_str("arg=");
            text.push_str(arg);
            text.push('\n');
        }
        let tmp = dir.join(format!(".{}.rec.{}", self.dev_id, std::process::id()));
        fs::write(&tmp, text)?;
        fs::rename(&tmp, Self::path_in(dir, self.dev_id))
    }

    /// Reads device `dev_id`'s record under `dir`, if there is one.
    pub fn load_in(dir: &Path, dev_id: u32) -> io::Result<Option<Record>> {
        let text = match fs::read_to_string(Self::path_in(dir, dev_id)) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        Self::parse(&text).map(Some).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("malformed record for device {dev_id}"),
            )
        })
    }

    /// Removes device `dev_id`'s record under `dir`; a missing record is fine.
    pub fn remove_in(dir: &Path, dev_id: u32) -> io::Result<()> {
        match fs::remove_file(Self::path_in(dir, dev_id)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Removes device `dev_id`'s record under `dir` if server `pid` wrote it: a server removes
    /// its own record, never the one a newer server (after `ublk recover`) wrote for the id.
    pub fn remove_own_in(dir: &Path, dev_id: u32, pid: i32) -> io::Result<()> {
        match Self::load_in(dir, dev_id) {
            Ok(Some(record)) if record.pid == pid => Self::remove_in(dir, dev_id),
            Ok(_) => Ok(()),
            // A record we cannot read is not known to be ours.
            Err(e) => Err(e),
        }
    }

    /// Removes the records under `dir` whose device is not in `live_ids`; returns the ids removed.
    pub fn remove_stale_in(dir: &Path, live_ids: &[u32]) -> io::Result<Vec<u32>> {
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut removed = Vec::new();
        for entry in entries {
            let name = entry?.file_name();
            let Some(id) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".rec"))
                .and_then(|n| n.parse().ok())
            else {
                continue;
            };
            if !live_ids.contains(&id) {
                Self::remove_in(dir, id)?;
                removed.push(id);
            }
        }
        removed.sort_unstable();
        Ok(removed)
    }

    fn parse(text: &str) -> Option<Record> {
        let (mut dev_id, mut target, mut pid, mut args) = (None, None, None, Vec::new());
        let mut cwd = None;
        for line in text.lines() {
            let (key, value) = line.split_once('=')?;
            match key {
                "dev_id" => dev_id = value.parse().ok(),
                "target" => target = Some(value.to_owned()),
                "pid" => pid = value.parse().ok(),
                "arg" => args.push(value.to_owned()),
                "cwd" => cwd = Some(PathBuf::from(value)),
                // Keys a newer version may add are not an error.
                _ => {}
            }
        }
        Some(Record {
            dev_id: dev_id?,
            target: target?,
            args,
            pid: pid?,
            cwd,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("ublk-record-test-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn saves_loads_and_removes() {
        let dir = scratch_dir("roundtrip");
        let record = Record {
            dev_id: 3,
            target: "mem".into(),
            args: vec!["--size".into(), "1G".into(), "a=b".into()],
            pid: 42,
            cwd: Some(PathBuf::from("/srv/disks")),
        };
        record.save_in(&dir).unwrap();
        assert_eq!(Record::load_in(&dir, 3).unwrap(), Some(record));
        assert_eq!(Record::load_in(&dir, 4).unwrap(), None);
        Record::remove_in(&dir, 3).unwrap();
        Record::remove_in(&dir, 3).unwrap();
        assert_eq!(Record::load_in(&dir, 3).unwrap(), None);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn stale_records_are_removed_and_live_ones_kept() {
        let dir = scratch_dir("stale");
        for id in [1, 2, 5] {
            Record {
                dev_id: id,
                target: "null".into(),
                args: vec![],
                pid: 1,
                cwd: None,
            }
            .save_in(&dir)
            .unwrap();
        }
        assert_eq!(Record::remove_stale_in(&dir, &[2]).unwrap(), vec![1, 5]);
        assert!(Record::load_in(&dir, 2).unwrap().is_some());
        assert!(Record::load_in(&dir, 1).unwrap().is_none());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_malformed_record_is_an_error_not_a_guess() {
        let dir = scratch_dir("malformed");
        fs::create_dir_all(&dir).unwrap();
        fs::write(Record::path_in(&dir, 9), "target=mem\n").unwrap();
        assert_eq!(
            Record::load_in(&dir, 9).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
