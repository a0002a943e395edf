//! mock-xen's handles as their users see them: which descriptors they
//! expose, which domain and slot they act for, what a dropped handle gives
//! back to the hypervisor, event delivery and masking as the daemon's poll
//! loop relies on them, and errors that keep their kind across the socket.

use std::collections::BTreeSet;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

use evtchn::{EventChannel, Port};
use gnttab::{PageMapper, GNTTAB_RESERVED_XENSTORE};
use mock_xen::{
    Connector, Error, Guest, MockEventChannel, MockPageMapper, ServerThread, Toolstack,
};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// Whether `fd` is readable right now (a zero-timeout poll).
fn readable(fd: RawFd) -> bool {
    // SAFETY: every caller passes the descriptor of a handle it holds for
    // the whole call, so it stays open while borrowed.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
    poll(&mut fds, PollTimeout::ZERO).expect("poll");
    fds[0]
        .revents()
        .is_some_and(|r| r.contains(PollFlags::POLLIN))
}

/// A guest and dom0's handle bound to its store port.
fn bound_pair(connector: &Connector) -> (Toolstack, Guest, MockEventChannel, Port) {
    let ts = Toolstack::open(connector).unwrap();
    let rec = ts.create_domain().unwrap();
    let guest = Guest::attach(connector, &rec).unwrap();
    let mut dom0 = MockEventChannel::open(connector, 0).unwrap();
    let port = dom0
        .bind_interdomain(rec.info.domid, Port::new(rec.store_port))
        .unwrap();
    (ts, guest, dom0, port)
}

fn pending(evtchn: &mut MockEventChannel) -> Vec<Port> {
    let mut out = Vec::new();
    evtchn.read_pending(&mut out).unwrap();
    out
}

#[test]
fn test_a_dropped_handle_gives_its_bindings_back() {
    let connector = Connector::new_local().unwrap();
    let ts = Toolstack::open(&connector).unwrap();
    let rec = ts.create_domain().unwrap();
    let remote = Port::new(rec.store_port);
    let mut first = MockEventChannel::open(&connector, 0).unwrap();
    first.bind_interdomain(rec.info.domid, remote).unwrap();
    let mut second = MockEventChannel::open(&connector, 0).unwrap();
    assert!(
        second.bind_interdomain(rec.info.domid, remote).is_err(),
        "the guest's port is taken while the first handle holds it"
    );
    drop(first);
    second
        .bind_interdomain(rec.info.domid, remote)
        .expect("the port is free again once its handle is gone");
}

#[test]
fn test_handles_say_which_domain_slot_and_descriptors_they_use() {
    let connector = Connector::new_local().unwrap();
    let ts = Toolstack::open(&connector).unwrap();
    let recs: Vec<_> = (0..3).map(|_| ts.create_domain().unwrap()).collect();
    let mut slots = BTreeSet::new();
    for d in std::iter::once(0).chain(recs.iter().map(|r| r.info.domid)) {
        let h = MockEventChannel::open(&connector, d).unwrap();
        assert_eq!(h.conn().domid(), d);
        slots.insert(h.conn().slot());
        // In-process: no socket, so no handle descriptor to inherit.
        assert_eq!(h.conn().raw_fd(), None);
        assert_eq!(h.handle_fd(), -1);
    }
    assert_eq!(slots.len(), 4, "one event slot per domain: {slots:?}");
    for r in &recs {
        let g = Guest::attach(&connector, r).unwrap();
        assert_eq!(g.domid(), r.info.domid);
    }

    let dir = tempfile::tempdir().unwrap();
    let server = ServerThread::start(dir.path().join("hv.sock")).unwrap();
    let remote = Connector::remote(server.path());
    let h = MockEventChannel::open(&remote, 0).unwrap();
    let fd = h.conn().raw_fd().expect("a remote handle has a socket");
    assert_eq!(h.handle_fd(), fd, "the handle is the socket");
    // SAFETY: `h` holds the socket open for the whole borrow.
    let sock = unsafe { BorrowedFd::borrow_raw(fd) };
    let stat = nix::sys::stat::fstat(sock).expect("the socket is open");
    assert_eq!(
        stat.st_mode & nix::libc::S_IFMT,
        nix::libc::S_IFSOCK,
        "fd {fd} is the connection's socket"
    );
    assert_ne!(h.as_raw_fd(), fd, "the pollable fd is a separate eventfd");
}

