//! Compares our layouts and constants with the C header gcc sees.
//!
//! Builds a C program from the tables below that prints `KEY VALUE` (or `KEY ABSENT`)
//! for every `sizeof`, `offsetof`, field size, inline helper and `#define`, runs it, and
//! checks each value against ours. Items an older header lacks are guarded with `#if`
//! and reported as absent; items every supported header has (Linux 6.1's, Debian 12's
//! linux-libc-dev) are required. A second pass lists every `UBLK*` macro and `ublk*`
//! inline function the header defines (`gcc -dM -E`, `gcc -E`) and fails on any our
//! tables do not cover.
//!
//! Set `UBLK_CMD_H_DIR` to a directory holding `linux/ublk_cmd.h` (and the `linux/`
//! headers it includes) to check against another header, e.g. an unpacked
//! linux-libc-dev's `usr/include`. Set `UBLK_CMD_H_REQUIRE_ALL=1` when that header is at
//! least as new as this crate (Linux 7.3): then every item must be present, and every
//! macro covered, instead of absent ones being reported.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::mem::{offset_of, size_of};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use ublk_uapi::auto_buf_reg::{AutoBufReg, AutoBufRegFlags};
use ublk_uapi::features::UBLK_FEATURES_LEN;
use ublk_uapi::io_cmd::{UBLK_IO_RES_ABORT, UBLK_IO_RES_NEED_GET_DATA, UBLK_IO_RES_OK};
use ublk_uapi::offsets::*;
use ublk_uapi::params::UBLK_MIN_SEGMENT_SIZE;
use ublk_uapi::shmem::{UBLK_SHMEM_ZC_IDX_MASK, UBLK_SHMEM_ZC_IDX_OFF, UBLK_SHMEM_ZC_OFF_MASK};
use ublk_uapi::*;

/// Below this many compared values something is wrong with the harness, not the header:
/// Linux 6.1's header alone yields well over this.
const MIN_COMPARED: usize = 130;

/// The newest header this crate claims to cover: what `UBLK_CMD_H_REQUIRE_ALL` demands.
const CRATE_HEADER: &str = "Linux 7.3";

/// Which headers have an item, and so whether its absence fails.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Presence {
    /// Every supported header (Linux 6.1 and later): absence always fails.
    Always,
    /// Headers since some release after 6.1: absence fails only with
    /// `UBLK_CMD_H_REQUIRE_ALL=1`.
    Newer,
    /// Only headers older than this crate's, in a form since replaced (e.g. `pad0` before
    /// it became `io_desc_size`): never required.
    Older,
    /// From another header (`<linux/fs.h>`'s `LBMD_PI_*`), which `UBLK_CMD_H_DIR` may
    /// not replace: never required.
    OtherHeader,
}

/// One value to compare.
struct Probe {
    /// Printed key, e.g. `offsetof:ublksrv_ctrl_cmd.addr`.
    key: String,
    /// C expression computing the value.
    c_expr: String,
    /// Preprocessor condition under which the header has it; `None`: always.
    guard: Option<String>,
    /// Whether a header lacking it fails the test.
    presence: Presence,
    /// Our value.
    ours: i128,
}

#[derive(Default)]
struct Table {
    probes: Vec<Probe>,
    /// `#define` names the table covers, for the completeness pass.
    macros: BTreeSet<String>,
}

impl Table {
    /// A probe every header has if `guard` is `None`, a newer header's otherwise.
    fn push(&mut self, key: String, c_expr: String, guard: Option<String>, ours: i128) {
        let presence = if guard.is_none() {
            Presence::Always
        } else {
            Presence::Newer
        };
        self.push_as(presence, key, c_expr, guard, ours);
    }

    fn push_as(
        &mut self,
        presence: Presence,
        key: String,
        c_expr: String,
        guard: Option<String>,
        ours: i128,
    ) {
        self.probes.push(Probe {
            key,
            c_expr,
            guard,
            presence,
            ours,
        });
    }

    fn constant(&mut self, name: &str, ours: i128, presence: Presence) {
        self.macros.insert(name.to_owned());
        self.push_as(
            presence,
            name.to_owned(),
            name.to_owned(),
            Some(format!("defined({name})")),
            ours,
        );
    }

    /// A name the header defines that is not a value (include guard, function-like
    /// macro, inline function probed by a `fn:` key).
    fn covers(&mut self, name: &str) {
        self.macros.insert(name.to_owned());
    }
}

fn and(a: Option<&str>, b: Option<&str>) -> Option<String> {
    match (a, b) {
        (None, None) => None,
        (Some(x), None) | (None, Some(x)) => Some(x.to_owned()),
        (Some(x), Some(y)) => Some(format!("({x}) && ({y})")),
    }
}

fn field_size<T, F>(_: fn(&T) -> &F) -> usize {
    size_of::<F>()
}

