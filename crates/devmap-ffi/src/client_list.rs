//! The namespaces a service serves, for C clients: `devmap_client_list` copies one
//! `devmap_client_ns_entry` per namespace of every served region (as `devmap list --socket`
//! shows them), and `devmap_client_region_path` names a region by its index, the `X` of
//! `regionX` and `namespaceX.N`.

use std::ffi::{c_char, c_int};

use crate::client::devmap_client;
use crate::error::{call, fill, handle, nonnull, out_array};

/// One namespace a service serves.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct devmap_client_ns_entry {
    /// The namespace's name, NUL-terminated (at most 64 bytes before the NUL).
    pub name: [c_char; 65],
    /// `devdax` or `fsdax`, NUL-terminated.
    pub mode: [c_char; 8],
    /// The index of its region in the service's order (`devmap_client_region_path`).
    pub region: u32,
    /// Raw size in bytes.
    pub size: u64,
    /// Usable bytes: what a mapping can cover.
    pub data_bytes: u64,
    /// The align in bytes.
    pub align: u64,
    /// Enabled by the service.
    pub enabled: bool,
    /// Its enable was warm (the memmap kept from a clean disable).
    pub warm: bool,
    /// Clients that map or pin it.
    pub clients: u32,
}

impl Default for devmap_client_ns_entry {
    fn default() -> Self {
        devmap_client_ns_entry {
            name: [0; 65],
            mode: [0; 8],
            region: 0,
            size: 0,
            data_bytes: 0,
            align: 0,
            enabled: false,
            warm: false,
            clients: 0,
        }
    }
}

/// `s` as a NUL-terminated C string in `N` bytes, cut short if it is longer.
fn c_str<const N: usize>(s: &str) -> [c_char; N] {
    let mut out = [0 as c_char; N];
    for (o, b) in out.iter_mut().zip(s.bytes().take(N - 1)) {
        *o = b as c_char;
    }
    out
}

/// Copies an entry per namespace of every region the service serves into `out` (`cap`
/// entries; NULL when `cap` is 0) and stores how many there are in `*out_len`. If `cap` is too
/// small the first `cap` are copied, -ENOSPC is returned and `*out_len` is the count needed
/// (each call asks the service again).
///
/// Returns 0; -ENOSPC; -EFAULT; the service's errno, or -EPIPE / -ECONNRESET if it is gone.
/// Thread-safe.
///
/// # Safety
///
/// `client` must be NULL or a live connection handle; `out` NULL or `cap` writable entries;
/// `out_len` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn devmap_client_list(
    client: *const devmap_client,
    out: *mut devmap_client_ns_entry,
    cap: usize,
    out_len: *mut usize,
) -> c_int {
    call(|| {
        // SAFETY: the caller promises NULL or a live handle.
        let c = unsafe { handle(client, "client") }?;
        let out_len = nonnull(out_len, "out_len")?;
        // SAFETY: the caller promises `cap` writable entries at `out`.
        let out = unsafe { out_array(out, cap, "out") }?;
        let listing = c.client.listing()?;
        let index = |region: &str| {
            listing
                .regions
                .iter()
                .position(|r| r == region)
                .map_or(u32::MAX, |i| i as u32)
        };
        let entries = listing.entries.iter().map(|e| devmap_client_ns_entry {
            name: c_str(&e.name),
            mode: c_str(&e.mode),
            region: index(&e.region),
            size: e.size,
            data_bytes: e.data_bytes,
            align: e.align,
            enabled: e.enabled,
            warm: e.warm,
            clients: e.clients,
        });
        // SAFETY: `out_len` is non-null, and the caller promises it is writable.
        unsafe { fill(listing.entries.len(), entries, out, out_len) }
    })
}

/// Copies the path of the service's region `region` (an index from
/// `devmap_client_ns_entry.region`), NUL-terminated, into `out` (`cap` bytes) and stores its
/// length, NUL included, in `*out_len`; -ENOSPC (with the size needed) if `cap` is too small.
///
/// Returns 0; -ENOSPC; -EFAULT; -ENOENT (no such region); the service's errno, or -EPIPE /
/// -ECONNRESET if it is gone. Thread-safe.
///
/// # Safety
///
/// `client` must be NULL or a live connection handle; `out` NULL or `cap` writable bytes;
/// `out_len` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn devmap_client_region_path(
    client: *const devmap_client,
    region: u32,
    out: *mut c_char,
    cap: usize,
    out_len: *mut usize,
) -> c_int {
    call(|| {
        // SAFETY: the caller promises NULL or a live handle.
        let c = unsafe { handle(client, "client") }?;
        let out_len = nonnull(out_len, "out_len")?;
        // SAFETY: the caller promises `cap` writable bytes at `out`.
        let out = unsafe { out_array(out, cap, "out") }?;
        let listing = c.client.listing()?;
        let Some(path) = listing.regions.get(region as usize) else {
            return Err(crate::error::Failure::new(
                libc::ENOENT,
                format!(
                    "the service serves {} region(s): region {region} is not one of them",
                    listing.regions.len()
                ),
            ));
        };
        let bytes = path.bytes().chain([0]).map(|b| b as c_char);
        // SAFETY: `out_len` is non-null, and the caller promises it is writable.
        unsafe { fill(path.len() + 1, bytes, out, out_len) }
    })
}