#[test]
fn test_bound_ports_lists_what_the_handle_bound() {
    let connector = Connector::new_local().unwrap();
    let ts = Toolstack::open(&connector).unwrap();
    let mut dom0 = MockEventChannel::open(&connector, 0).unwrap();
    let mut bound = BTreeSet::new();
    for _ in 0..2 {
        let rec = ts.create_domain().unwrap();
        let p = dom0
            .bind_interdomain(rec.info.domid, Port::new(rec.store_port))
            .unwrap();
        bound.insert(p.get());
    }
    let listed: BTreeSet<u32> = dom0.bound_ports().map(|p| p.get()).collect();
    assert_eq!(listed, bound);
}

#[test]
fn test_the_pollable_fd_wakes_for_an_event_and_is_drained_by_reading_it() {
    let connector = Connector::new_local().unwrap();
    let (_ts, mut guest, mut dom0, port) = bound_pair(&connector);
    let fd = dom0.as_raw_fd();
    assert!(!readable(fd), "nothing happened yet");
    guest.notify().unwrap();
    assert!(readable(fd), "the guest's notification wakes a poller");
    assert_eq!(pending(&mut dom0), vec![port]);
    assert!(!readable(fd), "reading the events drains the wake-up");
}

#[test]
fn test_an_event_is_reported_once_and_again_only_if_it_came_while_masked() {
    let connector = Connector::new_local().unwrap();
    let (_ts, mut guest, mut dom0, port) = bound_pair(&connector);
    let fd = dom0.as_raw_fd();

    // One notification: reported once; unmasking with nothing pending
    // neither wakes the poller nor reports it again.
    guest.notify().unwrap();
    assert_eq!(pending(&mut dom0), vec![port]);
    dom0.unmask(&[port]).unwrap();
    assert!(!readable(fd), "no event came while masked");
    assert_eq!(pending(&mut dom0), vec![], "reported once");

    // A notification while masked: no wake-up then, one on unmask.
    guest.notify().unwrap();
    assert_eq!(pending(&mut dom0), vec![port]);
    guest.notify().unwrap();
    assert!(!readable(fd), "a masked port does not wake the poller");
    assert_eq!(pending(&mut dom0), vec![], "masked: not reported yet");
    dom0.unmask(&[port]).unwrap();
    assert!(readable(fd), "unmasking re-signals the event that came");
    assert_eq!(pending(&mut dom0), vec![port]);
    dom0.unmask(&[port]).unwrap();
    assert_eq!(pending(&mut dom0), vec![]);
}

#[test]
fn test_errors_keep_their_kind_across_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerThread::start(dir.path().join("hv.sock")).unwrap();
    let remote = Connector::remote(server.path());
    let ts = Toolstack::open(&remote).unwrap();
    let a = ts.create_domain().unwrap();
    let b = ts.create_domain().unwrap();
    let code = |e: Error| match e {
        Error::Remote { code, message } => (code, message),
        other => panic!("not a remote error: {other:?}"),
    };
    // No such domain.
    let (gone, gone_msg) = code(ts.destroy(60000).unwrap_err());
    // Domain a maps b's xenstore page, which b granted to dom0 only.
    let as_a = MockPageMapper::open(&remote, a.info.domid).unwrap();
    let err = as_a
        .map_grant_mock(b.info.domid, GNTTAB_RESERVED_XENSTORE)
        .unwrap_err();
    let (denied, denied_msg) = code(err);
    // A port dom0 never had.
    let (port, port_msg) = code(
        remote
            .connect(0)
            .unwrap()
            .call_ok(&mock_xen::proto::Request::Unbind { port: 4000 })
            .unwrap_err(),
    );
    let codes = BTreeSet::from([gone, denied, port]);
    assert_eq!(
        codes.len(),
        3,
        "distinct kinds, distinct codes: {gone_msg} / {denied_msg} / {port_msg}"
    );
    // Locally the same failures are the typed errors the codes stand for.
    let local = Connector::new_local().unwrap();
    let lts = Toolstack::open(&local).unwrap();
    assert!(matches!(lts.destroy(60000), Err(Error::NoSuchDomain(_))));
    assert!(
        PageMapper::map_grant(&as_a, b.info.domid, GNTTAB_RESERVED_XENSTORE).is_err(),
        "the gnttab interface refuses it too"
    );
}

