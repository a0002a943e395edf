//! Tests of [`super`]: telling a live update's target from the file, and
//! C xenstored 4.17's command line.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use proptest::prelude::*;

use super::*;

/// Debian's C xenstored 4.17 (package xen-utils-4.17).
const C_BINARY: &str = "/usr/lib/xen-4.17/bin/xenstored";

/// Writes `data` to `dir/name` with `mode`.
fn file(dir: &Path, name: &str, data: &[u8], mode: u32) -> PathBuf {
    let path = dir.join(name);
    let mut f = fs::File::create(&path).unwrap();
    f.write_all(data).unwrap();
    drop(f);
    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
    path
}

/// The real C binary's bytes, or `None` (with a skip line) if it is not
/// installed.
fn c_binary(test: &str) -> Option<Vec<u8>> {
    match fs::read(C_BINARY) {
        Ok(b) => Some(b),
        Err(e) => {
            eprintln!("SKIP {test}: {C_BINARY}: {e} (apt-get install xen-utils-4.17)");
            None
        }
    }
}

/// `data` with the only occurrence of `from` replaced by `to` (same
/// length).
fn patched(data: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let at = memchr::memmem::find(data, from).expect("string to patch");
    assert!(
        memchr::memmem::find(&data[at + 1..], from).is_none(),
        "string to patch occurs twice"
    );
    let mut out = data.to_vec();
    out[at..at + from.len()].copy_from_slice(to);
    out
}

/// e_machine of the machine the tests run on.
fn host_machine() -> u16 {
    if cfg!(target_arch = "aarch64") {
        183
    } else {
        62 // x86_64
    }
}

/// A minimal little-endian ELF of `class` (32 or 64) for `machine`: its
/// header and three sections (`.dynstr`, `.dynamic` with a DT_NEEDED for
/// each of `needed` and a DT_RUNPATH, `.shstrtab`), then `extra`.
fn fake_elf(class: u8, machine: u16, needed: &[&str], extra: &[u8]) -> Vec<u8> {
    let wide = class == 64;
    let word = |v: &mut Vec<u8>, x: usize| {
        if wide {
            v.extend_from_slice(&u64::try_from(x).unwrap().to_le_bytes());
        } else {
            v.extend_from_slice(&u32::try_from(x).unwrap().to_le_bytes());
        }
    };
    let half =
        |v: &mut Vec<u8>, x: usize| v.extend_from_slice(&u16::try_from(x).unwrap().to_le_bytes());
    let long =
        |v: &mut Vec<u8>, x: usize| v.extend_from_slice(&u32::try_from(x).unwrap().to_le_bytes());
    let pad = |v: &mut Vec<u8>| v.resize(v.len().div_ceil(8) * 8, 0);
    let (ehsize, shentsize) = if wide { (64, 64) } else { (52, 40) };

    let mut dynstr = vec![0u8];
    let mut entries = Vec::new();
    for n in needed.iter().chain(["/opt/not-needed"].iter()) {
        let tag = if n.starts_with('/') { 29 } else { 1 }; // DT_RUNPATH, DT_NEEDED
        entries.push((tag, dynstr.len()));
        dynstr.extend_from_slice(n.as_bytes());
        dynstr.push(0);
    }
    let mut dynamic = Vec::new();
    for (tag, at) in entries.into_iter().chain([(0, 0)]) {
        word(&mut dynamic, tag);
        word(&mut dynamic, at);
    }
    let shstrtab = b"\0.dynstr\0.dynamic\0.shstrtab\0";

    let mut body = vec![0u8; ehsize];
    pad(&mut body);
    let dynstr_at = body.len();
    body.extend_from_slice(&dynstr);
    pad(&mut body);
    let dynamic_at = body.len();
    body.extend_from_slice(&dynamic);
    pad(&mut body);
    let shstrtab_at = body.len();
    body.extend_from_slice(shstrtab);
    pad(&mut body);
    let shoff = body.len();
    // name, type, flags, addr, offset, size, link, info, align, entsize
    let sections = [
        (0, 0, 0, 0, 0, 0),
        (1, 3, dynstr_at, dynstr.len(), 0, 0),
        (
            9,
            6,
            dynamic_at,
            dynamic.len(),
            1,
            if wide { 16 } else { 8 },
        ),
        (18, 3, shstrtab_at, shstrtab.len(), 0, 0),
    ];
    for (name, kind, offset, size, link, entsize) in sections {
        long(&mut body, name);
        long(&mut body, kind);
        word(&mut body, 0);
        word(&mut body, 0);
        word(&mut body, offset);
        word(&mut body, size);
        long(&mut body, link);
        long(&mut body, 0);
        word(&mut body, 8);
        word(&mut body, entsize);
    }
    body.extend_from_slice(extra);

    let mut h = vec![0x7f, b'E', b'L', b'F', if wide { 2 } else { 1 }, 1, 1];
    h.resize(16, 0);
    half(&mut h, 3); // ET_DYN
    half(&mut h, usize::from(machine));
    long(&mut h, 1);
    word(&mut h, 0); // entry
    word(&mut h, 0); // phoff
    word(&mut h, shoff);
    long(&mut h, 0);
    half(&mut h, ehsize);
    half(&mut h, if wide { 56 } else { 32 });
    half(&mut h, 0);
    half(&mut h, shentsize);
    half(&mut h, sections.len());
    half(&mut h, 3);
    assert_eq!(h.len(), ehsize);
    body[..ehsize].copy_from_slice(&h);
    body
}

