//! The commands, one module each: its arguments (clap derive) and their validation, what it
//! does, the row type it prints and that row's table columns. The region verbs share theirs:
//! `region` (`create-region`, and the region and namespace objects), `namespaces`
//! (`create-`, `destroy-` and `check-namespace`) and `list`.

pub mod enable;
pub mod estimate;
pub mod gup;
pub mod inject;
pub mod list;
pub mod media;
pub mod namespaces;
pub mod region;
pub mod touch;