#[test]
fn test_an_event_reaches_only_its_domain_where_port_numbers_repeat() {
    let connector = Connector::new_local().unwrap();
    let ts = Toolstack::open(&connector).unwrap();
    let (a, b) = (ts.create_domain().unwrap(), ts.create_domain().unwrap());
    assert_eq!(a.store_port, b.store_port, "each guest's first port");
    let mut guest_a = Guest::attach(&connector, &a).unwrap();
    let mut guest_b = Guest::attach(&connector, &b).unwrap();
    let mut dom0 = MockEventChannel::open(&connector, 0).unwrap();
    let to_a = dom0
        .bind_interdomain(a.info.domid, Port::new(a.store_port))
        .unwrap();
    let to_b = dom0
        .bind_interdomain(b.info.domid, Port::new(b.store_port))
        .unwrap();
    dom0.notify(to_a).unwrap();
    assert_eq!(pending(guest_b.evtchn()), vec![], "a's event is not b's");
    assert_eq!(pending(guest_a.evtchn()), vec![Port::new(a.store_port)]);
    assert_eq!(pending(&mut dom0), vec![], "nor dom0's");
    guest_b.notify().unwrap();
    assert_eq!(pending(&mut dom0), vec![to_b]);
    assert_eq!(pending(guest_a.evtchn()), vec![]);
}

#[test]
fn test_events_reach_the_domain_in_the_last_slot() {
    let connector = Connector::new_local().unwrap();
    let ts = Toolstack::open(&connector).unwrap();
    let max = mock_xen::hv::MAX_DOMAINS as usize;
    // dom0 holds slot 0; the guests take the others, the last one last.
    let recs: Vec<_> = (1..max).map(|_| ts.create_domain().unwrap()).collect();
    let last = recs.last().unwrap();
    let mut guest = Guest::attach(&connector, last).unwrap();
    assert_eq!(
        guest.evtchn().conn().slot() as usize,
        max - 1,
        "the last guest has the last slot"
    );
    let mut dom0 = MockEventChannel::open(&connector, 0).unwrap();
    let port = dom0
        .bind_interdomain(last.info.domid, Port::new(last.store_port))
        .unwrap();
    // In-process, a notification is in the word when notify returns.
    dom0.notify(port).unwrap();
    assert_eq!(pending(guest.evtchn()), vec![Port::new(last.store_port)]);
    guest.notify().unwrap();
    assert_eq!(pending(&mut dom0), vec![port]);
}

#[test]
fn test_a_guest_may_inspect_and_allocate_in_its_own_domain_only() {
    use mock_xen::proto::{Request, Response};
    let connector = Connector::new_local().unwrap();
    let ts = Toolstack::open(&connector).unwrap();
    let (a, b) = (ts.create_domain().unwrap(), ts.create_domain().unwrap());
    let (da, db) = (a.info.domid, b.info.domid);
    let as_a = connector.connect(da).unwrap();
    let dom0 = connector.connect(0).unwrap();
    let refused = |r: Result<_, Error>| matches!(r, Err(Error::NotPermitted { .. }));

    let own = as_a.call(&Request::DomainRecord { domid: da }).unwrap().0;
    assert!(
        matches!(own, Response::Domain(r) if r.info.domid == da),
        "{own:?}"
    );
    assert!(refused(as_a.call(&Request::DomainRecord { domid: db })));
    let other = dom0.call(&Request::DomainRecord { domid: db }).unwrap().0;
    assert!(
        matches!(other, Response::Domain(r) if r.info.domid == db),
        "{other:?}"
    );

    let own = as_a.call_port(&Request::AllocUnbound {
        domid: da,
        remote: 0,
    });
    assert!(own.is_ok(), "{own:?}");
    assert!(refused(as_a.call(&Request::AllocUnbound {
        domid: db,
        remote: 0
    })));
    assert!(dom0
        .call_port(&Request::AllocUnbound {
            domid: db,
            remote: 0
        })
        .is_ok());
}

