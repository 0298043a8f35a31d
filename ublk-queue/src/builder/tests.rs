//! The builder's checks, which run before anything touches the control device.

use ublk_uapi::ParamTypes;

use super::*;

fn valid() -> DeviceBuilder {
    DeviceBuilder::new().size(64 << 20)
}

#[test]
fn defaults_with_a_size_are_valid() {
    valid().validate().expect("valid");
    valid()
        .queues(4)
        .depth(4096)
        .block_size(4096)
        .max_io_bytes(1 << 20)
        .validate()
        .expect("valid");
}

#[test]
fn ids_must_fit_the_driver_numbering() {
    valid().id(0).validate().expect("valid");
    valid().id(MAX_DEV_ID).validate().expect("valid");
    for id in [MAX_DEV_ID + 1, u32::MAX] {
        let e = valid().id(id).validate().unwrap_err();
        assert!(matches!(e, Error::InvalidId(i) if i == id), "{e}");
        assert!(e.to_string().contains("below 1048576"), "{e}");
    }
}

#[test]
fn sizes_must_be_non_zero_multiples_of_the_block_size() {
    assert!(matches!(
        DeviceBuilder::new().validate(),
        Err(Error::InvalidSize { size: 0, .. })
    ));
    let err = valid()
        .size(4096 + 512)
        .block_size(4096)
        .validate()
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidSize {
                size: 4608,
                block_size: 4096
            }
        ),
        "{err}"
    );
}

#[test]
fn block_sizes_are_powers_of_two_from_512_to_4096() {
    for bs in [0, 256, 768, 1000, 8192] {
        let err = valid().block_size(bs).validate().unwrap_err();
        assert!(
            matches!(err, Error::InvalidBlockSize(b) if b == bs),
            "{bs}: {err}"
        );
    }
    for bs in [512, 1024, 2048, 4096] {
        valid().block_size(bs).validate().expect("valid block size");
    }
}

#[test]
fn depth_and_queues_have_kernel_limits() {
    assert!(matches!(
        valid().depth(0).validate(),
        Err(Error::InvalidDepth(0))
    ));
    assert!(matches!(
        valid().depth(4097).validate(),
        Err(Error::InvalidDepth(4097))
    ));
    assert!(matches!(
        valid().queues(0).validate(),
        Err(Error::InvalidQueues(0))
    ));
    assert!(matches!(
        valid().queues(4097).validate(),
        Err(Error::InvalidQueues(4097))
    ));
}

#[test]
fn max_io_bytes_are_whole_pages_up_to_32_mib() {
    for bytes in [0, 512, 4096 + 512, (32 << 20) + 4096] {
        assert!(
            matches!(
                valid().max_io_bytes(bytes).validate(),
                Err(Error::InvalidMaxIoBytes { .. })
            ),
            "{bytes}"
        );
    }
    valid()
        .max_io_bytes(32 << 20)
        .validate()
        .expect("32 MiB is the limit");
}

#[test]
fn unprivileged_devices_are_refused() {
    let err = valid()
        .features(Features::UNPRIVILEGED_DEV)
        .validate()
        .unwrap_err();
    assert!(
        matches!(err, Error::UnsupportedFeatures(f) if f == Features::UNPRIVILEGED_DEV),
        "{err}"
    );
}

#[test]
fn features_the_engine_lacks_are_refused() {
    let err = valid()
        .features(Features::ZONED | Features::USER_RECOVERY)
        .validate()
        .unwrap_err();
    assert!(
        matches!(err, Error::UnsupportedFeatures(f) if f == Features::ZONED),
        "{err}"
    );
    valid()
        .features(Features::USER_RECOVERY)
        .validate()
        .expect("recovery is allowed");
}

#[test]
fn zero_copy_needs_a_target_that_keeps_no_data_in_memory() {
    for mode in [BufferMode::ZeroCopy, BufferMode::AutoRegister] {
        let err = valid().buffer_mode(mode).validate().unwrap_err();
        assert!(
            matches!(err, Error::TargetNeedsMemory { mode: m } if m == mode),
            "{err}"
        );
        valid()
            .buffer_mode(mode)
            .for_target(&NoMemory)
            .validate()
            .expect("a target that handles fixed buffers");
    }
    for mode in [
        BufferMode::Copy,
        BufferMode::UserCopy,
        BufferMode::NeedGetData,
    ] {
        valid().buffer_mode(mode).validate().expect("memory modes");
    }
}

/// A target that never touches request data.
struct NoMemory;

impl Target for NoMemory {
    type Queue = NoMemory;
    fn open_queue(&self, _: &crate::QueueInfo) -> std::io::Result<NoMemory> {
        Ok(NoMemory)
    }
    fn needs_memory(&self) -> bool {
        false
    }
}

impl crate::QueueTarget for NoMemory {
    fn handle(&mut self, _: crate::Request<'_>, _: &mut crate::TargetRing<'_>) -> crate::Handled {
        crate::Handled::Done(0)
    }
}

