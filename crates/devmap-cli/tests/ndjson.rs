//! The JSON of the ndctl verbs read as a script written for ndctl reads it: the real `ndctl`
//! JSON of a devdax namespace (from a kernel with an emulated NVDIMM) and devmap's for the same
//! geometry give the same values through the same jq paths; `--media-errors` prints 512-byte
//! sectors and `badblock_count`; `-u` formats sizes as ndctl does; and every ndctl verb takes
//! the same output flags.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::process::{Command, Stdio};

use devmap::namespace::{Access, Region};
use serde_json::Value;

mod common;

use common::{TempRegion, devmap, field, list, object};

/// `ndctl list` of a 1 TiB devdax namespace at 2M with `--map mem` on a real kernel, as
/// `../shared/reference/linux-zone-device.md` quotes it.
const NDCTL: &str = r#"{
  "dev":"namespace0.0", "mode":"devdax", "map":"mem", "size":1099509530624,
  "uuid":"968b9474-8fec-4869-a3c1-18962b636907",
  "daxregion":{ "id":0, "size":1099509530624, "align":2097152,
    "devices":[ { "chardev":"dax0.0", "size":1099509530624, "target_node":0,
                  "align":2097152, "mode":"devdax" } ] },
  "align":2097152
}"#;

/// The jq paths of the issue, as JSON pointers.
const SCRIPT_PATHS: [&str; 5] = [
    "/size",
    "/daxregion/devices/0/chardev",
    "/align",
    "/mode",
    "/map",
];

/// The issue's jq expressions, as one jq program printing each on a line.
const JQ: &str = ".size, .daxregion.devices[0].chardev, .align, .mode, .map";

/// What `jq` prints for `program` over `json`, or `None` where jq is not installed.
fn jq(program: &str, json: &str) -> Option<String> {
    use std::io::Write;
    let mut child = match Command::new("jq")
        .arg(program)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => panic!("run jq: {e}"),
    };
    child
        .stdin
        .take()
        .expect("jq's stdin")
        .write_all(json.as_bytes())
        .expect("write to jq");
    let out = child.wait_with_output().expect("wait for jq");
    assert!(
        out.status.success(),
        "jq {program}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8(out.stdout).expect("UTF-8 from jq"))
}

/// The node devmap names as its memory's (`numa_node`, `target_node`): the machine's one node
/// with memory, if it has one; otherwise none, and the fields are left out.
fn memory_node() -> Option<Value> {
    let list = std::fs::read_to_string("/sys/devices/system/node/has_memory").ok()?;
    list.trim().parse::<u64>().ok().map(Value::from)
}

/// Every leaf of `v` as a JSON pointer and its value.
fn leaves(v: &Value, at: String, out: &mut Vec<(String, Value)>) {
    match v {
        Value::Object(o) => {
            for (k, v) in o {
                leaves(v, format!("{at}/{k}"), out);
            }
        }
        Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                leaves(v, format!("{at}/{i}"), out);
            }
        }
        leaf => out.push((at, leaf.clone())),
    }
}

fn region_with_the_reference_namespace(tag: &str) -> TempRegion {
    let r = TempRegion::new(tag);
    // The label area, then the 1 TiB namespace on 2 MiB.
    object(&["create-region", "--path", r.path(), "--size", "1025G"]);
    r
}

