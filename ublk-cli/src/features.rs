//! `ublk features`: what this kernel's ublk_drv supports.

use ublk_ctrl::Control;

use crate::error::CliError;

/// Prints one supported feature per line, with the Linux release that brought it.
pub fn run() -> Result<(), CliError> {
    let features = Control::open()?.features()?;
    for (name, flag) in features.iter_names() {
        match flag.since() {
            Some(version) => println!("{name:<24} (Linux {version})"),
            None => println!("{name}"),
        }
    }
    let unknown = features.bits() & !ublk_uapi::Features::all().bits();
    if unknown != 0 {
        println!("unknown bits {unknown:#x} (a kernel newer than this ublk knows)");
    }
    Ok(())
}