/// C xenstored's strings, as [`classify`] looks for them.
fn c_strings() -> Vec<u8> {
    let mut v = b"\0Usage:\n\n  xenstored <options>\n\0".to_vec();
    v.extend_from_slice(b"No state found after live-update\0");
    v
}

/// What `identify` says of an executable file holding `data`.
fn identify_bytes(data: &[u8]) -> Result<Target, TargetError> {
    let dir = tempfile::tempdir().unwrap();
    let path = file(dir.path(), "target", data, 0o755);
    identify(&path)
}

fn ls() -> Vec<u8> {
    fs::read("/bin/ls").expect("/bin/ls")
}

// ---------------------------------------------------------------- identify

#[test]
fn test_identify_marker_in_elf_is_ours() {
    let dir = tempfile::tempdir().unwrap();
    let mut data = ls();
    data.extend_from_slice(&LIVE_UPDATE_MARKER);
    let path = file(dir.path(), "xenstored-lite", &data, 0o755);
    assert_eq!(
        identify(&path).unwrap(),
        Target::XenstoredLite { precopy: false }
    );
    let mut both = data.clone();
    both.extend_from_slice(&PRECOPY_MARKER);
    let path = file(dir.path(), "xenstored-lite-new", &both, 0o755);
    assert_eq!(
        identify(&path).unwrap(),
        Target::XenstoredLite { precopy: true }
    );
    // Without it the same ELF is some other program.
    let path = file(dir.path(), "plain", &ls(), 0o755);
    assert!(matches!(identify(&path), Err(TargetError::Unknown { .. })));
}

/// A binary that links this module keeps the marker (`#[used]`): this
/// test binary is one.
#[test]
fn test_identify_linked_binary_keeps_marker() {
    let exe = std::env::current_exe().unwrap();
    assert_eq!(
        identify(&exe).unwrap(),
        Target::XenstoredLite { precopy: true }
    );
}

#[test]
fn test_identify_marker_outside_elf_is_not_ours() {
    let dir = tempfile::tempdir().unwrap();
    let mut data = b"just text ".to_vec();
    data.extend_from_slice(&LIVE_UPDATE_MARKER);
    let path = file(dir.path(), "text", &data, 0o755);
    let err = identify(&path).unwrap_err();
    assert!(matches!(err, TargetError::NotElf { .. }), "{err}");
    assert!(err.to_string().contains("6a 75 73 74"), "{err}");
}

#[test]
fn test_identify_real_c_xenstored_4_17() {
    if c_binary("test_identify_real_c_xenstored_4_17").is_none() {
        return;
    }
    assert_eq!(
        identify(Path::new(C_BINARY)).unwrap(),
        Target::CXenstored { version: (4, 17) }
    );
}

/// A copy of C's binary with its libxenctrl soname changed: the version
/// comes from it, and only 4.17 is accepted.
#[test]
fn test_identify_c_version_from_soname() {
    let Some(c) = c_binary("test_identify_c_version_from_soname") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = file(dir.path(), "xenstored", &c, 0o755);
    assert_eq!(
        identify(&path).unwrap(),
        Target::CXenstored { version: (4, 17) }
    );
    let v19 = patched(&c, b"libxenctrl.so.4.17\0", b"libxenctrl.so.4.19\0");
    let path = file(dir.path(), "xenstored-4.19", &v19, 0o755);
    let err = identify(&path).unwrap_err();
    assert!(
        matches!(
            err,
            TargetError::UnsupportedCVersion {
                version: (4, 19),
                ..
            }
        ),
        "{err}"
    );
    let text = err.to_string();
    assert!(text.contains("4.19") && text.contains("4.17"), "{text}");
    assert!(text.contains("xenstored-4.19"), "{text}");
    // No libxenctrl soname left: the version cannot be told.
    let none = patched(&c, b"libxenctrl.so.4.17\0", b"libxenctrX.so.4.17\0");
    let path = file(dir.path(), "xenstored-none", &none, 0o755);
    let err = identify(&path).unwrap_err();
    assert!(matches!(err, TargetError::UnknownCVersion { .. }), "{err}");
    assert!(err.to_string().contains("libxenctrX.so.4.17"), "{err}");
}

