//! Debian's xenstore-utils and python3-pyxs, unchanged, against the daemon
//! through `XENSTORED_PATH`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use tests::{have, skip, test_name, Daemon, Proc};

const CONTROL: &str = "/usr/lib/xen-4.17/bin/xenstore-control";

fn out(o: &std::process::Output) -> String {
    assert!(
        o.status.success(),
        "failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn test_xenstore_utils_read_write_ls_list_rm_chmod_exists() {
    if !have("xenstore-write") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), &["--platform", "mock"]);
    out(&d.tool(
        "xenstore-write",
        &[
            "/local/domain/0/name",
            "Domain-0",
            "/vm/abc/name",
            "guest-a",
        ],
    ));
    assert_eq!(
        out(&d.tool("xenstore-read", &["/vm/abc/name"])),
        "guest-a\n"
    );
    assert_eq!(out(&d.tool("xenstore-list", &["/vm/abc"])), "name\n");
    let ls = out(&d.tool("xenstore-ls", &["/vm"]));
    assert_eq!(ls, "abc = \"\"\n name = \"guest-a\"\n");
    assert!(d.tool("xenstore-exists", &["/vm/abc"]).status.success());
    assert!(!d.tool("xenstore-exists", &["/vm/nope"]).status.success());
    out(&d.tool("xenstore-chmod", &["/vm/abc", "n0", "r5"]));
    let perms = out(&d.tool("xenstore-ls", &["-p", "/vm"]));
    assert!(perms.contains("(n0,r5)"), "{perms}");
    out(&d.tool("xenstore-rm", &["/vm/abc"]));
    assert!(!d.tool("xenstore-exists", &["/vm/abc"]).status.success());
    let missing = d.tool("xenstore-read", &["/vm/abc/name"]);
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("couldn't read path"),
        "{missing:?}"
    );
}

#[test]
fn test_xenstore_watch_sees_changes() {
    if !have("xenstore-watch") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), &["--platform", "mock"]);
    out(&d.tool("xenstore-write", &["/w", ""]));
    // Bounded: if an event never came, `timeout` ends the watcher and the
    // line read below fails instead of blocking the suite.
    let child = Command::new("timeout")
        .args(["60", "xenstore-watch", "-n", "3", "/w"])
        .env("XENSTORED_PATH", &d.socket)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut watch = Proc { child };
    let mut lines = BufReader::new(watch.child.stdout.take().unwrap()).lines();
    // The first event comes with the registration.
    assert_eq!(lines.next().unwrap().unwrap(), "/w");
    out(&d.tool("xenstore-write", &["/w/a", "1"]));
    assert_eq!(lines.next().unwrap().unwrap(), "/w/a");
    out(&d.tool("xenstore-rm", &["/w"]));
    assert_eq!(lines.next().unwrap().unwrap(), "/w");
    assert!(
        watch.child.wait().unwrap().success(),
        "-n 3 exits after three events"
    );
}

#[test]
fn test_xenstore_control_commands() {
    if !have(CONTROL) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), &["--platform", "mock"]);
    let help = out(&d.tool(CONTROL, &["help"]));
    for cmd in [
        "check",
        "log",
        "logfile",
        "memreport",
        "print",
        "quota",
        "quota-soft",
    ] {
        assert!(help.contains(cmd), "{cmd} missing from {help}");
    }
    // C xenstored 4.17's bytes: "OK" and a newline, no empty line.
    assert_eq!(out(&d.tool(CONTROL, &["check"])), "OK\n");
    // C's syntax and layout (tests/tests/c_compat.rs compares them with C).
    out(&d.tool(CONTROL, &["quota", "set", "watches", "64"]));
    let quota = out(&d.tool(CONTROL, &["quota"]));
    assert!(
        quota.contains("\nwatches          :       64 Watches per domain\n"),
        "{quota}"
    );
    let log = dir.path().join("access.log");
    out(&d.tool(CONTROL, &["logfile", log.to_str().unwrap()]));
    out(&d.tool("xenstore-write", &["/logged", "x"]));
    out(&d.tool(CONTROL, &["log", "off"]));
    out(&d.tool("xenstore-write", &["/not-logged", "x"]));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("XS_WRITE tx 0 /logged -> OK"), "{text}");
    assert!(!text.contains("/not-logged"), "{text}");
    assert!(!d.tool(CONTROL, &["no-such-command"]).status.success());
}

#[test]
fn test_pyxs_client_works_unchanged() {
    // pyxs is only importable by Debian's own python3.
    if !have("/usr/bin/python3") {
        return;
    }
    let probe = tests::output_within_limit(
        Command::new("/usr/bin/python3").args(["-c", "import pyxs"]),
        "python3 -c 'import pyxs'",
    );
    if !probe.status.success() {
        skip(
            &test_name(),
            "python3-pyxs is not installed (scripts/install-test-deps.sh installs it)",
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), &["--platform", "mock"]);
    let script = r#"
import sys
from pyxs import Client
with Client(unix_socket_path=sys.argv[1]) as c:
    c[b"/py/x"] = b"42"
    assert c[b"/py/x"] == b"42"
    assert c.list(b"/py") == [b"x"]
    assert c.get_perms(b"/py/x") == [b"n0"]
    c.set_perms(b"/py/x", [b"n0", b"r5"])
    assert c.get_perms(b"/py/x") == [b"n0", b"r5"]
    c.transaction()
    c[b"/py/y"] = b"1"
    assert c.commit()
    assert c.exists(b"/py/y")
    assert c.get_domain_path(5) == b"/local/domain/5"
    assert c.is_domain_introduced(0)
    c.delete(b"/py/x")
    assert not c.exists(b"/py/x")
    m = c.monitor()
    m.watch(b"/py", b"tok")
    ev = next(m.wait())
    assert ev == (b"/py", b"tok"), ev
print("pyxs ok")
"#;
    let o = tests::output_within_limit(
        Command::new("/usr/bin/python3").args(["-c", script, d.socket.to_str().unwrap()]),
        "the pyxs script",
    );
    assert_eq!(out(&o).trim(), "pyxs ok");
}
