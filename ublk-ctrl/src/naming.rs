//! Where a device's files live, which devices exist, and which kernel brought which feature.

use std::io;

/// `/dev/ublkcN`: the char device a server opens for I/O commands.
pub fn char_dev_path(dev_id: u32) -> String {
    format!("/dev/ublkc{dev_id}")
}

/// `/dev/ublkbN`: the block device users see once the device is started.
pub fn block_dev_path(dev_id: u32) -> String {
    format!("/dev/ublkb{dev_id}")
}

/// The ids of every ublk device that exists now, ascending, read from the `ublk-char` class in sysfs.
pub fn dev_ids() -> io::Result<Vec<u32>> {
    let dir = match std::fs::read_dir("/sys/class/ublk-char") {
        Ok(dir) => dir,
        // No class directory: the driver is not loaded, so there are no devices.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut ids = Vec::new();
    for entry in dir {
        let name = entry?.file_name();
        if let Some(id) = name
            .to_str()
            .and_then(|n| n.strip_prefix("ublkc"))
            .and_then(|n| n.parse().ok())
        {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_follow_the_driver_names() {
        assert_eq!(char_dev_path(3), "/dev/ublkc3");
        assert_eq!(block_dev_path(12), "/dev/ublkb12");
    }
}
