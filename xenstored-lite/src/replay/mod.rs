//! Record and replay.
//!
//! `--replay-record=DIR` makes the daemon write everything that crossed the
//! platform boundary ([`format::BoundaryEvent`]) into `DIR/xenstored-lite.rec`,
//! starting from its settings and, after a live update, from the migration
//! stream it took over; `--replay=DIR` runs the same core on it, with no
//! Xen, no mock-xen and no sockets ([`player`]). The format is described in
//! `docs/recording-format.md`.

pub mod format;
pub mod player;
