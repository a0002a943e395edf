//! Guests over mock-xen rings, for the benchmarks that have them
//! (`live_update`, `crash_journal`; C xenstored under the shim serves no
//! ring, so `live_update_c` leaves this module out).

use std::io::{Read, Write};

use mock_xen::{Connector, Guest, Toolstack};
use tests::{create_guest, guest_client};
use xenring::Client;

use super::load::add_watches;

/// The node each [`watched_guest`] writes, and its value.
pub const GUEST_NODE: (&str, &[u8]) = ("device/vbd/51712/state", b"4");

/// Creates a guest as a toolstack does and attaches its frontend: it
/// writes [`GUEST_NODE`] and holds `watches` watches in its home
/// (`control/shutdown`, `device`, `device/vbd/<N>/state`), tokens tagged
/// `tag`.
pub fn watched_guest<T: Read + Write>(
    ts: &Toolstack,
    connector: &Connector,
    dom0: &mut Client<T>,
    watches: usize,
    tag: usize,
) -> Client<Guest> {
    let rec = create_guest(ts, dom0);
    let mut c = guest_client(connector, &rec);
    c.write(0, GUEST_NODE.0, GUEST_NODE.1).unwrap();
    let paths: Vec<String> = (0..watches)
        .map(|k| match k {
            0 => "control/shutdown".to_string(),
            1 => "device".to_string(),
            _ => format!("device/vbd/{}/state", 51712 + 16 * k),
        })
        .collect();
    add_watches(&mut c, &paths, tag);
    c
}

/// Asserts that every guest still reads what [`watched_guest`] wrote.
pub fn assert_guests_kept(guests: &mut [Client<Guest>]) {
    for c in guests {
        assert_eq!(c.read(0, GUEST_NODE.0).unwrap(), GUEST_NODE.1);
    }
}