/// Struct size, every field's offset and every field's size. `if "cond"` guards a struct
/// or field a header may lack; `size_if "cond"` guards only a size that changed.
macro_rules! strukt {
    ($table:expr, $t:ty => $c:literal $(if $g:literal)? $(size_if $sg:literal)?,
     { $($f:ident $(if $fg:literal)? $(size_if $fsg:literal)?),* $(,)? }) => {{
        let sguard: Option<&str> = None $(.or(Some($g)))?;
        $table.push(
            format!("sizeof:{}", $c),
            format!("sizeof(struct {})", $c),
            and(sguard, None $(.or(Some($sg)))?),
            size_of::<$t>() as i128,
        );
        $(
            let fguard = and(sguard, None $(.or(Some($fg)))?);
            $table.push(
                format!("offsetof:{}.{}", $c, stringify!($f)),
                format!("offsetof(struct {}, {})", $c, stringify!($f)),
                fguard.clone(),
                offset_of!($t, $f) as i128,
            );
            $table.push(
                format!("fieldsize:{}.{}", $c, stringify!($f)),
                format!("sizeof(((struct {} *)0)->{})", $c, stringify!($f)),
                and(fguard.as_deref(), None $(.or(Some($fsg)))?),
                field_size(|s: &$t| &s.$f) as i128,
            );
        )*
    }};
}

/// `#define NAME` values: `req` ones are in every header since Linux 6.1, `opt` ones may
/// be missing from an older header, `fs` ones come from `<linux/fs.h>`.
macro_rules! consts {
    ($table:expr, { $($kind:ident $name:ident = $val:expr),* $(,)? }) => {{
        $( $table.constant(stringify!($name), ($val) as i128, presence(stringify!($kind))); )*
    }};
}

fn presence(kind: &str) -> Presence {
    match kind {
        "req" => Presence::Always,
        "opt" => Presence::Newer,
        "fs" => Presence::OtherHeader,
        other => panic!("consts! kind {other:?}: use req, opt or fs"),
    }
}

fn legacy(nr: Option<u32>) -> i128 {
    // A constant we say does not exist but the header has shows up as a mismatch.
    nr.map_or(i128::MIN, i128::from)
}

