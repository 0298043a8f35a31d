//! Compile-time proof that each `#[repr(C)]` struct matches the kernel's layout.

/// Asserts a struct's size and alignment and the byte offset of every field.
///
/// Reads as a table copied from the C header; any drift fails the build:
///
/// ```text
/// assert_layout!(CtrlCmd, size 32, align 8, {
///     dev_id: 0,
///     queue_id: 4,
/// });
/// ```
macro_rules! assert_layout {
    ($t:ty, size $size:literal, align $align:literal, { $($field:ident : $off:literal),* $(,)? }) => {
        const _: () = assert!(core::mem::size_of::<$t>() == $size);
        const _: () = assert!(core::mem::align_of::<$t>() == $align);
        $(const _: () = assert!(core::mem::offset_of!($t, $field) == $off);)*
    };
}
