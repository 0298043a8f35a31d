//! `ublk resize ID SIZE`: a live device gets a new size (UPDATE_SIZE, Linux 6.16), its store
//! with it; its server does both, asked through its control socket.

use std::path::Path;
use std::time::Duration;

use ublk_ctrl::Control;
use ublk_uapi::Features;

use crate::error::CliError;
use crate::socket::{self, Request};

/// How long the server may take (growing a file, UPDATE_SIZE).
const RESIZE_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `ublk resize`.
pub fn run(id: u32, bytes: u64, force: bool, record_dir: &Path) -> Result<(), CliError> {
    let mut ctrl = Control::open()?;
    // Refused before anything changes: older kernels have no UPDATE_SIZE.
    if !ctrl
        .features()
        .is_ok_and(|f| f.contains(Features::UPDATE_SIZE))
    {
        return Err(CliError::Msg(
            "resizing a device needs UPDATE_SIZE (Linux 6.16); this kernel's ublk_drv lacks it"
                .to_owned(),
        ));
    }
    let info = ctrl.dev_info(id)?;
    if !matches!(info.state(), Ok(ublk_uapi::DevState::Live)) {
        return Err(CliError::Msg(format!(
            "device {id} is {}: only a live device can be resized",
            crate::list::state_name(info.state)
        )));
    }
    let message = socket::ask(
        record_dir,
        id,
        &Request::Resize { bytes, force },
        RESIZE_TIMEOUT,
    )?;
    println!("{message}");
    Ok(())
}