fn table() -> Table {
    let mut t = Table::default();

    // Fields added in Linux 6.2 are guarded by UBLK_F_UNPRIVILEGED_DEV, added with them.
    strukt!(t, CtrlCmd => "ublksrv_ctrl_cmd", {
        dev_id, queue_id, len, addr,
        // Linux 6.1 had `__u64 data[2]`; 6.2 split the second into the fields below.
        data size_if "defined(UBLK_F_UNPRIVILEGED_DEV)",
        dev_path_len if "defined(UBLK_F_UNPRIVILEGED_DEV)",
        pad if "defined(UBLK_F_UNPRIVILEGED_DEV)",
        reserved if "defined(UBLK_F_UNPRIVILEGED_DEV)",
    });
    strukt!(t, DevInfo => "ublksrv_ctrl_dev_info", {
        nr_hw_queues, queue_depth, state,
        io_desc_size if "defined(UBLK_F_IO_DESC_SIZE)",
        max_io_buf_bytes, dev_id, ublksrv_pid, pad1,
        flags, ublksrv_flags,
        owner_uid if "defined(UBLK_F_UNPRIVILEGED_DEV)",
        owner_gid if "defined(UBLK_F_UNPRIVILEGED_DEV)",
        reserved1, reserved2,
    });
    // Before Linux 7.3, io_desc_size was `__u16 pad0`.
    let pad0 = Some("!defined(UBLK_F_IO_DESC_SIZE)".to_owned());
    t.push_as(
        Presence::Older,
        "offsetof:ublksrv_ctrl_dev_info.pad0".into(),
        "offsetof(struct ublksrv_ctrl_dev_info, pad0)".into(),
        pad0.clone(),
        offset_of!(DevInfo, io_desc_size) as i128,
    );
    t.push_as(
        Presence::Older,
        "fieldsize:ublksrv_ctrl_dev_info.pad0".into(),
        "sizeof(((struct ublksrv_ctrl_dev_info *)0)->pad0)".into(),
        pad0,
        field_size(|s: &DevInfo| &s.io_desc_size) as i128,
    );
    strukt!(t, IoDesc => "ublksrv_io_desc", { op_flags, nr_sectors, start_sector, addr });
    t.push(
        "offsetof:ublksrv_io_desc.nr_zones".into(),
        "offsetof(struct ublksrv_io_desc, nr_zones)".into(),
        Some("defined(UBLK_IO_OP_REPORT_ZONES)".into()),
        offset_of!(IoDesc, nr_sectors) as i128,
    );
    strukt!(t, IoCmd => "ublksrv_io_cmd", { q_id, tag, result, addr });
    t.push(
        "offsetof:ublksrv_io_cmd.zone_append_lba".into(),
        "offsetof(struct ublksrv_io_cmd, zone_append_lba)".into(),
        Some("defined(UBLK_F_ZONED)".into()),
        offset_of!(IoCmd, addr) as i128,
    );
    strukt!(t, AutoBufReg => "ublk_auto_buf_reg" if "defined(UBLK_AUTO_BUF_REG_FALLBACK)", {
        index, flags, reserved0, reserved1,
    });
    strukt!(t, ElemHeader => "ublk_elem_header" if "defined(UBLK_BATCH_F_HAS_ZONE_LBA)", {
        tag, buf_index, result,
    });
    strukt!(t, BatchIo => "ublk_batch_io" if "defined(UBLK_BATCH_F_HAS_ZONE_LBA)", {
        q_id, flags, nr_elem, elem_bytes, reserved, reserved2,
    });
    strukt!(t, ShmemBufReg => "ublk_shmem_buf_reg" if "defined(UBLK_SHMEM_BUF_READ_ONLY)", {
        addr, len, flags, reserved,
    });
    strukt!(t, ParamBasic => "ublk_param_basic", {
        attrs, logical_bs_shift, physical_bs_shift, io_opt_shift, io_min_shift, max_sectors,
        chunk_sectors, dev_sectors, virt_boundary_mask,
    });
    strukt!(t, ParamDiscard => "ublk_param_discard", {
        discard_alignment, discard_granularity, max_discard_sectors, max_write_zeroes_sectors,
        max_discard_segments, reserved0,
    });
    strukt!(t, ParamDevt => "ublk_param_devt" if "defined(UBLK_PARAM_TYPE_DEVT)", {
        char_major, char_minor, disk_major, disk_minor,
    });
    strukt!(t, ParamZoned => "ublk_param_zoned" if "defined(UBLK_PARAM_TYPE_ZONED)", {
        max_open_zones, max_active_zones, max_zone_append_sectors, reserved,
    });
    strukt!(t, ParamDmaAlign => "ublk_param_dma_align" if "defined(UBLK_PARAM_TYPE_DMA_ALIGN)", {
        alignment, pad,
    });
    strukt!(t, ParamSegment => "ublk_param_segment" if "defined(UBLK_PARAM_TYPE_SEGMENT)", {
        seg_boundary_mask, max_segment_size, max_segments, pad,
    });
    strukt!(t, ParamIntegrity => "ublk_param_integrity"
        if "defined(UBLK_PARAM_TYPE_INTEGRITY)", {
        flags, max_integrity_segments, interval_exp, metadata_size, pi_offset, csum_type,
        tag_size, pad,
    });
    // sizeof(struct ublk_params) grows with every new part: compare ours with the 7.0+
    // shape (INTEGRITY last), and the 6.15-6.19 shape (SEGMENT last) with where our
    // INTEGRITY part starts.
    strukt!(t, Params => "ublk_params" size_if "defined(UBLK_PARAM_TYPE_INTEGRITY)", {
        len, types, basic, discard,
        devt if "defined(UBLK_PARAM_TYPE_DEVT)",
        zoned if "defined(UBLK_PARAM_TYPE_ZONED)",
        dma if "defined(UBLK_PARAM_TYPE_DMA_ALIGN)",
        seg if "defined(UBLK_PARAM_TYPE_SEGMENT)",
        integrity if "defined(UBLK_PARAM_TYPE_INTEGRITY)",
    });
    t.push_as(
        Presence::Older,
        "sizeof:ublk_params(6.15-6.19)".into(),
        "sizeof(struct ublk_params)".into(),
        Some("defined(UBLK_PARAM_TYPE_SEGMENT) && !defined(UBLK_PARAM_TYPE_INTEGRITY)".into()),
        offset_of!(Params, integrity) as i128,
    );

    // The header's inline helpers, applied to sample values.
    let desc = IoDesc {
        op_flags: 0x1234_5678,
        ..IoDesc::default()
    };
    t.push(
        "fn:ublksrv_get_op".into(),
        "({ struct ublksrv_io_desc d = { .op_flags = 0x12345678 }; ublksrv_get_op(&d); })".into(),
        None,
        desc.raw_op().into(),
    );
    t.push(
        "fn:ublksrv_get_flags".into(),
        "({ struct ublksrv_io_desc d = { .op_flags = 0x12345678 }; ublksrv_get_flags(&d); })"
            .into(),
        None,
        // C shifts the flags down; we keep them at their op_flags positions.
        (desc.flags().bits() >> 8).into(),
    );
    t.covers("ublksrv_get_op");
    t.covers("ublksrv_get_flags");
    t.covers("ublk_auto_buf_reg_to_sqe_addr");
    t.covers("ublk_sqe_addr_to_auto_buf_reg");
    let reg = AutoBufReg {
        index: 0xbeef,
        flags: 0x01,
        reserved0: 0x5a,
        reserved1: 0x1234_5678,
    };
    t.push(
        "fn:ublk_auto_buf_reg_to_sqe_addr".into(),
        "({ struct ublk_auto_buf_reg r = { .index = 0xbeef, .flags = 1, .reserved0 = 0x5a, \
         .reserved1 = 0x12345678 }; ublk_auto_buf_reg_to_sqe_addr(&r); })"
            .into(),
        Some("defined(UBLK_AUTO_BUF_REG_FALLBACK)".into()),
        reg.to_sqe_addr().into(),
    );
    t.push(
        "fn:ublk_sqe_addr_to_auto_buf_reg.reserved1".into(),
        "ublk_sqe_addr_to_auto_buf_reg(0x123456785a01beefULL).reserved1".into(),
        Some("defined(UBLK_AUTO_BUF_REG_FALLBACK)".into()),
        AutoBufReg::from_sqe_addr(0x1234_5678_5a01_beef)
            .reserved1
            .into(),
    );
    let zc = ShmemZcAddr {
        index: 0xbeef,
        offset: 0x1234_5678,
    };
    let shmem = Some("defined(UBLK_SHMEM_ZC_IDX_OFF)".to_owned());
    t.push(
        "fn:ublk_shmem_zc_addr".into(),
        "ublk_shmem_zc_addr(0xbeef, 0x12345678)".into(),
        shmem.clone(),
        zc.to_addr().into(),
    );
    // Reserved bits 48-63 set: the helpers must ignore them.
    let packed = 0xa5a5_beef_1234_5678;
    t.push(
        "fn:ublk_shmem_zc_index".into(),
        "ublk_shmem_zc_index(0xa5a5beef12345678ULL)".into(),
        shmem.clone(),
        ShmemZcAddr::from_addr(packed).index.into(),
    );
    t.push(
        "fn:ublk_shmem_zc_offset".into(),
        "ublk_shmem_zc_offset(0xa5a5beef12345678ULL)".into(),
        shmem,
        ShmemZcAddr::from_addr(packed).offset.into(),
    );
    t.covers("ublk_shmem_zc_addr");
    t.covers("ublk_shmem_zc_index");
    t.covers("ublk_shmem_zc_offset");

    t.covers("USER_BLK_DRV_CMD_INC_H");
    consts!(t, {
        req UBLK_CMD_GET_QUEUE_AFFINITY = legacy(CtrlOp::GetQueueAffinity.legacy()),
        req UBLK_CMD_GET_DEV_INFO = legacy(CtrlOp::GetDevInfo.legacy()),
        req UBLK_CMD_ADD_DEV = legacy(CtrlOp::AddDev.legacy()),
        req UBLK_CMD_DEL_DEV = legacy(CtrlOp::DelDev.legacy()),
        req UBLK_CMD_START_DEV = legacy(CtrlOp::StartDev.legacy()),
        req UBLK_CMD_STOP_DEV = legacy(CtrlOp::StopDev.legacy()),
        req UBLK_CMD_SET_PARAMS = legacy(CtrlOp::SetParams.legacy()),
        req UBLK_CMD_GET_PARAMS = legacy(CtrlOp::GetParams.legacy()),
        req UBLK_CMD_START_USER_RECOVERY = legacy(CtrlOp::StartUserRecovery.legacy()),
        req UBLK_CMD_END_USER_RECOVERY = legacy(CtrlOp::EndUserRecovery.legacy()),
        opt UBLK_CMD_GET_DEV_INFO2 = legacy(CtrlOp::GetDevInfo2.legacy()),

        opt UBLK_U_CMD_GET_QUEUE_AFFINITY = CtrlOp::GetQueueAffinity.ioctl(),
        opt UBLK_U_CMD_GET_DEV_INFO = CtrlOp::GetDevInfo.ioctl(),
        opt UBLK_U_CMD_ADD_DEV = CtrlOp::AddDev.ioctl(),
        opt UBLK_U_CMD_DEL_DEV = CtrlOp::DelDev.ioctl(),
        opt UBLK_U_CMD_START_DEV = CtrlOp::StartDev.ioctl(),
        opt UBLK_U_CMD_STOP_DEV = CtrlOp::StopDev.ioctl(),
        opt UBLK_U_CMD_SET_PARAMS = CtrlOp::SetParams.ioctl(),
        opt UBLK_U_CMD_GET_PARAMS = CtrlOp::GetParams.ioctl(),
        opt UBLK_U_CMD_START_USER_RECOVERY = CtrlOp::StartUserRecovery.ioctl(),
        opt UBLK_U_CMD_END_USER_RECOVERY = CtrlOp::EndUserRecovery.ioctl(),
        opt UBLK_U_CMD_GET_DEV_INFO2 = CtrlOp::GetDevInfo2.ioctl(),
        opt UBLK_U_CMD_GET_FEATURES = CtrlOp::GetFeatures.ioctl(),
        opt UBLK_U_CMD_DEL_DEV_ASYNC = CtrlOp::DelDevAsync.ioctl(),
        opt UBLK_U_CMD_UPDATE_SIZE = CtrlOp::UpdateSize.ioctl(),
        opt UBLK_U_CMD_QUIESCE_DEV = CtrlOp::QuiesceDev.ioctl(),
        opt UBLK_U_CMD_TRY_STOP_DEV = CtrlOp::TryStopDev.ioctl(),
        opt UBLK_U_CMD_REG_BUF = CtrlOp::RegBuf.ioctl(),
        opt UBLK_U_CMD_UNREG_BUF = CtrlOp::UnregBuf.ioctl(),
        opt UBLK_SHMEM_BUF_READ_ONLY = ShmemBufFlags::READ_ONLY.bits(),
        opt UBLK_FEATURES_LEN = UBLK_FEATURES_LEN,

        req UBLK_IO_FETCH_REQ = legacy(IoCmdOp::FetchReq.legacy()),
        req UBLK_IO_COMMIT_AND_FETCH_REQ = legacy(IoCmdOp::CommitAndFetchReq.legacy()),
        req UBLK_IO_NEED_GET_DATA = legacy(IoCmdOp::NeedGetData.legacy()),
        opt UBLK_U_IO_FETCH_REQ = IoCmdOp::FetchReq.ioctl(),
        opt UBLK_U_IO_COMMIT_AND_FETCH_REQ = IoCmdOp::CommitAndFetchReq.ioctl(),
        opt UBLK_U_IO_NEED_GET_DATA = IoCmdOp::NeedGetData.ioctl(),
        opt UBLK_U_IO_REGISTER_IO_BUF = IoCmdOp::RegisterIoBuf.ioctl(),
        opt UBLK_U_IO_UNREGISTER_IO_BUF = IoCmdOp::UnregisterIoBuf.ioctl(),
        opt UBLK_U_IO_PREP_IO_CMDS = IoCmdOp::PrepIoCmds.ioctl(),
        opt UBLK_U_IO_COMMIT_IO_CMDS = IoCmdOp::CommitIoCmds.ioctl(),
        opt UBLK_U_IO_FETCH_IO_CMDS = IoCmdOp::FetchIoCmds.ioctl(),
        req UBLK_IO_RES_OK = UBLK_IO_RES_OK,
        req UBLK_IO_RES_NEED_GET_DATA = UBLK_IO_RES_NEED_GET_DATA,
        req UBLK_IO_RES_ABORT = UBLK_IO_RES_ABORT,

        req UBLKSRV_CMD_BUF_OFFSET = UBLKSRV_CMD_BUF_OFFSET,
        req UBLKSRV_IO_BUF_OFFSET = UBLKSRV_IO_BUF_OFFSET,
        req UBLK_MAX_QUEUE_DEPTH = UBLK_MAX_QUEUE_DEPTH,
        opt UBLK_IO_BUF_OFF = UBLK_IO_BUF_OFF,
        opt UBLK_IO_BUF_BITS = UBLK_IO_BUF_BITS,
        opt UBLK_IO_BUF_BITS_MASK = UBLK_IO_BUF_BITS_MASK,
        opt UBLK_TAG_OFF = UBLK_TAG_OFF,
        opt UBLK_TAG_BITS = UBLK_TAG_BITS,
        opt UBLK_TAG_BITS_MASK = UBLK_TAG_BITS_MASK,
        opt UBLK_QID_OFF = UBLK_QID_OFF,
        opt UBLK_QID_BITS = UBLK_QID_BITS,
        opt UBLK_QID_BITS_MASK = UBLK_QID_BITS_MASK,
        opt UBLK_MAX_NR_QUEUES = UBLK_MAX_NR_QUEUES,
        opt UBLKSRV_IO_BUF_TOTAL_BITS = UBLKSRV_IO_BUF_TOTAL_BITS,
        opt UBLKSRV_IO_BUF_TOTAL_SIZE = UBLKSRV_IO_BUF_TOTAL_SIZE,
        opt UBLK_INTEGRITY_FLAG_OFF = UBLK_INTEGRITY_FLAG_OFF,
        opt UBLKSRV_IO_INTEGRITY_FLAG = UBLKSRV_IO_INTEGRITY_FLAG,

        req UBLK_F_SUPPORT_ZERO_COPY = Features::SUPPORT_ZERO_COPY.bits(),
        req UBLK_F_URING_CMD_COMP_IN_TASK = Features::URING_CMD_COMP_IN_TASK.bits(),
        req UBLK_F_NEED_GET_DATA = Features::NEED_GET_DATA.bits(),
        req UBLK_F_USER_RECOVERY = Features::USER_RECOVERY.bits(),
        req UBLK_F_USER_RECOVERY_REISSUE = Features::USER_RECOVERY_REISSUE.bits(),
        opt UBLK_F_UNPRIVILEGED_DEV = Features::UNPRIVILEGED_DEV.bits(),
        opt UBLK_F_CMD_IOCTL_ENCODE = Features::CMD_IOCTL_ENCODE.bits(),
        opt UBLK_F_USER_COPY = Features::USER_COPY.bits(),
        opt UBLK_F_ZONED = Features::ZONED.bits(),
        opt UBLK_F_USER_RECOVERY_FAIL_IO = Features::USER_RECOVERY_FAIL_IO.bits(),
        opt UBLK_F_UPDATE_SIZE = Features::UPDATE_SIZE.bits(),
        opt UBLK_F_AUTO_BUF_REG = Features::AUTO_BUF_REG.bits(),
        opt UBLK_F_QUIESCE = Features::QUIESCE.bits(),
        opt UBLK_F_PER_IO_DAEMON = Features::PER_IO_DAEMON.bits(),
        opt UBLK_F_BUF_REG_OFF_DAEMON = Features::BUF_REG_OFF_DAEMON.bits(),
        opt UBLK_F_BATCH_IO = Features::BATCH_IO.bits(),
        opt UBLK_F_INTEGRITY = Features::INTEGRITY.bits(),
        opt UBLK_F_SAFE_STOP_DEV = Features::SAFE_STOP_DEV.bits(),
        opt UBLK_F_NO_AUTO_PART_SCAN = Features::NO_AUTO_PART_SCAN.bits(),
        opt UBLK_F_SHMEM_ZC = Features::SHMEM_ZC.bits(),
        opt UBLK_F_IO_DESC_SIZE = Features::IO_DESC_SIZE.bits(),

        req UBLK_S_DEV_DEAD = u16::from(DevState::Dead),
        req UBLK_S_DEV_LIVE = u16::from(DevState::Live),
        req UBLK_S_DEV_QUIESCED = u16::from(DevState::Quiesced),
        opt UBLK_S_DEV_FAIL_IO = u16::from(DevState::FailIo),

        req UBLK_IO_OP_READ = IoOp::Read.as_u8(),
        req UBLK_IO_OP_WRITE = IoOp::Write.as_u8(),
        req UBLK_IO_OP_FLUSH = IoOp::Flush.as_u8(),
        req UBLK_IO_OP_DISCARD = IoOp::Discard.as_u8(),
        req UBLK_IO_OP_WRITE_SAME = IoOp::WriteSame.as_u8(),
        req UBLK_IO_OP_WRITE_ZEROES = IoOp::WriteZeroes.as_u8(),
        opt UBLK_IO_OP_ZONE_OPEN = IoOp::ZoneOpen.as_u8(),
        opt UBLK_IO_OP_ZONE_CLOSE = IoOp::ZoneClose.as_u8(),
        opt UBLK_IO_OP_ZONE_FINISH = IoOp::ZoneFinish.as_u8(),
        opt UBLK_IO_OP_ZONE_APPEND = IoOp::ZoneAppend.as_u8(),
        opt UBLK_IO_OP_ZONE_RESET_ALL = IoOp::ZoneResetAll.as_u8(),
        opt UBLK_IO_OP_ZONE_RESET = IoOp::ZoneReset.as_u8(),
        opt UBLK_IO_OP_REPORT_ZONES = IoOp::ReportZones.as_u8(),

        req UBLK_IO_F_FAILFAST_DEV = IoFlags::FAILFAST_DEV.bits(),
        req UBLK_IO_F_FAILFAST_TRANSPORT = IoFlags::FAILFAST_TRANSPORT.bits(),
        req UBLK_IO_F_FAILFAST_DRIVER = IoFlags::FAILFAST_DRIVER.bits(),
        req UBLK_IO_F_META = IoFlags::META.bits(),
        req UBLK_IO_F_FUA = IoFlags::FUA.bits(),
        req UBLK_IO_F_NOUNMAP = IoFlags::NOUNMAP.bits(),
        req UBLK_IO_F_SWAP = IoFlags::SWAP.bits(),
        opt UBLK_IO_F_NEED_REG_BUF = IoFlags::NEED_REG_BUF.bits(),
        opt UBLK_IO_F_INTEGRITY = IoFlags::INTEGRITY.bits(),
        opt UBLK_IO_F_SHMEM_ZC = IoFlags::SHMEM_ZC.bits(),

        opt UBLK_AUTO_BUF_REG_FALLBACK = AutoBufRegFlags::FALLBACK.bits(),
        opt UBLK_AUTO_BUF_REG_F_MASK = AutoBufRegFlags::all().bits(),

        opt UBLK_BATCH_F_HAS_ZONE_LBA = BatchFlags::HAS_ZONE_LBA.bits(),
        opt UBLK_BATCH_F_HAS_BUF_ADDR = BatchFlags::HAS_BUF_ADDR.bits(),
        opt UBLK_BATCH_F_AUTO_BUF_REG_FALLBACK = BatchFlags::AUTO_BUF_REG_FALLBACK.bits(),

        opt UBLK_SHMEM_ZC_OFF_MASK = UBLK_SHMEM_ZC_OFF_MASK,
        opt UBLK_SHMEM_ZC_IDX_OFF = UBLK_SHMEM_ZC_IDX_OFF,
        opt UBLK_SHMEM_ZC_IDX_MASK = UBLK_SHMEM_ZC_IDX_MASK,

        req UBLK_ATTR_READ_ONLY = BasicAttrs::READ_ONLY.bits(),
        req UBLK_ATTR_ROTATIONAL = BasicAttrs::ROTATIONAL.bits(),
        req UBLK_ATTR_VOLATILE_CACHE = BasicAttrs::VOLATILE_CACHE.bits(),
        req UBLK_ATTR_FUA = BasicAttrs::FUA.bits(),
        opt UBLK_MIN_SEGMENT_SIZE = UBLK_MIN_SEGMENT_SIZE,

        req UBLK_PARAM_TYPE_BASIC = ParamTypes::BASIC.bits(),
        req UBLK_PARAM_TYPE_DISCARD = ParamTypes::DISCARD.bits(),
        opt UBLK_PARAM_TYPE_DEVT = ParamTypes::DEVT.bits(),
        opt UBLK_PARAM_TYPE_ZONED = ParamTypes::ZONED.bits(),
        opt UBLK_PARAM_TYPE_DMA_ALIGN = ParamTypes::DMA_ALIGN.bits(),
        opt UBLK_PARAM_TYPE_SEGMENT = ParamTypes::SEGMENT.bits(),
        opt UBLK_PARAM_TYPE_INTEGRITY = ParamTypes::INTEGRITY.bits(),

        // What ublk_param_integrity's flags and csum_type hold, from <linux/fs.h>.
        fs LBMD_PI_CAP_INTEGRITY = IntegrityCaps::INTEGRITY.bits(),
        fs LBMD_PI_CAP_REFTAG = IntegrityCaps::REFTAG.bits(),
        fs LBMD_PI_CSUM_NONE = u8::from(IntegrityCsum::None),
        fs LBMD_PI_CSUM_IP = u8::from(IntegrityCsum::Ip),
        fs LBMD_PI_CSUM_CRC16_T10DIF = u8::from(IntegrityCsum::Crc16T10Dif),
        fs LBMD_PI_CSUM_CRC64_NVME = u8::from(IntegrityCsum::Crc64Nvme),
    });
    t
}

