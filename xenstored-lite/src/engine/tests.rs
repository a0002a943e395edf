//! Engine tests, one group per concern, named
//! `test_<thing>_<condition>_<outcome>`.

use std::collections::BTreeMap;

use xenring::codec::{build_args, build_path_value, Message};
use xenring::{DomId, MsgType, XsErrno};

use super::*;

const SOCK: ConnId = 1;

/// Drives an engine the way the I/O shell does, collecting replies and
/// watch events per connection.
struct H {
    e: Engine,
    req_id: u32,
    events: BTreeMap<ConnId, Vec<(String, String)>>,
}

type R = Result<Vec<u8>, XsErrno>;

impl H {
    fn new() -> Self {
        Self::with(Config::default())
    }

    fn with(config: Config) -> Self {
        let mut e = Engine::new(config);
        e.handle(Input::Connect {
            conn: SOCK,
            kind: ConnKind::Socket,
        });
        Self {
            e,
            req_id: 0,
            events: BTreeMap::new(),
        }
    }

    /// Introduces `domid`; its ring is connection 100 + domid.
    fn dom(&mut self, domid: DomId) -> ConnId {
        let ring = 100 + ConnId::from(domid);
        let d = domid.to_string();
        let msg = Message::new(
            MsgType::Introduce,
            99,
            0,
            build_args(&[d.as_bytes(), b"4660", b"1"]),
        )
        .unwrap();
        self.e.handle(Input::Request {
            conn: SOCK,
            msg: &msg,
        });
        let actions = self.e.take_actions();
        let Some(Action::Introduce { token, .. }) = actions.first() else {
            panic!("no introduce action: {actions:?}");
        };
        self.e.handle(Input::Introduced {
            token: *token,
            result: Ok(ring),
        });
        let reply = self.drain_reply(SOCK);
        assert_eq!(reply.payload, b"OK\0");
        ring
    }

    fn drain_reply(&mut self, conn: ConnId) -> Message {
        loop {
            let m = self.e.pop_output(conn).expect("a reply is queued");
            if m.header.msg_type == MsgType::WatchEvent.raw() {
                self.note_event(conn, &m);
            } else {
                return m;
            }
        }
    }

    fn note_event(&mut self, conn: ConnId, m: &Message) {
        let mut args = xenring::codec::split_args(&m.payload);
        let p = String::from_utf8_lossy(args.next().unwrap()).into_owned();
        let t = String::from_utf8_lossy(args.next().unwrap()).into_owned();
        self.events.entry(conn).or_default().push((p, t));
    }

    fn raw(&mut self, conn: ConnId, ty: u32, tx: u32, payload: Vec<u8>) -> R {
        self.req_id += 1;
        let msg = Message::with_raw_type(ty, self.req_id, tx, payload).unwrap();
        self.e.handle(Input::Request { conn, msg: &msg });
        let reply = self.drain_reply(conn);
        assert_eq!(reply.header.req_id, self.req_id, "replies in order");
        assert_eq!(reply.header.tx_id, tx);
        if reply.header.msg_type == MsgType::Error.raw() {
            Err(XsErrno::from_wire(&reply.payload).expect("a known error name"))
        } else {
            assert_eq!(reply.header.msg_type, ty);
            Ok(reply.payload)
        }
    }

    fn req(&mut self, conn: ConnId, ty: MsgType, tx: u32, args: &[&str]) -> R {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        self.raw(conn, ty.raw(), tx, build_args(&args))
    }

    fn write(&mut self, conn: ConnId, tx: u32, path: &str, value: &str) -> R {
        self.raw(
            conn,
            MsgType::Write.raw(),
            tx,
            build_path_value(path.as_bytes(), value.as_bytes()),
        )
    }

    fn read(&mut self, conn: ConnId, tx: u32, path: &str) -> R {
        self.req(conn, MsgType::Read, tx, &[path])
    }

    fn events(&mut self, conn: ConnId) -> Vec<(String, String)> {
        while let Some(m) = self.e.pop_output(conn) {
            assert_eq!(
                m.header.msg_type,
                MsgType::WatchEvent.raw(),
                "only events remain"
            );
            self.note_event(conn, &m);
        }
        self.events.remove(&conn).unwrap_or_default()
    }

    fn ev(path: &str, token: &str) -> (String, String) {
        (path.to_string(), token.to_string())
    }

    fn tx_start(&mut self, conn: ConnId) -> u32 {
        let id = self.req(conn, MsgType::TransactionStart, 0, &[""]).unwrap();
        String::from_utf8(id[..id.len() - 1].to_vec())
            .unwrap()
            .parse()
            .unwrap()
    }

    fn tx_end(&mut self, conn: ConnId, tx: u32, commit: bool) -> R {
        self.req(
            conn,
            MsgType::TransactionEnd,
            tx,
            &[if commit { "T" } else { "F" }],
        )
    }

    fn perms(&mut self, conn: ConnId, path: &str, perms: &[&str]) -> R {
        let mut args = vec![path];
        args.extend_from_slice(perms);
        self.req(conn, MsgType::SetPerms, 0, &args)
    }

    fn check(&self) {
        assert_eq!(self.e.check(), Vec::<String>::new());
    }
}