#[test]
fn a_target_that_keeps_one_thread_per_queue_refuses_more_threads() {
    let threads = |n| {
        valid()
            .queues(2)
            .queue_options(QueueOptions::default().threads(n))
    };
    let err = threads(4)
        .for_target(&OneThreadPerQueue)
        .validate()
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidThreads {
                threads: 4,
                queues: 2,
                reason: ONE_THREAD_PER_QUEUE
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains("no more threads than queues"),
        "{err}"
    );
    threads(2)
        .for_target(&OneThreadPerQueue)
        .validate()
        .expect("one thread per queue");
    threads(4)
        .for_target(&NoMemory)
        .validate()
        .expect("a target whose queues may be shared");
}

#[test]
fn auto_keeps_data_in_memory_for_a_target_that_prefers_it() {
    let linux_7 = BufferMode::AutoRegister.features() | BufferMode::UserCopy.features();
    let auto = |b: DeviceBuilder| b.resolved_mode(linux_7);
    assert_eq!(
        auto(valid().for_target(&NoMemory)),
        BufferMode::AutoRegister
    );
    assert_eq!(auto(valid().for_target(&PrefersMemory)), BufferMode::Copy);
    assert_eq!(auto(valid()), BufferMode::Copy, "needs memory");
    // A mode asked for by name is what the device gets.
    let named = valid()
        .buffer_mode(BufferMode::ZeroCopy)
        .for_target(&PrefersMemory);
    assert_eq!(auto(named), BufferMode::ZeroCopy);
}

/// A target that can do without request data in memory but is faster with it (loop on tmpfs).
struct PrefersMemory;

impl Target for PrefersMemory {
    type Queue = NoMemory;
    fn open_queue(&self, _: &crate::QueueInfo) -> std::io::Result<NoMemory> {
        Ok(NoMemory)
    }
    fn needs_memory(&self) -> bool {
        false
    }
    fn prefers_memory(&self) -> bool {
        true
    }
}

/// A target whose queue state cannot be split among threads.
struct OneThreadPerQueue;

impl Target for OneThreadPerQueue {
    type Queue = NoMemory;
    fn open_queue(&self, _: &crate::QueueInfo) -> std::io::Result<NoMemory> {
        Ok(NoMemory)
    }
    fn per_io_daemons(&self) -> bool {
        false
    }
}

#[test]
fn discard_needs_a_limit_and_a_sane_granularity() {
    let none = DiscardParams::default();
    assert!(matches!(
        valid().discard(none).validate(),
        Err(Error::InvalidDiscard(_))
    ));
    let odd = DiscardParams {
        granularity: 1000,
        max_discard_sectors: 8,
        ..DiscardParams::default()
    };
    assert!(matches!(
        valid().discard(odd).validate(),
        Err(Error::InvalidDiscard(_))
    ));
}

#[test]
fn add_validates_before_opening_the_control_device() {
    // On a host without ublk_drv, reaching Control::open would give DriverNotLoaded instead.
    assert!(matches!(
        DeviceBuilder::new().add(),
        Err(Error::InvalidSize { .. })
    ));
    assert!(matches!(
        valid().depth(0).add(),
        Err(Error::InvalidDepth(0))
    ));
}

#[test]
fn params_describe_the_device() {
    let b = valid()
        .block_size(4096)
        .max_io_bytes(1 << 20)
        .volatile_cache(true)
        .fua(true)
        .discard(DiscardParams {
            max_discard_sectors: 2048,
            max_write_zeroes_sectors: 2048,
            ..Default::default()
        });
    // The kernel granted a smaller buffer than asked: max_sectors follows it.
    let info = DevInfo {
        max_io_buf_bytes: 512 << 10,
        ..DevInfo::default()
    };
    let p = b.params(&info);
    assert_eq!(p.types(), ParamTypes::BASIC | ParamTypes::DISCARD);
    assert_eq!(
        p.len,
        Params::len_for(ParamTypes::BASIC | ParamTypes::DISCARD)
    );
    assert_eq!(
        (p.basic.logical_bs_shift, p.basic.physical_bs_shift),
        (12, 12)
    );
    assert_eq!(p.basic.max_sectors, 1024);
    assert_eq!(p.basic.dev_sectors, (64 << 20) >> 9);
    assert_eq!(
        p.basic.attrs(),
        BasicAttrs::VOLATILE_CACHE | BasicAttrs::FUA
    );
    assert_eq!(p.discard.discard_granularity, 4096);
    assert_eq!(p.discard.max_discard_segments, 1);
    let plain = valid().read_only(true).params(&DevInfo {
        max_io_buf_bytes: 512 << 10,
        ..DevInfo::default()
    });
    assert_eq!(plain.types(), ParamTypes::BASIC);
    assert_eq!(plain.basic.attrs(), BasicAttrs::READ_ONLY);
}
