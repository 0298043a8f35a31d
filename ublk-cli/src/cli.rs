//! The command line, as clap reads it. Every flag's help here is what `--help` prints.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use ublk_queue::{Affinity, Batching, BufferMode, CommandMode, QueueOptions, SchedPolicy};
use ublk_targets::BackingIo;
use ublk_uapi::Features;

use crate::nbd::NbdArgs;
use crate::size::parse_size;

/// Create, list and delete Linux ublk block devices served by this process's targets.
///
/// Needs root (CAP_SYS_ADMIN) and the ublk_drv module (`modprobe ublk_drv`). Set RUST_LOG=debug for
/// more detail.
#[derive(Debug, Parser)]
#[command(name = "ublk", version, about, long_about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a device and serve it: prints its id and /dev/ublkbN once it is live.
    ///
    /// By default the server keeps running in the background (its messages go to
    /// /run/ublk/server.log) and this command returns; with --foreground it serves in the
    /// foreground until SIGINT/SIGTERM or `ublk del`, which stop and delete the device.
    Add {
        #[command(subcommand)]
        target: TargetArgs,
    },
    /// List ublk devices: id, state, size, queues, depth, server pid, target and features.
    List {
        /// Print JSON (an array of objects) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Stop and delete devices; their servers exit.
    ///
    /// A device served by `ublk` is deleted by its own server, asked to stop with SIGTERM; a
    /// server that is stopped (SIGSTOP) or does not stop in time is named, with what to do,
    /// and the device is left as it is: `del` never waits on a server that cannot answer.
    /// Devices without a server are deleted at once; a server of another program gets STOP_DEV.
    Del {
        /// The device id to delete (as `ublk list` shows it).
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<u32>,
        /// Delete every ublk device.
        #[arg(long)]
        all: bool,
        /// Kill the server first (SIGKILL): for a server that is stopped or stuck. Its
        /// requests fail, or wait for `ublk recover` on a device with recovery.
        #[arg(long)]
        force: bool,
        /// How long, in seconds, each server gets to stop (or to die, with --force).
        #[arg(long, default_value_t = 30, value_name = "SECS",
              value_parser = clap::value_parser!(u64).range(1..=MAX_TIMEOUT_SECS))]
        timeout: u64,
    },
    /// Serve a device again after its server died (devices added with --recovery).
    ///
    /// Starts a new server the way the device's record under /run/ublk/ says `ublk add` started
    /// it (same target and options), which takes the device over: START_USER_RECOVERY, every queue
    /// fetches, END_USER_RECOVERY. The device's users keep their open files, and the I/O that
    /// waited meanwhile goes on. Prints `ID /dev/ublkbID` once the device is LIVE again. Like
    /// `add`, the server runs in the background unless --foreground.
    Recover(RecoverArgs),
    /// Give a live device a new size (Linux 6.16): its store grows or shrinks with it, and its
    /// users see the new size (`blockdev --getsize64`; grow a file system with resize2fs).
    ///
    /// A loop device's file grows (sparse) or shrinks, a RAM disk's memory with it; shrinking
    /// below data written to the store is refused unless --force. The device's server does the
    /// resizing, asked through its control socket (/run/ublk/ID.sock).
    Resize {
        /// The device id.
        id: u32,
        /// The new size (bytes, or with a K/M/G/T suffix), a multiple of the block size.
        #[arg(value_parser = parse_size)]
        size: u64,
        /// Shrink even below data written to the store (it is lost).
        #[arg(long)]
        force: bool,
        /// Internal: where the device records and sockets are (tests use a scratch directory).
        #[arg(long, hide = true, default_value = crate::record::RECORD_DIR)]
        record_dir: PathBuf,
    },
    /// Hand a live device over to a new server, for an upgrade of the server: its users keep
    /// their open files and their I/O goes on.
    ///
    /// The running server stops serving without deleting the device, and a new one takes it
    /// over as `ublk recover` does. No request fails: the kernel lets those in flight finish
    /// first (QUIESCE, Linux 6.16; older kernels are refused); a batch I/O device must have been
    /// added with `--recovery reissue`, which replays them. Not for RAM disks (their data would
    /// be lost).
    Restart(RestartArgs),
    /// Show what this kernel's ublk_drv supports, by feature name.
    Features,
    /// Show what a device's server is doing: requests, bytes and errors per operation (totals
    /// and rates), latency percentiles (P50, P99, P99.9 of the time the server held each
    /// request), requests in flight, and the queues' own figures.
    ///
    /// Asks the device's running server through its control socket (/run/ublk/ID.sock, root
    /// only); a device whose server is gone has no figures, and that is an error. Rates and
    /// percentiles cover the time since the server started, or with --watch each interval.
    Stats(StatsArgs),
}