#[test]
fn devmaps_json_reads_as_ndctls_for_the_same_geometry() {
    let ndctl: Value = serde_json::from_str(NDCTL).expect("the reference parses");
    let r = region_with_the_reference_namespace("ndjson-ref");
    let created = object(&[
        "create-namespace",
        "-r",
        r.path(),
        "-m",
        "devdax",
        "-s",
        "1T",
        "-a",
        "2M",
        "-M",
        "mem",
        "-n",
        "vm0",
    ]);
    let listed = list(&["list", "-r", r.path(), "-X"]);
    assert_eq!(listed.len(), 1);
    for ours in [&created, &listed[0]] {
        for path in SCRIPT_PATHS {
            assert_eq!(
                ours.pointer(path),
                ndctl.pointer(path),
                "{path} in {ours:#}"
            );
        }
        // Every field ndctl prints is there, with ndctl's value, but for the uuid (another
        // namespace's) and the target node: the node the region file's pages are on, which
        // devmap names when the machine has one node with memory (the reference's 0 on one
        // such as this) and leaves out otherwise, as ndctl leaves out a node the kernel does
        // not name.
        let mut theirs = Vec::new();
        leaves(&ndctl, String::new(), &mut theirs);
        for (path, value) in theirs {
            match path.as_str() {
                "/uuid" => {
                    let uuid = ours.pointer(&path).and_then(Value::as_str).expect("uuid");
                    assert_eq!(uuid.len(), 36, "{uuid}");
                }
                "/daxregion/devices/0/target_node" => {
                    assert_eq!(ours.pointer(&path), memory_node().as_ref(), "{ours:#}")
                }
                _ => assert_eq!(ours.pointer(&path), Some(&value), "{path} in {ours:#}"),
            }
        }
        // devmap's own fields beside them.
        assert_eq!(ours["name"], "vm0");
        assert_eq!(field(ours, "raw_size"), 1 << 40);
        assert_eq!(field(ours, "data_offset"), 2 << 20);
        assert_eq!(ours["path"], r.path());
    }
    // Without -X, ndctl's list prints a devdax namespace's device as `chardev`.
    let plain = &list(&["list", "-r", r.path()])[0];
    assert_eq!(
        plain["chardev"],
        ndctl["daxregion"]["devices"][0]["chardev"]
    );
    assert!(plain.get("daxregion").is_none());
}

#[test]
fn media_errors_are_512_byte_sectors_with_a_badblock_count() {
    let r = TempRegion::new("ndjson-media");
    object(&["create-region", "--path", r.path(), "--size", "64M"]);
    object(&["create-namespace", "-r", r.path(), "-s", "16M", "-n", "a"]);
    object(&["create-namespace", "-r", r.path(), "-s", "16M", "-n", "b"]);
    {
        let mut region = Region::open(&r.0, Access::Manage).expect("manage");
        let b = region.namespace("b").expect("b").clone();
        // Pages 0, 1 and 7 of b's data.
        region
            .set_badblocks(&b, [0, 1, 7])
            .expect("record bad pages");
    }
    let rows = list(&["list", "-r", r.path(), "--media-errors"]);
    assert!(rows[0].get("badblock_count").is_none(), "a has none");
    assert!(
        rows[0].get("badblocks").is_none(),
        "ndctl omits an empty list"
    );
    let b = &rows[1];
    assert_eq!(field(b, "badblock_count"), 3 * 8, "sectors, not pages");
    let ranges: Vec<(u64, u64)> = b["badblocks"]
        .as_array()
        .expect("badblocks")
        .iter()
        .map(|r| (field(r, "offset"), field(r, "length")))
        .collect();
    assert_eq!(ranges, [(0, 16), (7 * 8, 8)], "from the start of b's data");
    // -u leaves them numbers, as ndctl does; one namespace under -u prints alone.
    let human = devmap(&["list", "-r", r.path(), "-M", "-u", "-n", "b"]);
    let human: Value = serde_json::from_slice(&human.stdout).expect("one object");
    assert_eq!(human["badblocks"], b["badblocks"]);
    assert_eq!(human["badblock_count"], b["badblock_count"]);
}

#[test]
fn human_sizes_are_ndctls() {
    let r = TempRegion::new("ndjson-human");
    object(&["create-region", "--path", r.path(), "--size", "2G"]);
    let ns = object(&[
        "create-namespace",
        "-r",
        r.path(),
        "-s",
        "1006M",
        "-M",
        "mem",
        "-n",
        "a",
        "-u",
    ]);
    assert_eq!(ns["raw_size"], "1006.00 MiB (1054.87 MB)");
    // 2 MiB less for the info block's 2 MiB.
    assert_eq!(ns["size"], "1004.00 MiB (1052.77 MB)");
    assert_eq!(ns["daxregion"]["devices"][0]["size"], ns["size"]);
    assert_eq!(ns["align"], 2 << 20, "ndctl prints the align as a number");
    assert_eq!(
        ns["daxregion"]["devices"][0]["align"],
        2 << 20,
        "below 5000 KiB, a number"
    );
    assert_eq!(ns["region_offset"], "0x200000", "offsets in hex");
    let region = object(&[
        "create-region",
        "--path",
        &format!("{}.2", r.path()),
        "-s",
        "4T",
        "-u",
    ]);
    let _ = std::fs::remove_file(format!("{}.2", r.path()));
    assert_eq!(region["size"], "4.00 TiB (4.40 TB)");
}

