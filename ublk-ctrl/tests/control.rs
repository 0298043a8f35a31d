//! Control-plane tests. Those that talk to the driver are ignored on the host and run in the VM
//! (`cargo xtask vm-e2e`).

use std::path::Path;
use std::time::{Duration, Instant};

use ublk_ctrl::{Control, DevSpec, Error};
use ublk_uapi::{DevState, Features, ParamBasic, ParamTypes, Params};

/// Basic parameters for a 64 MiB device of 512-byte sectors.
fn basic_params() -> Params {
    Params::new().with_basic(ParamBasic {
        logical_bs_shift: 9,
        physical_bs_shift: 12,
        io_opt_shift: 12,
        io_min_shift: 9,
        max_sectors: 1024,
        dev_sectors: (64 << 20) >> 9,
        ..ParamBasic::default()
    })
}

#[test]
fn open_reports_a_missing_driver_with_the_fix() {
    match Control::open() {
        Ok(_) => assert!(Path::new("/dev/ublk-control").exists()),
        Err(e) => {
            assert!(
                !Path::new("/dev/ublk-control").exists(),
                "unexpected error: {e}"
            );
            assert!(matches!(e, Error::DriverNotLoaded));
            assert!(e.to_string().contains("modprobe ublk_drv"), "{e}");
        }
    }
}

#[test]
#[ignore = "needs ublk_drv"]
fn reads_driver_features() {
    let mut ctrl = Control::open().expect("open /dev/ublk-control");
    let features = ctrl.features().expect("GET_FEATURES");
    // Everything Linux 6.12 has, whatever else a newer kernel adds.
    let expected = Features::URING_CMD_COMP_IN_TASK
        | Features::NEED_GET_DATA
        | Features::USER_RECOVERY
        | Features::USER_RECOVERY_REISSUE
        | Features::UNPRIVILEGED_DEV
        | Features::CMD_IOCTL_ENCODE
        | Features::USER_COPY;
    assert!(features.contains(expected), "{features:?}");
}

#[test]
#[ignore = "needs ublk_drv"]
fn add_query_and_delete_a_device() {
    let mut ctrl = Control::open().unwrap();
    let info = ctrl.add_dev(&DevSpec::new(2, 64)).expect("ADD_DEV");
    let id = info.dev_id;
    assert_eq!(info.queue_depth, 64);
    assert!(info.nr_hw_queues >= 1 && info.nr_hw_queues <= 2);
    assert_eq!(DevState::try_from(info.state), Ok(DevState::Dead));
    assert!(Features::from_bits_retain(info.flags).contains(Features::CMD_IOCTL_ENCODE));

    let again = ctrl.dev_info(id).expect("GET_DEV_INFO");
    assert_eq!(again.dev_id, id);
    assert_eq!(again.queue_depth, 64);
    let again2 = ctrl.dev_info2(id).expect("GET_DEV_INFO2");
    assert_eq!(again2.dev_id, id);

    ctrl.set_params(id, &basic_params()).expect("SET_PARAMS");
    let read = ctrl.params(id).expect("GET_PARAMS");
    assert_eq!(read.basic.dev_sectors, (64 << 20) >> 9);
    assert_eq!(read.basic.logical_bs_shift, 9);
    assert!(
        ParamTypes::from_bits_retain(read.types).contains(ParamTypes::BASIC | ParamTypes::DEVT)
    );
    assert_ne!(
        read.devt.char_major, 0,
        "the char device has a major number"
    );

    for q in 0..info.nr_hw_queues {
        let cpus = ctrl.queue_affinity(id, q).expect("GET_QUEUE_AFFINITY");
        assert!(cpus.count() >= 1, "queue {q} maps no CPU");
    }

    ctrl.del_dev(id).expect("DEL_DEV");
    assert!(matches!(ctrl.dev_info(id), Err(Error::NoSuchDevice { dev_id }) if dev_id == id));
}

