//! The stub's memory guard: a request is answered ENOMEM by the server
//! itself, before the engine sees it, when the heap could not take what
//! handling it may allocate with room to spare. The kernel's allocator
//! crashes the domain when it runs out; no guest may be able to drive it
//! there.
//!
//! The rule: refuse when `Host::free_memory() < MEMORY_RESERVE +
//! REQUEST_COST_FACTOR * wire length`, for every request but those that
//! only give memory back (RM, UNWATCH, RELEASE, RESET_WATCHES, and a
//! transaction's abort), whose small replies the reserve covers.

use xenring::{Message, MsgType};

/// Bytes kept free whatever the request: replies, watch events already
/// queued, the server's own buffers, and the engine's bookkeeping of the
/// requests that pass (a 4 KiB request keeps 320 KiB free in all).
pub const MEMORY_RESERVE: usize = 256 * 1024;

/// What one request byte may cost at most while it is handled: the node
/// and its path in the store (persistent-map nodes copied on write), the
/// watch events it fires (one per watcher) and its reply.
pub const REQUEST_COST_FACTOR: usize = 16;

/// The free memory a request needs to be handed to the engine.
pub fn needed(msg: &Message) -> usize {
    MEMORY_RESERVE.saturating_add(msg.wire_len().saturating_mul(REQUEST_COST_FACTOR))
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
        // Whatever the request, 256 KiB stay free.
        let empty = msg(MsgType::Read, b"");
        assert!(refuse(256 * 1024 - 1, &empty));
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
            msg(MsgType::Read, &build_args(&[b"/a"])),
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
