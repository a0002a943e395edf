//! Test helper: how a test that cannot run here says so, loudly.
//!
//! [`skip`] writes one line `skipping: <what>: <reason>` straight to the
//! process's stderr. libtest captures what `println!` and `eprintln!` print
//! in a passing test, not direct writes to the stream, so the line survives
//! a green run and `scripts/test.sh` can collect it. Where the environment
//! promises that what is missing is there, the skip is a failure instead:
//!
//! - `XSL_REQUIRE_XEN=1` (set for the tests run in the real-Xen VM's dom0):
//!   a `/dev/xen` node, a `XENQEMU_*` variable the tier sets, or the state
//!   it sets up, is missing ([`Missing::Xen`]);
//! - `XSL_REQUIRE_ALL=1` (CI on the host): a tool or package is missing
//!   ([`Missing::Tool`]).
//!
//! Shared with the `gnttab` crate's tests through `#[path]`.

use std::io::Write as _;

/// What a skipped test lacks; it decides which variable forbids the skip.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Missing {
    /// A Xen device node, a `XENQEMU_*` variable, or a state the real-Xen
    /// tier guarantees (e.g. no xenstored holding `VIRQ_DOM_EXC` yet).
    Xen,
    /// A tool or a Debian package (`cc`, a header).
    Tool,
}

impl Missing {
    /// The variable that, set to `1`, turns this skip into a failure.
    pub fn required_by(self) -> &'static str {
        match self {
            Self::Xen => "XSL_REQUIRE_XEN",
            Self::Tool => "XSL_REQUIRE_ALL",
        }
    }
}

/// What [`skip`] does: `Ok(line)` to print, or `Err(message)` to panic
/// with; `env` looks a variable up.
pub fn verdict(
    missing: Missing,
    what: &str,
    reason: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<String, String> {
    let var = missing.required_by();
    if env(var).as_deref() == Some("1") {
        Err(format!("{var}=1, but {what} cannot run: {reason}"))
    } else {
        Ok(format!("skipping: {what}: {reason}\n"))
    }
}

/// Reports that the test `what` cannot run for `reason` (see the module
/// documentation); the caller returns right after.
///
/// # Panics
///
/// When the variable of [`Missing::required_by`] is `1`.
pub fn skip(missing: Missing, what: &str, reason: &str) {
    match verdict(missing, what, reason, |var| std::env::var(var).ok()) {
        Ok(line) => {
            let mut err = std::io::stderr().lock();
            // Nothing to do if stderr is gone: the test result stands.
            let _ = err.write_all(line.as_bytes());
            let _ = err.flush();
        }
        Err(message) => panic!("{message}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |var| {
            pairs
                .iter()
                .find(|(k, _)| *k == var)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn test_verdict_nothing_required_prints_skipping_line() {
        assert_eq!(
            verdict(Missing::Xen, "t", "/dev/xen/evtchn absent", env_of(&[])),
            Ok("skipping: t: /dev/xen/evtchn absent\n".to_owned())
        );
    }

    #[test]
    fn test_verdict_require_xen_fails_missing_xen_only() {
        let env = env_of(&[("XSL_REQUIRE_XEN", "1")]);
        let err = verdict(Missing::Xen, "t", "XENQEMU_GUEST_DOMID unset", &env)
            .expect_err("a missing Xen node under XSL_REQUIRE_XEN=1 fails");
        assert!(err.contains("XSL_REQUIRE_XEN=1") && err.contains("XENQEMU_GUEST_DOMID"));
        assert!(verdict(Missing::Tool, "t", "no cc", &env).is_ok());
    }

    #[test]
    fn test_verdict_require_all_fails_missing_tool_only() {
        let env = env_of(&[("XSL_REQUIRE_ALL", "1")]);
        let err = verdict(Missing::Tool, "t", "cannot run cc", &env)
            .expect_err("a missing tool under XSL_REQUIRE_ALL=1 fails");
        assert!(err.contains("XSL_REQUIRE_ALL=1") && err.contains("cannot run cc"));
        assert!(verdict(Missing::Xen, "t", "/dev/xen/evtchn absent", &env).is_ok());
    }

    #[test]
    fn test_verdict_variable_not_1_still_skips() {
        let env = env_of(&[("XSL_REQUIRE_XEN", "0"), ("XSL_REQUIRE_ALL", "")]);
        assert!(verdict(Missing::Xen, "t", "r", &env).is_ok());
        assert!(verdict(Missing::Tool, "t", "r", &env).is_ok());
    }
}
