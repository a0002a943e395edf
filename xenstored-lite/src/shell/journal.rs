//! The crash journal: every event the shell state applies, in the
//! recording's format (`replay::format`), written with one `write(2)` to
//! `$XENSTORED_RUNDIR/journal/xenstored-lite.rec` before anything those
//! events caused is visible: before any transport write (a reply, a watch
//! event) and before a ring's `req_cons` releases what was read. A process
//! crash leaves the page cache as it was, so no `fsync` is needed on the
//! tmpfs a run directory is (a host crash kills the guests anyway).
//!
//! `Output` events (what a transport took) may wait for the next write:
//! they only follow effects already visible, and a recovery reads how far
//! each ring's responses really went from its page.
//!
//! A snapshot (the migration stream as a `Restore` event, then where each
//! ring's indices stand) starts a new file, written beside the old one and
//! renamed over it, so the journal's length — and a recovery's time — stay
//! bounded.
//!
//! A panic marks the journal: the hook ([`on_panic`]) writes what is
//! buffered and a `Fatal` event naming the event being applied and the
//! request being carried out ([`Applying`]), so that a recovery skips that
//! request instead of crashing on it again.

use std::cell::Cell;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use xenring::Header;

use crate::engine::ConnId;
use crate::replay::format::{encode, header, BoundaryEvent, HEADER_LEN};

/// The journal's directory in the run directory (a recording directory:
/// `--replay=$XENSTORED_RUNDIR/journal` replays it).
pub const JOURNAL_DIR: &str = "journal";

/// Buffered octets that are written out even when no effect waits.
const BUFFER_MAX: usize = 256 * 1024;

/// What the journal file holds and what waits to be written.
#[derive(Debug)]
struct Inner {
    file: File,
    buf: Vec<u8>,
    /// Events in the file and the buffer (the next event's number).
    events: u64,
    /// Octets in the file.
    written: u64,
    /// An event other than an `Output` waits in the buffer.
    inputs_pending: bool,
    /// Octets of the snapshot the file starts with (0: none).
    base: u64,
    /// A write failed (logged once).
    failed: bool,
    /// While a snapshot is being made: the events recorded since its
    /// moment, for the new file ([`Journal::begin_tail`]), and how many.
    tail: Option<(Vec<u8>, u64)>,
}

impl Inner {
    fn write_out(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        match self.file.write_all(&self.buf) {
            Ok(()) => self.written += self.buf.len() as u64,
            Err(e) => {
                if !self.failed {
                    tracing::error!(
                        "crash journal: write failed: {e}; a crash from now on loses state"
                    );
                    self.failed = true;
                }
            }
        }
        self.buf.clear();
        self.inputs_pending = false;
    }
}

/// The journal of a running daemon.
#[derive(Debug)]
pub struct Journal {
    shared: Arc<Mutex<Inner>>,
    path: PathBuf,
}

/// The journal the panic hook writes to.
static ACTIVE: Mutex<Option<Arc<Mutex<Inner>>>> = Mutex::new(None);

/// A request: its connection and header.
type RequestId = (ConnId, Header);

thread_local! {
    /// The event being applied and the request being carried out.
    static APPLYING: Cell<(Option<u64>, Option<RequestId>)> = const { Cell::new((None, None)) };
}

/// Marks what is being applied, for [`on_panic`].
#[derive(Debug)]
pub struct Applying;

impl Applying {
    /// Event number `event` is being applied.
    pub fn event(event: Option<u64>) {
        APPLYING.with(|a| a.set((event, None)));
    }

    /// `conn`'s request with `header` is being carried out (`None`: done).
    pub fn request(request: Option<RequestId>) {
        APPLYING.with(|a| {
            let (event, _) = a.get();
            a.set((event, request));
        });
    }

    fn get() -> (Option<u64>, Option<RequestId>) {
        APPLYING.with(Cell::get)
    }
}

/// The journal's file in `rundir`.
pub fn path_in(rundir: &Path) -> PathBuf {
    rundir.join(JOURNAL_DIR).join(crate::shell::RECORDING_FILE)
}