const PRELUDE: &str = "#include <stddef.h>\n#include <stdio.h>\n#include <errno.h>\n\
                       #include <linux/ioctl.h>\n#include <linux/fs.h>\n\
                       #include <linux/ublk_cmd.h>\n";

fn c_program(probes: &[Probe]) -> String {
    let mut c = String::from(PRELUDE);
    c.push_str("int main(void)\n{\n");
    for p in probes {
        let print = format!(
            "\tprintf(\"%s %lld\\n\", \"{}\", (long long)({}));\n",
            p.key, p.c_expr
        );
        match &p.guard {
            None => c.push_str(&print),
            Some(guard) => {
                let _ = write!(
                    c,
                    "#if {guard}\n{print}#else\n\tprintf(\"%s ABSENT\\n\", \"{}\");\n#endif\n",
                    p.key
                );
            }
        }
    }
    c.push_str("\treturn 0;\n}\n");
    c
}

/// A scratch directory removed on drop unless the test failed (kept for debugging).
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir =
            std::env::temp_dir().join(format!("ublk-uapi-c-header-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create scratch dir in temp_dir");
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn gcc(args: &[&std::ffi::OsStr], what: &str) -> String {
    let include = std::env::var_os("UBLK_CMD_H_DIR");
    let mut cmd = Command::new("gcc");
    if let Some(dir) = &include {
        cmd.arg("-I").arg(dir);
    }
    cmd.args(args);
    let out = match cmd.output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "gcc not found: this test compiles C against <linux/ublk_cmd.h>; \
             install gcc and linux-libc-dev (apt-get install gcc linux-libc-dev)"
        ),
        Err(e) => panic!("running gcc: {e}"),
    };
    assert!(
        out.status.success(),
        "gcc failed to {what} ({:?}); is linux-libc-dev installed?\n{}",
        cmd,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("gcc output is UTF-8")
}