fn ok() -> R {
    Ok(b"OK\0".to_vec())
}

// ---- store requests ---------------------------------------------------------

mod requests {
    use super::*;

    #[test]
    fn test_write_missing_parents_created_and_readable() {
        let mut h = H::new();
        assert_eq!(h.write(SOCK, 0, "/a/b/c", "v"), ok());
        assert_eq!(h.read(SOCK, 0, "/a/b/c"), Ok(b"v".to_vec()));
        assert_eq!(h.read(SOCK, 0, "/a/b"), Ok(b"".to_vec()));
        assert_eq!(
            h.req(SOCK, MsgType::Directory, 0, &["/a"]),
            Ok(b"b\0".to_vec())
        );
        h.check();
    }

    #[test]
    fn test_store_requests_table() {
        let mut h = H::new();
        h.write(SOCK, 0, "/t/x", "1").unwrap();
        let cases: &[(MsgType, &[&str], R)] = &[
            (MsgType::Read, &["/t/x"], Ok(b"1".to_vec())),
            (MsgType::Read, &["/t/nope"], Err(XsErrno::ENOENT)),
            (MsgType::Read, &["/t//x"], Err(XsErrno::EINVAL)),
            (MsgType::Read, &["relative"], Err(XsErrno::ENOENT)), // dom0's home, like C
            (MsgType::Read, &["/t/x", "extra"], Err(XsErrno::EINVAL)),
            (MsgType::Mkdir, &["/t/x"], ok()),
            (MsgType::Read, &["/t/x"], Ok(b"1".to_vec())),
            (MsgType::Mkdir, &["/t/d/e"], ok()),
            (MsgType::Directory, &["/t"], Ok(b"d\0x\0".to_vec())),
            (MsgType::Rm, &["/t/d"], ok()),
            (MsgType::Rm, &["/t/d"], ok()),
            (MsgType::Rm, &["/t/d/e"], Err(XsErrno::ENOENT)),
            (MsgType::Rm, &["/"], Err(XsErrno::EINVAL)),
            (MsgType::GetPerms, &["/t/x"], Ok(b"n0\0".to_vec())),
            (
                MsgType::GetDomainPath,
                &["7"],
                Ok(b"/local/domain/7\0".to_vec()),
            ),
            (MsgType::GetDomainPath, &["x"], Err(XsErrno::EINVAL)),
            (MsgType::IsDomainIntroduced, &["7"], Ok(b"F\0".to_vec())),
            (MsgType::IsDomainIntroduced, &["0"], Ok(b"T\0".to_vec())),
        ];
        for (ty, args, want) in cases {
            assert_eq!(&h.req(SOCK, *ty, 0, args), want, "{ty} {args:?}");
        }
        h.check();
    }

    #[test]
    fn test_unknown_and_retired_types_get_enosys() {
        let mut h = H::new();
        for ty in [
            20u32,
            27,
            999,
            MsgType::WatchEvent.raw(),
            MsgType::Error.raw(),
        ] {
            assert_eq!(
                h.raw(SOCK, ty, 0, b"x\0".to_vec()),
                Err(XsErrno::ENOSYS),
                "type {ty}"
            );
        }
    }

    #[test]
    fn test_directory_over_payload_max_gives_e2big_and_part_pages_through() {
        let mut h = H::new();
        let mut names = Vec::new();
        for i in 0..400 {
            let name = format!("child-with-a-long-name-{i:04}");
            h.req(SOCK, MsgType::Mkdir, 0, &[&format!("/big/{name}")])
                .unwrap();
            names.push(name);
        }
        names.sort();
        assert_eq!(
            h.req(SOCK, MsgType::Directory, 0, &["/big"]),
            Err(XsErrno::E2BIG)
        );
        let mut got: Vec<String> = Vec::new();
        let mut offset = 0usize;
        let mut gen = None;
        loop {
            let reply = h
                .req(
                    SOCK,
                    MsgType::DirectoryPart,
                    0,
                    &["/big", &offset.to_string()],
                )
                .unwrap();
            assert!(reply.len() <= 4096);
            let parts: Vec<&[u8]> = reply.split(|&b| b == 0).collect();
            let g = String::from_utf8(parts[0].to_vec()).unwrap();
            assert_eq!(
                *gen.get_or_insert(g.clone()),
                g,
                "generation stable while unchanged"
            );
            let chunk: Vec<String> = parts[1..]
                .iter()
                .take_while(|p| !p.is_empty())
                .map(|p| String::from_utf8(p.to_vec()).unwrap())
                .collect();
            if chunk.is_empty() {
                break;
            }
            offset += chunk.iter().map(|c| c.len() + 1).sum::<usize>();
            got.extend(chunk);
        }
        assert_eq!(got, names);
    }
}

// ---- permissions ------------------------------------------------------------

mod permissions {
    use super::*;

