//! `ublk list`: every ublk device, as the kernel describes it, with the target its record names.

use std::path::Path;

use ublk_ctrl::{Control, Error as CtrlError};
use ublk_uapi::{DevInfo, DevState};

use crate::error::CliError;
use crate::record::{RECORD_DIR, Record};
use crate::size::format_size;

/// One row of the listing; `--json` prints these fields, in this order.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Row {
    pub id: u32,
    pub state: &'static str,
    pub size: u64,
    pub queues: u16,
    pub depth: u16,
    /// The server's pid; `None` (JSON `null`) when the kernel names none.
    pub pid: Option<i32>,
    pub target: String,
    /// An NBD device's server (`host:port` or `unix:PATH`); `None` for other targets.
    pub server: Option<String>,
    /// An NBD device's export (empty: the server's default); `None` for other targets.
    pub export: Option<String>,
    /// How request data moves (`ublk_queue::BufferMode`).
    pub buffer_mode: &'static str,
    /// How the queues fetch and commit (`ublk_queue::CommandMode`).
    pub commands: &'static str,
    pub block_device: String,
    pub features: Vec<&'static str>,
}

/// Prints the devices as a table, or as JSON.
pub fn run(json: bool) -> Result<(), CliError> {
    let ids = ublk_ctrl::dev_ids().map_err(|e| CliError::io("listing ublk devices", e))?;
    let record_dir = Path::new(RECORD_DIR);
    // Records of devices that are gone are stale: drop them rather than show them.
    if let Err(e) = Record::remove_stale_in(record_dir, &ids) {
        log::debug!("cleaning stale records: {e}");
    }
    let mut rows = Vec::new();
    if !ids.is_empty() {
        let mut ctrl = Control::open()?;
        for id in ids {
            let info = match ctrl.dev_info(id) {
                Ok(info) => info,
                // Deleted between the directory scan and now.
                Err(CtrlError::NoSuchDevice { .. }) => continue,
                Err(e) => return Err(e.into()),
            };
            let size = ctrl
                .params(id)
                .map(|p| p.basic.dev_sectors << 9)
                .unwrap_or(0);
            let record = Record::load_in(record_dir, id).ok().flatten();
            let mut row = row(
                &info,
                size,
                record.as_ref().map_or("-", |r| &r.target).to_owned(),
            );
            if let Some(target) = record
                .as_ref()
                .and_then(|r| crate::recover::parse_target(r).ok())
            {
                (row.server, row.export) = target.server().unzip();
            }
            rows.push(row);
        }
    }
    if json {
        println!("{}", to_json(&rows));
    } else {
        print!("{}", to_table(&rows));
    }
    Ok(())
}

fn row(info: &DevInfo, size: u64, target: String) -> Row {
    Row {
        id: info.dev_id,
        state: state_name(info.state),
        size,
        queues: info.nr_hw_queues,
        depth: info.queue_depth,
        pid: (info.ublksrv_pid > 0).then_some(info.ublksrv_pid),
        target,
        server: None,
        export: None,
        buffer_mode: ublk_queue::BufferMode::of(info.features()).name(),
        commands: ublk_queue::CommandMode::of(info.features()).name(),
        block_device: ublk_ctrl::block_dev_path(info.dev_id),
        features: info.features().iter_names().map(|(name, _)| name).collect(),
    }
}

/// The kernel's name for a device state.
pub fn state_name(state: u16) -> &'static str {
    match DevState::try_from(state) {
        Ok(DevState::Dead) => "DEAD",
        Ok(DevState::Live) => "LIVE",
        Ok(DevState::Quiesced) => "QUIESCED",
        Ok(DevState::FailIo) => "FAIL_IO",
        Ok(_) | Err(_) => "UNKNOWN",
    }
}

fn to_table(rows: &[Row]) -> String {
    let mut out = format!(
        "{:<4} {:<9} {:>6} {:>6} {:>5} {:>8} {:<7} {:<13} {:<8} {}\n",
        "ID",
        "STATE",
        "SIZE",
        "QUEUES",
        "DEPTH",
        "PID",
        "TARGET",
        "BUFFERS",
        "COMMANDS",
        "FEATURES"
    );
    for r in rows {
        let pid = r.pid.map_or_else(|| "-".to_owned(), |p| p.to_string());
        let target = match (&r.server, &r.export) {
            (Some(server), Some(export)) if export.is_empty() => format!("{} {server}", r.target),
            (Some(server), Some(export)) => format!("{} {server} export {export:?}", r.target),
            _ => r.target.clone(),
        };
        out.push_str(&format!(
            "{:<4} {:<9} {:>6} {:>6} {:>5} {:>8} {:<7} {:<13} {:<8} {}\n",
            r.id,
            r.state,
            format_size(r.size),
            r.queues,
            r.depth,
            pid,
            target,
            r.buffer_mode,
            r.commands,
            r.features.join(",")
        ));
    }
    out
}

fn to_json(rows: &[Row]) -> String {
    // Plain strings and numbers: serializing them cannot fail.
    serde_json::to_string(rows).unwrap_or_else(|_| "[]".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Row {
        Row {
            id: 3,
            state: "LIVE",
            size: 1 << 30,
            queues: 2,
            depth: 128,
            pid: Some(77),
            target: "mem".into(),
            server: None,
            export: None,
            buffer_mode: "copy",
            commands: "per-tag",
            block_device: "/dev/ublkb3".into(),
            features: vec!["URING_CMD_COMP_IN_TASK", "CMD_IOCTL_ENCODE"],
        }
    }

    #[test]
    fn table_has_a_header_and_one_line_per_device() {
        let table = to_table(&[sample()]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("ID   STATE"));
        assert!(lines[1].contains("LIVE") && lines[1].contains("1G") && lines[1].contains("mem"));
        assert!(lines[1].contains("URING_CMD_COMP_IN_TASK,CMD_IOCTL_ENCODE"));
    }

    #[test]
    fn json_is_exact() {
        let mut r = sample();
        r.pid = None;
        r.target = "a\"b".into();
        assert_eq!(
            to_json(&[r]),
            "[{\"id\":3,\"state\":\"LIVE\",\"size\":1073741824,\"queues\":2,\"depth\":128,\"pid\":null,\
             \"target\":\"a\\\"b\",\"server\":null,\"export\":null,\"buffer_mode\":\"copy\",\"commands\":\"per-tag\",\"block_device\":\"/dev/ublkb3\",\"features\":[\"URING_CMD_COMP_IN_TASK\",\
             \"CMD_IOCTL_ENCODE\"]}]"
        );
        assert_eq!(to_json(&[]), "[]");
    }

    #[test]
    fn an_nbd_device_shows_its_server_and_export() {
        let mut r = sample();
        r.target = "nbd".into();
        r.server = Some("nas:10809".into());
        r.export = Some("disk0".into());
        let table = to_table(&[r.clone()]);
        assert!(table.contains("nbd nas:10809 export \"disk0\""), "{table}");
        assert!(to_json(&[r]).contains("\"server\":\"nas:10809\",\"export\":\"disk0\""));
    }

    #[test]
    fn states_use_the_kernel_names() {
        assert_eq!(state_name(0), "DEAD");
        assert_eq!(state_name(1), "LIVE");
        assert_eq!(state_name(2), "QUIESCED");
        assert_eq!(state_name(3), "FAIL_IO");
        assert_eq!(state_name(9), "UNKNOWN");
    }
}
