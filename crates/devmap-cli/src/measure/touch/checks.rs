//! `touch-test`'s checks: the arguments turned into a [`Plan`] (every refusal saying what
//! would work), whether the machine can hold the run (memory, the huge page pool), and the
//! device's backing, including the rules for an existing file at `--path`.

use std::fs::OpenOptions;
use std::num::NonZeroUsize;
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use devmap::backing::{Backing, HugePageSize, huge_pages};
use devmap::dax::DaxOptions;
use devmap::{InitMode, Order};

use super::{BackingArg, InitArg, MAX_THREADS, MAX_UNFORCED, Plan, Source, TouchTestArgs};
use crate::args;
use crate::procfs;
use crate::units::{format_size, human};

/// The plan `a` asks for, or the first thing wrong with it.
pub(super) fn plan(a: &TouchTestArgs) -> Result<Plan> {
    let (size, align) = args::device_size_align(&a.size, &a.align)?;
    let all = size / align;
    let touched = match a.leaves {
        None => all,
        Some(0) => bail!("--leaves must be at least 1, e.g. --leaves 256"),
        Some(n) if n > all => bail!(
            "--leaves {n} is more than the {all} leaves of {} at align {}: use --leaves {all} or \
             fewer",
            format_size(size),
            format_size(align)
        ),
        Some(n) => n,
    };
    let touched_bytes = touched * align;
    if touched_bytes > MAX_UNFORCED && !a.force {
        bail!(
            "touching {} is more than {}: each side of the run touches, and so allocates, every \
             page of its leaves (memory, huge pages or page cache), one side after the other; \
             use --size {} or less, --leaves {}, or add --force",
            format_size(touched_bytes),
            format_size(MAX_UNFORCED),
            format_size(MAX_UNFORCED),
            MAX_UNFORCED / align
        );
    }
    let align = Order::from_bytes(align)?;
    let leaves = touched;
    let threads = threads(a.threads, leaves, align)?;
    // The library's default (one handler per core) unless --handlers says otherwise.
    let max_handlers = DaxOptions::MAX_HANDLERS;
    let handlers = a.handlers.unwrap_or_else(DaxOptions::default_handlers);
    if handlers == 0 || handlers > max_handlers {
        bail!(
            "--handlers {handlers} is not a usable count of fault handler threads: use 1 to \
             {max_handlers}, e.g. --handlers 2"
        );
    }
    let fault_around = a.fault_around;
    if !fault_around.is_power_of_two() || fault_around > DaxOptions::MAX_FAULT_AROUND {
        bail!(
            "--fault-around {fault_around} is not a usable window: use a power of two from 1 \
             (off) to {} leaves, e.g. --fault-around 16",
            DaxOptions::MAX_FAULT_AROUND
        );
    }
    let zero_ahead = a.zero_ahead;
    if zero_ahead > 0 && align == Order::BASE {
        bail!(
            "--zero-ahead prepares whole leaves of 2M or 1G; at --align 4K each touch already \
             maps a window of leaves (--fault-around): drop --zero-ahead, or use --align 2M"
        );
    }
    let max = DaxOptions::max_zero_ahead(align);
    if zero_ahead > max {
        bail!(
            "--zero-ahead {zero_ahead} is more leaves than the pool keeps ready (1 GiB of \
             them): use 0 (off) to {max} at --align {}",
            format_size(align.bytes())
        );
    }
    if zero_ahead > 0 && a.backing == BackingArg::File {
        bail!(
            "--zero-ahead needs touches caught by userfaultfd, and a file backing has none: \
             drop --zero-ahead, or use --backing memfd or hugetlb"
        );
    }
    let layout = match a.layout.layouts().as_slice() {
        [one] => *one,
        _ => bail!("touch-test runs one layout: choose --layout flat, vmemmap or heads"),
    };
    let init = match a.init {
        InitArg::Sync => InitMode::Sync,
        InitArg::Parallel => InitMode::parallel_default(),
        InitArg::Async => InitMode::async_default(),
    };
    let source = match (a.backing, &a.path) {
        (BackingArg::File, None) => bail!(
            "--backing file needs --path PATH: the file to hold the device (created sparse at \
             --size if missing), e.g. --path /tmp/devmap-touch"
        ),
        (BackingArg::File, Some(p)) => Source::File(p.clone()),
        (_, Some(_)) => bail!(
            "--path names the file of --backing file; a {} backing has no path: drop --path, \
             or add --backing file",
            backing_name(a.backing)
        ),
        (BackingArg::Memfd, None) => Source::Memfd,
        (BackingArg::Hugetlb, None) => Source::Hugetlb(huge_page_size(align)?),
    };
    let plan = Plan {
        size,
        align,
        source,
        threads,
        handlers,
        fault_around,
        zero_ahead,
        pace: std::time::Duration::from_micros(a.pace_us),
        init,
        layout,
        touched,
    };
    check_memory(&plan)?;
    Ok(plan)
}

fn backing_name(b: BackingArg) -> &'static str {
    match b {
        BackingArg::Memfd => "memfd",
        BackingArg::Hugetlb => "hugetlb",
        BackingArg::File => "file",
    }
}

/// Checks `--threads` against the leaves there are to share.
fn threads(n: usize, leaves: u64, align: Order) -> Result<usize> {
    let n = NonZeroUsize::new(n)
        .ok_or_else(|| anyhow!("--threads must be at least 1, e.g. --threads 2"))?
        .get();
    if n > MAX_THREADS {
        bail!("--threads {n} is more than devmap starts: use at most {MAX_THREADS}");
    }
    if n as u64 > leaves {
        bail!(
            "--threads {n} is more than the {leaves} leaves of {} to share among them: use \
             --threads {leaves} or fewer, or a larger --size",
            format_size(align.bytes())
        );
    }
    Ok(n)
}

