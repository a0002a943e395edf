//! The xenstore ring page and the xs_wire protocol.
//!
//! * [`page`]: `struct xenstore_domain_interface` and [`RingPage`], the one
//!   type that touches a mapped ring page (volatile data copies, atomic
//!   indices), plus the typed `server_features`, `connection` and `error`
//!   words.
//! * [`ring`]: the [`ServerEnd`] (daemon) and [`GuestEnd`] (guest driver) of
//!   the two byte queues, with index validation on every access.
//! * [`wire`] and [`codec`]: message types, the header, error names, limits,
//!   an incremental [`Decoder`] and the encoder, argument helpers.
//! * [`path`] and [`perms`]: path validation and permission strings.
//! * `client` (feature `std`): a blocking client over a Unix socket or the
//!   guest end of a ring.
//!
//! The crate is `no_std` + `alloc` without its default `std` feature, so that
//! it can serve inside a xenstore stub domain.
//!
//! # What callers must guarantee
//!
//! Only [`RingPage::new`] is `unsafe`: the pointer it takes must be a mapped,
//! 4-aligned, 4096-byte page that stays mapped for the view's lifetime and
//! that nobody in the process accesses through a Rust reference. Everything
//! else is safe, including against a peer that writes arbitrary values into
//! the page at any time.

#![no_std]
#![warn(missing_docs)]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod codec;
pub mod error;
pub mod page;
pub mod path;
pub mod perms;
pub mod ring;
pub mod wire;

#[cfg(feature = "std")]
pub mod client;

pub use codec::{Decoder, Message};
pub use error::{Error, Queue};
pub use page::{ConnectionState, OwnedPage, RingErrorCode, RingPage, ServerFeatures};
pub use perms::{DomId, Perm, PermKind, DOMID_FIRST_RESERVED};
pub use ring::{GuestEnd, ServerEnd};
pub use wire::{Header, MsgType, XsErrno};

#[cfg(feature = "std")]
pub use client::{Client, RingTransport, WatchEvent};
