//! Domains (C's domain.c): INTRODUCE (carried out by the shell, answered
//! when it has mapped the ring), RELEASE, RESUME, SET_TARGET, the feature
//! and quota requests, GET_DOMAIN_PATH and IS_DOMAIN_INTRODUCED, and what
//! the hypervisor says of a domain's state.

use alloc::collections::BTreeSet;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use xenring::codec::split_args;
use xenring::{DomId, Header, MsgType, XsErrno};

use super::dispatch::{Reply, Request};
use super::ops::{self, one_arg, Change};
use super::quota::QuotaKind;
use super::{
    parse_domid, parse_num, reply, text, Action, ConnId, ConnKind, Engine, Input, SERVER_FEATURES,
};

/// An introduced domain.
#[derive(Debug, Clone)]
pub(super) struct Domain {
    /// Its ring's connection.
    pub(super) conn: ConnId,
    /// The ring frame it was introduced with.
    pub(super) mfn: u64,
    /// Its remote event-channel port.
    pub(super) port: u32,
    /// `@releaseDomain` has fired for its shutdown (until RESUME).
    pub(super) shutdown_seen: bool,
    /// The domain it acts for (`SET_TARGET`).
    pub(super) target: Option<DomId>,
    /// Its `SET_FEATURE` bits.
    pub(super) features: u32,
}

/// An INTRODUCE the shell is carrying out ([`Action::Introduce`]): what
/// to answer, and to whom, when it reports ([`Input::Introduced`]).
#[derive(Debug, Clone)]
pub(super) struct PendingIntroduce {
    /// The connection that asked.
    pub(super) conn: ConnId,
    /// The request's header, to answer it.
    pub(super) header: Header,
    /// The domain being introduced.
    pub(super) domid: DomId,
    /// Its ring frame.
    pub(super) mfn: u64,
    /// Its port.
    pub(super) port: u32,
}

fn ok() -> Reply {
    Ok(Some(b"OK\0".to_vec()))
}

impl Engine {
    /// `INTRODUCE <domid> <mfn> <port>`: the shell maps the ring; the
    /// answer waits for [`Input::Introduced`].
    pub(super) fn introduce(&mut self, req: &Request<'_>) -> Reply {
        let (conn, hdr, payload) = (req.conn, &req.hdr, req.payload);
        let args: Vec<&[u8]> = split_args(payload).collect();
        if args.len() < 3 {
            return Err(XsErrno::EINVAL);
        }
        let domid = parse_domid(args[0])?;
        // "<mfn> must be a machine page in that domain represented in
        // signed decimal (!)".
        let mfn = core::str::from_utf8(args[1])
            .ok()
            .and_then(|s| {
                s.parse::<i64>()
                    .ok()
                    .map(|v| v as u64)
                    .or_else(|| s.parse::<u64>().ok())
            })
            .ok_or(XsErrno::EINVAL)?;
        let port: u32 = parse_num(args[2])?;
        if let Some(dom) = self.domains.get(&domid) {
            return if dom.mfn == mfn && dom.port == port {
                Ok(Some(b"OK\0".to_vec()))
            } else {
                Err(XsErrno::EEXIST)
            };
        }
        if self.pending_introduce.values().any(|p| p.domid == domid) {
            return Err(XsErrno::EBUSY);
        }
        let token = self.next_token;
        self.next_token = self.next_token.wrapping_add(1);
        self.pending_introduce.insert(
            token,
            PendingIntroduce {
                conn,
                header: *hdr,
                domid,
                mfn,
                port,
            },
        );
        self.actions.push(Action::Introduce {
            token,
            domid,
            mfn,
            port,
        });
        Ok(None)
    }

