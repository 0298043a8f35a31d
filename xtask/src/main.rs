//! `cargo xtask`: builds, VM boots of a real ublk kernel, end-to-end checks and benchmarks.

fn main() {
    eprintln!("usage: cargo xtask <verb>");
    std::process::exit(2);
}
