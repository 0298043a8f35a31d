//! A RAM disk gives the memory of what is discarded, zeroed or cut off back to the system, not
//! just to the allocator: its resident size falls. Its own test binary, so that no other test
//! moves this process's resident size meanwhile.

use ublk_queue::{IoFlags, SimpleTarget};
use ublk_targets::Mem;

const MIB: u64 = 1 << 20;

/// This process's resident memory, in MiB.
fn rss_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc is mounted");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("a VmRSS line");
    kib / 1024
}

fn fill(disk: &Mem, from: u64, mib: u64) {
    let piece: Vec<u8> = (0..MIB).map(|i| (i % 251) as u8 | 1).collect();
    for m in 0..mib {
        disk.write(from + m * MIB, &piece, IoFlags::empty())
            .expect("write");
    }
}

#[test]
fn discarded_zeroed_and_cut_off_memory_goes_back_to_the_system() {
    let disk = Mem::new(256 * MIB);
    let base = rss_mib();
    fill(&disk, 0, 64);
    let full = rss_mib();
    assert!(full >= base + 60, "writing 64 MiB: {base} -> {full} MiB");

    disk.discard(0, 128 * MIB).expect("discard");
    let discarded = rss_mib();
    assert!(
        full >= discarded + 60,
        "discarding 64 written MiB: {full} -> {discarded} MiB"
    );
    let mut back = vec![0xff; MIB as usize];
    disk.read(10 * MIB, &mut back).expect("read");
    assert!(
        back.iter().all(|&b| b == 0),
        "discarded space reads as zeroes"
    );

    fill(&disk, 0, 64);
    disk.write_zeroes(0, 64 * MIB, IoFlags::empty())
        .expect("write zeroes");
    let zeroed = rss_mib();
    assert!(
        zeroed <= discarded + 8,
        "after WRITE_ZEROES: {discarded} -> {zeroed} MiB"
    );

    fill(&disk, 192 * MIB, 64);
    let grown = rss_mib();
    disk.resize(128 * MIB, true).expect("shrink");
    let cut = rss_mib();
    assert!(
        grown >= cut + 60,
        "cutting 64 written MiB off: {grown} -> {cut} MiB"
    );
}
