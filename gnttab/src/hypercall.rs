//! Grant mapping and domain information over Xen's hypercalls, for a
//! kernel of its own (a xenstore stub domain), through
//! [`evtchn::hypercall::Hypervisor`].

use core::fmt;

/// The status of one grant-table operation (`GNTST_*` of `grant_table.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GrantStatus(pub i16);

impl GrantStatus {
    /// `GNTST_okay`.
    pub const OKAY: Self = Self(0);
    /// `GNTST_bad_domain`: no such domain.
    pub const BAD_DOMAIN: Self = Self(-2);
    /// `GNTST_bad_gntref`: the grant is not there (or not for us).
    pub const BAD_GNTREF: Self = Self(-3);
    /// `GNTST_bad_handle`.
    pub const BAD_HANDLE: Self = Self(-4);
    /// `GNTST_bad_virt_addr`: the address cannot take the mapping.
    pub const BAD_VIRT_ADDR: Self = Self(-5);
    /// `GNTST_eagain`: the page is being paged in; try again.
    pub const EAGAIN: Self = Self(-12);

    /// The `GNTST_*` name, for the codes Xen 4.17 defines.
    pub const fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            0 => "GNTST_okay",
            -1 => "GNTST_general_error",
            -2 => "GNTST_bad_domain",
            -3 => "GNTST_bad_gntref",
            -4 => "GNTST_bad_handle",
            -5 => "GNTST_bad_virt_addr",
            -6 => "GNTST_bad_dev_addr",
            -7 => "GNTST_no_device_space",
            -8 => "GNTST_permission_denied",
            -9 => "GNTST_bad_page",
            -10 => "GNTST_bad_copy_arg",
            -11 => "GNTST_address_too_big",
            -12 => "GNTST_eagain",
            -13 => "GNTST_no_space",
            _ => return None,
        })
    }
}

impl fmt::Display for GrantStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name} ({})", self.0),
            None => write!(f, "grant status {}", self.0),
        }
    }
}
