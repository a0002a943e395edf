//! Test helper: ask the C compiler what a kernel UAPI header says.
//!
//! Compiles a tiny C program that includes the header and prints the value of
//! each expression, so that ioctl numbers and struct sizes are pinned against
//! the header rather than against a number copied by hand. Returns `Err(reason)`
//! when there is no `cc` or no header, so callers can skip with a message.
//!
//! Shared with the `gnttab` crate's tests through `#[path]`.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// A scratch directory of our own, removed on drop.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn scratch() -> Scratch {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "cprobe-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(dir.join("xen/interface")).expect("create scratch dir");
    // The UAPI headers lean on types the kernel build provides from its own
    // (non-UAPI) `xen/interface/xen.h`; give them the x86-64 definitions.
    std::fs::write(
        dir.join("xen/interface/xen.h"),
        "#include <stdint.h>\n\
         typedef uint16_t domid_t;\n\
         typedef uint32_t grant_ref_t;\n\
         typedef unsigned long xen_pfn_t;\n",
    )
    .expect("write stub header");
    Scratch(dir)
}

/// Evaluates each `(name, C expression)` after `#include <header>` (a Linux
/// UAPI header) and returns the values in order, or the reason the probe
/// cannot run here.
pub fn probe(header: &str, exprs: &[(&str, &str)]) -> Result<Vec<u64>, String> {
    probe_with(&[], "#include <xen/interface/xen.h>\n", header, exprs)
}

/// [`probe`] with extra include directories (searched first) and extra
/// preamble text before the header.
pub fn probe_with(
    include_dirs: &[&std::path::Path],
    preamble: &str,
    header: &str,
    exprs: &[(&str, &str)],
) -> Result<Vec<u64>, String> {
    let dir = scratch();
    let prelude = format!(
        "#include <stdio.h>\n#include <stddef.h>\n#include <stdint.h>\n#include <sys/ioctl.h>\n{preamble}#include <{header}>\n"
    );
    let mut include_args = Vec::new();
    for extra in include_dirs {
        include_args.push("-I".to_owned());
        include_args.push(extra.display().to_string());
    }
    let src = dir.0.join("probe.c");
    // First: is the header there at all (preprocess only)?
    std::fs::write(&src, &prelude).expect("write probe source");
    let pre = match Command::new("cc")
        .args(&include_args)
        .arg("-E")
        .arg("-I")
        .arg(&dir.0)
        .arg(&src)
        .output()
    {
        Ok(out) => out,
        Err(e) => return Err(format!("cannot run cc: {e}")),
    };
    if !pre.status.success() {
        return Err(format!(
            "cc cannot include <{header}>: {}",
            String::from_utf8_lossy(&pre.stderr)
                .lines()
                .next()
                .unwrap_or("")
        ));
    }
    let mut body = prelude;
    body.push_str("int main(void) {\n");
    for (name, expr) in exprs {
        writeln!(
            body,
            "  printf(\"%s=%llu\\n\", \"{name}\", (unsigned long long)({expr}));"
        )
        .expect("format into String");
    }
    body.push_str("  return 0;\n}\n");
    std::fs::write(&src, body).expect("write probe source");
    let exe = dir.0.join("probe");
    let out = Command::new("cc")
        .args(&include_args)
        .arg("-I")
        .arg(&dir.0)
        .arg(&src)
        .arg("-o")
        .arg(&exe)
        .output()
        .expect("run cc");
    // The header is present, so a failure here is a real mismatch: fail loudly.
    assert!(
        out.status.success(),
        "probe for <{header}> does not compile:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = Command::new(&exe).output().expect("run probe");
    assert!(run.status.success(), "probe exited with {}", run.status);
    let text = String::from_utf8(run.stdout).expect("probe prints ASCII");
    let values = text
        .lines()
        .map(|line| {
            let (_, value) = line.split_once('=').expect("name=value");
            value.parse::<u64>().expect("decimal value")
        })
        .collect::<Vec<_>>();
    assert_eq!(values.len(), exprs.len(), "probe output: {text}");
    Ok(values)
}
