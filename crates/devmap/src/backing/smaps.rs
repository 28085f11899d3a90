//! What the kernel has mapped in one of this process's mappings, from `/proc/self/smaps`: the
//! page size it maps with and how many bytes are resident, counted separately for hugetlb. The
//! device front end's tests and `devmap touch-test` use it to check the leaf size a touch
//! really got.

use super::BackingError;

/// One VMA's line items from `/proc/self/smaps`, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Smaps {
    /// First address of the VMA.
    pub start: usize,
    /// One past its last address.
    pub end: usize,
    /// `KernelPageSize`: the size of the pages the kernel maps this VMA with.
    pub kernel_page_size: u64,
    /// `Rss`: resident bytes mapped with base pages (hugetlb pages are not counted here).
    pub rss: u64,
    /// `Shared_Hugetlb` + `Private_Hugetlb`: bytes mapped with hugetlb pages.
    pub hugetlb: u64,
}

impl Smaps {
    /// Leaves the kernel has mapped in the VMA, by page size: `(page size, count)` for each
    /// size present (base pages from `Rss`, huge pages from the hugetlb counters).
    pub fn leaves(&self) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        if self.rss > 0 {
            out.push((4096, self.rss / 4096));
        }
        if self.hugetlb > 0 && self.kernel_page_size > 0 {
            out.push((self.kernel_page_size, self.hugetlb / self.kernel_page_size));
        }
        out
    }
}

/// The smaps entry of the VMA holding `addr`, if any.
pub fn smaps_at(addr: usize) -> Result<Option<Smaps>, BackingError> {
    let path = "/proc/self/smaps";
    let text = std::fs::read_to_string(path).map_err(|e| BackingError::Sysfs {
        path: path.into(),
        source: e,
    })?;
    Ok(parse(&text, addr))
}

/// Finds the entry holding `addr` in the text of an smaps file.
fn parse(text: &str, addr: usize) -> Option<Smaps> {
    let mut current: Option<Smaps> = None;
    for line in text.lines() {
        if let Some((range, _)) = line.split_once(' ')
            && let Some((lo, hi)) = range.split_once('-')
            && let (Ok(lo), Ok(hi)) = (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
        {
            if current.is_some() {
                break;
            }
            if (lo..hi).contains(&addr) {
                current = Some(Smaps {
                    start: lo,
                    end: hi,
                    ..Smaps::default()
                });
            }
            continue;
        }
        let Some(entry) = current.as_mut() else {
            continue;
        };
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let kib = value
            .trim()
            .strip_suffix(" kB")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
        match key {
            "KernelPageSize" => entry.kernel_page_size = kib * 1024,
            "Rss" => entry.rss = kib * 1024,
            "Shared_Hugetlb" | "Private_Hugetlb" => entry.hugetlb += kib * 1024,
            _ => {}
        }
    }
    current
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
7f0000000000-7f0000400000 rw-s 00000000 00:01 123 /memfd:devmap (deleted)
Size:               4096 kB
KernelPageSize:     2048 kB
Rss:                   0 kB
Shared_Hugetlb:     2048 kB
Private_Hugetlb:       0 kB
7f0000400000-7f0000600000 rw-s 00000000 00:01 124 /memfd:other (deleted)
KernelPageSize:        4 kB
Rss:                  12 kB
Shared_Hugetlb:        0 kB
";

    #[test]
    fn finds_the_vma_holding_an_address_and_counts_its_leaves() {
        let e = parse(SAMPLE, 0x7f00_0010_0000).expect("first vma");
        assert_eq!((e.start, e.end), (0x7f00_0000_0000, 0x7f00_0040_0000));
        assert_eq!(e.leaves(), vec![(2 << 20, 1)]);
        let e = parse(SAMPLE, 0x7f00_0040_0000).expect("second vma");
        assert_eq!(e.kernel_page_size, 4096);
        assert_eq!(e.leaves(), vec![(4096, 3)]);
        assert_eq!(parse(SAMPLE, 0x7f00_0060_0000), None);
    }

    #[test]
    fn a_real_mapping_is_found() {
        let b = super::super::Backing::memfd(1 << 20).expect("memfd");
        let m = b
            .map_shared(0, 1 << 20, crate::addr::Order::BASE)
            .expect("map");
        m.write(8192, b"x").expect("write");
        let addr = m.as_ptr().as_ptr() as usize;
        let e = smaps_at(addr).expect("smaps").expect("entry");
        assert_eq!((e.start, e.end), (addr, addr + (1 << 20)));
        assert_eq!(e.kernel_page_size, 4096);
        assert_eq!(e.leaves(), vec![(4096, 1)]);
    }
}
