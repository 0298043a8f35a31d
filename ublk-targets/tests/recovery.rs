//! User recovery on a real kernel, within one process: a server leaves its device with
//! `Serving::abandon` (its queues' io_uring goes away as in a crash) and `Device::recover` serves
//! it again. The backing store is a `Mem` both servers share, so data must survive. The kill -9
//! variants, with separate server processes, are the VM scenarios `tests/vm/scenarios/7*.sh`.
//! Needs ublk_drv: run with `cargo xtask vm-e2e`.

mod common;

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;
use std::time::Duration;

use common::{AlignedBuf, assert_same, open_direct, pattern, read_exact, write_all};
use rustix::event::{EventfdFlags, PollFlags};
use rustix::io::Errno;
use ublk_ctrl::Control;
use ublk_queue::{
    Device, DeviceBuilder, Error, Handled, IoFlags, IoOp, QueueInfo, QueueTarget, Request, Serving,
    Simple, SimpleTarget, Target, TargetRing,
};
use ublk_ring::opcode::PollAdd;
use ublk_ring::types::Fd;
use ublk_targets::Mem;
use ublk_uapi::{DevState, Features};

const SIZE: u64 = 16 << 20;
const BLOCK: usize = 4096;

/// A `Mem` that outlives the server serving it, as a file would.
struct Shared(Arc<Mem>);

impl SimpleTarget for Shared {
    fn read(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.0.read(offset, buf)
    }
    fn write(&self, offset: u64, buf: &[u8], flags: IoFlags) -> io::Result<()> {
        self.0.write(offset, buf, flags)
    }
}

fn recovery(reissue: bool) -> Features {
    if reissue {
        Features::USER_RECOVERY | Features::USER_RECOVERY_REISSUE
    } else {
        Features::USER_RECOVERY
    }
}

fn add(features: Features) -> Device {
    DeviceBuilder::new()
        .queues(2)
        .depth(32)
        .size(SIZE)
        .features(features)
        // Since Linux 7.0 the kernel scans for partitions after START_DEV, in a work item that
        // holds the disk's open mutex while its reads wait for a server. A test that abandons
        // the device at once can leave that scan waiting for a recovery that STOP_DEV (which
        // needs the mutex) then never lets come. No scan, no race; 6.12 scans before START_DEV
        // returns.
        .optional_features(Features::NO_AUTO_PART_SCAN)
        .add()
        .expect("add")
}

fn state(id: u32) -> (Result<DevState, u16>, i32) {
    let info = Control::open()
        .and_then(|mut c| c.dev_info(id))
        .expect("GET_DEV_INFO");
    (info.state(), info.ublksrv_pid)
}

fn my_pid() -> i32 {
    rustix::process::getpid().as_raw_nonzero().get()
}

/// Writes one block of `pattern(seed, offset)` at `offset` from its own thread, through its own
/// descriptor (opened here, so the thread only writes).
fn write_in_thread(path: &str, seed: u64, offset: u64) -> JoinHandle<Result<usize, Errno>> {
    let fd = open_direct(path);
    std::thread::spawn(move || {
        let mut buf = AlignedBuf::new(BLOCK);
        pattern(seed, offset, &mut buf);
        rustix::io::pwrite(&fd, &buf, offset)
    })
}

fn expect_block(fd: &OwnedFd, seed: u64, offset: u64, what: &str) {
    let mut want = AlignedBuf::new(BLOCK);
    pattern(seed, offset, &mut want);
    let mut got = AlignedBuf::new(BLOCK);
    read_exact(fd, &mut got, offset);
    assert_same(&got, &want, offset, what);
}

/// Abandon, recover, three times over; what was written before each hand-over reads back after
/// it, through a block device descriptor that stays open throughout.
#[test]
#[ignore = "needs ublk_drv"]
fn abandon_and_recover_three_times_keeps_the_data() {
    let mem = Arc::new(Mem::new(SIZE));
    let mut serving = add(recovery(true))
        .serve(Simple::new(Shared(Arc::clone(&mem))))
        .expect("serve");
    let id = serving.id();
    let fd = open_direct(&serving.block_path());
    let mut buf = AlignedBuf::new(BLOCK);
    for round in 0..3u64 {
        let offset = round * (1 << 20);
        pattern(round, offset, &mut buf);
        write_all(&fd, &buf, offset);

        serving.abandon().expect("abandon");
        assert_eq!(
            state(id).0,
            Ok(DevState::Quiesced),
            "round {round}: abandoned"
        );
        let recovering = Device::recover(id).expect("recover");
        assert_eq!(recovering.params().basic.dev_sectors << 9, SIZE);
        serving = recovering
            .serve(Simple::new(Shared(Arc::clone(&mem))))
            .unwrap_or_else(|e| panic!("round {round}: serve: {e}"));
        assert_eq!(serving.id(), id);
        assert_eq!(state(id), (Ok(DevState::Live), my_pid()));
        assert_eq!(serving.info().state, u16::from(DevState::Live));
        for earlier in 0..=round {
            expect_block(&fd, earlier, earlier * (1 << 20), "after recovery");
        }
    }
    drop(fd);
    serving.stop().expect("stop");
}

