//! The crate's one error type, and the warnings a server may want to log.

use std::fmt;
use std::io;
use std::time::Duration;

use rustix::io::Errno;
use ublk_ring::types::SetupFlags;
use ublk_uapi::Features;

use crate::limits::MAX_DEV_ID;

/// What went wrong creating, serving or stopping a ublk device.
///
/// Errors from the kernel carry the errno; each message says what to check or do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The device size is zero or not a multiple of the block size.
    #[error(
        "invalid device size {size} bytes: it must be a non-zero multiple of the block size ({block_size} bytes)"
    )]
    InvalidSize {
        /// The size asked for.
        size: u64,
        /// The logical block size it must be a multiple of.
        block_size: u32,
    },

    /// The block size is not a power of two between 512 and 4096.
    #[error("invalid block size {0}: ublk accepts a power of two from 512 to 4096 (the page size)")]
    InvalidBlockSize(u32),

    /// The queue depth is 0 or above the kernel's limit.
    #[error("invalid queue depth {0}: it must be 1..=4096 (UBLK_MAX_QUEUE_DEPTH)")]
    InvalidDepth(u16),

    /// The chosen device id is beyond what the driver can number (`UBLK_MAX_UBLKS`).
    #[error("invalid device id {0}: it must be below {max} (the driver's minor numbers)", max = MAX_DEV_ID + 1)]
    InvalidId(u32),

    /// The number of queues is 0 or above the kernel's limit.
    #[error("invalid number of queues {0}: it must be 1..=4096 (UBLK_MAX_NR_QUEUES)")]
    InvalidQueues(u16),

    /// The largest I/O is not a whole number of pages, or above 32 MiB.
    #[error(
        "invalid max I/O size {bytes} bytes: it must be a non-zero multiple of the page size \
         ({page} bytes), at most 32 MiB"
    )]
    InvalidMaxIoBytes {
        /// The size asked for.
        bytes: u32,
        /// The page size it must be a multiple of.
        page: usize,
    },

    /// Discard parameters the kernel would refuse.
    #[error("invalid discard parameters: {0}")]
    InvalidDiscard(&'static str),

    /// Features the engine cannot serve (it passes buffer addresses with every command, so no
    /// USER_COPY, NEED_GET_DATA, zero copy, AUTO_BUF_REG, PER_IO_DAEMON or zoned devices).
    #[error("features not supported by this engine: {0}")]
    UnsupportedFeatures(Features),

    /// The target needs request data in server memory (`Target::needs_memory`), which a device
    /// in a zero-copy mode does not have.
    #[error(
        "this target reads and writes request data in memory, which a {mode} device keeps in the \
         kernel's pages: create the device in copy or user-copy mode"
    )]
    TargetNeedsMemory {
        /// The device's buffer mode.
        mode: crate::BufferMode,
    },

    /// A control command failed.
    #[error(transparent)]
    Ctrl(#[from] ublk_ctrl::Error),

    /// A queue's io_uring failed.
    #[error("io_uring: {0}")]
    Ring(#[from] ublk_ring::Error),

    /// `/dev/ublkcN` could not be opened.
    #[error("cannot open {path}: {source}{hint}", hint = char_dev_hint(*source))]
    OpenCharDev {
        /// The path.
        path: String,
        /// The errno from `open`.
        #[source]
        source: Errno,
    },

    /// Mapping a queue's descriptor array or I/O buffers failed.
    #[error("queue {q}: cannot map {what}: {source}")]
    Mmap {
        /// The queue.
        q: u16,
        /// `"the I/O descriptors"` or `"the I/O buffers"`.
        what: &'static str,
        /// The error from `mmap`.
        #[source]
        source: io::Error,
    },

    /// A system call that sets up a queue failed (the eventfd that wakes queues, ...).
    #[error("{what} failed: {source}")]
    Setup {
        /// What was being done.
        what: &'static str,
        /// The errno.
        #[source]
        source: Errno,
    },

    /// The target's [`open_queue`](crate::Target::open_queue) failed.
    #[error("queue {q}: the target could not open the queue: {source}")]
    OpenQueue {
        /// The queue.
        q: u16,
        /// What the target returned.
        #[source]
        source: io::Error,
    },

    /// A queue thread could not be started.
    #[error("queue {q}: cannot spawn its thread: {source}")]
    Spawn {
        /// The queue.
        q: u16,
        /// The error from `std::thread::Builder::spawn`.
        #[source]
        source: io::Error,
    },

    /// The kernel rejected an I/O command (FETCH_REQ or COMMIT_AND_FETCH_REQ).
    #[error("queue {q} tag {tag}: the kernel rejected the I/O command: {source}{hint}", hint = io_cmd_hint(*source))]
    IoCommand {
        /// The queue.
        q: u16,
        /// The tag.
        tag: u16,
        /// The errno in the CQE.
        #[source]
        source: Errno,
    },

    /// The kernel rejected a batch command (PREP_IO_CMDS, FETCH_IO_CMDS or COMMIT_IO_CMDS).
    #[error("queue {q}: the kernel rejected {command}{}: {source}{hint}",
        tag.map(|t| format!(" at tag {t}")).unwrap_or_default(), hint = batch_cmd_hint(*source))]
    BatchCommand {
        /// The queue.
        q: u16,
        /// The command, in the kernel's words.
        command: &'static str,
        /// The first element the kernel refused, where it says.
        tag: Option<u16>,
        /// The errno in the CQE.
        #[source]
        source: Errno,
    },

    /// A batch fetch handed over a tag this queue thread does not serve, or more tags than
    /// the queue has: the kernel and the server disagree about the queue.
    #[error(
        "queue {q}: a batch fetch handed over tag {tag}, which this queue thread does not serve"
    )]
    BadFetchedTag {
        /// The queue.
        q: u16,
        /// The tag.
        tag: u16,
    },

    /// The device's command mode cannot go with another of its choices.
    #[error("{0}")]
    CommandModeConflict(&'static str),

    /// More threads than the device can use were asked for, or fewer than its queues.
    #[error("{threads} threads for {queues} queues: {reason}")]
    InvalidThreads {
        /// Threads asked for.
        threads: u16,
        /// The device's queues.
        queues: u16,
        /// Why not.
        reason: &'static str,
    },

    /// An I/O command completed with a result this server never asked for.
    #[error(
        "queue {q} tag {tag}: unexpected I/O command result {res} (UBLK_IO_RES_NEED_GET_DATA without the feature?)"
    )]
    UnexpectedResult {
        /// The queue.
        q: u16,
        /// The tag.
        tag: u16,
        /// The result.
        res: i32,
    },

    /// A target SQE completed for a tag the target does not own: a bookkeeping bug.
    #[error("queue {q}: a target completion arrived for tag {tag}, which the target does not own")]
    StrayCompletion {
        /// The queue.
        q: u16,
        /// The tag in the completion's user_data.
        tag: u16,
    },

    /// A draining queue could not send its last commits before leaving: the kernel pushed
    /// back every submission for the whole leave timeout. The requests they finish are failed
    /// or reissued as the device's recovery mode says.
    #[error(
        "queue {q}: the kernel refused the queue's last commits for {after:?}; the requests they \
         finish are failed or reissued as the device's recovery mode says"
    )]
    CommitsNotSent {
        /// The queue.
        q: u16,
        /// How long it tried.
        after: std::time::Duration,
    },

    /// More completions of the target's own SQEs arrived than it pushed: a bookkeeping bug.
    #[error("queue {q}: a completion with key {key} arrived for an SQE the target never pushed")]
    StrayOwnedCompletion {
        /// The queue.
        q: u16,
        /// The key in the completion's user_data.
        key: u32,
    },

    /// Not every queue fetched its tags in time, so START_DEV was not sent.
    #[error(
        "only {ready} of {queues} queues were ready (every tag fetched) after {after:?}: \
         a target's open_queue may be blocking"
    )]
    FetchTimeout {
        /// Queues that were ready.
        ready: usize,
        /// Queues in all.
        queues: usize,
        /// The deadline that passed.
        after: Duration,
    },

    /// A queue thread stopped before it was ready, without an error of its own (it was woken to exit).
    #[error("queue {q} exited before it was ready")]
    QueueExited {
        /// The queue.
        q: u16,
    },

    /// A queue thread panicked (in the target's code, most likely).
    #[error("queue {q} panicked")]
    QueuePanicked {
        /// The queue.
        q: u16,
    },

    /// A queue failed; `source` says how.
    #[error("queue {q}: {source}")]
    Queue {
        /// The queue.
        q: u16,
        /// What went wrong in it.
        #[source]
        source: Box<Error>,
    },

    /// A queue failed while the device was serving. A device with user recovery was left for a
    /// new server (QUIESCED or FAIL_IO, its users' I/O waiting or failing as its recovery mode
    /// says); any other was stopped, failing its I/O, and deleted.
    #[error(
        "{source}; {}{}",
        if *left_for_recovery {
            "the device is left for a new server: recover it (`ublk recover`) or delete it"
        } else {
            "the device was stopped"
        },
        aftermath.as_ref().map(|e| format!(" (then: {e})")).unwrap_or_default()
    )]
    QueueFailed {
        /// The device.
        dev_id: u32,
        /// Whether the device waits for a new server ([`Device::recover`](crate::Device::recover)).
        left_for_recovery: bool,
        /// How the queue failed.
        #[source]
        source: Box<Error>,
        /// What went wrong leaving or stopping the device afterwards, if anything.
        aftermath: Option<Box<Error>>,
    },

    /// The device was created without user recovery, so no new server can take it over.
    #[error(
        "device {dev_id} was created without user recovery (UBLK_F_USER_RECOVERY), so it cannot \
         be recovered: delete it and add it again with recovery"
    )]
    RecoveryNotEnabled {
        /// The device.
        dev_id: u32,
    },

    /// Handing a device over needs QUIESCE_DEV (Linux 6.16): on older kernels a server whose
    /// queues leave while it keeps running can leave the driver's device lock held for good
    /// (seen on 6.12), so nothing can act on the device afterwards.
    #[error(
        "device {dev_id} cannot be handed over: that needs QUIESCE (Linux 6.16), which `ublk add` \
         asks for where the kernel has it; stop its server instead, or kill it and start a new \
         one with `ublk recover`"
    )]
    HandOverNeedsQuiesce {
        /// The device.
        dev_id: u32,
    },

    /// Handing a device over would fail the requests its server holds: the kernel lacks
    /// QUIESCE_DEV and the device does not reissue them.
    #[error(
        "device {dev_id} cannot be handed over without failing the requests in flight: that needs \
         {}a device added with `--recovery reissue`",
        if *batch { "(for a batch I/O device) " } else { "QUIESCE (Linux 6.16), or " }
    )]
    HandOverUnsafe {
        /// The device.
        dev_id: u32,
        /// It uses batch I/O, whose QUIESCE_DEV fails new requests until the next server.
        batch: bool,
    },

    /// Recovery was asked for a device whose server is running.
    #[error(
        "device {dev_id} is LIVE and its server (pid {pid}) is running: there is nothing to recover"
    )]
    ServerRunning {
        /// The device.
        dev_id: u32,
        /// The server's pid, as the kernel recorded it.
        pid: i32,
    },

    /// The device is in a state no server can recover it from.
    #[error(
        "device {dev_id} is {state}: it was stopped or never started, so it cannot be recovered \
         (delete it)"
    )]
    NotRecoverable {
        /// The device.
        dev_id: u32,
        /// The kernel's name for its state.
        state: &'static str,
    },

    /// The device did not become recoverable before the deadline; nothing was changed.
    #[error(
        "device {dev_id} was still {state} after {after:?}, so recovery could not start: {hint}"
    )]
    RecoveryTimeout {
        /// The device.
        dev_id: u32,
        /// The kernel's name for its state at the deadline.
        state: &'static str,
        /// What is most likely holding it up.
        hint: &'static str,
        /// The deadline that passed.
        after: Duration,
    },

    /// Recovery failed after START_USER_RECOVERY; the device was stopped and deleted, since the
    /// kernel cannot retry a half-done recovery (see [`Recovering`](crate::Recovering)).
    #[error(
        "recovering device {dev_id} failed, so it was stopped and deleted (the kernel cannot retry \
         a half-done recovery): {source}"
    )]
    RecoveryFailed {
        /// The device.
        dev_id: u32,
        /// What went wrong.
        #[source]
        source: Box<Error>,
    },
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn char_dev_hint(errno: Errno) -> &'static str {
    match errno {
        Errno::BUSY => " (another server has it open: the char device opens exclusively)",
        Errno::NOENT => " (the device node did not appear: is devtmpfs mounted on /dev?)",
        Errno::ACCESS | Errno::PERM => " (run as root)",
        _ => "",
    }
}

