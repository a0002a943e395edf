//! What a recording holds: the events that crossed the platform boundary.
//!
//! [`BoundaryEvent`] is the one vocabulary of record and replay: the live
//! shell builds one for every input, the shell state records it and applies
//! it, and the player reads the same events back and applies them the same
//! way. Bytes borrow from wherever they are (the shell's buffers live, the
//! recording in memory on replay), so neither side copies them to build an
//! event.

use xenring::{DomId, Header, XsErrno};

use crate::engine::{ConnId, Counters};

/// What kind of connection a [`BoundaryEvent::Connect`] opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectKind {
    /// A Unix-socket client.
    Socket,
    /// A domain's ring (dom0's own, served at start-up).
    Ring(DomId),
}

/// What a live update's restore did with one connection of the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Not restored (its descriptor was unusable).
    Dropped,
    /// A socket client, now connection `conn`.
    Socket(ConnId),
    /// A ring, now connection `conn`.
    Ring(ConnId),
    /// A ring whose domain is gone: registered as `conn`, then released.
    Gone(ConnId),
}

/// A control request the daemon answered itself (live update).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A text reply.
    Text(String),
    /// An error reply.
    Error(XsErrno),
}

/// One thing that crossed the platform boundary: what the shell records
/// and what replay applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BoundaryEvent<'a> {
    /// A daemon process started recording, with these arguments (its
    /// settings come from them on replay).
    Start {
        /// The command line after the program name.
        args: Vec<String>,
    },
    /// It took over a migration stream (live update); `outcomes` lists,
    /// per `CONNECTION_DATA` record in stream order, what became of it.
    Restore {
        /// The stream's bytes.
        stream: &'a [u8],
        /// `(stream conn-id, outcome)`.
        outcomes: Vec<(u32, Outcome)>,
    },
    /// The clock read this many milliseconds.
    Time(u64),
    /// A connection opened.
    Connect {
        /// Its number.
        conn: ConnId,
        /// What it is.
        kind: ConnectKind,
    },
    /// Bytes read from a connection.
    Input {
        /// The connection.
        conn: ConnId,
        /// The bytes.
        bytes: &'a [u8],
    },
    /// Bytes a connection took in one write (empty: it took none).
    Output {
        /// The connection.
        conn: ConnId,
        /// The bytes.
        bytes: &'a [u8],
    },
    /// A socket closed (end of file, an error, or cut off).
    Close {
        /// The connection.
        conn: ConnId,
    },
    /// A ring broke the protocol (or was cut off): no longer served.
    Violation {
        /// The connection.
        conn: ConnId,
    },
    /// A guest reset its ring (reconnection handshake).
    Reset {
        /// The connection.
        conn: ConnId,
    },
    /// The outcome of mapping and binding an introduced domain's ring.
    Introduced {
        /// The engine's token.
        token: u64,
        /// The new connection, or the error for the client.
        result: Result<ConnId, XsErrno>,
    },
    /// What the hypervisor said about a domain.
    DomainState {
        /// The domain.
        domid: DomId,
        /// Shut down.
        shutdown: bool,
        /// Dying or gone.
        dying: bool,
    },
    /// The daemon answered a control request itself.
    Answer {
        /// The connection.
        conn: ConnId,
        /// The request's header.
        header: Header,
        /// The answer.
        answer: Answer,
    },
    /// The process exec'd a new binary (live update); a `Start` follows.
    HandOver,
    /// New TRANSACTION_STARTs are held (`on`), as while a live update to
    /// C xenstored waits for open transactions to end, or no longer held
    /// (`!on`): the held requests are then carried out, in order.
    Hold {
        /// Whether holding begins (true) or ends (false).
        on: bool,
    },
    /// Where a ring's indices stand (a crash journal's base for it): our
    /// `req_cons` after the bytes read so far, and our `rsp_prod` after
    /// the bytes written so far. Written when a ring is attached, reset or
    /// recovered, and in a snapshot; later `Input`s and `Output`s of the
    /// connection move them on. Changes no state.
    RingIndices {
        /// The connection.
        conn: ConnId,
        /// `req_cons` once the reads recorded so far are released.
        req_cons: u32,
        /// `rsp_prod` after the writes recorded so far.
        rsp_prod: u32,
    },
    /// The engine's [`Counters`] (a crash journal's snapshot, after its
    /// `Restore`): what the stream does not carry.
    Counters(Counters),
    /// A store image (`engine::store` `image`): the whole committed store,
    /// or what changed in it since the previous `StoreImage`. A pre-copy
    /// live update records these before its `Restore`, whose stream then
    /// carries no committed node: that `Restore` takes the store they
    /// built.
    StoreImage(&'a [u8]),
    /// Applying event number `event` of this file (counted from 0 after the
    /// header) panicked the daemon: in `request`, the request of `conn`
    /// with this header, else the event itself. Written by the panic hook;
    /// a crash recovery skips what it names (a request is answered with an
    /// error) so that it does not crash again. Changes no state.
    Fatal {
        /// The event that crashed.
        event: u64,
        /// The request being carried out, if it was one.
        request: Option<(ConnId, Header)>,
    },
}
