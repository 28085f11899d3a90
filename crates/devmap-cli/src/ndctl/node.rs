//! The NUMA node ndctl prints for a namespace, region or dax device (`numa_node`,
//! `target_node`), where devmap can say it honestly. A region file's memory is the page cache
//! of a file (or a memfd's pages when enabled): pages the kernel allocates on whichever node its
//! memory policy picks, page by page. When the machine has a single node with memory, every one
//! of those pages is on it, and that node is what both fields mean; with several there is no
//! one node to name, and the fields are left out, as ndctl leaves them out when the kernel
//! names none (`NUMA_NO_NODE`, also what a kernel without `CONFIG_NUMA`, which has no
//! `/sys/devices/system/node`, reports).

use std::sync::OnceLock;

/// Where the kernel lists the nodes that have memory.
const HAS_MEMORY: &str = "/sys/devices/system/node/has_memory";

/// The one node with memory on this machine, or `None` if there are several or the kernel does
/// not say. Read once per run.
pub fn memory_node() -> Option<u32> {
    static NODE: OnceLock<Option<u32>> = OnceLock::new();
    *NODE.get_or_init(|| {
        std::fs::read_to_string(HAS_MEMORY)
            .ok()
            .and_then(|list| sole_node(&list))
    })
}

/// The node a kernel node list (`0`, `0-1`, `0,2-3`) names, if it names exactly one.
fn sole_node(list: &str) -> Option<u32> {
    list.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_list_of_one_node_names_it() {
        assert_eq!(sole_node("0\n"), Some(0));
        assert_eq!(sole_node("1\n"), Some(1));
        for several in ["0-1\n", "0,2\n", "0-3,5\n", "\n", "", "node0"] {
            assert_eq!(sole_node(several), None, "{several:?}");
        }
    }
}
