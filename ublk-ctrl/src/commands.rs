//! The control commands, one method each, with typed arguments and results.

use std::time::Duration;

use rustix::process::Pid;
use rustix::thread::CpuSet;
use ublk_uapi::{CtrlOp, DevInfo, Features, KernelVersion, Params};
use zerocopy::{FromBytes, IntoBytes};

use crate::control::{Command, Control};
use crate::dev_spec::DevSpec;
use crate::error::{Error, Result};

/// Bytes of the CPU mask GET_QUEUE_AFFINITY fills: as many CPUs as a `CpuSet` holds, a multiple of
/// `sizeof(unsigned long)` as the driver demands.
const AFFINITY_MASK_BYTES: usize = CpuSet::MAX_CPU / 8;

impl Control {
    /// GET_FEATURES: what this kernel's ublk_drv supports (Linux 6.5 and later).
    pub fn features(&mut self) -> Result<Features> {
        let cmd = Command::new(CtrlOp::GetFeatures, u32::MAX).buf(vec![0; 8]);
        let buf = self.execute(cmd).map_err(|e| match e {
            // Before 6.5 the opcode is looked up as a device command and fails in several ways.
            Error::NoSuchDevice { .. }
            | Error::InvalidArgument { .. }
            | Error::Unsupported { .. }
            | Error::Kernel { .. } => Error::Unsupported {
                op: CtrlOp::GetFeatures,
                since: CtrlOp::GetFeatures.since(),
            },
            other => other,
        })?;
        let bits = u64::read_from_bytes(&buf[..]).expect("an 8-byte buffer");
        Ok(Features::from_bits_retain(bits))
    }

    /// ADD_DEV, with feature negotiation: returns the device as the kernel created it.
    ///
    /// Features in `spec` that are not marked optional must be granted, or the call fails with
    /// [`Error::FeatureMissing`] naming the first missing one; a device created without them is deleted
    /// again before the error is returned, so no half-made device is left behind.
    pub fn add_dev(&mut self, spec: &DevSpec) -> Result<DevInfo> {
        let required = spec.features - spec.optional;
        let requested = match self.features() {
            Ok(supported) => {
                check_granted(required, supported)?;
                spec.features & supported
            }
            // Older kernels cannot say in advance; what ADD_DEV grants is checked below.
            Err(Error::Unsupported { .. }) => spec.features,
            Err(e) => return Err(e),
        };
        let dev_id = spec.id.unwrap_or(u32::MAX);
        let info = DevInfo {
            nr_hw_queues: spec.queues,
            queue_depth: spec.depth,
            max_io_buf_bytes: spec.max_io_buf_bytes,
            dev_id,
            ublksrv_pid: -1,
            flags: requested.bits(),
            ublksrv_flags: spec.ublksrv_flags,
            io_desc_size: spec.io_desc_size,
            ..DevInfo::default()
        };
        let cmd = Command::new(CtrlOp::AddDev, dev_id).buf(info.as_bytes().to_vec());
        let buf = self.execute(cmd)?;
        let created = DevInfo::read_from_bytes(&buf[..]).expect("a dev_info-sized buffer");
        // The kernel silently drops flags it does not know: re-read what was granted.
        if let Err(e) = check_granted(required, Features::from_bits_retain(created.flags)) {
            // Best effort: the error that matters is the missing feature.
            let _ = self.del_dev(created.dev_id);
            return Err(e);
        }
        Ok(created)
    }

    /// DEL_DEV: removes the device and waits until its server has closed `/dev/ublkcN`.
    pub fn del_dev(&mut self, dev_id: u32) -> Result<()> {
        self.execute(Command::new(CtrlOp::DelDev, dev_id)).map(drop)
    }

    /// DEL_DEV_ASYNC (Linux 6.9): removes the device without waiting for its server to let go.
    pub fn del_dev_async(&mut self, dev_id: u32) -> Result<()> {
        self.execute(Command::new(CtrlOp::DelDevAsync, dev_id))
            .map(drop)
    }

    /// Deletes the device without waiting for users of `/dev/ublkbN` to close it: DEL_DEV_ASYNC
    /// (Linux 6.9), else DEL_DEV.
    ///
    /// DEL_DEV removes the device at once but then waits until its last opener lets go, so a
    /// process holding `/dev/ublkbN` open would stall it until the deadline. With DEL_DEV_ASYNC the
    /// id is freed when that opener closes instead.
    pub fn del_dev_nowait(&mut self, dev_id: u32) -> Result<()> {
        match self.del_dev_async(dev_id) {
            Err(Error::Unsupported { .. }) => self.del_dev(dev_id),
            other => other,
        }
    }

    /// START_DEV: waits until every queue has fetched every tag, then adds `/dev/ublkbN`.
    ///
    /// Adding the disk reads the partition table through the queues, so they must already be serving:
    /// call this from another thread than the queues'.
    pub fn start_dev(&mut self, dev_id: u32, server: Pid) -> Result<()> {
        let cmd = Command::new(CtrlOp::StartDev, dev_id).data(server.as_raw_nonzero().get() as u64);
        self.execute(cmd).map(drop)
    }

    /// STOP_DEV: removes `/dev/ublkbN`; every pending I/O command completes with UBLK_IO_RES_ABORT.
    pub fn stop_dev(&mut self, dev_id: u32) -> Result<()> {
        self.execute(Command::new(CtrlOp::StopDev, dev_id))
            .map(drop)
    }