#[test]
fn every_ndctl_verb_takes_the_same_output_flags() {
    let r = TempRegion::new("ndjson-flags");
    let p = r.path();
    let created = object(&[
        "create-region",
        "--path",
        p,
        "--size",
        "64M",
        "--json",
        "-u",
    ]);
    assert_eq!(created["dev"], "region0");
    assert_eq!(created["size"], "64.00 MiB (67.11 MB)");
    for args in [
        &[
            "create-namespace",
            "-r",
            p,
            "-s",
            "16M",
            "-n",
            "a",
            "-j",
            "-u",
        ][..],
        &["check-namespace", "-r", p, "a", "--json", "--human"],
        &["enable-namespace", "-r", p, "a", "-j", "-u"],
        &["disable-namespace", "-r", p, "a", "-j", "-u"],
        &["clear-errors", "-r", p, "a", "-j", "-u"],
        &["destroy-namespace", "-r", p, "a", "-j", "-u"],
    ] {
        let obj = object(args);
        assert_eq!(obj["name"], "a", "{args:?} prints the namespace's object");
        assert_eq!(obj["dev"], "namespace0.0", "{args:?}");
        // -u as ndctl formats it, in every verb: 16 MiB less the 2 MiB before the data.
        assert_eq!(obj["size"], "14.00 MiB (14.68 MB)", "{args:?}");
        assert_eq!(
            obj["daxregion"]["devices"][0]["size"], obj["size"],
            "{args:?}"
        );
    }
    for args in [
        &["list", "-r", p, "-j", "-u"][..],
        &["list", "-r", p, "-R", "--json"],
    ] {
        let out = devmap(args);
        assert!(out.status.success(), "{args:?}: {out:?}");
    }
    for verb in [
        "create-region",
        "create-namespace",
        "list",
        "destroy-namespace",
        "check-namespace",
        "enable-namespace",
        "disable-namespace",
        "clear-errors",
    ] {
        let help = devmap(&[verb, "--help"]);
        let help = String::from_utf8_lossy(&help.stdout);
        for flag in ["-j, --json", "-u, --human"] {
            assert!(help.contains(flag), "{verb} lacks {flag}: {help}");
        }
    }
}

/// The keys of the first object in `text` (pretty JSON, two-space indent), in printed order.
fn printed_keys(text: &str, indent: usize) -> Vec<String> {
    let prefix = format!("{}\"", " ".repeat(indent));
    text.lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter_map(|l| l.split_once("\":").map(|(k, _)| k.to_owned()))
        .collect()
}

#[test]
fn list_prints_the_fields_in_ndctls_order() {
    let r = TempRegion::new("ndjson-order");
    object(&["create-region", "--path", r.path(), "--size", "64M"]);
    object(&["create-namespace", "-r", r.path(), "-s", "16M", "-n", "a"]);
    // ndctl's order (`util_namespace_to_json`, `region_to_json`), devmap's own fields after.
    let out = devmap(&["list", "-r", r.path()]);
    let keys = printed_keys(&String::from_utf8_lossy(&out.stdout), 4);
    assert_eq!(
        keys[..7],
        ["dev", "mode", "map", "size", "uuid", "chardev", "align"],
        "{keys:?}"
    );
    let out = devmap(&["list", "-r", r.path(), "-R", "-N"]);
    let keys = printed_keys(&String::from_utf8_lossy(&out.stdout), 4);
    assert_eq!(
        keys[..6],
        [
            "dev",
            "size",
            "align",
            "available_size",
            "max_available_extent",
            "type"
        ],
        "{keys:?}"
    );
    assert_eq!(
        keys.last().map(String::as_str),
        Some("namespaces"),
        "{keys:?}"
    );
}