fn run_probes(dir: &Path, probes: &[Probe]) -> BTreeMap<String, Option<i128>> {
    let src = dir.join("probe.c");
    let exe = dir.join("probe");
    std::fs::write(&src, c_program(probes)).expect("write probe.c");
    gcc(
        &[
            "-std=gnu11".as_ref(),
            "-Wall".as_ref(),
            "-o".as_ref(),
            exe.as_os_str(),
            src.as_os_str(),
        ],
        "compile the probe program",
    );
    let out = Command::new(&exe).output().expect("run the probe program");
    assert!(
        out.status.success(),
        "probe program failed: {:?}",
        out.status
    );
    let stdout = String::from_utf8(out.stdout).expect("probe output is UTF-8");
    stdout
        .lines()
        .map(|line| {
            let (key, value) = line.rsplit_once(' ').expect("KEY VALUE line");
            let value = match value {
                "ABSENT" => None,
                v => Some(
                    v.parse()
                        .unwrap_or_else(|_| panic!("bad value in {line:?}")),
                ),
            };
            (key.to_owned(), value)
        })
        .collect()
}

/// Every `UBLK*` object-like or function-like macro the header defines (`gcc -dM -E`),
/// and every `ublk*` inline function (which `-dM` does not list) found in the
/// preprocessed header.
fn header_macros(dir: &Path) -> BTreeSet<String> {
    let src = dir.join("macros.c");
    std::fs::write(&src, PRELUDE).expect("write macros.c");
    let defines = gcc(
        &["-dM".as_ref(), "-E".as_ref(), src.as_os_str()],
        "list the header's macros",
    );
    let mut names: BTreeSet<String> = defines
        .lines()
        .filter_map(|l| l.strip_prefix("#define "))
        .map(|rest| rest.split([' ', '(']).next().unwrap_or_default().to_owned())
        .filter(|n| n.starts_with("UBLK") || n == "USER_BLK_DRV_CMD_INC_H")
        .collect();
    let preprocessed = gcc(&["-E".as_ref(), src.as_os_str()], "preprocess the header");
    names.extend(inline_functions(&preprocessed).filter(|n| n.starts_with("ublk")));
    names
}

