//! `ublk features`: what this kernel's ublk_drv supports.

use ublk_ctrl::Control;
use ublk_uapi::Features;

use crate::error::CliError;

/// Width of the name column: the longest name in [`ublk_uapi::features::FEATURES`] fits.
const NAME_WIDTH: usize = 24;

/// Prints one supported feature per line, with the Linux release that brought it.
pub fn run() -> Result<(), CliError> {
    let features = Control::open()?.features()?;
    for line in lines(features) {
        println!("{line}");
    }
    Ok(())
}

/// `NAME (Linux X.Y)` for each known bit in bit order, then one line for the bits this
/// build has no name for, if any.
fn lines(features: Features) -> Vec<String> {
    let mut lines: Vec<String> = features
        .known()
        .map(|f| format!("{:<NAME_WIDTH$} (Linux {})", f.name, f.since))
        .collect();
    let unknown = features.unknown();
    if !unknown.is_empty() {
        lines.push(format!(
            "unknown bits {:#x} (a kernel newer than this ublk knows)",
            unknown.bits()
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use ublk_uapi::features::FEATURES;

    #[test]
    fn every_name_fits_its_column() {
        assert!(FEATURES.iter().all(|f| f.name.len() < NAME_WIDTH));
    }

    #[test]
    fn names_each_bit_with_its_release_then_the_unknown_ones() {
        let report =
            Features::USER_RECOVERY | Features::IO_DESC_SIZE | Features::from_bits_retain(1 << 40);
        assert_eq!(
            lines(report),
            [
                "USER_RECOVERY            (Linux 6.1)",
                "IO_DESC_SIZE             (Linux 7.3)",
                "unknown bits 0x10000000000 (a kernel newer than this ublk knows)",
            ]
        );
    }

    #[test]
    fn a_7_3_kernel_is_named_in_full() {
        let all = lines(Features::all());
        assert_eq!(all.len(), FEATURES.len());
        assert!(all.iter().all(|l| l.contains("(Linux ")));
        assert_eq!(all[19], "SHMEM_ZC                 (Linux 7.1)");
        assert!(lines(Features::empty()).is_empty());
    }
}
