//! The field readers every message's decoder uses (the `message!` macro names them): each reads
//! one field and names it in its error.

use crate::wire::{Reader, WireError};

/// Longest region path or namespace name a request may carry.
pub const MAX_NAME: usize = 4096;

pub(super) fn u32_(r: &mut Reader<'_>, f: &'static str) -> Result<u32, WireError> {
    r.u32(f)
}
pub(super) fn u64_(r: &mut Reader<'_>, f: &'static str) -> Result<u64, WireError> {
    r.u64(f)
}
pub(super) fn i32_(r: &mut Reader<'_>, f: &'static str) -> Result<i32, WireError> {
    r.i32(f)
}
pub(super) fn bool_(r: &mut Reader<'_>, f: &'static str) -> Result<bool, WireError> {
    r.bool(f)
}
pub(super) fn name(r: &mut Reader<'_>, f: &'static str) -> Result<String, WireError> {
    r.str(f, MAX_NAME).map(str::to_owned)
}
pub(super) fn text(r: &mut Reader<'_>, f: &'static str) -> Result<Vec<u8>, WireError> {
    r.bytes(f, crate::wire::MAX_PAYLOAD).map(<[u8]>::to_vec)
}
