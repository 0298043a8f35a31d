//! What a queue ring's CQE `user_data` says: whose completion it is.
//!
//! Layout of the 64 bits: the kind in bits 60..64 (room for sixteen kinds, five used), then what
//! the kind needs in the low 32 bits: the tag in bits 0..16 and, for a target's SQE of a tag, the
//! sub-id it chose in bits 16..32; for an SQE the target owns (no tag), its 32-bit key. Bits
//! 32..60, and any bit a kind does not use, are zero, so a decoder can reject foreign values.

/// The owner of a completion on a queue ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UserData {
    /// A FETCH_REQ or COMMIT_AND_FETCH_REQ for `tag`: the kernel hands over a request, or aborts.
    Command { tag: u16 },
    /// An SQE a target pushed while serving `tag`, with the target's own `sub`-id.
    Target { tag: u16, sub: u16 },
    /// The poll on the eventfd the device writes to make its queues leave at once.
    Wake,
    /// A buffer command of the engine's own for `tag` (REGISTER_IO_BUF, UNREGISTER_IO_BUF),
    /// posted only if it failed.
    Buffer { tag: u16 },
    /// An SQE the target owns, tied to no tag (a standing receive on a connection, a timer),
    /// with the target's own `key`.
    Owned { key: u32 },
}

const KIND_SHIFT: u32 = 60;
const KIND_COMMAND: u64 = 0;
const KIND_TARGET: u64 = 1;
const KIND_WAKE: u64 = 2;
const KIND_BUFFER: u64 = 3;
const KIND_OWNED: u64 = 4;
const SUB_SHIFT: u32 = 16;
/// The bits any kind may use: the kind and the low 32.
const USED: u64 = (0xf << KIND_SHIFT) | 0xffff_ffff;

impl UserData {
    /// The `user_data` word for this owner.
    pub(crate) const fn encode(self) -> u64 {
        match self {
            UserData::Command { tag } => (KIND_COMMAND << KIND_SHIFT) | tag as u64,
            UserData::Target { tag, sub } => {
                (KIND_TARGET << KIND_SHIFT) | ((sub as u64) << SUB_SHIFT) | tag as u64
            }
            UserData::Wake => KIND_WAKE << KIND_SHIFT,
            UserData::Buffer { tag } => (KIND_BUFFER << KIND_SHIFT) | tag as u64,
            UserData::Owned { key } => (KIND_OWNED << KIND_SHIFT) | key as u64,
        }
    }

    /// The owner of a completion, or `None` for a word this engine never put in an SQE.
    pub(crate) const fn decode(word: u64) -> Option<Self> {
        if word & !USED != 0 {
            return None;
        }
        let tag = word as u16;
        let sub = (word >> SUB_SHIFT) as u16;
        match word >> KIND_SHIFT {
            KIND_COMMAND if sub == 0 => Some(UserData::Command { tag }),
            KIND_TARGET => Some(UserData::Target { tag, sub }),
            KIND_WAKE if word == KIND_WAKE << KIND_SHIFT => Some(UserData::Wake),
            KIND_BUFFER if sub == 0 => Some(UserData::Buffer { tag }),
            KIND_OWNED => Some(UserData::Owned { key: word as u32 }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips_at_the_edges() {
        for tag in [0, 1, 127, 4095, u16::MAX] {
            let cmd = UserData::Command { tag };
            assert_eq!(UserData::decode(cmd.encode()), Some(cmd));
            for sub in [0, 1, 0x8000, u16::MAX] {
                let target = UserData::Target { tag, sub };
                assert_eq!(UserData::decode(target.encode()), Some(target));
            }
        }
        assert_eq!(
            UserData::decode(UserData::Wake.encode()),
            Some(UserData::Wake)
        );
        for tag in [0, 4095, u16::MAX] {
            let buffer = UserData::Buffer { tag };
            assert_eq!(UserData::decode(buffer.encode()), Some(buffer));
        }
        for key in [0, 1, 0xffff, 0x1_0000, u32::MAX] {
            let owned = UserData::Owned { key };
            assert_eq!(UserData::decode(owned.encode()), Some(owned));
        }
    }

    #[test]
    fn kinds_never_collide() {
        let words = [
            UserData::Command { tag: 5 }.encode(),
            UserData::Target { tag: 5, sub: 0 }.encode(),
            UserData::Buffer { tag: 5 }.encode(),
            UserData::Owned { key: 5 }.encode(),
        ];
        for (i, a) in words.iter().enumerate() {
            for b in &words[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_ne!(
            UserData::Wake.encode(),
            UserData::Command { tag: 0 }.encode()
        );
        assert_ne!(UserData::Wake.encode(), UserData::Owned { key: 0 }.encode());
    }

    #[test]
    fn foreign_words_are_refused() {
        // A sub-id on a command or a buffer command, bits in the unused middle, a tag on the
        // wake poll, kinds nobody uses.
        assert_eq!(UserData::decode(1 << 16), None);
        assert_eq!(UserData::decode((3 << 60) | (1 << 16)), None);
        assert_eq!(UserData::decode(1 << 40), None);
        assert_eq!(UserData::decode((4 << 60) | (1 << 32)), None);
        assert_eq!(UserData::decode((2 << 60) | 7), None);
        for kind in 5..16u64 {
            assert_eq!(UserData::decode(kind << 60), None, "kind {kind}");
        }
        assert_eq!(UserData::decode(u64::MAX), None);
    }
}
