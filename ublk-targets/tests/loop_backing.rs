//! Opening a loop device's backing store: what is refused (before any device exists) and what is
//! created, grown and advertised. Runs on the host: no ublk device is made.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use ublk_queue::{DeviceBuilder, Target};
use ublk_targets::{
    BackingIo, BackingKind, BackingWarning, Error, Fault, FaultPlan, Inline, LoopBuilder,
};
use ublk_uapi::{BasicAttrs, DevInfo};

/// A scratch directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("ublk-loop-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch directory");
        Scratch(dir)
    }

    fn file(&self, name: &str, len: u64) -> PathBuf {
        let path = self.0.join(name);
        std::fs::File::create(&path)
            .and_then(|f| f.set_len(len))
            .expect("scratch file");
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn blocks(path: &Path) -> u64 {
    std::os::unix::fs::MetadataExt::blocks(&std::fs::metadata(path).expect("stat"))
}

#[test]
fn a_missing_file_needs_a_size_and_is_created_sparse_with_one() {
    let dir = Scratch::new("missing");
    let path = dir.0.join("disk.img");
    let err = LoopBuilder::new(&path).open().unwrap_err();
    assert!(matches!(err, Error::Missing { .. }), "{err:?}");
    assert!(err.to_string().contains("--size"), "{err}");
    assert!(!path.exists());

    let backing = LoopBuilder::new(&path)
        .size(64 << 20)
        .open()
        .expect("created");
    assert_eq!(backing.size(), 64 << 20);
    assert_eq!(backing.kind(), BackingKind::File);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 64 << 20);
    assert_eq!(blocks(&path), 0, "created sparse");

    // Read-only cannot create.
    let other = dir.0.join("other.img");
    let err = LoopBuilder::new(&other)
        .size(1 << 20)
        .read_only(true)
        .open()
        .unwrap_err();
    assert!(matches!(err, Error::Missing { .. }), "{err:?}");
    assert!(!other.exists());
}

#[test]
fn size_grows_a_short_file_and_limits_a_long_one() {
    let dir = Scratch::new("grow");
    let short = dir.file("short.img", 1 << 20);
    let backing = LoopBuilder::new(&short)
        .size(8 << 20)
        .open()
        .expect("grown");
    assert_eq!(backing.size(), 8 << 20);
    assert_eq!(std::fs::metadata(&short).unwrap().len(), 8 << 20);

    let long = dir.file("long.img", 8 << 20);
    let backing = LoopBuilder::new(&long)
        .size(1 << 20)
        .open()
        .expect("limited");
    assert_eq!(backing.size(), 1 << 20);
    assert_eq!(
        std::fs::metadata(&long).unwrap().len(),
        8 << 20,
        "left as it was"
    );

    let backing = LoopBuilder::new(&long).open().expect("whole file");
    assert_eq!(backing.size(), 8 << 20);

    // A read-only file cannot grow.
    let err = LoopBuilder::new(&short)
        .size(16 << 20)
        .read_only(true)
        .open()
        .unwrap_err();
    assert!(
        matches!(err, Error::TooSmall { size, available, .. } if size == 16 << 20 && available == 8 << 20),
        "{err:?}"
    );
}

#[test]
fn directories_and_other_non_files_are_refused() {
    let dir = Scratch::new("dir");
    let err = LoopBuilder::new(&dir.0).open().unwrap_err();
    assert!(
        matches!(err, Error::NotFileOrBlockDevice { what, .. } if what == "a directory"),
        "{err:?}"
    );
    assert!(err.to_string().contains("is a directory"), "{err}");
    let err = LoopBuilder::new("/dev/null").open().unwrap_err();
    assert!(
        matches!(err, Error::NotFileOrBlockDevice { what, .. } if what == "a character device"),
        "{err:?}"
    );
}

