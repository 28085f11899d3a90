//! `poison-test`'s checks: the arguments turned into a [`Plan`] (every refusal saying what
//! would work), the default offset, and whether the machine can hold the run (memory for a
//! memfd, the huge page pool for hugetlb).

use anyhow::{Context, Result, bail};
use devmap::PAGE_SIZE;
use devmap::backing::{HugePageSize, huge_pages};

use super::{BackingArg, MAX_MAPPINGS, MAX_READERS, MAX_SIZE, Plan, PoisonTestArgs};
use crate::args;
use crate::procfs;
use crate::units::{format_size, human, parse_bytes};

/// The plan `a` asks for, or the first thing wrong with it.
pub(super) fn plan(a: &PoisonTestArgs) -> Result<Plan> {
    let (size, align) = args::device_size_align(&a.size, &a.align)?;
    if size > MAX_SIZE {
        bail!(
            "--size {} is more than {}: the run writes every page of the device, and so \
             allocates all of it; use --size {} or less",
            format_size(size),
            format_size(MAX_SIZE),
            format_size(MAX_SIZE)
        );
    }
    if a.mappings == 0 || a.mappings > MAX_MAPPINGS {
        bail!(
            "--mappings {} is not a usable count of mappings: use 1 to {MAX_MAPPINGS}, e.g. \
             --mappings 3",
            a.mappings
        );
    }
    if a.readers == 0 || a.readers > MAX_READERS {
        bail!(
            "--readers {} is not a usable count of reading threads: use 1 to {MAX_READERS}, \
             e.g. --readers 2",
            a.readers
        );
    }
    if a.count == 0 {
        bail!("--count must be at least 1, e.g. --count 1");
    }
    let offset = match &a.offset {
        Some(text) => offset(text, size)?,
        None => default_offset(size, align),
    };
    check_count(offset, a.count, size)?;
    let plan = Plan {
        size,
        align,
        backing: a.backing,
        mappings: a.mappings,
        granularities: a.granularity.granularities(),
        offset,
        count: a.count,
        readers: a.readers,
        action_required: a.action_required,
    };
    check_memory(&plan)?;
    Ok(plan)
}

/// The default page to poison: the 8th 4 KiB page of the second leaf, or of the first where
/// the device has one leaf, or its last page where it has fewer than eight.
pub(super) fn default_offset(size: u64, align: u64) -> u64 {
    [align + 7 * PAGE_SIZE, 7 * PAGE_SIZE]
        .into_iter()
        .find(|&o| o < size)
        .unwrap_or(size - PAGE_SIZE)
}

/// Parses `--offset`: a multiple of 4 KiB inside a device of `size` bytes.
fn offset(text: &str, size: u64) -> Result<u64> {
    let o = parse_bytes(
        "offset",
        text,
        &format!("the device ends at {}", format_size(size)),
    )?;
    if o >= size {
        bail!(
            "--offset {} is outside the {} device: use an offset below {}, e.g. --offset {}",
            format_size(o),
            format_size(size),
            format_size(size),
            format_size(size - PAGE_SIZE)
        );
    }
    if !o.is_multiple_of(PAGE_SIZE) {
        let down = o / PAGE_SIZE * PAGE_SIZE;
        let up = down + PAGE_SIZE;
        let hint = if up < size {
            format!(
                "--offset {} or --offset {}",
                format_size(down),
                format_size(up)
            )
        } else {
            format!("--offset {}", format_size(down))
        };
        bail!(
            "--offset {o} is not a multiple of 4K: errors poison whole 4 KiB pages; did you \
             mean {hint}?"
        );
    }
    Ok(o)
}

/// Refuses `--count` pages from `offset` that run past the end of the device.
fn check_count(offset: u64, count: u64, size: u64) -> Result<()> {
    let room = (size - offset) / PAGE_SIZE;
    if count > room {
        bail!(
            "--count {count} pages from --offset {} runs past the end of the {} device: use \
             --count {room} or less, or a lower --offset",
            format_size(offset),
            format_size(size)
        );
    }
    Ok(())
}

