//! Live update from xenstored-lite to Debian's C xenstored 4.17, with no
//! hypervisor: xenstored-lite runs on mock-xen with the project's shim
//! preloaded (inert for it: it implements only libxen* calls and
//! `/proc/xen` paths), so that the C binary it execs finds a Xen to talk
//! to. The real `xenstore-control` drives the update; the clients are dom0
//! socket clients, which cross the exec on their descriptors.

use std::ffi::OsStr;
use std::path::Path;

use tests::c_daemon::{build_shim, skip, C_XENSTORED};
use tests::{client, connect, have, run_tool, wait_until, Daemon, MockXen, XENSTORE_CONTROL};
use xenring::codec::Decoder;
use xenring::perms::{Perm, PermKind};
use xenring::{Message, MsgType};

/// C xenstored and its shim, or why the test cannot run here.
fn c_target(dir: &Path) -> Option<std::path::PathBuf> {
    if !Path::new(C_XENSTORED).exists() {
        skip(&format!("{C_XENSTORED} is not installed"));
        return None;
    }
    if !have(XENSTORE_CONTROL) {
        return None;
    }
    match build_shim(&dir.join("shim")) {
        Ok(shim) => Some(shim),
        Err(e) => {
            skip(&e.to_string());
            None
        }
    }
}

/// mock-xen, and xenstored-lite on it with the shim preloaded (for the C
/// it will exec); `None` when C cannot run here (the test skips).
fn start_under_shim(dir: &Path) -> Option<(MockXen, Daemon)> {
    start_under_shim_with(dir, &[], &[])
}

/// [`start_under_shim`] with more arguments and environment variables.
fn start_under_shim_with(
    dir: &Path,
    args: &[&str],
    env: &[(&str, &OsStr)],
) -> Option<(MockXen, Daemon)> {
    let shim = c_target(dir)?;
    let hv = MockXen::start(dir);
    let mut all_env: Vec<(&str, &OsStr)> = vec![("LD_PRELOAD", shim.as_os_str())];
    all_env.extend_from_slice(env);
    let mut all_args = vec!["--mock-xen", hv.socket.to_str().unwrap()];
    all_args.extend_from_slice(args);
    let daemon = Daemon::start_env(dir, &all_args, &all_env);
    Some((hv, daemon))
}

/// Whether process `pid` runs (exists and is not a zombie).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .is_some_and(|zombie| !zombie)
}

/// The pid a log line `... (pid N) <after>` names, the last such line.
fn pid_in_log(log: &str, before: &str) -> Option<u32> {
    log.lines().rev().find_map(|l| {
        let rest = &l[l.find(before)? + before.len()..];
        rest.split(|c: char| !c.is_ascii_digit())
            .find(|s| !s.is_empty())?
            .parse()
            .ok()
    })
}