/// Names of the `static inline` (or `__inline__`, as headers_install spells it) functions
/// defined in preprocessed C: the identifier before the first `(` after the keywords.
fn inline_functions(c: &str) -> impl Iterator<Item = String> + '_ {
    c.split("static").skip(1).filter_map(|rest| {
        let rest = rest.trim_start();
        let rest = ["__inline__", "__inline", "inline"]
            .iter()
            .find_map(|kw| rest.strip_prefix(kw))?;
        let end = rest.find(['(', ';', '{', '='])?;
        if !rest[end..].starts_with('(') {
            return None;
        }
        let ident = rest[..end]
            .split(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_'))
            .rfind(|tok| !tok.is_empty())?;
        Some(ident.to_owned())
    })
}

/// `UBLK_CMD_H_REQUIRE_ALL`: `1` demands that the header have every item; unset or `0`
/// reports the absent ones.
fn require_all() -> bool {
    match std::env::var("UBLK_CMD_H_REQUIRE_ALL") {
        Err(std::env::VarError::NotPresent) => false,
        Ok(v) if v == "0" => false,
        Ok(v) if v == "1" => true,
        Ok(v) => panic!("UBLK_CMD_H_REQUIRE_ALL must be 0 or 1, not {v:?}"),
        Err(e) => panic!("UBLK_CMD_H_REQUIRE_ALL: {e}"),
    }
}

