//! The measurement commands, which build test devices in this process (no region file) and
//! report what they measured beside the kernel's figures: `estimate` (a memmap's cost, nothing
//! allocated), `enable` (an emulated namespace initialised), `gup-test` (the kernel's gup_test
//! selftest), `touch-test` (first touches against the kernel's own), `poison-test` (a memory
//! error in a device mapped several times) and `report` (all of them, with the command behind
//! each figure). One module each: its arguments (clap derive) and their validation, what it
//! does, the row type it prints and that row's table columns.

pub mod client;
pub mod enable;
pub mod estimate;
pub mod gup;
pub mod latency;
pub mod poison;
pub mod report;
pub mod touch;
