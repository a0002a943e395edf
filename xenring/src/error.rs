//! The crate's one error type.

use alloc::string::String;

use crate::wire::XsErrno;

/// Which of the two byte queues of the ring page an error concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queue {
    /// Guest → server (the `req` array, `req_cons`/`req_prod`).
    Request,
    /// Server → guest (the `rsp` array, `rsp_cons`/`rsp_prod`).
    Response,
}

impl core::fmt::Display for Queue {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Queue::Request => "request",
            Queue::Response => "response",
        })
    }
}

/// Everything that can go wrong in this crate.
///
/// Variants that come from data the peer controls (ring indices, message
/// headers, paths, permission strings) carry the offending values so that a
/// log line can say exactly what the peer did.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `prod - cons` (wrapping) exceeds the ring size: the peer corrupted the
    /// indices (`XENSTORE_ERROR_RINGIDX`).
    #[error("{queue} ring indices are inconsistent: prod {prod:#x} - cons {cons:#x} exceeds 1024")]
    IndexOverrun {
        /// The queue whose indices are broken.
        queue: Queue,
        /// Producer index as read from the page.
        prod: u32,
        /// Consumer index as read from the page.
        cons: u32,
    },
    /// A message header announced a payload longer than `XENSTORE_PAYLOAD_MAX`.
    #[error("message payload of {len} bytes exceeds the 4096-byte limit")]
    PayloadTooLong {
        /// The announced length.
        len: u32,
    },
    /// A message type outside 0..=26.
    #[error("unknown xenstore message type {0}")]
    UnknownMessageType(u32),
    /// Message type 20, `XS_RESTRICT`, which Xen removed.
    #[error("xenstore message type {0} (XS_RESTRICT) has been retired")]
    RetiredMessageType(u32),
    /// A path was empty.
    #[error("empty path")]
    PathEmpty,
    /// A path was longer than its limit (3072 absolute, 2048 relative).
    #[error("path of {len} bytes exceeds the {max}-byte limit")]
    PathTooLong {
        /// Length of the path.
        len: usize,
        /// The limit that applied.
        max: usize,
    },
    /// A path held a byte outside `[A-Za-z0-9-/_@]`.
    #[error("path has forbidden byte {byte:#04x} at offset {at}")]
    PathBadByte {
        /// The offending byte.
        byte: u8,
        /// Its offset in the path.
        at: usize,
    },
    /// A path held `//`.
    #[error("path has an empty component (\"//\") at offset {at}")]
    PathDoubleSlash {
        /// Offset of the second slash.
        at: usize,
    },
    /// A path other than `/` ended with `/`.
    #[error("path ends with '/'")]
    PathTrailingSlash,
    /// A permission string was not `n`, `r`, `w` or `b` followed by a domid.
    #[error("malformed permission {text:?}")]
    BadPermission {
        /// The string as received (lossily decoded).
        text: String,
    },
    /// A message payload did not have the shape its type requires.
    #[error("malformed {what} payload")]
    BadPayload {
        /// What was being parsed.
        what: &'static str,
    },
    /// The server answered with an xs_wire error.
    #[error("xenstore error {0}")]
    Xs(XsErrno),
    /// The server's reply did not match the request (wrong req_id or type).
    #[error("unexpected reply: sent {sent} with req_id {req_id}, got type {got_type} with req_id {got_req_id}")]
    UnexpectedReply {
        /// The request type that was sent.
        sent: &'static str,
        /// Its req_id.
        req_id: u32,
        /// Type of the reply received.
        got_type: u32,
        /// req_id of the reply received.
        got_req_id: u32,
    },
    /// A second reply for a request that was already answered (its first
    /// reply is filed or was collected): the server answered it twice.
    #[error("duplicate reply: req_id {req_id} (type {msg_type}) was already answered")]
    DuplicateReply {
        /// The req_id the reply carried.
        req_id: u32,
        /// The reply's type.
        msg_type: u32,
    },
    /// A reply for a req_id this client never sent.
    #[error("unknown reply: req_id {req_id} (type {msg_type}) was never sent")]
    UnknownReply {
        /// The req_id the reply carried.
        req_id: u32,
        /// The reply's type.
        msg_type: u32,
    },
    /// The transport reached end of stream in the middle of a reply.
    #[error("connection closed by the server")]
    Closed,
    /// The ring's error word is set: the server stopped talking to us.
    #[error("the server has set the ring's error word to {0}")]
    RingErrorSet(u32),
    /// The transport failed.
    #[cfg(feature = "std")]
    #[error("transport I/O failed")]
    Io(#[from] std::io::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_messages_name_the_queue() {
        let e = Error::IndexOverrun {
            queue: Queue::Request,
            prod: 0x500,
            cons: 0,
        };
        assert_eq!(
            alloc::format!("{e}"),
            "request ring indices are inconsistent: prod 0x500 - cons 0x0 exceeds 1024"
        );
        assert_eq!(alloc::format!("{}", Queue::Response), "response");
    }
}
