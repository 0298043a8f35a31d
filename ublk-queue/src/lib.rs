//! The per-queue I/O engine of a ublk server.
//!
//! This crate will hold the queue thread that owns `/dev/ublkcN`'s I/O commands for one hardware queue:
//! it fetches requests (FETCH_REQ), hands each to a target, and commits the result with
//! COMMIT_AND_FETCH_REQ, one `io_uring_enter` per batch of work. The target interface is its public API.
