//! What the kernel and this engine accept: the bounds [`DeviceBuilder`](crate::DeviceBuilder)
//! checks before a device exists, and the device features the engine can serve.

use ublk_uapi::Features;

/// The largest device id: the driver numbers devices with the minors of its char device region
/// (`UBLK_MAX_UBLKS` = `1 << MINORBITS`).
pub(crate) const MAX_DEV_ID: u32 = (1 << 20) - 1;

/// The largest single I/O this crate accepts: 32 MiB, what a USER_COPY offset can address
/// (`UBLK_IO_BUF_BITS`), and far beyond what the block layer usually sends.
pub(crate) const MAX_IO_BYTES: u32 = 1 << ublk_uapi::offsets::UBLK_IO_BUF_BITS;

/// Features the engine serves correctly: every buffer mode ([`BufferMode`](crate::BufferMode)),
/// both command modes ([`CommandMode`](crate::CommandMode)), recovery, resizing and quiescing. Zoned devices are out, and so are unprivileged devices
/// (UNPRIVILEGED_DEV): the kernel then wants the char device's path with every control command
/// and checks it against the caller's permissions, which this engine does not send.
pub(crate) const SUPPORTED_FEATURES: Features = Features::URING_CMD_COMP_IN_TASK
    .union(Features::CMD_IOCTL_ENCODE)
    .union(Features::USER_COPY)
    .union(Features::SUPPORT_ZERO_COPY)
    .union(Features::AUTO_BUF_REG)
    .union(Features::NEED_GET_DATA)
    .union(Features::USER_RECOVERY)
    .union(Features::USER_RECOVERY_REISSUE)
    .union(Features::USER_RECOVERY_FAIL_IO)
    .union(Features::UPDATE_SIZE)
    .union(Features::QUIESCE)
    .union(Features::NO_AUTO_PART_SCAN)
    .union(Features::IO_DESC_SIZE)
    .union(Features::BATCH_IO);

/// Flags the kernel sets on every device it creates, whatever was asked (`ublk_ctrl_add_dev` in
/// Linux 7.3: CMD_IOCTL_ENCODE, URING_CMD_COMP_IN_TASK, PER_IO_DAEMON, BUF_REG_OFF_DAEMON,
/// SAFE_STOP_DEV). They say what the kernel allows, not what the server must do: a server that
/// keeps each queue on one thread and never registers buffers from another serves such a
/// device exactly as an older kernel's, so finding them on a device to recover is fine.
pub(crate) const GRANTED_FEATURES: Features = Features::CMD_IOCTL_ENCODE
    .union(Features::URING_CMD_COMP_IN_TASK)
    .union(Features::PER_IO_DAEMON)
    .union(Features::BUF_REG_OFF_DAEMON)
    .union(Features::SAFE_STOP_DEV);

/// The features of an existing device this engine cannot serve: whatever changes the protocol
/// and is not implemented here, including bits this crate does not know (they might).
pub(crate) fn unservable(device: Features) -> Features {
    device - SUPPORTED_FEATURES - GRANTED_FEATURES
}
