//! Xen 4.17's C xenstored restoring live-update streams under the shim
//! (`tests::c_restore`): the real stream C wrote, a stream built with
//! xenstored-lite's migration types in the form C reads, and the streams
//! the research note says C dies on. Each test skips (loudly) where C
//! xenstored, a C compiler or Xen's tools are missing.

use std::time::Duration;

use tests::c_restore::{
    base_nodes, c417_negatives, msg, node, ring, socket, stream, watch, watch_event, CRestore,
    FdLayout,
};
use tests::have;
use xenring::MsgType;
use xenstored_lite::migration::{ConnSpec, ConnectionData, GlobalData, Record, Stream, Version};

/// The stream C xenstored 4.17 wrote for a live update (see its README).
const FIXTURE: &[u8] = include_bytes!(
    "../../xenstored-lite/src/migration/testdata/c-xenstored-4.17-live-update.stream"
);

/// How long to listen for octets that must not come.
const QUIET: Duration = Duration::from_millis(300);

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Runs a tool against C and fails the test unless it succeeds.
fn tool_ok(c: &CRestore, program: &str, args: &[&str]) -> String {
    let o = c.tool(program, args);
    assert!(
        o.status.success(),
        "{program} {args:?} failed ({}): {}\nC's log:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr),
        c.log_text()
    );
    stdout(&o)
}

/// The lines `xenstore-ls -f -p /` prints for the stream's nodes (all but
/// `/` and the `@` nodes), sorted.
fn listing_of(stream: &Stream) -> Vec<String> {
    let mut lines: Vec<String> = stream
        .records
        .iter()
        .filter_map(|r| match r {
            Record::Node(n) if n.path != "/" && !n.path.starts_with('@') => {
                let perms: Vec<String> = n
                    .perms
                    .iter()
                    .map(|p| format!("{}{}", char::from(p.perm.kind.letter()), p.perm.domid))
                    .collect();
                Some(format!(
                    "{} = \"{}\"   ({})",
                    n.path,
                    String::from_utf8_lossy(&n.value),
                    perms.join(",")
                ))
            }
            _ => None,
        })
        .collect();
    lines.sort();
    lines
}

fn sorted_lines(text: &str) -> Vec<String> {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    lines.sort();
    lines
}

