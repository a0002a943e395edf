//! Hostile guests and the domain lifecycle (issue 16, items 2, 7 and 11):
//! what a domain leaves behind when it is released or dies, what the next
//! domain with its domid gets, and what a guest may learn of the others.
//!
//! The hypervisor (mock-xen) runs on a thread of this process, so that a
//! test can create a domain with a given domid (domid reuse, as Xen does
//! once the old domain is gone); the daemon is its own process, reached
//! over its socket (dom0) and over the guests' rings.

use std::process::Command;

use mock_xen::{Connector, DomainRecord, ServerThread, Toolstack};
use tests::{guest_client, reply_text, wait_until, Daemon};
use xenring::{Client, DomId, Error as XsError, Perm, PermKind, XsErrno};

/// The machine: the hypervisor, the daemon on it, dom0's toolstack and a
/// dom0 socket client watching `@releaseDomain`.
struct Machine {
    // Dropped first: the daemon stops before its hypervisor does.
    daemon: Daemon,
    hv: ServerThread,
    connector: Connector,
    ts: Toolstack,
    dom0: Client<std::os::unix::net::UnixStream>,
    _dir: tempfile::TempDir,
}

impl Machine {
    fn start(args: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let hv = ServerThread::start(dir.path().join("mock-xen.sock")).unwrap();
        let socket = hv.path().to_str().unwrap().to_string();
        let mut all = vec!["--mock-xen", socket.as_str()];
        all.extend_from_slice(args);
        let daemon = Daemon::start(dir.path(), &all);
        let connector = Connector::remote(hv.path());
        let ts = Toolstack::open(&connector).unwrap();
        let mut dom0 = daemon.client();
        dom0.watch("@releaseDomain", "rel").unwrap();
        assert_eq!(dom0.next_watch_event().unwrap().path, "@releaseDomain");
        Self {
            daemon,
            hv,
            connector,
            ts,
            dom0,
            _dir: dir,
        }
    }

    /// A new domain with the domid the hypervisor picks.
    fn create(&mut self) -> DomainRecord {
        self.ts.create_domain().unwrap()
    }

    /// A new domain with `domid`, which must be free (the old domain gone).
    fn create_with_id(&mut self, domid: DomId) -> DomainRecord {
        self.hv
            .hypervisor()
            .lock()
            .unwrap()
            .create_domain_with_id(domid, false, 0)
            .unwrap()
    }

    /// What a toolstack does for a new guest: a home it owns, INTRODUCE;
    /// then the guest's client over its ring.
    fn introduce(&mut self, rec: &DomainRecord) -> Client<mock_xen::Guest> {
        let d = rec.info.domid;
        let home = format!("/local/domain/{d}");
        self.dom0.mkdir(0, &home).unwrap();
        self.dom0
            .set_perms(0, &home, &[Perm::new(PermKind::None, d)])
            .unwrap();
        self.ts.introduce(&mut self.dom0, rec).unwrap();
        guest_client(&self.connector, rec)
    }

    /// Waits for dom0's `@releaseDomain` event.
    fn released(&mut self) {
        let ev = self.dom0.next_watch_event().unwrap();
        assert_eq!(
            (ev.path.as_str(), ev.token.as_str()),
            ("@releaseDomain", "rel")
        );
    }

    /// Waits until the hypervisor has forgotten `domid` (nobody maps it).
    fn wait_gone(&self, domid: DomId) {
        wait_until("the domain to be gone from the hypervisor", || {
            self.ts.list().unwrap().iter().all(|d| d.domid != domid)
        });
    }

    /// The number of nodes the daemon holds, from its `memreport`.
    fn nodes(&mut self) -> usize {
        let report = reply_text(&self.dom0.control(&["memreport"]).unwrap());
        report
            .lines()
            .find_map(|l| l.strip_prefix("nodes "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no node count in memreport: {report}"))
    }

    /// Sends `signal` (`STOP`, `CONT`) to the daemon.
    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.daemon.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal}");
    }

    /// Stops the daemon and waits until it is stopped: nothing it does
    /// can then overtake what the test does next.
    fn freeze(&self) {
        self.signal("STOP");
        let stat = format!("/proc/{}/stat", self.daemon.pid());
        wait_until("the daemon to be stopped", || {
            std::fs::read_to_string(&stat)
                .ok()
                .and_then(|s| {
                    s.rsplit(')')
                        .next()
                        .map(|r| r.trim_start().starts_with('T'))
                })
                .unwrap_or(false)
        });
    }
}

