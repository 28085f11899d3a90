//! The proof that descriptors are initialised: a [`Synced`] token names a pfn span whose
//! descriptors are written and visible to the holder, and every memmap lookup demands one.
//!
//! The token lives here, beside the lookups that check it, so the memmap layer needs nothing
//! from above it. Exactly one place mints tokens: the init layer's `MemmapSet::sync`, after it
//! has made the span initialised (or found initialisation idle). The constructor is
//! crate-visible only because Rust has no "visible to one sibling module" scope; nothing else
//! in the crate calls it outside tests.

use crate::addr::{Pfn, PfnRange};

/// Proof that every descriptor of `range` is initialised and visible to this thread.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Synced {
    range: PfnRange,
}

impl Synced {
    /// A token for `range`. The caller guarantees that every descriptor of `range` was
    /// initialised, and that this thread has synchronised with the writes (an Acquire that
    /// observed their Release). Only `init::MemmapSet::sync` and test audits call this.
    pub(crate) fn vouch(range: PfnRange) -> Self {
        Self { range }
    }

    /// Whether `pfn` is covered.
    pub(crate) fn covers(&self, pfn: Pfn) -> bool {
        self.range.contains(pfn)
    }
}
