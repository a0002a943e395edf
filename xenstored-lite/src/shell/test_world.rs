//! What the shell's in-process tests share: a daemon in this process, on
//! a mock-xen served by a thread of this process, with clients on its
//! socket and guests on their rings.

use std::ffi::OsString;
use std::io::{self, Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mock_xen::{Connector, DomainRecord, Guest, ServerThread, Toolstack};
use xenring::codec::{build_args, Decoder};
use xenring::{Message, MsgType, Perm, PermKind, XsErrno};

use crate::engine::{Config, ConnId, Engine};
use crate::shell::platform::Platform;
use crate::shell::{Daemon, ShellConfig};

/// How long anything may take (a bound, not a sleep).
pub(crate) const LIMIT: Duration = Duration::from_secs(60);

pub(crate) fn shell_config(dir: &Path) -> ShellConfig {
    ShellConfig {
        socket: dir.join("socket"),
        access_log: None,
        rundir: dir.to_path_buf(),
        exec_args: vec![OsString::from("-N")],
        record_dir: None,
        journal: None,
    }
}

/// A mock-xen, a daemon on it, and a toolstack.
pub(crate) struct World {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) hv: ServerThread,
    pub(crate) ts: Toolstack,
    pub(crate) daemon: Daemon,
}

impl World {
    pub(crate) fn new() -> Self {
        Self::with(|_| {})
    }

