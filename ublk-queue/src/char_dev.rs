//! Opening `/dev/ublkcN`, the char device a server drives a device's queues through.

use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

use crate::error::{Error, Result};

/// The longest pause between two attempts to open a node that has not appeared yet.
const MAX_BACKOFF: Duration = Duration::from_millis(50);

/// Opens device `dev_id`'s char device, waiting until `deadline` for its node to appear.
///
/// ADD_DEV creates the device, but the node in /dev is made by devtmpfs or udev, possibly a moment
/// later. Without udev there is no event to wait on, so this polls the path with a short, bounded
/// backoff until the deadline; any other error returns at once (EBUSY: another server has it: the
/// driver allows one opener, `ublk_ch_open`).
pub(crate) fn open(dev_id: u32, deadline: Instant) -> Result<OwnedFd> {
    let path = ublk_ctrl::char_dev_path(dev_id);
    let mut backoff = Duration::from_millis(1);
    loop {
        match rustix::fs::open(path.as_str(), OFlags::RDWR | OFlags::CLOEXEC, Mode::empty()) {
            Ok(fd) => return Ok(fd),
            Err(Errno::NOENT) if Instant::now() + backoff < deadline => {
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            Err(source) => return Err(Error::OpenCharDev { path, source }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_node_fails_once_the_deadline_passes() {
        // No ublk device can have this id (ids are below 2^20).
        let start = Instant::now();
        let err = open(u32::MAX - 1, start + Duration::from_millis(20)).expect_err("no such node");
        assert!(
            matches!(
                err,
                Error::OpenCharDev {
                    source: Errno::NOENT,
                    ..
                }
            ),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains(&format!("/dev/ublkc{}", u32::MAX - 1))
        );
        assert!(start.elapsed() < Duration::from_secs(2));
    }
}
