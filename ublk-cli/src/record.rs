//! What a running server leaves under `/run/ublk/`: one record per device, so `ublk list` can say which
//! target serves it, and `ublk recover` can start a new server the same way after a crash.
//!
//! A record is one JSON object, written atomically (a temporary file, then rename) once the device is
//! live, and removed by the server that wrote it when it deletes the device. It keeps the `ublk add`
//! arguments as given (an argument that is not UTF-8 is kept as its bytes, never dropped), and the
//! identity of each backing store (a loop device's one, a stripe's in order), so that recovery
//! serves those stores or nothing.
//! Records of devices that no longer exist are stale: they are removed when seen, never trusted.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use ublk_targets::{BackingIdentity, BackingKind};

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
    pub args: Vec<OsString>,
    /// The server's pid.
    pub pid: i32,
    /// The directory `ublk add` ran in, against which relative paths in `args` resolve.
    pub cwd: Option<PathBuf>,
    /// The backing stores, as they were when the device was made, in the order the arguments
    /// name them: a loop device's one, a stripe's; none for null and mem.
    pub backing: Vec<BackingIdentity>,
}

/// The record as stored.
#[derive(Serialize, Deserialize)]
struct Stored {
    dev_id: u32,
    target: String,
    pid: i32,
    args: Vec<Text>,
    cwd: Option<Text>,
    #[serde(default)]
    backing: Backings,
}

/// The backing stores as stored: a list; records written before stripes hold one store or null.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Backings {
    Many(Vec<StoredBacking>),
    One(Option<StoredBacking>),
}

impl Default for Backings {
    fn default() -> Self {
        Backings::Many(Vec::new())
    }
}

/// A string that may not be UTF-8: a JSON string when it is, its bytes when it is not.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Text {
    Utf8(String),
    Bytes { bytes: Vec<u8> },
}

impl From<&std::ffi::OsStr> for Text {
    fn from(s: &std::ffi::OsStr) -> Self {
        match s.to_str() {
            Some(utf8) => Text::Utf8(utf8.to_owned()),
            None => Text::Bytes {
                bytes: s.as_bytes().to_vec(),
            },
        }
    }
}

