//! `ublksrv_ctrl_dev_info`: a device's identity, shape, state and negotiated features.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::Features;
use crate::io_desc::IO_DESC_SIZE;

/// `struct ublksrv_ctrl_dev_info` (64 bytes): sent with `ADD_DEV`, read back with
/// `GET_DEV_INFO`/`GET_DEV_INFO2`.
///
/// On `ADD_DEV` the kernel rewrites it: it clears the [`Features`] it does not know,
/// clamps `nr_hw_queues` to the CPU count, rounds `max_io_buf_bytes` down to a page,
/// assigns `dev_id`, and sets the owner. Use the copy the kernel wrote back.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
pub struct DevInfo {
    /// Number of hardware queues (at most one per CPU).
    pub nr_hw_queues: u16,
    /// Tags per queue, at most [`UBLK_MAX_QUEUE_DEPTH`](crate::offsets::UBLK_MAX_QUEUE_DEPTH).
    pub queue_depth: u16,
    /// `UBLK_S_DEV_*`; see [`DevInfo::state`].
    pub state: u16,
    /// With `UBLK_F_IO_DESC_SIZE` (since Linux 7.3; `pad0` before): the size of each entry
    /// of the descriptor array, 24 to 256 bytes, a multiple of 8
    /// ([`io_desc_size_is_valid`](crate::io_desc::io_desc_size_is_valid)). Without the
    /// flag send 0: a 7.3 kernel writes back 24, older ones echo what they got. Read the
    /// size in use with [`DevInfo::desc_stride`].
    pub io_desc_size: u16,
    /// Largest request, in bytes: the size of each tag's buffer.
    pub max_io_buf_bytes: u32,
    /// Device number `N` of `/dev/ublkcN` and `/dev/ublkbN`.
    pub dev_id: u32,
    /// Pid of the serving process, `-1` when none.
    pub ublksrv_pid: i32,
    /// Zero.
    pub pad1: u32,
    /// `UBLK_F_*`; see [`DevInfo::features`].
    pub flags: u64,
    /// Server-private flags: the driver stores them and never looks at them.
    pub ublksrv_flags: u64,
    /// Owner uid, stored by the kernel (Linux 6.2).
    pub owner_uid: u32,
    /// Owner gid, stored by the kernel (Linux 6.2).
    pub owner_gid: u32,
    /// Zero.
    pub reserved1: u64,
    /// Zero.
    pub reserved2: u64,
}

assert_layout!(DevInfo, size 64, align 8, {
    nr_hw_queues: 0,
    queue_depth: 2,
    state: 4,
    io_desc_size: 6,
    max_io_buf_bytes: 8,
    dev_id: 12,
    ublksrv_pid: 16,
    pad1: 20,
    flags: 24,
    ublksrv_flags: 32,
    owner_uid: 40,
    owner_gid: 44,
    reserved1: 48,
    reserved2: 56,
});

impl DevInfo {
    /// `flags` as typed [`Features`], unknown bits kept.
    pub const fn features(&self) -> Features {
        Features::from_bits_retain(self.flags)
    }

    /// Sets `flags`.
    pub const fn set_features(&mut self, features: Features) {
        self.flags = features.bits();
    }

    /// Bytes from one descriptor to the next in the mmap'd array (and what its length
    /// counts in): `io_desc_size` if the kernel granted `UBLK_F_IO_DESC_SIZE`, else 24.
    /// Only meaningful on the copy the kernel wrote back, whose flags were negotiated.
    pub const fn desc_stride(&self) -> u16 {
        if self.features().contains(Features::IO_DESC_SIZE) {
            self.io_desc_size
        } else {
            IO_DESC_SIZE
        }
    }

    /// `state` as a [`DevState`], or the unknown raw value.
    pub fn state(&self) -> Result<DevState, u16> {
        DevState::try_from(self.state)
    }
}

/// `UBLK_S_DEV_*`: the device's lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
#[non_exhaustive]
pub enum DevState {
    /// `UBLK_S_DEV_DEAD`: added but not started, or stopped.
    Dead = 0,
    /// `UBLK_S_DEV_LIVE`: started and served.
    Live = 1,
    /// `UBLK_S_DEV_QUIESCED`: the server is gone (or quiesced) and a recovery-enabled
    /// device waits for a new one; I/O is held.
    Quiesced = 2,
    /// `UBLK_S_DEV_FAIL_IO` (since Linux 6.13): like `Quiesced`, but with
    /// `USER_RECOVERY_FAIL_IO` new I/O fails instead of waiting.
    FailIo = 3,
}

impl TryFrom<u16> for DevState {
    /// The unknown `UBLK_S_DEV_*` value.
    type Error = u16;

    fn try_from(state: u16) -> Result<Self, u16> {
        Ok(match state {
            0 => DevState::Dead,
            1 => DevState::Live,
            2 => DevState::Quiesced,
            3 => DevState::FailIo,
            other => return Err(other),
        })
    }
}

impl From<DevState> for u16 {
    fn from(state: DevState) -> u16 {
        state as u16
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip() {
        for raw in 0..4u16 {
            let state = DevState::try_from(raw).expect("known state");
            assert_eq!(u16::from(state), raw);
        }
        assert_eq!(DevState::try_from(4), Err(4));
    }

    #[test]
    fn typed_views_of_raw_fields() {
        let mut info = DevInfo {
            state: 1,
            ..DevInfo::default()
        };
        info.set_features(Features::USER_COPY | Features::ZONED);
        assert_eq!(info.flags, (1 << 7) | (1 << 8));
        assert_eq!(info.features(), Features::USER_COPY | Features::ZONED);
        assert_eq!(info.state(), Ok(DevState::Live));
        info.state = 9;
        assert_eq!(info.state(), Err(9));
    }

    #[test]
    fn desc_stride_needs_the_flag() {
        let mut info = DevInfo {
            io_desc_size: 64,
            ..DevInfo::default()
        };
        // An old kernel echoes what was sent: without the flag it means nothing.
        assert_eq!(info.desc_stride(), 24);
        info.set_features(Features::IO_DESC_SIZE);
        assert_eq!(info.desc_stride(), 64);
        assert_eq!(info.as_bytes()[6..8], 64u16.to_ne_bytes());
    }

    #[test]
    fn decodes_kernel_bytes() {
        let mut raw = [0u8; 64];
        raw[0..2].copy_from_slice(&2u16.to_ne_bytes());
        raw[2..4].copy_from_slice(&128u16.to_ne_bytes());
        raw[12..16].copy_from_slice(&7u32.to_ne_bytes());
        raw[16..20].copy_from_slice(&(-1i32).to_ne_bytes());
        raw[24..32].copy_from_slice(&(1u64 << 13).to_ne_bytes());
        let info = DevInfo::read_from_bytes(&raw[..]).expect("64 bytes");
        assert_eq!(info.nr_hw_queues, 2);
        assert_eq!(info.queue_depth, 128);
        assert_eq!(info.dev_id, 7);
        assert_eq!(info.ublksrv_pid, -1);
        assert_eq!(info.features(), Features::PER_IO_DAEMON);
        assert_eq!(info.as_bytes(), &raw[..]);
    }
}
