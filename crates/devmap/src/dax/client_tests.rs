//! Client mappings in one process: the test plays the client (maps the backing itself,
//! registers its own userfaultfd and hands over a copy of the descriptor), which exercises
//! the same calls the service makes for a client in another process. The service's tests run
//! real client processes.

use std::os::fd::AsFd;

use super::*;
use crate::addr::{PAGE_SIZE, Pfn};
use crate::backing::{Backing, UffdFeatures, Userfaultfd};
use crate::gup::GupFlags;
use crate::init::InitMode;
use crate::memmap::Layout;
use crate::pgmap::DeviceSpace;

const MIB: u64 = 1 << 20;

fn device(space: &DeviceSpace, faults: Faults) -> DaxDevice {
    let mut opts = DaxOptions::new(Order::PMD);
    opts.layout = Layout::Heads;
    opts.init = InitMode::Sync;
    opts.faults = faults;
    DaxDevice::with_options(space, Backing::memfd(16 * MIB).expect("memfd"), opts).expect("dev")
}

/// The client's side: its window of the device's backing, registered with its own
/// userfaultfd, and the service's adopted copy of that descriptor, started.
fn client(
    dev: &DaxDevice,
    offset: u64,
    len: u64,
) -> (crate::backing::Mmap, Userfaultfd, ClientFaults) {
    let window = dev
        .backing()
        .map_shared(offset, len, dev.align())
        .expect("client window");
    let uffd = Userfaultfd::new(UffdFeatures::DEVICE).expect("client uffd");
    uffd.register(&window, dev.backing().uffd_modes())
        .expect("register");
    let copy = uffd.as_fd().try_clone_to_owned().expect("dup");
    let adopted = Userfaultfd::adopt(copy, UffdFeatures::DEVICE).expect("adopt");
    (
        window,
        uffd,
        ClientFaults::start(adopted, &HandlerShare::per_core()).expect("handler"),
    )
}

fn spec(window: &crate::backing::Mmap, offset: u64) -> ClientWindow {
    ClientWindow {
        offset,
        len: window.len() as u64,
        base: window.as_ptr().as_ptr() as usize,
        pid: std::process::id(),
    }
}

#[test]
fn a_caught_client_touch_runs_the_fault_path_and_the_rmap_names_the_client_address() {
    let space = DeviceSpace::new();
    let dev = device(&space, Faults::Explicit);
    let (window, _uffd, faults) = client(&dev, 4 * MIB, 8 * MIB);
    let cm = ClientMapping::attach(&dev, spec(&window, 4 * MIB), Some(&faults)).expect("attach");
    assert_eq!(dev.nr_mappings(), 1);
    assert!(!cm.is_faulted(cm.addr()));

    // The client writes into its third leaf: the touch is caught on the client's descriptor
    // and resolved through the device's fault path.
    window
        .write(2 * MIB + 100, b"from the client")
        .expect("write");
    let stats = dev.fault_stats();
    assert_eq!((stats.user_faults, stats.leaves_mapped), (1, 1));
    let at = cm.addr() + (2 * MIB + 100) as usize;
    assert!(cm.is_faulted(at));
    let pfn = dev.pfn_at(6 * MIB).expect("pfn");
    let folio = dev.pgmap().folio(pfn).expect("folio");
    assert_eq!(folio.mapping(), dev.address_space());
    assert_eq!((folio.refcount(), folio.mapcount()), (2, 1));
    assert_eq!(dev.rmap(pfn.add(0)), vec![(cm.id(), at - 100)]);

    // A mapping the device makes itself sees the client's bytes.
    let own = dev.mmap(6 * MIB, 2 * MIB, true).expect("mmap");
    let mut got = [0u8; 15];
    own.bytes().read(100, &mut got).expect("read");
    assert_eq!(&got, b"from the client");
    drop(own);

    // Detaching gives the leaf's reference and mapcount back.
    drop(cm);
    assert_eq!(dev.nr_mappings(), 0);
    let folio = dev.pgmap().folio(pfn).expect("folio");
    assert_eq!((folio.refcount(), folio.mapcount()), (1, 0));
    drop(faults);
    drop(window);
    dev.close(None).expect("close");
}

#[test]
fn an_uncaught_client_mapping_has_every_leaf_set_up_when_attached() {
    let space = DeviceSpace::new();
    let dev = device(&space, Faults::Explicit);
    let window = dev
        .backing()
        .map_shared(0, 8 * MIB, dev.align())
        .expect("window");
    let cm = ClientMapping::attach(&dev, spec(&window, 0), None).expect("attach");
    for leaf in 0..4u64 {
        let pfn = dev.pfn_at(leaf * 2 * MIB).expect("pfn");
        assert_eq!(
            dev.rmap(pfn),
            vec![(cm.id(), cm.addr() + (leaf * 2 * MIB) as usize)],
            "leaf {leaf}"
        );
    }
    assert_eq!(dev.fault_stats().leaves_mapped, 4);
    drop(cm);
    dev.close(None).expect("close");
}