/// The rules on crafted ELF files (whether or not Xen is installed).
#[test]
fn test_identify_crafted_elf() {
    let m = host_machine();
    let c = c_strings();
    let ctrl = ["libxenevtchn.so.1", "libxenctrl.so.4.17", "libc.so.6"];
    assert_eq!(
        identify_bytes(&fake_elf(64, m, &ctrl, &c)).unwrap(),
        Target::CXenstored { version: (4, 17) }
    );
    let err = identify_bytes(&fake_elf(64, m, &["libxenctrl.so.4.19"], &c)).unwrap_err();
    assert!(
        matches!(
            err,
            TargetError::UnsupportedCVersion {
                version: (4, 19),
                ..
            }
        ),
        "{err}"
    );
    // Ours wins over anything else in the file.
    let mut ours = c.clone();
    ours.extend_from_slice(&LIVE_UPDATE_MARKER);
    assert_eq!(
        identify_bytes(&fake_elf(64, m, &ctrl, &ours)).unwrap(),
        Target::XenstoredLite { precopy: false }
    );
    // C's strings without libxenctrl: a xenstored of unknown version.
    let err = identify_bytes(&fake_elf(64, m, &["libc.so.6"], &c)).unwrap_err();
    match &err {
        TargetError::UnknownCVersion { needed, .. } => assert_eq!(needed, &["libc.so.6"]),
        other => panic!("{other}"),
    }
    // libxenctrl without C's usage: another tool.
    let err =
        identify_bytes(&fake_elf(64, m, &ctrl, b"No state found after live-update")).unwrap_err();
    match &err {
        TargetError::Unknown { needed, .. } => assert_eq!(needed, &ctrl),
        other => panic!("{other}"),
    }
    assert!(
        err.to_string()
            .contains("libxenevtchn.so.1, libxenctrl.so.4.17, libc.so.6"),
        "{err}"
    );
    // C's usage without its live update.
    let err = identify_bytes(&fake_elf(64, m, &ctrl, b"xenstored <options>")).unwrap_err();
    assert!(
        matches!(
            err,
            TargetError::CWithoutLiveUpdate {
                version: (4, 17),
                ..
            }
        ),
        "{err}"
    );
    // Only one of C's strings and no libxenctrl: nothing of Xen's.
    for one in [
        &b"xenstored <options>"[..],
        b"No state found after live-update",
    ] {
        let err = identify_bytes(&fake_elf(64, m, &["libc.so.6"], one)).unwrap_err();
        assert!(matches!(err, TargetError::Unknown { .. }), "{err}");
    }
    // oxenstored links libxenctrl too.
    let err = identify_bytes(&fake_elf(64, m, &ctrl, b"/etc/xen/oxenstored.conf")).unwrap_err();
    assert!(matches!(err, TargetError::Oxenstored { .. }), "{err}");
    // No shared library at all.
    let err = identify_bytes(&fake_elf(64, m, &[], &c)).unwrap_err();
    assert!(err.to_string().contains("needs no libxenctrl"), "{err}");
    assert!(err.to_string().contains("no shared library"), "{err}");
    // A 32-bit ELF of another machine.
    let err = identify_bytes(&fake_elf(32, 40, &ctrl, &c)).unwrap_err();
    assert!(
        matches!(&err, TargetError::WrongArchitecture { found, .. } if found == "Arm"),
        "{err}"
    );
}

