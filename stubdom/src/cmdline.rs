//! The stub's command line (`start_info.cmd_line`).
//!
//! Xen 4.17's `tools/helpers/init-xenstore-domain.c` builds it as
//! `--event <port> [--internal-db] [<--param text>]`: the port is the one
//! dom0's kernel left unbound for us (`IOCTL_XENBUS_BACKEND_SETUP`), and
//! `--internal-db` (C's "keep the store in memory", dropped by later
//! releases, which add `--domid <our domid>`) is what a stub always does.
//! The user's `--param` text may add the engine's quotas and limits, under
//! the daemon's names (`xenstored-lite/src/cli.rs`, C xenstored's short
//! letters): `-E/--entry-nb`, `-S/--entry-size`, `-W/--watch-nb`,
//! `-t/--transaction`, `-A/--perm-nb`, `-M/--path-max`, `-Q/--quota`,
//! `-q/--quota-soft`, `-w/--timeout`, `-K/--keep-orphans`, `--rate-limit`,
//! `--priv-event-queue`, `--guest-log-interval`, `--priv-domid`, and
//! `-V/--verbose` (accepted; the stub's console log has one level).
//!
//! Values follow their option as the next word or after `=` (long options).
//! Anything else — an option of the daemon that means nothing in a stub
//! (a socket, a pid file, live update, recording), a positional word, a
//! value that is not a number — is a [`CmdlineError`] naming the word: a
//! misconfigured stub must fail loudly, not serve with defaults.

use alloc::string::{String, ToString};

use xenstored_lite::engine::quota::QuotaKind;
use xenstored_lite::engine::Config;

/// What the command line asks for.
#[derive(Debug, Clone)]
pub struct StubConfig {
    /// `--event`: dom0's port left unbound for us (its xenstore ring's).
    pub event: u32,
    /// `--domid`: our own domid, if the launcher said it.
    pub domid: Option<u16>,
    /// `-V`: how many times verbosity was asked for (informational).
    pub verbose: u32,
    /// The engine's settings.
    pub engine: Config,
}

/// Why the command line was refused. Each names the word at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CmdlineError {
    /// A word that is no option the stub knows.
    #[error("unknown option {word:?}")]
    UnknownOption {
        /// The word.
        word: String,
    },
    /// An option the dom0 daemon has but a stub domain cannot honour.
    #[error("option {word:?} is not available in a xenstore stub domain")]
    NotInStub {
        /// The word.
        word: String,
    },
    /// A word that is not an option (the stub takes no arguments).
    #[error("unexpected argument {word:?}")]
    Positional {
        /// The word.
        word: String,
    },
    /// An option given no value.
    #[error("option {option} needs a value")]
    MissingValue {
        /// The option.
        option: String,
    },
    /// An option given a flag's `=value`.
    #[error("option {option} takes no value (got {value:?})")]
    UnexpectedValue {
        /// The option.
        option: String,
        /// What followed `=`.
        value: String,
    },
    /// A value that is not a number in range.
    #[error("{option} {value:?}: not a number in range")]
    BadNumber {
        /// The option.
        option: String,
        /// The value.
        value: String,
    },
    /// A `NAME=VALUE` option without `=`.
    #[error("{option} {value:?}: expected NAME=VALUE")]
    NotNameValue {
        /// The option.
        option: String,
        /// The value.
        value: String,
    },
    /// A `NAME=VALUE` whose name is unknown to that option.
    #[error("{option}: unknown name {name:?}")]
    UnknownName {
        /// The option.
        option: String,
        /// The name.
        name: String,
    },
    /// No `--event`: dom0's ring cannot be found.
    #[error("no --event <port>: dom0's xenstore port is unknown")]
    NoEvent,
    /// `start_info.cmd_line` is not text: the options from this byte on
    /// would be lost, so none is taken.
    #[error("the command line is not UTF-8 from byte {at} on")]
    NotText {
        /// The offset of the first byte that is not UTF-8.
        at: usize,
    },
}

/// The command line held in `start_info.cmd_line`: its bytes up to the
/// first NUL (all of them if there is none), as text. Bytes that are not
/// UTF-8 are an error, never cut off: the options after them would be lost
/// without a word.
pub fn from_start_info(cmd_line: &[u8]) -> Result<&str, CmdlineError> {
    let len = cmd_line
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(cmd_line.len());
    let bytes = cmd_line.get(..len).unwrap_or_default();
    core::str::from_utf8(bytes).map_err(|e| CmdlineError::NotText {
        at: e.valid_up_to(),
    })
}