#[test]
fn test_a_domain_grants_its_own_frames_only_and_keeps_its_identity() {
    use mock_xen::proto::Request;
    let connector = Connector::new_local().unwrap();
    let ts = Toolstack::open(&connector).unwrap();
    let (a, b) = (ts.create_domain().unwrap(), ts.create_domain().unwrap());
    let (da, db) = (a.info.domid, b.info.domid);
    let as_a = connector.connect(da).unwrap();
    as_a.call_ok(&Request::Grant {
        gref: 5,
        mfn: a.store_mfn,
        to: db,
    })
    .expect("a grants its own page");
    let err = as_a
        .call_ok(&Request::Grant {
            gref: 6,
            mfn: b.store_mfn,
            to: db,
        })
        .unwrap_err();
    assert!(matches!(err, Error::BadFrame { .. }), "{err:?}");
    let as_b = MockPageMapper::open(&connector, db).unwrap();
    as_b.map_grant_mock(da, 5)
        .expect("b maps what a granted it");
    assert!(as_b.map_grant_mock(da, 6).is_err(), "the refused grant");

    // A connection speaks for the domain it said hello as, for good.
    let err = as_a.call(&Request::Hello { domid: db }).unwrap_err();
    assert!(matches!(err, Error::Protocol(_)), "{err:?}");
    as_a.call(&Request::Hello { domid: da })
        .expect("saying hello again as itself is fine");
}

#[test]
fn test_a_dying_domain_takes_no_new_connections_or_mappings() {
    let connector = Connector::new_local().unwrap();
    let ts = Toolstack::open(&connector).unwrap();
    let a = ts.create_domain().unwrap();
    let da = a.info.domid;
    let dom0 = MockPageMapper::open(&connector, 0).unwrap();
    // dom0's mapping keeps the destroyed domain around, dying.
    let _page = dom0.map_grant(da, GNTTAB_RESERVED_XENSTORE).unwrap();
    ts.destroy(da).unwrap();
    let listed = ts.list().unwrap();
    assert!(
        listed.iter().any(|d| d.domid == da && d.dying),
        "{listed:?}"
    );
    let err = connector.connect(da).unwrap_err();
    assert!(matches!(err, Error::NoSuchDomain(d) if d == da), "{err:?}");
    assert!(Guest::attach(&connector, &a).is_err());
    assert!(dom0.map_grant(da, GNTTAB_RESERVED_XENSTORE).is_err());
}

#[test]
fn test_mappings_name_their_frame_and_the_local_xenstore_page_is_the_ring() {
    use gnttab::ForeignPage;
    let connector = Connector::new_local().unwrap();
    let ts = Toolstack::open(&connector).unwrap();
    let recs = [ts.create_domain().unwrap(), ts.create_domain().unwrap()];
    let dom0 = MockPageMapper::open(&connector, 0).unwrap();
    for r in &recs {
        let m = dom0
            .map_grant_mock(r.info.domid, GNTTAB_RESERVED_XENSTORE)
            .unwrap();
        assert_eq!(m.mfn(), r.store_mfn, "grant 1 is the xenstore page");
        // The guest's own view of its xenstore page (`xsd_kva`) is that
        // same ring, and its port is the store port.
        let guest = MockPageMapper::open(&connector, r.info.domid).unwrap();
        let local = guest.map_local_xenstore().unwrap();
        assert_eq!(local.port.get(), r.store_port);
        let msg = format!("from domain {}", r.info.domid);
        let wrote = xenring::GuestEnd::new(local.page.ring())
            .write(msg.as_bytes())
            .unwrap();
        assert_eq!(wrote, msg.len());
        let mut buf = [0u8; 64];
        let n = xenring::ServerEnd::new(m.ring()).read(&mut buf).unwrap();
        assert_eq!(&buf[..n], msg.as_bytes(), "dom0 reads what the guest wrote");
    }
}