fn out_data(stream: &Stream, conn: u32) -> Vec<u8> {
    stream
        .records
        .iter()
        .find_map(|r| match r {
            Record::Connection(c) if c.conn_id == conn => Some(c.out_data.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("the stream has no connection {conn}"))
}

#[test]
fn the_stream_c_wrote_restores_with_its_nodes_watches_and_pending_data() {
    if !have("xenstore-ls") || !have("xenstore-read") || !have("xenstore-write") {
        return;
    }
    let fixture = Stream::parse(FIXTURE).expect("the fixture parses");
    // Its own numbers: GLOBAL 3 and 6, socket connections 2 (fd 7) and 4
    // (fd 8).
    let layout = FdLayout::of_stream(&fixture);
    assert_eq!(layout.sockets, vec![(2, 7), (4, 8)]);
    let Some(mut c) = CRestore::start_or_skip(FIXTURE, layout, &[]) else {
        return;
    };
    assert!(
        c.wait_restored(),
        "C did not take the state and keep running:\n{}",
        c.log_text()
    );

    let listing = tool_ok(&c, "xenstore-ls", &["-f", "-p", "/"]);
    assert_eq!(sorted_lines(&listing), listing_of(&fixture), "{listing}");
    for r in &fixture.records {
        if let Record::Node(n) = r {
            if n.path.starts_with('@') || n.value.is_empty() {
                continue;
            }
            let got = tool_ok(&c, "xenstore-read", &[&n.path]);
            assert_eq!(
                got.as_bytes(),
                [n.value.as_slice(), b"\n"].concat(),
                "{}",
                n.path
            );
        }
    }

    // Connection 4 asked for the update: its queued OK arrives as written.
    let ok = out_data(&fixture, 4);
    assert_eq!(ok, msg(MsgType::Control, 0, 0, b"OK\0"));
    assert_eq!(c.read_exact(4, ok.len()).expect("connection 4's OK"), ok);
    assert_eq!(c.read_for(4, QUIET).expect("connection 4"), b"");

    // Connection 2 had sent the header of a READ announcing 20 octets and
    // the first 10 (`/local/dom`): nothing is answered until the rest comes.
    assert_eq!(c.read_for(2, QUIET).expect("connection 2"), b"");
    c.send(2, b"ain/5/nam\0").expect("the rest of the READ");
    assert_eq!(
        c.read_msg(2).expect("the READ's reply"),
        msg(MsgType::Error, 9, 0, b"ENOENT\0")
    );
    // Its watches came through: `/vm/abc` (token `tok-a`).
    tool_ok(&c, "xenstore-write", &["/vm/abc/name", "guest-b"]);
    assert_eq!(
        c.read_msg(2).expect("the watch event"),
        watch_event("/vm/abc/name", "tok-a")
    );
    assert_eq!(tool_ok(&c, "xenstore-read", &["/vm/abc/name"]), "guest-b\n");
    assert!(c.running(), "C died:\n{}", c.log_text());
}

#[test]
fn a_built_stream_delivers_its_pending_output_then_answers_held_requests() {
    if !have("xenstore-read") || !have("xenstore-write") {
        return;
    }
    let held = msg(MsgType::Read, 0x41, 0, b"/a\0");
    let partial_whole = msg(MsgType::Read, 0x42, 0, b"/b\0");
    let (partial, partial_rest) = partial_whole.split_at(partial_whole.len() - 1);
    let half_sent = msg(MsgType::Read, 0x30, 0, b"half-sent-value");
    let tail = &half_sent[7..];
    let event = watch_event("/w", "tk");
    let ok = msg(MsgType::Control, 0x31, 0, b"OK\0");
    let out = [tail, event.as_slice(), ok.as_slice()].concat();
    let mut records = vec![
        Record::Global(GlobalData {
            rw_socket_fd: -1,
            evtchn_fd: -1,
        }),
        ring(1, 0, 0),
        socket(
            2,
            -1,
            &[held.as_slice(), partial].concat(),
            u16::try_from(tail.len()).expect("a short tail"),
            &out,
        ),
        watch(2, "/w", "tk"),
    ];
    records.extend(base_nodes());
    records.extend([
        node("/a", b"alpha", 0),
        node("/b", b"beta", 0),
        node("/w", b"", 0),
    ]);
    let built = stream(Version::V1, records);
    let layout = FdLayout::sequential(3, &built);
    let bytes = layout.applied(&built).expect("the stream with our fds");
    let rewritten = Stream::parse(&bytes).expect("it parses back");
    assert_eq!(
        rewritten.global(),
        Some(GlobalData {
            rw_socket_fd: 3,
            evtchn_fd: 4
        })
    );
    assert!(rewritten.records.iter().any(|r| matches!(
        r,
        Record::Connection(ConnectionData {
            conn_id: 2,
            spec: ConnSpec::Socket(s),
            ..
        }) if s.socket_fd == 5
    )));
    let Some(mut c) = CRestore::start_or_skip(&bytes, layout, &[]) else {
        return;
    };
    assert!(
        c.wait_restored(),
        "C did not take the state and keep running:\n{}",
        c.log_text()
    );

    // Byte for byte: the half-sent tail, the event, the OK, then the reply
    // to the held READ.
    let reply = msg(MsgType::Read, 0x41, 0, b"alpha");
    let expected = [out.as_slice(), reply.as_slice()].concat();
    let got = c
        .read_exact(2, expected.len())
        .expect("connection 2's output");
    assert_eq!(got, expected, "C's log:\n{}", c.log_text());
    assert_eq!(c.read_for(2, QUIET).expect("connection 2"), b"");

    // The partial READ is answered once its last octet comes.
    c.send(2, partial_rest)
        .expect("the partial READ's last octet");
    assert_eq!(
        c.read_msg(2).expect("the second READ's reply"),
        msg(MsgType::Read, 0x42, 0, b"beta")
    );
    // The watch is live, and the nodes are there for other clients.
    tool_ok(&c, "xenstore-write", &["/w/x", "1"]);
    assert_eq!(
        c.read_msg(2).expect("the watch event"),
        watch_event("/w/x", "tk")
    );
    assert_eq!(tool_ok(&c, "xenstore-read", &["/b"]), "beta\n");
    assert!(c.running(), "C died:\n{}", c.log_text());
}

/// Restores the negative `name` and checks C dies as [`c417_negatives`]
/// says, leaving `state_dump` in place.
fn dies_on(name: &str) {
    let (_, state, expect) = c417_negatives()
        .into_iter()
        .find(|(n, _, _)| *n == name)
        .unwrap_or_else(|| panic!("no negative named {name:?}"));
    let layout = FdLayout::of_state(&state).expect("the negative's descriptors");
    let Some(mut c) = CRestore::start_or_skip(&state, layout, &[]) else {
        return;
    };
    let exit = c
        .wait_exit()
        .unwrap_or_else(|| panic!("{name}: C still runs:\n{}", c.log_text()));
    assert!(
        expect.matches(&exit),
        "{name}: expected {expect}, got {:?} with:\n{}",
        exit.status,
        exit.log
    );
    if !state.is_empty() {
        assert!(!c.state_taken(), "{name}: C unlinked state_dump");
    }
}

#[test]
fn a_version_2_stream_is_an_unknown_record_identifier() {
    dies_on("version 2 header");
}

#[test]
fn a_socket_record_before_any_dom0_ring_record_crashes_c() {
    dies_on("socket record first, no dom0 ring record");
}

#[test]
fn a_node_owned_by_an_unknown_domain_is_a_write_node_error() {
    dies_on("node owned by an unknown domain");
}

#[test]
fn no_state_file_is_no_state_found() {
    dies_on("no state file");
}

/// The negatives are the accepted stream with one rule broken: that stream
/// itself must restore, or the negatives prove nothing.
#[test]
fn the_stream_the_negatives_break_restores() {
    if !have("xenstore-read") {
        return;
    }
    let accepted = tests::c_restore::c417_accepted();
    let bytes = accepted.to_bytes().expect("it writes");
    let layout = FdLayout::of_state(&bytes).expect("its descriptors");
    let Some(mut c) = CRestore::start_or_skip(&bytes, layout, &[]) else {
        return;
    };
    assert!(
        c.wait_restored(),
        "C did not take the state and keep running:\n{}",
        c.log_text()
    );
    assert_eq!(
        c.read_msg(2).expect("the held READ's reply"),
        msg(MsgType::Read, 1, 0, b"alpha")
    );
    assert_eq!(tool_ok(&c, "xenstore-read", &["/a"]), "alpha\n");
    assert!(c.running(), "C died:\n{}", c.log_text());
}

/// Our pre-flight check refuses, before any exec, every stream C is seen
/// to die on above, and accepts the one they break.
#[test]
fn our_model_of_c_refuses_every_negative_first() {
    use xenstored_lite::migration::c417::check_c417;
    let accepted = tests::c_restore::c417_accepted();
    let bytes = accepted.to_bytes().expect("it writes");
    check_c417(&bytes).expect("the stream the negatives break passes the model");
    for (name, state, _) in tests::c_restore::c417_negatives() {
        if state.is_empty() {
            // No state file at all: our writer always writes one, whole,
            // before the exec (and the exec does not happen if it cannot).
            continue;
        }
        let refusal = check_c417(&state).expect_err(name);
        assert!(!refusal.to_string().is_empty(), "{name}");
    }
}