    /// SET_PARAMS: only before START_DEV; the basic parameters are required.
    pub fn set_params(&mut self, dev_id: u32, params: &Params) -> Result<()> {
        let cmd = Command::new(CtrlOp::SetParams, dev_id).buf(params.as_bytes().to_vec());
        self.execute(cmd).map(drop)
    }

    /// GET_PARAMS: the parameters as the kernel holds them, with the read-only devt numbers filled in.
    pub fn params(&mut self, dev_id: u32) -> Result<Params> {
        let asked = Params::new();
        let buf =
            self.execute(Command::new(CtrlOp::GetParams, dev_id).buf(asked.as_bytes().to_vec()))?;
        Ok(Params::read_from_bytes(&buf[..]).expect("a params-sized buffer"))
    }

    /// GET_DEV_INFO: the device's negotiated information and state.
    pub fn dev_info(&mut self, dev_id: u32) -> Result<DevInfo> {
        let buf =
            self.execute(
                Command::new(CtrlOp::GetDevInfo, dev_id).buf(vec![0; size_of::<DevInfo>()]),
            )?;
        Ok(DevInfo::read_from_bytes(&buf[..]).expect("a dev_info-sized buffer"))
    }

    /// GET_DEV_INFO2: like [`Control::dev_info`], with the char device path the kernel checks permission on
    /// (needed for unprivileged devices).
    pub fn dev_info2(&mut self, dev_id: u32) -> Result<DevInfo> {
        let path = crate::char_dev_path(dev_id);
        let path_len = path.len();
        let mut buf = path.into_bytes();
        buf.resize(path_len + size_of::<DevInfo>(), 0);
        let mut cmd = Command::new(CtrlOp::GetDevInfo2, dev_id).buf(buf);
        cmd.dev_path_len = path_len as u16;
        let buf = self.execute(cmd)?;
        Ok(DevInfo::read_from_bytes(&buf[path_len..]).expect("a dev_info-sized tail"))
    }

    /// GET_QUEUE_AFFINITY: the CPUs whose I/O the block layer sends to queue `queue_id`.
    pub fn queue_affinity(&mut self, dev_id: u32, queue_id: u16) -> Result<CpuSet> {
        let cmd = Command::new(CtrlOp::GetQueueAffinity, dev_id)
            .data(u64::from(queue_id))
            .buf(vec![0; AFFINITY_MASK_BYTES]);
        let mask = self.execute(cmd)?;
        let mut set = CpuSet::new();
        for (byte_index, byte) in mask.iter().enumerate() {
            for bit in 0..8 {
                if byte & (1 << bit) != 0 {
                    set.set(byte_index * 8 + bit);
                }
            }
        }
        Ok(set)
    }

    /// UPDATE_SIZE (Linux 6.16): the live device's new capacity, in 512-byte sectors; the kernel
    /// tells the disk's users (`set_capacity_and_notify`). The server must be ready to serve the
    /// new size first.
    pub fn update_size(&mut self, dev_id: u32, sectors: u64) -> Result<()> {
        self.execute(Command::new(CtrlOp::UpdateSize, dev_id).data(sectors))
            .map(drop)
    }

    /// QUIESCE_DEV (Linux 6.16, devices with `QUIESCE`): stops handing requests to the server,
    /// waits up to `timeout` (0: without limit) for those it holds to complete, then cancels its
    /// pending fetches, so that the server's queues end while the device waits, QUIESCED, for
    /// a new server (user recovery).
    pub fn quiesce_dev(&mut self, dev_id: u32, timeout: Duration) -> Result<()> {
        let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        self.execute(Command::new(CtrlOp::QuiesceDev, dev_id).data(ms))
            .map(drop)
    }

    /// TRY_STOP_DEV (Linux 7.0): STOP_DEV unless someone holds `/dev/ublkbN` open (a mount, a
    /// process), in which case it fails with [`Error::Busy`] and changes nothing; checked and
    /// done under the disk's open lock, so nobody can open it in between.
    pub fn try_stop_dev(&mut self, dev_id: u32) -> Result<()> {
        self.execute(Command::new(CtrlOp::TryStopDev, dev_id))
            .map(drop)
    }

    /// START_USER_RECOVERY: the device is QUIESCED and its old server gone; a new server may now open it.
    pub fn start_user_recovery(&mut self, dev_id: u32) -> Result<()> {
        self.execute(Command::new(CtrlOp::StartUserRecovery, dev_id))
            .map(drop)
    }

    /// END_USER_RECOVERY: waits until the new server's queues have fetched every tag, then makes the
    /// device LIVE again with `server` as its pid.
    pub fn end_user_recovery(&mut self, dev_id: u32, server: Pid) -> Result<()> {
        let cmd = Command::new(CtrlOp::EndUserRecovery, dev_id)
            .data(server.as_raw_nonzero().get() as u64);
        self.execute(cmd).map(drop)
    }
}

/// Fails naming the feature of `required` that `granted` lacks and that came last (the one that
/// says which kernel is needed; a bit with no known release counts as the newest).
fn check_granted(required: Features, granted: Features) -> Result<()> {
    let newest = (required - granted)
        .iter()
        .max_by_key(|f| f.since().unwrap_or(KernelVersion::new(u16::MAX, u16::MAX)));
    match newest {
        None => Ok(()),
        Some(feature) => Err(Error::FeatureMissing {
            feature,
            since: feature.since(),
        }),
    }
}