#[test]
fn pins_by_client_address_carry_the_client_addresses_and_fault_what_they_need() {
    let space = DeviceSpace::new();
    let dev = device(&space, Faults::Explicit);
    let (window, _uffd, faults) = client(&dev, 0, 8 * MIB);
    let cm = ClientMapping::attach(&dev, spec(&window, 0), Some(&faults)).expect("attach");
    let from = cm.addr() + MIB as usize;
    let pins = cm
        .pin_user_folios(from, (2 * MIB) / PAGE_SIZE, GupFlags::WRITE)
        .expect("pin");
    let got: Vec<(usize, Pfn, u64)> = pins
        .with_addresses()
        .map(|(addr, f)| (addr, f.range().start(), f.range().len()))
        .collect();
    let first = dev.pfn_at(MIB).expect("pfn");
    assert_eq!(
        got,
        vec![
            (from, first, 256),
            (from + MIB as usize, first.add(256), 256)
        ]
    );
    assert_eq!(pins.offset(), MIB);
    assert!(cm.is_faulted(from) && cm.is_faulted(from + MIB as usize));
    // A pin outside the client's mapping is refused.
    assert!(matches!(
        cm.pin_user_pages(cm.addr() + (8 * MIB) as usize, 1, GupFlags::NONE),
        Err(DaxError::NotInMapping { .. })
    ));
    pins.unpin(true);
    drop(cm);
    drop(faults);
    dev.close(None).expect("close");
}

#[test]
fn a_client_window_is_checked_as_a_mapping_is() {
    let space = DeviceSpace::new();
    let dev = device(&space, Faults::Explicit);
    let pid = std::process::id();
    let at = |offset, len, base| ClientWindow {
        offset,
        len,
        base,
        pid,
    };
    let base = 64 << 30;
    assert!(matches!(
        ClientMapping::attach(&dev, at(0, 2 * MIB, base + 4096), None),
        Err(DaxError::Unaligned {
            what: "address",
            ..
        })
    ));
    assert!(matches!(
        ClientMapping::attach(&dev, at(MIB, 2 * MIB, base), None),
        Err(DaxError::Unaligned { what: "offset", .. })
    ));
    assert!(matches!(
        ClientMapping::attach(&dev, at(14 * MIB, 4 * MIB, base), None),
        Err(DaxError::OutOfRange { .. })
    ));
    assert!(matches!(
        ClientMapping::attach(
            &dev,
            at(0, 4 * MIB, usize::MAX - (2 * MIB) as usize + 1),
            None
        ),
        Err(DaxError::ClientWindow { .. })
    ));
    assert_eq!(dev.nr_mappings(), 0);
}

#[test]
fn a_descriptor_that_is_not_a_userfaultfd_is_refused() {
    let file = std::fs::File::open("/proc/self/status").expect("open");
    let err = Userfaultfd::adopt(file.into(), UffdFeatures::DEVICE).expect_err("refused");
    assert!(
        matches!(&err, crate::backing::UffdError::NotUserfaultfd { found } if found.contains("status")),
        "{err}"
    );
}

/// One handler waits for a new client; the fault it takes starts a second (it was the last
/// one waiting), and touches of many threads at once grow them up to the client's share of
/// the cores, never further. Every touch is served, and dropping the handlers stops and joins
/// them all. With a second client descriptor on the same share, each gets half.
#[test]
fn a_clients_handlers_grow_with_its_concurrent_touches_up_to_its_share() {
    let space = DeviceSpace::new();
    let dev = device(&space, Faults::Explicit);
    let share = HandlerShare::new(4);
    let start = |offset, len| {
        let (window, uffd, _) = client(&dev, offset, len);
        let copy = uffd.as_fd().try_clone_to_owned().expect("dup");
        let adopted = Userfaultfd::adopt(copy, UffdFeatures::DEVICE).expect("adopt");
        let faults = ClientFaults::start(adopted, &share).expect("handler");
        (window, uffd, faults)
    };
    let (window, _uffd, faults) = start(0, 8 * MIB);
    let cm = ClientMapping::attach(&dev, spec(&window, 0), Some(&faults)).expect("attach");
    assert_eq!(
        faults.handlers(),
        1,
        "one waits for a client that has not touched"
    );
    window.write(0, b"first").expect("write");
    assert_eq!(faults.handlers(), 2, "the busy one started another");
    std::thread::scope(|s| {
        for leaf in 1..4u64 {
            let window = &window;
            s.spawn(move || {
                window
                    .write(leaf * 2 * MIB + 7, &[leaf as u8])
                    .expect("write")
            });
        }
    });
    assert!(
        faults.handlers() <= 4,
        "{} handlers for 4 cores",
        faults.handlers()
    );
    for leaf in 0..4u64 {
        assert!(
            cm.is_faulted(cm.addr() + (leaf * 2 * MIB) as usize),
            "leaf {leaf}"
        );
        let folio = dev
            .pgmap()
            .folio(dev.pfn_at(leaf * 2 * MIB).expect("pfn"))
            .expect("folio");
        assert_eq!((folio.refcount(), folio.mapcount()), (2, 1), "leaf {leaf}");
    }

    // A second client on the same share: each now gets 2 of the 4, and the second stops
    // there however many of its touches come at once.
    let (window2, _uffd2, faults2) = start(8 * MIB, 8 * MIB);
    let cm2 = ClientMapping::attach(&dev, spec(&window2, 8 * MIB), Some(&faults2)).expect("attach");
    std::thread::scope(|s| {
        for leaf in 0..4u64 {
            let window2 = &window2;
            s.spawn(move || window2.write(leaf * 2 * MIB, &[1]).expect("write"));
        }
    });
    assert_eq!(faults2.handlers(), 2, "half of the share");
    assert_eq!(dev.fault_stats().leaves_mapped, 8);
    drop((cm, cm2));
    drop((faults, faults2));
    drop((window, window2));
    dev.close(None).expect("close");
}
