//! Link flags for the PV kernel: no C runtime, no libc, a static non-PIE
//! executable laid out by `pv.ld` (linked at 0, entered at `_start`; the
//! memory functions and the entry are in src/pv/). Symbols are stripped:
//! panic messages carry their file and line themselves.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=pv.ld");
    // A workspace-wide build makes the binary a hosted placeholder.
    if std::env::var_os("CARGO_FEATURE_HOSTED").is_some() {
        return;
    }
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into());
    for arg in [
        "-nostartfiles",
        "-nostdlib",
        "-static",
        "-no-pie",
        "-Wl,--gc-sections",
        "-Wl,--build-id=none",
        "-Wl,-z,max-page-size=4096",
        "-Wl,-z,norelro",
        "-Wl,--strip-all",
    ] {
        println!("cargo:rustc-link-arg-bins={arg}");
    }
    println!("cargo:rustc-link-arg-bins=-Wl,-T,{dir}/pv.ld");
}
