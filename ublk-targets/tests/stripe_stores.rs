//! Opening a stripe's stores: what is refused (before any device exists), and the size, block
//! size and limits the device gets. Runs on the host: no ublk device is made.

use std::path::{Path, PathBuf};

use ublk_queue::DeviceBuilder;
use ublk_targets::{BackingKind, Error, StripeBuilder, StripeStore};
use ublk_uapi::{BasicAttrs, DevInfo};

/// A scratch directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("ublk-stripe-{name}-{}", std::process::id()));
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

#[test]
fn the_device_is_whole_rows_of_the_smallest_store() {
    let dir = Scratch::new("size");
    let a = dir.file("a", 10 << 20);
    // 4 MiB and a bit: the partial chunk is left out, on every store.
    let b = dir.file("b", (4 << 20) + 100_000);
    let c = dir.file("c", 8 << 20);
    let stripe = StripeBuilder::new()
        .chunk(64 << 10)
        .stores([&a, &b, &c])
        .open()
        .expect("three stores");
    assert_eq!(stripe.size(), 3 * ((4 << 20) + (64 << 10)));
    assert_eq!(stripe.layout().stores(), 3);
    assert_eq!(stripe.layout().chunk(), 64 << 10);
    let identities = stripe.identities();
    assert_eq!(identities.len(), 3);
    assert!(identities.iter().all(|i| i.kind == BackingKind::File));
    assert_eq!(
        identities[1].size,
        (4 << 20) + 100_000,
        "as opened, unrounded"
    );
    let StripeStore::Local(first) = &stripe.stores()[0] else {
        panic!("a local store")
    };
    assert_eq!(first.path(), a);

    // The device takes the size, block size, cache and discard limits from the stores.
    let builder = stripe.configure(DeviceBuilder::new());
    builder.validate().expect("a valid device");
    let params = builder.params(&DevInfo {
        max_io_buf_bytes: 512 << 10,
        ..DevInfo::default()
    });
    assert_eq!(params.basic.dev_sectors << 9, stripe.size());
    assert_eq!(1 << params.basic.logical_bs_shift, stripe.block_size());
    let attrs = params.basic.attrs();
    assert!(attrs.contains(BasicAttrs::VOLATILE_CACHE | BasicAttrs::FUA));
    assert!(!attrs.contains(BasicAttrs::READ_ONLY));
    let discard = stripe.discard().expect("files punch holes");
    assert!(discard.max_discard_sectors > 0 && discard.max_write_zeroes_sectors > 0);
}

#[test]
fn bad_stores_and_chunks_are_refused_by_name() {
    let dir = Scratch::new("bad");
    let a = dir.file("a", 1 << 20);
    let b = dir.file("b", 1 << 20);

    let err = StripeBuilder::new().store(&a).open().unwrap_err();
    assert!(matches!(err, Error::StoreCount { count: 1, .. }), "{err:?}");
    assert!(err.to_string().contains("ublk add loop"), "{err}");
    let err = StripeBuilder::new().open().unwrap_err();
    assert!(err.to_string().contains("got 0"), "{err}");
    let many = StripeBuilder::new().stores(std::iter::repeat_n(&a, 65));
    assert!(matches!(
        many.open(),
        Err(Error::StoreCount { count: 65, .. })
    ));

    for chunk in [0, 2048, 3 << 12, 100_000, 2 << 30] {
        let err = StripeBuilder::new()
            .chunk(chunk)
            .stores([&a, &b])
            .open()
            .unwrap_err();
        assert!(matches!(err, Error::ChunkSize { .. }), "{chunk}: {err:?}");
        assert!(err.to_string().contains("power of two"), "{err}");
    }

    let missing = dir.0.join("missing");
    let err = StripeBuilder::new()
        .stores([&a, &missing])
        .open()
        .unwrap_err();
    assert!(matches!(err, Error::StoreMissing { .. }), "{err:?}");
    assert!(err.to_string().contains("missing"), "{err}");
    assert!(!missing.exists(), "a stripe never creates a store");

    // An NBD export as a store: refused, naming how to make it a block device.
    let err = StripeBuilder::new()
        .stores([a.as_path(), Path::new("nbd://10.0.0.2:10809/disk")])
        .open()
        .unwrap_err();
    assert!(matches!(err, Error::RemoteStore { .. }), "{err:?}");
    assert!(err.to_string().contains("ublk add nbd"), "{err}");

    let tiny = dir.file("tiny", 60 << 10);
    let err = StripeBuilder::new().stores([&a, &tiny]).open().unwrap_err();
    assert!(
        matches!(err, Error::StoreTooSmall { size, chunk, .. } if size == 60 << 10 && chunk == 64 << 10),
        "{err:?}"
    );

    // The same file twice, by another name: its chunks would overwrite each other.
    let link = dir.0.join("link");
    std::fs::hard_link(&a, &link).expect("hard link");
    let err = StripeBuilder::new()
        .stores([&a, &b, &link])
        .open()
        .unwrap_err();
    assert!(matches!(err, Error::DuplicateStore { .. }), "{err:?}");
    assert!(err.to_string().contains("same store"), "{err}");

    let err = StripeBuilder::new()
        .stores([a.as_path(), dir.0.as_path()])
        .open()
        .unwrap_err();
    assert!(matches!(err, Error::NotFileOrBlockDevice { .. }), "{err:?}");
    let err = StripeBuilder::new()
        .stores([&a, &b])
        .block_size(3000)
        .open()
        .unwrap_err();
    assert!(matches!(err, Error::BlockSize { .. }), "{err:?}");
}

#[test]
fn a_larger_block_size_is_taken_as_asked() {
    let dir = Scratch::new("bs");
    let stripe = StripeBuilder::new()
        .stores([dir.file("a", 1 << 20), dir.file("b", 1 << 20)])
        .block_size(4096)
        .open()
        .expect("two stores");
    assert_eq!(stripe.block_size(), 4096);
    let discard = stripe.discard().expect("files punch holes");
    assert!(discard.granularity >= 4096);
}
