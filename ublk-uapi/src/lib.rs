//! The Linux ublk UAPI (`include/uapi/linux/ublk_cmd.h`, up to Linux 7.3) as Rust types.
//!
//! Every struct is `#[repr(C)]`, derives zerocopy's `FromBytes`/`IntoBytes`, and has
//! its size, alignment and every field offset asserted at compile time; a test compiles
//! C against the system's `<linux/ublk_cmd.h>` and compares. Raw kernel fields stay
//! raw (the bytes are the ABI); typed views — [`Features`], [`IoFlags`], [`IoOp`],
//! [`DevState`], [`ParamTypes`] — sit next to them. Items newer than 6.12 say
//! "since Linux X.Y" and carry a [`KernelVersion`] you can put in an error message;
//! [`features::FEATURES`] names every feature bit with its release.
//!
//! | Module | Kernel names |
//! |---|---|
//! | [`ctrl_cmd`] | `ublksrv_ctrl_cmd`, `UBLK_CMD_*`, `UBLK_U_CMD_*` |
//! | [`dev_info`] | `ublksrv_ctrl_dev_info`, `UBLK_S_DEV_*` |
//! | [`features`] | `UBLK_F_*`, `UBLK_FEATURES_LEN` |
//! | [`params`] | `ublk_params` and its parts, `UBLK_PARAM_TYPE_*`, `UBLK_ATTR_*`, `LBMD_PI_*` |
//! | [`io_cmd`] | `ublksrv_io_cmd`, `UBLK_IO_*`, `UBLK_U_IO_*`, `UBLK_IO_RES_*` |
//! | [`io_desc`] | `ublksrv_io_desc`, `ublksrv_get_op`, `ublksrv_get_flags` |
//! | [`op`] | `UBLK_IO_OP_*`, `UBLK_IO_F_*` |
//! | [`auto_buf_reg`] | `ublk_auto_buf_reg`, `UBLK_AUTO_BUF_REG_*` |
//! | [`batch`] | `ublk_batch_io`, `ublk_elem_header`, `UBLK_BATCH_F_*` |
//! | [`shmem`] | `ublk_shmem_buf_reg`, `UBLK_SHMEM_BUF_*`, `UBLK_SHMEM_ZC_*`, `ublk_shmem_zc_*` |
//! | [`offsets`] | `UBLKSRV_*_OFFSET`, `UBLK_*_BITS`, `UBLK_MAX_*`, `UBLK*_INTEGRITY_FLAG*`, mmap and `USER_COPY` offsets |
//! | [`ioctl`] | `_IOC`, `_IOR`, `_IOW`, `_IOWR` |
//!
//! # Example
//!
//! The bytes of a `GET_DEV_INFO` command for device 0, ready for `sqe->cmd`:
//!
//! ```
//! use ublk_uapi::{CtrlCmd, CtrlOp, DevInfo};
//! use zerocopy::{FromZeros, IntoBytes};
//!
//! let mut info = DevInfo::new_zeroed();
//! let cmd = CtrlCmd {
//!     addr: &raw mut info as u64,
//!     len: size_of::<DevInfo>() as u16,
//!     ..CtrlCmd::new(0)
//! };
//! let payload: &[u8] = cmd.as_bytes();
//! assert_eq!(payload.len(), 32);
//! assert_eq!(payload[6..8], 64u16.to_ne_bytes()); // len
//!
//! let cmd_op = CtrlOp::GetDevInfo.ioctl(); // UBLK_U_CMD_GET_DEV_INFO, for sqe->cmd_op
//! # #[cfg(target_arch = "x86_64")]
//! assert_eq!(cmd_op, 0x8020_7502);
//! ```
#![no_std]

#[macro_use]
mod layout;

pub mod auto_buf_reg;
pub mod batch;
pub mod ctrl_cmd;
pub mod dev_info;
pub mod features;
pub mod io_cmd;
pub mod io_desc;
pub mod ioctl;
pub mod kernel_version;
pub mod offsets;
pub mod op;
pub mod params;
pub mod shmem;

pub use auto_buf_reg::{AutoBufReg, AutoBufRegFlags};
pub use batch::{BatchElem, BatchFlags, BatchIo, ElemHeader};
pub use ctrl_cmd::{CtrlCmd, CtrlOp};
pub use dev_info::{DevInfo, DevState};
pub use features::{FeatureInfo, Features};
pub use io_cmd::{IoCmd, IoCmdOp};
pub use io_desc::IoDesc;
pub use kernel_version::KernelVersion;
pub use op::{IoFlags, IoOp};
pub use params::{
    BasicAttrs, IntegrityCaps, IntegrityCsum, ParamBasic, ParamDevt, ParamDiscard, ParamDmaAlign,
    ParamIntegrity, ParamSegment, ParamTypes, ParamZoned, Params,
};
pub use shmem::{ShmemBufFlags, ShmemBufReg, ShmemZcAddr};