fn lock(shared: &Mutex<Inner>) -> std::sync::MutexGuard<'_, Inner> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Journal {
    /// A new, empty journal at `path` (replacing any).
    pub fn create(path: &Path) -> io::Result<Self> {
        let file = new_file(path, &header())?;
        Ok(Self::around(
            path,
            Inner {
                file,
                buf: Vec::with_capacity(BUFFER_MAX),
                events: 0,
                written: HEADER_LEN as u64,
                inputs_pending: false,
                base: 0,
                failed: false,
                tail: None,
            },
        ))
    }

    /// The journal at `path` continued after its first `valid` octets
    /// (`events` complete events; anything after them, an event cut by
    /// the crash, is cut off).
    pub fn resume(path: &Path, valid: u64, events: u64) -> io::Result<Self> {
        let file = std::fs::OpenOptions::new().write(true).open(path)?;
        file.set_len(valid)?;
        let mut file = file;
        io::Seek::seek(&mut file, io::SeekFrom::Start(valid))?;
        Ok(Self::around(
            path,
            Inner {
                file,
                buf: Vec::with_capacity(BUFFER_MAX),
                events,
                written: valid,
                inputs_pending: false,
                base: 0,
                failed: false,
                tail: None,
            },
        ))
    }

    /// Writes a journal's first events ahead, to `path` (a pre-copy's new
    /// process, while the old daemon still serves and journals into the
    /// real one): returns its length and event count for
    /// [`Journal::adopt_prewritten`].
    pub fn prewrite(path: &Path, events: &[BoundaryEvent<'_>]) -> io::Result<(u64, u64)> {
        let mut bytes = header().to_vec();
        for e in events {
            encode(e, &mut bytes);
        }
        new_file(path, &bytes)?;
        Ok((bytes.len() as u64, events.len() as u64))
    }

    /// Takes over the journal [`Journal::prewrite`] wrote at `from`: moved
    /// over `path` (replacing the old daemon's, which holds nothing the
    /// take-over did not bring) and continued after its `events`. Its
    /// length counts as a snapshot's (the next is due at twice it).
    pub fn adopt_prewritten(from: &Path, path: &Path, len: u64, events: u64) -> io::Result<Self> {
        std::fs::rename(from, path)?;
        let j = Self::resume(path, len, events)?;
        lock(&j.shared).base = len;
        Ok(j)
    }

    fn around(path: &Path, inner: Inner) -> Self {
        let shared = Arc::new(Mutex::new(inner));
        *ACTIVE.lock().unwrap_or_else(PoisonError::into_inner) = Some(Arc::clone(&shared));
        Self {
            shared,
            path: path.to_path_buf(),
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `event`; returns its number in the file.
    pub fn record(&self, event: &BoundaryEvent<'_>) -> u64 {
        let mut j = lock(&self.shared);
        let before = j.buf.len();
        encode(event, &mut j.buf);
        let Inner { buf, tail, .. } = &mut *j;
        if let Some((bytes, count)) = tail {
            bytes.extend_from_slice(&buf[before..]);
            *count += 1;
        }
        if !matches!(event, BoundaryEvent::Output { .. }) {
            j.inputs_pending = true;
        }
        let n = j.events;
        j.events += 1;
        if j.buf.len() >= BUFFER_MAX {
            j.write_out();
        }
        n
    }

    /// Whether events wait that must reach the file before any effect.
    pub fn needs_sync(&self) -> bool {
        lock(&self.shared).inputs_pending
    }

    /// Writes out what is buffered.
    pub fn sync(&self) {
        lock(&self.shared).write_out();
    }

    /// Octets in the file and the buffer.
    pub fn len(&self) -> u64 {
        let j = lock(&self.shared);
        j.written + j.buf.len() as u64
    }

    /// Whether the journal holds no event.
    pub fn is_empty(&self) -> bool {
        lock(&self.shared).events == 0
    }

    /// A snapshot's moment: from now on, events recorded are also kept
    /// for the file [`Journal::rotate`] starts.
    pub fn begin_tail(&self) {
        lock(&self.shared).tail = Some((Vec::new(), 0));
    }

    /// Octets recorded since [`Journal::begin_tail`].
    pub fn tail_len(&self) -> usize {
        lock(&self.shared).tail.as_ref().map_or(0, |(b, _)| b.len())
    }

    /// The snapshot is not to be: events are no longer kept for it.
    pub fn drop_tail(&self) {
        lock(&self.shared).tail = None;
    }

    /// Starts the file anew with `events` (`count` of them, encoded: a
    /// snapshot made at [`Journal::begin_tail`]'s moment) and the events
    /// recorded since, written beside it and renamed over it; what was
    /// buffered is written to the old file first.
    pub fn rotate(&self, events: &[u8], count: u64) -> io::Result<()> {
        let mut j = lock(&self.shared);
        j.write_out();
        let (tail, tail_count) = j.tail.take().unwrap_or_default();
        let tmp = self.path.with_extension("rec.new");
        let mut bytes = Vec::with_capacity(HEADER_LEN + events.len() + tail.len());
        bytes.extend_from_slice(&header());
        bytes.extend_from_slice(events);
        bytes.extend_from_slice(&tail);
        let file = new_file(&tmp, &bytes)?;
        std::fs::rename(&tmp, &self.path)?;
        j.file = file;
        j.written = bytes.len() as u64;
        j.events = count + tail_count;
        j.base = (HEADER_LEN + events.len()) as u64;
        Ok(())
    }

    /// Octets of the file's first snapshot (0: none).
    pub fn base_len(&self) -> u64 {
        lock(&self.shared).base
    }

    /// The daemon stops cleanly (or hands over to a daemon without a
    /// journal): the journal goes, so that no later start recovers it.
    pub fn remove(self) {
        self.forget();
        if let Err(e) = std::fs::remove_file(&self.path) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(
                    "cannot remove the crash journal {}: {e}",
                    self.path.display()
                );
            }
        }
    }

    /// The panic hook no longer writes to this journal.
    fn forget(&self) {
        let mut active = ACTIVE.lock().unwrap_or_else(PoisonError::into_inner);
        if active
            .as_ref()
            .is_some_and(|a| Arc::ptr_eq(a, &self.shared))
        {
            *active = None;
        }
    }
}