/// Options that take a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Valued {
    Event,
    Domid,
    Quota(QuotaKind),
    QuotaByName,
    SoftQuotaByName,
    Timeout,
    RateLimit,
    PrivEventQueue,
    GuestLogInterval,
    PrivDomid,
}

/// Options that take none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flag {
    InternalDb,
    KeepOrphans,
    Verbose,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Opt {
    Valued(Valued),
    Flag(Flag),
}

/// The options, by long name and C's short letter.
const OPTIONS: &[(&str, Option<char>, Opt)] = &[
    ("event", None, Opt::Valued(Valued::Event)),
    ("domid", None, Opt::Valued(Valued::Domid)),
    ("internal-db", Some('I'), Opt::Flag(Flag::InternalDb)),
    (
        "entry-nb",
        Some('E'),
        Opt::Valued(Valued::Quota(QuotaKind::Nodes)),
    ),
    (
        "entry-size",
        Some('S'),
        Opt::Valued(Valued::Quota(QuotaKind::NodeSize)),
    ),
    (
        "watch-nb",
        Some('W'),
        Opt::Valued(Valued::Quota(QuotaKind::Watches)),
    ),
    (
        "transaction",
        Some('t'),
        Opt::Valued(Valued::Quota(QuotaKind::Transactions)),
    ),
    (
        "perm-nb",
        Some('A'),
        Opt::Valued(Valued::Quota(QuotaKind::NodePermissions)),
    ),
    (
        "path-max",
        Some('M'),
        Opt::Valued(Valued::Quota(QuotaKind::PathMax)),
    ),
    ("quota", Some('Q'), Opt::Valued(Valued::QuotaByName)),
    (
        "quota-soft",
        Some('q'),
        Opt::Valued(Valued::SoftQuotaByName),
    ),
    ("timeout", Some('w'), Opt::Valued(Valued::Timeout)),
    ("keep-orphans", Some('K'), Opt::Flag(Flag::KeepOrphans)),
    ("rate-limit", None, Opt::Valued(Valued::RateLimit)),
    (
        "priv-event-queue",
        None,
        Opt::Valued(Valued::PrivEventQueue),
    ),
    (
        "guest-log-interval",
        None,
        Opt::Valued(Valued::GuestLogInterval),
    ),
    ("priv-domid", None, Opt::Valued(Valued::PrivDomid)),
    ("verbose", Some('V'), Opt::Flag(Flag::Verbose)),
];

/// The daemon's options a stub cannot honour (long names, short letters).
const NOT_IN_STUB: &[(&str, Option<char>)] = &[
    ("pid-file", Some('F')),
    ("trace-file", Some('T')),
    ("no-fork", Some('N')),
    ("no-domain-init", Some('D')),
    ("socket", None),
    ("platform", None),
    ("mock-xen", None),
    ("live-update", Some('U')),
    ("dry-run", None),
    ("replay-record", None),
    ("replay", None),
    ("no-verify", None),
];

/// Parses `cmdline` (words separated by ASCII white space).
pub fn parse(cmdline: &str) -> Result<StubConfig, CmdlineError> {
    let mut event = None;
    let mut config = StubConfig {
        event: 0,
        domid: None,
        verbose: 0,
        engine: Config::default(),
    };
    let mut words = cmdline.split_ascii_whitespace();
    while let Some(word) = words.next() {
        let (opt, name, inline) = lookup(word)?;
        match opt {
            Opt::Flag(flag) => {
                if let Some(value) = inline {
                    return Err(CmdlineError::UnexpectedValue {
                        option: name,
                        value: value.to_string(),
                    });
                }
                match flag {
                    Flag::InternalDb => {}
                    Flag::KeepOrphans => config.engine.keep_orphans = true,
                    Flag::Verbose => config.verbose = config.verbose.saturating_add(1),
                }
            }
            Opt::Valued(what) => {
                let value = match inline {
                    Some(v) => v,
                    None => words.next().ok_or_else(|| CmdlineError::MissingValue {
                        option: name.clone(),
                    })?,
                };
                apply(&mut config, &mut event, what, &name, value)?;
            }
        }
    }
    config.event = event.ok_or(CmdlineError::NoEvent)?;
    Ok(config)
}