fn io_cmd_hint(errno: Errno) -> &'static str {
    match errno {
        Errno::INVAL => {
            " (a command from another thread than the queue's, or a bad buffer address)"
        }
        Errno::BUSY => " (the tag already has a command pending, or the queue is already set up)",
        _ => "",
    }
}

fn batch_cmd_hint(errno: Errno) -> &'static str {
    match errno {
        Errno::BUSY => {
            " (a commit for a request the server does not hold, or the queue is already prepared)"
        }
        Errno::INVAL => " (a malformed batch command or element)",
        Errno::NOBUFS => " (no fetch buffer was available)",
        _ => "",
    }
}

/// Something a queue could not set up as asked but serves without; worth a log line.
///
/// Collected by [`Device::serve`](crate::Device::serve) and returned by
/// [`Serving::warnings`](crate::Serving::warnings); the library never prints.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Warning {
    /// PR_SET_IO_FLUSHER was refused (it needs CAP_SYS_RESOURCE): under memory pressure the queue
    /// thread may be throttled by the write-back it is serving.
    IoFlusher {
        /// The queue.
        q: u16,
        /// The errno from `prctl`.
        errno: Errno,
    },
    /// GET_QUEUE_AFFINITY failed, so the queue thread is not pinned.
    AffinityUnknown {
        /// The queue.
        q: u16,
        /// The control error, as text.
        reason: String,
    },
    /// `sched_setaffinity` to the kernel's CPU set for the queue failed, so the thread is not pinned.
    AffinityRefused {
        /// The queue.
        q: u16,
        /// The errno.
        errno: Errno,
    },
    /// `sched_setscheduler` refused the queue thread's policy; it runs under SCHED_OTHER.
    SchedPolicyRefused {
        /// The queue.
        q: u16,
        /// The errno.
        errno: Errno,
    },
    /// The kernel refused optional io_uring setup flags; the queue runs without them.
    RingFlagsRefused {
        /// The queue.
        q: u16,
        /// The flags that were dropped.
        flags: SetupFlags,
    },
    /// The target asked for the I/O buffers to be registered with the ring
    /// ([`QueueTarget::register_buffers`](crate::QueueTarget::register_buffers)) and the kernel
    /// refused (pinning them is charged to RLIMIT_MEMLOCK); the target uses plain addresses.
    BuffersNotRegistered {
        /// The queue.
        q: u16,
        /// The errno from IORING_REGISTER_BUFFERS.
        errno: Errno,
    },
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Warning::IoFlusher { q, errno } => write!(
                f,
                "queue {q}: PR_SET_IO_FLUSHER refused ({errno}); the queue may be throttled under memory \
                 pressure (grant CAP_SYS_RESOURCE)"
            ),
            Warning::AffinityUnknown { q, reason } => {
                write!(
                    f,
                    "queue {q}: GET_QUEUE_AFFINITY failed ({reason}); the thread is not pinned"
                )
            }
            Warning::SchedPolicyRefused { q, errno } => write!(
                f,
                "queue {q}: sched_setscheduler failed ({errno}); the thread runs under SCHED_OTHER"
            ),
            Warning::AffinityRefused { q, errno } => {
                write!(
                    f,
                    "queue {q}: sched_setaffinity failed ({errno}); the thread is not pinned"
                )
            }
            Warning::RingFlagsRefused { q, flags } => {
                write!(
                    f,
                    "queue {q}: the kernel refused io_uring flags {flags:?}; running without them"
                )
            }
            Warning::BuffersNotRegistered { q, errno } => write!(
                f,
                "queue {q}: cannot register the I/O buffers with io_uring ({errno}); serving with \
                 plain buffers (raise RLIMIT_MEMLOCK)"
            ),
        }
    }
}