    #[test]
    fn test_perms_new_node_inherits_acl_with_creator_as_owner() {
        let mut h = H::new();
        let d5 = h.dom(5);
        h.req(SOCK, MsgType::Mkdir, 0, &["/local/domain/5"])
            .unwrap();
        h.perms(SOCK, "/local/domain/5", &["n0", "b5"]).unwrap();
        assert_eq!(h.write(d5, 0, "data/x", "1"), ok());
        assert_eq!(
            h.req(SOCK, MsgType::GetPerms, 0, &["/local/domain/5/data/x"]),
            Ok(b"n5\0b5\0".to_vec())
        );
        // Relative paths resolve below the domain's home.
        assert_eq!(h.read(d5, 0, "data/x"), Ok(b"1".to_vec()));
        h.check();
    }

    #[test]
    fn test_perms_privileged_creator_keeps_parent_owner() {
        // What toolstacks rely on: dom0 writes into a guest's home and the
        // guest reads it (found on real Xen: the test guest polls data/ack).
        let mut h = H::new();
        let d5 = h.dom(5);
        h.req(SOCK, MsgType::Mkdir, 0, &["/local/domain/5"])
            .unwrap();
        h.perms(SOCK, "/local/domain/5", &["n5"]).unwrap();
        h.write(SOCK, 0, "/local/domain/5/data/ack", "ok").unwrap();
        assert_eq!(
            h.req(SOCK, MsgType::GetPerms, 0, &["/local/domain/5/data/ack"]),
            Ok(b"n5\0".to_vec())
        );
        assert_eq!(h.read(d5, 0, "data/ack"), Ok(b"ok".to_vec()));
    }

    #[test]
    fn test_perms_unreadable_node_hides_existence() {
        let mut h = H::new();
        let d5 = h.dom(5);
        h.write(SOCK, 0, "/secret/k", "v").unwrap();
        h.write(SOCK, 0, "/open/k", "v").unwrap();
        h.perms(SOCK, "/open", &["r0"]).unwrap();
        h.perms(SOCK, "/open/k", &["n0"]).unwrap();
        let cases: &[(&str, R)] = &[
            ("/secret/k", Err(XsErrno::EACCES)),
            ("/secret/missing", Err(XsErrno::EACCES)), // parent unreadable: same answer
            ("/open/k", Err(XsErrno::EACCES)),
            ("/open/missing", Err(XsErrno::ENOENT)), // parent readable: truly missing
            ("/open", Ok(b"".to_vec())),
        ];
        for (path, want) in cases {
            assert_eq!(&h.read(d5, 0, path), want, "{path}");
        }
    }

    #[test]
    fn test_perms_write_and_ownership_rules() {
        let mut h = H::new();
        let d5 = h.dom(5);
        let d6 = h.dom(6);
        h.write(SOCK, 0, "/shared", "").unwrap();
        h.perms(SOCK, "/shared", &["r0", "b5"]).unwrap();
        assert_eq!(h.write(d6, 0, "/shared/x", "1"), Err(XsErrno::EACCES));
        assert_eq!(h.write(d5, 0, "/shared/x", "1"), ok());
        // 5 owns /shared/x now; 6 may not change its permissions; 5 may, but
        // not give it away.
        assert_eq!(h.perms(d6, "/shared/x", &["n5"]), Err(XsErrno::EACCES));
        assert_eq!(h.perms(d5, "/shared/x", &["n5", "r6"]), ok());
        assert_eq!(h.read(d6, 0, "/shared/x"), Ok(b"1".to_vec()));
        assert_eq!(h.perms(d5, "/shared/x", &["n6"]), Err(XsErrno::EPERM));
        assert_eq!(
            h.perms(SOCK, "/shared/x", &["n6"]),
            ok(),
            "the privileged domain may"
        );
        assert_eq!(h.perms(SOCK, "/shared/x", &["q6"]), Err(XsErrno::EINVAL));
        assert_eq!(h.perms(SOCK, "/shared/x", &[]), Err(XsErrno::EINVAL));
        h.check();
    }

    #[test]
    fn test_perms_set_target_acts_as_target() {
        let mut h = H::new();
        let _d5 = h.dom(5);
        let d7 = h.dom(7);
        h.write(SOCK, 0, "/vm5/x", "1").unwrap();
        h.perms(SOCK, "/vm5", &["n5"]).unwrap();
        h.perms(SOCK, "/vm5/x", &["n5"]).unwrap();
        assert_eq!(h.read(d7, 0, "/vm5/x"), Err(XsErrno::EACCES));
        assert_eq!(h.req(SOCK, MsgType::SetTarget, 0, &["7", "5"]), ok());
        assert_eq!(h.read(d7, 0, "/vm5/x"), Ok(b"1".to_vec()));
        assert_eq!(
            h.req(d7, MsgType::SetTarget, 0, &["7", "5"]),
            Err(XsErrno::EACCES)
        );
    }

    #[test]
    fn test_privileged_only_requests_refused_to_guests() {
        let mut h = H::new();
        let d5 = h.dom(5);
        for (ty, args) in [
            (MsgType::Introduce, &["6", "1", "1"][..]),
            (MsgType::Release, &["5"][..]),
            (MsgType::Resume, &["5"][..]),
            (MsgType::SetTarget, &["5", "6"][..]),
            (MsgType::Control, &["help"][..]),
            (MsgType::SetQuota, &["nodes", "5"][..]),
        ] {
            assert_eq!(h.req(d5, ty, 0, args), Err(XsErrno::EACCES), "{ty}");
        }
    }
}

