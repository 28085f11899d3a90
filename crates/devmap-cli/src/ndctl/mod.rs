//! The ndctl verbs over region files, one module per group: `region` (`create-region`), `open`
//! (opening a region, as every verb does), `json` (the region, namespace and bad-range objects
//! they all print, with ndctl's names, and the output flags they all take), `namespaces`
//! (`create-` and `destroy-namespace`), `check` (`check-namespace`), `list`, `enable_disable`
//! (`enable-` and `disable-namespace`), `media` (`clear-errors`), `node` (the NUMA node the
//! JSON names, where there is one) and `served` (what the verbs
//! share when they go through a running `devmap serve`, given its socket). They print JSON, as
//! ndctl does.

pub mod check;
pub mod enable_disable;
pub mod json;
pub mod list;
pub mod media;
pub mod namespaces;
pub mod node;
pub mod open;
pub mod region;
pub mod served;