/// Kills a process the test did not spawn (xenstored-lite brought back
/// by a guardian) when dropped.
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.0) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// What a tool printed, stdout then stderr.
fn printed(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn ls(daemon: &Daemon) -> String {
    let out = daemon.tool("xenstore-ls", &["-f", "-p", "/"]);
    assert!(out.status.success(), "xenstore-ls: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `xenstore-control live-update` to C, which must report success.
fn update_to_c_ok(daemon: &Daemon) {
    let out = daemon.tool(XENSTORE_CONTROL, &["live-update", C_XENSTORED]);
    assert!(
        out.status.success(),
        "xenstore-control live-update: {out:?}\nlog:\n{}",
        daemon.log_text()
    );
}

/// Nodes `/tool/a` = 1 and `/tool/b` = 2 (dom0's, no access for others)
/// written by the first client returned, and the second watching
/// `/tool/w` (its first event read).
fn tool_nodes_and_watcher(
    daemon: &Daemon,
) -> (
    xenring::Client<std::os::unix::net::UnixStream>,
    xenring::Client<std::os::unix::net::UnixStream>,
) {
    let mut a = client(&daemon.socket);
    a.write(0, "/tool/a", b"1").unwrap();
    a.write(0, "/tool/b", b"2").unwrap();
    a.set_perms(
        0,
        "/tool/b",
        &[Perm {
            kind: PermKind::None,
            domid: 0,
        }],
    )
    .unwrap();
    let mut w = client(&daemon.socket);
    w.watch("/tool/w", "tok").unwrap();
    assert_eq!(w.next_watch_event().unwrap().path, "/tool/w");
    (a, w)
}

fn exe(pid: u32) -> std::path::PathBuf {
    std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default()
}

#[test]
fn test_live_update_to_c_keeps_store_clients_and_queued_events() {
    let dir = tempfile::tempdir().unwrap();
    let Some((_hv, mut daemon)) = start_under_shim(dir.path()) else {
        return;
    };
    let pid = daemon.pid();

    let (mut a, mut w) = tool_nodes_and_watcher(&daemon);
    // An event for w that it has not read when the update happens.
    a.write(0, "/tool/w", b"before").unwrap();

    // An open transaction: C carries none, so the update waits (BUSY) for
    // -t seconds, then is refused, and the daemon serves on.
    let mut t = client(&daemon.socket);
    let tx = t.transaction_start().unwrap();
    t.write(tx, "/tool/t", b"in-tx").unwrap();
    let out = daemon.tool(XENSTORE_CONTROL, &["live-update", "-t", "2", C_XENSTORED]);
    let said = printed(&out);
    assert!(!out.status.success(), "with a transaction open: {said}");
    // xenstore-control asks again while the answer is BUSY, and gives up
    // (with -a) when its -t is over; the daemon says why in its log.
    assert!(
        said.contains("BUSY") || said.contains("long running transactions"),
        "the refusal says why: {said}\nlog:\n{}",
        daemon.log_text()
    );
    assert!(
        daemon.log_text().contains("transaction 1 open"),
        "{}",
        daemon.log_text()
    );
    assert_ne!(exe(pid), Path::new(C_XENSTORED));
    assert!(daemon.running());
    assert_eq!(a.read(0, "/tool/a").unwrap(), b"1");
    t.transaction_end(tx, true).unwrap();

    let before = ls(&daemon);
    update_to_c_ok(&daemon);
    // The same process, now C xenstored.
    assert!(daemon.running(), "exited:\n{}", daemon.log_text());
    assert_eq!(daemon.pid(), pid);
    wait_until("C xenstored in the daemon's process", || {
        exe(pid) == Path::new(C_XENSTORED)
    });
    wait_until("C to take the state", || {
        !daemon.rundir.join("state_dump").exists()
    });
    // The guardian of the hand-over saw the state taken and exits (no
    // process of it left behind).
    let guardian = pid_in_log(&daemon.log_text(), "guardian (pid ")
        .unwrap_or_else(|| panic!("no guardian in the log:\n{}", daemon.log_text()));
    assert_ne!(guardian, pid);
    wait_until("the guardian to exit", || !alive(guardian));
    assert!(
        !daemon.log_text().contains("rolling back"),
        "{}",
        daemon.log_text()
    );

    // Everything there, permissions included; clients keep their
    // connections; the queued event arrives, and C fires new ones.
    assert_eq!(ls(&daemon), before);
    assert_eq!(a.read(0, "/tool/t").unwrap(), b"in-tx");
    assert_eq!(w.next_watch_event().unwrap().path, "/tool/w");
    a.write(0, "/tool/w", b"after").unwrap();
    assert_eq!(w.next_watch_event().unwrap().path, "/tool/w");
    assert_eq!(a.read(0, "/tool/w").unwrap(), b"after");
    let mut fresh = client(&daemon.socket);
    assert_eq!(fresh.read(0, "/tool/b").unwrap(), b"2");
}

/// One xs_wire message on a raw connection.
fn send_raw(s: &mut std::os::unix::net::UnixStream, ty: MsgType, req: u32, tx: u32, p: &[u8]) {
    use std::io::Write as _;
    let m = Message::new(ty, req, tx, p.to_vec()).expect("a small message");
    s.write_all(&m.to_bytes()).expect("writing to the daemon");
}

/// The next whole message on a raw connection.
fn recv_raw(s: &mut std::os::unix::net::UnixStream) -> Message {
    use std::io::Read as _;
    let mut dec = Decoder::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).expect("a reply within the bound");
        assert!(n > 0, "the daemon closed the connection");
        let mut input = &buf[..n];
        if let Some(m) = dec.decode(&mut input).expect("a well-formed reply") {
            assert!(input.is_empty(), "one reply at a time here");
            return m;
        }
    }
}

#[test]
fn test_live_update_to_c_holds_a_new_transaction_start_for_c_to_answer() {
    let dir = tempfile::tempdir().unwrap();
    let Some((_hv, daemon)) = start_under_shim(dir.path()) else {
        return;
    };
    let pid = daemon.pid();
    let mut t = client(&daemon.socket);
    let tx = t.transaction_start().unwrap();
    // The update waits (BUSY) for t's transaction, up to -t 60.
    let socket = daemon.socket.clone();
    let update = std::thread::spawn(move || {
        run_tool(
            &socket,
            XENSTORE_CONTROL,
            &["live-update", "-t", "60", C_XENSTORED],
        )
    });
    wait_until("the update to hold new transactions", || {
        daemon
            .log_text()
            .contains("new TRANSACTION_STARTs are held")
    });
    // A new transaction asked for now is held, not answered ...
    let mut h = connect(&daemon.socket);
    send_raw(&mut h, MsgType::TransactionStart, 7, 0, b"\0");
    // Were it carried out, h's transaction would keep the update BUSY
    // until -t ran out, and the update would be refused.
    h.set_read_timeout(Some(std::time::Duration::from_millis(300)))
        .unwrap();
    let mut probe = [0u8; 1];
    assert!(
        std::io::Read::read(&mut h, &mut probe).is_err(),
        "a held TRANSACTION_START got an answer from us"
    );
    h.set_read_timeout(Some(tests::LIMIT)).unwrap();
    // ... and once t's transaction ends, the update happens and C answers it.
    t.write(tx, "/tool/t", b"1").unwrap();
    t.transaction_end(tx, true).unwrap();
    let out = update.join().expect("the xenstore-control thread");
    assert!(
        out.status.success(),
        "live-update after the transaction ended: {}\nlog:\n{}",
        printed(&out),
        daemon.log_text()
    );
    wait_until("C xenstored in the daemon's process", || {
        exe(pid) == Path::new(C_XENSTORED)
    });
    let reply = recv_raw(&mut h);
    assert_eq!(
        (reply.header.msg_type, reply.header.req_id),
        (MsgType::TransactionStart.raw(), 7),
        "C answers the held request: {reply:?}"
    );
    let id: u32 =
        String::from_utf8_lossy(reply.payload.strip_suffix(b"\0").unwrap_or(&reply.payload))
            .parse()
            .expect("a transaction id");
    assert_ne!(id, 0);
    // A real transaction of C's: a write in it, committed.
    send_raw(&mut h, MsgType::Write, 8, id, b"/tool/held\0yes");
    assert_eq!(recv_raw(&mut h).header.msg_type, MsgType::Write.raw());
    send_raw(&mut h, MsgType::TransactionEnd, 9, id, b"T\0");
    assert_eq!(
        recv_raw(&mut h).header.msg_type,
        MsgType::TransactionEnd.raw()
    );
    let mut fresh = client(&daemon.socket);
    assert_eq!(fresh.read(0, "/tool/held").unwrap(), b"yes");
    assert_eq!(fresh.read(0, "/tool/t").unwrap(), b"1");
}

#[test]
fn test_live_update_to_c_refuses_a_depth_watch_and_serves_on() {
    let dir = tempfile::tempdir().unwrap();
    let Some((_hv, mut daemon)) = start_under_shim(dir.path()) else {
        return;
    };
    let pid = daemon.pid();
    let mut w = client(&daemon.socket);
    w.watch_depth("/deep", "d", 1).unwrap();
    let _ = w.next_watch_event().unwrap();
    let out = daemon.tool(XENSTORE_CONTROL, &["live-update", C_XENSTORED]);
    let said = printed(&out);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("/deep") && said.contains("depth"),
        "the refusal names the watch: {said}"
    );
    // Nothing was handed over: still ours, still serving, no state left.
    assert!(daemon.running());
    assert_ne!(exe(pid), Path::new(C_XENSTORED));
    assert!(!daemon.rundir.join("state_dump").exists());
    let mut c = client(&daemon.socket);
    c.write(0, "/deep/x", b"1").unwrap();
    assert_eq!(w.next_watch_event().unwrap().path, "/deep/x");
}

