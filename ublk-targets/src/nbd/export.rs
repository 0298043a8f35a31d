//! What an NBD server says about an export, checked: its size, transmission flags and block-size
//! constraints (the "Size constraints" and "Transmission flags" sections of the NBD protocol,
//! doc/proto.md in github.com/NetworkBlockDevice/nbd), and what a ublk device over it can be.

use std::fmt;

bitflags::bitflags! {
    /// The export's transmission flags (`NBD_FLAG_*`): what it is and which commands it takes.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct TransmissionFlags: u16 {
        /// `NBD_FLAG_HAS_FLAGS`: always set by a server that speaks the protocol.
        const HAS_FLAGS = 1 << 0;
        /// `NBD_FLAG_READ_ONLY`: writes fail.
        const READ_ONLY = 1 << 1;
        /// `NBD_FLAG_SEND_FLUSH`: `NBD_CMD_FLUSH` (the export has a volatile cache).
        const SEND_FLUSH = 1 << 2;
        /// `NBD_FLAG_SEND_FUA`: the FUA command flag.
        const SEND_FUA = 1 << 3;
        /// `NBD_FLAG_ROTATIONAL`: seeks are expensive.
        const ROTATIONAL = 1 << 4;
        /// `NBD_FLAG_SEND_TRIM`: `NBD_CMD_TRIM`.
        const SEND_TRIM = 1 << 5;
        /// `NBD_FLAG_SEND_WRITE_ZEROES`: `NBD_CMD_WRITE_ZEROES` and its NO_HOLE flag.
        const SEND_WRITE_ZEROES = 1 << 6;
        /// `NBD_FLAG_SEND_DF`: the don't-fragment flag on reads.
        const SEND_DF = 1 << 7;
        /// `NBD_FLAG_CAN_MULTI_CONN`: a FLUSH on one connection covers writes on every other.
        const CAN_MULTI_CONN = 1 << 8;
        /// `NBD_FLAG_SEND_RESIZE` (experimental).
        const SEND_RESIZE = 1 << 9;
        /// `NBD_FLAG_SEND_CACHE`: `NBD_CMD_CACHE`.
        const SEND_CACHE = 1 << 10;
        /// `NBD_FLAG_SEND_FAST_ZERO`: the fast-zero flag on WRITE_ZEROES.
        const SEND_FAST_ZERO = 1 << 11;
        /// `NBD_FLAG_BLOCK_STATUS_PAYLOAD` (experimental).
        const BLOCK_STATUS_PAYLOAD = 1 << 12;
    }
}

/// The block-size constraints a server gave (`NBD_INFO_BLOCK_SIZE`), checked as the protocol
/// requires them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockSizes {
    /// The smallest addressable length and alignment: a power of two, at most 64 KiB.
    pub minimum: u32,
    /// The size at which I/O is efficient: a power of two, at least `minimum` and 512.
    pub preferred: u32,
    /// The largest READ or WRITE payload the server takes (`u32::MAX`: no fixed limit).
    pub max_payload: u32,
}

impl BlockSizes {
    /// What a server that advertised nothing supports: any alignment, 4 KiB preferred, and
    /// payloads of 32 MiB (the protocol's defaults).
    pub const DEFAULT: BlockSizes = BlockSizes {
        minimum: 1,
        preferred: 4096,
        max_payload: 32 << 20,
    };

    /// The constraints the server sent, or why they make no sense.
    pub(crate) fn checked(minimum: u32, preferred: u32, max_payload: u32) -> Result<Self, String> {
        if !minimum.is_power_of_two() || minimum > 64 << 10 {
            return Err(format!(
                "minimum block size {minimum} is not a power of two up to 65536"
            ));
        }
        if !preferred.is_power_of_two() || preferred < minimum.max(512) {
            return Err(format!(
                "preferred block size {preferred} is not a power of two of at least \
                 max(512, minimum block size {minimum})"
            ));
        }
        if max_payload < preferred {
            return Err(format!(
                "maximum payload {max_payload} is below the preferred block size {preferred}"
            ));
        }
        Ok(BlockSizes {
            minimum,
            preferred,
            max_payload,
        })
    }
}

/// An export as the handshake left it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Export {
    /// Its size in bytes.
    pub size: u64,
    /// Its transmission flags.
    pub flags: TransmissionFlags,
    /// Its block-size constraints ([`BlockSizes::DEFAULT`] when the server gave none).
    pub block_sizes: BlockSizes,
    /// Whether structured replies were negotiated (`NBD_OPT_STRUCTURED_REPLY`).
    pub structured: bool,
}

/// The largest export size we accept: Linux offsets are signed 64-bit byte counts.
const MAX_SIZE: u64 = i64::MAX as u64;