#[test]
fn sizes_must_be_whole_blocks() {
    let dir = Scratch::new("unaligned");
    let odd = dir.file("odd.img", 1000);
    let err = LoopBuilder::new(&odd).open().unwrap_err();
    assert!(
        matches!(err, Error::UnalignedSize { size: 1000, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("--size"), "{err}");
    // A whole-block size over the odd file is fine: only that much is served.
    let ok = LoopBuilder::new(&odd).size(512).open().expect("one sector");
    assert_eq!(ok.size(), 512);

    let empty = dir.file("empty.img", 0);
    assert!(matches!(
        LoopBuilder::new(&empty).open().unwrap_err(),
        Error::UnalignedSize { size: 0, .. }
    ));

    let missing = dir.0.join("missing.img");
    let err = LoopBuilder::new(&missing).size(4097).open().unwrap_err();
    assert!(matches!(err, Error::UnalignedSize { .. }), "{err:?}");
    assert!(!missing.exists(), "nothing created for a bad size");

    let file = dir.file("4k.img", 6144);
    let err = LoopBuilder::new(&file).block_size(4096).open().unwrap_err();
    assert!(
        matches!(
            err,
            Error::UnalignedSize {
                size: 6144,
                block_size: 4096,
                ..
            }
        ),
        "{err:?}"
    );
    let err = LoopBuilder::new(&file).block_size(3000).open().unwrap_err();
    assert!(
        matches!(
            err,
            Error::BlockSize {
                block_size: 3000,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn a_read_only_file_needs_read_only() {
    let dir = Scratch::new("ro");
    let path = dir.file("ro.img", 1 << 20);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444)).expect("chmod");
    let err = LoopBuilder::new(&path).open().unwrap_err();
    assert!(matches!(err, Error::ReadOnly { .. }), "{err:?}");
    assert!(err.to_string().contains("--read-only"), "{err}");

    let backing = LoopBuilder::new(&path)
        .read_only(true)
        .open()
        .expect("read-only");
    assert!(backing.is_read_only());
    assert_eq!(backing.discard(), None, "no discard on a read-only device");
    let params = backing.configure(DeviceBuilder::new()).params(&dev_info());
    assert!(params.basic.attrs().contains(BasicAttrs::READ_ONLY));
    assert!(!params.basic.attrs().contains(BasicAttrs::FUA));
}

#[test]
fn buffered_is_never_direct_and_the_device_is_described_honestly() {
    let dir = Scratch::new("params");
    let path = dir.file("disk.img", 32 << 20);
    let backing = LoopBuilder::new(&path)
        .buffered(true)
        .open()
        .expect("buffered");
    assert!(!backing.is_direct());
    assert_eq!(backing.block_size(), 512);
    assert!(backing.warnings().is_empty(), "{:?}", backing.warnings());
    let builder = backing.configure(DeviceBuilder::new().queues(2).depth(64));
    builder.validate().expect("a valid device");
    let params = builder.params(&dev_info());
    assert_eq!(params.basic.dev_sectors, (32 << 20) >> 9);
    assert_eq!(params.basic.logical_bs_shift, 9);
    assert!(
        params
            .basic
            .attrs()
            .contains(BasicAttrs::VOLATILE_CACHE | BasicAttrs::FUA)
    );
    assert!(!params.basic.attrs().contains(BasicAttrs::READ_ONLY));
    let discard = params.discard;
    assert!(discard.max_discard_sectors > 0 && discard.max_write_zeroes_sectors > 0);
    assert!(discard.discard_granularity.is_power_of_two() && discard.discard_granularity >= 512);

    // Asking for a larger block size is honoured; a file needs no particular one buffered.
    let backing = LoopBuilder::new(&path)
        .buffered(true)
        .block_size(4096)
        .open()
        .expect("4K blocks");
    assert_eq!(backing.block_size(), 4096);
}

#[test]
fn direct_io_is_the_default_where_the_file_system_has_it() {
    let dir = Scratch::new("direct");
    let path = dir.file("disk.img", 1 << 20);
    let backing = LoopBuilder::new(&path).open().expect("opened");
    // Whatever this file system offers, the outcome is consistent: direct with no warning, or
    // buffered with the warning that says so.
    let refused = backing
        .warnings()
        .iter()
        .any(|w| matches!(w, BackingWarning::DirectIoUnsupported { .. }));
    assert_eq!(backing.is_direct(), !refused, "{:?}", backing.warnings());
    assert!(backing.block_size().is_power_of_two() && backing.block_size() >= 512);
}

fn dev_info() -> DevInfo {
    DevInfo {
        nr_hw_queues: 1,
        queue_depth: 64,
        max_io_buf_bytes: 512 << 10,
        ..DevInfo::default()
    }
}

#[test]
fn a_loop_that_copies_inline_prefers_request_data_in_memory() {
    let dir = Scratch::new("prefers");
    let path = dir.file("disk.img", 1 << 20);
    for (io, prefers) in [(BackingIo::Async, false), (BackingIo::Inline, true)] {
        let backing = LoopBuilder::new(&path)
            .backing_io(io)
            .open()
            .expect("opened");
        assert!(!backing.needs_memory(), "{io:?}: zero copy is allowed");
        assert_eq!(backing.prefers_memory(), prefers, "{io:?}");
        // A fault wrapper (`ublk add fault --file`) passes it on.
        let fault = Fault::new(backing, FaultPlan::default());
        assert_eq!(fault.prefers_memory(), prefers, "{io:?} under faults");
    }
    // Auto copies inline only on a file system in memory, and prefers memory exactly then.
    let auto = LoopBuilder::new(&path).open().expect("opened");
    assert_eq!(auto.prefers_memory(), auto.inline() != Inline::Never);
}