#[test]
fn test_domain_info_gets_the_domain_asked_for_with_its_state() {
    use gnttab::{DomainInfoSource, ShutdownReason};
    let connector = Connector::new_local().unwrap();
    let ts = Toolstack::open(&connector).unwrap();
    let (a, b) = (ts.create_domain().unwrap(), ts.create_domain().unwrap());
    ts.shutdown(b.info.domid, mock_xen::toolstack::SHUTDOWN_CRASH)
        .unwrap();
    let mut info = mock_xen::MockDomainInfo::open(&connector, 0).unwrap();
    let got_a = info.get(a.info.domid).unwrap().expect("domain a");
    assert_eq!(got_a.domid, a.info.domid);
    assert_eq!(got_a.shutdown, None);
    assert_eq!(got_a.unique_id, Some(a.info.unique_id));
    let got_b = info.get(b.info.domid).unwrap().expect("domain b");
    assert_eq!(got_b.domid, b.info.domid);
    assert_eq!(got_b.shutdown, Some(ShutdownReason::Crash));
    assert!(!got_b.dying);
    assert_ne!(got_a.handle, got_b.handle, "distinct handles");
    assert_eq!(info.get(999).unwrap(), None);
    let all: BTreeSet<u16> = info.list().unwrap().iter().map(|d| d.domid).collect();
    assert_eq!(all, BTreeSet::from([0, a.info.domid, b.info.domid]));
}

#[test]
fn test_a_server_replaces_a_stale_socket_file_but_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let stale = dir.path().join("stale.sock");
    std::fs::write(&stale, b"left over").unwrap();
    let server = mock_xen::Server::bind(&stale).expect("a stale file is replaced");
    assert_eq!(server.path(), stale.as_path());
    let meta = std::fs::metadata(&stale).unwrap();
    assert!(
        std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()),
        "a socket now"
    );
    let busy = dir.path().join("a-directory");
    std::fs::create_dir(&busy).unwrap();
    std::fs::write(busy.join("inside"), b"x").unwrap();
    let err = mock_xen::Server::bind(&busy).unwrap_err();
    assert!(matches!(err, Error::Io(_)), "removing it failed: {err:?}");
    assert!(busy.join("inside").exists(), "and it is left alone");
}

#[test]
fn test_ports_are_bound_claimed_and_unbound_only_by_whom_they_allow() {
    use mock_xen::proto::Request;
    let connector = Connector::new_local().unwrap();
    let ts = Toolstack::open(&connector).unwrap();
    let (a, b) = (ts.create_domain().unwrap(), ts.create_domain().unwrap());
    let store = Port::new(a.store_port);
    // a's store port waits for dom0: b may not bind it, dom0 may.
    let mut as_b = MockEventChannel::open(&connector, b.info.domid).unwrap();
    assert!(as_b.bind_interdomain(a.info.domid, store).is_err());
    let mut dom0 = MockEventChannel::open(&connector, 0).unwrap();
    let port = dom0.bind_interdomain(a.info.domid, store).unwrap();
    // Another dom0 handle may not unbind what this one bound.
    let mut other = MockEventChannel::open(&connector, 0).unwrap();
    assert!(other.unbind(port).is_err(), "not its port");
    dom0.unbind(port).expect("its own port");
    // The guest's store port is claimed once.
    let _first = Guest::attach(&connector, &a).unwrap();
    assert!(Guest::attach(&connector, &a).is_err(), "claimed already");
    // Event-channel requests need an event-channel handle first.
    let plain = connector.connect(0).unwrap();
    assert!(plain
        .call_port(&Request::BindInterdomain {
            remote: b.info.domid,
            remote_port: b.store_port,
        })
        .is_err());
}