fn errno<T: std::fmt::Debug>(r: Result<T, XsError>) -> XsErrno {
    match r {
        Err(XsError::Xs(e)) => e,
        other => panic!("expected an error reply, got {other:?}"),
    }
}

/// Writes `prefix0`, `prefix1`, ... until the node quota says no; returns
/// how many were written.
fn fill(c: &mut Client<mock_xen::Guest>, prefix: &str) -> usize {
    for i in 0.. {
        match c.write(0, &format!("{prefix}{i}"), b"0123456789abcdef") {
            Ok(()) => {}
            Err(XsError::Xs(XsErrno::ENOSPC)) => return i,
            Err(e) => panic!("writing {prefix}{i}: {e}"),
        }
    }
    unreachable!()
}

/// The node quota every test daemon runs with (`-E`).
const NODES: usize = 20;

/// XSA-322/417/483 class: the toolstack releases a domain before its
/// death is seen (a common destroy order; libxl's soft reset releases
/// first too). The domain dies, its domid is reused: the new domain must
/// not read the old one's data, own its nodes, start with its nodes
/// charged, inherit its quota, or be let in by ACL entries that named it.
#[test]
fn test_release_before_death_then_domid_reuse_inherits_nothing() {
    let mut m = Machine::start(&["-E", "20"]);
    // A directory elsewhere that every guest may write, and a dom0 node
    // the old domain was allowed to read.
    m.dom0.write(0, "/shared", b"").unwrap();
    m.dom0
        .set_perms(0, "/shared", &[Perm::new(PermKind::Both, 0)])
        .unwrap();
    let old = m.create();
    let d = old.info.domid;
    m.dom0
        .write(0, "/granted", b"for the old domain only")
        .unwrap();
    m.dom0
        .set_perms(
            0,
            "/granted",
            &[Perm::new(PermKind::None, 0), Perm::new(PermKind::Read, d)],
        )
        .unwrap();
    let mut guest = m.introduce(&old);
    guest
        .write(0, "data/secret", b"the old domain's secret")
        .unwrap();
    guest.write(0, "/shared/old", b"left behind").unwrap();
    let written = fill(&mut guest, "data/k");
    assert_eq!(
        written,
        NODES - 4,
        "home, data, secret and /shared/old count"
    );
    assert_eq!(
        guest.read(0, "/granted").unwrap(),
        b"for the old domain only"
    );
    // The toolstack tightens the old domain's own quota.
    m.dom0.set_quota(Some(d), "nodes", 5).unwrap();
    drop(guest);

    // Released first, then destroyed; the domid comes back.
    m.dom0.release(d).unwrap();
    m.released();
    assert_eq!(
        errno(m.dom0.read(0, "/shared/old")),
        XsErrno::ENOENT,
        "RELEASE cleans up at once, as C does"
    );
    m.ts.destroy(d).unwrap();
    m.wait_gone(d);
    let new = m.create_with_id(d);
    assert_ne!(new.info.unique_id, old.info.unique_id);
    let mut victim = m.introduce(&new);

    assert_eq!(errno(victim.read(0, "data/secret")), XsErrno::ENOENT);
    assert_eq!(errno(victim.read(0, "/shared/old")), XsErrno::ENOENT);
    assert_eq!(errno(victim.read(0, "/granted")), XsErrno::EACCES);
    assert_eq!(
        m.dom0.get_quota(Some(d), Some("nodes")).unwrap(),
        m.dom0.get_quota(None, Some("nodes")).unwrap(),
        "the old domain's own quota is gone"
    );
    assert_eq!(
        fill(&mut victim, "k"),
        NODES - 1,
        "the whole quota but its home: nothing of the old domain is charged"
    );
    assert_eq!(
        m.dom0.directory(0, "/shared").unwrap(),
        Vec::<String>::new()
    );
}