#[test]
fn test_live_update_to_c_rolls_back_when_c_dies_before_reading_the_state() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("xenstored.pid");
    let fail: &OsStr = OsStr::new("1");
    let Some((_hv, mut daemon)) = start_under_shim_with(
        dir.path(),
        &["--pid-file", pid_file.to_str().unwrap()],
        &[("XSL_SHIM_FAIL_STATE_READ", fail)],
    ) else {
        return;
    };
    let pid = daemon.pid();
    let ours = exe(pid);
    assert_eq!(ours, tests::bin("xenstored-lite"));

    let (mut a, mut w) = tool_nodes_and_watcher(&daemon);
    let before = ls(&daemon);

    // C is exec'd and dies as it opens the state (the shim's fault): the
    // guardian brings xenstored-lite back, which answers the update OK.
    update_to_c_ok(&daemon);
    wait_until("the log to say why it rolled back", || {
        daemon.log_text().contains("live-update: restored")
            && daemon.log_text().contains("rolling back")
    });
    let log = daemon.log_text();
    assert!(
        log.contains(&format!(
            "C xenstored (pid {pid}) died before it read the state (exit status 70)"
        )),
        "{log}"
    );
    let back = pid_in_log(&log, "guardian (pid ").expect("the guardian's pid");
    let _kill = KillOnDrop(back);
    assert!(
        log.contains(&format!("pid changes from {pid} to {back}")),
        "{log}"
    );
    // The daemon serving is xenstored-lite in the guardian's process, and
    // its pid file says so; the old process (C) is gone.
    assert_eq!(exe(back), ours);
    wait_until("the pid file to name the new process", || {
        std::fs::read_to_string(&pid_file).is_ok_and(|s| s.trim() == back.to_string())
    });
    assert!(!daemon.running());

    // Everything there, permissions included; the clients keep their
    // connections and the watch fires.
    assert_eq!(ls(&daemon), before);
    assert!(!daemon.rundir.join("state_dump").exists());
    assert_eq!(a.read(0, "/tool/a").unwrap(), b"1");
    a.write(0, "/tool/w", b"after").unwrap();
    assert_eq!(w.next_watch_event().unwrap().path, "/tool/w");
    let mut fresh = client(&daemon.socket);
    assert_eq!(fresh.read(0, "/tool/b").unwrap(), b"2");
}