/// `ublk stats`'s options.
#[derive(Debug, Args)]
pub struct StatsArgs {
    /// The device id (as `ublk list` shows it).
    pub id: u32,
    /// Print JSON (one object per sample) instead of a table.
    #[arg(long, conflicts_with = "prometheus")]
    pub json: bool,
    /// Print a sample every SECS seconds, with rates and percentiles over each interval, until
    /// interrupted or the server exits.
    #[arg(long, value_name = "SECS", conflicts_with = "prometheus",
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub watch: Option<u64>,
    /// Print the Prometheus text exposition format, as `ublk add --metrics` serves it.
    #[arg(long)]
    pub prometheus: bool,
    /// Internal: where the device records and sockets are (tests use a scratch directory).
    #[arg(long, hide = true, default_value = crate::record::RECORD_DIR)]
    pub record_dir: PathBuf,
}

/// The longest `--timeout`: a year (what the control plane accepts).
pub const MAX_TIMEOUT_SECS: u64 = ublk_ctrl::MAX_TIMEOUT.as_secs();

/// `ublk recover`'s options.
#[derive(Debug, Args)]
pub struct RecoverArgs {
    /// The device id (as `ublk list` shows it).
    pub id: u32,
    /// How long to wait, in seconds, for the kernel to notice that the old server died and for its
    /// files to close (normally moments; up to the 30 s request timeout if every request was in
    /// the old server's hands), and for each step after.
    #[arg(long, default_value_t = 60, value_name = "SECS",
          value_parser = clap::value_parser!(u64).range(1..=MAX_TIMEOUT_SECS))]
    pub timeout: u64,
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// `ublk restart`'s options.
#[derive(Debug, Args)]
pub struct RestartArgs {
    /// The device id (as `ublk list` shows it).
    pub id: u32,
    /// How long, in seconds, the old server may take to hand the device over and exit, and
    /// the new one each step of taking it over.
    #[arg(long, default_value_t = 60, value_name = "SECS",
          value_parser = clap::value_parser!(u64).range(1..=MAX_TIMEOUT_SECS))]
    pub timeout: u64,
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// Where the server runs and how it reports: options `add` and `recover` share.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Serve in the foreground (for systemd): SIGINT/SIGTERM stop and delete the device and exit 0.
    #[arg(long)]
    pub foreground: bool,
    /// Internal: the background server reports readiness on this file descriptor.
    #[arg(long, hide = true)]
    pub ready_fd: Option<i32>,
    /// Internal: where the device records are (tests use a scratch directory).
    #[arg(long, hide = true, default_value = crate::record::RECORD_DIR)]
    pub record_dir: PathBuf,
}

impl ServeArgs {
    /// Whether this process serves the device (in the foreground, or as the background server
    /// a parent started) rather than starting a background server.
    pub fn here(&self) -> bool {
        self.foreground || self.ready_fd.is_some()
    }
}