    pub(super) fn introduced(&mut self, token: u64, result: Result<ConnId, XsErrno>) {
        let Some(PendingIntroduce {
            conn,
            header: hdr,
            domid,
            mfn,
            port,
        }) = self.pending_introduce.remove(&token)
        else {
            return;
        };
        match result {
            Ok(ring) => {
                self.handle(Input::Connect {
                    conn: ring,
                    kind: ConnKind::Domain(domid),
                });
                self.domains.insert(
                    domid,
                    Domain {
                        conn: ring,
                        mfn,
                        port,
                        shutdown_seen: false,
                        target: None,
                        features: 0,
                    },
                );
                self.queue(
                    conn,
                    reply(&hdr, MsgType::Introduce, b"OK\0".to_vec()),
                    false,
                );
                self.fire_special("@introduceDomain", domid);
            }
            Err(e) => self.reply_err(conn, &hdr, e),
        }
    }

    /// Everything kept of a domain goes, on its death and on RELEASE
    /// alike (C's `destroy_domain`, which XS_RELEASE reaches by freeing the
    /// connection): its ring, its home, the nodes it owns elsewhere
    /// (deleted, as C does; with `keep_orphans` given to the privileged
    /// domain), every permission entry naming it, its per-domain quotas,
    /// the target of a domain that acted for it (SET_TARGET);
    /// the watches of each removed node fire as for RM, then
    /// `@releaseDomain` if it was introduced. A domain with this domid
    /// later starts from nothing.
    pub(super) fn destroy_domain(&mut self, domid: DomId) {
        // Its nodes go: that is no news for the log.
        self.over_soft.remove(&domid);
        self.soft_log.remove(&domid);
        let introduced = self.domains.remove(&domid);
        if let Some(dom) = &introduced {
            self.forget_conn(dom.conn);
            self.actions.push(Action::Release {
                conn: dom.conn,
                domid,
            });
        }
        let mut events = Vec::new();
        // The home goes whoever owns it (libxl makes it dom0's).
        events.extend(self.remove_subtree(&format!("/local/domain/{domid}")));
        if !self.config.keep_orphans {
            // C's domain_tree_remove: every node it owns, with what is
            // below it (whoever owns that).
            for path in self.store.owned_by(domid) {
                events.extend(self.remove_subtree(&path));
            }
        }
        // What is left naming it: entries dropped, nodes it owned (with
        // `keep_orphans`) and the special nodes given to the privileged
        // domain, so that a new domain with this domid inherits nothing.
        self.store.forget_domain(domid, self.config.priv_domid);
        self.domain_quotas.remove(&domid);
        // Its write credit goes back to the reserve (C's
        // wrl_domain_destroy), so a domain reusing the domid starts fresh.
        self.throttle.forget(domid);
        // A device model that acted for it acts for nobody now, not for
        // the next domain with this domid.
        for dom in self.domains.values_mut() {
            if dom.target == Some(domid) {
                dom.target = None;
            }
        }
        self.check_soft_memory(&events);
        if introduced.is_some() {
            self.fire_special("@releaseDomain", domid);
        }
    }

    /// Removes `path` and what is below it, if it is there, firing the
    /// watches an RM of it fires; returns the change for the soft quota.
    fn remove_subtree(&mut self, path: &str) -> Option<Change> {
        let event = ops::remove_tree(&mut self.store, path)?;
        self.fire(&event);
        Some(event)
    }

    /// `RELEASE <domid>`: the domain is forgotten as if it had died
    /// ([`Engine::destroy_domain`]), as C does.
    pub(super) fn release_request(&mut self, req: &Request<'_>) -> Reply {
        let domid = parse_domid(one_arg(req.payload)?)?;
        // C refuses to release or resume the privileged domain.
        if domid == self.config.priv_domid {
            return Err(XsErrno::EINVAL);
        }
        if !self.domains.contains_key(&domid) {
            return Err(XsErrno::ENOENT);
        }
        self.destroy_domain(domid);
        ok()
    }

    /// `RESUME <domid>`: its next shutdown fires `@releaseDomain` again.
    pub(super) fn resume(&mut self, req: &Request<'_>) -> Reply {
        let domid = parse_domid(one_arg(req.payload)?)?;
        if domid == self.config.priv_domid {
            return Err(XsErrno::EINVAL);
        }
        let dom = self.domains.get_mut(&domid).ok_or(XsErrno::ENOENT)?;
        dom.shutdown_seen = false;
        ok()
    }

