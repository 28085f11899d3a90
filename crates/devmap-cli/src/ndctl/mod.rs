//! The ndctl verbs over region files, one module per group: `region` (`create-region`, and the
//! region, namespace and bad-range objects they all print), `namespaces` (`create-`,
//! `destroy-` and `check-namespace`), `list`, `enable_disable` (`enable-` and
//! `disable-namespace`) and `media` (`clear-errors`). They print JSON, as ndctl does.

pub mod enable_disable;
pub mod list;
pub mod media;
pub mod namespaces;
pub mod region;
