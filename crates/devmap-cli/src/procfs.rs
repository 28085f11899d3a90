//! What the kernel says about this process and machine: resident set size and available memory,
//! read from `/proc`, and which process holds a region file's lock (`/proc/locks`).

use anyhow::{Context, Result, anyhow};

/// Reads a `Name:   123 kB` field of a `/proc` file, in bytes.
fn kb_field(path: &str, field: &str) -> Result<u64> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {path}"))?;
    let line = text
        .lines()
        .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))
        .ok_or_else(|| anyhow!("{path} has no {field} line"))?;
    let kb: u64 = line[field.len() + 1..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .with_context(|| format!("cannot parse {field} in {path}: {line:?}"))?;
    Ok(kb * 1024)
}

/// Resident bytes of this process (`Rss` of `/proc/self/smaps_rollup`, else `VmRSS`).
pub fn rss_bytes() -> Result<u64> {
    kb_field("/proc/self/smaps_rollup", "Rss").or_else(|_| kb_field("/proc/self/status", "VmRSS"))
}

/// Memory the kernel could give us without swapping (`MemAvailable`).
pub fn mem_available() -> Result<u64> {
    kb_field("/proc/meminfo", "MemAvailable")
}

/// Never let one run take more than this share of the memory the kernel says is available.
pub const MEMORY_BUDGET_PERCENT: u64 = 80;

/// The most one run may allocate, and `MemAvailable` it was computed from.
pub fn memory_budget() -> Result<(u64, u64)> {
    let available = mem_available()?;
    Ok((available / 100 * MEMORY_BUDGET_PERCENT, available))
}

/// The pid of the process holding a `flock` lock on the file at `path`, as `/proc/locks` tells:
/// read-only, so asking never takes the lock from a process about to (a region's manager holds
/// its exclusive lock for as long as it manages it). `None` if no process does, or if the file
/// or `/proc/locks` cannot be read.
///
/// `/proc/locks` is generated afresh at every `read`, from an index into the kernel's list of
/// locks, so a file longer than one read can skip a line when a lock listed before it goes
/// away between two reads. Each read therefore asks for a whole buffer (the kernel fills a
/// page of lines per read; `read_to_string` would start with a 32-byte probe and split even a
/// short file in two), and a holder not found is looked for twice more before it is called
/// gone: a skip needs a lock to go away at that moment, a gone holder is gone every time.
pub fn flock_holder(path: &std::path::Path) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    (0..3).find_map(|_| flock_holder_in(&read_locks()?, meta.dev(), meta.ino()))
}

/// The text of `/proc/locks`, read in requests of at least a page each.
fn read_locks() -> Option<String> {
    use std::io::Read;
    let mut file = std::fs::File::open("/proc/locks").ok()?;
    let mut text = String::with_capacity(64 << 10);
    file.read_to_string(&mut text).ok()?;
    Some(text)
}

/// [`flock_holder`] over the text of `/proc/locks`, for the file with device `dev` (as
/// `st_dev` encodes it) and inode `ino`.
fn flock_holder_in(locks: &str, dev: u64, ino: u64) -> Option<u32> {
    // Linux's dev_t: the minor's low 8 bits at 0, the major's 12 at 8, the rest of the minor at
    // 20 and of the major at 44 (new_encode_dev / huge_encode_dev).
    let major = ((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0xfff);
    let minor = ((dev >> 12) & 0xffff_ff00) | (dev & 0xff);
    // `1: FLOCK  ADVISORY  WRITE 15937 fe:00:10011219 0 EOF`; a waiter's line has `->` after
    // the number, and holds nothing.
    locks.lines().find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.get(1) != Some(&"FLOCK") {
            return None;
        }
        let mut id = f.get(5)?.split(':');
        let (maj, min, inode) = (id.next()?, id.next()?, id.next()?);
        let same = u64::from_str_radix(maj, 16).ok()? == major
            && u64::from_str_radix(min, 16).ok()? == minor
            && inode.parse::<u64>().ok()? == ino;
        same.then(|| f.get(4)?.parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_holder_of_a_flock_is_read_from_proc_locks() {
        let locks = "1: POSIX  ADVISORY  WRITE 700 fe:00:10011219 0 EOF\n\
                     2: FLOCK  ADVISORY  WRITE 15937 fe:00:10011219 0 EOF\n\
                     2: -> FLOCK  ADVISORY  WRITE 15999 fe:00:10011219 0 EOF\n\
                     3: FLOCK  ADVISORY  READ 15841 103:02:42 0 EOF\n";
        // fe:00 is st_dev 0xfe00; 103:02 (major 259) is 0x10302.
        assert_eq!(flock_holder_in(locks, 0xfe00, 10011219), Some(15937));
        assert_eq!(flock_holder_in(locks, 0x10302, 42), Some(15841));
        assert_eq!(flock_holder_in(locks, 0xfe00, 42), None);
        assert_eq!(flock_holder_in(locks, 0xfe01, 10011219), None);
        assert_eq!(flock_holder_in("", 0xfe00, 10011219), None);
    }

    /// A lock another thread keeps taking and dropping sits at the head of the kernel's list
    /// while the held one is read: the reader must find the held one every time. (Read
    /// through `read_to_string`, the list was read in two passes, a 32-byte probe and the
    /// rest, and an entry that moved in between was skipped: a live holder read as gone.)
    #[test]
    fn a_held_flock_is_found_while_other_locks_come_and_go() {
        use rustix::fs::{FlockOperation, flock};
        use std::sync::atomic::{AtomicBool, Ordering};
        let dir = std::env::temp_dir();
        let held_path = dir.join(format!("devmap-locks-held-{}", std::process::id()));
        let churn_path = dir.join(format!("devmap-locks-churn-{}", std::process::id()));
        let held = std::fs::File::create(&held_path).expect("create");
        flock(&held, FlockOperation::LockExclusive).expect("flock");
        let stop = AtomicBool::new(false);
        let missed = std::thread::scope(|s| {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let f = std::fs::File::create(&churn_path).expect("create");
                    flock(&f, FlockOperation::LockExclusive).expect("flock");
                    drop(f);
                }
            });
            let missed = (0..2000)
                .filter(|_| flock_holder(&held_path) != Some(std::process::id()))
                .count();
            stop.store(true, Ordering::Relaxed);
            missed
        });
        let _ = std::fs::remove_file(&held_path);
        let _ = std::fs::remove_file(&churn_path);
        assert_eq!(missed, 0, "reads of /proc/locks that missed the holder");
    }

    #[test]
    fn rss_grows_when_memory_is_touched() {
        let before = rss_bytes().expect("rss");
        let v = vec![1u8; 64 << 20];
        let after = rss_bytes().expect("rss");
        assert!(after >= before + (60 << 20), "{before} -> {after}");
        drop(v);
        assert!(mem_available().expect("meminfo") > 0);
    }
}