/// The target to serve, with its own options.
#[derive(Debug, Subcommand)]
pub enum TargetArgs {
    /// Completes every request at once without moving data, like the kernel's null_blk.
    Null {
        /// Device size (bytes, or with a K/M/G/T suffix).
        #[arg(long, default_value = "250G", value_parser = parse_size)]
        size: u64,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// A RAM disk: memory is allocated as it is written and freed on discard.
    Mem {
        /// Device size (bytes, or with a K/M/G/T suffix), a multiple of the block size.
        #[arg(long, value_parser = parse_size)]
        size: u64,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// A regular file or a block device, like the kernel's loop driver (`losetup`).
    ///
    /// Direct I/O (O_DIRECT) unless --buffered or the file system cannot; the logical block size
    /// is the backing store's own (a block device's, or a file's direct-I/O alignment) unless
    /// --block-size asks for more. FLUSH, FUA, DISCARD and WRITE_ZEROES reach the backing store.
    Loop {
        /// The backing file or block device.
        #[arg(long, value_name = "PATH")]
        file: PathBuf,
        /// Device size (bytes, or with a K/M/G/T suffix): a missing file is created sparse and a
        /// shorter one grown to it. Default: the size of the file or block device.
        #[arg(long, value_parser = parse_size)]
        size: Option<u64>,
        /// Go through the backing store's page cache instead of direct I/O.
        #[arg(long)]
        buffered: bool,
        /// Open the backing store read-only and make the device read-only.
        #[arg(long)]
        read_only: bool,
        /// Where reads and writes run: `auto`, for a file on tmpfs or ramfs (memory copies that
        /// never wait), copies reads of up to 64 KiB inline on the queue thread, and writes of up
        /// to 64 KiB while no other is in flight, and uses io_uring for the rest and for other
        /// backing stores; `async` always uses io_uring, so the queue thread never blocks;
        /// `inline` always copies on the queue thread, one request at a time (only for backing
        /// stores that never wait).
        #[arg(long, value_enum, default_value_t = BackingIoArg::Auto, value_name = "MODE")]
        backing_io: BackingIoArg,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// One device over several files or block devices, dealt to them in chunks (RAID-0).
    ///
    /// Chunk 0 of the device goes to the first store, chunk 1 to the second, and so on round
    /// the stores, row after row. The device holds the smallest store's whole chunks on every
    /// store: its size is that times the number of stores. A request that spans chunks becomes
    /// one I/O per chunk, all in flight at once. Stores are used with direct I/O where they
    /// allow it; the logical block size is the largest any store needs unless --block-size asks
    /// for more. FLUSH goes to every store; FUA, DISCARD and WRITE_ZEROES to the stores the
    /// request covers. Stores must exist: files or block devices (an NBD export becomes one with
    /// `ublk add nbd`: name its /dev/ublkbN).
    Stripe {
        /// The chunk size (bytes, or with a K/M/G suffix): a power of two from 4K to 1G.
        #[arg(long, default_value = "64K", value_parser = parse_size, value_name = "SIZE")]
        chunk: u64,
        /// The stores, in order: 2 to 64 files or block devices, each a different one.
        #[arg(value_name = "BACKING", required = true, num_args = 1..)]
        stores: Vec<PathBuf>,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// A RAM disk (--size) or a file (--file) whose chosen requests are delayed or fail, or
    /// whose queue thread panics: to test how servers, recovery and applications cope.
    ///
    /// Requests are counted per queue; every --every-th is chosen. A delay blocks the whole
    /// queue thread, as a stalled disk would. With --file the file is served as `loop` serves
    /// it (direct I/O), and `ublk recover` can take the device over after a planned panic.
    Fault {
        /// Serve a RAM disk of this size (bytes, or with a K/M/G/T suffix); with --file, the
        /// size to create or grow the file to.
        #[arg(long, value_parser = parse_size, required_unless_present = "file")]
        size: Option<u64>,
        /// Serve this file or block device instead of memory.
        #[arg(long, value_name = "PATH")]
        file: Option<PathBuf>,
        /// Choose every N-th request of each queue (1: all).
        #[arg(long, default_value_t = 1, value_name = "N",
              value_parser = clap::value_parser!(u64).range(1..))]
        every: u64,
        /// Delay each chosen request by this many microseconds, on the queue thread.
        #[arg(long, default_value_t = 0, value_name = "US",
              value_parser = clap::value_parser!(u64).range(0..=60_000_000))]
        delay_us: u64,
        /// Fail each chosen request with this errno (EIO, ENOSPC, ... or a number).
        #[arg(long, value_name = "ERRNO", value_parser = parse_errno)]
        fail_errno: Option<rustix::io::Errno>,
        /// Panic each queue thread at its N-th request: a crash, for recovery tests. Once: a server
        /// that takes the device over with `ublk recover` does not panic again.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        panic_after: Option<u64>,
        /// Make each queue take this many milliseconds to open, before it fetches requests (a
        /// slow backend): the device's start waits for it.
        #[arg(long, default_value_t = 0, value_name = "MS",
              value_parser = clap::value_parser!(u64).range(0..=600_000))]
        open_delay_ms: u64,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// An export of an NBD server (nbdkit, qemu-nbd, nbd-server), over TCP or a unix socket.
    ///
    /// Size, block size, largest I/O, read-only, flush, FUA, trim and write-zeroes come from the
    /// server. Requests go over the network asynchronously, many in flight on each connection.
    /// A connection that drops or stops answering is made anew and its unanswered requests sent
    /// again, while I/O waits; after --reconnect-timeout without any connection, I/O fails with
    /// EIO (the device can be deleted) until the server is back. TLS is not supported: the
    /// server must accept plain connections.
    Nbd(NbdArgs),
}

/// `--fail-errno`: an errno by name (EIO, ENOSPC, ...) or number.
pub fn parse_errno(text: &str) -> Result<rustix::io::Errno, String> {
    use rustix::io::Errno;
    const NAMED: &[(&str, Errno)] = &[
        ("EIO", Errno::IO),
        ("ENOSPC", Errno::NOSPC),
        ("ENODATA", Errno::NODATA),
        ("ETIMEDOUT", Errno::TIMEDOUT),
        ("EREMOTEIO", Errno::REMOTEIO),
        ("ENOLINK", Errno::NOLINK),
        ("EILSEQ", Errno::ILSEQ),
        ("EPERM", Errno::PERM),
        ("EROFS", Errno::ROFS),
        ("ENOMEM", Errno::NOMEM),
        ("EAGAIN", Errno::AGAIN),
        ("EBUSY", Errno::BUSY),
        ("EINVAL", Errno::INVAL),
        ("EOPNOTSUPP", Errno::OPNOTSUPP),
    ];
    if let Some((_, errno)) = NAMED
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(text))
    {
        return Ok(*errno);
    }
    match text.parse::<i32>() {
        Ok(n) if (1..4096).contains(&n) => Ok(Errno::from_raw_os_error(n)),
        _ => Err(format!(
            "{text:?} is not an errno: give a name ({}) or a number from 1 to 4095",
            NAMED.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
        )),
    }
}

/// `--metrics`: `PORT` (on loopback) or `HOST:PORT`.
pub fn parse_metrics_addr(text: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = text.parse::<u16>() {
        return Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
    }
    text.parse().map_err(|_| {
        format!("{text:?} is not an address: give PORT, or HOST:PORT with HOST an IP address (127.0.0.1:9100, [::1]:9100)")
    })
}

/// `--backing-io`: ublk_targets' `BackingIo`, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackingIoArg {
    Auto,
    Async,
    Inline,
}