/// The huge page size of a hugetlb backing for leaves of `align`: the same size, so each
/// caught fault maps one huge page.
fn huge_page_size(align: Order) -> Result<HugePageSize> {
    if align == HugePageSize::Size2M.order() {
        Ok(HugePageSize::Size2M)
    } else if align == HugePageSize::Size1G.order() {
        Ok(HugePageSize::Size1G)
    } else {
        bail!(
            "--backing hugetlb uses huge pages of --align, and there are no {} huge pages: use \
             --align 2M or --align 1G, or --backing memfd",
            format_size(align.bytes())
        )
    }
}

/// Refuses a run the machine cannot hold: touching more of a memfd than the memory devmap
/// allows itself, a hugetlb backing larger than the free huge pages (a shared hugetlb mapping
/// reserves all its pages, touched or not). Files go to the page cache,
/// which the kernel can write back, and are bounded by the size cap alone.
fn check_memory(plan: &Plan) -> Result<()> {
    match &plan.source {
        Source::Memfd => {
            let (budget, available) = procfs::memory_budget()?;
            let need = plan.touched_bytes();
            if need > budget {
                let fit = args::smaller_fitting(need, plan.align.bytes(), |s| s <= budget);
                let hint = match fit {
                    Some(s) if plan.touched * plan.align.bytes() == plan.size => {
                        format!("--size {}", format_size(s))
                    }
                    Some(s) => format!("--leaves {}", s / plan.align.bytes()),
                    None => "a smaller --size".to_owned(),
                };
                bail!(
                    "touching {} of a memfd takes {} of memory, more than the {} devmap allows \
                     itself ({}% of the {} available): try {hint}",
                    format_size(need),
                    human(need),
                    human(budget),
                    procfs::MEMORY_BUDGET_PERCENT,
                    human(available)
                );
            }
            Ok(())
        }
        Source::Hugetlb(page) => check_huge_pages(*page, plan.size),
        Source::File(_) => Ok(()),
    }
}

/// Refuses a hugetlb run the pool cannot serve, naming the free pages, the pages needed and
/// how to raise the pool. The device and the baseline each need the pages, one after the
/// other: the device gives them back before the baseline maps.
fn check_huge_pages(page: HugePageSize, size: u64) -> Result<()> {
    let bytes = page.order().bytes();
    let kb = bytes / 1024;
    let sysfs = format!("/sys/kernel/mm/hugepages/hugepages-{kb}kB/nr_hugepages");
    let counts = huge_pages(page).with_context(|| {
        format!(
            "cannot read the {} huge page pool: does this kernel have {} huge pages?",
            format_size(bytes),
            format_size(bytes)
        )
    })?;
    let need = size / bytes;
    if counts.free >= need {
        return Ok(());
    }
    let raise = if page == HugePageSize::Size2M {
        format!("{sysfs} (or /proc/sys/vm/nr_hugepages)")
    } else {
        sysfs
    };
    let smaller = if counts.free > 0 {
        format!(
            ", or use --size {} or less",
            format_size(counts.free * bytes)
        )
    } else {
        String::new()
    };
    bail!(
        "--backing hugetlb --size {} needs {need} free {} huge pages, and the pool has {} free \
         huge pages (of {}): as root, write {} to {raise}{smaller}",
        format_size(size),
        format_size(bytes),
        counts.free,
        counts.total,
        counts.total + (need - counts.free)
    )
}

/// The device's backing: a fresh memfd, or the file at `--path` as its rules say.
pub(super) fn open_device_backing(plan: &Plan) -> Result<Backing> {
    match &plan.source {
        Source::Memfd => Ok(Backing::memfd(plan.size)?),
        Source::Hugetlb(page) => Ok(Backing::hugetlb(plan.size, *page)?),
        Source::File(path) => open_file(path, plan.size, plan.align.bytes()),
    }
}

/// The file at `path` for a device of `size` bytes: created sparse if missing, extended if
/// empty, used as it is if exactly `size`, refused otherwise (it holds data this run would
/// not fit or would have to cut).
pub(super) fn open_file(path: &Path, size: u64, align: u64) -> Result<Backing> {
    let meta = match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Backing::create_file(path, size)
                .with_context(|| format!("cannot create {} for --backing file", path.display()));
        }
        Err(e) => return Err(e).with_context(|| format!("cannot inspect {}", path.display())),
        Ok(m) => m,
    };
    if !meta.is_file() {
        bail!(
            "--path {} is not a regular file: give a new path or an existing regular file",
            path.display()
        );
    }
    if meta.len() == 0 {
        OpenOptions::new()
            .write(true)
            .open(path)
            .and_then(|f| f.set_len(size))
            .with_context(|| format!("cannot extend {} to {}", path.display(), human(size)))?;
    } else if meta.len() != size {
        let its_size = if meta.len().is_multiple_of(align) {
            format!("--size {}, ", format_size(meta.len()))
        } else {
            String::new()
        };
        bail!(
            "--path {} holds {} bytes, not --size {} ({size} bytes): touch-test uses an \
             existing file only if it is empty or exactly --size, and never resizes one with \
             data in it; give {its_size}a new --path, or an empty file",
            path.display(),
            meta.len(),
            format_size(size),
        );
    }
    Ok(Backing::open_file(path)?)
}