// ---- watches ----------------------------------------------------------------

mod watches {
    use super::*;

    #[test]
    fn test_watch_fires_once_on_registration_then_on_changes_below() {
        let mut h = H::new();
        assert_eq!(h.req(SOCK, MsgType::Watch, 0, &["/w", "tok"]), ok());
        assert_eq!(h.events(SOCK), vec![H::ev("/w", "tok")]);
        h.write(SOCK, 0, "/w/a/b", "1").unwrap();
        h.write(SOCK, 0, "/other", "1").unwrap();
        h.write(SOCK, 0, "/wx", "1").unwrap();
        assert_eq!(h.events(SOCK), vec![H::ev("/w/a/b", "tok")]);
        assert_eq!(
            h.req(SOCK, MsgType::Watch, 0, &["/w", "tok"]),
            Err(XsErrno::EEXIST)
        );
        assert_eq!(h.req(SOCK, MsgType::Unwatch, 0, &["/w", "tok"]), ok());
        assert_eq!(
            h.req(SOCK, MsgType::Unwatch, 0, &["/w", "tok"]),
            Err(XsErrno::ENOENT)
        );
        h.write(SOCK, 0, "/w/a", "2").unwrap();
        assert!(h.events(SOCK).is_empty());
    }

    #[test]
    fn test_watch_depth_limits_levels() {
        let mut h = H::new();
        h.req(SOCK, MsgType::Watch, 0, &["/d", "t", "1"]).unwrap();
        h.events(SOCK);
        h.write(SOCK, 0, "/d", "").unwrap();
        h.write(SOCK, 0, "/d/a", "").unwrap();
        h.write(SOCK, 0, "/d/a/b", "").unwrap();
        assert_eq!(h.events(SOCK), vec![H::ev("/d", "t"), H::ev("/d/a", "t")]);
    }

    #[test]
    fn test_watch_relative_gives_relative_event_paths() {
        let mut h = H::new();
        let d5 = h.dom(5);
        h.req(SOCK, MsgType::Mkdir, 0, &["/local/domain/5"])
            .unwrap();
        h.perms(SOCK, "/local/domain/5", &["n0", "b5"]).unwrap();
        h.req(d5, MsgType::Watch, 0, &["device", "rel"]).unwrap();
        h.req(d5, MsgType::Watch, 0, &["/local/domain/5/device", "abs"])
            .unwrap();
        h.events(d5);
        h.write(SOCK, 0, "/local/domain/5/device/vif/0", "x")
            .unwrap();
        assert_eq!(
            h.events(d5),
            vec![
                H::ev("device/vif/0", "rel"),
                H::ev("/local/domain/5/device/vif/0", "abs")
            ]
        );
    }

    #[test]
    fn test_watch_rm_fires_watches_on_removed_nodes() {
        let mut h = H::new();
        h.write(SOCK, 0, "/r/a/b", "").unwrap();
        h.req(SOCK, MsgType::Watch, 0, &["/r/a/b", "deep"]).unwrap();
        h.req(SOCK, MsgType::Watch, 0, &["/r", "top"]).unwrap();
        h.events(SOCK);
        h.req(SOCK, MsgType::Rm, 0, &["/r/a"]).unwrap();
        assert_eq!(
            h.events(SOCK),
            vec![H::ev("/r/a", "top"), H::ev("/r/a/b", "deep")]
        );
    }

    #[test]
    fn test_watch_event_needs_read_permission_old_or_new_acl() {
        let mut h = H::new();
        let d5 = h.dom(5);
        h.write(SOCK, 0, "/p/x", "").unwrap();
        h.perms(SOCK, "/p", &["r0"]).unwrap();
        h.perms(SOCK, "/p/x", &["n0"]).unwrap();
        h.req(d5, MsgType::Watch, 0, &["/p", "t"]).unwrap();
        h.events(d5);
        h.write(SOCK, 0, "/p/x", "secret").unwrap();
        assert!(h.events(d5).is_empty(), "5 may not read /p/x");
        h.perms(SOCK, "/p/x", &["n0", "r5"]).unwrap();
        assert_eq!(
            h.events(d5),
            vec![H::ev("/p/x", "t")],
            "readable under the new ACL"
        );
        h.perms(SOCK, "/p/x", &["n0"]).unwrap();
        assert_eq!(
            h.events(d5),
            vec![H::ev("/p/x", "t")],
            "readable under the old ACL"
        );
    }

    #[test]
    fn test_watch_event_never_exceeds_payload_max() {
        let mut h = H::new();
        // 4096 bytes of payload (the token's NUL left out), so the event,
        // path and token each NUL-terminated, would be 4097.
        let mut payload = b"/local/domain/1\0".to_vec();
        payload.extend(std::iter::repeat_n(b'v', 4080));
        assert_eq!(
            h.raw(SOCK, MsgType::Watch.raw(), 0, payload),
            Err(XsErrno::EINVAL),
            "the initial event itself would not fit"
        );
        let token = "t".repeat(4000);
        h.req(SOCK, MsgType::Watch, 0, &["/", &token]).unwrap();
        h.events(SOCK);
        let long_path = format!("/{}", "a".repeat(300));
        h.write(SOCK, 0, &long_path, "").unwrap();
        h.write(SOCK, 0, "/b", "").unwrap();
        // The event for the long path cannot be sent and is dropped (logged);
        // the short one arrives.
        assert_eq!(h.events(SOCK), vec![H::ev("/b", &token)]);
        assert!(h
            .e
            .take_actions()
            .iter()
            .any(|a| matches!(a, Action::Log(l) if l.contains("too long"))));
    }