impl BackingIoArg {
    /// The loop target's setting of that name.
    pub fn backing_io(self) -> BackingIo {
        match self {
            BackingIoArg::Auto => BackingIo::Auto,
            BackingIoArg::Async => BackingIo::Async,
            BackingIoArg::Inline => BackingIo::Inline,
        }
    }
}

impl TargetArgs {
    /// The target's name, as records and `ublk list` show it.
    pub fn name(&self) -> &'static str {
        match self {
            TargetArgs::Null { .. } => "null",
            TargetArgs::Mem { .. } => "mem",
            TargetArgs::Loop { .. } => "loop",
            TargetArgs::Stripe { .. } => "stripe",
            TargetArgs::Fault { .. } => "fault",
            TargetArgs::Nbd(_) => "nbd",
        }
    }

    /// The options every target shares.
    pub fn common(&self) -> &CommonArgs {
        match self {
            TargetArgs::Null { common, .. }
            | TargetArgs::Mem { common, .. }
            | TargetArgs::Loop { common, .. }
            | TargetArgs::Stripe { common, .. }
            | TargetArgs::Fault { common, .. } => common,
            TargetArgs::Nbd(nbd) => &nbd.common,
        }
    }

    /// The files or block devices the target serves, in order (none for null and mem).
    pub fn backing_files(&self) -> Vec<&std::path::Path> {
        match self {
            TargetArgs::Loop { file, .. } => vec![file],
            TargetArgs::Stripe { stores, .. } => stores.iter().map(PathBuf::as_path).collect(),
            TargetArgs::Fault { file, .. } => file.iter().map(PathBuf::as_path).collect(),
            TargetArgs::Null { .. } | TargetArgs::Mem { .. } | TargetArgs::Nbd(_) => Vec::new(),
        }
    }

    /// The NBD server and export the target serves, if it is `nbd`.
    pub fn server(&self) -> Option<(String, String)> {
        match self {
            TargetArgs::Nbd(nbd) => Some((nbd.address().to_string(), nbd.export.clone())),
            _ => None,
        }
    }
}

/// `--recovery MODE`: which user recovery flags the device is created with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RecoveryMode {
    /// USER_RECOVERY: the requests the dead server held fail; the rest wait for the new server.
    Plain,
    /// USER_RECOVERY + USER_RECOVERY_REISSUE: the held requests are reissued too; nothing fails.
    Reissue,
    /// USER_RECOVERY + USER_RECOVERY_FAIL_IO (Linux 6.13): I/O fails while no server runs.
    FailIo,
}

impl RecoveryMode {
    /// The device features this mode asks the kernel for.
    pub fn features(self) -> Features {
        match self {
            RecoveryMode::Plain => Features::USER_RECOVERY,
            RecoveryMode::Reissue => Features::USER_RECOVERY | Features::USER_RECOVERY_REISSUE,
            RecoveryMode::FailIo => Features::USER_RECOVERY | Features::USER_RECOVERY_FAIL_IO,
        }
    }
}