/// `bytes` as the content of a new private file at `path`, open for
/// appending.
fn new_file(path: &Path, bytes: &[u8]) -> io::Result<File> {
    let mut file = crate::shell::os::open_private(
        std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true),
        path,
    )?;
    file.write_all(bytes)?;
    Ok(file)
}

/// The panic hook's part: writes out what is buffered and, if an event
/// was being applied, a `Fatal` event naming it and its request. Does
/// nothing if the journal is in use (the panic came from inside it).
pub fn on_panic() {
    let Ok(active) = ACTIVE.try_lock() else {
        return;
    };
    let Some(shared) = active.as_ref() else {
        return;
    };
    mark_fatal(shared);
}

/// [`on_panic`] on the journal `shared`.
fn mark_fatal(shared: &Mutex<Inner>) {
    let Ok(mut j) = shared.try_lock() else {
        return;
    };
    if let (Some(event), request) = Applying::get() {
        encode(&BoundaryEvent::Fatal { event, request }, &mut j.buf);
        j.events += 1;
        tracing::error!(
            "crash journal: event {event}{} panicked; a recovery skips it",
            match request {
                Some((conn, h)) => format!(
                    " (connection {conn}, request type {} id {} transaction {})",
                    h.msg_type, h.req_id, h.tx_id
                ),
                None => String::new(),
            }
        );
    }
    j.write_out();
}