    #[test]
    fn test_watch_identical_queued_events_deduplicated() {
        let mut h = H::new();
        let d5 = h.dom(5);
        h.write(SOCK, 0, "/q", "").unwrap();
        h.perms(SOCK, "/q", &["r0"]).unwrap();
        h.req(d5, MsgType::Watch, 0, &["/q", "t"]).unwrap();
        h.events(d5);
        // Five changes while the guest reads nothing: one event waits for it.
        for _ in 0..5 {
            h.write(SOCK, 0, "/q", "v").unwrap();
        }
        assert_eq!(h.events(d5), vec![H::ev("/q", "t")]);
        // Once it has taken it, the next change is news again.
        h.write(SOCK, 0, "/q", "w").unwrap();
        assert_eq!(h.events(d5), vec![H::ev("/q", "t")]);
    }

    #[test]
    fn test_watch_undelivered_events_to_guest_expire() {
        let mut h = H::new();
        let d5 = h.dom(5);
        h.write(SOCK, 0, "/e", "").unwrap();
        h.perms(SOCK, "/e", &["r0"]).unwrap();
        h.req(SOCK, MsgType::Watch, 0, &["/e", "dom0"]).unwrap();
        h.req(d5, MsgType::Watch, 0, &["/e", "guest"]).unwrap();
        h.events(SOCK);
        h.events(d5);
        h.e.handle(Input::Time(1_000));
        h.write(SOCK, 0, "/e", "1").unwrap();
        h.e.handle(Input::Time(1_000 + 19_999));
        assert!(h.e.has_output(d5), "not yet");
        h.e.handle(Input::Time(1_000 + 20_000));
        assert!(!h.e.has_output(d5), "expired after 20 s");
        assert_eq!(
            h.events(SOCK),
            vec![H::ev("/e", "dom0")],
            "the privileged domain's do not"
        );
    }

    #[test]
    fn test_watch_special_domain_events_with_depth() {
        let mut h = H::new();
        h.req(SOCK, MsgType::Watch, 0, &["@introduceDomain", "i"])
            .unwrap();
        h.req(SOCK, MsgType::Watch, 0, &["@releaseDomain", "r"])
            .unwrap();
        h.req(SOCK, MsgType::Watch, 0, &["@releaseDomain", "rd", "1"])
            .unwrap();
        h.req(SOCK, MsgType::Watch, 0, &["@releaseDomain/9", "r9"])
            .unwrap();
        h.events(SOCK);
        h.dom(5);
        assert_eq!(h.events(SOCK), vec![H::ev("@introduceDomain", "i")]);
        h.e.handle(Input::DomainState {
            domid: 5,
            shutdown: true,
            dying: false,
        });
        assert_eq!(
            h.events(SOCK),
            vec![
                H::ev("@releaseDomain", "r"),
                H::ev("@releaseDomain/5", "rd")
            ]
        );
        h.e.handle(Input::DomainState {
            domid: 5,
            shutdown: true,
            dying: false,
        });
        assert!(
            h.events(SOCK).is_empty(),
            "one event per shutdown until RESUME"
        );
        h.dom(9);
        h.events(SOCK);
        h.e.handle(Input::DomainState {
            domid: 9,
            shutdown: true,
            dying: true,
        });
        assert_eq!(
            h.events(SOCK),
            vec![
                H::ev("@releaseDomain", "r"),
                H::ev("@releaseDomain/9", "rd"),
                H::ev("@releaseDomain/9", "r9")
            ]
        );
    }

    #[test]
    fn test_reset_watches_drops_watches_and_transactions() {
        let mut h = H::new();
        h.req(SOCK, MsgType::Watch, 0, &["/z", "t"]).unwrap();
        let tx = h.tx_start(SOCK);
        // Sent inside the transaction: its tx id is ignored, and it ends it.
        assert_eq!(h.req(SOCK, MsgType::ResetWatches, tx, &[""]), ok());
        h.events(SOCK);
        h.write(SOCK, 0, "/z", "").unwrap();
        assert!(h.events(SOCK).is_empty());
        assert_eq!(
            h.read(SOCK, tx, "/z"),
            Err(XsErrno::ENOENT),
            "the transaction is gone"
        );
    }
}

// ---- transactions -----------------------------------------------------------

mod transactions {
    use super::*;

