//! The mem target: a RAM disk, allocated as it is written.

mod store;

use std::io;
use std::ops::Range;
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use ublk_queue::{DeviceBuilder, DiscardParams, IoFlags, SimpleTarget};

use store::Store;

/// Bytes per chunk: the unit of allocation and of locking.
pub const CHUNK_BYTES: usize = 64 << 10;

/// The largest DISCARD or WRITE_ZEROES a device gets from the block layer (which splits larger
/// ones): 1 GiB, 16384 chunks, so one request holds its queue thread for a millisecond or so,
/// never for the seconds a whole large disk would take.
pub const MAX_ZEROING_BYTES: u32 = 1 << 30;

/// One chunk's lock, guarding its bytes in the store and whether it holds any: false until
/// first written, and again once discarded (its bytes read as zeroes then and cost nothing).
type Chunk = RwLock<bool>;

/// A RAM disk of a fixed size, shared by every queue.
///
/// Storage is one mapping of the whole disk (its pages populated on first write, given back
/// to the system on discard), split into 64 KiB chunks, each behind its own lock, so an
/// unwritten region reads as zeroes and a large disk costs memory only for what was written. A request spanning several chunks locks them in ascending order (so concurrent
/// requests cannot deadlock) and holds them together (so it is applied as a whole). DISCARD and
/// WRITE_ZEROES free the chunks they cover entirely and zero the parts of the others, one chunk
/// at a time (neither needs to be atomic); [`Mem::configure`] advertises both, at most
/// [`MAX_ZEROING_BYTES`] per request. FLUSH has nothing to do.
///
/// ```
/// use ublk_queue::{DeviceBuilder, DiscardParams, IoFlags, SimpleTarget};
/// use ublk_targets::Mem;
///
/// let disk = Mem::new(1 << 20);
/// disk.write(4096, b"hello", IoFlags::empty()).unwrap();
/// let mut buf = [0u8; 5];
/// disk.read(4096, &mut buf).unwrap();
/// assert_eq!(&buf, b"hello");
/// assert_eq!(disk.allocated_chunks(), 1);
/// ```
#[derive(Debug)]
pub struct Mem {
    /// Read-locked by every request, write-locked only to resize.
    table: RwLock<Table>,
}

/// The disk's size, its bytes and its chunks.
#[derive(Debug)]
struct Table {
    size: u64,
    store: Store,
    chunks: Vec<Chunk>,
}

/// The part of one request that falls into one chunk.
struct Span {
    /// Which chunk.
    chunk: usize,
    /// The bytes of the chunk.
    in_chunk: Range<usize>,
    /// The matching bytes of the request's buffer.
    in_buf: Range<usize>,
}

impl Mem {
    /// A RAM disk of `size` bytes, reading as zeroes. Nothing is allocated but the chunk table.
    ///
    /// # Panics
    ///
    /// If the chunk table cannot be allocated; [`Mem::try_new`] reports that as an error instead.
    pub fn new(size: u64) -> Self {
        Self::try_new(size).unwrap_or_else(|e| panic!("a {size}-byte RAM disk: {e}"))
    }

    /// Like [`Mem::new`], but a chunk table that does not fit in memory (one entry per
    /// [`CHUNK_BYTES`] of disk) is an `OutOfMemory` error rather than an abort.
    pub fn try_new(size: u64) -> io::Result<Self> {
        let mut table = Table {
            size: 0,
            store: Store::new(0)?,
            chunks: Vec::new(),
        };
        table.grow_to(size)?;
        Ok(Mem {
            table: RwLock::new(table),
        })
    }

    /// The size in bytes.
    pub fn size(&self) -> u64 {
        self.table().size
    }