/// libxenctrl alone does not make a xenstored: C's own strings are
/// required too.
#[test]
fn test_identify_needs_c_strings() {
    let Some(c) = c_binary("test_identify_needs_c_strings") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let tool = patched(&c, b"xenstored <options>", b"xenstorex <options>");
    let path = file(dir.path(), "tool", &tool, 0o755);
    let err = identify(&path).unwrap_err();
    match &err {
        TargetError::Unknown { needed, .. } => {
            assert!(
                needed.iter().any(|n| n == "libxenctrl.so.4.17"),
                "{needed:?}"
            )
        }
        other => panic!("{other}"),
    }
    let no_lu = patched(
        &c,
        b"No state found after live-update",
        b"No state found after live-updatX",
    );
    let path = file(dir.path(), "no-lu", &no_lu, 0o755);
    let err = identify(&path).unwrap_err();
    assert!(
        matches!(
            err,
            TargetError::CWithoutLiveUpdate {
                version: (4, 17),
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn test_identify_other_xen_tools_are_not_c_xenstored() {
    let ox = Path::new("/usr/lib/xen-4.17/bin/oxenstored");
    if ox.exists() {
        let err = identify(ox).unwrap_err();
        assert!(matches!(err, TargetError::Oxenstored { .. }), "{err}");
    } else {
        eprintln!("SKIP oxenstored: {} not installed", ox.display());
    }
    let xl = Path::new("/usr/lib/xen-4.17/bin/xl");
    if xl.exists() {
        let err = identify(xl).unwrap_err();
        assert!(matches!(err, TargetError::Unknown { .. }), "{err}");
    } else {
        eprintln!("SKIP xl: {} not installed", xl.display());
    }
}

#[test]
fn test_identify_debian_wrapper_is_a_script() {
    let wrapper = Path::new("/usr/sbin/xenstored");
    if !wrapper.exists() {
        eprintln!("SKIP Debian wrapper: {} not installed", wrapper.display());
        return;
    }
    let err = identify(wrapper).unwrap_err();
    let TargetError::Script {
        interpreter,
        candidates,
        ..
    } = &err
    else {
        panic!("{err}");
    };
    assert_eq!(interpreter, "/bin/sh");
    if Path::new(C_BINARY).exists() {
        assert!(candidates.contains(&PathBuf::from(C_BINARY)), "{err}");
        assert!(err.to_string().contains(C_BINARY), "{err}");
    }
}

#[test]
fn test_identify_script_names_the_real_binary() {
    let dir = tempfile::tempdir().unwrap();
    // No installed binaries to offer: only what the script names, once.
    let empty = dir.path().join("no-lib");
    let path = file(
        dir.path(),
        "xenstored",
        b"#!/bin/sh\n[ -x /usr/lib/xen-4.17/bin/xenstored ] &&\n\
          exec /usr/lib/xen-4.17/bin/xenstored \"$@\"\n\
          exec /usr/lib/xen-4.17/bin/xl\n",
        0o755,
    );
    let err = identify_with(&path, &empty, MAX_SIZE).unwrap_err();
    let TargetError::Script { candidates, .. } = &err else {
        panic!("{err}");
    };
    assert_eq!(candidates, &[PathBuf::from(C_BINARY)]);
    let text = err.to_string();
    assert!(text.contains("is a script (/bin/sh)"), "{text}");
    assert!(text.contains("name the real binary, e.g. /usr/lib/xen-4.17/bin/xenstored"));

    // A script that says nothing of Xen.
    let path = file(dir.path(), "other", b"#! /bin/bash -e\necho hi\n", 0o755);
    let err = identify(&path).unwrap_err();
    assert!(
        matches!(&err, TargetError::Script { interpreter, candidates, .. }
            if interpreter == "/bin/bash -e" && candidates.is_empty()),
        "{err}"
    );
    assert!(err.to_string().contains("does not say which"), "{err}");
}

/// Debian's wrapper builds the path (`/usr/lib/xen-$VERSION/bin/$COMMAND`):
/// the installed binaries of the name it was called by are offered.
#[test]
fn test_identify_wrapper_offers_installed_binaries() {
    let dir = tempfile::tempdir().unwrap();
    let lib = dir.path().join("lib");
    for v in ["xen-4.17", "xen-4.19", "other-4.17"] {
        fs::create_dir_all(lib.join(v).join("bin")).unwrap();
        file(&lib.join(v).join("bin"), "xenstored", b"\x7fELF", 0o755);
    }
    let script = file(
        dir.path(),
        "xenstored",
        b"#!/bin/sh\nDIR=\"/usr/lib/xen-$VERSION/bin\"\nexec \"$DIR/${0##*/}\" \"$@\"\n",
        0o755,
    );
    let err = identify_with(&script, &lib, MAX_SIZE).unwrap_err();
    let TargetError::Script { candidates, .. } = &err else {
        panic!("{err}");
    };
    assert_eq!(
        candidates,
        &[
            lib.join("xen-4.17/bin/xenstored"),
            lib.join("xen-4.19/bin/xenstored")
        ]
    );
}

#[test]
fn test_identify_unknown_elf() {
    let err = identify(Path::new("/bin/ls")).unwrap_err();
    let TargetError::Unknown { needed, .. } = &err else {
        panic!("{err}");
    };
    assert!(
        needed.iter().any(|n| n.starts_with("libc.so")),
        "{needed:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("/bin/ls") && text.contains("libc.so"),
        "{text}"
    );
}

#[test]
fn test_identify_refuses_what_is_no_program() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let err = identify(&missing).unwrap_err();
    assert!(
        matches!(&err, TargetError::Inaccessible { source, .. }
            if source.kind() == std::io::ErrorKind::NotFound),
        "{err}"
    );
    assert!(err.to_string().contains("missing"), "{err}");

    let err = identify(dir.path()).unwrap_err();
    assert!(
        matches!(
            err,
            TargetError::NotAFile {
                found: "a directory",
                ..
            }
        ),
        "{err}"
    );

    let path = file(dir.path(), "plain", &ls(), 0o644);
    let err = identify(&path).unwrap_err();
    assert!(
        matches!(err, TargetError::NotExecutable { mode: 0o644, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("mode 0644"), "{err}");

    let path = file(dir.path(), "empty", b"", 0o755);
    let err = identify(&path).unwrap_err();
    assert!(err.to_string().contains("an empty file"), "{err}");

    let big = dir.path().join("big");
    let f = fs::File::create(&big).unwrap();
    f.set_len(MAX_SIZE + 1).unwrap(); // sparse
    drop(f);
    fs::set_permissions(&big, fs::Permissions::from_mode(0o755)).unwrap();
    let err = identify(&big).unwrap_err();
    assert!(matches!(err, TargetError::TooLarge { .. }), "{err}");

    // The size limit is inclusive.
    let path = file(dir.path(), "sized", &[0u8; 100], 0o755);
    let err = identify_with(&path, Path::new(XEN_LIB), 100).unwrap_err();
    assert!(matches!(err, TargetError::NotElf { .. }), "{err}");
    let err = identify_with(&path, Path::new(XEN_LIB), 99).unwrap_err();
    assert!(
        matches!(err, TargetError::TooLarge { size: 100, .. }),
        "{err}"
    );

    let mut broken = b"\x7fELF\x02\x01\x01\0".to_vec();
    broken.resize(80, 0xff);
    let path = file(dir.path(), "broken", &broken, 0o755);
    let err = identify(&path).unwrap_err();
    assert!(matches!(err, TargetError::BadElf { .. }), "{err}");
}

#[cfg(target_arch = "x86_64")]
#[test]
fn test_identify_other_architecture() {
    let dir = tempfile::tempdir().unwrap();
    let mut data = ls();
    data.extend_from_slice(&LIVE_UPDATE_MARKER);
    // e_machine (little-endian u16 at 18): EM_AARCH64.
    data[18..20].copy_from_slice(&183u16.to_le_bytes());
    let path = file(dir.path(), "arm", &data, 0o755);
    let err = identify(&path).unwrap_err();
    assert!(
        matches!(&err, TargetError::WrongArchitecture { found, ours, .. }
            if found == "Aarch64" && ours == "X86_64"),
        "{err}"
    );
}

#[test]
fn test_libxenctrl_version() {
    assert_eq!(libxenctrl_version("libxenctrl.so.4.17"), Some((4, 17)));
    assert_eq!(libxenctrl_version("libxenctrl.so.4.19"), Some((4, 19)));
    for none in [
        "libxenctrl.so",
        "libxenctrl.so.",
        "libxenctrl.so.4",
        "libxenctrl.so.4.",
        "libxenctrl.so.4.17.0",
        "libxenctrl.so.+4.17",
        "libxenctrl.so.4.x",
        "libxenstore.so.4",
        "libxenctrl.so.99999999999.1",
    ] {
        assert_eq!(libxenctrl_version(none), None, "{none}");
    }
}

proptest! {
    #[test]
    fn prop_libxenctrl_version_reads_any_version(major: u32, minor: u32) {
        let soname = format!("libxenctrl.so.{major}.{minor}");
        prop_assert_eq!(libxenctrl_version(&soname), Some((major, minor)));
    }

    #[test]
    fn prop_libxenctrl_version_other_names(name in "[a-z.0-9]{0,24}") {
        prop_assume!(!name.starts_with("libxenctrl.so."));
        prop_assert_eq!(libxenctrl_version(&name), None);
    }
}

// ---------------------------------------------------------- c_command_line

fn defaults() -> CQuotas {
    CQuotas::from_config(&Config::default(), false)
}

fn args_of(line: &CCommandLine) -> Vec<String> {
    line.args
        .iter()
        .map(|a| a.to_str().unwrap().to_string())
        .collect()
}

fn run(q: &CQuotas, user: &str) -> Result<(Vec<String>, Vec<CNote>), CArgsError> {
    c_command_line(q, Some(user)).map(|l| (args_of(&l), l.notes))
}

fn count(args: &[String], word: &str) -> usize {
    args.iter().filter(|a| *a == word).count()
}

#[test]
fn test_c_command_line_quotas_as_c_options() {
    let line = c_command_line(&defaults(), None).unwrap();
    assert_eq!(
        args_of(&line),
        [
            "-E",
            "1000",
            "-S",
            "2048",
            "-W",
            "128",
            "-t",
            "10",
            "-A",
            "5",
            "-M",
            "2048",
            "-Q",
            "outstanding=20",
            "-Q",
            "transaction-nodes=1024",
            "-Q",
            "memory=2621440",
            "-q",
            "memory=2097152",
            "-w",
            "watch-event=20",
            "--priv-domid",
            "0",
            "-U"
        ]
    );
    assert!(line.notes.is_empty(), "{:?}", line.notes);

    let q = CQuotas {
        nodes: 7,
        node_size: 8,
        watches: 9,
        transactions: 3,
        node_permissions: 2,
        path_max: 100,
        outstanding: 4,
        transaction_nodes: 5,
        memory: 6000,
        memory_soft: 5000,
        watch_event_timeout_ms: 3000,
        priv_domid: 7,
        keep_orphans: true,
        no_fork: true,
    };
    let (args, notes) = run(&q, "").unwrap();
    assert_eq!(
        args.join(" "),
        "-E 7 -S 8 -W 9 -t 3 -A 2 -M 100 -Q outstanding=4 -Q transaction-nodes=5 \
         -Q memory=6000 -q memory=5000 -w watch-event=3 --priv-domid 7 -K -N -U"
    );
    assert!(notes.is_empty(), "{notes:?}");
}

/// Our 0 is unlimited; C 4.17's 0 allows nothing but for memory and the
/// watch-event timeout.
#[test]
fn test_c_command_line_unlimited_and_too_large() {
    let mut q = defaults();
    q.nodes = 0;
    q.watches = 0;
    q.outstanding = 0;
    q.memory = 0;
    q.memory_soft = 0;
    q.watch_event_timeout_ms = 0;
    q.path_max = 0;
    q.node_size = u64::MAX;
    let (args, notes) = run(&q, "").unwrap();
    let s = args.join(" ");
    assert!(s.contains("-E 2147483647 "), "{s}");
    assert!(s.contains("-W 2147483647 "), "{s}");
    assert!(s.contains("-Q outstanding=2147483647 "), "{s}");
    assert!(
        s.contains("-Q memory=0 -q memory=0 -w watch-event=0 "),
        "{s}"
    );
    assert!(s.contains("-M 2048 "), "{s}");
    assert!(s.contains("-S 2147483647 "), "{s}");
    assert_eq!(notes.len(), 2, "{notes:?}");
    assert!(notes
        .iter()
        .any(|n| matches!(n, CNote::Adjusted { option, ours, sent, .. }
        if option == "-M" && ours == "unlimited" && sent == "2048")));
    assert!(notes
        .iter()
        .any(|n| matches!(n, CNote::Adjusted { option, sent, .. }
        if option == "-S" && sent == "2147483647")));

    // C's largest values pass as they are.
    let mut q = defaults();
    q.node_size = C_INT_MAX;
    q.watch_event_timeout_ms = C_MAX_TIMEOUT_SECS * 1000;
    let (args, notes) = run(&q, "").unwrap();
    assert!(args.contains(&"2147483647".to_string()), "{args:?}");
    assert!(
        args.contains(&"watch-event=2147483".to_string()),
        "{args:?}"
    );
    assert!(notes.is_empty(), "{notes:?}");
    q.watch_event_timeout_ms = u64::MAX;
    let (args, notes) = run(&q, "").unwrap();
    assert!(
        args.contains(&"watch-event=2147483".to_string()),
        "{args:?}"
    );
    assert_eq!(notes.len(), 1, "{notes:?}");

    let mut q = defaults();
    q.watch_event_timeout_ms = 1500;
    let (args, notes) = run(&q, "").unwrap();
    assert!(args.contains(&"watch-event=2".to_string()), "{args:?}");
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(notes[0].to_string().contains("1500 ms"), "{}", notes[0]);
}

#[test]
fn test_c_command_line_unknown_options_named() {
    for (user, option) in [
        ("--mock-xen /tmp/sock", "--mock-xen"),
        ("--mock-xen=/tmp/sock", "--mock-xen"),
        ("--version", "--version"),
        ("-N -e 3", "-e"),
        ("-NX", "-X"),
        ("--dry-run=/x", "--dry-run"),
        ("--platform mock", "--platform"),
    ] {
        let err = run(&defaults(), user).unwrap_err();
        assert_eq!(
            err,
            CArgsError::UnknownOption {
                option: option.to_string()
            },
            "{user}"
        );
        assert!(err.to_string().contains(option), "{err}");
    }
}

#[test]
fn test_c_command_line_refuses_what_c_dies_on() {
    let q = defaults();
    for (user, want) in [
        ("-N foo", "StrayArgument"),
        ("--no-fork foo", "StrayArgument"),
        ("-- -N", "StrayArgument"),
        ("-I off", "DetachedValue"),
        ("--internal-db off", "DetachedValue"),
        ("-F", "MissingValue"),
        ("-N --pid-file", "MissingValue"),
        ("--no-fork=1", "UnexpectedValue"),
        ("--no", "AmbiguousOption"),
        ("--ent 5", "AmbiguousOption"),
        ("-H", "Refused"),
        ("--help", "Refused"),
        ("--he", "Refused"),
        ("-R", "Refused"),
        ("--master-domid 3", "Refused"),
        ("-E abc", "InvalidValue"),
        ("-E -1", "InvalidValue"),
        ("-E 2147483648", "InvalidValue"),
        ("-E +5", "InvalidValue"),
        ("-Q memory=+5", "InvalidValue"),
        ("--event x", "InvalidValue"),
        ("-Q memory", "InvalidValue"),
        ("-Q memory=x", "InvalidValue"),
        ("-w watch-event=3000000", "InvalidValue"),
        ("--priv-domid x", "InvalidValue"),
        ("-E 0", "ZeroLimit"),
        ("-W0", "ZeroLimit"),
        ("-Q outstanding=0", "ZeroLimit"),
        ("-Q nodes=5", "UnknownName"),
        ("-q outstanding=5", "UnknownName"),
        ("-w other=5", "UnknownName"),
        ("-N\0", "NulByte"),
    ] {
        let err = run(&q, user).unwrap_err();
        let name = format!("{err:?}");
        assert!(name.starts_with(want), "{user:?}: {name}");
    }
    let err = run(&q, "-I off").unwrap_err();
    assert!(err.to_string().contains("-Ioff"), "{err}");
    let err = run(&q, "--no").unwrap_err();
    assert!(
        err.to_string()
            .contains("--no-domain-init, --no-fork, --no-recovery"),
        "{err}"
    );
    let err = run(&q, "-Q nodes=5").unwrap_err();
    assert!(err.to_string().contains("\"nodes\""), "{err}");
}

#[test]
fn test_c_command_line_accepts_what_c_takes() {
    let q = defaults();
    for user in [
        "",
        "-N",
        "-F /run/xenstored.pid -T /var/log/xen/xenstored-trace.log",
        "--pid-file=/run/p",
        "--no-f",
        "-Ioff",
        "--internal-db=off",
        "-I -N",
        "-P",
        "--master-domid 0",
        "--event 5",
        "-Q memory=0",
        "-w watch-event=0",
        "-w watch-event=2147483",
        "-N --",
    ] {
        let (args, _) = run(&q, user).unwrap_or_else(|e| panic!("{user:?}: {e}"));
        // Every word given (but -U) is passed on.
        for w in user.split_whitespace().filter(|w| *w != "--") {
            assert!(args.iter().any(|a| a == w), "{user:?}: {w} in {args:?}");
        }
        assert_eq!(args.last().map(String::as_str), Some("-U"));
    }
    // A cluster is passed on option by option.
    let (args, _) = run(&q, "-NV").unwrap();
    assert!(
        args.ends_with(&["-N".into(), "-V".into(), "-U".into()]),
        "{args:?}"
    );
    let (_, notes) = run(&q, "--event 5").unwrap();
    assert!(
        matches!(&notes[..], [CNote::NoEffect { option, .. }] if option == "--event"),
        "{notes:?}"
    );
    let (_, notes) = run(&q, "-D").unwrap();
    assert!(
        matches!(&notes[..], [CNote::NoEffect { option, .. }] if option == "-D"),
        "{notes:?}"
    );
    assert!(
        notes[0].to_string().starts_with("-D has no effect"),
        "{}",
        notes[0]
    );
    let err = run(&q, "-E 0").unwrap_err();
    assert!(err.to_string().starts_with("-E 0: "), "{err}");
}

#[test]
fn test_c_command_line_adds_u_once() {
    for user in [
        None,
        Some(""),
        Some("-U"),
        Some("-N -U"),
        Some("-U --live-update -NU"),
    ] {
        let line = c_command_line(&defaults(), user).unwrap();
        let args = args_of(&line);
        assert_eq!(count(&args, "-U"), 1, "{user:?}: {args:?}");
        assert_eq!(count(&args, "--live-update"), 0, "{user:?}: {args:?}");
        assert_eq!(args.last().map(String::as_str), Some("-U"));
    }
    let (args, _) = run(&defaults(), "-NU").unwrap();
    assert_eq!(count(&args, "-N"), 1, "{args:?}");
}

#[test]
fn test_c_command_line_user_override_reported() {
    let q = defaults();
    let (args, notes) = run(&q, "-E 50").unwrap();
    let s = args.join(" ");
    assert!(!s.contains("-E 1000"), "{s}");
    assert_eq!(count(&args, "-E"), 1, "{s}");
    assert!(s.contains("-E 50"), "{s}");
    assert_eq!(
        notes,
        [CNote::UserOverride {
            option: "-E".into(),
            ours: "1000".into(),
            theirs: "50".into()
        }]
    );
    assert!(notes[0].to_string().contains("-E 50"), "{}", notes[0]);

    // The same value: given once, nothing to say.
    let (args, notes) = run(&q, "--entry-nb=1000").unwrap();
    assert_eq!(count(&args, "-E"), 0, "{args:?}");
    assert!(args.contains(&"--entry-nb=1000".to_string()));
    assert!(notes.is_empty(), "{notes:?}");

    // A cluster with an attached value; named quotas; the last one wins,
    // as in C.
    let (args, notes) = run(&q, "-NE50 -Q memory=1 -Q memory=99 -q memory=7").unwrap();
    let s = args.join(" ");
    assert!(s.contains("-N -E 50"), "{s}");
    assert!(
        !s.contains("memory=2621440") && !s.contains("memory=2097152"),
        "{s}"
    );
    assert!(s.contains("-Q outstanding=20"), "{s}");
    assert_eq!(notes.len(), 3, "{notes:?}");
    assert!(notes.contains(&CNote::UserOverride {
        option: "-Q memory".into(),
        ours: "2621440".into(),
        theirs: "99".into()
    }));
    assert!(notes.contains(&CNote::UserOverride {
        option: "-q memory".into(),
        ours: "2097152".into(),
        theirs: "7".into()
    }));

    let (args, notes) = run(&q, "-w watch-event=5 --priv-domid 3 -K").unwrap();
    assert_eq!(count(&args, "-w"), 1, "{args:?}");
    assert_eq!(count(&args, "--priv-domid"), 1, "{args:?}");
    let options: Vec<&str> = notes
        .iter()
        .map(|n| match n {
            CNote::UserOverride { option, .. } => option.as_str(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(options, ["-w watch-event", "--priv-domid", "-K"]);

    // -N of theirs only: nothing to say.
    let (args, notes) = run(&q, "-N").unwrap();
    assert_eq!(count(&args, "-N"), 1, "{args:?}");
    assert!(notes.is_empty(), "{notes:?}");

    // -N of ours and theirs: once.
    let mut q = defaults();
    q.no_fork = true;
    let (args, notes) = run(&q, "-N").unwrap();
    assert_eq!(count(&args, "-N"), 1, "{args:?}");
    assert!(notes.is_empty(), "{notes:?}");
}

/// Reads an argv back as C does: every option C knows, `-U` once at the
/// end, each of our settings once.
fn check_argv(args: &[String]) -> Result<(), TestCaseError> {
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    let parsed = parse_c_args(&words).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(words.last().copied(), Some("-U"));
    prop_assert_eq!(count(args, "-U"), 1);
    for short in ["-E", "-S", "-W", "-t", "-A", "-M", "-w", "--priv-domid"] {
        prop_assert_eq!(count(args, short), 1, "{}", short);
    }
    for u in &parsed {
        prop_assert!(meaning(u).is_ok(), "{:?}", u);
    }
    Ok(())
}

proptest! {
    #[test]
    fn prop_c_command_line_always_readable_by_c(
        v in proptest::collection::vec(any::<u64>(), 11),
        small in proptest::collection::vec(0u64..5000, 11),
        pick in proptest::collection::vec(any::<bool>(), 11),
        priv_domid: u16,
        keep_orphans: bool,
        no_fork: bool,
    ) {
        let n = |i: usize| if pick[i] { v[i] } else { small[i] };
        let q = CQuotas {
            nodes: n(0),
            node_size: n(1),
            watches: n(2),
            transactions: n(3),
            node_permissions: n(4),
            path_max: n(5),
            outstanding: n(6),
            transaction_nodes: n(7),
            memory: n(8),
            memory_soft: n(9),
            watch_event_timeout_ms: n(10),
            priv_domid,
            keep_orphans,
            no_fork,
        };
        let line = c_command_line(&q, None).unwrap();
        check_argv(&args_of(&line))?;
        let e = args_of(&line)[1].parse::<u64>().unwrap();
        prop_assert_eq!(e, match q.nodes { 0 => C_INT_MAX, x => x.min(C_INT_MAX) });
    }

    /// An operator's value for -E always wins and is reported when it
    /// differs.
    #[test]
    fn prop_c_command_line_user_value_wins(ours in 1u64..100_000, theirs in 1u64..100_000) {
        let mut q = defaults();
        q.nodes = ours;
        let (args, notes) = run(&q, &format!("-E {theirs}")).unwrap();
        check_argv(&args)?;
        let at = args.iter().position(|a| a == "-E").unwrap();
        prop_assert_eq!(&args[at + 1], &theirs.to_string());
        prop_assert_eq!(notes.len(), usize::from(ours != theirs));
    }
}