    #[test]
    fn test_transaction_isolated_until_commit_and_events_at_commit() {
        let mut h = H::new();
        h.req(SOCK, MsgType::Watch, 0, &["/tx", "t"]).unwrap();
        h.events(SOCK);
        let tx = h.tx_start(SOCK);
        h.write(SOCK, tx, "/tx/a", "1").unwrap();
        assert_eq!(h.read(SOCK, tx, "/tx/a"), Ok(b"1".to_vec()));
        assert_eq!(h.read(SOCK, 0, "/tx/a"), Err(XsErrno::ENOENT));
        assert!(h.events(SOCK).is_empty(), "no event before commit");
        assert_eq!(h.tx_end(SOCK, tx, true), ok());
        assert_eq!(h.read(SOCK, 0, "/tx/a"), Ok(b"1".to_vec()));
        assert_eq!(h.events(SOCK), vec![H::ev("/tx/a", "t")]);
        h.check();
    }

    #[test]
    fn test_transaction_abort_discards() {
        let mut h = H::new();
        let tx = h.tx_start(SOCK);
        h.write(SOCK, tx, "/ab", "1").unwrap();
        assert_eq!(h.tx_end(SOCK, tx, false), ok());
        assert_eq!(h.read(SOCK, 0, "/ab"), Err(XsErrno::ENOENT));
        assert_eq!(h.tx_end(SOCK, tx, true), Err(XsErrno::ENOENT));
    }

    #[test]
    fn test_transaction_changed_read_conflicts_with_eagain() {
        let mut h = H::new();
        h.write(SOCK, 0, "/c", "1").unwrap();
        let tx = h.tx_start(SOCK);
        h.read(SOCK, tx, "/c").unwrap();
        h.write(SOCK, tx, "/d", "x").unwrap();
        h.write(SOCK, 0, "/c", "2").unwrap();
        assert_eq!(h.tx_end(SOCK, tx, true), Err(XsErrno::EAGAIN));
        assert_eq!(
            h.read(SOCK, 0, "/d"),
            Err(XsErrno::ENOENT),
            "nothing of it applied"
        );
    }

    #[test]
    fn test_transaction_writes_under_shared_parent_never_conflict() {
        let mut h = H::new();
        h.req(
            SOCK,
            MsgType::Mkdir,
            0,
            &["/local/domain/0/backend/vbd/51712"],
        )
        .unwrap();
        let conns: Vec<ConnId> = (10..20).collect();
        for &c in &conns {
            h.e.handle(Input::Connect {
                conn: c,
                kind: ConnKind::Socket,
            });
        }
        let txs: Vec<u32> = conns.iter().map(|&c| h.tx_start(c)).collect();
        for (i, (&c, &tx)) in conns.iter().zip(&txs).enumerate() {
            let base = format!("/local/domain/0/backend/vbd/51712/{i}");
            h.write(c, tx, &format!("{base}/state"), "1").unwrap();
            h.write(c, tx, &format!("{base}/frontend-id"), &i.to_string())
                .unwrap();
            h.perms(c, &base, &["n0", &format!("r{i}")])
                .unwrap_or_else(|_| ok().unwrap());
        }
        for (&c, &tx) in conns.iter().zip(&txs) {
            assert_eq!(h.tx_end(c, tx, true), ok());
        }
        assert_eq!(
            h.req(
                SOCK,
                MsgType::Directory,
                0,
                &["/local/domain/0/backend/vbd/51712"]
            )
            .unwrap()
            .split(|&b| b == 0)
            .filter(|s| !s.is_empty())
            .count(),
            10
        );
        h.check();
    }

    #[test]
    fn test_transaction_start_with_tx_id_is_ebusy_and_unknown_id_enoent() {
        let mut h = H::new();
        let tx = h.tx_start(SOCK);
        assert_eq!(
            h.req(SOCK, MsgType::TransactionStart, tx, &[""]),
            Err(XsErrno::EBUSY)
        );
        assert_eq!(h.read(SOCK, 4242, "/"), Err(XsErrno::ENOENT));
        assert_eq!(
            h.req(SOCK, MsgType::TransactionEnd, tx, &["X"]),
            Err(XsErrno::EINVAL)
        );
    }
}

// ---- quotas -----------------------------------------------------------------

mod quotas {
    use super::*;

    #[test]
    fn test_quota_nodes_enospc_changes_nothing() {
        let mut config = Config::default();
        config.quotas.set_hard(QuotaKind::Nodes, 3);
        let mut h = H::with(config);
        let d5 = h.dom(5);
        h.req(SOCK, MsgType::Mkdir, 0, &["/local/domain/5"])
            .unwrap();
        h.perms(SOCK, "/local/domain/5", &["n0", "b5"]).unwrap();
        h.write(d5, 0, "a", "").unwrap();
        h.write(d5, 0, "b", "").unwrap();
        assert_eq!(
            h.write(d5, 0, "c/d", ""),
            Err(XsErrno::ENOSPC),
            "two new nodes would make 4"
        );
        assert_eq!(h.read(d5, 0, "c"), Err(XsErrno::ENOENT));
        h.write(d5, 0, "c", "").unwrap();
        assert_eq!(h.write(d5, 0, "e", ""), Err(XsErrno::ENOSPC));
        for i in 0..10 {
            h.write(SOCK, 0, &format!("/local/domain/5/dom0-{i}"), "")
                .unwrap();
        }
        h.check();
    }