    /// Makes the disk `size` bytes: new space reads as zeroes; space given up is freed. Waits
    /// for the requests being served. Shrinking below written data is refused unless `force`,
    /// as the data would be lost.
    ///
    /// # Errors
    ///
    /// `InvalidInput` naming the first written byte beyond `size` (without `force`);
    /// `OutOfMemory` if the larger chunk table does not fit.
    pub fn resize(&self, size: u64, force: bool) -> io::Result<()> {
        let mut table = self.table.write().unwrap_or_else(PoisonError::into_inner);
        if size >= table.size {
            return table.grow_to(size);
        }
        if let Some(at) = table.written_beyond(size)
            && !force
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "data is written beyond {size} bytes (in the 64 KiB chunk at {at}): \
                     shrinking would lose it"
                ),
            ));
        }
        let keep = usize::try_from(size.div_ceil(CHUNK_BYTES as u64)).unwrap_or(usize::MAX);
        let boundary = (size % CHUNK_BYTES as u64) as usize;
        table.chunks.truncate(keep);
        // Gives the memory of the chunks cut off back (the bytes kept stay).
        table.store.resize(keep * CHUNK_BYTES)?;
        if boundary != 0 && keep > 0 {
            let last = keep - 1;
            let written = write(&table.chunks[last]);
            if *written {
                // Growing again later must find zeroes there, not the old bytes.
                // SAFETY: the chunk's write lock (`written`) is held while the slice lives.
                let bytes = unsafe { table.chunk_mut(last) };
                bytes[boundary..].fill(0);
            }
        }
        table.size = size;
        Ok(())
    }

    /// Where data is written at or beyond byte `size`: the offset of the first chunk holding
    /// some, or `None` if shrinking to `size` would lose nothing.
    pub fn written_beyond(&self, size: u64) -> Option<u64> {
        self.table().written_beyond(size)
    }

    fn table(&self) -> RwLockReadGuard<'_, Table> {
        // A panic while the table was locked left it whole: resizing changes it in one step.
        self.table.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sets what a RAM disk serves on `builder`: its size, and DISCARD and WRITE_ZEROES (which
    /// free memory), each at most [`MAX_ZEROING_BYTES`] per request.
    pub fn configure(&self, builder: DeviceBuilder) -> DeviceBuilder {
        let sectors = MAX_ZEROING_BYTES >> 9;
        builder.size(self.size()).discard(DiscardParams {
            // Discards smaller than a chunk only zero: say that freeing needs whole chunks.
            granularity: CHUNK_BYTES as u32,
            alignment: 0,
            max_discard_sectors: sectors,
            max_write_zeroes_sectors: sectors,
        })
    }

    /// Chunks currently holding memory: the disk's footprint is this times [`CHUNK_BYTES`].
    pub fn allocated_chunks(&self) -> usize {
        self.table().chunks.iter().filter(|c| *read(c)).count()
    }
}

impl Table {
    /// See [`Mem::written_beyond`].
    fn written_beyond(&self, size: u64) -> Option<u64> {
        let keep = usize::try_from(size.div_ceil(CHUNK_BYTES as u64)).unwrap_or(usize::MAX);
        let boundary = (size % CHUNK_BYTES as u64) as usize;
        let first = keep.saturating_sub(usize::from(boundary != 0));
        self.chunks
            .iter()
            .enumerate()
            .skip(first)
            .find(|(i, c)| {
                let written = read(c);
                if !*written {
                    return false;
                }
                if *i + 1 != keep {
                    return true;
                }
                // The last chunk kept: only its part past the new end matters.
                // SAFETY: the chunk's read lock (`written`) is held while the slice lives.
                let bytes = unsafe { self.chunk(*i) };
                bytes[boundary..].iter().any(|&b| b != 0)
            })
            .map(|(i, _)| i as u64 * CHUNK_BYTES as u64)
    }

    /// Extends the chunk table to cover `size` bytes (reading as zeroes).
    fn grow_to(&mut self, size: u64) -> io::Result<()> {
        let too_big = || {
            io::Error::new(
                io::ErrorKind::OutOfMemory,
                format!(
                    "its table of {} chunks does not fit in memory",
                    size.div_ceil(CHUNK_BYTES as u64)
                ),
            )
        };
        let count = usize::try_from(size.div_ceil(CHUNK_BYTES as u64)).map_err(|_| too_big())?;
        let more = count.saturating_sub(self.chunks.len());
        self.chunks.try_reserve_exact(more).map_err(|_| too_big())?;
        let bytes = count.checked_mul(CHUNK_BYTES).ok_or_else(too_big)?;
        self.store
            .resize(bytes.max(self.chunks.len() * CHUNK_BYTES))?;
        self.chunks.extend((0..more).map(|_| RwLock::new(false)));
        self.size = size;
        Ok(())
    }