#[test]
fn list_v_prints_the_nodes_and_raw_uuid_and_turns_on_what_ndctls_v_does() {
    let r = TempRegion::new("ndjson-verbose");
    let p = r.path();
    object(&["create-region", "--path", p, "--size", "64M"]);
    let ns = object(&["create-namespace", "-r", p, "-s", "16M", "-n", "a"]);
    let node = memory_node();
    // Without -v: none of them, as ndctl's (the dax device's target_node is not -v's).
    let plain = &list(&["list", "-r", p])[0];
    for key in ["raw_uuid", "numa_node", "target_node", "daxregion"] {
        assert!(plain.get(key).is_none(), "{key} in {plain:#}");
    }
    assert_eq!(
        list(&["list", "-r", p, "-i"]),
        list(&["list", "-r", p]),
        "-i"
    );
    let region = &list(&["list", "-r", p, "-R"])[0];
    for key in ["numa_node", "target_node", "capabilities"] {
        assert!(region.get(key).is_none(), "{key} in {region:#}");
    }
    // -v: the nodes and raw_uuid, with -M -X -N.
    let v = &list(&["list", "-r", p, "-v"])[0];
    assert_eq!(
        v["raw_uuid"], ns["uuid"],
        "one uuid for namespace and device"
    );
    assert_eq!(v.get("numa_node"), node.as_ref(), "{v:#}");
    assert_eq!(v.get("target_node"), node.as_ref(), "{v:#}");
    assert_eq!(v["daxregion"], ns["daxregion"], "-v lists as -X");
    // -vv: the region, its namespaces nested; -vvv: its capabilities too.
    let vv = &list(&["list", "-r", p, "-vv"])[0];
    assert_eq!(vv["dev"], "region0");
    assert_eq!(vv.get("numa_node"), node.as_ref(), "{vv:#}");
    assert_eq!(vv.get("target_node"), node.as_ref(), "{vv:#}");
    assert_eq!(&vv["namespaces"][0], v);
    assert!(vv.get("capabilities").is_none());
    // The region fields the reference names for `ndctl list -R` (numa_node under -v, as
    // ndctl's region_to_json prints it), with their values where they mean the same.
    for key in [
        "dev",
        "size",
        "align",
        "available_size",
        "max_available_extent",
        "type",
        "numa_node",
        "persistence_domain",
        "namespaces",
    ] {
        let here = vv.get(key).is_some();
        let want = key != "numa_node" || node.is_some();
        assert_eq!(here, want, "{key} in {vv:#}");
    }
    assert_eq!(vv["type"], "pmem");
    assert_eq!(field(vv, "size"), 64 << 20);
    let vvv = &list(&["list", "-r", p, "-vvv"])[0];
    assert!(vvv["capabilities"].is_array(), "{vvv:#}");
}

#[test]
fn list_c_names_the_modes_and_aligns_create_namespace_takes() {
    let r = TempRegion::new("ndjson-caps");
    let p = r.path();
    object(&["create-region", "--path", p, "--size", "8G"]);
    let region = &list(&["list", "-r", p, "-R", "-C"])[0];
    let caps = region["capabilities"].as_array().expect("capabilities");
    let modes: Vec<&str> = caps.iter().filter_map(|c| c["mode"].as_str()).collect();
    assert_eq!(modes, ["fsdax", "devdax"], "ndctl's order, no sector mode");
    for cap in caps {
        let mode = cap["mode"].as_str().expect("mode");
        let aligns = cap["alignments"].as_array().expect("alignments");
        assert_eq!(aligns.len(), 3, "{cap}");
        for align in aligns {
            // Each one a namespace can have: the smallest of that align is created.
            let align = align.as_u64().expect("a number");
            let size = if align == 1 << 30 { "2G" } else { "4M" };
            let ns = object(&[
                "create-namespace",
                "-r",
                p,
                "-m",
                mode,
                "-a",
                &align.to_string(),
                "-s",
                size,
                "-n",
                &format!("{mode}-{align}"),
            ]);
            assert_eq!(field(&ns, "align"), align, "{ns:#}");
        }
    }
}

