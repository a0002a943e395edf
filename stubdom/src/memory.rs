//! The stub's memory guard: a request is answered ENOMEM by the server
//! itself, before the engine sees it, when the heap could not take what
//! handling it may allocate with room to spare. The kernel's allocator
//! crashes the domain when it runs out; no guest may be able to drive it
//! there.
//!
//! The rule, by what a request can do to the heap:
//!
//! * requests that may grow the store (writes, watches, transactions,
//!   introductions): refused when `Host::free_memory() < MEMORY_RESERVE +
//!   REQUEST_COST_FACTOR * wire length`;
//! * requests that only read (READ, DIRECTORY, DIRECTORY_PART, GET_PERMS,
//!   GET_DOMAIN_PATH, IS_DOMAIN_INTRODUCED) and dom0's controls (`check`,
//!   `memreport`: the engine refuses a guest's before doing any work):
//!   their reply or report is all they allocate, so they pass down to
//!   [`READ_RESERVE`]; a full store can still be read and diagnosed, and
//!   what to remove can be found;
//! * requests that only give memory back (RM, UNWATCH, RELEASE,
//!   RESET_WATCHES, and a transaction's abort) are never refused: the
//!   reserves cover their small replies.
//!
//! A low-memory episode ends only when [`RECOVERED`] bytes are free
//! again ([`recovered`]), so a store held at its limit is one episode, not
//! a pair of console lines per request.

use xenring::{Message, MsgType};

/// Bytes kept free whatever the request: replies, watch events already
/// queued, the server's own buffers, and the engine's bookkeeping of the
/// requests that pass (a 4 KiB request keeps 320 KiB free in all).
pub const MEMORY_RESERVE: usize = 256 * 1024;

/// What one request byte may cost at most while it is handled: the node
/// and its path in the store (persistent-map nodes copied on write), the
/// watch events it fires (one per watcher) and its reply.
pub const REQUEST_COST_FACTOR: usize = 16;

/// Bytes kept free below a request that only reads: its reply (at most
/// a 4 KiB payload), watch events it cannot fire, and the engine's
/// transient bookkeeping, many times over.
pub const READ_RESERVE: usize = 64 * 1024;

/// Free bytes at which a low-memory episode is over: the reserve of the
/// largest request, and as much again for the store to grow.
pub const RECOVERED: usize = 2 * (MEMORY_RESERVE + 4096 * REQUEST_COST_FACTOR);

/// The free memory a request needs to be handed to the engine.
pub fn needed(msg: &Message) -> usize {
    if only_reads(msg) {
        return READ_RESERVE;
    }
    MEMORY_RESERVE.saturating_add(msg.wire_len().saturating_mul(REQUEST_COST_FACTOR))
}

/// Whether handling `msg` only reads the store (or, for XS_CONTROL,
/// reports on it): its reply is all it allocates.
pub fn only_reads(msg: &Message) -> bool {
    matches!(
        msg.msg_type(),
        Ok(MsgType::Read
            | MsgType::Directory
            | MsgType::DirectoryPart
            | MsgType::GetPerms
            | MsgType::GetDomainPath
            | MsgType::IsDomainIntroduced
            | MsgType::Control)
    )
}

/// Whether `free` bytes end a low-memory episode.
pub fn recovered(free: usize) -> bool {
    free >= RECOVERED
}

/// Whether handling `msg` can only give memory back (it is then never
/// refused).
pub fn frees_memory(msg: &Message) -> bool {
    match msg.msg_type() {
        Ok(MsgType::Rm | MsgType::Unwatch | MsgType::Release | MsgType::ResetWatches) => true,
        Ok(MsgType::TransactionEnd) => msg.payload.first() == Some(&b'F'),
        _ => false,
    }
}

