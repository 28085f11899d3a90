//! The commands, one module each: its arguments (clap derive) and their validation, what it
//! does, the row type it prints and that row's table columns.

pub mod enable;
pub mod estimate;
pub mod gup;
pub mod inject;
pub mod touch;
