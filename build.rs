//! Rebuild when the dashboard page changes: `web/` is compiled into the binary.

fn main() {
    println!("cargo:rerun-if-changed=web");
}