/// The option `word` names, its name as written (without `=value`), and an
/// inline value.
fn lookup(word: &str) -> Result<(Opt, String, Option<&str>), CmdlineError> {
    if let Some(long) = word.strip_prefix("--") {
        let (name, inline) = match long.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (long, None),
        };
        if let Some(&(_, _, opt)) = OPTIONS.iter().find(|(l, _, _)| *l == name) {
            return Ok((opt, ["--", name].concat(), inline));
        }
        if NOT_IN_STUB.iter().any(|(l, _)| *l == name) {
            return Err(CmdlineError::NotInStub {
                word: word.to_string(),
            });
        }
        return Err(CmdlineError::UnknownOption {
            word: word.to_string(),
        });
    }
    if let Some(short) = word.strip_prefix('-') {
        let mut chars = short.chars();
        if let (Some(letter), None) = (chars.next(), chars.next()) {
            if let Some(&(_, _, opt)) = OPTIONS.iter().find(|(_, s, _)| *s == Some(letter)) {
                return Ok((opt, word.to_string(), None));
            }
            if NOT_IN_STUB.iter().any(|(_, s)| *s == Some(letter)) {
                return Err(CmdlineError::NotInStub {
                    word: word.to_string(),
                });
            }
        }
        return Err(CmdlineError::UnknownOption {
            word: word.to_string(),
        });
    }
    Err(CmdlineError::Positional {
        word: word.to_string(),
    })
}

fn number<T: core::str::FromStr>(option: &str, value: &str) -> Result<T, CmdlineError> {
    value.parse().map_err(|_| CmdlineError::BadNumber {
        option: option.to_string(),
        value: value.to_string(),
    })
}

fn name_value<'v>(option: &str, value: &'v str) -> Result<(&'v str, u64), CmdlineError> {
    let (name, num) = value
        .split_once('=')
        .ok_or_else(|| CmdlineError::NotNameValue {
            option: option.to_string(),
            value: value.to_string(),
        })?;
    Ok((name, number(option, num)?))
}

fn unknown_name(option: &str, name: &str) -> CmdlineError {
    CmdlineError::UnknownName {
        option: option.to_string(),
        name: name.to_string(),
    }
}

fn apply(
    config: &mut StubConfig,
    event: &mut Option<u32>,
    what: Valued,
    option: &str,
    value: &str,
) -> Result<(), CmdlineError> {
    let engine = &mut config.engine;
    match what {
        Valued::Event => *event = Some(number(option, value)?),
        Valued::Domid => config.domid = Some(number(option, value)?),
        Valued::Quota(kind) => engine.quotas.set_hard(kind, number(option, value)?),
        Valued::QuotaByName | Valued::SoftQuotaByName => {
            let (name, v) = name_value(option, value)?;
            let kind = QuotaKind::from_name(name).ok_or_else(|| unknown_name(option, name))?;
            if what == Valued::QuotaByName {
                engine.quotas.set_hard(kind, v);
            } else {
                engine.quotas.set_soft(kind, v);
            }
        }
        Valued::Timeout => match name_value(option, value)? {
            ("watch-event", secs) => engine.watch_event_timeout_ms = secs.saturating_mul(1000),
            (name, _) => return Err(unknown_name(option, name)),
        },
        Valued::RateLimit => {
            let (name, v) = name_value(option, value)?;
            let small = || {
                u32::try_from(v).map_err(|_| CmdlineError::BadNumber {
                    option: option.to_string(),
                    value: value.to_string(),
                })
            };
            let t = &mut engine.throttle;
            match name {
                "writes" => t.write_rate = small()?,
                "burst" => t.write_burst = small()?,
                "reserve" => t.write_reserve = small()?,
                "conflicts" => t.conflict_burst = small()?,
                "conflict-ms" => t.conflict_period_ms = v,
                "conflict-aggregate" => t.conflict_aggregate = v != 0,
                other => return Err(unknown_name(option, other)),
            }
        }
        Valued::PrivEventQueue => engine.max_priv_event_bytes = number(option, value)?,
        Valued::GuestLogInterval => {
            engine.guest_log_interval_ms = number::<u64>(option, value)?.saturating_mul(1000);
        }
        Valued::PrivDomid => {
            let d: u16 = number(option, value)?;
            if u32::from(d) >= xenstored_lite::engine::DOMID_FIRST_RESERVED {
                return Err(CmdlineError::BadNumber {
                    option: option.to_string(),
                    value: value.to_string(),
                });
            }
            engine.priv_domid = d;
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "cmdline_tests.rs"]
mod tests;
