//! The `_IOC` command-number encoding (include/uapi/asm-generic/ioctl.h).
//!
//! ublk's control and I/O opcodes (`UBLK_U_CMD_*`, `UBLK_U_IO_*`) are built with
//! `_IOR`/`_IOWR('u', nr, struct)`. The driver dispatches on `_IOC_NR` but rejects a
//! type other than `'u'` when the kernel lacks `CONFIG_BLKDEV_UBLK_LEGACY_OPCODES`, so
//! the full encoding matters.
//!
//! Most architectures use the asm-generic layout (2 direction bits, 14 size bits,
//! `_IOC_WRITE` = 1, `_IOC_READ` = 2); powerpc, mips and sparc use 3 direction bits,
//! 13 size bits and `_IOC_NONE` = 1, `_IOC_READ` = 2, `_IOC_WRITE` = 4. The kernel
//! compares against its own architecture's values, so we follow the target's.

#[cfg(any(
    target_arch = "powerpc",
    target_arch = "powerpc64",
    target_arch = "mips",
    target_arch = "mips64",
    target_arch = "mips32r6",
    target_arch = "mips64r6",
    target_arch = "sparc",
    target_arch = "sparc64",
))]
mod arch {
    pub const SIZEBITS: u32 = 13;
    pub const NONE: u32 = 1;
    pub const READ: u32 = 2;
    pub const WRITE: u32 = 4;
}

#[cfg(not(any(
    target_arch = "powerpc",
    target_arch = "powerpc64",
    target_arch = "mips",
    target_arch = "mips64",
    target_arch = "mips32r6",
    target_arch = "mips64r6",
    target_arch = "sparc",
    target_arch = "sparc64",
)))]
mod arch {
    pub const SIZEBITS: u32 = 14;
    pub const NONE: u32 = 0;
    pub const READ: u32 = 2;
    pub const WRITE: u32 = 1;
}

/// `_IOC_NONE`: no data transfer.
pub const IOC_NONE: u32 = arch::NONE;
/// `_IOC_READ`: the kernel writes to userspace.
pub const IOC_READ: u32 = arch::READ;
/// `_IOC_WRITE`: the kernel reads from userspace.
pub const IOC_WRITE: u32 = arch::WRITE;

/// `_IOC_NRBITS`.
pub const IOC_NRBITS: u32 = 8;
/// `_IOC_TYPEBITS`.
pub const IOC_TYPEBITS: u32 = 8;
/// `_IOC_SIZEBITS` of the target architecture.
pub const IOC_SIZEBITS: u32 = arch::SIZEBITS;
/// `_IOC_NRSHIFT`.
pub const IOC_NRSHIFT: u32 = 0;
/// `_IOC_TYPESHIFT`.
pub const IOC_TYPESHIFT: u32 = IOC_NRSHIFT + IOC_NRBITS;
/// `_IOC_SIZESHIFT`.
pub const IOC_SIZESHIFT: u32 = IOC_TYPESHIFT + IOC_TYPEBITS;
/// `_IOC_DIRSHIFT`.
pub const IOC_DIRSHIFT: u32 = IOC_SIZESHIFT + IOC_SIZEBITS;

/// The ioctl type ublk uses for every encoded opcode: `'u'`.
pub const UBLK_IOC_TYPE: u8 = b'u';

/// `_IOC(dir, type, nr, size)`.
///
/// Fails to compile (in const context) or panics if `size` does not fit the size field.
pub const fn ioc(dir: u32, ty: u8, nr: u8, size: usize) -> u32 {
    assert!(
        size < (1 << IOC_SIZEBITS),
        "ioctl argument too large for _IOC_SIZEBITS"
    );
    (dir << IOC_DIRSHIFT)
        | ((size as u32) << IOC_SIZESHIFT)
        | ((ty as u32) << IOC_TYPESHIFT)
        | ((nr as u32) << IOC_NRSHIFT)
}

/// `_IO(type, nr)`: no argument.
pub const fn io(ty: u8, nr: u8) -> u32 {
    ioc(IOC_NONE, ty, nr, 0)
}

/// `_IOR(type, nr, T)` with `size = size_of::<T>()`: the kernel writes the argument.
pub const fn ior(ty: u8, nr: u8, size: usize) -> u32 {
    ioc(IOC_READ, ty, nr, size)
}

/// `_IOW(type, nr, T)` with `size = size_of::<T>()`: the kernel reads the argument.
pub const fn iow(ty: u8, nr: u8, size: usize) -> u32 {
    ioc(IOC_WRITE, ty, nr, size)
}

/// `_IOWR(type, nr, T)` with `size = size_of::<T>()`: both directions.
pub const fn iowr(ty: u8, nr: u8, size: usize) -> u32 {
    ioc(IOC_READ | IOC_WRITE, ty, nr, size)
}

/// `_IOC_NR(cmd)`: the command number, which is what ublk_drv dispatches on.
pub const fn ioc_nr(cmd: u32) -> u8 {
    (cmd >> IOC_NRSHIFT) as u8
}

/// `_IOC_TYPE(cmd)`.
pub const fn ioc_type(cmd: u32) -> u8 {
    (cmd >> IOC_TYPESHIFT) as u8
}

/// `_IOC_SIZE(cmd)`.
pub const fn ioc_size(cmd: u32) -> usize {
    ((cmd >> IOC_SIZESHIFT) & ((1 << IOC_SIZEBITS) - 1)) as usize
}

/// `_IOC_DIR(cmd)`.
pub const fn ioc_dir(cmd: u32) -> u32 {
    cmd >> IOC_DIRSHIFT
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_field() {
        let cmd = iowr(b'u', 0x21, 16);
        assert_eq!(ioc_nr(cmd), 0x21);
        assert_eq!(ioc_type(cmd), b'u');
        assert_eq!(ioc_size(cmd), 16);
        assert_eq!(ioc_dir(cmd), IOC_READ | IOC_WRITE);
        assert_eq!(ioc_dir(ior(b'u', 1, 32)), IOC_READ);
        assert_eq!(ioc_dir(iow(b'u', 1, 32)), IOC_WRITE);
        assert_eq!(ioc_dir(io(b'u', 1)), IOC_NONE);
        assert_eq!(ioc_size(io(b'u', 1)), 0);
    }

    // Values from the asm-generic macros, as x86_64/aarch64/riscv64 gcc computes them.
    #[cfg(not(any(
        target_arch = "powerpc",
        target_arch = "powerpc64",
        target_arch = "mips",
        target_arch = "mips64",
        target_arch = "mips32r6",
        target_arch = "mips64r6",
        target_arch = "sparc",
        target_arch = "sparc64",
    )))]
    #[test]
    fn generic_encoding_matches_known_values() {
        assert_eq!(iowr(b'u', 0x04, 32), 0xc020_7504);
        assert_eq!(ior(b'u', 0x02, 32), 0x8020_7502);
        assert_eq!(iow(b'u', 0x02, 32), 0x4020_7502);
        assert_eq!(io(b'u', 0x02), 0x0000_7502);
        // BLKGETSIZE64 = _IOR(0x12, 114, size_t): a well-known non-ublk value.
        assert_eq!(ior(0x12, 114, 8), 0x8008_1272);
    }

    #[test]
    #[should_panic(expected = "too large")]
    fn oversized_argument_is_refused() {
        let size = 1usize << IOC_SIZEBITS;
        let _ = ior(b'u', 0, core::hint::black_box(size));
    }
}