#[test]
fn test_a_reallocated_port_starts_without_the_old_event() {
    let connector = Connector::new_local().unwrap();
    let ts = Toolstack::open(&connector).unwrap();
    let (a, b) = (ts.create_domain().unwrap(), ts.create_domain().unwrap());
    let mut guest_a = Guest::attach(&connector, &a).unwrap();
    let mut dom0 = MockEventChannel::open(&connector, 0).unwrap();
    let old = dom0
        .bind_interdomain(a.info.domid, Port::new(a.store_port))
        .unwrap();
    guest_a.notify().unwrap();
    dom0.unbind(old).unwrap();
    let new = dom0
        .bind_interdomain(b.info.domid, Port::new(b.store_port))
        .unwrap();
    assert_eq!(new, old, "the number is reused");
    assert_eq!(
        pending(&mut dom0),
        vec![],
        "a's event does not reach b's port"
    );
}

#[test]
fn test_claiming_a_port_wakes_its_owner_only_for_an_event_that_waited() {
    let connector = Connector::new_local().unwrap();
    let ts = Toolstack::open(&connector).unwrap();
    let (quiet, early) = (ts.create_domain().unwrap(), ts.create_domain().unwrap());
    let mut dom0 = MockEventChannel::open(&connector, 0).unwrap();
    dom0.bind_interdomain(quiet.info.domid, Port::new(quiet.store_port))
        .unwrap();
    let to_early = dom0
        .bind_interdomain(early.info.domid, Port::new(early.store_port))
        .unwrap();
    // dom0 notifies before the guest kernel has claimed its port.
    dom0.notify(to_early).unwrap();

    let mut g = Guest::attach(&connector, &quiet).unwrap();
    assert!(!readable(g.evtchn().as_raw_fd()), "nothing waited");
    assert_eq!(pending(g.evtchn()), vec![]);
    let mut g = Guest::attach(&connector, &early).unwrap();
    assert!(readable(g.evtchn().as_raw_fd()), "the early event wakes it");
    assert_eq!(pending(g.evtchn()), vec![Port::new(early.store_port)]);
}

#[test]
fn test_each_mapping_is_unmapped_once_and_the_last_one_frees_the_domain() {
    use mock_xen::proto::{Request, Response};
    let connector = Connector::new_local().unwrap();
    let ts = Toolstack::open(&connector).unwrap();
    let a = ts.create_domain().unwrap();
    let da = a.info.domid;
    let dom0 = connector.connect(0).unwrap();
    let map = || match dom0
        .call(&Request::MapGrant {
            domid: da,
            gref: GNTTAB_RESERVED_XENSTORE,
        })
        .unwrap()
        .0
    {
        Response::Frame(mfn) => mfn,
        other => panic!("{other:?}"),
    };
    let mfn = map();
    assert_eq!(map(), mfn, "the same frame twice");
    ts.destroy(da).unwrap();
    let listed = |ts: &Toolstack| ts.list().unwrap().iter().any(|d| d.domid == da);
    dom0.call_ok(&Request::Unmap { mfn }).unwrap();
    assert!(listed(&ts), "one mapping left: the domain is still dying");
    dom0.call_ok(&Request::Unmap { mfn }).unwrap();
    assert!(!listed(&ts), "the last mapping gone: so is the domain");
    assert!(
        dom0.call_ok(&Request::Unmap { mfn }).is_err(),
        "a third unmap of two mappings"
    );
}

#[test]
fn test_a_dropped_server_thread_stops_serving_and_removes_its_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hv.sock");
    let server = ServerThread::start(&path).unwrap();
    Toolstack::open(&Connector::remote(&path)).expect("it serves");
    drop(server);
    assert!(!path.exists(), "its socket is removed");
    assert!(
        Toolstack::open(&Connector::remote(&path)).is_err(),
        "nobody serves there any more"
    );
}
