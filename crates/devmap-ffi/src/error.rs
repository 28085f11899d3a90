//! The boundary: every entry point runs its body through [`call`], which catches panics and
//! turns a [`Failure`] into a negative errno and the thread's last error message. The pointer
//! helpers check for null before anything is done, so a call with a null output pointer fails
//! with `-EFAULT` having changed nothing.

use std::cell::RefCell;
use std::ffi::{CStr, CString, OsStr, c_char, c_int};
use std::mem::MaybeUninit;
use std::os::unix::ffi::OsStrExt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::ptr::NonNull;

use devmap::addr::AddrError;
use devmap::backing::BackingError;
use devmap::client::ClientError;
use devmap::memory_failure::MfError;
use devmap::namespace::RegionError;
use devmap::{DaxError, GupError, NamespaceError, PgmapError};

use crate::errno;

/// Why a call failed: a positive errno and the message `devmap_last_error` will return.
#[derive(Debug)]
pub(crate) struct Failure {
    errno: i32,
    message: String,
}

/// What the bodies of entry points return.
pub(crate) type Result<T> = std::result::Result<T, Failure>;

impl Failure {
    /// A failure of `errno` (positive) with `message`.
    pub(crate) fn new(errno: i32, message: impl Into<String>) -> Failure {
        Failure {
            errno,
            message: message.into(),
        }
    }

    /// A bad argument (`-EINVAL`).
    pub(crate) fn invalid(message: impl Into<String>) -> Failure {
        Failure::new(errno::own::INVALID, message)
    }

    /// A library error: its errno from [`errno`], its message with every source below it.
    fn library(errno: i32, e: &(dyn std::error::Error + 'static)) -> Failure {
        Failure::new(errno, devmap::units::describe(e))
    }
}

macro_rules! from_library {
    ($($ty:ty => $f:path),* $(,)?) => {$(
        impl From<$ty> for Failure {
            fn from(e: $ty) -> Failure {
                Failure::library($f(&e), &e)
            }
        }
    )*};
}

from_library! {
    DaxError => errno::dax,
    GupError => errno::gup,
    BackingError => errno::backing,
    PgmapError => errno::pgmap,
    MfError => errno::mf,
    RegionError => errno::region,
    NamespaceError => errno::namespace,
    AddrError => errno::addr,
    ClientError => errno::client,
}

thread_local! {
    /// The message of the last failed call on this thread (none before the first).
    static LAST_ERROR: RefCell<Option<CString>> = const { RefCell::new(None) };
}

/// Records `message` as this thread's last error.
fn set_last_error(message: &str) {
    let text = CString::new(message.replace('\0', " ")).unwrap_or_default();
    // `try_with`: from a thread-local destructor the slot may be gone; the message is lost
    // then, and nothing panics.
    let _ = LAST_ERROR.try_with(|last| *last.borrow_mut() = Some(text));
}

/// This thread's last error message: a pointer into thread-local storage, valid until the
/// next failed call on this thread (or the thread's end); an empty string if none failed yet.
pub(crate) fn last_error() -> *const c_char {
    LAST_ERROR
        .try_with(|last| match &*last.borrow() {
            Some(text) => text.as_ptr(),
            None => c"".as_ptr(),
        })
        .unwrap_or(c"".as_ptr())
}

/// Runs an entry point's body: 0 on success, else the negative errno, with the message kept
/// for `devmap_last_error`. A panic is caught here and answered `-EIO`.
pub(crate) fn call(body: impl FnOnce() -> Result<()>) -> c_int {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => 0,
        Ok(Err(f)) => {
            set_last_error(&f.message);
            -f.errno
        }
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic with no message".to_owned());
            set_last_error(&format!("internal error (a bug in devmap): {what}"));
            -errno::own::PANIC
        }
    }
}

/// Runs a freeing function's body, which returns nothing: a panic is caught and recorded as
/// the thread's last error.
pub(crate) fn call_void(body: impl FnOnce()) {
    let _ = call(|| {
        body();
        Ok(())
    });
}