/// The huge page size of a hugetlb backing for leaves of `align`: the same size.
pub(super) fn huge_page_size(align: u64) -> Result<HugePageSize> {
    if align == HugePageSize::Size2M.order().bytes() {
        Ok(HugePageSize::Size2M)
    } else if align == HugePageSize::Size1G.order().bytes() {
        Ok(HugePageSize::Size1G)
    } else {
        bail!(
            "--backing hugetlb uses huge pages of --align, and there are no {} huge pages: use \
             --align 2M or --align 1G, or --backing memfd",
            format_size(align)
        )
    }
}

/// Refuses a run the machine cannot hold: a memfd larger than the memory devmap allows itself
/// (the pattern is written to every page), a hugetlb backing larger than the free huge pages.
fn check_memory(plan: &Plan) -> Result<()> {
    match plan.backing {
        BackingArg::Memfd => {
            let (budget, available) = procfs::memory_budget()?;
            if plan.size > budget {
                let fit = args::smaller_fitting(plan.size, plan.align, |s| s <= budget);
                let hint = match fit {
                    Some(s) => format!("--size {}", format_size(s)),
                    None => "a smaller --size".to_owned(),
                };
                bail!(
                    "writing {} of a memfd takes {} of memory, more than the {} devmap allows \
                     itself ({}% of the {} available): try {hint}",
                    format_size(plan.size),
                    human(plan.size),
                    human(budget),
                    procfs::MEMORY_BUDGET_PERCENT,
                    human(available)
                );
            }
            Ok(())
        }
        BackingArg::Hugetlb => {
            let page = huge_page_size(plan.align)?;
            let bytes = page.order().bytes();
            let counts = huge_pages(page).with_context(|| {
                format!(
                    "cannot read the {} huge page pool: does this kernel have {} huge pages?",
                    format_size(bytes),
                    format_size(bytes)
                )
            })?;
            let need = plan.size / bytes;
            if counts.free < need {
                bail!(
                    "--backing hugetlb --size {} needs {need} free {} huge pages, and the pool \
                     has {} free (of {}): as root, write {} to \
                     /sys/kernel/mm/hugepages/hugepages-{}kB/nr_hugepages, or use --backing \
                     memfd",
                    format_size(plan.size),
                    format_size(bytes),
                    counts.free,
                    counts.total,
                    counts.total + (need - counts.free),
                    bytes / 1024
                );
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_offset_is_inside_the_device() {
        assert_eq!(default_offset(64 << 20, 2 << 20), (2 << 20) + 7 * PAGE_SIZE);
        assert_eq!(default_offset(2 << 20, 2 << 20), 7 * PAGE_SIZE);
        assert_eq!(default_offset(8 * PAGE_SIZE, PAGE_SIZE), 7 * PAGE_SIZE);
        assert_eq!(default_offset(4 * PAGE_SIZE, PAGE_SIZE), 3 * PAGE_SIZE);
        assert_eq!(default_offset(2 << 30, 1 << 30), (1 << 30) + 7 * PAGE_SIZE);
    }

    #[test]
    fn offsets_are_pages_inside_the_device() {
        assert_eq!(offset("2M", 64 << 20).expect("2M"), 2 << 20);
        let e = offset("5000", 64 << 20).expect_err("unaligned").to_string();
        assert!(
            e.contains("did you mean --offset 4K or --offset 8K?"),
            "{e}"
        );
        let e = offset("64M", 64 << 20).expect_err("outside").to_string();
        assert!(e.contains("e.g. --offset 65532K"), "{e}");
        assert!(check_count((64 << 20) - PAGE_SIZE, 2, 64 << 20).is_err());
        assert!(check_count((64 << 20) - PAGE_SIZE, 1, 64 << 20).is_ok());
    }
}