/// libxl's soft reset: RELEASE, the home removed and made again, then
/// INTRODUCE of the same domain (same domid, same unique id) with its
/// new kernel. C frees everything at RELEASE, so the domain starts from
/// nothing: no node of its old life, no entry, no quota of its own.
#[test]
fn test_soft_reset_release_then_introduce_again_starts_clean() {
    let mut m = Machine::start(&["-E", "20"]);
    m.dom0.write(0, "/shared", b"").unwrap();
    m.dom0
        .set_perms(0, "/shared", &[Perm::new(PermKind::Both, 0)])
        .unwrap();
    let rec = m.create();
    let d = rec.info.domid;
    m.dom0.write(0, "/granted", b"for its old life").unwrap();
    m.dom0
        .set_perms(
            0,
            "/granted",
            &[Perm::new(PermKind::None, 0), Perm::new(PermKind::Read, d)],
        )
        .unwrap();
    let mut guest = m.introduce(&rec);
    guest.write(0, "/shared/old", b"left behind").unwrap();
    let written = fill(&mut guest, "/shared/k");
    assert_eq!(written, NODES - 2, "its home and /shared/old count");
    m.dom0.set_quota(Some(d), "nodes", 3).unwrap();

    m.dom0.release(d).unwrap();
    m.released();
    m.dom0.rm(0, &format!("/local/domain/{d}")).unwrap();
    // The same domain (its store port kept) is introduced again.
    let home = format!("/local/domain/{d}");
    m.dom0.mkdir(0, &home).unwrap();
    m.dom0
        .set_perms(0, &home, &[Perm::new(PermKind::None, d)])
        .unwrap();
    m.ts.introduce(&mut m.dom0, &rec).unwrap();
    let mut reset = guest;
    assert_eq!(errno(reset.read(0, "/shared/old")), XsErrno::ENOENT);
    assert_eq!(errno(reset.read(0, "/granted")), XsErrno::EACCES);
    assert_eq!(
        m.dom0.directory(0, "/shared").unwrap(),
        Vec::<String>::new()
    );
    assert_eq!(fill(&mut reset, "k"), NODES - 1, "its whole quota again");
}

/// The unique id: a released domain that owns nodes again (what a
/// toolstack gives it after RELEASE, as a soft reset does) dies and its
/// domid is reused before the daemon looks. The domain it then finds
/// under that domid is alive and well — but not the one it knew, so the
/// nodes go and the new domain does not get them.
#[test]
fn test_domid_reused_before_the_death_is_seen_known_by_unique_id() {
    let mut m = Machine::start(&["-E", "20"]);
    let old = m.create();
    let d = old.info.domid;
    let guest = m.introduce(&old);
    drop(guest);
    m.dom0.release(d).unwrap();
    m.released();
    // The toolstack gives the (still living) domain a home and a node
    // elsewhere again.
    let home = format!("/local/domain/{d}");
    let elsewhere = format!("/vm-of-{d}");
    for path in [&home, &elsewhere] {
        m.dom0.write(0, path, b"given after release").unwrap();
        m.dom0
            .set_perms(0, path, &[Perm::new(PermKind::None, d)])
            .unwrap();
    }
    let before = m.nodes();

    // The domain dies and its domid is taken again while the daemon is
    // stopped: when it next looks, the domid is alive.
    m.freeze();
    m.ts.destroy(d).unwrap();
    m.wait_gone(d);
    let new = m.create_with_id(d);
    assert_ne!(new.info.unique_id, old.info.unique_id);
    m.signal("CONT");

    wait_until("the dead domain's nodes to go", || {
        matches!(
            m.dom0.read(0, &elsewhere),
            Err(XsError::Xs(XsErrno::ENOENT))
        )
    });
    assert_eq!(errno(m.dom0.read(0, &home)), XsErrno::ENOENT);
    assert_eq!(m.nodes(), before - 2);
    let mut victim = m.introduce(&new);
    assert_eq!(fill(&mut victim, "k"), NODES - 1);
}

/// A released domain lives on; what the toolstack gives it afterwards
/// goes when it dies, though it has no ring: the daemon asks the
/// hypervisor about every domain that owns nodes, not only the introduced.
#[test]
fn test_released_domain_loses_what_it_was_given_since_when_it_dies() {
    let mut m = Machine::start(&[]);
    let rec = m.create();
    let d = rec.info.domid;
    drop(m.introduce(&rec));
    m.dom0.release(d).unwrap();
    m.released();
    let given = format!("/vm-of-{d}");
    m.dom0.write(0, &given, b"given after release").unwrap();
    m.dom0
        .set_perms(0, &given, &[Perm::new(PermKind::None, d)])
        .unwrap();
    let before = m.nodes();
    m.ts.destroy(d).unwrap();
    wait_until("the dead domain's node to go", || {
        matches!(m.dom0.read(0, &given), Err(XsError::Xs(XsErrno::ENOENT)))
    });
    assert_eq!(m.nodes(), before - 1);
}

