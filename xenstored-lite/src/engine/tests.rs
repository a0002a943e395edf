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
        self.perms_in(conn, 0, path, perms)
    }

    /// SET_PERMS in transaction `tx` (0: none).
    fn perms_in(&mut self, conn: ConnId, tx: u32, path: &str, perms: &[&str]) -> R {
        let mut args = vec![path];
        args.extend_from_slice(perms);
        self.req(conn, MsgType::SetPerms, tx, &args)
    }

    /// The `Action::Log` lines produced since the last call (other actions
    /// are dropped).
    fn logs(&mut self) -> Vec<String> {
        self.e
            .take_actions()
            .into_iter()
            .filter_map(|a| match a {
                Action::Log(line) => Some(line),
                _ => None,
            })
            .collect()
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

    /// Counters restored from a crash journal's `Counters` event may hold
    /// anything (the crash_journal fuzz target found u64::MAX): they wrap.
    #[test]
    fn test_restored_counters_at_their_maximum_wrap() {
        let mut h = H::new();
        h.e.set_counters(&Counters {
            next_token: u64::MAX,
            replies: u64::MAX,
            next_tx: Vec::new(),
        });
        assert_eq!(h.write(SOCK, 0, "/a", "v"), ok());
        assert_eq!(h.read(SOCK, 0, "/a"), Ok(b"v".to_vec()));
        assert_eq!(h.e.counters().replies, 1);
        h.dom(5);
        assert_eq!(h.e.counters().next_token, 0);
    }

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
            // Creation order, as C lists children.
            (MsgType::Directory, &["/t"], Ok(b"x\0d\0".to_vec())),
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

    /// The target may be the privileged domain, which is never introduced;
    /// any other target must be a known domain.
    #[test]
    fn test_set_target_to_privileged_domain_allowed_unknown_refused() {
        let mut h = H::new();
        h.dom(7);
        assert_eq!(h.req(SOCK, MsgType::SetTarget, 0, &["7", "0"]), ok());
        assert_eq!(
            h.req(SOCK, MsgType::SetTarget, 0, &["7", "9"]),
            Err(XsErrno::ENOENT)
        );
        assert_eq!(
            h.req(SOCK, MsgType::SetTarget, 0, &["9", "0"]),
            Err(XsErrno::ENOENT)
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
            // C and oxenstored: guests may not enumerate domids.
            (MsgType::IsDomainIntroduced, &["5"][..]),
            (MsgType::IsDomainIntroduced, &["0"][..]),
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

    /// WATCH takes a path, a token and an optional depth: other argument
    /// counts are EINVAL; an empty depth means no depth limit.
    #[test]
    fn test_watch_argument_count_and_empty_depth() {
        let mut h = H::new();
        assert_eq!(
            h.req(SOCK, MsgType::Watch, 0, &["/a"]),
            Err(XsErrno::EINVAL)
        );
        assert_eq!(
            h.req(SOCK, MsgType::Watch, 0, &["/a", "t", "1", "x"]),
            Err(XsErrno::EINVAL)
        );
        assert_eq!(h.req(SOCK, MsgType::Watch, 0, &["/a", "t", ""]), ok());
        assert_eq!(h.events(SOCK), [H::ev("/a", "t")]);
        h.write(SOCK, 0, "/a/b/c/d", "v").unwrap();
        assert_eq!(h.events(SOCK), [H::ev("/a/b/c/d", "t")], "no depth limit");
        assert_eq!(h.e.watch_count(), 1);
    }

    /// A watch whose event (path, token, two NULs) fills exactly
    /// `PAYLOAD_MAX` is accepted and its first event sent.
    #[test]
    fn test_watch_whose_event_fills_payload_max_accepted() {
        let mut h = H::new();
        let path = format!("/{}", "p".repeat(99));
        let token = "t".repeat(xenring::wire::PAYLOAD_MAX - path.len() - 2);
        assert_eq!(h.req(SOCK, MsgType::Watch, 0, &[&path, &token]), ok());
        assert_eq!(h.events(SOCK), [H::ev(&path, &token)]);
    }

    /// UNWATCH needs a path and a token: fewer arguments are EINVAL.
    #[test]
    fn test_unwatch_without_token_is_einval() {
        let mut h = H::new();
        h.req(SOCK, MsgType::Watch, 0, &["/a", "t"]).unwrap();
        h.events(SOCK);
        assert_eq!(
            h.req(SOCK, MsgType::Unwatch, 0, &["/a"]),
            Err(XsErrno::EINVAL)
        );
        assert_eq!(
            h.raw(SOCK, MsgType::Unwatch.raw(), 0, vec![]),
            Err(XsErrno::EINVAL)
        );
        assert_eq!(h.req(SOCK, MsgType::Unwatch, 0, &["/a", "t"]), ok());
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

    /// Expiry says how many events it dropped, says nothing when none
    /// were, and the queue's byte count follows what is left.
    #[test]
    fn test_watch_expiry_logs_the_number_dropped() {
        let mut h = H::new();
        let d5 = h.dom(5);
        h.write(SOCK, 0, "/e", "").unwrap();
        h.perms(SOCK, "/e", &["r0"]).unwrap();
        h.req(d5, MsgType::Watch, 0, &["/e", "guest"]).unwrap();
        h.events(d5);
        h.logs();
        h.e.handle(Input::Time(1_000));
        h.write(SOCK, 0, "/e", "1").unwrap();
        h.write(SOCK, 0, "/e/f", "2").unwrap();
        h.e.handle(Input::Time(15_000));
        h.write(SOCK, 0, "/e/g", "3").unwrap();
        assert_eq!(h.logs(), Vec::<String>::new(), "nothing expired yet");
        h.e.handle(Input::Time(1_000 + 20_000));
        assert_eq!(
            h.logs(),
            ["connection 105: 2 watch event(s) not read within 20000 ms dropped"]
        );
        assert_eq!(h.e.queued_messages(d5).count(), 1, "the younger one stays");
        h.e.handle(Input::Time(15_000 + 20_000));
        assert_eq!(
            h.logs(),
            ["connection 105: 1 watch event(s) not read within 20000 ms dropped"]
        );
        // The byte count is back to zero: a reply still fits a tiny quota.
        assert_eq!(h.e.queued_messages(d5).count(), 0);
        assert_eq!(h.read(d5, 0, "/e"), Ok(b"1".to_vec()));
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
            // The node exists in the transaction (the write above made it).
            assert_eq!(
                h.perms_in(c, tx, &base, &["n0", &format!("r{i}")]),
                ok(),
                "SET_PERMS inside transaction {tx}"
            );
            assert_eq!(
                h.req(SOCK, MsgType::GetPerms, 0, &[&base]),
                Err(XsErrno::ENOENT),
                "not visible outside before the commit"
            );
        }
        for (&c, &tx) in conns.iter().zip(&txs) {
            assert_eq!(h.tx_end(c, tx, true), ok());
        }
        for i in 0..conns.len() {
            let base = format!("/local/domain/0/backend/vbd/51712/{i}");
            assert_eq!(
                h.req(SOCK, MsgType::GetPerms, 0, &[&base]),
                Ok(format!("n0\0r{i}\0").into_bytes()),
                "the permissions set in transaction {i} were committed"
            );
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

    /// INTRODUCE needs a domid, a frame and a port.
    #[test]
    fn test_domain_introduce_with_too_few_arguments_is_einval() {
        let mut h = H::new();
        assert_eq!(
            h.req(SOCK, MsgType::Introduce, 0, &["5", "1"]),
            Err(XsErrno::EINVAL)
        );
        assert_eq!(h.e.take_actions().len(), 0, "nothing to map");
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

    /// Guest 5 with traces everywhere: a home with data, nodes of its own
    /// in `/shared` (which dom0 lets it write), an entry on dom0's `/acl`,
    /// a node quota of its own. Dom0 watches `/shared` and `@releaseDomain`.
    fn guest_with_traces(h: &mut H) -> ConnId {
        let d5 = h.dom(5);
        h.req(SOCK, MsgType::Mkdir, 0, &["/local/domain/5"])
            .unwrap();
        h.perms(SOCK, "/local/domain/5", &["n5"]).unwrap();
        h.write(d5, 0, "data", "secret").unwrap();
        h.write(SOCK, 0, "/shared", "").unwrap();
        h.perms(SOCK, "/shared", &["n0", "w5"]).unwrap();
        h.write(d5, 0, "/shared/five", "x").unwrap();
        h.write(d5, 0, "/shared/five/sub", "y").unwrap();
        h.write(SOCK, 0, "/acl", "").unwrap();
        h.perms(SOCK, "/acl", &["n0", "r5"]).unwrap();
        h.req(SOCK, MsgType::SetQuota, 0, &["5", "nodes", "4"])
            .unwrap();
        h.req(SOCK, MsgType::Watch, 0, &["/shared", "sh"]).unwrap();
        h.req(SOCK, MsgType::Watch, 0, &["@releaseDomain", "rel"])
            .unwrap();
        h.events(SOCK);
        d5
    }

    /// Nothing of guest 5 is left: home, nodes, entries, quota, account.
    fn assert_nothing_of_5_left(h: &mut H) {
        assert_eq!(h.read(SOCK, 0, "/local/domain/5"), Err(XsErrno::ENOENT));
        assert_eq!(h.read(SOCK, 0, "/shared/five"), Err(XsErrno::ENOENT));
        assert_eq!(h.read(SOCK, 0, "/shared"), Ok(Vec::new()));
        assert_eq!(
            h.req(SOCK, MsgType::GetPerms, 0, &["/acl"]),
            Ok(b"n0\0".to_vec())
        );
        assert_eq!(
            h.req(SOCK, MsgType::GetQuota, 0, &["5", "nodes"]),
            h.req(SOCK, MsgType::GetQuota, 0, &["nodes"]),
            "its own quota is gone"
        );
        assert_eq!(h.e.store().account(5), store::Account::default());
        assert!(!h.e.known_domains().contains(&5));
        h.check();
    }

    /// XS_RELEASE forgets a domain as its death does (C frees the domain
    /// with its connection): a toolstack that releases first, a soft reset,
    /// a race, all leave nothing behind for the next domain with the domid.
    #[test]
    fn test_domain_release_removes_all_that_death_removes() {
        let mut h = H::new();
        guest_with_traces(&mut h);
        assert_eq!(h.req(SOCK, MsgType::Release, 0, &["5"]), ok());
        assert_eq!(
            h.e.take_actions(),
            vec![Action::Release {
                conn: 105,
                domid: 5
            }]
        );
        assert_eq!(
            h.events(SOCK),
            vec![H::ev("/shared/five", "sh"), H::ev("@releaseDomain", "rel")],
            "the removal's watches, then @releaseDomain, as C fires them"
        );
        assert_nothing_of_5_left(&mut h);
        // libxl's soft reset: the same domain gets a home again and is
        // introduced again; it starts from nothing, as in C.
        h.req(SOCK, MsgType::Mkdir, 0, &["/local/domain/5"])
            .unwrap();
        h.perms(SOCK, "/local/domain/5", &["n5"]).unwrap();
        let d5 = h.dom(5);
        assert_eq!(h.read(d5, 0, "data"), Err(XsErrno::ENOENT));
        assert_eq!(h.read(d5, 0, "/acl"), Err(XsErrno::EACCES));
        for i in 0..10 {
            h.write(d5, 0, &format!("k{i}"), "v").unwrap();
        }
        assert_eq!(h.e.store().account(5).nodes, 11, "the home and k0..k9");
    }

    #[test]
    fn test_domain_death_deletes_its_nodes_outside_its_home() {
        let mut h = H::new();
        guest_with_traces(&mut h);
        let dom0_nodes = h.e.store().account(0).nodes;
        h.e.handle(Input::DomainState {
            domid: 5,
            shutdown: true,
            dying: true,
        });
        assert_eq!(
            h.events(SOCK),
            vec![H::ev("/shared/five", "sh"), H::ev("@releaseDomain", "rel")]
        );
        assert_nothing_of_5_left(&mut h);
        assert_eq!(
            h.e.store().account(0).nodes,
            dom0_nodes,
            "none given to dom0"
        );
    }

    /// A node it owns takes what is below it along, whoever owns that (C's
    /// rm_node); a dom0 node above one of its nodes stays.
    #[test]
    fn test_domain_death_takes_other_owners_nodes_below_its_own() {
        let mut h = H::new();
        let d5 = guest_with_traces(&mut h);
        h.perms(d5, "/shared/five/sub", &["n5", "w6"]).unwrap();
        h.dom(6);
        h.write(106, 0, "/shared/five/sub/six", "").unwrap();
        assert_eq!(h.e.store().account(6).nodes, 1);
        h.e.handle(Input::DomainState {
            domid: 5,
            shutdown: true,
            dying: true,
        });
        assert_eq!(h.e.store().account(6).nodes, 0);
        assert_eq!(h.read(SOCK, 0, "/shared"), Ok(Vec::new()));
        h.check();
    }

    /// `--keep-orphans` (C's `-K`): its nodes outside its home stay, given
    /// to the privileged domain, with no entry naming it.
    #[test]
    fn test_domain_death_with_keep_orphans_gives_its_nodes_to_dom0() {
        let mut h = H::with(Config {
            keep_orphans: true,
            ..Config::default()
        });
        guest_with_traces(&mut h);
        h.e.handle(Input::DomainState {
            domid: 5,
            shutdown: true,
            dying: true,
        });
        assert_eq!(h.events(SOCK), vec![H::ev("@releaseDomain", "rel")]);
        assert_eq!(h.read(SOCK, 0, "/local/domain/5"), Err(XsErrno::ENOENT));
        assert_eq!(h.read(SOCK, 0, "/shared/five/sub"), Ok(b"y".to_vec()));
        for path in ["/shared/five", "/shared/five/sub"] {
            assert_eq!(
                h.req(SOCK, MsgType::GetPerms, 0, &[path]),
                Ok(b"n0\0".to_vec()),
                "{path}"
            );
        }
        assert_eq!(h.e.store().account(5), store::Account::default());
        h.check();
    }

    /// A released domain is still alive; what dom0 gives it afterwards
    /// goes when it dies, without a second `@releaseDomain` (C fires none
    /// for a domain that is not introduced).
    #[test]
    fn test_domain_released_then_dead_loses_what_it_was_given_since() {
        let mut h = H::new();
        h.dom(5);
        assert_eq!(h.req(SOCK, MsgType::Release, 0, &["5"]), ok());
        h.e.take_actions();
        h.write(SOCK, 0, "/vm5", "").unwrap();
        h.perms(SOCK, "/vm5", &["n5"]).unwrap();
        h.req(SOCK, MsgType::Watch, 0, &["@releaseDomain", "rel"])
            .unwrap();
        h.events(SOCK);
        assert_eq!(h.e.known_domains(), BTreeSet::from([5]));
        h.e.handle(Input::DomainState {
            domid: 5,
            shutdown: true,
            dying: true,
        });
        assert_eq!(h.read(SOCK, 0, "/vm5"), Err(XsErrno::ENOENT));
        assert_eq!(h.events(SOCK), vec![]);
        assert_eq!(h.e.take_actions(), vec![]);
        assert!(h.e.known_domains().is_empty());
    }

    /// A device model acting for a domain (SET_TARGET) does not act for
    /// the next domain with that domid.
    #[test]
    fn test_domain_death_ends_the_target_of_its_device_model() {
        let mut h = H::new();
        h.dom(5);
        let d7 = h.dom(7);
        assert_eq!(h.req(SOCK, MsgType::SetTarget, 0, &["7", "5"]), ok());
        h.e.handle(Input::DomainState {
            domid: 5,
            shutdown: true,
            dying: true,
        });
        h.e.take_actions();
        h.dom(5);
        h.write(SOCK, 0, "/vm5", "new").unwrap();
        h.perms(SOCK, "/vm5", &["n5"]).unwrap();
        assert_eq!(h.read(d7, 0, "/vm5"), Err(XsErrno::EACCES));
        assert_eq!(h.e.domain_target(7), None);
    }

    /// The shell asks the hypervisor about these; entries in ACLs alone do
    /// not make a domain known, and the privileged domain never is.
    #[test]
    fn test_known_domains_are_introduced_owners_and_quota_holders() {
        let mut h = H::new();
        h.dom(5);
        h.write(SOCK, 0, "/x", "").unwrap();
        h.perms(SOCK, "/x", &["n7"]).unwrap();
        h.write(SOCK, 0, "/y", "").unwrap();
        h.perms(SOCK, "/y", &["n0", "r8"]).unwrap();
        h.req(SOCK, MsgType::SetQuota, 0, &["9", "nodes", "5"])
            .unwrap();
        assert_eq!(h.e.known_domains(), BTreeSet::from([5, 7, 9]));
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

    /// GET_FEATURE without a domain gives the server's features; SET_FEATURE
    /// records a domain's, which GET_FEATURE then gives back; bits the
    /// server lacks, unknown domains and wrong argument counts are refused.
    #[test]
    fn test_domain_features_set_and_get() {
        let mut h = H::new();
        h.dom(5);
        let server = format!("{SERVER_FEATURES}\0").into_bytes();
        assert_eq!(h.req(SOCK, MsgType::GetFeature, 0, &[""]), Ok(server));
        assert_eq!(
            h.req(SOCK, MsgType::GetFeature, 0, &["5"]),
            Ok(b"0\0".to_vec())
        );
        assert_eq!(h.req(SOCK, MsgType::SetFeature, 0, &["5", "1"]), ok());
        assert_eq!(
            h.req(SOCK, MsgType::GetFeature, 0, &["5"]),
            Ok(b"1\0".to_vec())
        );
        let unknown_bit = (SERVER_FEATURES + 1).next_power_of_two().to_string();
        assert_eq!(
            h.req(SOCK, MsgType::SetFeature, 0, &["5", &unknown_bit]),
            Err(XsErrno::EINVAL)
        );
        assert_eq!(
            h.req(SOCK, MsgType::GetFeature, 0, &["5"]),
            Ok(b"1\0".to_vec()),
            "a refused SET_FEATURE changes nothing"
        );
        assert_eq!(
            h.req(SOCK, MsgType::GetFeature, 0, &["6"]),
            Err(XsErrno::ENOENT)
        );
        assert_eq!(
            h.req(SOCK, MsgType::SetFeature, 0, &["6", "1"]),
            Err(XsErrno::ENOENT)
        );
        assert_eq!(
            h.req(SOCK, MsgType::SetFeature, 0, &["5"]),
            Err(XsErrno::EINVAL)
        );
        assert_eq!(
            h.req(SOCK, MsgType::GetFeature, 0, &["5", "6"]),
            Err(XsErrno::EINVAL)
        );
    }

    /// The bytes one unread reply to a guest's READ of `/` occupies.
    fn one_reply_bytes() -> usize {
        let mut h = H::new();
        let d5 = h.dom(5);
        let msg = Message::new(MsgType::Read, 1, 0, build_args(&[b"/"])).unwrap();
        h.e.handle(Input::Request {
            conn: d5,
            msg: &msg,
        });
        h.e.queued_messages(d5).map(Message::wire_len).sum()
    }

    /// The limit is on bytes *over* `max_queued_bytes`: a queue holding
    /// exactly the limit is kept, one reply more cuts the guest off.
    #[test]
    fn test_output_quota_exactly_at_the_limit_is_kept() {
        let one = one_reply_bytes();
        assert!(one > 0);
        let mut h = H::with(Config {
            max_queued_bytes: 2 * one,
            ..Config::default()
        });
        let d5 = h.dom(5);
        let msg = Message::new(MsgType::Read, 1, 0, build_args(&[b"/"])).unwrap();
        for _ in 0..2 {
            h.e.handle(Input::Request {
                conn: d5,
                msg: &msg,
            });
        }
        assert!(
            !h.e.take_actions()
                .iter()
                .any(|a| matches!(a, Action::Kill { .. })),
            "a queue of exactly the limit is not over it"
        );
        assert_eq!(h.e.queued_messages(d5).count(), 2);
        h.e.handle(Input::Request {
            conn: d5,
            msg: &msg,
        });
        let actions = h.e.take_actions();
        assert!(
            matches!(actions.as_slice(), [Action::Kill { conn: 105, .. }]),
            "{actions:?}"
        );
    }

    /// `max_queued_bytes = 0` means no limit, not a limit of zero bytes.
    #[test]
    fn test_output_quota_zero_is_unlimited() {
        let mut h = H::with(Config {
            max_queued_bytes: 0,
            ..Config::default()
        });
        let d5 = h.dom(5);
        let msg = Message::new(MsgType::Read, 1, 0, build_args(&[b"/"])).unwrap();
        for _ in 0..100 {
            h.e.handle(Input::Request {
                conn: d5,
                msg: &msg,
            });
        }
        let actions = h.e.take_actions();
        assert!(
            !actions.iter().any(|a| matches!(a, Action::Kill { .. })),
            "{actions:?}"
        );
        assert_eq!(h.e.queued_messages(d5).count(), 100);
    }

    /// Closing a connection forgets the INTRODUCE it was waiting on, and
    /// only that one: another connection's pending INTRODUCE still
    /// completes and is answered.
    #[test]
    fn test_domain_close_forgets_only_its_own_pending_introduce() {
        const OTHER: ConnId = 2;
        let mut h = H::new();
        h.e.handle(Input::Connect {
            conn: OTHER,
            kind: ConnKind::Socket,
        });
        let mut tokens = Vec::new();
        for (conn, domid) in [(SOCK, b"5"), (OTHER, b"6")] {
            let msg = Message::new(
                MsgType::Introduce,
                7,
                0,
                build_args(&[domid, b"4660", b"1"]),
            )
            .unwrap();
            h.e.handle(Input::Request { conn, msg: &msg });
            let Some(Action::Introduce { token, .. }) = h.e.take_actions().pop() else {
                panic!("no introduce action")
            };
            tokens.push(token);
        }
        h.e.handle(Input::Disconnect { conn: SOCK });
        assert_eq!(h.e.pending_introduce_domid(tokens[0]), None);
        assert_eq!(h.e.pending_introduce_domid(tokens[1]), Some(6));
        h.e.handle(Input::Introduced {
            token: tokens[1],
            result: Ok(106),
        });
        assert_eq!(h.drain_reply(OTHER).payload, b"OK\0");
        assert_eq!(
            h.req(OTHER, MsgType::IsDomainIntroduced, 0, &["6"]),
            Ok(b"T\0".to_vec())
        );
    }
}

// ---- control ----------------------------------------------------------------

mod control {
    use super::*;

    /// `logfile <file>` answers OK; `memreport <file>` hands the report and
    /// the file to the shell, which writes it and answers.
    #[test]
    fn test_control_logfile_and_memreport_to_a_file() {
        let mut h = H::new();
        assert_eq!(
            h.req(SOCK, MsgType::Control, 0, &["logfile", "/var/log/x"]),
            Ok(b"OK\0".to_vec())
        );
        h.e.take_actions();
        let msg = Message::new(
            MsgType::Control,
            7,
            0,
            build_args(&[b"memreport", b"/tmp/report"]),
        )
        .unwrap();
        h.e.handle(Input::Request {
            conn: SOCK,
            msg: &msg,
        });
        assert!(h.e.pop_output(SOCK).is_none(), "answered by the shell");
        let actions = h.e.take_actions();
        let [Action::MemReport {
            conn, file, report, ..
        }] = actions.as_slice()
        else {
            panic!("{actions:?}");
        };
        assert_eq!((*conn, file.as_str()), (SOCK, "/tmp/report"));
        assert!(report.starts_with("nodes "), "{report}");
    }

    /// Every NUL ends an argument, as in C's `get_strings()`: a payload
    /// ending in two NULs carries an empty last argument.
    #[test]
    fn test_control_empty_last_argument_counts() {
        let mut h = H::new();
        assert_eq!(
            h.raw(SOCK, MsgType::Control.raw(), 0, b"print\0\0".to_vec()),
            Ok(b"OK\0".to_vec())
        );
        assert_eq!(
            h.raw(SOCK, MsgType::Control.raw(), 0, b"print\0".to_vec()),
            Err(XsErrno::EINVAL)
        );
    }

    /// Quota values are read as C's `atoi()` reads them.
    #[test]
    fn test_control_values_read_as_c_atoi() {
        for (text, v) in [
            ("12", 12),
            ("-5", -5),
            ("+7", 7),
            (" \t42x", 42),
            ("", 0),
            ("x1", 0),
            ("-", 0),
            ("99999999999999999999999", i64::MAX),
        ] {
            assert_eq!(crate::engine::control::c_atoi(text), v, "{text:?}");
        }
    }

    /// `quota set` takes any value of at least 1.
    #[test]
    fn test_control_quota_set_one_is_the_least_accepted() {
        let mut h = H::new();
        assert_eq!(
            h.req(SOCK, MsgType::Control, 0, &["quota", "set", "watches", "1"]),
            Ok(b"OK\0".to_vec())
        );
        assert_eq!(
            h.req(SOCK, MsgType::GetQuota, 0, &["watches"]),
            Ok(b"1\0".to_vec())
        );
    }

    /// `quota <domid>` counts the watches, transactions and unread replies
    /// of that domain's connections only.
    #[test]
    fn test_control_quota_of_a_domain_counts_only_its_connections() {
        let mut h = H::new();
        let d5 = h.dom(5);
        let d6 = h.dom(6);
        for d in [5, 6] {
            h.req(SOCK, MsgType::Mkdir, 0, &[&format!("/local/domain/{d}")])
                .unwrap();
            h.perms(SOCK, &format!("/local/domain/{d}"), &[&format!("n{d}")])
                .unwrap();
        }
        h.req(SOCK, MsgType::Watch, 0, &["/s", "0"]).unwrap();
        h.events(SOCK);
        h.req(d5, MsgType::Watch, 0, &["a", "1"]).unwrap();
        h.req(d5, MsgType::Watch, 0, &["b", "2"]).unwrap();
        h.tx_start(d5);
        h.req(d6, MsgType::Watch, 0, &["c", "3"]).unwrap();
        h.tx_start(d6);
        h.tx_start(d6);
        h.tx_start(d6);
        h.events(d5);
        h.events(d6);
        // Two replies to domain 5 left unread.
        let msg = Message::new(MsgType::Read, 1, 0, build_args(&[b"a"])).unwrap();
        for _ in 0..2 {
            h.e.handle(Input::Request {
                conn: d5,
                msg: &msg,
            });
        }
        let usage = |h: &mut H, d: &str| {
            String::from_utf8(h.req(SOCK, MsgType::Control, 0, &["quota", d]).unwrap()).unwrap()
        };
        let five = usage(&mut h, "5");
        assert!(
            five.contains(
                "\nwatches         :        2\ntransactions    :        1\noutstanding     :        2\n"
            ),
            "{five}"
        );
        let six = usage(&mut h, "6");
        assert!(
            six.contains("\nwatches         :        1\ntransactions    :        3\noutstanding     :        0\n"),
            "{six}"
        );
        let zero = usage(&mut h, "0");
        assert!(
            zero.contains("\nwatches         :        1\ntransactions    :        0\n"),
            "{zero}"
        );
    }

    /// `memreport` without a file answers with what the store holds.
    #[test]
    fn test_control_memreport_reports_nodes_watches_connections_domains() {
        let mut h = H::new();
        h.dom(5);
        h.write(SOCK, 0, "/a", "v").unwrap();
        h.req(SOCK, MsgType::Watch, 0, &["/a", "t"]).unwrap();
        let nodes = h.e.store.len();
        let report =
            String::from_utf8(h.req(SOCK, MsgType::Control, 0, &["memreport"]).unwrap()).unwrap();
        assert!(
            report.starts_with(&format!(
                "nodes {nodes}\nwatches 1\nconnections 2\ndomains 1\n"
            )),
            "{report}"
        );
        assert!(report.contains("\ndomain 0: "), "{report}");
    }

    /// `check` reports what is inconsistent, here a watch whose connection
    /// the engine does not know.
    #[test]
    fn test_control_check_reports_a_watch_of_an_unknown_connection() {
        let mut h = H::new();
        h.e.watches.add(watch::Watch {
            conn: 77,
            path: "/x".to_string(),
            abs: "/x".to_string(),
            token: "t".to_string(),
            depth: None,
            relative_prefix: None,
        });
        let problems = h.e.check();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains("unknown connection 77"),
            "{problems:?}"
        );
        let answer = h.req(SOCK, MsgType::Control, 0, &["check"]).unwrap();
        assert_ne!(answer, b"OK\0".to_vec());
    }

    /// `xenstore-control` prints a reply as a C string plus a newline, and
    /// the help text after any EINVAL: these are C xenstored 4.17's bytes.
    #[test]
    fn test_control_help_check_quota() {
        let mut h = H::new();
        assert_eq!(
            h.req(SOCK, MsgType::Control, 0, &["help"]),
            Ok(b"check\t\nlog\ton|off\nlive-update\t[-c <cmdline>] [-F] [-t <timeout>] <file>\n    \
Default timeout is 60 seconds.\nlogfile\t<file>\nmemreport\t[<file>]\nprint\t<string>\n\
quota\t[set <name> <val>|<domid>]\nquota-soft\t[set <name> <val>]\nhelp\t\n\0"
                .to_vec())
        );
        assert_eq!(
            h.req(SOCK, MsgType::Control, 0, &["check"]),
            Ok(b"OK\0".to_vec())
        );
        assert_eq!(
            h.req(SOCK, MsgType::Control, 0, &["quota", "set", "watches", "7"]),
            Ok(b"OK\0".to_vec())
        );
        assert_eq!(
            h.req(SOCK, MsgType::GetQuota, 0, &["watches"]),
            Ok(b"7\0".to_vec())
        );
        let shown =
            String::from_utf8(h.req(SOCK, MsgType::Control, 0, &["quota"]).unwrap()).unwrap();
        assert!(
            shown.starts_with(
                "Quota settings:\nnodes            :     1000 Nodes per domain\n\
watches          :        7 Watches per domain\n"
            ),
            "{shown}"
        );
        assert!(
            shown.ends_with("permissions      :        5 Max. number of permissions per node\n\0"),
            "{shown}"
        );
        assert_eq!(
            h.req(SOCK, MsgType::Control, 0, &["quota-soft"]),
            Ok(b"Quota settings:\nmemory           :  2097152 Total Xenstore memory per domain (warning level)\n\0".to_vec())
        );
        let dom0 =
            String::from_utf8(h.req(SOCK, MsgType::Control, 0, &["quota", "0"]).unwrap()).unwrap();
        assert!(
            dom0.starts_with("Domain 0:\nnodes           :        "),
            "{dom0}"
        );
        assert!(
            dom0.contains("\nwatches         :        0\ntransactions    :        0\n"),
            "{dom0}"
        );
        for ok in [
            &["log", "on"][..],
            &["log", "off"],
            &["print", "hello"],
            &["quota-soft", "set", "memory", "5"],
            &["quota", "set", "nodes", "5x"],
        ] {
            assert_eq!(
                h.req(SOCK, MsgType::Control, 0, ok),
                Ok(b"OK\0".to_vec()),
                "{ok:?}"
            );
        }
        assert_eq!(
            h.req(SOCK, MsgType::Control, 0, &["quota", "9"]),
            Err(XsErrno::ENOENT)
        );
        for bad in [
            &["no-such"][..],
            &["help", "x"],
            &["check", "x"],
            &["log"],
            &["log", "x"],
            &["logfile"],
            &["print"],
            &["print", "a", "b"],
            &["memreport", "a", "b"],
            &["quota", "watches", "7"],
            &["quota", "set", "watches"],
            &["quota", "set", "watches", "0"],
            &["quota", "set", "bogus", "1"],
            &["quota", "0", "1"],
            &["quota-soft", "set", "nodes", "5"],
            &["quota-soft", "x"],
        ] {
            assert_eq!(
                h.req(SOCK, MsgType::Control, 0, bad),
                Err(XsErrno::EINVAL),
                "{bad:?}"
            );
        }
        // Bytes after the last NUL are no argument (C's get_strings()).
        assert_eq!(
            h.raw(SOCK, MsgType::Control.raw(), 0, b"check".to_vec()),
            Err(XsErrno::EINVAL)
        );
    }

    /// What only the shell can do reaches it as a typed action: the access
    /// log's switches (answered `OK` by the engine), and `memreport <file>`,
    /// whose file the shell writes before it answers.
    #[test]
    fn test_control_shell_commands_become_actions() {
        let mut h = H::new();
        assert_eq!(
            h.req(SOCK, MsgType::Control, 0, &["log", "off"]),
            Ok(b"OK\0".to_vec())
        );
        assert_eq!(
            h.req(SOCK, MsgType::Control, 0, &["logfile", "/tmp/x"]),
            Ok(b"OK\0".to_vec())
        );
        assert_eq!(
            h.e.take_actions(),
            [
                Action::Control {
                    conn: SOCK,
                    command: ShellControl::Log(false),
                },
                Action::Control {
                    conn: SOCK,
                    command: ShellControl::LogFile("/tmp/x".into()),
                },
            ]
        );
        let msg = Message::new(
            MsgType::Control,
            7,
            0,
            build_args(&[b"memreport", b"/tmp/m"]),
        )
        .unwrap();
        h.e.handle(Input::Request {
            conn: SOCK,
            msg: &msg,
        });
        assert!(!h.e.has_output(SOCK), "the shell answers");
        let actions = h.e.take_actions();
        let [Action::MemReport {
            conn,
            header,
            file,
            report,
        }] = actions.as_slice()
        else {
            panic!("no memreport action: {actions:?}");
        };
        assert_eq!((*conn, header.req_id, file.as_str()), (SOCK, 7, "/tmp/m"));
        assert!(report.starts_with("nodes "), "{report}");
        h.e.answer_control(SOCK, header, "OK");
        let reply = h.drain_reply(SOCK);
        assert_eq!(
            (reply.header.req_id, reply.payload.as_slice()),
            (7, &b"OK\0"[..])
        );
    }
}

// ---- C xenstored 4.17's answers to malformed requests -----------------------

/// What tests/tests/c_compat.rs found C answering (docs/c-compat.md).
mod c_answers {
    use super::*;

    #[test]
    fn test_transaction_start_inside_a_transaction() {
        let mut h = H::new();
        // C looks the transaction up before anything else.
        assert_eq!(
            h.req(SOCK, MsgType::TransactionStart, 999, &[""]),
            Err(XsErrno::ENOENT)
        );
        let tx = h.tx_start(SOCK);
        assert_eq!(
            h.req(SOCK, MsgType::TransactionStart, tx, &[""]),
            Err(XsErrno::EBUSY)
        );
        h.tx_end(SOCK, tx, false).unwrap();
    }

    #[test]
    fn test_path_max_bounds_dom0_below_any_home() {
        let mut h = H::new();
        let a = |n: usize| "a".repeat(n);
        assert_eq!(
            h.read(SOCK, 0, &format!("/{}", a(2047))),
            Err(XsErrno::ENOENT)
        );
        assert_eq!(
            h.read(SOCK, 0, &format!("/{}", a(2048))),
            Err(XsErrno::EINVAL)
        );
        let home = |d: &str, n: usize| format!("/local/domain/{d}/{}", a(n));
        assert_eq!(h.read(SOCK, 0, &home("0", 2048)), Err(XsErrno::ENOENT));
        assert_eq!(h.read(SOCK, 0, &home("0", 2049)), Err(XsErrno::EINVAL));
        assert_eq!(h.read(SOCK, 0, &home("12345", 2048)), Err(XsErrno::ENOENT));
        // Six digits are no home (C's %5u): the whole path counts.
        assert_eq!(h.read(SOCK, 0, &home("123456", 2030)), Err(XsErrno::EINVAL));
        assert_eq!(h.read(SOCK, 0, &a(2048)), Err(XsErrno::ENOENT));
        assert_eq!(h.read(SOCK, 0, &a(2049)), Err(XsErrno::EINVAL));
        h.req(
            SOCK,
            MsgType::Control,
            0,
            &["quota", "set", "path-max", "10"],
        )
        .unwrap();
        assert_eq!(
            h.read(SOCK, 0, &format!("/{}", a(10))),
            Err(XsErrno::EINVAL)
        );
        assert_eq!(h.read(SOCK, 0, &format!("/{}", a(9))), Err(XsErrno::ENOENT));
    }

    #[test]
    fn test_set_perms_ignores_an_unterminated_last_entry() {
        let mut h = H::new();
        h.write(SOCK, 0, "/p", "").unwrap();
        assert_eq!(
            h.raw(SOCK, MsgType::SetPerms.raw(), 0, b"/p\0n0\0r5".to_vec()),
            Ok(b"OK\0".to_vec())
        );
        assert_eq!(
            h.req(SOCK, MsgType::GetPerms, 0, &["/p"]),
            Ok(b"n0\0".to_vec())
        );
        assert_eq!(
            h.raw(SOCK, MsgType::SetPerms.raw(), 0, b"/p\0r5".to_vec()),
            Err(XsErrno::EINVAL)
        );
    }

    #[test]
    fn test_release_and_resume_of_the_privileged_domain_refused() {
        let mut h = H::new();
        assert_eq!(
            h.req(SOCK, MsgType::Release, 0, &["0"]),
            Err(XsErrno::EINVAL)
        );
        assert_eq!(
            h.req(SOCK, MsgType::Resume, 0, &["0"]),
            Err(XsErrno::EINVAL)
        );
        assert_eq!(
            h.req(SOCK, MsgType::Release, 0, &["7"]),
            Err(XsErrno::ENOENT)
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

// ---- live update: open transactions -----------------------------------------

mod live_update_transactions {
    use super::*;

    use crate::engine::lu_state::RestoreError;
    use crate::migration::{
        Access, Endian, Header as StreamHeader, NodeData, NodePerm, Record, Stream,
        TransactionData, Version,
    };
    use xenring::{Perm, PermKind};

    /// Stream connection ids are engine ids plus this, to catch a mix-up.
    const STREAM: u32 = 1000;
    const C2: ConnId = 2;

    /// A second socket connection.
    fn with_c2() -> H {
        let mut h = H::new();
        h.e.handle(Input::Connect {
            conn: C2,
            kind: ConnKind::Socket,
        });
        h
    }

    /// A fresh engine with `old`'s connections registered under the same
    /// ids, as the shell does before it restores the records.
    fn connected(old: &H) -> H {
        let mut e = Engine::new(old.e.config().clone());
        for (&id, c) in &old.e.conns {
            match c.kind {
                ConnKind::Socket => e.handle(Input::Connect {
                    conn: id,
                    kind: ConnKind::Socket,
                }),
                ConnKind::Domain(d) => {
                    let (mfn, port) = old.e.domain_ring(d).unwrap();
                    e.restore_ring(id, d, mfn, port, old.e.domain_target(d));
                }
            }
        }
        H {
            e,
            req_id: old.req_id,
            events: BTreeMap::new(),
        }
    }

    fn stream_ids(h: &H) -> (BTreeMap<ConnId, u32>, BTreeMap<u32, ConnId>) {
        let to: BTreeMap<ConnId, u32> = h.e.conns.keys().map(|&c| (c, c + STREAM)).collect();
        let from = to.iter().map(|(&c, &s)| (s, c)).collect();
        (to, from)
    }

    /// What `old` writes for a live update.
    fn export(old: &H) -> Vec<Record> {
        old.e.export_records(&stream_ids(old).0)
    }

    /// Hands `old`'s state to a fresh engine through the records.
    fn live_update(old: &H) -> H {
        let records = export(old);
        let mut new = connected(old);
        let report = new.e.restore_records(&records, &stream_ids(old).1).unwrap();
        let open: usize = old.e.conns.values().map(|c| c.transactions.len()).sum();
        assert_eq!(report.transactions, open);
        new.check();
        new
    }

    /// A transaction node record: conn, tx, access, path, number of
    /// permissions, value.
    type TxNode<'r> = (u32, u32, Access, &'r str, usize, &'r [u8]);

    fn tx_nodes(records: &[Record]) -> Vec<TxNode<'_>> {
        records
            .iter()
            .filter_map(|r| match r {
                Record::Node(n) if n.conn_id != 0 => Some((
                    n.conn_id,
                    n.tx_id,
                    n.access,
                    n.path.as_str(),
                    n.perms.len(),
                    n.value.as_slice(),
                )),
                _ => None,
            })
            .collect()
    }

    fn tree(h: &H) -> Vec<(String, Vec<u8>, Vec<Perm>)> {
        h.e.store()
            .walk()
            .into_iter()
            .map(|(p, n)| (p.to_string(), n.value.to_vec(), n.perms.to_vec()))
            .collect()
    }

    fn sorted(mut v: Vec<(String, String)>) -> Vec<(String, String)> {
        v.sort();
        v
    }

    /// C2 has a transaction open that read, wrote (creating a parent),
    /// removed a subtree, looked for a missing node and changed
    /// permissions; SOCK watches it all.
    fn busy_transaction() -> (H, u32) {
        let mut h = with_c2();
        h.write(SOCK, 0, "/base/r", "1").unwrap();
        h.write(SOCK, 0, "/base/gone/sub", "s").unwrap();
        h.req(SOCK, MsgType::Watch, 0, &["/base", "t"]).unwrap();
        h.events(SOCK);
        let tx = h.tx_start(C2);
        assert_eq!(h.read(C2, tx, "/base/r"), Ok(b"1".to_vec()));
        h.write(C2, tx, "/base/new/x", "v").unwrap();
        assert_eq!(h.req(C2, MsgType::Rm, tx, &["/base/gone"]), ok());
        assert_eq!(h.read(C2, tx, "/base/missing"), Err(XsErrno::ENOENT));
        assert_eq!(
            h.req(C2, MsgType::SetPerms, tx, &["/base/r", "n0", "r5"]),
            ok()
        );
        (h, tx)
    }

    #[test]
    fn test_live_update_open_transaction_commits_as_in_the_old_engine() {
        let (mut old, tx) = busy_transaction();
        let records = export(&old);
        // TRANSACTION_DATA after every committed node, then its nodes.
        let at = records
            .iter()
            .position(|r| matches!(r, Record::Transaction(_)))
            .unwrap();
        assert_eq!(
            records[at],
            Record::Transaction(TransactionData {
                conn_id: C2 + STREAM,
                tx_id: tx
            })
        );
        assert!(records[..at]
            .iter()
            .any(|r| matches!(r, Record::Node(n) if n.conn_id == 0)));
        assert!(!records[at..]
            .iter()
            .any(|r| matches!(r, Record::Node(n) if n.conn_id == 0)));
        let c = C2 + STREAM;
        assert_eq!(
            tx_nodes(&records),
            vec![
                (c, tx, Access::NONE, "/base/gone", 0, &b""[..]),
                (c, tx, Access::READ, "/base/missing", 0, b""),
                (c, tx, Access::WRITTEN, "/base/new", 1, b""),
                (c, tx, Access::READ_WRITTEN, "/base/new/x", 1, b"v"),
                (c, tx, Access::READ_WRITTEN, "/base/r", 2, b"1"),
            ]
        );

        let mut new = live_update(&old);
        assert_eq!(new.read(C2, tx, "/base/new/x"), Ok(b"v".to_vec()));
        assert_eq!(new.read(C2, 0, "/base/new/x"), Err(XsErrno::ENOENT));
        assert_eq!(new.events(SOCK), vec![], "nothing fires before commit");

        assert_eq!(old.tx_end(C2, tx, true), ok());
        assert_eq!(new.tx_end(C2, tx, true), ok());
        assert_eq!(tree(&new), tree(&old));
        let fired = sorted(new.events(SOCK));
        assert_eq!(fired, sorted(old.events(SOCK)));
        assert_eq!(
            fired,
            vec![
                H::ev("/base/gone", "t"),
                H::ev("/base/new/x", "t"),
                H::ev("/base/r", "t"),
            ],
            "each once; none for the parent the write created"
        );
        new.check();
    }

    #[test]
    fn test_live_update_without_transactions_keeps_committed_state_only() {
        let (old, tx) = busy_transaction();
        let records = crate::engine::lu_state::without_transactions(export(&old));
        assert!(tx_nodes(&records).is_empty());
        assert!(!records.iter().any(|r| matches!(r, Record::Transaction(_))));
        let mut new = connected(&old);
        let report = new
            .e
            .restore_records(&records, &stream_ids(&old).1)
            .unwrap();
        assert_eq!(report.transactions, 0);
        assert_eq!(tree(&new), tree(&old));
        assert_eq!(new.tx_end(C2, tx, true), Err(XsErrno::ENOENT));
    }

    #[test]
    fn test_live_update_store_moved_after_restore_commits_by_replay() {
        let (mut old, tx) = busy_transaction();
        let mut new = live_update(&old);
        // An unrelated change on both sides: neither can swap its copy in.
        old.write(SOCK, 0, "/other", "o").unwrap();
        new.write(SOCK, 0, "/other", "o").unwrap();
        assert_eq!(old.tx_end(C2, tx, true), ok());
        assert_eq!(new.tx_end(C2, tx, true), ok());
        assert_eq!(tree(&new), tree(&old));
        assert_eq!(sorted(new.events(SOCK)), sorted(old.events(SOCK)));
        new.check();
    }

    #[test]
    fn test_live_update_read_node_changed_after_restore_gets_eagain() {
        let mut h = with_c2();
        h.write(SOCK, 0, "/c", "1").unwrap();
        let tx = h.tx_start(C2);
        h.read(C2, tx, "/c").unwrap();
        h.write(C2, tx, "/d", "x").unwrap();
        let mut new = live_update(&h);
        new.write(SOCK, 0, "/c", "2").unwrap();
        assert_eq!(new.tx_end(C2, tx, true), Err(XsErrno::EAGAIN));
        assert_eq!(new.read(SOCK, 0, "/d"), Err(XsErrno::ENOENT));
        new.check();
    }

    #[test]
    fn test_live_update_read_node_children_changed_after_restore_gets_eagain() {
        let mut h = with_c2();
        h.write(SOCK, 0, "/c", "1").unwrap();
        let tx = h.tx_start(C2);
        h.req(C2, MsgType::Directory, tx, &["/c"]).unwrap();
        h.write(C2, tx, "/d", "x").unwrap();
        let mut new = live_update(&h);
        new.write(SOCK, 0, "/c/child", "").unwrap();
        assert_eq!(new.tx_end(C2, tx, true), Err(XsErrno::EAGAIN));
    }

    #[test]
    fn test_live_update_transaction_already_conflicting_gets_eagain() {
        let mut h = with_c2();
        h.write(SOCK, 0, "/c", "1").unwrap();
        let tx = h.tx_start(C2);
        h.read(C2, tx, "/c").unwrap();
        h.write(C2, tx, "/d", "x").unwrap();
        h.write(SOCK, 0, "/c", "2").unwrap();
        let records = export(&h);
        let c = C2 + STREAM;
        assert_eq!(
            tx_nodes(&records),
            vec![
                (c, tx, Access::READ, "/c", 1, &b"1"[..]),
                (c, tx, Access::READ_WRITTEN, "/d", 1, b"x"),
            ],
            "what it read is what it saw at its start"
        );
        let mut new = live_update(&h);
        // Its own view carries on until the commit fails.
        assert_eq!(new.read(C2, tx, "/d"), Ok(b"x".to_vec()));
        assert_eq!(new.tx_end(C2, tx, true), Err(XsErrno::EAGAIN));
        assert_eq!(new.read(SOCK, 0, "/d"), Err(XsErrno::ENOENT));
        assert_eq!(new.read(SOCK, 0, "/c"), Ok(b"2".to_vec()));
        new.check();
    }

    #[test]
    fn test_live_update_conflict_no_read_node_shows_is_kept_by_a_marker() {
        // A guest looked for a missing node; then its parent became
        // unreadable: the reply would now be EACCES, not ENOENT, but the
        // node it looked for is as absent as ever.
        let mut h = H::new();
        let d5 = h.dom(5);
        h.write(SOCK, 0, "/p", "").unwrap();
        h.perms(SOCK, "/p", &["n0", "r5"]).unwrap();
        let tx = h.tx_start(d5);
        assert_eq!(h.read(d5, tx, "/p/q"), Err(XsErrno::ENOENT));
        h.perms(SOCK, "/p", &["n0"]).unwrap();
        let records = export(&h);
        let c = d5 + STREAM;
        assert_eq!(
            tx_nodes(&records),
            vec![
                (c, tx, Access::READ, "/p/q", 0, &b""[..]),
                (c, tx, Access::READ, "/", 0, b""),
            ],
            "'/' read as absent: never holds"
        );
        let mut new = live_update(&h);
        assert_eq!(new.tx_end(d5, tx, true), Err(XsErrno::EAGAIN));
    }

    #[test]
    fn test_live_update_blind_write_does_not_conflict() {
        let mut h = with_c2();
        let tx = h.tx_start(C2);
        h.write(C2, tx, "/b", "mine").unwrap();
        // Before the update: replayed at export, the write still succeeds.
        h.write(SOCK, 0, "/b", "theirs").unwrap();
        let mut new = live_update(&h);
        // After it: requests since the restore are replayed as usual.
        new.write(C2, tx, "/e", "mine").unwrap();
        new.write(SOCK, 0, "/e", "theirs").unwrap();
        assert_eq!(new.tx_end(C2, tx, true), ok());
        assert_eq!(new.read(SOCK, 0, "/b"), Ok(b"mine".to_vec()));
        assert_eq!(new.read(SOCK, 0, "/e"), Ok(b"mine".to_vec()));
        new.check();
    }

    #[test]
    fn test_live_update_carried_write_node_changed_after_restore_gets_eagain() {
        // Written nodes came as nodes, not requests: if one changes after
        // the restore, the transaction cannot tell whether its write would
        // still succeed, and fails (documented; C fails every such case).
        let mut h = with_c2();
        let tx = h.tx_start(C2);
        h.write(C2, tx, "/b", "mine").unwrap();
        let mut new = live_update(&h);
        new.write(SOCK, 0, "/b", "theirs").unwrap();
        assert_eq!(new.tx_end(C2, tx, true), Err(XsErrno::EAGAIN));
        assert_eq!(new.read(SOCK, 0, "/b"), Ok(b"theirs".to_vec()));
    }

    #[test]
    fn test_live_update_transaction_id_keeps_working() {
        let mut h = with_c2();
        h.req(SOCK, MsgType::Watch, 0, &["/k", "t"]).unwrap();
        h.events(SOCK);
        let tx = h.tx_start(C2);
        h.write(C2, tx, "/k/1", "1").unwrap();
        let mut new = live_update(&h);
        assert_eq!(new.read(C2, tx, "/k/1"), Ok(b"1".to_vec()));
        new.write(C2, tx, "/k/2", "2").unwrap();
        let tx2 = new.tx_start(C2);
        assert!(tx2 > tx, "new ids above restored ones: {tx2} after {tx}");
        assert_eq!(new.read(C2, tx2, "/k/1"), Err(XsErrno::ENOENT));
        assert_eq!(new.tx_end(C2, tx2, false), ok());
        // And once more across a second update.
        let mut third = live_update(&new);
        third.write(C2, tx, "/k/3", "3").unwrap();
        third.write(SOCK, 0, "/elsewhere", "").unwrap();
        assert_eq!(third.tx_end(C2, tx, true), ok());
        for (k, v) in [("/k/1", "1"), ("/k/2", "2"), ("/k/3", "3")] {
            assert_eq!(third.read(SOCK, 0, k), Ok(v.as_bytes().to_vec()));
        }
        assert_eq!(
            sorted(third.events(SOCK)),
            vec![H::ev("/k/1", "t"), H::ev("/k/2", "t"), H::ev("/k/3", "t")]
        );
        assert_eq!(third.tx_end(C2, tx, true), Err(XsErrno::ENOENT));
        third.check();
    }

    #[test]
    fn test_live_update_transaction_node_quota_counts_carried_writes() {
        let mut config = Config::default();
        config.quotas.set_hard(QuotaKind::TransactionNodes, 2);
        let mut h = H::with(config);
        let d5 = h.dom(5);
        h.req(SOCK, MsgType::Mkdir, 0, &["/local/domain/5"])
            .unwrap();
        h.perms(SOCK, "/local/domain/5", &["n5"]).unwrap();
        let tx = h.tx_start(d5);
        h.write(d5, tx, "a", "1").unwrap();
        h.write(d5, tx, "b", "2").unwrap();
        let mut new = live_update(&h);
        assert_eq!(new.write(d5, tx, "c", "3"), Err(XsErrno::ENOSPC));
        assert_eq!(new.tx_end(d5, tx, true), ok());
        assert_eq!(new.read(d5, 0, "b"), Ok(b"2".to_vec()));
    }

    fn node(conn_id: u32, tx_id: u32, access: Access, path: &str, value: &str) -> Record {
        let perms = if access.written() || (access.read() && !value.is_empty()) {
            vec![NodePerm::new(Perm::new(PermKind::None, 0))]
        } else {
            Vec::new()
        };
        Record::Node(NodeData {
            conn_id,
            tx_id,
            access,
            perms,
            path: path.to_string(),
            value: value.as_bytes().to_vec(),
        })
    }

    fn committed(path: &str, value: &str) -> Record {
        Record::Node(NodeData {
            conn_id: 0,
            tx_id: 0,
            access: Access::NONE,
            perms: vec![NodePerm::new(Perm::new(PermKind::None, 0))],
            path: path.to_string(),
            value: value.as_bytes().to_vec(),
        })
    }

    fn tx_record(conn_id: u32, tx_id: u32) -> Record {
        Record::Transaction(TransactionData { conn_id, tx_id })
    }

    /// A hand-built stream: committed `/a` = 1 and `/gone`; transaction 42
    /// of stream connection 7 read `/a`, wrote `/b`, found `/absent`
    /// absent and removed `/gone`.
    fn hand_built() -> Vec<Record> {
        vec![
            committed("/", ""),
            committed("/a", "1"),
            committed("/gone", "g"),
            tx_record(7, 42),
            node(7, 42, Access::READ, "/a", "1"),
            node(7, 42, Access::READ, "/absent", ""),
            node(7, 42, Access::WRITTEN, "/b", "x"),
            node(7, 42, Access::NONE, "/gone", ""),
        ]
    }

    #[test]
    fn test_live_update_hand_built_stream_round_trips_through_bytes() {
        let stream = Stream {
            header: StreamHeader {
                version: Version::V2,
                endian: Endian::Little,
            },
            records: hand_built(),
        };
        let bytes = stream.to_bytes().unwrap();
        let parsed = Stream::parse(&bytes).unwrap();
        assert_eq!(parsed, stream);
        let mut h = H::new();
        h.req(SOCK, MsgType::Watch, 0, &["/", "t"]).unwrap();
        h.events(SOCK);
        let map = BTreeMap::from([(7, SOCK)]);
        let report = h.e.restore_records(&parsed.records, &map).unwrap();
        assert_eq!((report.nodes, report.transactions), (3, 1));
        h.check();
        // Written out again, the transaction's records are the same.
        let again = h.e.export_records(&BTreeMap::from([(SOCK, 7)]));
        let tx_part: Vec<&Record> = again
            .iter()
            .skip_while(|r| !matches!(r, Record::Transaction(_)))
            .take(5)
            .collect();
        let expected = hand_built();
        assert_eq!(tx_part, expected[3..].iter().collect::<Vec<_>>());
        assert_eq!(h.read(SOCK, 42, "/b"), Ok(b"x".to_vec()));
        assert_eq!(h.read(SOCK, 42, "/gone"), Err(XsErrno::ENOENT));
        assert_eq!(h.read(SOCK, 0, "/b"), Err(XsErrno::ENOENT));
        assert_eq!(h.read(SOCK, 0, "/gone"), Ok(b"g".to_vec()));
        assert_eq!(h.tx_start(SOCK), 43);
        assert_eq!(h.tx_end(SOCK, 42, true), ok());
        assert_eq!(h.read(SOCK, 0, "/b"), Ok(b"x".to_vec()));
        assert_eq!(h.read(SOCK, 0, "/gone"), Err(XsErrno::ENOENT));
        assert_eq!(
            sorted(h.events(SOCK)),
            vec![H::ev("/b", "t"), H::ev("/gone", "t")]
        );
        h.check();
    }

    #[test]
    fn test_live_update_malformed_transaction_records_name_the_record() {
        let map = BTreeMap::from([(7, SOCK)]);
        let base = || hand_built()[..3].to_vec();
        let with = |extra: Vec<Record>| {
            let mut r = base();
            r.extend(extra);
            r
        };
        let deleted_root = Record::Node(NodeData {
            conn_id: 7,
            tx_id: 1,
            access: Access::NONE,
            perms: Vec::new(),
            path: "/".to_string(),
            value: Vec::new(),
        });
        let perms_no_access = Record::Node(NodeData {
            access: Access::NONE,
            ..match node(7, 1, Access::WRITTEN, "/x", "v") {
                Record::Node(n) => n,
                _ => unreachable!(),
            }
        });
        type Case = (Vec<Record>, usize, fn(&RestoreError) -> bool);
        let cases: Vec<Case> = vec![
            (with(vec![tx_record(9, 1)]), 3, |e| {
                matches!(e, RestoreError::UnknownConnection { conn_id: 9, .. })
            }),
            (with(vec![tx_record(7, 0)]), 3, |e| {
                matches!(e, RestoreError::ZeroTransactionId { conn_id: 7, .. })
            }),
            (with(vec![tx_record(7, 1), tx_record(7, 1)]), 4, |e| {
                matches!(e, RestoreError::DuplicateTransaction { tx_id: 1, .. })
            }),
            (
                with(vec![tx_record(7, 1), node(7, 2, Access::READ, "/a", "1")]),
                4,
                |e| matches!(e, RestoreError::UnannouncedTransaction { tx_id: 2, .. }),
            ),
            (
                with(vec![tx_record(7, 1), node(7, 1, Access::READ, "rel", "1")]),
                4,
                |e| matches!(e, RestoreError::BadNodePath { .. }),
            ),
            (
                with(vec![
                    tx_record(7, 1),
                    Record::Node(NodeData {
                        perms: Vec::new(),
                        ..match node(7, 1, Access::WRITTEN, "/x", "") {
                            Record::Node(n) => n,
                            _ => unreachable!(),
                        }
                    }),
                ]),
                4,
                |e| {
                    matches!(
                        e,
                        RestoreError::BadTransactionNode {
                            field: "perm-count",
                            ..
                        }
                    )
                },
            ),
            (with(vec![tx_record(7, 1), perms_no_access]), 4, |e| {
                matches!(
                    e,
                    RestoreError::BadTransactionNode {
                        field: "access",
                        ..
                    }
                )
            }),
            (
                with(vec![tx_record(7, 1), deleted_root]),
                4,
                |e| matches!(e, RestoreError::BadTransactionNode { path, .. } if path == "/"),
            ),
            (
                with(vec![
                    tx_record(7, 1),
                    node(7, 1, Access::WRITTEN, "/x/y", "v"),
                ]),
                4,
                |e| matches!(e, RestoreError::OrphanNode { path, .. } if path == "/x/y"),
            ),
            (
                with(vec![
                    tx_record(7, 1),
                    node(7, 1, Access::WRITTEN, "/x", "v"),
                    node(7, 1, Access::READ_WRITTEN, "/x", "w"),
                ]),
                5,
                |e| matches!(e, RestoreError::DuplicateTransactionNode { path, .. } if path == "/x"),
            ),
        ];
        let fresh = H::new().e.store().len();
        for (records, index, expected) in cases {
            let mut h = H::new();
            let err = h.e.restore_records(&records, &map).unwrap_err();
            assert!(expected(&err), "{err:?}");
            assert!(
                err.to_string().starts_with(&format!("record {index}:")),
                "names record {index}: {err}"
            );
            assert_eq!(h.e.store().len(), fresh, "nothing changed");
            assert!(h.e.conns[&SOCK].transactions.is_empty());
        }
    }
}

// ---- who is told of a removal -----------------------------------------------

mod removal_events {
    use super::*;

    /// `/s` readable by all; `/s/a` by nobody but 7; `/s/a/b` by 6 only.
    fn removal_setup() -> (H, ConnId, ConnId, ConnId) {
        let mut h = H::new();
        let (d5, d6, d7) = (h.dom(5), h.dom(6), h.dom(7));
        h.write(SOCK, 0, "/s/a/b", "secret").unwrap();
        h.perms(SOCK, "/s", &["r0"]).unwrap();
        h.perms(SOCK, "/s/a", &["n0", "r7"]).unwrap();
        h.perms(SOCK, "/s/a/b", &["n0", "r6"]).unwrap();
        for (conn, path, token) in [
            (d5, "/s/a/b", "below5"),
            (d5, "/s/a/b/none", "missing5"),
            (d5, "/s", "above5"),
            (d6, "/s/a/b", "below6"),
            (d6, "/s", "above6"),
            (d7, "/s", "above7"),
            (d7, "/s/a/b", "below7"),
        ] {
            h.req(conn, MsgType::Watch, 0, &[path, token]).unwrap();
        }
        for c in [d5, d6, d7] {
            h.events(c); // the initial events
        }
        (h, d5, d6, d7)
    }

    #[test]
    fn test_watch_removed_subtree_only_readers_of_each_node_told() {
        let (mut h, d5, d6, d7) = removal_setup();
        assert_eq!(h.req(SOCK, MsgType::Rm, 0, &["/s/a"]), ok());
        assert_eq!(
            h.events(d5),
            vec![],
            "5 may read none of the removed nodes: it learns nothing"
        );
        assert_eq!(
            h.events(d6),
            vec![H::ev("/s/a/b", "below6")],
            "6 may read /s/a/b (its watch fires) but not /s/a"
        );
        assert_eq!(
            h.events(d7),
            vec![H::ev("/s/a", "above7")],
            "7 may read /s/a but not /s/a/b"
        );
        h.check();
    }

    #[test]
    fn test_watch_removed_by_domain_death_only_readers_told() {
        let (mut h, d5, d6, _) = removal_setup();
        // Guest 8's home holds a node only 6 may read.
        h.dom(8);
        h.write(SOCK, 0, "/local/domain/8/dev", "").unwrap();
        h.perms(SOCK, "/local/domain/8", &["n8"]).unwrap();
        h.perms(SOCK, "/local/domain/8/dev", &["n8", "r6"]).unwrap();
        h.req(d5, MsgType::Watch, 0, &["/local/domain/8/dev", "w5"])
            .unwrap();
        h.req(d6, MsgType::Watch, 0, &["/local/domain/8/dev", "w6"])
            .unwrap();
        h.events(d5);
        h.events(d6);
        h.e.handle(Input::DomainState {
            domid: 8,
            shutdown: true,
            dying: true,
        });
        assert_eq!(h.events(d5), vec![]);
        assert_eq!(h.events(d6), vec![H::ev("/local/domain/8/dev", "w6")]);
    }
}

// ---- @introduceDomain / @releaseDomain --------------------------------------

/// C xenstored 4.17 (XSA-115) sends a special watch event only to the
/// connections that may read the special node: the privileged ones, and
/// those the node's ACL (SET_PERMS on it) lets read. We also tell the
/// domain itself and the domain acting for it (SET_TARGET) of its own
/// events; nobody unprivileged hears of an unrelated domain.
mod special_watches {
    use super::*;

    fn watch_specials(h: &mut H, conn: ConnId, tag: &str) {
        for (path, depth) in [
            ("@introduceDomain", None),
            ("@releaseDomain", None),
            ("@releaseDomain", Some("1")),
            ("@releaseDomain/6", None),
        ] {
            let token = format!("{tag}{}", depth.unwrap_or(""));
            let mut args = vec![path, token.as_str()];
            args.extend(depth);
            h.req(conn, MsgType::Watch, 0, &args).unwrap();
        }
        h.events(conn);
    }

    fn shutdown(h: &mut H, domid: DomId, dying: bool) {
        h.e.handle(Input::DomainState {
            domid,
            shutdown: true,
            dying,
        });
    }

    #[test]
    fn test_special_watch_unprivileged_guest_not_told_of_other_domains() {
        let mut h = H::new();
        let d5 = h.dom(5);
        watch_specials(&mut h, d5, "g");
        watch_specials(&mut h, SOCK, "p");
        h.dom(6);
        shutdown(&mut h, 6, false);
        shutdown(&mut h, 6, true);
        assert_eq!(h.events(d5), vec![], "6 is none of 5's business");
        assert_eq!(
            h.events(SOCK),
            vec![
                H::ev("@introduceDomain", "p"),
                H::ev("@releaseDomain", "p"),
                H::ev("@releaseDomain/6", "p1"),
                H::ev("@releaseDomain/6", "p"),
            ],
            "the privileged connection hears of 6 (one event per shutdown)"
        );
    }

    #[test]
    fn test_special_watch_acl_grants_events_for_that_node_only() {
        let mut h = H::new();
        let d5 = h.dom(5);
        let d7 = h.dom(7);
        assert_eq!(h.perms(SOCK, "@releaseDomain", &["n0", "r7"]), ok());
        watch_specials(&mut h, d5, "g");
        watch_specials(&mut h, d7, "d");
        h.dom(6);
        shutdown(&mut h, 6, true);
        assert_eq!(h.events(d5), vec![]);
        assert_eq!(
            h.events(d7),
            vec![
                H::ev("@releaseDomain", "d"),
                H::ev("@releaseDomain/6", "d1"),
                H::ev("@releaseDomain/6", "d"),
            ],
            "7 may read @releaseDomain, not @introduceDomain"
        );
    }

    #[test]
    fn test_special_watch_domain_and_its_device_model_told_of_its_own() {
        let mut h = H::new();
        let d5 = h.dom(5);
        let d6 = h.dom(6);
        let d8 = h.dom(8);
        assert_eq!(h.req(SOCK, MsgType::SetTarget, 0, &["8", "6"]), ok());
        watch_specials(&mut h, d5, "g");
        watch_specials(&mut h, d6, "s");
        watch_specials(&mut h, d8, "t");
        shutdown(&mut h, 6, false);
        assert_eq!(h.events(d5), vec![], "5 is unrelated");
        let own = vec![
            H::ev("@releaseDomain", "s"),
            H::ev("@releaseDomain/6", "s1"),
            H::ev("@releaseDomain/6", "s"),
        ];
        assert_eq!(h.events(d6), own, "6's own shutdown");
        assert_eq!(
            h.events(d8),
            vec![
                H::ev("@releaseDomain", "t"),
                H::ev("@releaseDomain/6", "t1"),
                H::ev("@releaseDomain/6", "t"),
            ],
            "8 acts for 6"
        );
        h.dom(9);
        shutdown(&mut h, 9, false);
        for c in [d5, d6, d8] {
            assert_eq!(h.events(c), vec![], "9 is nobody's business");
        }
    }
}

// ---- what a transaction read changed meanwhile ------------------------------

mod transaction_conflicts {
    use super::*;

    fn listed_dir() -> (H, u32) {
        let mut h = H::new();
        h.write(SOCK, 0, "/dir/one", "1").unwrap();
        let tx = h.tx_start(SOCK);
        assert_eq!(
            h.req(SOCK, MsgType::Directory, tx, &["/dir"]),
            Ok(b"one\0".to_vec())
        );
        h.write(SOCK, tx, "/elsewhere", "from tx").unwrap();
        (h, tx)
    }

    #[test]
    fn test_transaction_listed_directory_gained_child_commit_eagain() {
        let (mut h, tx) = listed_dir();
        h.write(SOCK, 0, "/dir/two", "2").unwrap();
        assert_eq!(h.tx_end(SOCK, tx, true), Err(XsErrno::EAGAIN));
        assert_eq!(
            h.read(SOCK, 0, "/elsewhere"),
            Err(XsErrno::ENOENT),
            "nothing of it applied"
        );
    }

    #[test]
    fn test_transaction_listed_directory_lost_child_commit_eagain() {
        let (mut h, tx) = listed_dir();
        h.req(SOCK, MsgType::Rm, 0, &["/dir/one"]).unwrap();
        assert_eq!(h.tx_end(SOCK, tx, true), Err(XsErrno::EAGAIN));
        assert_eq!(h.read(SOCK, 0, "/elsewhere"), Err(XsErrno::ENOENT));
    }

    #[test]
    fn test_transaction_listed_directory_child_value_changed_commits() {
        let (mut h, tx) = listed_dir();
        // The listing is the same: what the transaction saw still holds.
        h.write(SOCK, 0, "/dir/one", "changed").unwrap();
        assert_eq!(h.tx_end(SOCK, tx, true), ok());
        assert_eq!(h.read(SOCK, 0, "/elsewhere"), Ok(b"from tx".to_vec()));
        assert_eq!(h.read(SOCK, 0, "/dir/one"), Ok(b"changed".to_vec()));
    }
}

// ---- the soft memory quota --------------------------------------------------

mod soft_quota {
    use super::*;

    const SOFT: u64 = 400;

    /// Guest 5 with its home (owned by it), soft memory quota [`SOFT`].
    fn guest_with_soft_quota(soft: u64) -> (H, ConnId) {
        guest_with_soft_quota_every(soft, 0)
    }

    /// The same, its lines limited to one per `interval` ms (0: every
    /// crossing is written: what the tests of the crossings look at).
    fn guest_with_soft_quota_every(soft: u64, interval: u64) -> (H, ConnId) {
        let mut config = Config::default();
        config.quotas.set_soft(QuotaKind::Memory, soft);
        config.guest_log_interval_ms = interval;
        let mut h = H::with(config);
        let d5 = h.dom(5);
        h.req(SOCK, MsgType::Mkdir, 0, &["/local/domain/5"])
            .unwrap();
        h.perms(SOCK, "/local/domain/5", &["n5"]).unwrap();
        h.logs();
        (h, d5)
    }

    fn used(h: &H, domid: DomId) -> u64 {
        h.e.store().account(domid).memory
    }

    fn over(domid: DomId, used: u64, soft: u64) -> String {
        format!("domain {domid} uses {used} bytes of memory, over its soft quota of {soft} bytes")
    }

    fn back(domid: DomId, used: u64, soft: u64) -> String {
        format!(
            "domain {domid} uses {used} bytes of memory, within its soft quota of {soft} bytes again"
        )
    }

    /// Writes 5's `k0`, `k1`, … (100 bytes each) until domain 5 is over
    /// the soft quota; returns how many.
    fn fill_until_over(h: &mut H, conn: ConnId, soft: u64) -> usize {
        let value = "v".repeat(100);
        let mut n = 0;
        while used(h, 5) <= soft {
            assert!(n < 100, "domain 5 is not charged for its nodes");
            let path = format!("/local/domain/5/k{n}");
            assert_eq!(h.write(conn, 0, &path, &value), ok());
            n += 1;
            if used(h, 5) <= soft {
                assert_eq!(h.logs(), Vec::<String>::new(), "not over yet");
            }
        }
        n
    }

    #[test]
    fn test_soft_quota_crossing_logged_once_write_not_refused() {
        let (mut h, d5) = guest_with_soft_quota(SOFT);
        let n = fill_until_over(&mut h, d5, SOFT);
        assert_eq!(h.logs(), vec![over(5, used(&h, 5), SOFT)]);
        assert_eq!(
            h.read(d5, 0, &format!("k{}", n - 1)),
            Ok("v".repeat(100).into_bytes()),
            "the write that crossed it was carried out"
        );
        // Still over: more writes go through, and are not logged again.
        for i in 0..5 {
            assert_eq!(h.write(d5, 0, &format!("more{i}"), "x"), ok());
        }
        assert_eq!(h.logs(), Vec::<String>::new(), "once per crossing");
        // Back within it: logged once; then crossing again is news again.
        for i in 0..5 {
            h.req(d5, MsgType::Rm, 0, &[&format!("more{i}")]).unwrap();
        }
        assert_eq!(h.logs(), Vec::<String>::new(), "still over");
        let mut backs = Vec::new();
        for i in 0..n {
            h.req(d5, MsgType::Rm, 0, &[&format!("k{i}")]).unwrap();
            let logs = h.logs();
            if !logs.is_empty() {
                assert!(used(&h, 5) <= SOFT);
                backs.push((logs, used(&h, 5)));
            } else {
                assert!(used(&h, 5) <= SOFT || backs.is_empty());
            }
        }
        assert_eq!(backs.len(), 1, "logged once, when it came back: {backs:?}");
        assert_eq!(backs[0].0, vec![back(5, backs[0].1, SOFT)]);
        h.write(d5, 0, "small", "").unwrap();
        assert_eq!(h.logs(), Vec::<String>::new(), "within: nothing to say");
        fill_until_over(&mut h, d5, SOFT);
        assert_eq!(h.logs(), vec![over(5, used(&h, 5), SOFT)]);
    }

    /// A guest going back and forth across its soft quota gets one line
    /// per interval, not one per request; the line held back says where
    /// it stands at the end of the interval and how many crossings it
    /// stands for.
    #[test]
    fn test_soft_quota_crossings_back_and_forth_logged_once_per_interval() {
        let (mut h, d5) = guest_with_soft_quota_every(SOFT, 10_000);
        let n = fill_until_over(&mut h, d5, SOFT);
        assert_eq!(h.logs(), vec![over(5, used(&h, 5), SOFT)]);
        let last = format!("k{}", n - 1);
        let value = "v".repeat(100);
        for _ in 0..50 {
            h.req(d5, MsgType::Rm, 0, &[&last]).unwrap();
            assert_eq!(h.write(d5, 0, &last, &value), ok());
        }
        assert_eq!(h.logs(), Vec::<String>::new(), "100 crossings, no line");
        h.e.handle(Input::Time(9_999));
        assert_eq!(h.logs(), Vec::<String>::new(), "the interval is not over");
        h.e.handle(Input::Time(10_000));
        assert_eq!(
            h.logs(),
            vec![format!(
                "{} (100 more crossings since the last line)",
                over(5, used(&h, 5), SOFT)
            )]
        );
        // Nothing held: the next interval has nothing to say, and the
        // next crossing after it is written at once.
        h.e.handle(Input::Time(20_000));
        assert_eq!(h.logs(), Vec::<String>::new());
        h.req(d5, MsgType::Rm, 0, &[&last]).unwrap();
        assert_eq!(h.logs(), vec![back(5, used(&h, 5), SOFT)]);
    }

    #[test]
    fn test_soft_quota_exactly_at_limit_is_within() {
        let (mut h, d5) = guest_with_soft_quota(SOFT);
        h.write(d5, 0, "a", "").unwrap();
        let base = used(&h, 5);
        // A value that brings the use to the limit exactly, then one byte more.
        let fill = usize::try_from(SOFT - base).unwrap();
        h.write(d5, 0, "a", &"v".repeat(fill)).unwrap();
        assert_eq!(used(&h, 5), SOFT);
        assert_eq!(h.logs(), Vec::<String>::new(), "at the limit is within");
        h.write(d5, 0, "a", &"v".repeat(fill + 1)).unwrap();
        assert_eq!(h.logs(), vec![over(5, SOFT + 1, SOFT)]);
        h.write(d5, 0, "a", &"v".repeat(fill)).unwrap();
        assert_eq!(h.logs(), vec![back(5, SOFT, SOFT)]);
    }

    #[test]
    fn test_soft_quota_charged_owner_named_whoever_writes() {
        let (mut h, _d5) = guest_with_soft_quota(SOFT);
        // dom0 writes in 5's home: the nodes are 5's, and so is the use.
        let n = fill_until_over(&mut h, SOCK, SOFT);
        assert!(n > 1);
        assert_eq!(h.logs(), vec![over(5, used(&h, 5), SOFT)]);
        // dom0 over the soft quota in its own nodes: exempt, nothing logged.
        for i in 0..10 {
            h.write(SOCK, 0, &format!("/tool/big{i}"), &"v".repeat(100))
                .unwrap();
        }
        assert!(used(&h, 0) > SOFT);
        assert_eq!(h.logs(), Vec::<String>::new(), "the privileged domain");
    }

    #[test]
    fn test_soft_quota_ownership_change_moves_the_use() {
        let (mut h, _d5) = guest_with_soft_quota(SOFT);
        h.dom(6);
        h.write(SOCK, 0, "/big", &"v".repeat(500)).unwrap();
        assert_eq!(h.logs(), Vec::<String>::new(), "dom0's");
        h.perms(SOCK, "/big", &["n6"]).unwrap();
        assert_eq!(h.logs(), vec![over(6, used(&h, 6), SOFT)]);
        h.perms(SOCK, "/big", &["n0"]).unwrap();
        assert_eq!(h.logs(), vec![back(6, 0, SOFT)]);
    }

    /// A transaction's writes (and its log) are charged to the domain as
    /// they are made, as C charges a transaction's nodes (XSA-326): the
    /// crossing is logged then, once, and the commit, still over, is
    /// quiet.
    #[test]
    fn test_soft_quota_crossed_in_transaction_logged_when_charged() {
        let (mut h, d5) = guest_with_soft_quota(SOFT);
        let home = used(&h, 5);
        let tx = h.tx_start(d5);
        let mut crossed = Vec::new();
        for i in 0..6 {
            assert_eq!(h.write(d5, tx, &format!("t{i}"), &"v".repeat(100)), ok());
            let logs = h.logs();
            if !logs.is_empty() {
                crossed.push(i);
                assert_eq!(logs, vec![over(5, h.e.usage(5).total(), SOFT)]);
            }
        }
        assert_eq!(used(&h, 5), home, "nothing committed yet");
        assert_eq!(crossed.len(), 1, "logged once, when charged: {crossed:?}");
        assert_eq!(h.tx_end(d5, tx, true), ok());
        assert!(used(&h, 5) > SOFT);
        assert_eq!(h.logs(), Vec::<String>::new(), "still over");
        // An aborted transaction changes nothing, so says nothing.
        let tx = h.tx_start(d5);
        for i in 0..6 {
            h.req(d5, MsgType::Rm, tx, &[&format!("t{i}")]).unwrap();
        }
        assert_eq!(h.tx_end(d5, tx, false), ok());
        assert_eq!(h.logs(), Vec::<String>::new());
    }

    /// The shortcut that spares a walk of the watches counts the guest's
    /// queued output: with a watch quota of 1 the bound is tight, and
    /// replies it has not read are what take it over.
    #[test]
    fn test_soft_quota_shortcut_counts_queued_output() {
        const SOFT_BIG: u64 = 10_000;
        let (mut h, d5) = guest_with_soft_quota(SOFT_BIG);
        h.e.config.quotas.set_hard(QuotaKind::Watches, 1);
        assert_eq!(h.write(d5, 0, "big", &"v".repeat(2000)), ok());
        assert_eq!(h.logs(), Vec::<String>::new());
        for _ in 0..5 {
            let msg = Message::new(MsgType::Read, 1, 0, build_args(&[b"big"])).unwrap();
            h.e.handle(Input::Request {
                conn: d5,
                msg: &msg,
            });
        }
        assert!(
            used(&h, 5) + 4096 < SOFT_BIG,
            "its nodes alone are far below"
        );
        assert!(
            h.e.usage(5).total() > SOFT_BIG,
            "its unread replies take it over"
        );
        // A write of its own makes the soft quota look at it.
        let msg = Message::new(MsgType::Write, 2, 0, build_path_value(b"small", b"x")).unwrap();
        h.e.handle(Input::Request {
            conn: d5,
            msg: &msg,
        });
        // (Counted before the write's own reply was queued.)
        let logs = h.logs();
        assert_eq!(logs.len(), 1, "{logs:?}");
        assert!(
            logs[0].starts_with("domain 5 uses ")
                && logs[0].ends_with(&format!("over its soft quota of {SOFT_BIG} bytes")),
            "{logs:?}"
        );
    }

    #[test]
    fn test_soft_quota_set_by_control_applies_to_later_writes() {
        let (mut h, d5) = guest_with_soft_quota(0);
        for i in 0..10 {
            h.write(d5, 0, &format!("k{i}"), &"v".repeat(100)).unwrap();
        }
        assert_eq!(h.logs(), Vec::<String>::new(), "0: no soft quota");
        assert_eq!(
            h.req(
                SOCK,
                MsgType::Control,
                0,
                &["quota-soft", "set", "memory", "300"]
            ),
            ok()
        );
        h.write(d5, 0, "k0", "w").unwrap();
        assert_eq!(h.logs(), vec![over(5, used(&h, 5), 300)]);
    }

    #[test]
    fn test_soft_quota_domain_dying_over_it_logs_nothing_more() {
        let (mut h, d5) = guest_with_soft_quota(SOFT);
        fill_until_over(&mut h, d5, SOFT);
        assert_eq!(h.logs().len(), 1);
        h.e.handle(Input::DomainState {
            domid: 5,
            shutdown: true,
            dying: true,
        });
        assert_eq!(used(&h, 5), 0);
        assert_eq!(h.logs(), Vec::<String>::new(), "gone, not back within");
        // The domid reused: a new domain, crossing is news again.
        let d5 = h.dom(5);
        h.req(SOCK, MsgType::Mkdir, 0, &["/local/domain/5"])
            .unwrap();
        h.perms(SOCK, "/local/domain/5", &["n5"]).unwrap();
        fill_until_over(&mut h, d5, SOFT);
        assert_eq!(h.logs(), vec![over(5, used(&h, 5), SOFT)]);
    }
}

// ---- the watch registry ------------------------------------------------------

mod watch_registry {
    use super::super::watch::{Watch, Watches};
    use super::*;

    fn w(conn: ConnId, path: &str, token: &str) -> Watch {
        Watch {
            conn,
            path: path.to_string(),
            abs: path.to_string(),
            token: token.to_string(),
            depth: None,
            relative_prefix: None,
        }
    }

    fn tokens<'a>(v: impl IntoIterator<Item = &'a Watch>) -> Vec<(ConnId, &'a str)> {
        v.into_iter().map(|w| (w.conn, w.token.as_str())).collect()
    }

    /// Connections 1, 2 and 3, some watches on the same path.
    fn registry() -> Watches {
        let mut ws = Watches::default();
        assert!(ws.is_empty());
        assert_eq!(ws.len(), 0);
        for (conn, path, token) in [
            (2, "/p", "2a"),
            (1, "/p", "1a"),
            (3, "/p/q", "3a"),
            (2, "/z", "2b"),
            (1, "/p/q", "1b"),
            (3, "/p", "3b"),
        ] {
            assert!(ws.add(w(conn, path, token)));
        }
        assert!(!ws.add(w(1, "/p", "1a")), "same path and token again");
        ws
    }

    #[test]
    fn test_watches_counted_per_connection_and_in_total() {
        let ws = registry();
        assert!(!ws.is_empty());
        assert_eq!(ws.len(), 6);
        assert_eq!((ws.count(1), ws.count(2), ws.count(3)), (2, 2, 2));
        assert_eq!(ws.count(4), 0);
    }

    #[test]
    fn test_watches_of_connection_in_registration_order() {
        let ws = registry();
        assert_eq!(tokens(ws.of_conn(1)), vec![(1, "1a"), (1, "1b")]);
        assert_eq!(tokens(ws.of_conn(2)), vec![(2, "2a"), (2, "2b")]);
        assert_eq!(tokens(ws.of_conn(3)), vec![(3, "3a"), (3, "3b")]);
        assert!(ws.of_conn(9).is_empty());
    }

    #[test]
    fn test_watches_removing_one_keeps_the_others_on_its_path() {
        let mut ws = registry();
        assert!(ws.remove(1, "/p", "1a"));
        assert!(!ws.remove(1, "/p", "1a"), "already gone");
        assert_eq!(ws.len(), 5);
        assert_eq!(
            tokens(ws.matching("/p/x")),
            vec![(2, "2a"), (3, "3b")],
            "the other watches on /p still fire"
        );
        assert_eq!(
            tokens(ws.matching("/p/q")),
            vec![(2, "2a"), (3, "3a"), (1, "1b"), (3, "3b")]
        );
        // The last watch on a path gone: nothing is left below it.
        assert!(ws.remove(2, "/z", "2b"));
        assert!(ws.matching("/z").is_empty());
        assert!(ws.below("/").iter().all(|w| w.abs != "/z"));
    }

    #[test]
    fn test_watches_removing_a_connection_leaves_the_others() {
        let mut ws = registry();
        ws.remove_conn(2);
        assert_eq!(ws.len(), 4);
        assert_eq!(ws.count(2), 0);
        assert!(ws.of_conn(2).is_empty());
        assert_eq!(
            tokens(ws.matching("/p/q")),
            vec![(1, "1a"), (3, "3a"), (1, "1b"), (3, "3b")]
        );
        assert!(ws.matching("/z").is_empty());
        assert_eq!(tokens(ws.of_conn(1)), vec![(1, "1a"), (1, "1b")]);
        assert_eq!(tokens(ws.of_conn(3)), vec![(3, "3a"), (3, "3b")]);
        ws.remove_conn(1);
        ws.remove_conn(3);
        assert!(ws.is_empty());
        assert_eq!(ws.len(), 0);
    }

    #[test]
    fn test_watches_below_a_path_and_depth() {
        let ws = registry();
        assert_eq!(
            tokens(ws.below("/p")),
            vec![(3, "3a"), (1, "1b")],
            "strictly below, ordered by path"
        );
        assert_eq!(ws.below("/").len(), 6);
        assert!(ws.below("/p/q").is_empty());
        let mut d = w(1, "/d", "t");
        d.depth = Some(1);
        assert!(d.within_depth("/d"));
        assert!(d.within_depth("/d/a"));
        assert!(!d.within_depth("/d/a/b"));
        d.relative_prefix = Some("/local/domain/1/".to_string());
        assert_eq!(d.event_path("/local/domain/1/x"), "x");
        assert_eq!(d.event_path("/other"), "/other");
    }
}

// ---- what the engine tells about itself -------------------------------------

mod accessors {
    use super::*;

    #[test]
    fn test_engine_reports_its_config_requests_and_watches() {
        let mut h = H::with(Config {
            priv_domid: 3,
            watch_event_timeout_ms: 1234,
            ..Config::default()
        });
        assert_eq!(h.e.config().priv_domid, 3);
        assert_eq!(h.e.config().watch_event_timeout_ms, 1234);
        assert_eq!(h.e.requests(), 0);
        assert_eq!(h.e.watch_count(), 0);
        h.read(SOCK, 0, "/").unwrap();
        h.req(SOCK, MsgType::Watch, 0, &["/a", "t"]).unwrap();
        h.req(SOCK, MsgType::Watch, 0, &["/b", "t"]).unwrap();
        assert_eq!(h.raw(SOCK, 9999, 0, vec![]), Err(XsErrno::ENOSYS));
        assert_eq!(h.e.requests(), 4, "refused ones count too");
        assert_eq!(h.e.watch_count(), 2);
    }

    /// The access log writes each request's outcome from `last_result`:
    /// success, the error sent, or nothing yet while an INTRODUCE waits.
    #[test]
    fn test_engine_last_result_is_the_outcome_of_the_last_request() {
        let mut h = H::new();
        assert_eq!(h.e.last_result(), None);
        h.write(SOCK, 0, "/a", "v").unwrap();
        assert_eq!(h.e.last_result(), Some(Ok(())));
        assert_eq!(h.read(SOCK, 0, "/nothing"), Err(XsErrno::ENOENT));
        assert_eq!(h.e.last_result(), Some(Err(XsErrno::ENOENT)));
        let msg = Message::new(MsgType::Introduce, 7, 0, build_args(&[b"5", b"1", b"1"])).unwrap();
        h.e.handle(Input::Request {
            conn: SOCK,
            msg: &msg,
        });
        assert_eq!(h.e.last_result(), None, "answered later");
    }
}

// ---- limits at their exact values -------------------------------------------

mod boundaries {
    use super::*;

    /// A reply of exactly `PAYLOAD_MAX` octets is sent; only a longer one
    /// becomes E2BIG.
    #[test]
    fn test_reply_of_exactly_payload_max_is_sent() {
        let mut h = H::new();
        let max = xenring::wire::PAYLOAD_MAX;
        // 64 children with 63-octet names: 64 × (63 + NUL) octets listed.
        let names: Vec<String> = (0..64).map(|i| format!("{i:063}")).collect();
        assert_eq!(names.len() * 64, max);
        for n in &names {
            h.write(SOCK, 0, &format!("/d/{n}"), "").unwrap();
        }
        let listing = h.req(SOCK, MsgType::Directory, 0, &["/d"]).unwrap();
        assert_eq!(listing.len(), max);
        h.write(SOCK, 0, "/d/x", "").unwrap();
        assert_eq!(
            h.req(SOCK, MsgType::Directory, 0, &["/d"]),
            Err(XsErrno::E2BIG)
        );
    }

    /// Every request a transaction logs counts, reads too (C counts the
    /// nodes a transaction accessed); a read repeating one logged since
    /// the last write, with the same reply, is not logged, so not counted.
    #[test]
    fn test_transaction_nodes_quota_counts_every_logged_request() {
        let mut config = Config::default();
        config.quotas.set_hard(QuotaKind::TransactionNodes, 4);
        let mut h = H::with(config);
        let d5 = h.dom(5);
        h.req(SOCK, MsgType::Mkdir, 0, &["/local/domain/5"])
            .unwrap();
        h.perms(SOCK, "/local/domain/5", &["n5"]).unwrap();
        let tx = h.tx_start(d5);
        for i in 0..2 {
            assert_eq!(h.write(d5, tx, &format!("k{i}"), "v"), ok(), "write {i}");
            for _ in 0..5 {
                assert_eq!(h.read(d5, tx, "k0"), Ok(b"v".to_vec()), "repeats are free");
            }
        }
        assert_eq!(h.read(d5, tx, "k2"), Err(XsErrno::ENOSPC), "a fifth read");
        assert_eq!(h.write(d5, tx, "k3", "v"), Err(XsErrno::ENOSPC));
        assert_eq!(
            h.req(d5, MsgType::Rm, tx, &["k0"]),
            Err(XsErrno::ENOSPC),
            "RM counts as a write"
        );
        assert_eq!(h.read(d5, tx, "k0"), Ok(b"v".to_vec()), "logged ones go on");
        assert_eq!(h.tx_end(d5, tx, true), ok());
        assert_eq!(h.read(d5, 0, "k1"), Ok(b"v".to_vec()));
        assert_eq!(h.read(d5, 0, "k3"), Err(XsErrno::ENOENT));
        // The privileged domain is exempt.
        let tx = h.tx_start(SOCK);
        for i in 0..5 {
            assert_eq!(h.write(SOCK, tx, &format!("/t{i}"), "v"), ok());
        }
        assert_eq!(h.tx_end(SOCK, tx, true), ok());
    }

    #[test]
    fn test_watch_event_of_exactly_payload_max_is_sent() {
        let mut h = H::new();
        // "/b\0" + token + "\0" is PAYLOAD_MAX bytes; "/bb" one more.
        let token = "t".repeat(xenring::wire::PAYLOAD_MAX - 4);
        h.req(SOCK, MsgType::Watch, 0, &["/", &token]).unwrap();
        h.events(SOCK);
        h.write(SOCK, 0, "/b", "").unwrap();
        h.write(SOCK, 0, "/bb", "").unwrap();
        assert_eq!(h.events(SOCK), vec![H::ev("/b", &token)]);
        let logs = h.logs();
        assert_eq!(logs.len(), 1, "{logs:?}");
        assert!(logs[0].contains("/bb"), "{logs:?}");
    }
}

// ---- committing a transaction the store did not move under ------------------

mod unmoved_commit {
    use super::*;

    /// Nothing else changed the store: the commit takes the transaction's
    /// own result as answered (quotas are checked when a request runs, as
    /// C xenstored does, not again at commit), so lowering a quota
    /// meanwhile does not turn it into EAGAIN.
    #[test]
    fn test_transaction_unmoved_store_commits_as_answered() {
        let mut h = H::new();
        let d5 = h.dom(5);
        h.req(SOCK, MsgType::Mkdir, 0, &["/local/domain/5"])
            .unwrap();
        h.perms(SOCK, "/local/domain/5", &["n5"]).unwrap();
        let tx = h.tx_start(d5);
        assert_eq!(h.write(d5, tx, "a", "1"), ok());
        assert_eq!(h.write(d5, tx, "b", "2"), ok());
        assert_eq!(
            h.req(SOCK, MsgType::SetQuota, 0, &["5", "nodes", "1"]),
            ok()
        );
        assert_eq!(h.tx_end(d5, tx, true), ok());
        assert_eq!(h.read(d5, 0, "b"), Ok(b"2".to_vec()));
        // Once the store has moved, the requests are run again, under the
        // quota of now.
        let tx = h.tx_start(d5);
        assert_eq!(h.write(d5, tx, "c", "3"), Err(XsErrno::ENOSPC));
        h.req(SOCK, MsgType::SetQuota, 0, &["5", "nodes", "0"])
            .unwrap();
        let tx2 = h.tx_start(d5);
        assert_eq!(h.write(d5, tx2, "c", "3"), ok());
        h.req(SOCK, MsgType::SetQuota, 0, &["5", "nodes", "1"])
            .unwrap();
        h.write(SOCK, 0, "/elsewhere", "").unwrap();
        assert_eq!(h.tx_end(d5, tx2, true), Err(XsErrno::EAGAIN));
        assert_eq!(h.tx_end(d5, tx, false), ok());
    }
}

/// The replay test hook (`--test-alter-reply N`): exactly the Nth reply
/// is changed, watch events are not counted.
mod alter_reply {
    use super::*;

    #[test]
    fn test_alter_reply_changes_the_nth_reply_only() {
        let mut h = H::with(Config {
            test_alter_reply: Some(3),
            ..Config::default()
        });
        assert_eq!(h.write(SOCK, 0, "/a", "x"), ok());
        // Reply 2, and a watch event that is not a reply.
        assert_eq!(h.req(SOCK, MsgType::Watch, 0, &["/a", "t"]), ok());
        assert_eq!(h.req(SOCK, MsgType::Read, 0, &["/a"]), Ok(b"X".to_vec()));
        assert_eq!(h.req(SOCK, MsgType::Read, 0, &["/a"]), Ok(b"x".to_vec()));
    }

    #[test]
    fn test_alter_reply_gives_an_empty_reply_a_byte() {
        let mut h = H::with(Config {
            test_alter_reply: Some(2),
            ..Config::default()
        });
        assert_eq!(h.write(SOCK, 0, "/e", ""), ok());
        assert_eq!(h.req(SOCK, MsgType::Read, 0, &["/e"]), Ok(b"!".to_vec()));
    }
}

// ---- one byte account per domain (engine/account.rs) ------------------------

mod account {
    use super::*;

    /// Guest 5 with its home (owned by it), memory quota `memory`.
    fn guest(memory: u64) -> (H, ConnId) {
        let mut config = Config::default();
        config.quotas.set_hard(QuotaKind::Memory, memory);
        let mut h = H::with(config);
        let d5 = h.dom(5);
        h.req(SOCK, MsgType::Mkdir, 0, &["/local/domain/5"])
            .unwrap();
        h.perms(SOCK, "/local/domain/5", &["n5"]).unwrap();
        (h, d5)
    }

    fn total(h: &H, d: DomId) -> u64 {
        h.e.usage(d).total()
    }

    fn logged(h: &H, conn: ConnId, tx: u32) -> usize {
        h.e.conns[&conn].transactions[&tx].ops.len()
    }

    /// The privileged domain's figure (memreport, `quota 0`) is its
    /// sockets' charges, not a guest's; a guest's is its ring's.
    #[test]
    fn test_account_usage_of_dom0_is_its_sockets_of_a_guest_its_ring() {
        let (mut h, d5) = guest(0);
        // Two replies left queued for dom0's socket, three for the guest.
        for (conn, n) in [(SOCK, 2), (d5, 3)] {
            for _ in 0..n {
                let msg = Message::new(MsgType::Read, 1, 0, build_args(&[b"/"])).unwrap();
                h.e.handle(Input::Request { conn, msg: &msg });
            }
        }
        let queued = |h: &H, conn| h.e.conns[&conn].out_bytes as u64;
        assert!(queued(&h, SOCK) > 0 && queued(&h, d5) > queued(&h, SOCK));
        assert_eq!(h.e.usage(0).output, queued(&h, SOCK));
        assert_eq!(h.e.usage(5).output, queued(&h, d5));
    }

    /// Ten transactions each writing what it can: all of them together
    /// stay within the one quota (each view used to be checked on its own,
    /// ten times the quota).
    #[test]
    fn test_account_transactions_share_one_memory_quota() {
        const QUOTA: u64 = 20_000;
        let (mut h, d5) = guest(QUOTA);
        let value = "v".repeat(1000);
        let txs: Vec<u32> = (0..10).map(|_| h.tx_start(d5)).collect();
        let mut written = 0;
        for (t, &tx) in txs.iter().enumerate() {
            for i in 0.. {
                match h.write(d5, tx, &format!("t{t}/k{i}"), &value) {
                    Ok(_) => written += 1,
                    Err(e) => {
                        assert_eq!(e, XsErrno::ENOMEM, "transaction {t} write {i}");
                        break;
                    }
                }
            }
            assert!(
                total(&h, 5) <= QUOTA,
                "{} after transaction {t}",
                total(&h, 5)
            );
        }
        // A transaction write costs the node in its view and its logged
        // payload: about 2 KiB each, so about 10 in all, not 10 × 20.
        assert!((5..=20).contains(&written), "{written} writes");
        // Aborting them gives it all back; the domain may write again.
        for &tx in &txs {
            assert_eq!(h.tx_end(d5, tx, false), ok());
        }
        assert_eq!(total(&h, 5), h.e.store().account(5).memory);
        assert_eq!(h.write(d5, 0, "k", &value), ok());
        h.check();
    }

    /// A node write outside a transaction is refused while the domain's
    /// open transactions fill its quota, and allowed again once they end.
    #[test]
    fn test_account_node_write_checked_against_the_sum() {
        const QUOTA: u64 = 10_000;
        let (mut h, d5) = guest(QUOTA);
        h.write(d5, 0, "fixed", &"v".repeat(100)).unwrap();
        let tx = h.tx_start(d5);
        let value = "v".repeat(1500);
        let mut i = 0;
        while h.write(d5, tx, &format!("k{i}"), &value).is_ok() {
            i += 1;
        }
        assert!(i > 0);
        while h.write(d5, tx, &format!("k{i}"), "").is_ok() {
            i += 1;
        }
        assert_eq!(h.write(d5, 0, "outside", &value), Err(XsErrno::ENOMEM));
        // What does not grow its nodes is still allowed (the limit left
        // is 1 byte, not 0, which would be unlimited).
        assert_eq!(h.write(d5, 0, "fixed", &"w".repeat(100)), ok());
        assert_eq!(h.tx_end(d5, tx, true), ok());
        assert_eq!(h.read(d5, 0, "k0"), Ok(value.clone().into_bytes()));
        assert!(total(&h, 5) <= QUOTA);
    }

    /// A guest reading one node over and over in a transaction: logged
    /// once, and its commit still checks what it read.
    #[test]
    fn test_account_repeated_read_in_transaction_logged_once() {
        let (mut h, d5) = guest(0);
        h.write(d5, 0, "big", &"b".repeat(2000)).unwrap();
        let tx = h.tx_start(d5);
        for _ in 0..1000 {
            assert_eq!(h.read(d5, tx, "big"), Ok("b".repeat(2000).into_bytes()));
        }
        assert_eq!(logged(&h, d5, tx), 1);
        let charged = h.e.conns[&d5].transactions[&tx].charged();
        assert!(charged < 2200, "{charged} bytes for one logged read");
        // A write in between: the next read is logged again (its re-run
        // follows the write), then once more only.
        h.write(d5, tx, "other", "x").unwrap();
        for _ in 0..10 {
            h.read(d5, tx, "big").unwrap();
        }
        assert_eq!(logged(&h, d5, tx), 3);
        // A different reply (the read failed, say) is not a repeat.
        assert_eq!(h.read(d5, tx, "gone"), Err(XsErrno::ENOENT));
        h.write(SOCK, 0, "/local/domain/5/unrelated", "").unwrap();
        // The store moved on: the commit re-runs the log; what it read
        // still holds, so it commits.
        assert_eq!(h.tx_end(d5, tx, true), ok());
        assert_eq!(h.read(d5, 0, "other"), Ok(b"x".to_vec()));
        // And when what it read changed, EAGAIN, as before.
        let tx = h.tx_start(d5);
        for _ in 0..5 {
            h.read(d5, tx, "big").unwrap();
        }
        h.write(d5, tx, "after", "y").unwrap();
        h.write(SOCK, 0, "/local/domain/5/big", "changed").unwrap();
        assert_eq!(h.tx_end(d5, tx, true), Err(XsErrno::EAGAIN));
        assert_eq!(h.read(d5, 0, "after"), Err(XsErrno::ENOENT));
    }

    /// Reads that cannot be de-duplicated (a write between each) fill the
    /// memory quota, then get ENOMEM; the transaction still commits.
    #[test]
    fn test_account_transaction_log_charged_until_enomem() {
        const QUOTA: u64 = 50_000;
        let (mut h, d5) = guest(QUOTA);
        h.write(d5, 0, "big", &"b".repeat(2000)).unwrap();
        let tx = h.tx_start(d5);
        let mut refused = None;
        let mut last = 0;
        for i in 0..200 {
            if h.write(d5, tx, "w", &i.to_string()).is_err() {
                refused = Some(i);
                break;
            }
            last = i;
            if let Err(e) = h.read(d5, tx, "big") {
                assert_eq!(e, XsErrno::ENOMEM);
                refused = Some(i);
                break;
            }
        }
        let refused = refused.expect("the log is charged");
        assert!((10..=30).contains(&refused), "refused after {refused}");
        assert!(total(&h, 5) <= QUOTA);
        assert_eq!(h.tx_end(d5, tx, true), ok());
        assert_eq!(h.read(d5, 0, "w"), Ok(last.to_string().into_bytes()));
    }

    /// Watches are charged path and token, and a WATCH past the quota is
    /// ENOMEM; UNWATCH gives it back.
    #[test]
    fn test_account_watches_charged_path_and_token() {
        const QUOTA: u64 = 10_000;
        let (mut h, d5) = guest(QUOTA);
        let before = total(&h, 5);
        h.req(d5, MsgType::Watch, 0, &["/a", "tok"]).unwrap();
        h.events(d5);
        assert_eq!(total(&h, 5), before + 5);
        // A guest's token must leave room for its events' paths (2,026
        // bytes at most for an absolute watch with the default path-max).
        let token = "t".repeat(2000);
        let each = 3 + 2000; // "/wN" and the token
        let fit = (QUOTA - total(&h, 5)) / each;
        let mut set = 0;
        let err = loop {
            match h.req(d5, MsgType::Watch, 0, &[&format!("/w{set}"), &token]) {
                Ok(_) => set += 1,
                Err(e) => break e,
            }
            h.events(d5);
        };
        assert_eq!(err, XsErrno::ENOMEM);
        assert_eq!(set, fit, "as many 2 KB watches as fit the rest of 10 KB");
        assert_eq!(fit, 4);
        assert!(total(&h, 5) <= QUOTA);
        h.req(d5, MsgType::Unwatch, 0, &["/w0", &token]).unwrap();
        assert_eq!(
            h.req(d5, MsgType::Watch, 0, &["/again", &token]),
            ok(),
            "room again"
        );
        // The privileged domain is exempt.
        for i in 0..5 {
            h.req(SOCK, MsgType::Watch, 0, &[&format!("/p{i}"), &token])
                .unwrap();
        }
    }

    /// The soft quota's shortcut: sure only when even a watch quota's
    /// worth of the longest watches would not cross the limit.
    #[test]
    fn test_account_surely_within_bounds_the_watches_by_their_quota() {
        let (mut h, d5) = guest(0);
        h.req(d5, MsgType::Watch, 0, &["/a", "tok"]).unwrap();
        h.events(d5);
        let most = 128 * xenring::wire::PAYLOAD_MAX as u64;
        let nodes = h.e.store().account(5).memory;
        assert!(h.e.surely_within(5, nodes + most));
        assert!(!h.e.surely_within(5, nodes + most - 1));
        assert!(h.e.surely_within(5, 0), "no limit");
        h.e.config.quotas.set_hard(QuotaKind::Watches, 0);
        assert!(!h.e.surely_within(5, u64::MAX), "no watch quota: no bound");
    }

    /// Queued output is counted (`quota <domid>`, `memreport`), never
    /// refused for.
    #[test]
    fn test_account_queued_output_counted_not_refused() {
        let (mut h, d5) = guest(0);
        h.req(d5, MsgType::Watch, 0, &["/local/domain/5", "t"])
            .unwrap();
        // Events queue up unread.
        for i in 0..10 {
            h.write(SOCK, 0, &format!("/local/domain/5/k{i}"), "v")
                .unwrap();
        }
        let usage = h.e.usage(5);
        assert!(usage.output > 0, "{usage:?}");
        let queued: u64 = h.e.queued_messages(d5).map(|m| m.wire_len() as u64).sum();
        assert_eq!(usage.output, queued);
        let quota =
            String::from_utf8(h.req(SOCK, MsgType::Control, 0, &["quota", "5"]).unwrap()).unwrap();
        assert!(
            quota.contains(&format!("memory          : {:>8}\n", usage.total())),
            "{quota}"
        );
        let report =
            String::from_utf8(h.req(SOCK, MsgType::Control, 0, &["memreport"]).unwrap()).unwrap();
        assert!(
            report.contains(&format!("\ndomain 5: 11 nodes, {} bytes\n", usage.total())),
            "{report}"
        );
        // To a file, with what the bytes are made of.
        let msg = Message::new(
            MsgType::Control,
            7,
            0,
            build_args(&[b"memreport", b"/tmp/report"]),
        )
        .unwrap();
        h.e.handle(Input::Request {
            conn: SOCK,
            msg: &msg,
        });
        let actions = h.e.take_actions();
        let [Action::MemReport { report, .. }] = actions.as_slice() else {
            panic!("{actions:?}");
        };
        assert!(
            report.contains(&format!(
                "\ndomain 5: 11 nodes, {} bytes ({} nodes, 0 transactions, {} watches, {queued} output)\n",
                usage.total(),
                usage.nodes,
                usage.watches
            )),
            "{report}"
        );
        h.events(d5);
        let read = h.e.usage(5);
        assert_eq!(read.output, 0);
        assert_eq!(read.total(), usage.nodes + "/local/domain/5t".len() as u64);
    }
}
