//! Where a stripe keeps each byte: the device is cut into chunks, dealt to the stores in turn.
//!
//! ```text
//!              store 0    store 1    store 2
//!   row 0    | chunk 0  | chunk 1  | chunk 2  |
//!   row 1    | chunk 3  | chunk 4  | chunk 5  |
//! ```
//!
//! Chunk `c` of the device is chunk `c / stores` of store `c % stores`. Nothing here does I/O:
//! the mapping is pure arithmetic, tested against a byte-by-byte reference.

/// The arrangement of a stripe: its chunk size (a power of two) and its number of stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StripeLayout {
    chunk_shift: u32,
    stores: u32,
}

/// A run of a request's bytes that lies in one chunk: one backing I/O.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    /// The store it is on, `0..stores`.
    pub store: u32,
    /// Its byte offset on that store.
    pub offset: u64,
    /// Its byte offset within the request.
    pub at: u64,
    /// Its length in bytes: at most one chunk, never 0.
    pub len: u64,
}

/// All of a range that lies on one store: on each store the range covers one contiguous run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// The store, `0..stores`.
    pub store: u32,
    /// The byte offset on that store.
    pub offset: u64,
    /// The length in bytes, never 0.
    pub len: u64,
}

impl StripeLayout {
    /// `stores` stores in chunks of `chunk` bytes; `None` unless `chunk` is a power of two and
    /// `stores` at least 1.
    pub fn new(chunk: u64, stores: u32) -> Option<Self> {
        (chunk.is_power_of_two() && stores > 0).then(|| StripeLayout {
            chunk_shift: chunk.trailing_zeros(),
            stores,
        })
    }

    /// The chunk size in bytes.
    pub fn chunk(&self) -> u64 {
        1 << self.chunk_shift
    }

    /// The number of stores.
    pub fn stores(&self) -> u32 {
        self.stores
    }

    /// Bytes in one row: a chunk on every store.
    pub fn row(&self) -> u64 {
        self.chunk() * u64::from(self.stores)
    }

    /// The device size for stores of `store_size` bytes each (the smallest, for stores of
    /// several sizes): whole rows only, so every store holds the same number of chunks.
    pub fn device_size(&self, store_size: u64) -> u64 {
        (store_size >> self.chunk_shift).saturating_mul(self.row())
    }

    /// Where device byte `offset` lives: `(store, offset on the store)`.
    pub fn locate(&self, offset: u64) -> (u32, u64) {
        let chunk = offset >> self.chunk_shift;
        let within = offset & (self.chunk() - 1);
        let stores = u64::from(self.stores);
        // The remainder is below `stores`, a u32.
        let store = (chunk % stores) as u32;
        (store, ((chunk / stores) << self.chunk_shift) | within)
    }

    /// The pieces of the `len` bytes at device byte `offset`, in the request's order: each lies
    /// in one chunk, and together they cover the range exactly once.
    pub fn pieces(&self, offset: u64, len: u64) -> Pieces {
        Pieces {
            layout: *self,
            offset,
            at: 0,
            len,
        }
    }

    /// What the `len` bytes at device byte `offset` cover on each store, in store order,
    /// leaving out the stores they miss: one run per store, the union of that store's
    /// [`pieces`](Self::pieces). A DISCARD or WRITE_ZEROES goes to each store as one operation.
    pub fn extents(&self, offset: u64, len: u64) -> impl Iterator<Item = Extent> + use<> {
        let layout = *self;
        let end = offset.saturating_add(len);
        (0..self.stores).filter_map(move |store| {
            let start = layout.store_bound(store, offset);
            let stop = layout.store_bound(store, end);
            (stop > start).then_some(Extent {
                store,
                offset: start,
                len: stop - start,
            })
        })
    }

    /// The first byte of `store` at or after device byte `device`, as a store offset: the
    /// store's bytes below it are exactly those of device bytes below `device`.
    fn store_bound(&self, store: u32, device: u64) -> u64 {
        let chunk = device >> self.chunk_shift;
        let within = device & (self.chunk() - 1);
        let stores = u64::from(self.stores);
        let (row, column) = (chunk / stores, (chunk % stores) as u32);
        let row_start = row << self.chunk_shift;
        if store < column {
            // This row's chunk of the store lies wholly below `device`.
            row_start + self.chunk()
        } else if store == column {
            row_start + within
        } else {
            row_start
        }
    }
}