    #[test]
    fn test_quota_table_limits_guest_not_privileged() {
        let mut h = H::new();
        let d5 = h.dom(5);
        h.req(SOCK, MsgType::Mkdir, 0, &["/local/domain/5"])
            .unwrap();
        h.perms(SOCK, "/local/domain/5", &["n0", "b5"]).unwrap();
        let big = "v".repeat(2049);
        assert_eq!(
            h.write(d5, 0, "big", &big),
            Err(XsErrno::ENOSPC),
            "node-size"
        );
        assert_eq!(
            h.write(SOCK, 0, "/local/domain/5/big", &big),
            ok(),
            "privileged exempt"
        );
        assert_eq!(
            h.perms(d5, "/local/domain/5/big", &["n0", "r1"]),
            Err(XsErrno::EACCES),
            "not the owner"
        );
        assert_eq!(
            h.perms(
                d5,
                "/local/domain/5/big",
                &["n0", "r1", "r2", "r3", "r4", "r5"]
            ),
            Err(XsErrno::ENOSPC),
            "C's order: the entry count is checked before the node"
        );
        h.write(d5, 0, "mine", "").unwrap();
        assert_eq!(
            h.perms(
                d5,
                "/local/domain/5/mine",
                &["n5", "r1", "r2", "r3", "r4", "r6"]
            ),
            Err(XsErrno::ENOSPC),
            "node-permissions"
        );
        for i in 0..128 {
            h.req(d5, MsgType::Watch, 0, &[&format!("/w{i}"), "t"])
                .unwrap();
        }
        assert_eq!(
            h.req(d5, MsgType::Watch, 0, &["/w128", "t"]),
            Err(XsErrno::ENOSPC),
            "watches"
        );
        for _ in 0..10 {
            h.tx_start(d5);
        }
        assert_eq!(
            h.req(d5, MsgType::TransactionStart, 0, &[""]),
            Err(XsErrno::ENOSPC),
            "transactions"
        );
    }

    #[test]
    fn test_quota_get_set_global_and_per_domain_zero_unlimited() {
        let mut h = H::new();
        let d5 = h.dom(5);
        assert_eq!(
            h.req(SOCK, MsgType::GetQuota, 0, &["watches"]),
            Ok(b"128\0".to_vec())
        );
        let names = h.req(SOCK, MsgType::GetQuota, 0, &[""]).unwrap();
        assert!(String::from_utf8(names)
            .unwrap()
            .contains("transaction-nodes"));
        assert_eq!(
            h.req(SOCK, MsgType::SetQuota, 0, &["5", "watches", "0"]),
            ok()
        );
        assert_eq!(
            h.req(SOCK, MsgType::GetQuota, 0, &["5", "watches"]),
            Ok(b"0\0".to_vec())
        );
        for i in 0..200 {
            h.req(d5, MsgType::Watch, 0, &[&format!("/w{i}"), "t"])
                .unwrap();
        }
        assert_eq!(
            h.req(SOCK, MsgType::SetQuota, 0, &["bogus", "1"]),
            Err(XsErrno::EINVAL)
        );
    }
}

// ---- domains ----------------------------------------------------------------

mod domains {
    use super::*;

    #[test]
    fn test_domain_introduce_release_and_reintroduce() {
        let mut h = H::new();
        h.dom(5);
        assert_eq!(
            h.req(SOCK, MsgType::IsDomainIntroduced, 0, &["5"]),
            Ok(b"T\0".to_vec())
        );
        assert_eq!(
            h.req(SOCK, MsgType::Introduce, 0, &["5", "4660", "1"]),
            ok(),
            "same again: fine"
        );
        assert_eq!(
            h.req(SOCK, MsgType::Introduce, 0, &["5", "1", "1"]),
            Err(XsErrno::EEXIST)
        );
        assert_eq!(h.req(SOCK, MsgType::Release, 0, &["5"]), ok());
        assert_eq!(
            h.e.take_actions(),
            vec![Action::Release {
                conn: 105,
                domid: 5
            }]
        );
        assert_eq!(
            h.req(SOCK, MsgType::IsDomainIntroduced, 0, &["5"]),
            Ok(b"F\0".to_vec())
        );
        assert_eq!(
            h.req(SOCK, MsgType::Release, 0, &["5"]),
            Err(XsErrno::ENOENT)
        );
        assert_eq!(
            h.req(SOCK, MsgType::Introduce, 0, &["70000", "1", "1"]),
            Err(XsErrno::EINVAL)
        );
    }

    #[test]
    fn test_domain_introduce_failure_reported_to_caller() {
        let mut h = H::new();
        let msg = Message::new(MsgType::Introduce, 7, 0, build_args(&[b"5", b"1", b"1"])).unwrap();
        h.e.handle(Input::Request {
            conn: SOCK,
            msg: &msg,
        });
        let Some(Action::Introduce { token, .. }) = h.e.take_actions().pop() else {
            panic!()
        };
        h.e.handle(Input::Introduced {
            token,
            result: Err(XsErrno::EINVAL),
        });
        let reply = h.drain_reply(SOCK);
        assert_eq!(reply.payload, b"EINVAL\0");
        assert_eq!(reply.header.req_id, 7);
    }

