//! Stress tests and model checks that cross layers: pins racing fsdax folios forming and
//! splitting (`fsdax_pins`), `break_layouts` racing pins and maps (`fsdax_breaks`), pins racing
//! teardown (`gup_teardown`), touches, pins by address and unmaps of a device-dax device
//! racing its teardown (`dax_teardown`), memory errors racing them (`mf_race`), the whole pgmap lifecycle under load (`lifecycle`), and the loom
//! model of pins against teardown (`loom_pin_teardown`).
//!
//! They live above every layer they drive, so that no lower module imports an upper one for
//! its tests. Each suite ends by checking that every reference count is back to idle.

#[cfg(all(test, not(loom)))]
mod dax_teardown;
#[cfg(all(test, not(loom)))]
mod fsdax_breaks;
#[cfg(all(test, not(loom)))]
mod fsdax_pins;
#[cfg(all(test, not(loom)))]
mod gup_teardown;
#[cfg(all(test, not(loom)))]
mod lifecycle;
#[cfg(all(test, loom))]
mod loom_pin_teardown;
#[cfg(all(test, not(loom)))]
mod mf_race;