    /// `GET_DOMAIN_PATH <domid>`.
    pub(super) fn get_domain_path(&mut self, req: &Request<'_>) -> Reply {
        let domid = parse_domid(one_arg(req.payload)?)?;
        let mut out = format!("/local/domain/{domid}").into_bytes();
        out.push(0);
        Ok(Some(out))
    }

    /// `IS_DOMAIN_INTRODUCED <domid>`: `T` or `F`.
    pub(super) fn is_domain_introduced(&mut self, req: &Request<'_>) -> Reply {
        let domid = parse_domid(one_arg(req.payload)?)?;
        let known = domid == self.config.priv_domid || self.domains.contains_key(&domid);
        Ok(Some(if known {
            b"T\0".to_vec()
        } else {
            b"F\0".to_vec()
        }))
    }

    /// `SET_TARGET <domid> <target>`: `domid` acts for `target`.
    pub(super) fn set_target(&mut self, req: &Request<'_>) -> Reply {
        let args: Vec<&[u8]> = split_args(req.payload).collect();
        if args.len() != 2 {
            return Err(XsErrno::EINVAL);
        }
        let domid = parse_domid(args[0])?;
        let target = parse_domid(args[1])?;
        if !self.domains.contains_key(&target) && target != self.config.priv_domid {
            return Err(XsErrno::ENOENT);
        }
        let dom = self.domains.get_mut(&domid).ok_or(XsErrno::ENOENT)?;
        dom.target = Some(target);
        ok()
    }

    /// `GET_FEATURE [<domid>]`: the server's features, or a domain's.
    pub(super) fn get_feature(&mut self, req: &Request<'_>) -> Reply {
        let args: Vec<&[u8]> = split_args(req.payload).filter(|a| !a.is_empty()).collect();
        let value = match args.as_slice() {
            [] => SERVER_FEATURES,
            [d] => {
                self.domains
                    .get(&parse_domid(d)?)
                    .ok_or(XsErrno::ENOENT)?
                    .features
            }
            _ => return Err(XsErrno::EINVAL),
        };
        let mut out = value.to_string().into_bytes();
        out.push(0);
        Ok(Some(out))
    }

    /// `SET_FEATURE <domid> <value>`: only bits the server has.
    pub(super) fn set_feature(&mut self, req: &Request<'_>) -> Reply {
        let args: Vec<&[u8]> = split_args(req.payload).collect();
        if args.len() != 2 {
            return Err(XsErrno::EINVAL);
        }
        let domid = parse_domid(args[0])?;
        let value: u32 = parse_num(args[1])?;
        if value & !SERVER_FEATURES != 0 {
            return Err(XsErrno::EINVAL);
        }
        self.domains
            .get_mut(&domid)
            .ok_or(XsErrno::ENOENT)?
            .features = value;
        ok()
    }

    /// `GET_QUOTA [[<domid>] <name>]`.
    pub(super) fn get_quota_request(&mut self, req: &Request<'_>) -> Reply {
        self.get_quota(req.payload).map(Some)
    }

    /// `SET_QUOTA [<domid>] <name> <value>`.
    pub(super) fn set_quota_request(&mut self, req: &Request<'_>) -> Reply {
        self.set_quota(req.payload)?;
        ok()
    }

    pub(super) fn domain_state(&mut self, domid: DomId, shutdown: bool, dying: bool) {
        if dying {
            self.destroy_domain(domid);
        } else if shutdown {
            let fire = match self.domains.get_mut(&domid) {
                Some(dom) if !dom.shutdown_seen => {
                    dom.shutdown_seen = true;
                    true
                }
                _ => false,
            };
            if fire {
                self.fire_special("@releaseDomain", domid);
            }
        }
    }