#[test]
#[ignore = "needs ublk_drv"]
fn a_chosen_id_in_use_is_refused_clearly() {
    let mut ctrl = Control::open().unwrap();
    let first = ctrl.add_dev(&DevSpec::new(1, 16)).unwrap();
    let err = ctrl
        .add_dev(&DevSpec::new(1, 16).id(first.dev_id))
        .unwrap_err();
    ctrl.del_dev(first.dev_id).unwrap();
    assert!(
        matches!(err, Error::IdInUse { dev_id } if dev_id == first.dev_id),
        "{err}"
    );
}

#[test]
#[ignore = "needs ublk_drv"]
fn commands_on_a_missing_device_say_so() {
    let mut ctrl = Control::open().unwrap();
    let err = ctrl.dev_info(999_999).unwrap_err();
    assert!(
        matches!(err, Error::NoSuchDevice { dev_id: 999_999 }),
        "{err}"
    );
    assert!(err.to_string().contains("ublk list"));
}

#[test]
#[ignore = "needs ublk_drv"]
fn bad_arguments_are_refused_before_any_device_exists() {
    let mut ctrl = Control::open().unwrap();
    let before = ublk_ctrl::dev_ids().unwrap();
    let err = ctrl.add_dev(&DevSpec::new(1, 0)).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
    assert_eq!(ublk_ctrl::dev_ids().unwrap(), before);
}

#[test]
#[ignore = "needs ublk_drv"]
fn a_stalled_start_times_out_and_the_device_can_still_be_deleted() {
    // Nobody serves the queues, so START_DEV waits for fetches that never come: the deadline must fire,
    // the command must be cancelled, and the device must stay deletable.
    let mut ctrl = Control::open().unwrap();
    let info = ctrl.add_dev(&DevSpec::new(1, 16)).unwrap();
    ctrl.set_params(info.dev_id, &basic_params()).unwrap();
    ctrl.set_timeout(Duration::from_millis(500));
    let started = Instant::now();
    let err = ctrl
        .start_dev(info.dev_id, rustix::process::getpid())
        .unwrap_err();
    assert!(
        matches!(err, Error::TimedOut { dev_id, .. } if dev_id == info.dev_id),
        "{err}"
    );
    assert!(err.to_string().contains("START_DEV"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
    ctrl.set_timeout(ublk_ctrl::DEFAULT_TIMEOUT);
    ctrl.del_dev(info.dev_id)
        .expect("DEL_DEV after a cancelled START_DEV");
}

/// ADD_DEV that misses its deadline: whether it completes in the grace period or after it, no
/// device is left without an owner. One test, as the injected faults are process-wide.
#[test]
#[ignore = "needs ublk_drv"]
#[cfg(feature = "fault-injection")]
fn a_late_add_dev_returns_its_device_or_leaves_none() {
    use ublk_ctrl::fault::{CtrlFault, inject};
    use ublk_uapi::CtrlOp;

    let before = ublk_ctrl::dev_ids().expect("list devices");
    let ms = Duration::from_millis;

    // Done within the grace period: the caller gets the device, as if on time.
    let mut ctrl = Control::open().expect("open /dev/ublk-control");
    ctrl.set_timeout(ms(500));
    inject(CtrlOp::AddDev, CtrlFault::Late(ms(700)));
    let info = ctrl
        .add_dev(&DevSpec::new(1, 8))
        .expect("completed in the grace period");
    ctrl.del_dev(info.dev_id).expect("delete");

    // Done only after the grace period: the caller hears of a timeout, and the device the
    // kernel made meanwhile is deleted once its completion is seen (here: when the handle
    // goes, which waits for it).
    let mut ctrl = Control::open().expect("open /dev/ublk-control");
    ctrl.set_timeout(ms(300));
    inject(CtrlOp::AddDev, CtrlFault::Late(ms(1500)));
    let err = ctrl.add_dev(&DevSpec::new(1, 8)).unwrap_err();
    assert!(
        matches!(
            err,
            Error::TimedOut {
                op: CtrlOp::AddDev,
                ..
            }
        ),
        "{err}"
    );
    drop(ctrl);
    assert_eq!(ublk_ctrl::dev_ids().expect("list devices"), before);
}
