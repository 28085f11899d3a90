//! Tests of the C ABI, called from Rust. They live in the crate rather than in `tests/`: an
//! integration test would see two crates named `devmap` (this one, whose C library must be
//! `libdevmap`, and the library it wraps).

mod abi;
mod client;
mod device_options;
mod mf;
mod options;
mod overhead;
mod reasons;