impl From<Text> for OsString {
    fn from(t: Text) -> Self {
        match t {
            Text::Utf8(s) => s.into(),
            Text::Bytes { bytes } => OsString::from_vec(bytes),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct StoredBacking {
    kind: StoredKind,
    dev: u64,
    ino: u64,
    rdev: u64,
    size: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum StoredKind {
    File,
    BlockDevice,
}

impl Record {
    /// The record's path for device `dev_id` under `dir`.
    pub fn path_in(dir: &Path, dev_id: u32) -> PathBuf {
        dir.join(format!("{dev_id}.rec"))
    }

    fn to_json(&self) -> String {
        let stored = Stored {
            dev_id: self.dev_id,
            target: self.target.clone(),
            pid: self.pid,
            args: self
                .args
                .iter()
                .map(|a| Text::from(a.as_os_str()))
                .collect(),
            cwd: self.cwd.as_deref().map(|c| Text::from(c.as_os_str())),
            backing: Backings::Many(
                self.backing
                    .iter()
                    .map(|b| StoredBacking {
                        kind: match b.kind {
                            BackingKind::File => StoredKind::File,
                            BackingKind::BlockDevice => StoredKind::BlockDevice,
                        },
                        dev: b.dev,
                        ino: b.ino,
                        rdev: b.rdev,
                        size: b.size,
                    })
                    .collect(),
            ),
        };
        // Numbers, strings and byte lists: serializing them cannot fail.
        serde_json::to_string_pretty(&stored).unwrap_or_default()
    }

    fn from_json(text: &str) -> Option<Record> {
        let stored: Stored = serde_json::from_str(text).ok()?;
        Some(Record {
            dev_id: stored.dev_id,
            target: stored.target,
            args: stored.args.into_iter().map(OsString::from).collect(),
            pid: stored.pid,
            cwd: stored.cwd.map(|c| OsString::from(c).into()),
            backing: match stored.backing {
                Backings::Many(list) => list,
                Backings::One(one) => one.into_iter().collect(),
            }
            .into_iter()
            .map(|b| BackingIdentity {
                kind: match b.kind {
                    StoredKind::File => BackingKind::File,
                    StoredKind::BlockDevice => BackingKind::BlockDevice,
                },
                dev: b.dev,
                ino: b.ino,
                rdev: b.rdev,
                size: b.size,
            })
            .collect(),
        })
    }

    /// Writes the record under `dir` atomically.
    pub fn save_in(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)?;
        let tmp = dir.join(format!(".{}.rec.{}", self.dev_id, std::process::id()));
        fs::write(&tmp, self.to_json())?;
        fs::rename(&tmp, Self::path_in(dir, self.dev_id))
    }

    /// Reads device `dev_id`'s record under `dir`, if there is one.
    pub fn load_in(dir: &Path, dev_id: u32) -> io::Result<Option<Record>> {
        let text = match fs::read_to_string(Self::path_in(dir, dev_id)) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        Self::from_json(&text).map(Some).ok_or_else(|| {
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

    fn record(dev_id: u32) -> Record {
        Record {
            dev_id,
            target: "null".into(),
            args: vec![],
            pid: 1,
            cwd: None,
            backing: Vec::new(),
        }
    }

    #[test]
    fn saves_loads_and_removes() {
        let dir = scratch_dir("roundtrip");
        let record = Record {
            dev_id: 3,
            target: "loop".into(),
            // A newline, an `=`, and bytes that are not UTF-8 come back as they were.
            args: vec![
                "--file".into(),
                OsString::from_vec(b"/srv/disk\n\xff.img".to_vec()),
                "a=b".into(),
            ],
            pid: 42,
            cwd: Some(PathBuf::from(OsString::from_vec(b"/srv/\xfe".to_vec()))),
            backing: vec![
                BackingIdentity {
                    kind: BackingKind::File,
                    dev: 2049,
                    ino: 77,
                    rdev: 0,
                    size: 1 << 30,
                },
                BackingIdentity {
                    kind: BackingKind::BlockDevice,
                    dev: 0,
                    ino: 0,
                    rdev: 0x0700,
                    size: 1 << 20,
                },
            ],
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
    fn a_server_removes_only_its_own_record() {
        let dir = scratch_dir("own");
        record(5).save_in(&dir).unwrap();
        Record::remove_own_in(&dir, 5, 99).unwrap();
        assert!(
            Record::load_in(&dir, 5).unwrap().is_some(),
            "pid 1 wrote it"
        );
        Record::remove_own_in(&dir, 5, 1).unwrap();
        assert!(Record::load_in(&dir, 5).unwrap().is_none());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn stale_records_are_removed_and_live_ones_kept() {
        let dir = scratch_dir("stale");
        for id in [1, 2, 5] {
            record(id).save_in(&dir).unwrap();
        }
        assert_eq!(Record::remove_stale_in(&dir, &[2]).unwrap(), vec![1, 5]);
        assert!(Record::load_in(&dir, 2).unwrap().is_some());
        assert!(Record::load_in(&dir, 1).unwrap().is_none());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn records_with_one_store_or_none_still_load() {
        let base = r#""dev_id":7,"target":"loop","pid":3,"args":[],"cwd":null"#;
        let one = format!(
            r#"{{{base},"backing":{{"kind":"file","dev":1,"ino":2,"rdev":0,"size":4096}}}}"#
        );
        let loaded = Record::from_json(&one).expect("a record with one store");
        assert_eq!(loaded.backing.len(), 1);
        assert_eq!((loaded.backing[0].ino, loaded.backing[0].size), (2, 4096));
        for none in [
            format!(r#"{{{base},"backing":null}}"#),
            format!("{{{base}}}"),
        ] {
            let loaded = Record::from_json(&none).expect("a record without stores");
            assert!(loaded.backing.is_empty(), "{none}");
        }
    }

    #[test]
    fn a_malformed_record_is_an_error_not_a_guess() {
        let dir = scratch_dir("malformed");
        fs::create_dir_all(&dir).unwrap();
        for text in ["target=mem\n", "{\"dev_id\":9}", "{\"dev_id\":\"x\"}", ""] {
            fs::write(Record::path_in(&dir, 9), text).unwrap();
            assert_eq!(
                Record::load_in(&dir, 9).unwrap_err().kind(),
                io::ErrorKind::InvalidData,
                "{text:?}"
            );
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    proptest::proptest! {
        /// A record file holding anything loads as a record or as InvalidData, never a panic.
        #[test]
        fn any_file_content_is_a_record_or_refused(text in "\\PC{0,200}") {
            let _ = Record::from_json(&text);
        }

        /// Whatever bytes the arguments hold (newlines, `=`, invalid UTF-8), they come back.
        #[test]
        fn any_arguments_round_trip(
            args in proptest::collection::vec(proptest::collection::vec(1u8.., 0..40), 0..8),
            dev_id: u32,
            pid: i32,
        ) {
            let record = Record {
                dev_id,
                target: "loop".into(),
                args: args.into_iter().map(OsString::from_vec).collect(),
                pid,
                cwd: None,
                backing: Vec::new(),
            };
            proptest::prop_assert_eq!(Record::from_json(&record.to_json()), Some(record));
        }
    }
}