/// `p` as a non-null pointer, or `-EFAULT` naming `what`.
pub(crate) fn nonnull<T>(p: *mut T, what: &str) -> Result<NonNull<T>> {
    NonNull::new(p).ok_or_else(|| Failure::new(errno::own::NULL, format!("{what} is NULL")))
}

/// The object a handle points to, or `-EFAULT` naming `what`.
///
/// # Safety
///
/// `p` must be null or point to a live `T` that stays live and unmoved for `'a`.
pub(crate) unsafe fn handle<'a, T>(p: *const T, what: &str) -> Result<&'a T> {
    // SAFETY: the caller promises `p` is null or valid for 'a; `as_ref` checks for null.
    unsafe { p.as_ref() }.ok_or_else(|| Failure::new(errno::own::NULL, format!("{what} is NULL")))
}

/// A C string argument as UTF-8, or `-EFAULT` / `-EINVAL`.
///
/// # Safety
///
/// `p` must be null or point to a NUL-terminated string that stays unchanged for `'a`.
pub(crate) unsafe fn utf8<'a>(p: *const c_char, what: &str) -> Result<&'a str> {
    let bytes = nonnull(p.cast_mut(), what)?;
    // SAFETY: non-null, and the caller promises a NUL-terminated string valid for 'a.
    let text = unsafe { CStr::from_ptr(bytes.as_ptr()) };
    text.to_str()
        .map_err(|_| Failure::invalid(format!("{what} is not UTF-8")))
}

/// A C string argument as a path (any bytes but NUL), or `-EFAULT`.
///
/// # Safety
///
/// As for [`utf8`].
pub(crate) unsafe fn path<'a>(p: *const c_char, what: &str) -> Result<&'a Path> {
    let bytes = nonnull(p.cast_mut(), what)?;
    // SAFETY: non-null, and the caller promises a NUL-terminated string valid for 'a.
    let text = unsafe { CStr::from_ptr(bytes.as_ptr()) };
    Ok(Path::new(OsStr::from_bytes(text.to_bytes())))
}

/// An output array of `cap` entries (`p` may be null when `cap` is 0), or `-EFAULT`.
///
/// # Safety
///
/// Unless `cap` is 0, `p` must be null or point to `cap` writable `T`s that nothing else
/// reads or writes during `'a`.
pub(crate) unsafe fn out_array<'a, T>(
    p: *mut T,
    cap: usize,
    what: &str,
) -> Result<&'a mut [MaybeUninit<T>]> {
    if cap == 0 {
        return Ok(&mut []);
    }
    let p = nonnull(p, what)?;
    // SAFETY: non-null, and the caller promises `cap` writable, unaliased entries for 'a;
    // MaybeUninit<T> has T's layout and may hold anything.
    Ok(unsafe { std::slice::from_raw_parts_mut(p.as_ptr().cast::<MaybeUninit<T>>(), cap) })
}

/// Copies `items` (`count` of them) into `out` and stores `count` in `out_len`: all of them
/// and 0, or, when `out` is too small, its first `out.len()` and `-ENOSPC`.
///
/// # Safety
///
/// `out_len` must point to a writable `usize`.
pub(crate) unsafe fn fill<T>(
    count: usize,
    items: impl Iterator<Item = T>,
    out: &mut [MaybeUninit<T>],
    out_len: NonNull<usize>,
) -> Result<()> {
    for (slot, item) in out.iter_mut().zip(items) {
        slot.write(item);
    }
    // SAFETY: non-null by its type, writable by this function's contract.
    unsafe { out_len.write(count) };
    if count > out.len() {
        return Err(Failure::new(
            errno::own::TOO_SMALL,
            format!(
                "the array holds {} entries, {count} are needed: call again with a larger one",
                out.len()
            ),
        ));
    }
    Ok(())
}