/// Options every target takes.
#[derive(Debug, Args)]
pub struct CommonArgs {
    /// Hardware queues, each served by its own thread (the kernel caps this at the CPU count).
    #[arg(long, default_value_t = 1)]
    pub queues: u16,
    /// Requests each queue may have in flight: 1 to 4096.
    #[arg(long, default_value_t = 128)]
    pub depth: u16,
    /// Ask for this device id (`/dev/ublkb<ID>`) instead of the lowest free one.
    #[arg(long)]
    pub id: Option<u32>,
    /// Let a new server take the device over if this one dies (`ublk recover ID`); meanwhile I/O
    /// waits instead of failing. `plain` (the default): requests the dead server held fail with
    /// EIO. `reissue`: they are replayed by the new server, so no I/O fails (writes the old server
    /// had done are done again). `fail-io` (Linux 6.13): I/O fails while no server runs.
    #[arg(
        long,
        value_enum,
        num_args = 0..=1,
        require_equals = false,
        default_missing_value = "plain",
        value_name = "MODE"
    )]
    pub recovery: Option<RecoveryMode>,
    /// Logical block size in bytes: 512, 1024, 2048 or 4096.
    #[arg(long, default_value_t = 512)]
    pub block_size: u32,
    /// The largest request the device takes (bytes, or with a K/M suffix; whole pages, at most
    /// 32M); the block layer splits larger ones. In copy modes each tag holds a buffer this big.
    #[arg(long, value_parser = parse_size, default_value = "512K", value_name = "SIZE")]
    pub max_io: u64,
    /// Where queue threads run: `kernel` pins each to the CPUs whose I/O goes to its queue,
    /// `none` leaves them to the scheduler.
    #[arg(long, value_enum, default_value_t = AffinityArg::Kernel)]
    pub affinity: AffinityArg,
    /// Scheduling policy of queue threads: `batch` (SCHED_BATCH: waking one never preempts a
    /// submitter on its CPU, so requests are served in batches) or `normal` (SCHED_OTHER).
    #[arg(long, value_enum, default_value_t = SchedArg::Batch)]
    pub sched: SchedArg,
    /// Queue threads poll for new requests this many microseconds before sleeping (0: never):
    /// fewer wake-ups, at the cost of CPU while they poll.
    #[arg(long, default_value_t = 0, value_name = "US",
          value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
    pub poll_us: u64,
    /// Under load, queue threads gather up to N requests per wake-up, adapting to the load; 1
    /// serves each as it arrives. Default: 16, or 1 for loop (16 with --backing-io inline).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=4096))]
    pub batch: Option<u16>,
    /// The longest a queue thread waits for a batch that does not fill, in microseconds; 0 turns
    /// batching off. Default 50 (giving it turns batching on for loop too).
    #[arg(long, value_name = "US", value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub batch_wait_us: Option<u32>,
    /// How request data moves between the kernel and the server: `auto` (the best this kernel
    /// and the target allow; copy for loop over tmpfs, whose inline copies need it), `copy` (a
    /// buffer per tag, the kernel copies), `user-copy` (Linux 6.5: the server copies through
    /// /dev/ublkcN), `zero-copy` (6.15: the request's pages registered for the target's own
    /// I/O: loop, stripe and null), `auto-register` (6.16: the same, registered by the kernel),
    /// `need-get-data` (as copy, buffers only while in use).
    #[arg(long, value_enum, default_value_t = BufferModeArg::Auto, value_name = "MODE")]
    pub buffer_mode: BufferModeArg,
    /// How the queues fetch requests and commit results: `auto` (batch where the kernel has it
    /// and the device allows), `per-tag` (one command per request and tag, every kernel),
    /// `batch` (Linux 7.0: one command commits a round of results, multishot fetches bring
    /// many requests at once; not with need-get-data or --threads above --queues).
    #[arg(long, value_enum, default_value_t = CommandsArg::Auto, value_name = "MODE")]
    pub commands: CommandsArg,
    /// Serve the device with N threads in all instead of one per queue (per-I/O daemons, Linux
    /// 6.16; per-tag commands): threads are dealt to the queues in turn and each queue's tags to
    /// its threads. Helps when few CPUs submit the I/O, so the block layer uses few queues.
    /// Not for nbd (a queue's connections are one thread's).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=4096))]
    pub threads: Option<u16>,
    /// Do not scan the device for partitions when it goes live (Linux 7.0); `blockdev
    /// --rereadpt` scans it when wanted.
    #[arg(long)]
    pub no_part_scan: bool,
    /// Do not count requests per operation nor time them (saves a clock read per request);
    /// `ublk stats` and --metrics then show only the queues' own figures.
    #[arg(long)]
    pub no_stats: bool,
    /// Serve the device's figures at http://ADDR/metrics in Prometheus's text format. ADDR is
    /// PORT (on 127.0.0.1) or HOST:PORT. There is no authentication: anyone who can connect to
    /// ADDR can read them, so on loopback (the default) every local user, on another address
    /// whoever reaches it. They are counts and latencies, never data.
    #[arg(long, value_name = "ADDR", value_parser = parse_metrics_addr)]
    pub metrics: Option<SocketAddr>,
    /// How long, in seconds, `ublk add` waits for its background server to report the device
    /// live before it stops the server and deletes what it made.
    #[arg(long, default_value_t = 120, value_name = "SECS",
          value_parser = clap::value_parser!(u64).range(1..=MAX_TIMEOUT_SECS))]
    pub start_timeout: u64,
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// `--buffer-mode`: ublk_queue's `BufferMode`, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BufferModeArg {
    Auto,
    Copy,
    UserCopy,
    ZeroCopy,
    AutoRegister,
    NeedGetData,
}

impl BufferModeArg {
    /// The engine's mode of that name.
    pub fn mode(self) -> BufferMode {
        match self {
            BufferModeArg::Auto => BufferMode::Auto,
            BufferModeArg::Copy => BufferMode::Copy,
            BufferModeArg::UserCopy => BufferMode::UserCopy,
            BufferModeArg::ZeroCopy => BufferMode::ZeroCopy,
            BufferModeArg::AutoRegister => BufferMode::AutoRegister,
            BufferModeArg::NeedGetData => BufferMode::NeedGetData,
        }
    }
}

/// `--commands`: ublk_queue's `CommandMode`, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CommandsArg {
    Auto,
    PerTag,
    Batch,
}

impl CommandsArg {
    /// The engine's mode of that name.
    pub fn mode(self) -> CommandMode {
        match self {
            CommandsArg::Auto => CommandMode::Auto,
            CommandsArg::PerTag => CommandMode::PerTag,
            CommandsArg::Batch => CommandMode::Batch,
        }
    }
}

/// `--affinity`: ublk_queue's `Affinity`, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AffinityArg {
    Kernel,
    None,
}

impl CommonArgs {
    /// How queue threads run, as the options say: for `add`, and for `recover` from the record.
    pub fn queue_options(&self) -> QueueOptions {
        let mut options = QueueOptions::new()
            .affinity(self.affinity.affinity())
            .sched_policy(self.sched.policy())
            .busy_poll(Duration::from_micros(self.poll_us))
            .request_stats(!self.no_stats);
        options.batching = self.batching();
        options.threads = self.threads;
        options
    }