impl Export {
    /// Checks what the server sent about the export: a non-empty size Linux can address, flags
    /// with `HAS_FLAGS` set.
    pub(crate) fn check(&self) -> Result<(), String> {
        if self.size == 0 {
            return Err("the export is empty (size 0)".into());
        }
        if self.size > MAX_SIZE {
            return Err(format!(
                "export size {} is beyond what Linux can address",
                self.size
            ));
        }
        if !self.flags.contains(TransmissionFlags::HAS_FLAGS) {
            return Err(format!(
                "transmission flags {:#06x} lack NBD_FLAG_HAS_FLAGS, which every server sets",
                self.flags.bits()
            ));
        }
        Ok(())
    }

    /// Whether the export takes writes.
    pub fn read_only(&self) -> bool {
        self.flags.contains(TransmissionFlags::READ_ONLY)
    }

    /// Whether a reconnection reached the same export: same size, and every command the device
    /// was set up to send still taken. Returns what changed.
    pub(crate) fn same_as(&self, was: &Export) -> Result<(), String> {
        if self.size != was.size {
            return Err(format!(
                "the export's size changed from {} to {} bytes",
                was.size, self.size
            ));
        }
        let needed = TransmissionFlags::SEND_FLUSH
            | TransmissionFlags::SEND_FUA
            | TransmissionFlags::SEND_TRIM
            | TransmissionFlags::SEND_WRITE_ZEROES;
        let lost = (was.flags & needed) - self.flags;
        if !lost.is_empty() {
            return Err(format!(
                "the export no longer takes {lost:?} (flags {:#06x}, were {:#06x})",
                self.flags.bits(),
                was.flags.bits()
            ));
        }
        if self.read_only() && !was.read_only() {
            return Err("the export became read-only".into());
        }
        if self.structured != was.structured {
            return Err("the server changed its mind about structured replies".into());
        }
        Ok(())
    }
}

impl fmt::Display for Export {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} bytes, flags {:#06x}, blocks {}/{}/{}, {} replies",
            self.size,
            self.flags.bits(),
            self.block_sizes.minimum,
            self.block_sizes.preferred,
            self.block_sizes.max_payload,
            if self.structured {
                "structured"
            } else {
                "simple"
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn export(size: u64, flags: TransmissionFlags) -> Export {
        Export {
            size,
            flags,
            block_sizes: BlockSizes::DEFAULT,
            structured: true,
        }
    }

    #[test]
    fn block_sizes_are_checked_as_the_protocol_says() {
        assert!(BlockSizes::checked(512, 4096, 1 << 20).is_ok());
        assert!(BlockSizes::checked(1, 512, 512).is_ok());
        assert!(
            BlockSizes::checked(3, 4096, 1 << 20).is_err(),
            "not a power of two"
        );
        assert!(
            BlockSizes::checked(1 << 17, 1 << 17, 1 << 20).is_err(),
            "over 64 KiB"
        );
        assert!(
            BlockSizes::checked(512, 256, 1 << 20).is_err(),
            "preferred below 512"
        );
        assert!(
            BlockSizes::checked(4096, 2048, 1 << 20).is_err(),
            "preferred below minimum"
        );
        assert!(
            BlockSizes::checked(512, 4096, 1000).is_err(),
            "payload below preferred"
        );
        assert!(BlockSizes::checked(0, 4096, 1 << 20).is_err());
    }

    #[test]
    fn nonsense_exports_are_refused() {
        let flags = TransmissionFlags::HAS_FLAGS;
        assert!(export(1 << 30, flags).check().is_ok());
        assert!(export(0, flags).check().unwrap_err().contains("empty"));
        assert!(export(u64::MAX, flags).check().is_err());
        assert!(
            export(1 << 30, TransmissionFlags::SEND_FLUSH)
                .check()
                .unwrap_err()
                .contains("HAS_FLAGS")
        );
    }

    #[test]
    fn a_reconnection_must_reach_the_same_export() {
        let flags = TransmissionFlags::HAS_FLAGS
            | TransmissionFlags::SEND_FLUSH
            | TransmissionFlags::SEND_TRIM;
        let was = export(1 << 30, flags);
        assert!(export(1 << 30, flags).same_as(&was).is_ok());
        let more = flags | TransmissionFlags::CAN_MULTI_CONN;
        assert!(
            export(1 << 30, more).same_as(&was).is_ok(),
            "gaining is fine"
        );
        assert!(
            export(1 << 29, flags)
                .same_as(&was)
                .unwrap_err()
                .contains("size")
        );
        let less = flags - TransmissionFlags::SEND_TRIM;
        assert!(
            export(1 << 30, less)
                .same_as(&was)
                .unwrap_err()
                .contains("TRIM")
        );
        let ro = flags | TransmissionFlags::READ_ONLY;
        assert!(export(1 << 30, ro).same_as(&was).is_err());
    }
}