/// I/O issued while no server runs waits (it neither fails nor times out) and completes once a
/// new server is live.
#[test]
#[ignore = "needs ublk_drv"]
fn io_waits_while_quiesced_and_completes_after_recovery() {
    let mem = Arc::new(Mem::new(SIZE));
    let serving = add(recovery(false))
        .serve(Simple::new(Shared(Arc::clone(&mem))))
        .expect("serve");
    let (id, path) = (serving.id(), serving.block_path());
    serving.abandon().expect("abandon");
    let writer = write_in_thread(&path, 7, 8192);
    // A check, not a wait: the write must still be pending after a generous pause.
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !writer.is_finished(),
        "a write to a QUIESCED device must wait for the new server"
    );
    let serving = Device::recover(id)
        .expect("recover")
        .serve(Simple::new(Shared(Arc::clone(&mem))))
        .expect("serve again");
    assert_eq!(writer.join().expect("no panic"), Ok(BLOCK));
    expect_block(&open_direct(&path), 7, 8192, "the write that waited");
    serving.stop().expect("stop");
}

/// A target that never completes a WRITE at `HOLD_AT` (it waits on an eventfd nobody writes) and
/// serves the rest from a shared `Mem`: a request the server holds when it goes away.
struct Holding {
    mem: Arc<Mem>,
    held: Sender<()>,
}

const HOLD_AT: u64 = 1 << 20;

struct HoldingQueue {
    mem: Arc<Mem>,
    held: Sender<()>,
    never: OwnedFd,
}

impl Target for Holding {
    type Queue = HoldingQueue;

    fn open_queue(&self, _: &QueueInfo) -> io::Result<HoldingQueue> {
        Ok(HoldingQueue {
            mem: Arc::clone(&self.mem),
            held: self.held.clone(),
            never: rustix::event::eventfd(0, EventfdFlags::CLOEXEC)?,
        })
    }
}

impl QueueTarget for HoldingQueue {
    fn handle(&mut self, mut req: Request<'_>, ring: &mut TargetRing<'_>) -> Handled {
        let offset = req.offset();
        let result = match req.op() {
            IoOp::Write if offset == HOLD_AT => {
                let poll =
                    PollAdd::new(Fd(self.never.as_raw_fd()), u32::from(PollFlags::IN.bits()))
                        .build();
                // SAFETY: the poll names only the eventfd, which this queue target keeps open
                // for longer than the ring lives (the engine drops the ring first).
                return match unsafe { ring.push(req.tag(), poll) } {
                    Ok(()) => {
                        let _ = self.held.send(());
                        Handled::Queued
                    }
                    Err(_) => Handled::Done(-Errno::IO.raw_os_error()),
                };
            }
            IoOp::Write => self.mem.write(offset, req.buf(), req.flags()),
            IoOp::Read => self.mem.read(offset, req.buf_mut()),
            IoOp::Flush => Ok(()),
            _ => Err(Errno::OPNOTSUPP.into()),
        };
        Handled::from_result(result.map(|()| req.len() as u32))
    }
}

/// Serves a device with `Holding`, writes at `HOLD_AT` from another thread, and abandons the
/// device once the target holds that write; returns the pending writer.
fn abandon_holding_a_write(
    features: Features,
    mem: &Arc<Mem>,
) -> (u32, String, JoinHandle<Result<usize, Errno>>) {
    let (held_tx, held): (Sender<()>, Receiver<()>) = channel();
    let serving: Serving = add(features)
        .serve(Holding {
            mem: Arc::clone(mem),
            held: held_tx,
        })
        .expect("serve");
    let (id, path) = (serving.id(), serving.block_path());
    let writer = write_in_thread(&path, 3, HOLD_AT);
    held.recv_timeout(Duration::from_secs(10))
        .expect("the target received the write");
    serving.abandon().expect("abandon");
    (id, path, writer)
}

