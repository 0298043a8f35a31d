//! Who holds a block device: where it is mounted, which processes have it open, which kernel
//! devices (device mapper, md) are built on it. For `ublk del` to refuse a device in use, and to
//! say by whom.
//!
//! What this sees: mounts of this mount namespace, open file descriptors of every process in
//! this PID namespace, and the holders sysfs lists; for the device and each of its partitions.
//! What it cannot see: a process in another PID namespace, and one that opens the device after
//! the look (the kernel's TRY_STOP_DEV, Linux 7.0, closes that gap).

use std::fs;
use std::path::Path;

/// What holds device `/dev/ublkb<id>` (or one of its partitions), one phrase each; empty if
/// nothing does.
pub fn of(id: u32) -> Vec<String> {
    let disk = format!("ublkb{id}");
    let sys = Path::new("/sys/block").join(&disk);
    // The disk and its partitions: their names and major:minor numbers.
    let mut parts = vec![(disk.clone(), read_trim(&sys.join("dev")))];
    if let Ok(entries) = fs::read_dir(&sys) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(&disk) {
                parts.push((name.clone(), read_trim(&entry.path().join("dev"))));
            }
        }
    }
    let mut found = Vec::new();
    if let Ok(mounts) = fs::read_to_string("/proc/self/mountinfo") {
        found.extend(mounted(&mounts, &parts));
    }
    for (name, _) in &parts {
        let holders = if *name == disk {
            sys.join("holders")
        } else {
            sys.join(name).join("holders")
        };
        if let Ok(entries) = fs::read_dir(holders) {
            for entry in entries.flatten() {
                found.push(format!(
                    "{name} is held by {}",
                    entry.file_name().to_string_lossy()
                ));
            }
        }
    }
    found.extend(opened_by(&parts));
    found
}

fn read_trim(path: &Path) -> String {
    fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// The mounts in `mountinfo` (the kernel's format) of the devices `parts` (name, major:minor).
fn mounted(mountinfo: &str, parts: &[(String, String)]) -> Vec<String> {
    let mut found = Vec::new();
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let (Some(dev), Some(point)) = (fields.get(2), fields.get(4)) else {
            continue;
        };
        // After the optional fields, "-" then the file system type.
        let fstype = fields
            .iter()
            .position(|f| *f == "-")
            .and_then(|i| fields.get(i + 1))
            .unwrap_or(&"?");
        if let Some((name, _)) = parts.iter().find(|(_, d)| !d.is_empty() && d == dev) {
            found.push(format!(
                "{name} is mounted at {} ({fstype})",
                unescape(point)
            ));
        }
    }
    found
}

/// mountinfo escapes spaces and the like as `\ooo`.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && let Ok(byte) = u8::from_str_radix(&field[i + 1..i + 4], 8)
        {
            out.push(byte);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The processes with one of `parts` open.
fn opened_by(parts: &[(String, String)]) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(procs) = fs::read_dir("/proc") else {
        return found;
    };
    for proc in procs.flatten() {
        let pid = proc.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(fds) = fs::read_dir(proc.path().join("fd")) else {
            continue;
        };
        let held = fds.flatten().find_map(|fd| {
            let target = fs::read_link(fd.path()).ok()?;
            let name = target.strip_prefix("/dev").ok()?.to_str()?.to_owned();
            parts.iter().any(|(p, _)| *p == name).then_some(name)
        });
        if let Some(name) = held {
            let comm = read_trim(&proc.path().join("comm"));
            found.push(format!("{name} is open in pid {pid} ({comm})"));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_are_found_by_device_number_with_their_type() {
        let info = "22 1 259:0 / / rw,relatime shared:1 - ext4 /dev/nvme0n1 rw\n\
                    40 22 252:1 / /mnt/my\\040disk rw shared:2 - xfs /dev/ublkb3p1 rw\n\
                    41 22 252:0 / /srv rw - ext4 /dev/ublkb3 rw\n";
        let parts = vec![
            ("ublkb3".to_owned(), "252:0".to_owned()),
            ("ublkb3p1".to_owned(), "252:1".to_owned()),
        ];
        assert_eq!(
            mounted(info, &parts),
            [
                "ublkb3p1 is mounted at /mnt/my disk (xfs)",
                "ublkb3 is mounted at /srv (ext4)"
            ]
        );
        assert!(mounted(info, &[("ublkb9".to_owned(), String::new())]).is_empty());
    }

    #[test]
    fn a_device_nobody_holds_has_no_holders() {
        assert!(of(1_048_575).is_empty());
    }
}
