//! Live update: save, exec, restore.
//!
//! The old process carries out XS_CONTROL `live-update` as Xen's
//! `xenstore-control live-update BINARY` drives it (`-f BINARY`,
//! `-c CMDLINE`, `-s [-t SECONDS] [-F] [-v VERSION]`, `-a`). On `-s` it
//! writes its state as a migration stream to `<rundir>/state_dump` and runs
//! the new binary as a dry run (`BINARY <args> -U --dry-run=STATE`, in an
//! empty run directory), which must
//! parse and restore that state; meanwhile it keeps serving. When the dry
//! run succeeds it reaches the end of a loop turn (a point between
//! requests), writes the state again, now with the `OK` answer to `-s`
//! queued on the asking connection, clears close-on-exec on the listening
//! socket, the event-channel handle and the client sockets, and execs the
//! new binary with `-U`. The new process adopts those descriptors, maps the
//! rings again (grant ref, else the mfn of our stream extension), restores
//! connections with their pending input and output, nodes, watches,
//! transactions and quotas, and sends the `OK` itself.
//!
//! If anything fails before the exec, the asking client gets the reason and
//! the old process goes on serving: nothing was taken from any connection.
//!
//! Between two of our binaries that can, the hand-over is a pre-copy
//! instead ([`precopy`]): the store goes over while the old daemon serves,
//! and the freeze carries only the connections and what changed since, so
//! that the blackout does not grow with the store. The dry run's state is
//! written by a thread from a snapshot of the store either way.
//!
//! The conversation is [`session`], writing the state and the exec are
//! [`handover`], the new process's side is [`restore`], and what the new
//! binary is (ours or C xenstored 4.17, told without running it) and C's
//! command line are [`target`].

use std::ffi::OsString;

pub mod guardian;
mod handover;
pub mod precopy;
mod restore;
mod session;
pub mod target;

pub(super) use handover::stream_of;
pub use handover::StateWriteError;
pub use restore::{check_stream, RestoreFailure, RestoreSummary};
pub(super) use session::Session;

/// The state file's name in the run directory (as C xenstored names it).
pub const STATE_FILE: &str = "state_dump";

/// The dry run's (empty) run directory, under ours.
const DRY_RUN_DIR: &str = "live-update-dry-run";

/// The new program's arguments: `cmdline` split at white space (what `-c`
/// gave), else ours; with `-U` added when missing, as C xenstored does.
pub(super) fn new_args(ours: &[OsString], cmdline: Option<&str>) -> Vec<OsString> {
    let mut args: Vec<OsString> = match cmdline {
        Some(c) => c.split_whitespace().map(OsString::from).collect(),
        None => ours.to_vec(),
    };
    if !args.iter().any(|a| a == "-U" || a == "--live-update") {
        args.push(OsString::from("-U"));
    }
    args
}

// The tests duplicate and borrow descriptors by number, as the new
// process finds them.
#[cfg(test)]
#[allow(unsafe_code)]
mod tests;
