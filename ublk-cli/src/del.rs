//! `ublk del`: stop and delete devices.

use std::path::Path;

use ublk_ctrl::{Control, Error as CtrlError};

use crate::error::CliError;
use crate::record::{RECORD_DIR, Record};

/// Deletes device `id`, or every device with `all`.
pub fn run(id: Option<u32>, all: bool) -> Result<(), CliError> {
    let mut ctrl = Control::open()?;
    let ids = match id {
        Some(id) => vec![id],
        None => {
            debug_assert!(all);
            ublk_ctrl::dev_ids().map_err(|e| CliError::io("listing ublk devices", e))?
        }
    };
    let mut first_error = None;
    for id in ids {
        match delete(&mut ctrl, id) {
            Ok(()) => println!("deleted device {id}"),
            Err(e) if all => {
                eprintln!("ublk: device {id}: {e}");
                first_error.get_or_insert(e);
            }
            Err(e) => return Err(e),
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// STOP_DEV (its server's queues see every command aborted and exit), then DEL_DEV, which waits for the
/// server to let go of `/dev/ublkcN`. Works in any state: a dead or quiesced device is deleted too.
fn delete(ctrl: &mut Control, id: u32) -> Result<(), CliError> {
    ctrl.stop_dev(id)?;
    // Not waiting for openers of /dev/ublkbN: one that never closes would stall `del` until the
    // deadline; the id is freed when it does.
    match ctrl.del_dev_nowait(id) {
        // Its server deletes the device itself once stopped, and may have been quicker.
        Ok(()) | Err(CtrlError::NoSuchDevice { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    let _ = Record::remove_in(Path::new(RECORD_DIR), id);
    Ok(())
}
