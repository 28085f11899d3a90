//! Stress tests and model checks that cross layers: pins racing fsdax folios forming and
//! splitting (`fsdax_pins`), `break_layouts` racing pins and maps (`fsdax_breaks`), pins racing
//! teardown (`gup_teardown`), touches, pins by address and unmaps of a device-dax device
//! racing its teardown (`dax_teardown`), memory errors racing them (`mf_race`), how many lookups a fault, a pin and a memory
//! failure make (`lookup_counts`), the whole pgmap lifecycle under load (`lifecycle`), and the loom
//! model of pins against teardown (`loom_pin_teardown`), of a client's fast pin against
//! the revocation of its mapping (`loom_fast_pin`), and of the zero-ahead pool handing a leaf
//! to its fault (`loom_zero_ahead`).
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
#[cfg(all(test, not(loom)))]
mod lookup_counts;
#[cfg(all(test, loom))]
mod loom_fast_pin;
#[cfg(all(test, loom))]
mod loom_pin_teardown;
#[cfg(all(test, loom))]
mod loom_zero_ahead;
#[cfg(all(test, not(loom)))]
mod mf_race;

/// Whether a device-dax error is the device going away for good.
#[cfg(all(test, not(loom)))]
fn dax_gone(e: &crate::dax::DaxError) -> bool {
    use crate::dax::DaxError;
    use crate::gup::GupError;
    matches!(
        e,
        DaxError::TornDown
            | DaxError::Gup(GupError::TornDown {
                may_revive: false,
                ..
            })
            | DaxError::Pgmap(crate::pgmap::PgmapError::NotRegistered)
    )
}

/// Whether a device-dax error is a pin refused by a teardown that may still give up (it is
/// not retried; the next operation goes on).
#[cfg(all(test, not(loom)))]
fn dax_may_revive(e: &crate::dax::DaxError) -> bool {
    matches!(
        e,
        crate::dax::DaxError::Gup(crate::gup::GupError::TornDown {
            may_revive: true,
            ..
        })
    )
}