    /// Chunk `i`'s bytes.
    ///
    /// # Safety
    ///
    /// The caller holds chunk `i`'s read lock (or its write lock) while the slice lives.
    unsafe fn chunk(&self, i: usize) -> &[u8] {
        // SAFETY: chunk `i` is inside the store (which covers every chunk of the table); no one
        // writes it while its lock is held by our caller.
        unsafe { std::slice::from_raw_parts(self.store.at(i * CHUNK_BYTES), CHUNK_BYTES) }
    }

    /// Chunk `i`'s bytes, to write.
    ///
    /// # Safety
    ///
    /// The caller holds chunk `i`'s write lock while the slice lives.
    #[allow(clippy::mut_from_ref)] // The chunk's write lock is the exclusive borrow.
    unsafe fn chunk_mut(&self, i: usize) -> &mut [u8] {
        // SAFETY: as in `chunk`; the write lock makes this the only access to the chunk.
        unsafe { std::slice::from_raw_parts_mut(self.store.at(i * CHUNK_BYTES), CHUNK_BYTES) }
    }

    /// Zeroes `range` of chunk `i` (whose write lock `written` is), giving the chunk's memory
    /// back when that is all of it.
    fn zero(&self, i: usize, written: &mut bool, range: Range<usize>) {
        if !*written {
            return;
        }
        if range.len() == CHUNK_BYTES {
            // SAFETY: the chunk's write lock is held: no reference into it is alive.
            unsafe { self.store.release(i * CHUNK_BYTES, CHUNK_BYTES) };
            *written = false;
        } else {
            // SAFETY: the chunk's write lock is held.
            let bytes = unsafe { self.chunk_mut(i) };
            bytes[range].fill(0);
        }
    }

    /// Splits `len` bytes at `offset` into per-chunk spans, after checking they are on the disk.
    fn spans(&self, offset: u64, len: u64) -> io::Result<impl Iterator<Item = Span>> {
        let end = offset
            .checked_add(len)
            .filter(|&end| end <= self.size)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "{len} bytes at {offset} reach past the end of the {}-byte disk",
                        self.size
                    ),
                )
            })?;
        // In range, so both fit a usize: the chunk table (which covers `size`) does.
        let (start, end) = (offset as usize, end as usize);
        let chunk = CHUNK_BYTES;
        Ok((start / chunk..end.div_ceil(chunk)).map(move |i| {
            let base = i * chunk;
            let (from, to) = (start.max(base), end.min(base + chunk));
            Span {
                chunk: i,
                in_chunk: from - base..to - base,
                in_buf: from - start..to - start,
            }
        }))
    }

    /// Write-locks the chunks `spans` touch, in ascending order, and hands each (its bytes and
    /// whether it holds any) with its span to `f`.
    fn with_written(
        &self,
        offset: u64,
        len: u64,
        mut f: impl FnMut(&mut [u8], &mut bool, Span),
    ) -> io::Result<()> {
        let spans: Vec<Span> = self.spans(offset, len)?.collect();
        // Spans come in ascending chunk order: taking every lock before touching any data makes
        // the request whole to concurrent readers, and the order rules out deadlocks.
        let mut guards: Vec<RwLockWriteGuard<'_, _>> =
            spans.iter().map(|s| write(&self.chunks[s.chunk])).collect();
        for (guard, span) in guards.iter_mut().zip(spans) {
            // SAFETY: the chunk's write lock (`guard`) is held while the slice lives.
            let bytes = unsafe { self.chunk_mut(span.chunk) };
            f(bytes, guard, span);
        }
        Ok(())
    }

    /// Zeroes `len` bytes at `offset`, one chunk lock at a time: no allocation, and no lock held
    /// across chunks, whatever the length.
    fn zero_range(&self, offset: u64, len: u64) -> io::Result<()> {
        for span in self.spans(offset, len)? {
            let mut written = write(&self.chunks[span.chunk]);
            self.zero(span.chunk, &mut written, span.in_chunk);
        }
        Ok(())
    }
}

