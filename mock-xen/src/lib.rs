//! A simulated Xen hypervisor that a xenstore daemon cannot tell from Xen.
//!
//! It implements the traits of `evtchn` (`evtchn::EventChannel`) and
//! `gnttab` ([`gnttab::PageMapper`], [`gnttab::DomainInfoSource`]) so that
//! the daemon's code paths are the same as on real Xen:
//!
//! * domains with unique ids (a reused domid gets a new one), shutdown and
//!   destruction, a privileged dom0;
//! * machine memory in one memfd whose page index is the mfn; each domain's
//!   xenstore page is allocated from it;
//! * grant tables (entry 1 = the xenstore page, mappable only by the domain
//!   it was granted to; mapping by mfn only for privileged domains);
//! * event channels with Linux `/dev/xen/evtchn` semantics and
//!   `VIRQ_DOM_EXC` to dom0 when a domain shuts down or dies.
//!
//! Two ways to run it: in-process ([`Connector::new_local`], deterministic,
//! for unit tests) or as a separate process (`mock-xen --socket PATH`, or
//! forked by the program that uses it, [`ServerProcess`];
//! [`Connector::remote`]), where mappings hand the client the memfd over
//! `SCM_RIGHTS` and a client's connection survives its `exec()`.
//!
//! The guest side ([`guest::Guest`], a xenbus frontend with fault injection)
//! and a toolstack ([`toolstack::Toolstack`]) complete the picture.

pub mod conn;
pub mod error;
pub mod event_channel;
pub mod guest;
pub mod hv;
pub mod mapper;
pub mod memory;
pub mod proto;
pub mod server;
pub mod toolstack;

pub use conn::{Conn, Connector};
pub use error::Error;
pub use event_channel::MockEventChannel;
pub use guest::Guest;
pub use hv::Hypervisor;
pub use mapper::{MockDomainInfo, MockMapping, MockPageMapper};
pub use proto::{DomainInfo, DomainRecord};
pub use server::{Server, ServerProcess, ServerThread};
pub use toolstack::Toolstack;