    /// A world whose daemon's settings `change` changes.
    pub(crate) fn with(change: impl FnOnce(&mut ShellConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let hv = ServerThread::start(dir.path().join("mock-xen.sock")).unwrap();
        let platform = Platform::mock(&Connector::remote(hv.path())).unwrap();
        let mut config = shell_config(dir.path());
        change(&mut config);
        let daemon = Daemon::new(Engine::new(Config::default()), platform, &config).unwrap();
        let ts = Toolstack::open(&Connector::remote(hv.path())).unwrap();
        Self {
            dir,
            hv,
            ts,
            daemon,
        }
    }

    pub(crate) fn connector(&self) -> Connector {
        Connector::remote(self.hv.path())
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A client on the socket, once the daemon has accepted it.
    pub(crate) fn connect(&mut self) -> Client {
        let socket = self.path("socket");
        connect_to(&mut self.daemon, &socket)
    }

    /// The world without its daemon, dropped as a process that dies (its
    /// hypervisor connection closes: mock-xen closes its ports).
    pub(crate) fn kill_daemon(self) -> (tempfile::TempDir, ServerThread, Toolstack) {
        let World {
            dir,
            hv,
            ts,
            daemon,
        } = self;
        drop(daemon);
        (dir, hv, ts)
    }

    /// A guest created, given its home and introduced by `dom0`.
    pub(crate) fn guest(&mut self, dom0: &mut Client) -> DomainRecord {
        let rec = self.ts.create_domain().unwrap();
        let d = rec.info.domid;
        let home = format!("/local/domain/{d}");
        dom0.ok(
            &mut self.daemon,
            MsgType::Mkdir,
            0,
            build_args(&[home.as_bytes()]),
        );
        let perm = Perm::new(PermKind::None, d).to_string();
        dom0.ok(
            &mut self.daemon,
            MsgType::SetPerms,
            0,
            build_args(&[home.as_bytes(), perm.as_bytes()]),
        );
        let args = [
            d.to_string(),
            rec.store_mfn.to_string(),
            rec.store_port.to_string(),
        ];
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        dom0.ok(&mut self.daemon, MsgType::Introduce, 0, build_args(&args));
        rec
    }
}

/// A client on `daemon`'s socket at `socket`, once it has been accepted.
pub(crate) fn connect_to(d: &mut Daemon, socket: &Path) -> Client {
    let stream = UnixStream::connect(socket).unwrap();
    stream.set_nonblocking(true).unwrap();
    let before: Vec<ConnId> = d.conns.keys().copied().collect();
    until(d, "the client accepted", |d| d.conns.len() > before.len());
    let id = d
        .conns
        .keys()
        .copied()
        .find(|id| !before.contains(id))
        .unwrap();
    Client::new(stream, id)
}

/// Turns `daemon` until `cond` holds (within [`LIMIT`]).
pub(crate) fn until(daemon: &mut Daemon, what: &str, mut cond: impl FnMut(&mut Daemon) -> bool) {
    let deadline = Instant::now() + LIMIT;
    while !cond(daemon) {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        daemon.turn(Some(10)).unwrap();
    }
}

/// A socket client that never blocks: requests go out, answers are read
/// while the daemon turns.
pub(crate) struct Client {
    pub(crate) stream: UnixStream,
    /// The daemon's connection id for it.
    pub(crate) id: ConnId,
    pub(crate) decoder: Decoder,
    /// Every octet received.
    pub(crate) raw: Vec<u8>,
    /// Messages received and not yet taken.
    pub(crate) inbox: Vec<Message>,
    pub(crate) next_req: u32,
}

impl Client {
    pub(crate) fn new(stream: UnixStream, id: ConnId) -> Self {
        Self {
            stream,
            id,
            decoder: Decoder::new(),
            raw: Vec::new(),
            inbox: Vec::new(),
            next_req: 100,
        }
    }

    pub(crate) fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    pub(crate) fn send(&mut self, ty: MsgType, tx: u32, payload: Vec<u8>) -> u32 {
        self.next_req += 1;
        let req = self.next_req;
        self.send_raw(&Message::new(ty, req, tx, payload).unwrap().to_bytes());
        req
    }

    /// Reads what has arrived.
    pub(crate) fn poll(&mut self) -> bool {
        let mut buf = [0u8; 8192];
        let mut got = false;
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return got,
                Ok(n) => {
                    got = true;
                    self.raw.extend_from_slice(&buf[..n]);
                    let mut input = &buf[..n];
                    while let Some(m) = self.decoder.decode(&mut input).unwrap() {
                        self.inbox.push(m);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return got,
                Err(e) => panic!("client read: {e}"),
            }
        }
    }

    /// The answer to request `req` (watch events stay in the inbox).
    pub(crate) fn answer(&mut self, daemon: &mut Daemon, req: u32) -> Message {
        let mut found = None;
        until(daemon, "an answer", |_| {
            self.poll();
            if let Some(at) = self.inbox.iter().position(|m| {
                m.header.req_id == req && m.header.msg_type != MsgType::WatchEvent.raw()
            }) {
                found = Some(self.inbox.remove(at));
            }
            found.is_some()
        });
        found.unwrap()
    }

    pub(crate) fn ask(
        &mut self,
        daemon: &mut Daemon,
        ty: MsgType,
        tx: u32,
        payload: Vec<u8>,
    ) -> Result<Vec<u8>, XsErrno> {
        let req = self.send(ty, tx, payload);
        let m = self.answer(daemon, req);
        if m.header.msg_type == MsgType::Error.raw() {
            Err(XsErrno::from_wire(&m.payload).unwrap())
        } else {
            assert_eq!(m.header.msg_type, ty.raw());
            Ok(m.payload)
        }
    }

    pub(crate) fn ok(
        &mut self,
        daemon: &mut Daemon,
        ty: MsgType,
        tx: u32,
        payload: Vec<u8>,
    ) -> Vec<u8> {
        self.ask(daemon, ty, tx, payload)
            .unwrap_or_else(|e| panic!("{ty:?}: {e:?}"))
    }

    /// `XS_CONTROL live-update ARGS`: the reply text, or the error's name.
    pub(crate) fn live_update(&mut self, daemon: &mut Daemon, args: &[&str]) -> String {
        let mut all: Vec<&[u8]> = vec![b"live-update"];
        all.extend(args.iter().map(|a| a.as_bytes()));
        match self.ask(daemon, MsgType::Control, 0, build_args(&all)) {
            Ok(p) => text(&p),
            Err(e) => format!("{e:?}"),
        }
    }

    /// Fails at once if request `req` was answered already (so that a
    /// wait for something else does not run into its bound).
    pub(crate) fn no_answer_yet(&mut self, req: u32) {
        self.poll();
        if let Some(m) = self.inbox.iter().find(|m| m.header.req_id == req) {
            panic!("answered already: {}", text(&m.payload));
        }
    }

    /// The next watch event: path and token.
    pub(crate) fn watch_event(&mut self, daemon: &mut Daemon) -> (String, String) {
        let mut found = None;
        until(daemon, "a watch event", |_| {
            self.poll();
            if let Some(at) = self
                .inbox
                .iter()
                .position(|m| m.header.msg_type == MsgType::WatchEvent.raw())
            {
                found = Some(self.inbox.remove(at));
            }
            found.is_some()
        });
        let m = found.unwrap();
        let mut parts = xenring::codec::split_args(&m.payload);
        let path = text(parts.next().unwrap());
        let token = text(parts.next().unwrap());
        (path, token)
    }
}

pub(crate) fn text(payload: &[u8]) -> String {
    String::from_utf8_lossy(payload.strip_suffix(&[0]).unwrap_or(payload)).into_owned()
}

/// The guest's blocking client, run on a thread of its own while the test
/// turns the daemon.
pub(crate) fn on_guest<T: Send + 'static>(
    daemon: &mut Daemon,
    connector: Connector,
    rec: DomainRecord,
    work: impl FnOnce(&mut xenring::Client<Guest>) -> T + Send + 'static,
) -> T {
    let slot = Arc::new(Mutex::new(None));
    let out = Arc::clone(&slot);
    let thread = std::thread::spawn(move || {
        let mut guest = Guest::attach(&connector, &rec).unwrap();
        guest.set_block_limit(LIMIT);
        let mut c = xenring::Client::new(guest);
        let result = work(&mut c);
        *out.lock().unwrap() = Some(result);
    });
    until(daemon, "the guest's work", |_| thread.is_finished());
    thread.join().expect("the guest's thread panicked");
    let result = slot.lock().unwrap().take();
    result.unwrap()
}