fn read(chunk: &Chunk) -> RwLockReadGuard<'_, bool> {
    // A panic while a lock was held left plain bytes behind, nothing half-updated to guard.
    chunk.read().unwrap_or_else(PoisonError::into_inner)
}

fn write(chunk: &Chunk) -> RwLockWriteGuard<'_, bool> {
    chunk.write().unwrap_or_else(PoisonError::into_inner)
}

impl SimpleTarget for Mem {
    fn read(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let table = self.table();
        let spans: Vec<Span> = table.spans(offset, buf.len() as u64)?.collect();
        let guards: Vec<_> = spans.iter().map(|s| read(&table.chunks[s.chunk])).collect();
        for (guard, span) in guards.iter().zip(spans) {
            let dst = &mut buf[span.in_buf];
            if **guard {
                // SAFETY: the chunk's read lock (`guard`) is held while the slice lives.
                let bytes = unsafe { table.chunk(span.chunk) };
                dst.copy_from_slice(&bytes[span.in_chunk]);
            } else {
                dst.fill(0);
            }
        }
        Ok(())
    }

    fn write(&self, offset: u64, buf: &[u8], _: IoFlags) -> io::Result<()> {
        self.table()
            .with_written(offset, buf.len() as u64, |bytes, written, span| {
                bytes[span.in_chunk].copy_from_slice(&buf[span.in_buf]);
                *written = true;
            })
    }

    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        self.table().zero_range(offset, len)
    }

    fn write_zeroes(&self, offset: u64, len: u64, _: IoFlags) -> io::Result<()> {
        self.table().zero_range(offset, len)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use ublk_queue::errno_of;

    use super::*;

    const C: u64 = CHUNK_BYTES as u64;

    fn pattern(seed: u8, len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| seed.wrapping_add((i % 251) as u8))
            .collect()
    }

    fn read_vec(disk: &Mem, offset: u64, len: usize) -> Vec<u8> {
        let mut buf = vec![0xee; len];
        disk.read(offset, &mut buf).expect("in range");
        buf
    }

    #[test]
    fn unwritten_space_reads_as_zeroes_and_costs_nothing() {
        let disk = Mem::new(1 << 30);
        assert_eq!(disk.size(), 1 << 30);
        assert!(
            read_vec(&disk, (1 << 30) - 4096, 4096)
                .iter()
                .all(|&b| b == 0)
        );
        assert_eq!(disk.allocated_chunks(), 0);
    }

    #[test]
    fn writes_read_back() {
        let disk = Mem::new(4 * C);
        let data = pattern(1, 4096);
        disk.write(C + 512, &data, IoFlags::empty()).unwrap();
        assert_eq!(read_vec(&disk, C + 512, 4096), data);
        // Around the write, still zeroes.
        assert!(read_vec(&disk, C, 512).iter().all(|&b| b == 0));
        assert_eq!(disk.allocated_chunks(), 1);
    }

    #[test]
    fn io_across_chunks_lands_in_each() {
        let disk = Mem::new(4 * C);
        // From the middle of chunk 0 through chunk 1 into chunk 2.
        let data = pattern(7, 2 * CHUNK_BYTES);
        disk.write(C / 2, &data, IoFlags::empty()).unwrap();
        assert_eq!(disk.allocated_chunks(), 3);
        assert_eq!(read_vec(&disk, C / 2, data.len()), data);
        // A read that straddles the boundary differently sees the same bytes.
        assert_eq!(
            read_vec(&disk, C - 100, 200),
            data[C as usize / 2 - 100..C as usize / 2 + 100]
        );
        // The last chunk of the disk, to its last byte.
        let tail = pattern(9, 8192);
        disk.write(4 * C - 8192, &tail, IoFlags::FUA).unwrap();
        assert_eq!(read_vec(&disk, 4 * C - 8192, 8192), tail);
    }

    #[test]
    fn discard_frees_whole_chunks_and_zeroes_partial_ones() {
        let disk = Mem::new(4 * C);
        let data = pattern(3, 4 * CHUNK_BYTES);
        disk.write(0, &data, IoFlags::empty()).unwrap();
        assert_eq!(disk.allocated_chunks(), 4);
        // The second half of chunk 0, all of chunk 1, the first 4 KiB of chunk 2.
        disk.discard(C / 2, C / 2 + C + 4096).unwrap();
        assert_eq!(disk.allocated_chunks(), 3, "chunk 1 was freed");
        let after = read_vec(&disk, 0, 4 * CHUNK_BYTES);
        let zeroed = C as usize / 2..2 * C as usize + 4096;
        assert!(after[zeroed.clone()].iter().all(|&b| b == 0));
        assert_eq!(after[..zeroed.start], data[..zeroed.start]);
        assert_eq!(after[zeroed.end..], data[zeroed.end..]);
    }

    #[test]
    fn the_device_advertises_discard_and_write_zeroes_in_bounded_pieces() {
        let disk = Mem::new(4 << 30);
        let params = disk
            .configure(ublk_queue::DeviceBuilder::new())
            .params(&Default::default());
        assert_eq!(params.basic.dev_sectors, (4u64 << 30) >> 9);
        assert_eq!(params.discard.max_discard_sectors, MAX_ZEROING_BYTES >> 9);
        assert_eq!(
            params.discard.max_write_zeroes_sectors,
            MAX_ZEROING_BYTES >> 9
        );
        assert_eq!(params.discard.discard_granularity, CHUNK_BYTES as u32);
        // The largest request the block layer sends: every chunk it covers is visited, none held.
        disk.write(C * 100, &pattern(1, 4096), IoFlags::empty())
            .unwrap();
        disk.discard(0, u64::from(MAX_ZEROING_BYTES)).unwrap();
        assert_eq!(disk.allocated_chunks(), 0);
    }

    #[test]
    fn resizing_grows_with_zeroes_and_refuses_to_lose_written_data() {
        let disk = Mem::new(2 * C);
        disk.write(C + 100, b"tail", IoFlags::empty()).unwrap();
        disk.resize(4 * C, false).expect("grow");
        assert_eq!(disk.size(), 4 * C);
        assert!(
            read_vec(&disk, 2 * C, 2 * CHUNK_BYTES)
                .iter()
                .all(|&b| b == 0)
        );
        disk.write(3 * C, b"far", IoFlags::empty()).unwrap();
        // Shrinking over written bytes needs force; it changes nothing without.
        let err = disk.resize(C + 50, false).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(err.to_string().contains("written beyond"), "{err}");
        assert_eq!(disk.size(), 4 * C);
        // Down to just past the last written byte in chunk 1 drops chunk 3 only with force.
        assert!(disk.resize(C + 104, false).is_err(), "chunk 3 holds data");
        disk.resize(C + 104, true).expect("forced");
        assert_eq!(read_vec(&disk, C + 100, 4), b"tail");
        // Bytes cut off and grown back read as zeroes.
        disk.resize(C + 102, true).expect("cut 2 bytes");
        disk.resize(2 * C, false).expect("grow back");
        assert_eq!(read_vec(&disk, C + 100, 4), b"ta\0\0");
        assert!(
            disk.write(2 * C, b"x", IoFlags::empty()).is_err(),
            "past the end"
        );
        // A chunk-aligned end right after written data: nothing is lost, no force needed.
        disk.resize(4 * C, false).expect("grow");
        disk.write(2 * C - 1, b"z", IoFlags::empty()).unwrap();
        disk.resize(2 * C, false)
            .expect("the data ends at the new end");
    }

    #[test]
    fn write_zeroes_behaves_like_discard() {
        let disk = Mem::new(2 * C);
        disk.write(0, &pattern(5, 2 * CHUNK_BYTES), IoFlags::empty())
            .unwrap();
        disk.write_zeroes(0, C, IoFlags::NOUNMAP).unwrap();
        disk.write_zeroes(C + 10, 20, IoFlags::empty()).unwrap();
        assert_eq!(disk.allocated_chunks(), 1);
        assert!(read_vec(&disk, 0, CHUNK_BYTES).iter().all(|&b| b == 0));
        let second = read_vec(&disk, C, 64);
        assert!(second[10..30].iter().all(|&b| b == 0));
        assert_eq!(
            second[..10],
            pattern(5, 2 * CHUNK_BYTES)[CHUNK_BYTES..CHUNK_BYTES + 10]
        );
        // Zeroing space that was never written allocates nothing.
        let fresh = Mem::new(2 * C);
        fresh.write_zeroes(100, 1000, IoFlags::empty()).unwrap();
        assert_eq!(fresh.allocated_chunks(), 0);
    }

    #[test]
    fn out_of_range_requests_fail_without_touching_data() {
        let disk = Mem::new(C);
        let mut buf = [0u8; 512];
        for offset in [C, C - 256, u64::MAX - 100] {
            let err = disk.read(offset, &mut buf).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
            // No OS error: the engine completes the request with EIO.
            assert_eq!(errno_of(&err), rustix::io::Errno::IO.raw_os_error());
            assert!(disk.write(offset, &buf, IoFlags::empty()).is_err());
            assert!(disk.discard(offset, 512).is_err());
        }
        assert_eq!(disk.allocated_chunks(), 0);
        // Exactly up to the end is fine.
        disk.write(C - 512, &buf, IoFlags::empty()).unwrap();
    }

    #[test]
    fn concurrent_writers_on_disjoint_ranges_are_exact() {
        let disk = Arc::new(Mem::new(17 * C));
        // Eight threads, each owning a 2-chunk stripe shifted by half a chunk, so every write
        // spans a chunk boundary shared with a neighbour.
        let stripe = 2 * C;
        let threads: Vec<_> = (0..8u8)
            .map(|t| {
                let disk = Arc::clone(&disk);
                std::thread::spawn(move || {
                    let base = u64::from(t) * stripe + C / 2;
                    for round in 0..50u8 {
                        let data = pattern(t.wrapping_mul(31).wrapping_add(round), 12288);
                        let offset = base + (u64::from(round) * 4096) % (stripe - 12288);
                        disk.write(offset, &data, IoFlags::empty()).unwrap();
                        let mut back = vec![0; data.len()];
                        disk.read(offset, &mut back).unwrap();
                        assert_eq!(back, data, "thread {t} round {round}");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("no panic");
        }
    }

    #[test]
    fn concurrent_overlapping_writers_leave_one_whole_write() {
        let disk = Arc::new(Mem::new(4 * C));
        // Every thread writes its own byte over the same range spanning three chunks; since a
        // request holds all its chunk locks at once, the result is one thread's bytes throughout.
        let range = (C / 2, 2 * CHUNK_BYTES);
        let threads: Vec<_> = (1..=6u8)
            .map(|t| {
                let disk = Arc::clone(&disk);
                std::thread::spawn(move || {
                    for _ in 0..30 {
                        disk.write(range.0, &vec![t; range.1], IoFlags::empty())
                            .unwrap();
                        disk.discard(range.0 + C, 4096).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("no panic");
        }
        let last = read_vec(&disk, range.0, range.1);
        let winner = last[0];
        assert!((1..=6).contains(&winner));
        let discarded = CHUNK_BYTES..CHUNK_BYTES + 4096;
        for (i, &b) in last.iter().enumerate() {
            assert!(
                b == winner || (b == 0 && discarded.contains(&i)),
                "byte {i} is {b}, expected {winner}"
            );
        }
    }

    #[test]
    fn a_chunk_table_too_big_for_memory_is_an_error_not_an_abort() {
        let e = Mem::try_new(u64::MAX).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::OutOfMemory);
        assert!(e.to_string().contains("does not fit in memory"), "{e}");
        assert_eq!(Mem::try_new(1 << 20).unwrap().size(), 1 << 20);
    }
}