    #[test]
    fn test_domain_death_removes_home_watches_and_acl_entries() {
        let mut h = H::new();
        let d5 = h.dom(5);
        h.req(SOCK, MsgType::Mkdir, 0, &["/local/domain/5"])
            .unwrap();
        h.perms(SOCK, "/local/domain/5", &["n0", "b5"]).unwrap();
        h.write(d5, 0, "data", "x").unwrap();
        h.write(SOCK, 0, "/shared", "").unwrap();
        h.perms(SOCK, "/shared", &["n0", "r5", "r6"]).unwrap();
        h.req(d5, MsgType::Watch, 0, &["/shared", "t"]).unwrap();
        h.req(SOCK, MsgType::Watch, 0, &["/local/domain/5/data", "home"])
            .unwrap();
        h.events(SOCK);
        h.e.handle(Input::DomainState {
            domid: 5,
            shutdown: true,
            dying: true,
        });
        assert_eq!(
            h.e.take_actions(),
            vec![Action::Release {
                conn: 105,
                domid: 5
            }]
        );
        assert_eq!(h.read(SOCK, 0, "/local/domain/5"), Err(XsErrno::ENOENT));
        assert_eq!(h.events(SOCK), vec![H::ev("/local/domain/5/data", "home")]);
        assert_eq!(
            h.req(SOCK, MsgType::GetPerms, 0, &["/shared"]),
            Ok(b"n0\0r6\0".to_vec())
        );
        assert_eq!(h.e.watch_count(), 1, "the dead domain's watch is gone");
        // The domid comes back: nothing of the old domain is inherited.
        let d5 = h.dom(5);
        assert_eq!(h.read(d5, 0, "/shared"), Err(XsErrno::EACCES));
        h.check();
    }

    #[test]
    fn test_output_quota_cuts_off_a_guest_that_never_reads() {
        let mut h = H::with(Config {
            max_queued_bytes: 4096,
            ..Config::default()
        });
        let d5 = h.dom(5);
        let msg = Message::new(MsgType::Read, 1, 0, build_args(&[b"/"])).unwrap();
        for _ in 0..1000 {
            h.e.handle(Input::Request {
                conn: d5,
                msg: &msg,
            });
        }
        let actions = h.e.take_actions();
        assert!(
            matches!(actions.as_slice(), [Action::Kill { conn: 105, .. }]),
            "{actions:?}"
        );
        assert!(h.e.pop_output(d5).is_none());
        // Others carry on.
        assert_eq!(h.read(SOCK, 0, "/"), Ok(b"".to_vec()));
    }

    #[test]
    fn test_outstanding_quota_pauses_reading_from_guest() {
        let mut h = H::new();
        let d5 = h.dom(5);
        let msg = Message::new(MsgType::Read, 1, 0, build_args(&[b"/"])).unwrap();
        for _ in 0..20 {
            assert!(h.e.accepts_requests(d5));
            h.e.handle(Input::Request {
                conn: d5,
                msg: &msg,
            });
        }
        assert!(!h.e.accepts_requests(d5));
        h.e.pop_output(d5);
        assert!(h.e.accepts_requests(d5));
        assert!(h.e.accepts_requests(SOCK));
    }
}

// ---- control ----------------------------------------------------------------

mod control {
    use super::*;

    #[test]
    fn test_control_help_check_quota() {
        let mut h = H::new();
        let help = String::from_utf8(h.req(SOCK, MsgType::Control, 0, &["help"]).unwrap()).unwrap();
        for (name, _) in CONTROL_COMMANDS {
            assert!(help.contains(name), "{name}");
        }
        assert_eq!(
            h.req(SOCK, MsgType::Control, 0, &["check"]),
            Ok(b"OK\n\0".to_vec())
        );
        assert_eq!(
            h.req(SOCK, MsgType::Control, 0, &["quota", "watches", "7"]),
            Ok(b"OK\n\0".to_vec())
        );
        assert_eq!(
            h.req(SOCK, MsgType::GetQuota, 0, &["watches"]),
            Ok(b"7\0".to_vec())
        );
        assert_eq!(
            h.req(SOCK, MsgType::Control, 0, &["no-such"]),
            Err(XsErrno::EINVAL)
        );
    }
}

// ---- determinism ------------------------------------------------------------

mod determinism {
    use super::*;

    #[test]
    fn test_engine_same_inputs_same_outputs() {
        fn run() -> Vec<Vec<u8>> {
            let mut h = H::new();
            let d5 = h.dom(5);
            h.req(SOCK, MsgType::Mkdir, 0, &["/local/domain/5"])
                .unwrap();
            h.perms(SOCK, "/local/domain/5", &["n0", "b5"]).unwrap();
            for i in 0..50 {
                h.req(
                    SOCK,
                    MsgType::Watch,
                    0,
                    &[&format!("/k{}", i % 7), &format!("t{i}")],
                )
                .unwrap();
                h.write(d5, 0, &format!("x{}", i % 5), &i.to_string())
                    .unwrap();
                h.write(SOCK, 0, &format!("/k{}/v", i % 11), "v").unwrap();
            }
            let mut out = Vec::new();
            while let Some(m) = h.e.pop_output(SOCK) {
                out.push(m.to_bytes());
            }
            out.push(h.req(SOCK, MsgType::Directory, 0, &["/"]).unwrap());
            out
        }
        assert_eq!(run(), run());
    }
}