    /// The queue threads' batching policy, or `None` for the target's own.
    pub fn batching(&self) -> Option<Batching> {
        if self.batch.is_none() && self.batch_wait_us.is_none() {
            return None;
        }
        let default = Batching::default();
        let wait = self
            .batch_wait_us
            .map_or(default.wait(), |us| Duration::from_micros(u64::from(us)));
        Some(Batching::new(self.batch.unwrap_or(default.max()), wait))
    }
}

impl AffinityArg {
    /// The engine's setting of that name.
    pub fn affinity(self) -> Affinity {
        match self {
            AffinityArg::Kernel => Affinity::Kernel,
            AffinityArg::None => Affinity::None,
        }
    }
}

/// `--sched`: ublk_queue's `SchedPolicy`, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SchedArg {
    Batch,
    Normal,
}

impl SchedArg {
    /// The engine's setting of that name.
    pub fn policy(self) -> SchedPolicy {
        match self {
            SchedArg::Batch => SchedPolicy::Batch,
            SchedArg::Normal => SchedPolicy::Normal,
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    /// Every subcommand's options, as `ublk SUB [SUB2] --flag`, hidden ones left out.
    fn documented_flags(cmd: &clap::Command, path: &str, out: &mut Vec<(String, String)>) {
        for arg in cmd.get_arguments().filter(|a| !a.is_hide_set()) {
            if let Some(long) = arg.get_long()
                && !["help", "version"].contains(&long)
            {
                out.push((path.to_owned(), format!("--{long}")));
            }
        }
        for sub in cmd.get_subcommands() {
            documented_flags(sub, &format!("{path} {}", sub.get_name()), out);
        }
    }

    #[test]
    fn the_readme_documents_every_flag() {
        let readme = include_str!("../../README.md");
        let mut flags = Vec::new();
        documented_flags(&Cli::command(), "ublk", &mut flags);
        assert!(flags.len() > 10, "found only {flags:?}");
        // `--all` must not count as documented because `--allow` is.
        let mentions = |flag: &str| {
            readme.match_indices(flag).any(|(at, _)| {
                let next = readme[at + flag.len()..].chars().next();
                !next.is_some_and(|c| c.is_ascii_alphanumeric() || c == '-')
            })
        };
        let missing: Vec<_> = flags.iter().filter(|(_, flag)| !mentions(flag)).collect();
        assert!(
            missing.is_empty(),
            "flags README.md never mentions: {missing:?}"
        );
    }

    #[test]
    fn add_mem_parses_sizes_and_defaults() {
        let cli =
            Cli::try_parse_from(["ublk", "add", "mem", "--size", "1G", "--queues", "2"]).unwrap();
        let Command::Add {
            target: TargetArgs::Mem { size, common },
        } = cli.command
        else {
            panic!()
        };
        assert_eq!(size, 1 << 30);
        assert_eq!(
            (common.queues, common.depth, common.block_size),
            (2, 128, 512)
        );
        assert!(!common.serve.foreground);
    }

    #[test]
    fn add_loop_takes_a_file_and_optional_size() {
        let cli = Cli::try_parse_from([
            "ublk",
            "add",
            "loop",
            "--file",
            "/tmp/disk.img",
            "--size",
            "256M",
            "--buffered",
            "--backing-io",
            "async",
            "--queues",
            "2",
        ])
        .unwrap();
        let Command::Add {
            target:
                TargetArgs::Loop {
                    file,
                    size,
                    buffered,
                    read_only,
                    backing_io,
                    common,
                },
        } = cli.command
        else {
            panic!()
        };
        assert_eq!(backing_io, BackingIoArg::Async);
        assert_eq!(file, PathBuf::from("/tmp/disk.img"));
        assert_eq!(size, Some(256 << 20));
        assert!(buffered && !read_only);
        assert_eq!(common.queues, 2);
        let cli = Cli::try_parse_from(["ublk", "add", "loop", "--file", "/dev/sdb", "--read-only"])
            .unwrap();
        let Command::Add {
            target: TargetArgs::Loop {
                size, read_only, ..
            },
        } = cli.command
        else {
            panic!()
        };
        assert_eq!((size, read_only), (None, true));
        assert!(
            Cli::try_parse_from(["ublk", "add", "loop"]).is_err(),
            "--file is required"
        );
    }

    #[test]
    fn add_stripe_takes_stores_and_a_chunk() {
        let cli = Cli::try_parse_from([
            "ublk", "add", "stripe", "--chunk", "128K", "/tmp/a", "/dev/sdb", "--queues", "2",
        ])
        .unwrap();
        let Command::Add {
            target:
                TargetArgs::Stripe {
                    chunk,
                    stores,
                    common,
                },
        } = cli.command
        else {
            panic!()
        };
        assert_eq!(chunk, 128 << 10);
        assert_eq!(stores, [PathBuf::from("/tmp/a"), PathBuf::from("/dev/sdb")]);
        assert_eq!(common.queues, 2);
        let cli = Cli::try_parse_from(["ublk", "add", "stripe", "a", "b", "c"]).unwrap();
        let Command::Add { target } = cli.command else {
            panic!()
        };
        assert_eq!(target.backing_files().len(), 3);
        let TargetArgs::Stripe { chunk, .. } = target else {
            panic!()
        };
        assert_eq!(chunk, 64 << 10, "the default chunk");
        assert!(
            Cli::try_parse_from(["ublk", "add", "stripe", "--chunk", "64K"]).is_err(),
            "a store is required"
        );
    }

    #[test]
    fn recovery_takes_an_optional_mode() {
        let recovery = |args: &[&str]| {
            let argv = ["ublk", "add", "mem", "--size", "1M"].iter().chain(args);
            match Cli::try_parse_from(argv).map(|c| c.command) {
                Ok(Command::Add { target }) => Ok(target.common().recovery),
                Ok(other) => panic!("{other:?}"),
                Err(e) => Err(e.to_string()),
            }
        };
        assert_eq!(recovery(&[]), Ok(None));
        assert_eq!(recovery(&["--recovery"]), Ok(Some(RecoveryMode::Plain)));
        assert_eq!(
            recovery(&["--recovery", "--queues", "2"]),
            Ok(Some(RecoveryMode::Plain)),
            "a flag after a bare --recovery is not taken as its mode"
        );
        assert_eq!(
            recovery(&["--recovery", "reissue"]),
            Ok(Some(RecoveryMode::Reissue))
        );
        assert_eq!(
            recovery(&["--recovery=fail-io"]),
            Ok(Some(RecoveryMode::FailIo))
        );
        assert!(
            recovery(&["--recovery", "bogus"])
                .unwrap_err()
                .contains("bogus")
        );
        assert_eq!(
            RecoveryMode::Reissue.features(),
            Features::USER_RECOVERY | Features::USER_RECOVERY_REISSUE
        );
    }

    #[test]
    fn batching_is_the_targets_unless_a_flag_is_given() {
        let batching = |args: &[&str]| {
            let argv = ["ublk", "add", "null"].iter().chain(args);
            match Cli::try_parse_from(argv).map(|c| c.command) {
                Ok(Command::Add { target }) => Ok(target.common().batching()),
                Ok(other) => panic!("{other:?}"),
                Err(e) => Err(e.to_string()),
            }
        };
        let us = Duration::from_micros;
        assert_eq!(batching(&[]), Ok(None));
        assert_eq!(
            batching(&["--batch", "8"]),
            Ok(Some(Batching::new(8, us(50))))
        );
        assert_eq!(
            batching(&["--batch-wait-us", "100"]),
            Ok(Some(Batching::new(16, us(100))))
        );
        assert_eq!(batching(&["--batch", "1"]), Ok(Some(Batching::OFF)));
        assert_eq!(batching(&["--batch-wait-us", "0"]), Ok(Some(Batching::OFF)));
        assert!(batching(&["--batch", "0"]).unwrap_err().contains("--batch"));
    }

    #[test]
    fn fault_takes_a_store_and_a_plan() {
        let cli = Cli::try_parse_from([
            "ublk",
            "add",
            "fault",
            "--file",
            "/tmp/f",
            "--every",
            "10",
            "--delay-us",
            "500",
            "--fail-errno",
            "enospc",
            "--panic-after",
            "1000",
        ])
        .unwrap();
        let Command::Add {
            target:
                TargetArgs::Fault {
                    size,
                    file,
                    every,
                    delay_us,
                    fail_errno,
                    panic_after,
                    ..
                },
        } = cli.command
        else {
            panic!()
        };
        assert_eq!(
            (size, file.as_deref()),
            (None, Some(std::path::Path::new("/tmp/f")))
        );
        assert_eq!((every, delay_us, panic_after), (10, 500, Some(1000)));
        assert_eq!(fail_errno, Some(rustix::io::Errno::NOSPC));
        assert!(
            Cli::try_parse_from(["ublk", "add", "fault"]).is_err(),
            "a store is required"
        );
        let err = Cli::try_parse_from(["ublk", "add", "fault", "--size", "1M", "--every", "0"])
            .unwrap_err();
        assert!(err.to_string().contains("--every"), "{err}");
        assert_eq!(parse_errno("5"), Ok(rustix::io::Errno::IO));
        assert!(parse_errno("EWHAT").unwrap_err().contains("EIO"));
    }

    #[test]
    fn nbd_takes_a_host_or_a_unix_socket() {
        let nbd = |args: &[&str]| {
            let argv = ["ublk", "add", "nbd"].iter().chain(args);
            match Cli::try_parse_from(argv).map(|c| c.command) {
                Ok(Command::Add {
                    target: TargetArgs::Nbd(nbd),
                }) => Ok(nbd),
                Ok(other) => panic!("{other:?}"),
                Err(e) => Err(e.to_string()),
            }
        };
        let tcp = nbd(&["--host", "nas", "--export", "disk0", "--connections", "2"]).unwrap();
        assert_eq!(tcp.address().to_string(), "nas:10809");
        assert_eq!(
            (
                tcp.export.as_str(),
                tcp.connections,
                tcp.reconnect_timeout,
                tcp.io_timeout
            ),
            ("disk0", Some(2), 60, 30)
        );
        let unix = nbd(&["--unix", "/run/nbd.sock", "--reconnect-timeout", "5"]).unwrap();
        assert_eq!(unix.address().to_string(), "unix:/run/nbd.sock");
        assert_eq!((unix.export.as_str(), unix.reconnect_timeout), ("", 5));
        let target = TargetArgs::Nbd(unix);
        assert_eq!(target.name(), "nbd");
        assert_eq!(
            target.server(),
            Some(("unix:/run/nbd.sock".to_owned(), String::new()))
        );
        assert!(
            nbd(&[]).unwrap_err().contains("--host"),
            "a server is required"
        );
        assert!(
            nbd(&["--host", "a", "--unix", "/s"]).is_err(),
            "one or the other"
        );
        assert!(
            nbd(&["--unix", "/s", "--port", "1"]).is_err(),
            "a port is TCP's"
        );
        assert!(nbd(&["--host", "a", "--connections", "0"]).is_err());
        assert!(nbd(&["--host", "a", "--reconnect-timeout", "0"]).is_err());
    }

    #[test]
    fn help_says_tls_is_not_supported() {
        let mut cmd = Cli::command();
        let add = cmd.find_subcommand_mut("add").expect("add");
        let nbd = add.find_subcommand_mut("nbd").expect("add nbd");
        let help = nbd.render_long_help().to_string();
        assert!(help.contains("TLS is not supported"), "{help}");
    }

    #[test]
    fn recover_takes_an_id() {
        let cli = Cli::try_parse_from(["ublk", "recover", "3"]).unwrap();
        let Command::Recover(args) = cli.command else {
            panic!()
        };
        assert_eq!(
            (args.id, args.timeout, args.serve.foreground),
            (3, 60, false)
        );
        assert!(Cli::try_parse_from(["ublk", "recover"]).is_err());
        // Beyond what a deadline can be: refused by name, never a panic later.
        let err =
            Cli::try_parse_from(["ublk", "recover", "3", "--timeout", "18446744073709551615"])
                .unwrap_err();
        assert!(err.to_string().contains("--timeout"), "{err}");
        let err = Cli::try_parse_from(["ublk", "add", "null", "--poll-us", "18446744073709551615"])
            .unwrap_err();
        assert!(err.to_string().contains("--poll-us"), "{err}");
        assert!(Cli::try_parse_from(["ublk", "recover", "x"]).is_err());
    }

    #[test]
    fn stats_and_metrics_options_parse() {
        let cli = Cli::try_parse_from(["ublk", "stats", "3", "--json", "--watch", "2"]).unwrap();
        let Command::Stats(args) = cli.command else {
            panic!()
        };
        assert_eq!(
            (args.id, args.json, args.watch, args.prometheus),
            (3, true, Some(2), false)
        );
        assert!(Cli::try_parse_from(["ublk", "stats", "3", "--prometheus", "--json"]).is_err());
        assert!(Cli::try_parse_from(["ublk", "stats", "3", "--watch", "0"]).is_err());
        assert!(Cli::try_parse_from(["ublk", "stats"]).is_err());
        let metrics = |args: &[&str]| {
            let argv = ["ublk", "add", "null"].iter().chain(args);
            match Cli::try_parse_from(argv).map(|c| c.command) {
                Ok(Command::Add { target }) => {
                    let c = target.common();
                    Ok((c.metrics, c.queue_options().request_stats))
                }
                Ok(other) => panic!("{other:?}"),
                Err(e) => Err(e.to_string()),
            }
        };
        assert_eq!(metrics(&[]), Ok((None, true)));
        assert_eq!(
            metrics(&["--metrics", "9100"]),
            Ok((Some("127.0.0.1:9100".parse().unwrap()), true))
        );
        assert_eq!(
            metrics(&["--metrics", "[::1]:80"]),
            Ok((Some("[::1]:80".parse().unwrap()), true))
        );
        assert_eq!(metrics(&["--no-stats"]), Ok((None, false)));
        assert!(
            metrics(&["--metrics", "localhost:9100"])
                .unwrap_err()
                .contains("HOST:PORT")
        );
        assert_eq!(
            metrics(&["--metrics", "9100", "--no-stats"]),
            Ok((Some("127.0.0.1:9100".parse().unwrap()), false))
        );
    }

    #[test]
    fn mem_needs_a_size_and_del_needs_an_id() {
        assert!(Cli::try_parse_from(["ublk", "add", "mem"]).is_err());
        assert!(Cli::try_parse_from(["ublk", "del"]).is_err());
        assert!(Cli::try_parse_from(["ublk", "del", "3", "--all"]).is_err());
        assert!(Cli::try_parse_from(["ublk", "del", "--all"]).is_ok());
        let err = Cli::try_parse_from(["ublk", "add", "mem", "--size", "1X"]).unwrap_err();
        assert!(err.to_string().contains("unknown size suffix"), "{err}");
    }
}
