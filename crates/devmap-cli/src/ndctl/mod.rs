//! The ndctl verbs over region files, one module per group: `region` (`create-region`), `open`
//! (opening a region, as every verb does), `json` (the region, namespace and bad-range objects they all print, with
//! ndctl's names, and the output flags they all take), `namespaces` (`create-`, `destroy-` and
//! `check-namespace`), `list`, `enable_disable` (`enable-` and `disable-namespace`) and `media`
//! (`clear-errors`). They print JSON, as ndctl does.

pub mod enable_disable;
pub mod json;
pub mod list;
pub mod media;
pub mod namespaces;
pub mod open;
pub mod region;
