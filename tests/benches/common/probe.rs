//! The prober of the live-update and crash benchmarks: one connection (a
//! socket, or a guest's ring) issuing READs back to back and timestamping
//! every reply, and the longest gap between consecutive replies around an
//! update or a crash (its blackout).

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use tests::wait_until;
use xenring::Client;

/// A running prober over a `Client<T>`.
pub struct Prober<T> {
    replies: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<(Vec<Instant>, Client<T>)>,
}

impl<T: Read + Write + Send + 'static> Prober<T> {
    /// Starts reading `path` over `c` (a socket client with bounded waits,
    /// as `Daemon::client` makes, or a guest's), every reply checked
    /// against the first; returns once `first` replies came.
    pub fn start(mut c: Client<T>, path: &str, first: usize) -> Self {
        let replies = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, s) = (Arc::clone(&replies), Arc::clone(&stop));
        let path = path.to_string();
        let thread = std::thread::spawn(move || {
            let want = c.read(0, &path).unwrap();
            let mut stamps = Vec::with_capacity(1 << 20);
            while !s.load(SeqCst) {
                assert_eq!(c.read(0, &path).unwrap(), want);
                stamps.push(Instant::now());
                r.fetch_add(1, SeqCst);
            }
            (stamps, c)
        });
        let p = Self {
            replies,
            stop,
            thread,
        };
        p.wait_more(first);
        p
    }

    /// Waits for `n` more replies than so far.
    pub fn wait_more(&self, n: usize) {
        let want = self.replies.load(SeqCst) + n;
        wait_until("the prober's replies", || self.replies.load(SeqCst) >= want);
    }

    /// Stops it: every reply's time, oldest first, and its client.
    pub fn finish(self) -> (Vec<Instant>, Client<T>) {
        self.stop.store(true, SeqCst);
        self.thread.join().unwrap()
    }
}

/// The longest gap between consecutive replies that overlaps
/// `start..end`: the last reply before it and the first after.
pub fn longest_gap(stamps: &[Instant], start: Instant, end: Instant) -> (Instant, Instant) {
    stamps
        .windows(2)
        .filter(|w| w[1] > start && w[0] < end)
        .map(|w| (w[0], w[1]))
        .max_by_key(|&(a, b)| b - a)
        .expect("replies around the update")
}