    /// The domains whose death the shell should report
    /// ([`Input::DomainState`]): those introduced, those owning nodes and
    /// those with quotas of their own, but the privileged domain; by domid.
    pub fn known_domains(&self) -> BTreeSet<DomId> {
        let mut known: BTreeSet<DomId> = self.domains.keys().copied().collect();
        known.extend(self.store.accounts().into_iter().map(|(d, _)| d));
        known.extend(self.domain_quotas.keys().copied());
        known.remove(&self.config.priv_domid);
        known
    }

    pub(super) fn quota_args(
        &self,
        payload: &[u8],
    ) -> Result<(Option<DomId>, Vec<String>), XsErrno> {
        let args: Vec<String> = split_args(payload)
            .filter(|a| !a.is_empty())
            .map(text)
            .collect::<Result<_, _>>()?;
        Ok((None, args))
    }

    pub(super) fn get_quota(&self, payload: &[u8]) -> Result<Vec<u8>, XsErrno> {
        let (_, args) = self.quota_args(payload)?;
        let text = match args.as_slice() {
            [] => QuotaKind::ALL
                .iter()
                .map(|q| q.name())
                .collect::<Vec<_>>()
                .join(" "),
            [name] => {
                let q = QuotaKind::from_name(name).ok_or(XsErrno::EINVAL)?;
                self.config.quotas.hard(q).to_string()
            }
            [domid, name] => {
                let d = parse_domid(domid.as_bytes())?;
                let q = QuotaKind::from_name(name).ok_or(XsErrno::EINVAL)?;
                self.limit(d, q).to_string()
            }
            _ => return Err(XsErrno::EINVAL),
        };
        let mut out = text.into_bytes();
        out.push(0);
        Ok(out)
    }

    pub(super) fn set_quota(&mut self, payload: &[u8]) -> Result<(), XsErrno> {
        let (_, args) = self.quota_args(payload)?;
        match args.as_slice() {
            [name, value] => {
                let q = QuotaKind::from_name(name).ok_or(XsErrno::EINVAL)?;
                let v: u64 = value.parse().map_err(|_| XsErrno::EINVAL)?;
                self.config.quotas.set_hard(q, v);
            }
            [domid, name, value] => {
                let d = parse_domid(domid.as_bytes())?;
                let q = QuotaKind::from_name(name).ok_or(XsErrno::EINVAL)?;
                let v: u64 = value.parse().map_err(|_| XsErrno::EINVAL)?;
                self.domain_quotas.entry(d).or_default().hard.insert(q, v);
            }
            _ => return Err(XsErrno::EINVAL),
        }
        Ok(())
    }

    /// The domain an INTRODUCE waiting for the shell is about.
    pub fn pending_introduce_domid(&self, token: u64) -> Option<DomId> {
        self.pending_introduce.get(&token).map(|p| p.domid)
    }

    /// Registers a domain's ring connection carried over from a stream (the
    /// shell has re-mapped the ring and re-bound its port); `target` is the
    /// record's target domain (`SET_TARGET`), if any.
    pub fn restore_ring(
        &mut self,
        conn: ConnId,
        domid: DomId,
        mfn: u64,
        port: u32,
        target: Option<DomId>,
    ) {
        self.handle(Input::Connect {
            conn,
            kind: ConnKind::Domain(domid),
        });
        self.domains.insert(
            domid,
            Domain {
                conn,
                mfn,
                port,
                shutdown_seen: false,
                target,
                features: 0,
            },
        );
    }

    /// The target domain of a domain (`SET_TARGET`), for a stream's
    /// connection records.
    pub fn domain_target(&self, domid: DomId) -> Option<DomId> {
        self.domains.get(&domid).and_then(|d| d.target)
    }

    /// The ring frame and remote port a domain was introduced with.
    pub fn domain_ring(&self, domid: DomId) -> Option<(u64, u32)> {
        self.domains.get(&domid).map(|d| (d.mfn, d.port))
    }
}