/// Whether the server answers `msg` ENOMEM itself with `free` bytes left.
pub fn refuse(free: usize, msg: &Message) -> bool {
    !frees_memory(msg) && free < needed(msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use xenring::codec::{build_args, build_path_value};

    fn msg(ty: MsgType, payload: &[u8]) -> Message {
        Message::new(ty, 1, 0, payload.to_vec()).unwrap()
    }

    #[test]
    fn test_refused_exactly_below_reserve_plus_cost() {
        let write = msg(MsgType::Write, &build_path_value(b"/a", b"0123456789"));
        let need = MEMORY_RESERVE + write.wire_len() * REQUEST_COST_FACTOR;
        assert_eq!(needed(&write), need);
        assert!(refuse(need - 1, &write));
        assert!(!refuse(need, &write));
        assert!(refuse(0, &write));
        // A larger request needs more.
        let big = msg(MsgType::Write, &build_path_value(b"/a", &[b'x'; 3000]));
        assert!(refuse(need, &big));
        assert!(needed(&big) > need);
    }

    #[test]
    fn test_reserve_is_the_documented_figure() {
        // A 4 KiB request keeps 320 KiB free (the module's docs).
        let big = msg(MsgType::Write, &[b'x'; 4080]);
        assert_eq!(big.wire_len(), 4096);
        assert_eq!(needed(&big), 320 * 1024);
        // Whatever the request that may grow the store, 256 KiB stay free.
        let empty = msg(MsgType::Write, b"");
        assert!(refuse(256 * 1024 - 1, &empty));
        // The episode ends with room for two of the largest requests.
        assert_eq!(RECOVERED, 640 * 1024);
        assert!(!recovered(RECOVERED - 1));
        assert!(recovered(RECOVERED));
    }

    #[test]
    fn test_reads_pass_down_to_the_read_reserve() {
        for ty in [
            MsgType::Read,
            MsgType::Directory,
            MsgType::DirectoryPart,
            MsgType::GetPerms,
            MsgType::GetDomainPath,
            MsgType::IsDomainIntroduced,
            MsgType::Control,
        ] {
            // However long the path: the reply is what it costs.
            let m = msg(ty, &build_args(&[&[b'a'; 3000]]));
            assert!(only_reads(&m), "{ty:?}");
            assert_eq!(needed(&m), READ_RESERVE, "{ty:?}");
            assert!(!refuse(READ_RESERVE, &m), "{ty:?}");
            assert!(refuse(READ_RESERVE - 1, &m), "{ty:?}");
        }
        // Nothing that may grow the store passes there.
        for ty in [
            MsgType::Write,
            MsgType::Mkdir,
            MsgType::SetPerms,
            MsgType::Watch,
            MsgType::TransactionStart,
            MsgType::Introduce,
            MsgType::SetTarget,
            MsgType::Resume,
        ] {
            let m = msg(ty, &build_args(&[b"/a"]));
            assert!(!only_reads(&m), "{ty:?}");
            assert!(refuse(MEMORY_RESERVE - 1, &m), "{ty:?}");
        }
    }

    #[test]
    fn test_what_gives_memory_back_is_never_refused() {
        for m in [
            msg(MsgType::Rm, &build_args(&[b"/a"])),
            msg(MsgType::Unwatch, &build_args(&[b"/a", b"t"])),
            msg(MsgType::Release, &build_args(&[b"3"])),
            msg(MsgType::ResetWatches, b""),
            msg(MsgType::TransactionEnd, b"F\0"),
        ] {
            assert!(frees_memory(&m), "{:?}", m.header);
            assert!(!refuse(0, &m), "{:?}", m.header);
        }
        for m in [
            msg(MsgType::TransactionEnd, b"T\0"),
            msg(MsgType::Watch, &build_args(&[b"/a", b"t"])),
            msg(MsgType::TransactionStart, b""),
        ] {
            assert!(!frees_memory(&m), "{:?}", m.header);
            assert!(refuse(0, &m), "{:?}", m.header);
        }
        let unknown = Message::with_raw_type(999, 1, 0, b"x".to_vec()).unwrap();
        assert!(refuse(0, &unknown));
    }
}