/// Installs the panic hook: [`on_panic`], then the default hook's message.
pub fn install_panic_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        on_panic();
        default(info);
    }));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replay::format::{Next, Reader};

    fn events_in(path: &Path) -> Vec<String> {
        let data = std::fs::read(path).unwrap();
        let mut r = Reader::new(&data).unwrap();
        let mut out = Vec::new();
        while let Ok(Next::Event(e)) = r.next_event() {
            out.push(format!("{e:?}"));
        }
        out
    }

    fn input(bytes: &[u8]) -> BoundaryEvent<'_> {
        BoundaryEvent::Input { conn: 3, bytes }
    }

    #[test]
    fn test_a_journal_written_ahead_replaces_the_old_and_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.rec");
        let ahead = dir.path().join("j.rec.precopy");
        let old = Journal::create(&path).unwrap();
        old.record(&input(b"old"));
        old.sync();
        let first = [
            BoundaryEvent::Start {
                args: vec!["-U".into()],
            },
            BoundaryEvent::StoreImage(b"XSLSIMG1 bulk"),
        ];
        let (len, events) = Journal::prewrite(&ahead, &first).unwrap();
        assert_eq!(events, 2);
        assert_eq!(std::fs::metadata(&ahead).unwrap().len(), len);
        let j = Journal::adopt_prewritten(&ahead, &path, len, events).unwrap();
        assert!(!ahead.exists());
        assert_eq!(j.len(), len);
        assert_eq!(j.base_len(), len, "it counts as a snapshot");
        assert_eq!(j.record(&input(b"new")), 2, "numbered after the two");
        j.sync();
        let seen = events_in(&path);
        assert_eq!(seen.len(), 3, "{seen:?}");
        assert!(seen[0].starts_with("Start"), "{seen:?}");
        assert!(seen[1].starts_with("StoreImage"), "{seen:?}");
        assert!(seen[2].contains("Input"), "{seen:?}");
        // A file that is not there is not adopted.
        assert!(Journal::adopt_prewritten(&ahead, &path, len, events).is_err());
    }

    #[test]
    fn test_inputs_wait_for_sync_and_outputs_do_not_ask_for_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.rec");
        let j = Journal::create(&path).unwrap();
        assert!(j.is_empty());
        assert_eq!(j.len(), HEADER_LEN as u64);
        assert_eq!(
            j.record(&BoundaryEvent::Output {
                conn: 3,
                bytes: b"r"
            }),
            0
        );
        assert!(!j.needs_sync(), "an Output alone asks for no write");
        assert_eq!(j.record(&input(b"abc")), 1);
        assert!(j.needs_sync());
        assert!(!j.is_empty());
        let len = j.len();
        assert!(len > HEADER_LEN as u64);
        // Nothing is written before the sync.
        assert_eq!(std::fs::metadata(&path).unwrap().len(), HEADER_LEN as u64);
        j.sync();
        assert!(!j.needs_sync());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), len);
        assert_eq!(j.len(), len);
        assert_eq!(events_in(&path).len(), 2);
    }

    #[test]
    fn test_rotate_starts_the_file_with_the_snapshot_then_the_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.rec");
        let j = Journal::create(&path).unwrap();
        j.record(&input(b"old"));
        j.begin_tail();
        assert_eq!(j.tail_len(), 0);
        j.record(&input(b"after"));
        assert!(j.tail_len() > 0);
        let mut snap = Vec::new();
        encode(&BoundaryEvent::Time(7), &mut snap);
        j.rotate(&snap, 1).unwrap();
        assert_eq!(j.base_len(), (HEADER_LEN + snap.len()) as u64);
        assert_eq!(j.tail_len(), 0, "the tail went into the new file");
        let seen = events_in(&path);
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert!(seen[0].contains("Time(7)"), "{seen:?}");
        assert!(seen[1].contains("Input"), "{seen:?}");
        // Numbering goes on after the snapshot and the tail.
        assert_eq!(j.record(&input(b"next")), 2);
        j.sync();
        assert_eq!(events_in(&path).len(), 3);
        // A dropped tail keeps nothing for the next file.
        j.begin_tail();
        j.record(&input(b"x"));
        j.drop_tail();
        assert_eq!(j.tail_len(), 0);
        j.rotate(&snap, 1).unwrap();
        assert_eq!(events_in(&path).len(), 1);
    }

    #[test]
    fn test_resume_cuts_a_torn_event_and_numbers_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.rec");
        let j = Journal::create(&path).unwrap();
        j.record(&input(b"whole"));
        j.sync();
        let valid = j.len();
        j.record(&input(b"torn by the crash"));
        j.sync();
        drop(j);
        let full = std::fs::metadata(&path).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(full - 3)
            .unwrap();
        let j = Journal::resume(&path, valid, 1).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), valid);
        assert_eq!(j.record(&input(b"after")), 1);
        j.sync();
        let seen = events_in(&path);
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert_eq!(j.len(), std::fs::metadata(&path).unwrap().len());
    }

    #[test]
    fn test_the_panic_hook_writes_the_buffer_and_marks_the_event() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.rec");
        let j = Journal::create(&path).unwrap();
        let n = j.record(&input(b"req"));
        let header = Header::from_bytes(&[0; xenring::wire::HEADER_SIZE]);
        // (The hook itself writes to the journal of the process; tests
        // running side by side each have their own.)
        Applying::event(Some(n));
        Applying::request(Some((3, header)));
        mark_fatal(&j.shared);
        Applying::event(None);
        let seen = events_in(&path);
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert!(
            seen[1].contains("Fatal { event: 0, request: Some((3"),
            "{seen:?}"
        );
        assert_eq!(j.record(&input(b"next")), 2);
        // Not applying anything: only the buffer is written.
        mark_fatal(&j.shared);
        assert_eq!(events_in(&path).len(), 3);
        j.remove();
        assert!(!path.exists());
    }
}