/// The pieces of a range: [`StripeLayout::pieces`].
#[derive(Debug, Clone)]
pub struct Pieces {
    layout: StripeLayout,
    /// Device offset of the next piece.
    offset: u64,
    /// Request offset of the next piece.
    at: u64,
    /// Bytes left.
    len: u64,
}

impl Iterator for Pieces {
    type Item = Piece;

    fn next(&mut self) -> Option<Piece> {
        if self.len == 0 {
            return None;
        }
        let chunk = self.layout.chunk();
        let len = (chunk - (self.offset & (chunk - 1))).min(self.len);
        let (store, offset) = self.layout.locate(self.offset);
        let piece = Piece {
            store,
            offset,
            at: self.at,
            len,
        };
        self.offset += len;
        self.at += len;
        self.len -= len;
        Some(piece)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        if self.len == 0 {
            return (0, Some(0));
        }
        let shift = self.layout.chunk_shift;
        let first = self.offset >> shift;
        let last = (self.offset + self.len - 1) >> shift;
        let n = usize::try_from(last - first + 1).unwrap_or(usize::MAX);
        (n, Some(n))
    }
}

impl ExactSizeIterator for Pieces {}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The layout as the module doc draws it, computed the slow way, without shifts or rows:
    /// device byte `d` is in chunk `d / chunk`, dealt to store `chunk % stores` as that store's
    /// chunk number `chunk / stores`.
    fn reference(chunk: u64, stores: u64, d: u64) -> (u64, u64) {
        let c = d / chunk;
        (c % stores, (c / stores) * chunk + d % chunk)
    }

    /// The inverse of [`reference`]: which device byte is at `offset` on `store`.
    fn device_byte(chunk: u64, stores: u64, store: u64, offset: u64) -> u64 {
        ((offset / chunk) * stores + store) * chunk + offset % chunk
    }

    #[test]
    fn chunks_are_dealt_in_turn() {
        let l = StripeLayout::new(4096, 3).unwrap();
        assert_eq!(l.locate(0), (0, 0));
        assert_eq!(l.locate(4096), (1, 0));
        assert_eq!(l.locate(2 * 4096 + 7), (2, 7));
        assert_eq!(l.locate(3 * 4096), (0, 4096));
        assert_eq!(l.row(), 3 * 4096);
        // A 10 KiB request from 2 KiB: the rest of chunk 0, all of chunk 1, 4 KiB of chunk 2.
        let pieces: Vec<_> = l.pieces(2048, 10 << 10).collect();
        assert_eq!(
            pieces,
            [
                Piece {
                    store: 0,
                    offset: 2048,
                    at: 0,
                    len: 2048
                },
                Piece {
                    store: 1,
                    offset: 0,
                    at: 2048,
                    len: 4096
                },
                Piece {
                    store: 2,
                    offset: 0,
                    at: 6144,
                    len: 4096
                },
            ]
        );
        assert_eq!(l.pieces(2048, 10 << 10).len(), 3);
        assert_eq!(l.pieces(0, 0).count(), 0);
    }

    #[test]
    fn device_size_is_whole_rows_of_the_smallest_store() {
        let l = StripeLayout::new(64 << 10, 3).unwrap();
        assert_eq!(l.device_size(1 << 20), 3 << 20);
        // 1 MiB + 100 KiB: the partial chunk is left out on every store.
        assert_eq!(
            l.device_size((1 << 20) + (100 << 10)),
            3 * ((1 << 20) + (64 << 10))
        );
        assert_eq!(l.device_size((64 << 10) - 1), 0);
        assert_eq!(l.device_size(u64::MAX), u64::MAX);
    }

    #[test]
    fn only_powers_of_two_and_some_stores_make_a_layout() {
        assert!(StripeLayout::new(4096, 2).is_some());
        assert!(StripeLayout::new(4097, 2).is_none());
        assert!(StripeLayout::new(0, 2).is_none());
        assert!(StripeLayout::new(4096, 0).is_none());
    }

    #[test]
    fn extents_cover_each_store_once() {
        let l = StripeLayout::new(4096, 3).unwrap();
        // From the middle of chunk 1 (store 1) to the middle of chunk 7 (store 1, row 2).
        let extents: Vec<_> = l.extents(4096 + 100, 6 * 4096).collect();
        assert_eq!(
            extents,
            [
                Extent {
                    store: 0,
                    offset: 4096,
                    len: 2 * 4096
                },
                Extent {
                    store: 1,
                    offset: 100,
                    len: 2 * 4096
                },
                Extent {
                    store: 2,
                    offset: 0,
                    len: 2 * 4096
                },
            ]
        );
        // Within one chunk: one store.
        assert_eq!(l.extents(2 * 4096 + 8, 16).count(), 1);
    }

    fn layouts() -> impl Strategy<Value = StripeLayout> {
        (12u32..=16, 1u32..=6).prop_map(|(shift, stores)| {
            StripeLayout::new(1 << shift, stores).expect("a power of two")
        })
    }

    proptest! {
        /// Every byte of a request maps to exactly one place, the reference layout's; the
        /// pieces are contiguous in the request and in order, within one chunk each.
        #[test]
        fn pieces_agree_with_the_reference(
            layout in layouts(),
            first in 0u64..4096,
            sectors in 1u64..1024,
            row in 0u64..(1 << 30),
        ) {
            let (chunk, stores) = (layout.chunk(), u64::from(layout.stores()));
            let offset = row * layout.row() + first * 512;
            let len = sectors * 512;
            let pieces: Vec<_> = layout.pieces(offset, len).collect();
            prop_assert_eq!(pieces.len(), layout.pieces(offset, len).len());
            let mut at = 0;
            for p in &pieces {
                prop_assert_eq!(p.at, at, "contiguous in the request");
                prop_assert!(p.len > 0 && p.len <= chunk);
                prop_assert_eq!(p.offset / chunk, (p.offset + p.len - 1) / chunk, "one chunk");
                // Every sector's first and last byte is where the reference puts it, and
                // the reference puts nothing else there.
                let mut b = 0;
                while b < p.len {
                    for byte in [b, b + 511] {
                        let d = offset + p.at + byte;
                        let want = reference(chunk, stores, d);
                        prop_assert_eq!((u64::from(p.store), p.offset + byte), want);
                        prop_assert_eq!(device_byte(chunk, stores, want.0, want.1), d);
                    }
                    b += 512;
                }
                at += p.len;
            }
            prop_assert_eq!(at, len, "the pieces cover the request");
        }

        /// On each store a range covers one run, the union of that store's pieces, and no
        /// piece lies outside its store's run.
        #[test]
        fn extents_are_the_union_of_each_stores_pieces(
            layout in layouts(),
            offset in 0u64..(1 << 40),
            len in 1u64..(4 << 20),
        ) {
            let offset = offset / 512 * 512;
            let extents: Vec<_> = layout.extents(offset, len).collect();
            for store in 0..layout.stores() {
                let mut mine = layout.pieces(offset, len).filter(|p| p.store == store);
                let extent = extents.iter().find(|e| e.store == store);
                match (mine.next(), extent) {
                    (None, None) => {}
                    (Some(first), Some(e)) => {
                        prop_assert_eq!(first.offset, e.offset);
                        let mut end = first.offset + first.len;
                        for p in mine {
                            prop_assert_eq!(p.offset, end, "a store's pieces are contiguous");
                            end += p.len;
                        }
                        prop_assert_eq!(end, e.offset + e.len);
                    }
                    (piece, extent) => prop_assert!(false, "{:?} vs {:?}", piece, extent),
                }
            }
            let total: u64 = extents.iter().map(|e| e.len).sum();
            prop_assert_eq!(total, len);
            prop_assert!(extents.windows(2).all(|w| w[0].store < w[1].store));
        }

        /// Every store offset below a store's share of the device is some device byte's, and
        /// locating that byte gives it back: nothing overlaps, nothing is lost.
        #[test]
        fn locate_is_a_bijection(layout in layouts(), rows in 1u64..1000, pick: u64) {
            let size = layout.device_size(rows * layout.chunk());
            prop_assert_eq!(size, rows * layout.row());
            let d = pick % size;
            let (store, at) = layout.locate(d);
            prop_assert!(store < layout.stores() && at < rows * layout.chunk());
            let back = device_byte(layout.chunk(), u64::from(layout.stores()), u64::from(store), at);
            prop_assert_eq!(back, d);
        }
    }
}