/// Runs `devmap` with `args` and a new pseudo-terminal for its stdout; what it printed there,
/// the terminal's `\r\n` made `\n` again.
fn on_a_terminal(args: &[&str]) -> String {
    use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).expect("openpt");
    grantpt(&master).expect("grantpt");
    unlockpt(&master).expect("unlockpt");
    let name = ptsname(&master, Vec::new()).expect("ptsname");
    let pts = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(rustix::fs::OFlags::NOCTTY.bits() as i32)
        .open(name.to_str().expect("a UTF-8 pts name"))
        .expect("open the terminal");
    // The Command, and with it this process's copy of the terminal, goes at the `;`: the
    // reads below end when the child's does.
    let child = Command::new(env!("CARGO_BIN_EXE_devmap"))
        .args(args)
        .stdout(pts)
        .stderr(Stdio::piped())
        .spawn()
        .expect("run devmap");
    let mut master = std::fs::File::from(master);
    let mut text = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match master.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => text.extend_from_slice(&buf[..n]),
            // Every end of the terminal's other side closed.
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::IO.raw_os_error()) => break,
            Err(e) => panic!("read the terminal: {e}"),
        }
    }
    let out = child.wait_with_output().expect("wait for devmap");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(text)
        .expect("UTF-8 output")
        .replace("\r\n", "\n")
}

#[test]
fn create_namespace_prints_sizes_for_people_on_a_terminal_as_ndctls() {
    let r = TempRegion::new("ndjson-tty");
    let p = r.path();
    object(&["create-region", "--path", p, "--size", "64M"]);
    // ndctl's setup_namespace: isatty(1) turns on UTIL_JSON_HUMAN.
    let text = on_a_terminal(&["create-namespace", "-r", p, "-s", "16M", "-n", "a"]);
    let ns: Value = serde_json::from_str(&text).expect("one object");
    assert_eq!(ns["size"], "14.00 MiB (14.68 MB)", "{ns:#}");
    assert_eq!(ns["region_offset"], "0x200000", "{ns:#}");
    // Piped, as a script reads it: numbers.
    let piped = object(&["create-namespace", "-r", p, "-s", "16M", "-n", "b"]);
    assert_eq!(field(&piped, "size"), 14 << 20);
    // ndctl's list formats for people only under -u, terminal or not.
    let text = on_a_terminal(&["list", "-r", p, "-n", "a"]);
    let listed: Value = serde_json::from_str(&text).expect("an array");
    assert_eq!(listed[0]["size"], 14 << 20, "{listed:#}");
}

#[test]
fn the_issues_jq_expressions_read_the_same_values_from_devmap_as_from_ndctl() {
    let Some(theirs) = jq(JQ, NDCTL) else {
        eprintln!("jq is not installed: the JSON pointers of the test above stand in for it");
        return;
    };
    assert_eq!(
        theirs,
        "1099509530624\n\"dax0.0\"\n2097152\n\"devdax\"\n\"mem\"\n"
    );
    let r = region_with_the_reference_namespace("ndjson-jq");
    let args = [
        "create-namespace",
        "-r",
        r.path(),
        "-s",
        "1T",
        "-a",
        "2M",
        "-M",
        "mem",
    ];
    let created = devmap(&args);
    assert!(created.status.success(), "{created:?}");
    let created = String::from_utf8(created.stdout).expect("UTF-8");
    assert_eq!(jq(JQ, &created).as_ref(), Some(&theirs), "{created}");
    // list prints an array, as ndctl's does: a script reads its first element.
    let listed = devmap(&["list", "-r", r.path(), "-X"]);
    let listed = String::from_utf8(listed.stdout).expect("UTF-8");
    assert_eq!(
        jq(&format!(".[0] | {JQ}"), &listed).as_ref(),
        Some(&theirs),
        "{listed}"
    );
}
