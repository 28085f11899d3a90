//! The commands, one module each: its arguments (clap derive) and their validation, what it
//! does, the row type it prints and that row's table columns. The region verbs share theirs:
//! `region` (`create-region`, and the region and namespace objects), `namespaces`
//! (`create-`, `destroy-` and `check-namespace`) and `list`; `enabling` (`enable-` and `disable-namespace`). `report` runs the others'
//! measurements through their internals and prints them beside the kernel's figures.

pub mod enable;
pub mod enabling;
pub mod estimate;
pub mod gup;
pub mod inject;
pub mod list;
pub mod media;
pub mod namespaces;
pub mod region;
pub mod report;
pub mod touch;