/// XSA-419: a guest allowed to write outside its home fills its quota
/// there, and reboots (a new domain each time). What it wrote goes with
/// each death — the watches on it fire — so the store does not grow.
#[test]
fn test_guest_writing_outside_its_home_leaks_nothing_across_reboots() {
    let mut m = Machine::start(&["-E", "20"]);
    m.dom0.write(0, "/shared", b"").unwrap();
    m.dom0
        .set_perms(0, "/shared", &[Perm::new(PermKind::Both, 0)])
        .unwrap();
    m.dom0.watch("/shared", "sh").unwrap();
    assert_eq!(m.dom0.next_watch_event().unwrap().path, "/shared");
    m.dom0.mkdir(0, "/local/domain").unwrap();
    let baseline = m.nodes();
    for boot in 0..3 {
        let rec = m.create();
        let d = rec.info.domid;
        let mut guest = m.introduce(&rec);
        let written = fill(&mut guest, &format!("/shared/{d}-"));
        assert_eq!(written, NODES - 1, "boot {boot}: all but its home");
        // Dom0 saw each write.
        for _ in 0..written {
            assert_eq!(m.dom0.next_watch_event().unwrap().token, "sh");
        }
        drop(guest);
        m.ts.destroy(d).unwrap();
        // Each removed node is told to /shared's watcher, as an RM does,
        // then @releaseDomain fires (C's order).
        let mut removed: Vec<String> = (0..written)
            .map(|_| m.dom0.next_watch_event().unwrap().path)
            .collect();
        removed.sort();
        let mut want: Vec<String> = (0..written).map(|i| format!("/shared/{d}-{i}")).collect();
        want.sort();
        assert_eq!(removed, want, "boot {boot}");
        m.released();
        assert_eq!(
            m.dom0.directory(0, "/shared").unwrap(),
            Vec::<String>::new(),
            "boot {boot}"
        );
        assert_eq!(
            m.nodes(),
            baseline,
            "boot {boot}: the store is back as it was"
        );
    }
}

/// `--keep-orphans` (C's `-K`) keeps the old behaviour: the nodes stay,
/// given to dom0, with no entry naming the dead domain.
#[test]
fn test_keep_orphans_gives_a_dead_guests_nodes_to_dom0() {
    let mut m = Machine::start(&["-E", "20", "--keep-orphans"]);
    m.dom0.write(0, "/shared", b"").unwrap();
    m.dom0
        .set_perms(0, "/shared", &[Perm::new(PermKind::Both, 0)])
        .unwrap();
    let rec = m.create();
    let d = rec.info.domid;
    let mut guest = m.introduce(&rec);
    guest.write(0, "/shared/kept", b"v").unwrap();
    drop(guest);
    m.ts.destroy(d).unwrap();
    m.released();
    wait_until("the dead guest's home to go", || {
        matches!(
            m.dom0.read(0, &format!("/local/domain/{d}")),
            Err(XsError::Xs(XsErrno::ENOENT))
        )
    });
    assert_eq!(m.dom0.read(0, "/shared/kept").unwrap(), b"v");
    assert_eq!(
        m.dom0.get_perms(0, "/shared/kept").unwrap(),
        [Perm::new(PermKind::Both, 0)],
        "owned by dom0 now; the dead domain's entry dropped"
    );
}

/// IS_DOMAIN_INTRODUCED is privileged (C, oxenstored): a guest cannot
/// probe which domids are alive; dom0 can.
#[test]
fn test_guest_cannot_ask_which_domains_are_introduced() {
    let mut m = Machine::start(&[]);
    let a = m.create();
    let b = m.create();
    let mut prober = m.introduce(&a);
    let _victim = m.introduce(&b);
    for domid in [b.info.domid, a.info.domid, 0, 999] {
        assert_eq!(
            errno(prober.is_domain_introduced(domid)),
            XsErrno::EACCES,
            "domain {domid}"
        );
    }
    assert!(m.dom0.is_domain_introduced(b.info.domid).unwrap());
    assert!(!m.dom0.is_domain_introduced(999).unwrap());
    // The guest is still served.
    prober.write(0, "data/ok", b"1").unwrap();
}

/// Only a domain that was seen to exist can be seen to die: nodes a
/// toolstack gave to a domid that no hypervisor listing ever showed (a
/// domain not created yet, a test population) stay when another domain's
/// death makes the daemon look at every domain it knows.
#[test]
fn test_nodes_of_a_domid_never_seen_survive_another_domains_death() {
    let mut m = Machine::start(&[]);
    m.dom0.write(0, "/pre/77", b"kept").unwrap();
    m.dom0
        .set_perms(0, "/pre/77", &[Perm::new(PermKind::None, 77)])
        .unwrap();
    let rec = m.create();
    let d = rec.info.domid;
    assert_ne!(d, 77);
    let guest = m.introduce(&rec);
    drop(guest);
    m.ts.destroy(d).unwrap();
    m.released();
    assert_eq!(m.dom0.read(0, "/pre/77").unwrap(), b"kept");
}
