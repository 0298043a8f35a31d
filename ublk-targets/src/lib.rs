//! ublk backends.
//!
//! This crate will hold the targets a ublk device can serve: `null` (completes every request at once, like
//! the kernel's null_blk), `mem` (a RAM disk) and `loop` (a file or block device, with asynchronous
//! io_uring I/O).
