//! Gives `libdevmap.so` its soname, `libdevmap.so.<DEVMAP_ABI_VERSION>`, so that a program
//! linked against one ABI is not loaded against another.

fn main() {
    // Keep in step with `DEVMAP_ABI_VERSION` in src/lib.rs (a unit test checks).
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libdevmap.so.2");
}