#[test]
fn layouts_and_constants_match_the_c_header() {
    let require_all = require_all();
    let table = table();
    let scratch = Scratch::new();
    let results = run_probes(&scratch.0, &table.probes);

    let mut mismatches = Vec::new();
    let mut missing_always = Vec::new();
    let mut missing_newer = Vec::new();
    let mut absent = Vec::new();
    let mut compared = 0usize;
    for p in &table.probes {
        match results.get(&p.key) {
            None => panic!("probe {} printed nothing", p.key),
            Some(None) => match p.presence {
                Presence::Always => missing_always.push(p.key.as_str()),
                Presence::Newer if require_all => missing_newer.push(p.key.as_str()),
                Presence::Newer | Presence::Older | Presence::OtherHeader => {
                    absent.push(p.key.as_str())
                }
            },
            Some(Some(c)) => {
                compared += 1;
                if *c != p.ours {
                    mismatches.push(format!("{}: C {} != Rust {}", p.key, c, p.ours));
                }
            }
        }
    }
    eprintln!(
        "compared {compared} values with <linux/ublk_cmd.h>{}; {} absent from this header: \
         {absent:?}",
        if require_all {
            " (UBLK_CMD_H_REQUIRE_ALL=1)"
        } else {
            ""
        },
        absent.len()
    );
    assert!(
        mismatches.is_empty(),
        "Rust and C disagree:\n{}",
        mismatches.join("\n")
    );
    assert!(
        missing_always.is_empty(),
        "header lacks items every supported header (Linux >= 6.1) has: {missing_always:?}"
    );
    assert!(
        missing_newer.is_empty(),
        "UBLK_CMD_H_REQUIRE_ALL=1 but the header lacks items of {CRATE_HEADER}'s: \
         {missing_newer:?}"
    );
    assert!(
        compared >= MIN_COMPARED,
        "only {compared} values compared (floor {MIN_COMPARED}): the harness is broken"
    );
}

