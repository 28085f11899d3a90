//! `devmap_memory_failure` with the kernel's results: -EBUSY and nothing flagged for a page
//! nothing ever mapped unless `DEVMAP_MF_RECORD_UNMAPPED` asks for it, 0 again for a page
//! poisoned already, and unknown flags refused.

use std::ptr;

use super::abi::{device, last_error, ok};
use crate::*;

const MIB: u64 = 1 << 20;
const PAGE: u64 = 4096;

#[test]
fn a_page_nothing_mapped_is_ebusy_unless_record_unmapped_and_a_repeat_is_0() {
    let (space, dev) = device(4 * MIB, 2 * MIB);
    // SAFETY: every handle is live, every out pointer a live local or NULL.
    unsafe {
        let mut pfn = 0;
        ok(devmap_device_pfn_at(dev, 2 * MIB + 3 * PAGE, &mut pfn));
        let mut n = usize::MAX;
        let mut bb = [devmap_badblock::default(); 4];
        assert_eq!(
            devmap_memory_failure(space, pfn, 0, ptr::null_mut()),
            -libc::EBUSY
        );
        assert!(last_error().contains("RECORD_UNMAPPED"), "{}", last_error());
        ok(devmap_badblocks(dev, bb.as_mut_ptr(), bb.len(), &mut n));
        assert_eq!(n, 0, "nothing recorded");
        assert_eq!(
            devmap_memory_failure(space, pfn, 1 << 7, ptr::null_mut()),
            -libc::EINVAL
        );
        let mut report = devmap_mf_report::default();
        for _ in 0..2 {
            ok(devmap_memory_failure(
                space,
                pfn,
                DEVMAP_MF_RECORD_UNMAPPED | DEVMAP_MF_TELL_ALL,
                &mut report,
            ));
            assert_eq!((report.pfn, report.nr_mappings), (pfn, 0));
        }
        ok(devmap_badblocks(dev, bb.as_mut_ptr(), bb.len(), &mut n));
        assert_eq!((n, bb[0].offset, bb[0].len), (1, 2 * MIB + 3 * PAGE, PAGE));

        // Mapped, the same page's leaf loses its page: 0, and once more 0.
        let (mut map, mut addr) = (ptr::null_mut(), ptr::null_mut());
        ok(devmap_mmap(
            dev,
            0,
            4 * MIB,
            &mut map,
            &mut addr,
            ptr::null_mut(),
        ));
        ok(devmap_mapping_populate(map, addr, 4 * MIB, ptr::null_mut()));
        let bad = addr.cast::<u8>().add((2 * MIB + PAGE) as usize).cast();
        for _ in 0..2 {
            ok(devmap_memory_failure_at(
                bad,
                DEVMAP_MF_ACTION_REQUIRED,
                &mut report,
            ));
            assert_eq!((report.nr_mappings, report.lost_bytes), (1, PAGE));
        }
        devmap_mapping_free(map);
        devmap_device_free(dev);
        devmap_space_free(space);
    }
}
