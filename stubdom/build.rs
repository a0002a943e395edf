//! Link flags for the freestanding binary: no C runtime, no libc, a
//! static non-PIE executable entered at `_start` (src/main.rs provides the
//! memory functions the compiler calls and the entry point).

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    // A workspace-wide build makes the binary a hosted placeholder.
    if std::env::var_os("CARGO_FEATURE_HOSTED").is_some() {
        return;
    }
    for arg in ["-nostartfiles", "-nostdlib", "-static", "-no-pie"] {
        println!("cargo:rustc-link-arg-bins={arg}");
    }
}