/// Plain USER_RECOVERY: a request the server held when it went away fails with EIO (at once,
/// before any recovery); the device still recovers.
#[test]
#[ignore = "needs ublk_drv"]
fn recovery_without_reissue_fails_a_held_write() {
    let mem = Arc::new(Mem::new(SIZE));
    let (id, path, writer) = abandon_holding_a_write(recovery(false), &mem);
    assert_eq!(
        writer.join().expect("no panic"),
        Err(Errno::IO),
        "USER_RECOVERY without REISSUE fails the requests the server held"
    );
    let serving = Device::recover(id)
        .expect("recover")
        .serve(Simple::new(Shared(Arc::clone(&mem))))
        .expect("serve again");
    let fd = open_direct(&path);
    let mut buf = AlignedBuf::new(BLOCK);
    pattern(9, 0, &mut buf);
    write_all(&fd, &buf, 0);
    expect_block(&fd, 9, 0, "a write after recovery");
    drop(fd);
    serving.stop().expect("stop");
}

/// USER_RECOVERY_REISSUE: the held write is reissued to the new server and succeeds, with its
/// data where it belongs.
#[test]
#[ignore = "needs ublk_drv"]
fn recovery_with_reissue_replays_a_held_write() {
    let mem = Arc::new(Mem::new(SIZE));
    let (id, path, writer) = abandon_holding_a_write(recovery(true), &mem);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !writer.is_finished(),
        "with REISSUE the held write waits for the new server"
    );
    let serving = Device::recover(id)
        .expect("recover")
        .serve(Simple::new(Shared(Arc::clone(&mem))))
        .expect("serve again");
    assert_eq!(writer.join().expect("no panic"), Ok(BLOCK));
    expect_block(&open_direct(&path), 3, HOLD_AT, "the reissued write");
    serving.stop().expect("stop");
}

/// What cannot be recovered is refused with an error that says why, and nothing is changed.
#[test]
#[ignore = "needs ublk_drv"]
fn recover_refuses_what_it_cannot_recover() {
    // LIVE, served by this very process.
    let serving = add(recovery(true))
        .serve(Simple::new(Mem::new(SIZE)))
        .expect("serve");
    let err = Device::recover(serving.id()).unwrap_err();
    assert!(
        matches!(err, Error::ServerRunning { pid, .. } if pid == my_pid()),
        "{err}"
    );
    assert_eq!(state(serving.id()).0, Ok(DevState::Live), "left alone");
    serving.stop().expect("stop");

    // Unknown id (ids are below 2^20; this one is not in use).
    let unused = (0..1 << 20)
        .rev()
        .find(|id| !ublk_ctrl::dev_ids().expect("ids").contains(id))
        .expect("a free id");
    let err = Device::recover(unused).unwrap_err();
    assert!(
        matches!(err, Error::Ctrl(ublk_ctrl::Error::NoSuchDevice { dev_id }) if dev_id == unused),
        "{err}"
    );

    // Created without recovery.
    let plain = add(Features::empty());
    let err = Device::recover(plain.id()).unwrap_err();
    assert!(matches!(err, Error::RecoveryNotEnabled { .. }), "{err}");
    assert!(err.to_string().contains("without user recovery"), "{err}");
    plain.delete().expect("delete");

    // DEAD: added, never started.
    let never_started = add(recovery(false));
    let err = Device::recover(never_started.id()).unwrap_err();
    assert!(
        matches!(err, Error::NotRecoverable { state: "DEAD", .. }),
        "{err}"
    );
    never_started.delete().expect("delete");

    // Abandoning a device without recovery stops and deletes it, and says why.
    let serving = add(Features::empty())
        .serve(Simple::new(Mem::new(SIZE)))
        .expect("serve");
    let id = serving.id();
    let err = serving.abandon().unwrap_err();
    assert!(matches!(err, Error::RecoveryNotEnabled { .. }), "{err}");
    assert!(!ublk_ctrl::dev_ids().expect("ids").contains(&id), "deleted");
}

/// A QUIESCED device can be deleted: the I/O waiting on it fails instead of hanging.
#[test]
#[ignore = "needs ublk_drv"]
fn a_device_awaiting_recovery_can_be_deleted_and_its_waiting_io_fails() {
    let serving = add(recovery(true))
        .serve(Simple::new(Mem::new(SIZE)))
        .expect("serve");
    let (id, path) = (serving.id(), serving.block_path());
    serving.abandon().expect("abandon");
    let writer = write_in_thread(&path, 1, 0);
    std::thread::sleep(Duration::from_millis(300));
    assert!(!writer.is_finished(), "the write waits for a new server");
    let mut ctrl = Control::open().expect("control");
    ctrl.stop_dev(id).expect("STOP_DEV of a QUIESCED device");
    let result = writer.join().expect("no panic");
    assert!(result.is_err(), "the waiting write failed: {result:?}");
    ctrl.del_dev(id).expect("DEL_DEV");
    assert!(!ublk_ctrl::dev_ids().expect("ids").contains(&id));
}