#[test]
fn every_header_macro_is_covered() {
    let require_all = require_all();
    let table = table();
    let scratch = Scratch::new();
    let in_header = header_macros(&scratch.0);
    let uncovered: Vec<_> = in_header.difference(&table.macros).collect();
    // A header newer than ours defines feature flags we do not know yet: unless asked to
    // be strict, report what it adds instead of failing, since the crate only claims
    // CRATE_HEADER.
    let newer_header = uncovered.iter().any(|n| n.starts_with("UBLK_F_"));
    if newer_header && !require_all {
        eprintln!("header is newer than {CRATE_HEADER}; not covered: {uncovered:?}");
    } else {
        assert!(
            uncovered.is_empty(),
            "the header defines names our tables do not cover: {uncovered:?}"
        );
    }
    eprintln!(
        "{} UBLK macros and ublk inline functions in the header, {} covered",
        in_header.len(),
        in_header.len() - uncovered.len()
    );
    assert!(
        in_header.len() >= 45,
        "only {} UBLK macros found: wrong header?",
        in_header.len()
    );
    // The inline-function scan must find what every supported header has.
    for name in ["ublksrv_get_op", "ublksrv_get_flags"] {
        assert!(
            in_header.contains(name),
            "{name} not found: the scan is broken"
        );
    }
}

#[test]
fn inline_function_scan_reads_both_spellings() {
    let c = "static inline __u8 ublksrv_get_op(const struct x *iod)\n{}\n\
             static __inline__ struct ublk_auto_buf_reg ublk_sqe_addr_to_auto_buf_reg(\n\
             __u64 a) {}\nstatic __inline__ __u64\nublk_auto_buf_reg_to_sqe_addr(void);\n\
             static int not_inline(void); static inline int x = 1;";
    let names: Vec<_> = inline_functions(c).collect();
    assert_eq!(
        names,
        [
            "ublksrv_get_op",
            "ublk_sqe_addr_to_auto_buf_reg",
            "ublk_auto_buf_reg_to_sqe_addr"
        ]
    );
}
